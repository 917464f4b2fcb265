"""
The size-bounded store (Note [Bounded store] in store/housekeeping.py): what is
evicted first, hits recorded in access times, stale files, eight processes
saving and reading at once with one killed in the middle, and a real compile
under a bound that holds one entry.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
import unittest
from pathlib import Path

import torch
from torch._dynamo.utils import counters

import torch_aotcache  # noqa: F401  (installs itself)
from torch_aotcache import config
from torch_aotcache.entry import framing
from torch_aotcache.store import housekeeping, layout, stats, local as storage

from common import CacheTestCase, child_env, clear_in_memory_state, slow, spawn_child
from fake_entries import fake_entry, write_fake_entry


def _sizes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "entries").rglob("*.entry"))


class TestSizeBound(unittest.TestCase):
    def test_parse_size(self) -> None:
        self.assertEqual(layout.parse_size("500M"), 500 << 20)
        self.assertEqual(layout.parse_size("20G"), 20 << 30)
        self.assertEqual(layout.parse_size("1.5K"), 1536)
        self.assertEqual(layout.parse_size("123"), 123)
        self.assertEqual(layout.parse_size(4096), 4096)
        for unbounded in ("0", "", "none", None, 0):
            self.assertIsNone(layout.parse_size(unbounded))
        for bad in ("ten gigs", "5X", "-3M", True):
            with self.assertRaises(ValueError):
                layout.parse_size(bad)

    def test_a_bad_bound_falls_back_to_the_default_with_one_warning(self) -> None:
        from torch_aotcache import _once

        _once.reset("max-size:")
        with config.patch(max_size="ten gigs"), self.assertLogs("torch_aotcache.store.layout", logging.WARNING) as logs:
            # A typo never fails a compile: the default bound applies.
            self.assertEqual(layout.max_size(), 10 << 30)
            self.assertEqual(layout.max_size(), 10 << 30)
        (record,) = logs.records
        self.assertIn("not a size: 'ten gigs'", record.getMessage())
        self.assertIn("falls back to 10G", record.getMessage())

    def test_plan_evicts_least_time_saved_per_byte_first(self) -> None:
        now = 1_000_000 * 10**9
        day = 86400 * 10**9
        files = {
            "precious": housekeeping.StoredFile("precious", 1_000_000, now, now),      # 10 s per MB
            "cheap": housekeeping.StoredFile("cheap", 1_000_000, now, now),            # 0.1 s per MB
            "big": housekeeping.StoredFile("big", 10_000_000, now, now),               # 10 s per 10 MB
            "idle": housekeeping.StoredFile("idle", 1_000_000, now - 30 * day, now - 30 * day),  # 10 s, a month idle
        }
        cost = {"precious": 10**10, "cheap": 10**8, "big": 10**10, "idle": 10**10}
        total = sum(f.size for f in files.values())
        plan = housekeeping.plan_eviction(list(files.values()), total - 1, now_ns=now, cost_of=cost.__getitem__)
        # Over the bound by a byte: down to 90% of it (so the next saves only list), worst first.
        self.assertEqual([f.path for f in plan], ["cheap", "idle"])
        self.assertLessEqual(total - sum(f.size for f in plan), housekeeping.LOW_WATER * (total - 1))
        plan = housekeeping.plan_eviction(list(files.values()), 3_000_000, now_ns=now, cost_of=cost.__getitem__)
        self.assertEqual([f.path for f in plan], ["cheap", "idle", "big"])
        # Under the bound: nothing.
        self.assertEqual(
            housekeeping.plan_eviction(list(files.values()), total, now_ns=now, cost_of=cost.__getitem__), []
        )
        # The entry just written is kept even when it is worth least...
        plan = housekeeping.plan_eviction(list(files.values()), total - 1, keep="cheap", now_ns=now,
                                          cost_of=cost.__getitem__)
        self.assertEqual([f.path for f in plan], ["idle", "big"])
        # ...unless it alone is over the bound.
        plan = housekeeping.plan_eviction(list(files.values()), 5_000_000, keep="big", now_ns=now,
                                          cost_of=cost.__getitem__)
        self.assertIn("big", [f.path for f in plan])


class TestBoundedStore(unittest.TestCase):
    """Saves and hits in a store of this process (``config.store_dir``)."""

    def setUp(self) -> None:
        super().setUp()
        self.store = Path(self.enterContext(tempfile.TemporaryDirectory())) / "store"
        self.enterContext(config.patch(store_dir=str(self.store)))

    def test_saves_keep_the_store_under_the_bound(self) -> None:
        store = self.store
        counters.clear()
        _, _, one = fake_entry("probe", size=10_000)
        bound = 5 * len(one)
        with config.patch(max_size=str(bound)):
            for i in range(20):
                path = write_fake_entry(f"e{i}", size=10_000)
                self.assertLessEqual(_sizes(store), bound)
                self.assertTrue(os.path.exists(path), "the entry just saved is kept")
        left = list((store / "entries").rglob("*.entry"))
        self.assertTrue(3 <= len(left) <= 5, len(left))
        # Each eviction is one line of the statistics, counting every entry removed.
        (totals,) = stats.read_days().values()
        self.assertEqual(totals.evictions, 20 - len(left))
        self.assertEqual(20 - len(left), counters["torch_aotcache"]["evicted"])
        self.assertEqual(totals.evicted_bytes, counters["torch_aotcache"]["evicted_bytes"])
        self.assertGreater(counters["torch_aotcache"]["evicted_bytes"], 0)
        # Evicted keys leave no empty folders behind (an inode each).
        self.assertTrue(all(any(d.iterdir()) for d in (store / "entries").glob("*/*")))
        # Every entry left is whole.
        for p in left:
            framing.verify_entry(p.read_bytes(), key=None, torch_version=layout.torch_version() or "?")

    def test_a_hit_sets_the_access_time_only_and_protects_the_entry(self) -> None:
        with config.patch(max_size="0"):
            a = write_fake_entry("a", size=10_000)
            b = write_fake_entry("b", size=10_000)
        old = time.time_ns() - 3 * 86400 * 10**9
        for p in (a, b):
            os.utime(p, ns=(old, old))
        # Reading headers (tools, housekeeping) is not a use.
        framing.read_header(a)
        self.assertEqual(os.stat(a).st_atime_ns, old)
        storage.LocalStore().record_hit(a)
        st = os.stat(a)
        self.assertEqual(st.st_mtime_ns, old, "the modification time orders a key's entries; a hit leaves it")
        self.assertGreater(st.st_atime_ns, old + 86400 * 10**9)
        # Room for two entries of the three: b, equal but not hit for three days, goes.
        with config.patch(max_size=str(int(2.5 * os.stat(a).st_size))):
            c = write_fake_entry("c", size=10_000)
        self.assertTrue(os.path.exists(a) and os.path.exists(c) and not os.path.exists(b))
        self.assertGreaterEqual(counters["torch_aotcache"]["evicted"], 1)

    def test_stale_files(self) -> None:
        import fcntl

        store = self.store
        write_fake_entry("kept")
        locks = store / "locks"
        locks.mkdir()
        old = time.time() - 2 * 3600
        free, held, young = locks / "free.lock", locks / "held.lock", locks / "young.lock"
        for p in (free, held, young):
            p.write_bytes(b"")
        for p in (free, held):
            os.utime(p, (old, old))
        fd = os.open(held, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        quarantine = store / "quarantine"
        quarantine.mkdir()
        stale_q = quarantine / f"{time.time_ns() - 8 * 86400 * 10**9}-tacx-y.entry"
        fresh_q = quarantine / f"{time.time_ns()}-tacx-z.entry"
        for p in (stale_q, fresh_q):
            p.write_bytes(b"x")
        key_folder = next((store / "entries").glob("*/*"))
        tmp = key_folder / ".tmp-abc"
        tmp.write_bytes(b"partial")
        os.utime(tmp, (old, old))
        try:
            found = {(s.kind, os.path.basename(s.path)) for s in housekeeping.find_stale(str(store))}
            self.assertEqual(found, {("lock", "free.lock"), ("quarantine", stale_q.name), ("temporary", ".tmp-abc")})
            self.assertEqual(housekeeping.remove_stale(housekeeping.find_stale(str(store))), 3)
            self.assertTrue(not free.exists() and held.exists() and young.exists() and fresh_q.exists())
            self.assertTrue(not tmp.exists() and len(list((store / "entries").rglob("*.entry"))) == 1)
        finally:
            os.close(fd)

    def test_a_writer_killed_mid_save_makes_the_next_save_list_the_store(self) -> None:
        store = self.store
        with config.patch(max_size="0"):
            for i in range(6):
                write_fake_entry(f"w{i}", size=10_000)
        total = _sizes(store)
        # The ledger of a writer that died after writing, before counting: it
        # says "write in progress" and a total far too small.
        ledger = housekeeping.Ledger(total=0, listed_ns=time.time_ns(), swept_ns=time.time_ns(), dirty=1)
        fd = os.open(store / housekeeping.LOCK_NAME, os.O_RDWR)
        ledger.write(fd)
        os.close(fd)
        with config.patch(max_size=str(total // 2)):
            write_fake_entry("after", size=10_000)
        self.assertLessEqual(_sizes(store), total // 2)
        fd = os.open(store / housekeeping.LOCK_NAME, os.O_RDWR)
        after = housekeeping.Ledger.read(fd)
        os.close(fd)
        self.assertEqual(after.dirty, 0)
        self.assertEqual(after.total, _sizes(store))

    def test_a_save_sweeps_stale_files_once_an_hour(self) -> None:
        store = self.store
        write_fake_entry("first")  # the first save sweeps, and records when
        locks = store / "locks"
        locks.mkdir()
        stale = locks / "tacold.lock"
        stale.write_bytes(b"")
        old = time.time() - 2 * 3600
        os.utime(stale, (old, old))
        write_fake_entry("second")
        self.assertTrue(stale.exists(), "swept less than an hour ago: left for the next sweep")
        fd = os.open(store / housekeeping.LOCK_NAME, os.O_RDWR)
        try:
            ledger = housekeeping.Ledger.read(fd)
            self.assertGreater(ledger.swept_ns, 0)
            ledger.swept_ns -= int(housekeeping.SWEEP_EVERY_S * 1e9)
            ledger.write(fd)
        finally:
            os.close(fd)
        write_fake_entry("third")
        self.assertFalse(stale.exists())
        self.assertGreaterEqual(counters["torch_aotcache"]["stale_removed"], 1)


# --------------------------------------------------------------------------
# Eight processes, one killed.

WORKER = r"""
import json, os, random, sys, time
index, rounds = int(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, sys.argv[3])
from torch_aotcache.store import housekeeping, layout
from torch_aotcache import schemas
from torch_aotcache.entry import framing
from torch_aotcache.store.local import LocalStore
from fake_entries import fake_entry, fake_key

