"""
Keeping the local store bounded and tidy: eviction after each save, hits
recorded for it, stale lock files, quarantine and temporary files removed.

Note [Bounded store]
~~~~~~~~~~~~~~~~~~~~
The store holds at most ``config.max_size`` bytes of entries
(``TORCH_AOTCACHE_MAX_SIZE``, default 10 GiB).  Each write of an entry takes
the store's housekeeping lock (an exclusive ``flock`` on
``<store>/housekeeping.lock``), writes, and adds the entry's size to a ledger
kept in the lock file itself (the store's bytes as last counted, when it was
last listed in full, when last swept).  While the ledger says the store is
under the bound, that is all a save costs.  When a save takes it over, the
writer lists the store (one ``stat`` per file), reads the headers and
removes entries, lowest value first, until the total is at 90% of the bound
(so the next saves need no listing).  An entry's value is the compile time it
saves per byte, aged by when it was last used::

    value = (forward_cost_ns + backward_cost_ns) / size * 0.5 ** (idle_s / HALF_LIFE_S)

where ``idle_s`` is the time since its last hit (or its save).  A hit is
recorded by setting the entry file's *access time* (``os.utime``, with its
modification time kept): one system call, the entry is never rewritten, no
file is added (inode quotas), and the modification time that orders a key's
entries newest first (store/local.py) does not move.  The access time is set
explicitly, so ``noatime`` mounts make no difference; tools and housekeeping
read headers with ``O_NOATIME`` (framing.open_without_atime) so that reading
is not mistaken for a hit.  An entry whose header cannot be read has value 0.
The entry just written is kept unless it alone is over the bound.

The ledger drifts only upwards on its own: entries removed by other means
(``clear``, ``prune``, quarantine, the per-key limit) are still counted,
which at worst brings a listing early.  It is listed afresh every
``RELIST_S`` anyway, and at once when a writer died between setting the
ledger's "write in progress" mark and clearing it, so a writer killed
mid-save never leaves the store over the bound uncounted.

Concurrency.  The lock serializes writers' accounting and eviction, so two
writers never both remove entries for the same excess; entry writes happen
under it too (a few milliseconds each; compiles take seconds).  It is waited
for at most ``LOCK_WAIT_S``: past it the entry is written all the same,
uncounted until the next listing.  The operating system drops the lock when
its holder dies.  Removing is ``unlink``: a reader that
has the file open reads it to the end (POSIX), and one that listed it but
opens it after it is gone finds no file, which lookups count as
``entry_vanished`` and treat as a miss (Note [Disk faults] in store/local.py).
A key's folder is removed once empty; a writer that loses the race for it
makes it again (``LocalStore.put``).

Stale files, removed by the same writers at most once per ``SWEEP_EVERY_S``
(the ledger records the last sweep), and by
``python -m torch_aotcache prune`` whatever their age:

* single-flight lock files (Note [Single flight]) older than an hour that no
  process holds (tried with ``LOCK_NB`` just before they are removed; a
  process that opened the file in between locks a removed file, so at
  worst two processes compile one key, as without single flight);
* quarantined entries older than a week;
* ``.tmp-*`` files left by writers killed mid-write, older than an hour;
* statistics older than ``stats.KEEP_DAYS`` days.

Rejected: a sidecar file per entry touched on each hit (a second inode per
entry), an index database of every entry (a second source of truth that a
killed writer can leave disagreeing with the files; the ledger holds one
number, checked against the files every ``RELIST_S``), listing the store on
every save (0.14 s at 10,000 entries on the benchmark machine, see
docs/PERFORMANCE.md), and least-recently-used alone (a 2 MB
entry that saves 100 ms would push out a 50 KB one that saves a minute).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import layout, stats
from .. import schemas
from ..entry import framing
from ..counters import count


log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: eviction without a lock
    fcntl = None  # type: ignore[assignment]

HALF_LIFE_S = 7 * 86400.0
LOW_WATER = 0.9
LOCK_WAIT_S = 5.0
SWEEP_EVERY_S = 3600.0
RELIST_S = 600.0
STALE_LOCK_S = 3600.0
STALE_TMP_S = 3600.0
STALE_QUARANTINE_S = 7 * 86400.0
LOCK_NAME = "housekeeping.lock"


@dataclasses.dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    mtime_ns: int
    atime_ns: int

    @property
    def last_use_ns(self) -> int:
        return max(self.mtime_ns, self.atime_ns)


def scan(root: str) -> tuple[list[StoredFile], list[StoredFile]]:
    """(entries, temporary files) under ``root``'s entries folder; stats only."""
    entries: list[StoredFile] = []
    temporaries: list[StoredFile] = []
    for folder in _subfolders(layout.entries_root(root), depth=2):
        try:
            with os.scandir(folder) as it:
                for e in it:
                    if e.name.startswith(layout.TEMP_PREFIX):
                        target = temporaries
                    elif e.name.endswith(layout.ENTRY_SUFFIX) and not e.name.startswith("."):
                        target = entries
                    else:
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue  # gone since listed
                    target.append(StoredFile(e.path, st.st_size, st.st_mtime_ns, st.st_atime_ns))
        except OSError:
            continue
    return entries, temporaries


