"""
Faults injected under the local store, shared by ``test/test_faults.py`` and
``tools/soak.py``.

``disk_fault(kind)`` patches the file-system calls the store makes
(``tempfile.mkstemp``, ``os.makedirs``, ``os.replace``, ``os.unlink``,
``os.scandir``, ``open``) so that they fail, for paths under the store only,
the way a real disk would.  Tests run as root in CI, where ``chmod`` restricts
nothing, so permissions are faked the same way.  With ``probability`` below 1
each call under the store fails by chance (``rng``), as the soak tool wants.

``spy_unverified_unpickling()`` lists the bytes read from the store that reach
``pickle.loads`` without ``framing.verify_entry`` having accepted them: the
number every fault test and the soak tool expect to be zero.
"""

from __future__ import annotations

import builtins
import errno
import os
import pickle
import random
import shutil
import tempfile
import unittest.mock
from collections.abc import Iterator
from contextlib import contextmanager, ExitStack
from typing import Any


# What each kind does; ``disk_fault``'s docstring says how.
KINDS = ("readonly", "eacces", "enospc", "deleted_mid_write", "vanish", "eio_read")


def _err(code: int, path: Any) -> OSError:
    cls = PermissionError if code == errno.EACCES else OSError
    return cls(code, os.strerror(code), os.fspath(path) if path is not None else None)


@contextmanager
def disk_fault(kind: str, probability: float = 1.0, rng: random.Random | None = None) -> Iterator[None]:
    """Make the store's file-system calls fail the way ``kind`` would.

    ``readonly``          writes fail with EROFS (mkstemp, mkdir of new folders,
                          replace, unlink); reads work
    ``eacces``            every read and write under the store fails with EACCES
    ``enospc``            the entry's bytes go to /dev/full: the write fails with ENOSPC
    ``deleted_mid_write`` the key folder is removed between mkstemp and replace
    ``vanish``            an entry file is deleted between listing and reading
    ``eio_read``          reading an entry file fails with EIO

    Each call under the store fails with ``probability`` (drawn from ``rng``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(KINDS)}")
    from torch_aotcache.store import layout

    root = os.path.abspath(layout.store_root())
    draw = (rng or random.Random(0)).random

    def under(p: Any) -> bool:
        if p is None or isinstance(p, int):
            return False
        p = os.fspath(p)
        if isinstance(p, bytes):
            p = p.decode(errors="replace")
        p = os.path.abspath(p)
        return (p == root or p.startswith(root + os.sep)) and (probability >= 1.0 or draw() < probability)

    real_mkstemp = tempfile.mkstemp
    real_makedirs = os.makedirs
    real_replace = os.replace
    real_unlink = os.unlink
    real_scandir = os.scandir
    real_open = builtins.open
    write_errno = errno.EROFS if kind == "readonly" else errno.EACCES

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        folder = kwargs.get("dir")
        if kind in ("readonly", "eacces", "enospc") and under(folder):
            if kind == "enospc":
                fd, name = real_mkstemp(*args, **kwargs)
                os.close(fd)
                return os.open("/dev/full", os.O_WRONLY), name
            raise _err(write_errno, folder)
        return real_mkstemp(*args, **kwargs)

    def makedirs(name: Any, *args: Any, **kwargs: Any) -> None:
        if kind in ("readonly", "eacces") and not os.path.isdir(name) and under(name):
            raise _err(write_errno, name)
        real_makedirs(name, *args, **kwargs)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if kind in ("readonly", "eacces") and (under(src) or under(dst)):
            raise _err(write_errno, dst)
        if (
            kind == "deleted_mid_write"
            and os.path.basename(os.fspath(src)).startswith(layout.TEMP_PREFIX)
            and under(src)
        ):
            shutil.rmtree(os.path.dirname(os.fspath(src)))
        real_replace(src, dst, *args, **kwargs)

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if kind in ("readonly", "eacces") and under(path):
            raise _err(write_errno, path)
        real_unlink(path, *args, **kwargs)

    def scandir(path: Any = ".") -> Any:
        if kind == "eacces" and under(path):
            raise _err(errno.EACCES, path)
        return real_scandir(path)

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if kind == "eacces" and under(file):
            raise _err(errno.EACCES, file)
        if kind in ("vanish", "eio_read") and not isinstance(file, int) and "r" in mode:
            name = os.fspath(file)
            if isinstance(name, str) and name.endswith(layout.ENTRY_SUFFIX) and under(file):
                if kind == "eio_read":
                    raise _err(errno.EIO, file)
                try:
                    real_unlink(name)  # the real open below finds nothing
                except FileNotFoundError:
                    pass
        return real_open(file, mode, *args, **kwargs)

    with ExitStack() as stack:
        for target, fake in (
            ("tempfile.mkstemp", mkstemp),
            ("os.makedirs", makedirs),
            ("os.replace", replace),
            ("os.unlink", unlink),
            ("os.scandir", scandir),
            ("builtins.open", open_),
        ):
            stack.enter_context(unittest.mock.patch(target, fake))
        yield


@contextmanager
def spy_unverified_unpickling() -> Iterator[list[bytes]]:
    """Collects the bytes read from the store that reach pickle.loads unverified."""
    from torch_aotcache.entry import framing
    from torch_aotcache.store.local import LocalStore

    verified: set[bytes] = set()
    read: list[bytes] = []
    unverified: list[bytes] = []
    real_verify, real_loads, real_candidates = framing.verify_entry, pickle.loads, LocalStore.candidates

    def verify_entry(data: bytes, **kwargs: Any) -> Any:
        entry = real_verify(data, **kwargs)
        verified.add(bytes(entry.payload))
        return entry

    def candidates(self: LocalStore, key: str) -> Iterator[Any]:
        for stored in real_candidates(self, key):
            read.append(stored.data)
            yield stored

    def loads(data: Any, *args: Any, **kwargs: Any) -> Any:
        b = bytes(data)
        if b not in verified and any(b in d for d in read):
            unverified.append(b)
        return real_loads(data, *args, **kwargs)

    with (
        unittest.mock.patch.object(framing, "verify_entry", verify_entry),
        unittest.mock.patch.object(pickle, "loads", loads),
        unittest.mock.patch.object(LocalStore, "candidates", candidates),
    ):
        yield unverified
