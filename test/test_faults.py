"""
Disk faults under the local store (issue "Entries you can trust", item 4).

Each fault is injected, not hoped for, by ``tools/fault_injection.py`` (which
``tools/soak.py`` shares): the file-system calls the store makes are patched so
that they fail, for paths under the store only, the way a real disk would
(``EROFS``, ``EACCES``, ``ENOSPC`` via ``/dev/full``, folders deleted under the
writer, files that vanish between listing and reading).

For every kind: the compile succeeds with the eager result; the counters in
``counters["torch_aotcache"]`` say what happened; a fault that repeats logs
one warning in all (See Note [Disk faults] in store/local.py), benign events log
none; nothing is logged with a traceback at WARNING or above; and no bytes
read from the store reach ``pickle.loads`` without having been verified.

The functions compiled are matmuls and views only, which Inductor lowers to
extern kernels: no C++ is compiled, so each compile takes about a second.
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import shutil
import sys
import tempfile
import unittest
import unittest.mock
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch._dynamo
import torch._inductor.codecache
from torch._dynamo.utils import counters
from torch._inductor.runtime.runtime_utils import cache_dir
from torch.testing._internal.common_utils import instantiate_parametrized_tests, parametrize

from torch_aotcache.tiers import lookup
from torch_aotcache.store import layout
from torch_aotcache.store.local import LocalStore

from common import aot_counts, CacheTestCase, clear_in_memory_state, TOOLS

sys.path.insert(0, TOOLS)
from fault_injection import _err, disk_fault, spy_unverified_unpickling  # noqa: E402


def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x @ w).t() @ x


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, generator=g), torch.randn(3, 5, generator=g)


def forget_compiled() -> None:
    """Like clear_in_memory_state(), but keeps the counters adding up."""
    torch._dynamo.reset()
    torch._inductor.codecache.PyCodeCache.cache_clear(purge=True)


class LogCapture(logging.Handler):
    """Every record at WARNING or above, from any logger (``torch`` does not propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not any(r is record for r in self.records):
            self.records.append(record)


@contextmanager
def capture_warnings() -> Iterator[LogCapture]:
    handler = LogCapture()
    loggers = [logging.getLogger(), logging.getLogger("torch"), logging.getLogger("torch_aotcache")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


def hidden_files() -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(layout.entries_root()):
        found.extend(os.path.join(dirpath, n) for n in files if n.startswith("."))
    return found


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

# What each kind must leave in counters["torch_aotcache"] after REPEAT compiles
# (all of them under the fault), and how many warnings it may log.
REPEAT = 3
EXPECTED: dict[str, tuple[dict[str, int], int, bool]] = {
    # kind: (torch_aotcache counters, warnings, entry saved by each compile)
    "readonly": ({"store_write_failed": REPEAT}, 1, False),
    "eacces": ({"store_read_failed": REPEAT, "store_write_failed": REPEAT}, 1, False),
    "enospc": ({"store_write_failed": REPEAT}, 1, False),
    "deleted_mid_write": ({"store_write_failed": REPEAT}, 1, False),
    # Needs an entry first; each lookup loses it, each compile writes it again.
    "vanish": ({"entry_vanished": REPEAT}, 0, True),
    "eio_read": ({"store_read_failed": REPEAT}, 1, True),
}


class FaultTestCase(CacheTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.unverified = self.enterContext(spy_unverified_unpickling())

    def compile_and_check(self) -> None:
        x, w = inputs()
        torch.testing.assert_close(torch.compile(f)(x, w), f(x, w))
        self.assertEqual(self.unverified, [], "unpickled bytes from the store that were never verified")

    def assert_quiet(self, logs: LogCapture, warnings: int) -> None:
        """``warnings`` warnings from torch_aotcache, nothing else, no tracebacks."""
        for r in logs.records:
            self.assertIsNone(r.exc_info, f"traceback logged by {r.name}: {r.getMessage()}")
        ours_ = [r for r in logs.records if r.name.startswith("torch_aotcache")]
        others = [r for r in logs.records if not r.name.startswith("torch_aotcache")]
        self.assertEqual(others, [], [r.getMessage() for r in others])
        self.assertEqual(len(ours_), warnings, [r.getMessage() for r in ours_])
        for r in ours_:
            self.assertIn("torch_aotcache: cannot", r.getMessage())
            self.assertIn("compiling without it", r.getMessage())


@instantiate_parametrized_tests
class TestDiskFaults(FaultTestCase):
    @parametrize("kind", list(EXPECTED))
    def test_repeated_fault_compiles_counts_and_warns_once(self, kind: str) -> None:
        expected_counters, expected_warnings, saves = EXPECTED[kind]
        if kind == "enospc" and not os.path.exists("/dev/full"):
            self.skipTest("needs /dev/full")
        if kind in ("vanish", "eio_read"):
            self.compile_and_check()  # an entry to lose
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            clear_in_memory_state()
        with capture_warnings() as logs, disk_fault(kind):
            for _ in range(REPEAT):
                forget_compiled()
                self.compile_and_check()
        got = {
            k: v
            for k, v in counters["torch_aotcache"].items()
            if k.startswith(("store_", "entry_", "quarantined", "signature_"))
        }
        self.assertEqual(got, expected_counters)
        want_aot = {"autograd_cache_miss": REPEAT}
        if saves:
            want_aot["autograd_cache_saved"] = REPEAT
        self.assertEqual(aot_counts(), want_aot)
        self.assert_quiet(logs, expected_warnings)
        # Nothing half-written is left behind, whatever the fault.
        self.assertEqual(hidden_files(), [])
        if not saves:
            self.assertEqual(list(LocalStore().iter_paths()), [])
        # The fault gone, the cache works again: save, then hit.
        forget_compiled()
        counters.clear()
        self.compile_and_check()
        if not saves:
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            forget_compiled()
            counters.clear()
            self.compile_and_check()
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_different_fault_kinds_each_warn_once(self) -> None:
        # Two kinds of write fault in one process: each is reported (once).
        with capture_warnings() as logs:
            for kind in ("readonly", "enospc", "readonly", "enospc"):
                with disk_fault(kind):
                    forget_compiled()
                    self.compile_and_check()
        self.assertEqual(counters["torch_aotcache"]["store_write_failed"], 4)
        self.assert_quiet(logs, 2)
        messages = " ".join(r.getMessage() for r in logs.records)
        self.assertIn("EROFS", messages)
        self.assertIn("ENOSPC", messages)

    def test_fault_on_one_file_does_not_hide_the_others(self) -> None:
        # Two files under one key; the newer one (read first) cannot be read.
        self.compile_and_check()
        [path] = LocalStore().iter_paths()
        newest = os.path.join(os.path.dirname(path), "copy" + layout.ENTRY_SUFFIX)
        shutil.copyfile(path, newest)
        st = os.stat(path)
        os.utime(newest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        real_open = builtins.open

        def open_(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, str) and file == newest:
                raise _err(errno.EIO, file)
            return real_open(file, *args, **kwargs)

        clear_in_memory_state()
        with capture_warnings() as logs, unittest.mock.patch("builtins.open", open_):
            self.compile_and_check()
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        self.assertEqual(counters["torch_aotcache"]["store_read_failed"], 1)
        self.assert_quiet(logs, 1)


class TestMissingAndDeletedDirs(FaultTestCase):
    def test_cache_dir_missing(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            missing = os.path.join(tmp, "not", "there", "yet")
            with unittest.mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": missing}):
                self.assertFalse(os.path.exists(missing))
                with capture_warnings() as logs:
                    self.compile_and_check()
                self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
                self.assertEqual(len(list(LocalStore().iter_paths())), 1)
                self.assert_quiet(logs, 0)
                clear_in_memory_state()
                self.compile_and_check()
                self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_cache_dir_deleted_between_compiles(self) -> None:
        self.compile_and_check()
        with capture_warnings() as logs:
            for _ in range(REPEAT):
                shutil.rmtree(cache_dir())
                clear_in_memory_state()
                self.compile_and_check()
                self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assert_quiet(logs, 0)
        clear_in_memory_state()
        self.compile_and_check()
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_store_deleted_between_lookup_and_save(self) -> None:
        real_lookup = lookup.lookup_hit

        def lookup_then_delete(*args: Any, **kwargs: Any) -> Any:
            result = real_lookup(*args, **kwargs)
            shutil.rmtree(layout.store_root(), ignore_errors=True)
            return result

        with capture_warnings() as logs, unittest.mock.patch.object(lookup, "lookup_hit", lookup_then_delete):
            self.compile_and_check()
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assert_quiet(logs, 0)
        clear_in_memory_state()
        self.compile_and_check()
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_entry_vanishes_while_listing(self) -> None:
        # Gone between scandir() and stat(): skipped, and the folder's other
        # entries are still read (here: none, so a miss).
        self.compile_and_check()
        [path] = LocalStore().iter_paths()
        real_scandir = os.scandir

        class Listing:
            def __init__(self, folder: Any) -> None:
                self._it = real_scandir(folder)

            def __enter__(self) -> Listing:
                return self

            def __exit__(self, *exc: Any) -> None:
                self._it.close()

            def __iter__(self) -> Iterator[Any]:
                for e in self._it:
                    if e.path == path:
                        os.unlink(path)
                    yield e

        def scandir(folder: Any = ".") -> Any:
            if os.fspath(folder) == os.path.dirname(path):
                return Listing(folder)
            return real_scandir(folder)

        clear_in_memory_state()
        with capture_warnings() as logs, unittest.mock.patch("os.scandir", scandir):
            self.compile_and_check()
        self.assertEqual(counters["torch_aotcache"]["entry_vanished"], 1)
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assert_quiet(logs, 0)


if __name__ == "__main__":
    from torch._dynamo.test_case import run_tests

    run_tests()