def _subfolders(folder: str, depth: int) -> Iterator[str]:
    if depth == 0:
        yield folder
        return
    try:
        with os.scandir(folder) as it:
            subs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for sub in subs:
        yield from _subfolders(sub, depth - 1)


def record_hit(path: str) -> None:
    """Mark the entry at ``path`` as used now (its access time); never raises.
    See Note [Bounded store]."""
    try:
        st = os.stat(path)
        os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
    except OSError as e:
        log.debug("torch_aotcache: cannot record a hit on %s: %s", path, e)


def entry_value(cost_ns: int, size: int, idle_s: float) -> float:
    """Compile time saved per byte, halved every HALF_LIFE_S unused."""
    return cost_ns / max(size, 1) * 0.5 ** (max(idle_s, 0.0) / HALF_LIFE_S)


def _cost_of(path: str) -> int:
    try:
        return framing.read_header(path).compile_cost_ns
    except (OSError, schemas.EntryFormatError):
        return 0


def plan_eviction(
    entries: list[StoredFile],
    bound: int,
    *,
    keep: str | None = None,
    now_ns: int | None = None,
    cost_of: Callable[[str], int] = _cost_of,
) -> list[StoredFile]:
    """The entries to remove, in order, to bring ``entries`` from over
    ``bound`` down to ``LOW_WATER * bound``; nothing if under ``bound``."""
    total = sum(f.size for f in entries)
    if total <= bound:
        return []
    now = now_ns if now_ns is not None else time.time_ns()
    target = int(bound * LOW_WATER)

    def rank(f: StoredFile) -> tuple[float, int]:
        idle_s = (now - f.last_use_ns) / 1e9
        return entry_value(cost_of(f.path), f.size, idle_s), f.last_use_ns

    kept = [f for f in entries if f.path == keep]
    if kept and kept[0].size > bound:
        kept = []  # alone over the bound: it goes too
    ordered = sorted((f for f in entries if f not in kept), key=rank)
    plan = []
    for f in ordered:
        if total <= target:
            break
        plan.append(f)
        total -= f.size
    return plan


