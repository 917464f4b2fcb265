"""
Many processes, one cache dir (issue "Entries you can trust", item 5).

``test_eight_processes_share_one_store``: eight interpreters start together
(a start file releases them at once, after their imports) and each compiles a
graph they all share, a graph of its own, and the shared graph again after
forgetting what it compiled (so it reads what the others wrote).  No process
fails, every result equals eager, no entry is refused (a torn read would be:
its checksum would not match), no payload is unpickled that the process did
not verify, and the store ends with one file per key and guard.

``test_writer_killed_mid_write_leaves_no_entry``: a process writing a large
entry in small, slow chunks is killed with SIGKILL; what is left is a hidden
``.tmp-*`` file that no reader lists, and a later write of the same entry works.

The graphs are matmuls and views (extern kernels, no C++ to compile) so that
eight processes finish in well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import tempfile
import time
import unittest
import unittest.mock
from collections import defaultdict

import torch

from torch_aotcache import schemas
from torch_aotcache.entry import framing
from torch_aotcache.store.layout import entries_root, key_dir
from torch_aotcache.store.local import LocalStore

from common import child_env, slow, spawn_child

# Every test here starts other processes or compiles many programs (CONTRIBUTING.md, "Tests").
pytestmark = slow


NPROCS = 8

WORKER = r"""
import hashlib, json, os, pickle, sys, time

index, start_file = int(sys.argv[1]), sys.argv[2]
import torch
import torch_aotcache
from torch._dynamo.utils import counters
from torch_aotcache import schemas
from torch_aotcache.entry import framing
from torch_aotcache.store.local import LocalStore

# Every payload this process verified, and every entry it read from the store:
# bytes from the store that reach pickle.loads without having been verified
# are counted as unverified unpickles.
verified, read = set(), []
real_verify, real_loads, real_candidates = framing.verify_entry, pickle.loads, LocalStore.candidates

def verify_entry(data, **kw):
    entry = real_verify(data, **kw)
    verified.add(hashlib.sha256(entry.payload).hexdigest())
    return entry

def candidates(self, key):
    for stored in real_candidates(self, key):
        read.append(stored.data)
        yield stored

unverified = 0

def loads(data, *a, **k):
    global unverified
    b = bytes(data)
    if any(b in d for d in read) and hashlib.sha256(b).hexdigest() not in verified:
        unverified += 1
    return real_loads(data, *a, **k)

framing.verify_entry, pickle.loads, LocalStore.candidates = verify_entry, loads, candidates

def shared(x, w):
    return (x @ w).t() @ x

DEPTH = index + 1

def own(x, w):
    for _ in range(DEPTH):  # unrolled by Dynamo: a different graph per process
        x = x @ w
    return x.t()

g = torch.Generator().manual_seed(0)
x, w, sq = torch.randn(4, 3, generator=g), torch.randn(3, 5, generator=g), torch.randn(3, 3, generator=g)
runs = [("shared", shared, (x, w)), ("own", own, (x, sq)), ("shared-again", shared, (x, w))]

open(start_file + ".ready%d" % index, "w").close()
while not os.path.exists(start_file):
    time.sleep(0.01)

results = []
for name, fn, args in runs:
    if name == "shared-again":
        torch._dynamo.reset()
        torch._inductor.codecache.PyCodeCache.cache_clear(purge=True)
    try:
        out = torch.compile(fn)(*args)
        torch.testing.assert_close(out, fn(*args))
        results.append([name, "ok"])
    except AssertionError as e:
        results.append([name, "wrong: %s" % e])
    except Exception as e:
        results.append([name, "failed: %s: %s" % (type(e).__name__, e)])