store = LocalStore()
version = layout.torch_version() or "?"
rng = random.Random(index)
reads = vanished = 0
for r in range(rounds):
    # A precious entry (a minute of compile time in 1 KB) and junk (1 ms in 20 KB).
    if r % 4 == 0:
        key, eid, data = fake_entry(f"precious-{index}-{r}", size=500, cost_ns=60 * 10**9)
        store.put(key, eid, data)
        print(json.dumps({"precious": key}), flush=True)
    key, eid, data = fake_entry(f"junk-{index}-{r}", size=20_000, cost_ns=10**6)
    store.put(key, eid, data)
    # Read entries others wrote, as lookups do: verify everything read.
    for name in (f"precious-{rng.randrange(8)}-{4 * rng.randrange(max(1, r // 4 + 1))}",
                 f"junk-{rng.randrange(8)}-{rng.randrange(r + 1)}"):
        key = fake_key(name)
        for stored in store.candidates(key):
            header = framing.verify_entry(stored.data, key=key, torch_version=version).header
            store.record_hit(stored.path)
            reads += 1
print(json.dumps({"done": True, "reads": reads, "torch": "torch" in sys.modules}), flush=True)
"""


@slow
class TestEightProcesses(unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(self.enterContext(tempfile.TemporaryDirectory()))

    def test_eight_processes_end_under_the_bound_and_keep_what_is_worth_most(self) -> None:
        root = self.tmp / "store"
        bound = 400_000
        env = child_env({"TORCH_AOTCACHE_DIR": str(root), "TORCH_AOTCACHE_MAX_SIZE": str(bound)})
        test_dir = os.path.dirname(os.path.abspath(__file__))
        procs = [spawn_child(["-c", WORKER, str(i), "80", test_dir], env) for i in range(8)]
        victim = procs[0]
        # Kill one once it has written something, in the middle of its run.
        first = victim.stdout.readline()  # type: ignore[union-attr]
        self.assertIn("precious", first)
        time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        outputs = []
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=300)
            if i == 0:
                out = first + out
                self.assertEqual(p.returncode, -signal.SIGKILL)
            else:
                self.assertEqual(p.returncode, 0, err)
                self.assertIn('"done": true', out)
                self.assertIn('"torch": false', out, "the store API never imports torch")
            outputs.append(out)
        # No reader failed (a torn or half-evicted read would have raised), the
        # store is under the bound, and every precious entry written is there.
        self.assertLessEqual(_sizes(root), bound)
        precious = [json.loads(line)["precious"] for out in outputs for line in out.splitlines() if "precious" in line]
        self.assertGreater(len(precious), 7 * 20)
        stored_keys = {p.parent.name for p in (root / "entries").rglob("*.entry")}
        self.assertLessEqual(set(precious), stored_keys)
        # Junk was evicted: far more was written than fits.
        self.assertLess(len(stored_keys), len(precious) + 7 * 80)
        # A killed writer leaves at most a hidden temporary file, which no reader lists.
        entries, temporaries = housekeeping.scan(str(root))
        self.assertTrue(all(os.path.basename(t.path).startswith(".tmp-") for t in temporaries))
        for f in entries:
            framing.verify_entry(Path(f.path).read_bytes(), key=None, torch_version=layout.torch_version() or "?")


# --------------------------------------------------------------------------
# A real compile under a bound that holds one entry.


@slow
class TestCompileUnderABound(CacheTestCase):
    def test_compiles_keep_working_under_a_tiny_bound(self) -> None:
        def f(x: torch.Tensor) -> torch.Tensor:
            return (x.sin() * 2).sum()

        def g(x: torch.Tensor) -> torch.Tensor:
            return (x.cos() + x).sum()

        def run(fn, x):  # type: ignore[no-untyped-def]
            x = x.detach().requires_grad_()
            out = torch.compile(fn)(x)
            out.backward()
            return out.detach(), x.grad

        x = torch.randn(16)
        run(f, x)
        (entry,) = storage.LocalStore().iter_paths()
        with config.patch(max_size=str(int(1.5 * os.path.getsize(entry)))):
            clear_in_memory_state()
            run(g, x)
            self.assertEqual(counters["aot_autograd"]["autograd_cache_saved"], 1)
            self.assertEqual(counters["torch_aotcache"]["evicted"], 1)
            (kept,) = storage.LocalStore().iter_paths()
            self.assertTrue(kept != entry and not os.path.exists(entry))
            # g hits; f compiles again (its entry was evicted), and both are right.
            clear_in_memory_state()
            out, grad = run(g, x)
            self.assertEqual(counters["aot_autograd"]["autograd_cache_hit"], 1)
            ref = x.detach().requires_grad_()
            g(ref).backward()
            torch.testing.assert_close(out, g(x))
            torch.testing.assert_close(grad, ref.grad)
            clear_in_memory_state()
            out, grad = run(f, x)
            self.assertEqual(counters["aot_autograd"]["autograd_cache_miss"], 1)
            ref = x.detach().requires_grad_()
            f(ref).backward()
            torch.testing.assert_close(out, f(x))
            torch.testing.assert_close(grad, ref.grad)
            self.assertEqual(len(list(storage.LocalStore().iter_paths())), 1)


if __name__ == "__main__":
    unittest.main()
