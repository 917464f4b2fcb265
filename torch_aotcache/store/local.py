"""
The local disk store of torch_aotcache entries.

Note [Store layout]
~~~~~~~~~~~~~~~~~~~
``<cache_dir>/torch_aotcache/entries/<key[3:5]>/<key>/<entry_id>.entry``

``cache_dir`` is Inductor's (``TORCHINDUCTOR_CACHE_DIR`` moves it, and
``fresh_cache()`` points it at a temporary folder); it is read on every call,
never cached, so both take effect at once.  ``store/layout.py`` resolves it, without
importing torch when torch is not imported (Note [Reading the store without
torch]).  One folder per key holds one file
per guard expression (``entry_id`` hashes the guard), so a lookup lists one
small folder whatever the size of the store, and a second save of the same key
and guard replaces the file instead of adding a duplicate.  The two-character
fan-out keeps any one folder small.

Writes are atomic: the bytes go to a hidden temporary file in the same folder,
then ``os.replace`` puts it in place.  Readers skip names starting with ``.``;
a writer killed mid-write leaves only such a file.

Note [Disk faults]
~~~~~~~~~~~~~~~~~~
The store only saves time, so a disk fault (a cache dir that is read-only,
full, not ours to read, or deleted under us) never fails a compile: the read
is a miss, the write is skipped.  Each failed operation is counted
(``store_read_failed`` / ``store_write_failed`` in
``counters["torch_aotcache"]``) and the first failure of each kind (errno) in
a process is logged as one warning, without a traceback; a broken cache dir
would otherwise log once per compile.  A file that vanishes between listing
and reading (another process trimmed, quarantined or cleared it) is no fault:
it is counted as ``entry_vanished`` and skipped.

Note [Sharing a cache dir with stock torch]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Stock torch keeps its entries in ``<cache_dir>/aotautograd/``; we never read
that folder and it never reads ours.  Even if a file were copied across, ours
start with a magic header that is not a pickle, and a reader of ours rejects
anything without it (see Note [Entry layout] in entry/framing.py).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .. import _once
from . import housekeeping, layout
from .records import SHARED_FILE_MODE, write_atomically
from ..counters import count


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredEntry:
    path: str
    data: bytes

    @property
    def entry_id(self) -> str:
        """The id the file is named after: its header's ``entry_id`` unless corrupted."""
        return os.path.basename(self.path)[: -len(layout.ENTRY_SUFFIX)]


class StoreFault(Exception):
    """A fault met while faults give way (see :func:`faults_give_way`)."""


_give_way = threading.local()


@contextlib.contextmanager
def faults_give_way() -> Iterator[None]:
    """Within: reading the store raises :class:`StoreFault` instead of
    counting and warning, for a lookup that hands over to another that
    reads again and reports (Note [Front door] in inductor/front_door.py)."""
    previous = getattr(_give_way, "on", False)
    _give_way.on = True
    try:
        yield
    finally:
        _give_way.on = previous


def _fault(op: str, error: OSError) -> None:
    if getattr(_give_way, "on", False):
        raise StoreFault(f"{op}: {error}") from error
    report_fault(op, error)


def report_fault(op: str, error: OSError) -> None:
    """Count a failed store ``op`` ("read" or "write"); warn once per errno.

    See Note [Disk faults].
    """
    count(f"store_{op}_failed")
    kind = errno.errorcode.get(error.errno or 0, type(error).__name__)
    if not _once.first_time("store-fault:" + kind):
        log.debug("torch_aotcache: cannot %s the local cache store: %s", op, error)
        return
    log.warning(
        "torch_aotcache: cannot %s the local cache store (%s); compiling without it. "
        "Further %s errors are only counted in counters['torch_aotcache']['store_%s_failed'].",
        "read from" if op == "read" else "write to",
        error,
        kind,
        op,
    )