print(json.dumps({
    "index": index,
    "results": results,
    "aot": {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")},
    "tac": {k: v for k, v in counters["torch_aotcache"].items() if k != "post_compile_ns"},
    "unverified_unpickles": unverified,
    "verified": len(verified),
}))
"""


def worker_env(cache: str) -> dict[str, str]:
    return child_env({"TORCHINDUCTOR_CACHE_DIR": cache, "TORCHINDUCTOR_COMPILE_THREADS": "1"})


class TestConcurrency(unittest.TestCase):
    def test_eight_processes_share_one_store(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            cache = os.path.join(tmp, "cache")
            start = os.path.join(tmp, "go")
            env = worker_env(cache)
            procs = [
                spawn_child(["-c", WORKER, str(i), start], env, cwd=tmp)
                for i in range(NPROCS)
            ]
            try:
                deadline = time.monotonic() + 120
                while not all(os.path.exists(f"{start}.ready{i}") for i in range(NPROCS)):
                    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                        break
                    time.sleep(0.05)
                open(start, "w").close()  # all of them at once
                outputs = [p.communicate(timeout=240) for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
            reports = []
            for p, (out, err) in zip(procs, outputs):
                self.assertEqual(p.returncode, 0, err[-3000:])
                self.assertNotIn("Traceback", err, err[-3000:])
                reports.append(json.loads(out.strip().splitlines()[-1]))

            with unittest.mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": cache}):
                self.check_store(reports)

    def check_store(self, reports: list[dict]) -> None:
        compiles = 0
        for r in reports:
            for name, status in r["results"]:
                compiles += 1
                self.assertEqual(status, "ok", f"process {r['index']} graph {name}")
            self.assertEqual(r["unverified_unpickles"], 0, r)
            # A torn or half-written read would be refused (size/checksum).
            self.assertNotIn("entry_rejected", r["tac"], r)
            self.assertNotIn("store_read_failed", r["tac"], r)
            self.assertNotIn("store_write_failed", r["tac"], r)
            self.assertEqual(sum(r["aot"].get(k, 0) for k in ("autograd_cache_hit", "autograd_cache_miss")), 3, r)
        self.assertEqual(compiles, 3 * NPROCS)
        # The second compile of the shared graph read the store others wrote to.
        self.assertGreaterEqual(sum(r["aot"].get("autograd_cache_hit", 0) for r in reports), NPROCS)

        by_key: dict[str, list[schemas.EntryHeader]] = defaultdict(list)
        leftovers = []
        for dirpath, _dirs, files in os.walk(entries_root()):
            leftovers.extend(n for n in files if n.startswith("."))
        self.assertEqual(leftovers, [])
        for path in LocalStore().iter_paths():
            with open(path, "rb") as f:
                header = framing.verify_entry(f.read(), key=None, torch_version=torch.__version__).header
            self.assertEqual(os.path.basename(os.path.dirname(path)), header.key)
            self.assertEqual(os.path.basename(path), header.entry_id + ".entry")
            by_key[header.key].append(header)
        # One key shared by all, one of each process's own.
        self.assertEqual(len(by_key), NPROCS + 1)
        for key, headers in by_key.items():
            guards = [h.guards_expr for h in headers]
            self.assertEqual(len(guards), len(set(guards)), f"duplicate entries under {key}")


KILLED_WRITER = r"""
import os, sys, time
import torch_aotcache
from torch_aotcache.store.local import LocalStore

key, entry_id, path = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
real_fdopen = os.fdopen

class Slow:
    # Writes in 64 KiB chunks, 20 ms apart: a 4 MiB entry takes over a second.
    def __init__(self, f):
        self.f = f
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()
    def write(self, b):
        mv = memoryview(b)
        for i in range(0, len(mv), 1 << 16):
            self.f.write(mv[i:i + (1 << 16)])
            self.f.flush()
            if i == 0:
                print("writing", flush=True)
            time.sleep(0.02)
        return len(mv)

os.fdopen = lambda fd, *a, **k: Slow(real_fdopen(fd, *a, **k))
LocalStore().put(key, entry_id, data)
print("finished", flush=True)
"""


class TestKilledWriter(unittest.TestCase):
    def test_writer_killed_mid_write_leaves_no_entry(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            cache = os.path.join(tmp, "cache")
            payload = pickle.dumps(os.urandom(4 << 20))
            key = "tac" + "ab" * 20
            header = schemas.make_header(
                key=key, payload=payload, torch_version=torch.__version__, created_ns=time.time_ns(),
                forward_cost_ns=1, backward_cost_ns=0, guards_expr=None, mode="bundled", components={},
            )
            data = framing.encode_entry(header, payload)
            src = os.path.join(tmp, "entry.bin")
            with open(src, "wb") as f:
                f.write(data)
            proc = spawn_child(["-c", KILLED_WRITER, key, header.entry_id, src], worker_env(cache), cwd=tmp)
            try:
                line = proc.stdout.readline()
                self.assertEqual(line.strip(), "writing", proc.stderr.read() if not line else "")
                time.sleep(0.3)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            self.assertEqual(proc.returncode, -signal.SIGKILL)

            with unittest.mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": cache}):
                store = LocalStore()
                left = os.listdir(key_dir(key))
                self.assertEqual(len(left), 1, left)
                self.assertTrue(left[0].startswith(".tmp-"), left)
                partial = os.path.getsize(os.path.join(key_dir(key), left[0]))
                self.assertGreater(partial, 0)
                self.assertLess(partial, len(data))
                self.assertEqual(list(store.candidates(key)), [])
                self.assertEqual(list(store.iter_paths()), [])

                path = store.put(key, header.entry_id, data)
                [stored] = store.candidates(key)
                self.assertEqual(stored.path, path)
                verified = framing.verify_entry(stored.data, key=key, torch_version=torch.__version__)
                got, got_payload = verified.header, verified.payload
                self.assertEqual(bytes(got_payload), payload)
                self.assertEqual(list(store.iter_paths()), [path])


if __name__ == "__main__":
    unittest.main()