@contextmanager
def store_lock(root: str, wait_s: float = LOCK_WAIT_S) -> Iterator[int | None]:
    """Hold the store's housekeeping lock; yields the lock file's descriptor
    (which holds the :class:`Ledger`), or None when the lock could not be had
    within ``wait_s`` (or the store cannot be written, or there is no flock)."""
    if fcntl is None:
        yield None
        return
    try:
        os.makedirs(root, exist_ok=True)
        fd = os.open(os.path.join(root, LOCK_NAME), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        log.debug("torch_aotcache: no housekeeping lock in %s: %s", root, e)
        yield None
        return
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield None
                    return
                time.sleep(0.005)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclasses.dataclass
class Ledger:
    """What the lock file records (Note [Bounded store]): the store's bytes
    as last counted, when it was last listed in full and last swept, and
    whether a write was in progress (a holder killed mid-write leaves it set)."""

    total: int = -1  # unknown
    listed_ns: int = 0
    swept_ns: int = 0
    dirty: int = 0

    _WIDTH = 96

    @classmethod
    def read(cls, fd: int) -> Ledger:
        try:
            fields = os.pread(fd, cls._WIDTH, 0).decode("ascii").split()
            if len(fields) == 5 and fields[0] == "v1":
                return cls(*(int(f) for f in fields[1:]))
        except (OSError, ValueError):
            pass
        return cls()

    def write(self, fd: int) -> None:
        text = f"v1 {self.total} {self.listed_ns} {self.swept_ns} {self.dirty}\n"
        os.pwrite(fd, text.ljust(self._WIDTH).encode("ascii"), 0)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


@dataclasses.dataclass
class Eviction:
    removed: list[StoredFile] = dataclasses.field(default_factory=list)
    total_after: int = -1
    listed: bool = False
    skipped: bool = False

    @property
    def removed_bytes(self) -> int:
        return sum(f.size for f in self.removed)


def remove_entry(path: str) -> bool:
    """Unlink an entry, and its key's folder if that leaves it empty."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        log.debug("torch_aotcache: cannot remove %s: %s", path, e)
        return False
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass  # not empty, or gone
    return True


def _evict(root: str, bound: int, keep: str | None, result: Eviction) -> int:
    entries, _ = scan(root)
    total = sum(f.size for f in entries)
    result.listed = True
    for f in plan_eviction(entries, bound, keep=keep):
        if remove_entry(f.path):
            result.removed.append(f)
            total -= f.size
            count("evicted")
            count("evicted_bytes", f.size)
    if result.removed:
        stats.record("evict", f"{len(result.removed)}:{result.removed_bytes}")
    return total


def write_bounded(root: str, path: str, write: Callable[[], None], bound: int | None = None) -> Eviction:
    """Run ``write()`` (which writes the entry at ``path``) and bring the store
    at ``root`` under its bound; see Note [Bounded store].  Raises what
    ``write`` raises; housekeeping itself never raises."""
    bound = layout.max_size() if bound is None else bound
    result = Eviction()
    sweep_due = False
    with store_lock(root) as fd:
        if fd is None:
            # No lock within LOCK_WAIT_S: save all the same, uncounted; the
            # next full listing (at most RELIST_S away) counts it.
            write()
            result.skipped = True
            return result
        ledger = Ledger.read(fd)
        now = time.time_ns()
        relist = bool(ledger.dirty) or ledger.total < 0 or (now - ledger.listed_ns) / 1e9 > RELIST_S
        replaced = _size(path)
        try:
            ledger.dirty = 1
            ledger.write(fd)
        except OSError:
            relist = True
        write()
        try:
            total = ledger.total + _size(path) - replaced
            if bound is not None and (relist or total > bound):
                total = _evict(root, bound, path, result)
                ledger.listed_ns = now
            elif relist:
                total = sum(f.size for f in scan(root)[0])
                result.listed = True
                ledger.listed_ns = now
            ledger.total = result.total_after = total
            ledger.dirty = 0
            if (now - ledger.swept_ns) / 1e9 >= SWEEP_EVERY_S:
                sweep_due = True
                ledger.swept_ns = now
            ledger.write(fd)
        except Exception as e:  # noqa: BLE001 - housekeeping never fails a save
            log.debug("torch_aotcache: housekeeping of %s failed: %s", root, e)
    if result.removed:
        log.debug(
            "torch_aotcache: evicted %d entries (%d bytes) to keep the store under %d bytes",
            len(result.removed), result.removed_bytes, bound,
        )
    if sweep_due:
        try:
            remove_stale(find_stale(root))
            stats.remove_old_days()
        except Exception as e:  # noqa: BLE001
            log.debug("torch_aotcache: sweeping %s failed: %s", root, e)
    return result


# --------------------------------------------------------------------------
# Stale files


@dataclasses.dataclass(frozen=True)
class Stale:
    kind: str  # "lock", "quarantine", "temporary", "stats"
    path: str
    size: int


def _lock_is_free(path: str) -> bool:
    if fcntl is None:
        return True
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _files(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return [e for e in it if e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def find_stale(
    root: str,
    *,
    now_ns: int | None = None,
    lock_age_s: float = STALE_LOCK_S,
    tmp_age_s: float = STALE_TMP_S,
    quarantine_age_s: float = STALE_QUARANTINE_S,
) -> list[Stale]:
    """The stale files under ``root``: unheld lock files, quarantined entries
    and temporary files older than the given ages (0: any age)."""
    now = now_ns if now_ns is not None else time.time_ns()
    found: list[Stale] = []

    def old(mtime_ns: int, age_s: float) -> bool:
        return (now - mtime_ns) / 1e9 >= age_s

    for e in _files(layout.locks_dir(root)):
        try:
            st = e.stat()
        except OSError:
            continue
        if e.name.endswith(layout.LOCK_SUFFIX) and old(st.st_mtime_ns, lock_age_s) and _lock_is_free(e.path):
            found.append(Stale("lock", e.path, st.st_size))
    for e in _files(layout.quarantine_dir(root)):
        # Named "<time_ns>-<key>-<entry>" when moved there (its mtime is the entry's).
        stamp = e.name.split("-", 1)[0]
        try:
            moved_ns = int(stamp) if stamp.isdigit() else e.stat().st_mtime_ns
            size = e.stat().st_size
        except OSError:
            continue
        if old(moved_ns, quarantine_age_s):
            found.append(Stale("quarantine", e.path, size))
    _, temporaries = scan(root)
    for f in temporaries:
        if old(f.mtime_ns, tmp_age_s):
            found.append(Stale("temporary", f.path, f.size))
    return found


def remove_stale(items: list[Stale]) -> int:
    removed = 0
    for item in items:
        if item.kind == "lock" and not _lock_is_free(item.path):
            continue  # taken since it was found
        try:
            os.unlink(item.path)
            removed += 1
        except OSError:
            pass
    if removed:
        count("stale_removed", removed)
    return removed
