"""
Writing files whole, and the small JSON records kept under ``<store>/meta/``.

Note [Work kept between processes]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Several pieces of per-process work are kept on disk so the next process can
skip them: the torch install's fingerprint (key/fingerprint.py), Inductor's
``torch_key`` (inductor/digests.py), the answers of Inductor's CPU ISA probes
and its precompiled headers (inductor/isa_probes.py), and the digests of the
upstream functions the package mirrors (installer/drift.py).  Each is a JSON
object in ``<store>/meta/<kind>-<ident>.json`` (store/layout.py names it),
where ``ident`` names what the record is valid for (``install_ident``: this
torch install and Python; or a digest of the probe's inputs), and each is
checked by its reader before use: a record that is missing, unreadable, not
an object, or recorded for other inputs is no record.  They follow one set
of rules, here:

* a record is written whole (``write_atomically``) or not at all;
* writing one never re-creates a cache dir that was removed meanwhile (a
  finished ``fresh_cache()``, a user's ``rm -rf``): the folder that holds
  the store must still exist, and only ``meta/`` is created below it;
* a failure to read or write one is a missed speed-up, never an error.

This module imports nothing but the standard library and ``layout``: the
command line uses ``write_atomically`` without torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from . import layout


log = logging.getLogger(__name__)


def _current_umask() -> int:
    # Read once, at import; os.umask can only be read by setting it.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# The mode ``open()`` would give a new file: for files others sharing the
# folder may read (mkstemp's default is owner-only).
SHARED_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_output(path: str, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into: a hidden temporary
    file in the same folder, moved over ``path`` (``os.replace``) when the
    block ends without an exception and removed when it raises.  A reader
    sees the old file or the whole new one, never a part.  ``mode``: the
    file's permissions (default: mkstemp's owner-only)."""
    fd, tmp = tempfile.mkstemp(prefix=layout.TEMP_PREFIX, dir=os.path.dirname(os.path.abspath(path)))
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_atomically(path: str, data: bytes | memoryview, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` whole (see ``atomic_output``).  Raises
    ``OSError``; leaves no temporary file behind."""
    with atomic_output(path, mode) as f:
        f.write(data)


def install_ident(torch_root: str, torch_version: str) -> str:
    """Names a torch install (its folder and version) and this Python."""
    raw = f"{torch_root}\0{torch_version}\0{sys.version_info[:2]}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def install_record_path(kind: str) -> str:
    """``<store>/meta/<kind>-<ident>.json`` for the torch of this process."""
    import torch

    root = os.path.dirname(os.path.abspath(torch.__file__))
    return layout.meta_path(kind, install_ident(root, torch.__version__))


def read_record(path: str) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None (missing, unreadable, not an object)."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def write_record(path: str, obj: dict[str, Any]) -> bool:
    """Keep ``obj`` at ``path`` (a path under ``<store>/meta/``); whether it
    was written.  Never raises for the disk's sake."""
    meta = os.path.dirname(path)
    store = os.path.dirname(meta)
    if not os.path.isdir(os.path.dirname(store)):
        return False  # the cache dir is gone: do not bring it back
    try:
        os.makedirs(meta, exist_ok=True)
        write_atomically(path, json.dumps(obj).encode())
    except (OSError, TypeError, ValueError) as e:
        log.debug("torch_aotcache: cannot keep %s: %s", path, e)
        return False
    return True