class LocalStore:
    """Entries on the local disk.  All methods fail soft: see each docstring."""

    def candidates(self, key: str) -> Iterator[StoredEntry]:
        """Yield the entries stored under ``key``, newest first.

        A folder that is missing or unreadable yields nothing; a file that
        vanishes between listing and reading is skipped.
        """
        folder = layout.key_dir(key)
        found = []
        try:
            with os.scandir(folder) as it:
                for e in it:
                    if not e.name.endswith(layout.ENTRY_SUFFIX) or e.name.startswith("."):
                        continue
                    try:
                        found.append((e.stat().st_mtime_ns, e.path))
                    except FileNotFoundError:
                        # Gone since it was listed: skip that file only, not
                        # the whole folder.  See Note [Disk faults].  (Gone
                        # for the next reader too: counted here, once.)
                        count("entry_vanished")
        except FileNotFoundError:
            return
        except OSError as e:
            _fault("read", e)
            return
        found.sort(reverse=True)
        for _, path in found:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                count("entry_vanished")
                continue
            except OSError as e:
                _fault("read", e)
                continue
            yield StoredEntry(path, data)

    def report_fault(self, op: str, error: OSError) -> None:
        """See :func:`report_fault`."""
        report_fault(op, error)

    def put(self, key: str, entry_id: str, data: bytes) -> str:
        """Write an entry atomically; returns its path.  Raises ``OSError``."""
        folder = layout.key_dir(key)
        path = layout.entry_path(key, entry_id)

        def write() -> None:
            for attempt in range(3):
                os.makedirs(folder, exist_ok=True)
                try:
                    # The permissions any other file written here would get
                    # (mkstemp's are owner-only), so users sharing a cache dir
                    # can read each other's entries as they read Inductor's.
                    write_atomically(path, data, mode=SHARED_FILE_MODE)
                    return
                except FileNotFoundError:
                    # Eviction removed the key's folder once it was empty,
                    # between our makedirs and our write: make it again.
                    if attempt == 2:
                        raise

        # Written under the store's housekeeping lock, which keeps the store
        # under its bound (Note [Bounded store] in store/housekeeping.py).
        housekeeping.write_bounded(layout.store_root(), path, write)
        self._trim(folder)
        return path

    def record_hit(self, path: str) -> None:
        """See Note [Bounded store] in store/housekeeping.py."""
        housekeeping.record_hit(path)

    def _trim(self, folder: str) -> None:
        limit = layout.setting("max_entries_per_key")
        try:
            with os.scandir(folder) as it:
                files = sorted(
                    (e.stat().st_mtime_ns, e.path)
                    for e in it
                    if e.name.endswith(layout.ENTRY_SUFFIX) and not e.name.startswith(".")
                )
        except OSError:
            return
        for _, path in files[: max(0, len(files) - limit)]:
            try:
                os.unlink(path)
            except OSError:
                pass

    def quarantine(self, path: str) -> str | None:
        """Move a bad entry aside to ``<store>/quarantine/``; returns its new path."""
        folder = layout.quarantine_dir()
        target = os.path.join(
            folder, "%d-%s-%s" % (time.time_ns(), os.path.basename(os.path.dirname(path)), os.path.basename(path))
        )
        try:
            os.makedirs(folder, exist_ok=True)
            os.replace(path, target)
        except OSError as e:
            log.debug("torch_aotcache: cannot quarantine %s: %s", path, e)
            return None
        return target

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.debug("torch_aotcache: cannot remove %s: %s", path, e)

    def iter_paths(self) -> Iterator[str]:
        """Every entry file in the store (for tools; not on the hot path)."""
        root = layout.entries_root()
        for dirpath, _dirs, files in os.walk(root):
            for name in sorted(files):
                if name.endswith(layout.ENTRY_SUFFIX) and not name.startswith("."):
                    yield os.path.join(dirpath, name)

    def clear(self) -> None:
        shutil.rmtree(layout.entries_root(), ignore_errors=True)
