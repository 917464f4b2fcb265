"""
Single-flight compiles: concurrent cold processes compile a graph once; a
dead holder never blocks anyone for long.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import unittest.mock

import torch
from torch._dynamo.utils import counters
from torch._functorch._aot_autograd import autograd_cache as upstream_cache, graph_compile
from torch._inductor import compile_fx
from torch._inductor.utils import fresh_cache

from torch_aotcache import config as tac_config
from torch_aotcache.tiers import remote, single_flight

from common import aot_counts, CacheTestCase, child_env, run_python, slow, spawn_child
from redis_server import RedisServer, redis_missing

REDIS_MISSING = redis_missing()


WORKER = """
import json, os, sys, time, torch
import torch_aotcache
from torch._dynamo.utils import counters
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.SiLU(), torch.nn.Linear(20, 2))
x = torch.randn(3, 10)
# Line up: start compiling together.
go = float(sys.argv[1])
while time.time() < go:
    time.sleep(0.01)
out = torch.compile(m)(x)
out.sum().backward()
print(json.dumps({"aot": dict(counters["aot_autograd"]), "tac": dict(counters["torch_aotcache"]),
                  "out": out.tolist(), "grad": m[0].weight.grad.tolist()}))
"""


def spawn(code: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return spawn_child(["-c", code, *args], child_env(env), cwd=os.getcwd())


@slow
class TestConcurrentColdProcesses(unittest.TestCase):
    def test_eight_processes_compile_once(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            go = time.time() + 12  # after every process has imported torch
            procs = [spawn(WORKER, {"TORCHINDUCTOR_CACHE_DIR": d}, str(go)) for _ in range(8)]
            results = []
            for p in procs:
                out, err = p.communicate(timeout=600)
                self.assertEqual(p.returncode, 0, err[-3000:])
                results.append(json.loads(out.strip().splitlines()[-1]))
        saved = sum(r["aot"].get("autograd_cache_saved", 0) for r in results)
        hits = sum(r["aot"].get("autograd_cache_hit", 0) for r in results)
        self.assertEqual(saved, 1, [r["aot"] for r in results])
        self.assertEqual(hits, 7)
        self.assertGreaterEqual(sum(r["tac"].get("single_flight_waited", 0) for r in results), 1)
        for r in results[1:]:
            self.assertEqual(r["out"], results[0]["out"])
            self.assertEqual(r["grad"], results[0]["grad"])


HOLDER = """
import sys, time
import torch_aotcache
from torch_aotcache.tiers import single_flight
assert single_flight.coordinate(sys.argv[1], lambda: None, None) is None
print("holding", flush=True)
time.sleep(600)
"""


@slow
class TestLocalLock(unittest.TestCase):
    def setUp(self) -> None:
        self._fresh = fresh_cache()
        self._fresh.__enter__()
        counters.clear()

    def tearDown(self) -> None:
        single_flight.release_all()
        self._fresh.__exit__(None, None, None)

    def start_holder(self, key: str) -> subprocess.Popen[str]:
        from torch._inductor.runtime.runtime_utils import cache_dir

        p = spawn(HOLDER, {"TORCHINDUCTOR_CACHE_DIR": cache_dir()}, key)
        self.assertEqual(p.stdout.readline().strip(), "holding")
        return p

    def test_dead_holder_frees_the_lock_at_once(self) -> None:
        key = "tac" + "1" * 40
        holder = self.start_holder(key)
        threading.Timer(0.5, lambda: holder.send_signal(signal.SIGKILL)).start()
        start = time.monotonic()
        with tac_config.patch(single_flight_wait_s=30):
            self.assertIsNone(single_flight.coordinate(key, lambda: None, None))
        waited = time.monotonic() - start
        holder.wait()
        self.assertGreater(waited, 0.3)
        self.assertLess(waited, 10)
        self.assertTrue(single_flight.holding(key))
        self.assertEqual(counters["torch_aotcache"]["single_flight_timeout"], 0)

    def test_waiter_loads_the_holders_entry(self) -> None:
        key = "tac" + "2" * 40
        holder = self.start_holder(key)
        state = {"ready": False}
        threading.Timer(0.4, lambda: state.update(ready=True)).start()
        try:
            got = single_flight.coordinate(key, lambda: ("entry", b"bytes") if state["ready"] else None, None)
        finally:
            holder.kill()
            holder.wait()
        self.assertEqual(got, ("entry", b"bytes"))
        self.assertFalse(single_flight.holding(key))
        self.assertEqual(counters["torch_aotcache"]["single_flight_waited"], 1)

    def test_wait_is_bounded(self) -> None:
        key = "tac" + "3" * 40
        holder = self.start_holder(key)
        try:
            start = time.monotonic()
            with tac_config.patch(single_flight_wait_s=0.5):
                self.assertIsNone(single_flight.coordinate(key, lambda: None, None))
            self.assertLess(time.monotonic() - start, 5)
        finally:
            holder.kill()
            holder.wait()
        self.assertEqual(counters["torch_aotcache"]["single_flight_timeout"], 1)
        self.assertFalse(single_flight.holding(key))

    def test_disabled(self) -> None:
        key = "tac" + "4" * 40
        holder = self.start_holder(key)
        try:
            with tac_config.patch(single_flight=False):
                start = time.monotonic()
                self.assertIsNone(single_flight.coordinate(key, lambda: None, None))
                self.assertLess(time.monotonic() - start, 0.2)
        finally:
            holder.kill()
            holder.wait()


@unittest.skipIf(REDIS_MISSING is not None, REDIS_MISSING or "")
class TestRedisLock(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer().start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.close()

    def setUp(self) -> None:
        self._fresh = fresh_cache()
        self._fresh.__enter__()
        remote.reset()
        self._patch = tac_config.patch(redis_url=self.server.url, signing_key="k")
        self._patch.__enter__()
        counters.clear()

    def tearDown(self) -> None:
        single_flight.release_all()
        self._patch.__exit__(None, None, None)
        remote.reset()
        self._fresh.__exit__(None, None, None)

    def test_dead_holder_on_another_machine_expires(self) -> None:
        key = "tac" + "5" * 40
        tier = remote.tier(True)
        lock_name = "torch_aotcache:lock:" + tier.redis_key(key)
        # Another machine took the lock and died: nobody refreshes it.
        self.server.client().set(lock_name, "dead-machine-token", px=700)
        start = time.monotonic()
        self.assertIsNone(single_flight.coordinate(key, lambda: None, tier))
        waited = time.monotonic() - start
        self.assertGreater(waited, 0.4)
        self.assertLess(waited, 10)
        self.assertTrue(single_flight.holding(key))
        token = self.server.client().get(lock_name)
        self.assertNotEqual(token, b"dead-machine-token")
        single_flight.release(key)
        self.assertIsNone(self.server.client().get(lock_name))

    def test_holder_refreshes_its_lock(self) -> None:
        key = "tac" + "6" * 40
        tier = remote.tier(True)
        with tac_config.patch(single_flight_remote_ttl_s=0.3):
            self.assertIsNone(single_flight.coordinate(key, lambda: None, tier))
            time.sleep(0.8)  # well past the expiry: the heartbeat kept it
            lock_name = "torch_aotcache:lock:" + tier.redis_key(key)
            self.assertIsNotNone(self.server.client().get(lock_name))
            single_flight.release(key)
            self.assertIsNone(self.server.client().get(lock_name))

    def test_release_never_deletes_another_holders_lock(self) -> None:
        key = "tac" + "7" * 40
        tier = remote.tier(True)
        self.assertIsNone(single_flight.coordinate(key, lambda: None, tier))
        lock_name = "torch_aotcache:lock:" + tier.redis_key(key)
        self.server.client().set(lock_name, "someone-else")
        single_flight.release(key)
        self.assertEqual(self.server.client().get(lock_name), b"someone-else")


@slow
@unittest.skipIf(REDIS_MISSING is not None, REDIS_MISSING or "")
class TestFleetCompilesOnce(unittest.TestCase):
    def test_four_machines_compile_once(self) -> None:
        server = RedisServer().start()
        try:
            with tempfile.TemporaryDirectory() as d:
                go = time.time() + 10
                procs = [
                    spawn(
                        WORKER,
                        {
                            "TORCHINDUCTOR_CACHE_DIR": os.path.join(d, f"machine{i}"),
                            "TORCH_AOTCACHE_REDIS_URL": server.url,
                            "TORCH_AOTCACHE_SIGNING_KEY": "fleet",
                            "TORCH_AOTCACHE_REMOTE_SYNC": "1",
                        },
                        str(go),
                    )
                    for i in range(4)
                ]
                results = []
                for p in procs:
                    out, err = p.communicate(timeout=600)
                    self.assertEqual(p.returncode, 0, err[-3000:])
                    results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            server.close()
        self.assertEqual(sum(r["aot"].get("autograd_cache_saved", 0) for r in results), 1)
        self.assertEqual(sum(r["aot"].get("autograd_cache_hit", 0) for r in results), 3)
        self.assertEqual(sum(r["tac"].get("remote_hit", 0) for r in results), 3)




# Note [Releasing a flight the compile does not save] in tiers/single_flight.py.

FAILING_HOLDER = """
import json, os, sys, time, torch
import torch_aotcache
from torch_aotcache import config as tac_config
from torch._dynamo.utils import counters
tac_config.single_flight_wait_s = 60.0
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.SiLU(), torch.nn.Linear(20, 2))
x = torch.randn(3, 10)
# Inductor raises after the lookup.
import torch._inductor.compile_fx as compile_fx
def broken(*args, **kwargs):
    raise RuntimeError("Inductor failed")
compile_fx._compile_fx_inner = broken
try:
    torch.compile(m)(x)
    print("compiled", flush=True)
except Exception as e:
    print("failed " + json.dumps(dict(counters["torch_aotcache"])), flush=True)
# Live on until the other process is done.
deadline = time.time() + 600
while time.time() < deadline and not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
"""

SECOND_COMPILER = """
import json, time, torch
import torch_aotcache
from torch_aotcache import config as tac_config
from torch_aotcache.tiers import single_flight
from torch._dynamo.utils import counters
tac_config.single_flight_wait_s = 60.0
waited = []
coordinate = single_flight.coordinate
def timed(*args, **kwargs):
    start = time.monotonic()
    try:
        return coordinate(*args, **kwargs)
    finally:
        waited.append(time.monotonic() - start)
single_flight.coordinate = timed
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.SiLU(), torch.nn.Linear(20, 2))
x = torch.randn(3, 10)
start = time.monotonic()
out = torch.compile(m)(x)
out.sum().backward()
wall = time.monotonic() - start
print(json.dumps({"waited": waited, "wall": wall, "same": torch.allclose(out, m(x)),
                  "aot": dict(counters["aot_autograd"]), "tac": dict(counters["torch_aotcache"])}))
"""


@slow
class TestReleaseWithoutSave(unittest.TestCase):
    def test_failed_compile_in_a_live_process_does_not_hold_others(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            done = os.path.join(d, "done")
            env = {"TORCHINDUCTOR_CACHE_DIR": os.path.join(d, "cache")}
            holder = spawn(FAILING_HOLDER, env, done)
            try:
                line = holder.stdout.readline().strip()
                if not line.startswith("failed "):
                    holder.kill()
                    self.fail(line + holder.communicate()[1][-3000:])
                self.assertEqual(json.loads(line[len("failed "):]).get("single_flight_released_unsaved"), 1)
                self.assertIsNone(holder.poll())  # alive while the other compiles
                second = run_python(SECOND_COMPILER, env)
                self.assertEqual(second.returncode, 0, second.stderr[-3000:])
                self.assertIsNone(holder.poll())
            finally:
                open(done, "w").close()
                holder.communicate(timeout=120)
        r = json.loads(second.stdout.strip().splitlines()[-1])
        self.assertTrue(r["same"])
        # It took the lock at once: no wait, no timeout (a held lock costs the
        # whole single_flight_wait_s, 60 s).  The wall time only has to stay
        # under that limit: the compile itself may be slow on a loaded machine.
        self.assertEqual(len(r["waited"]), 1, r)
        self.assertLess(r["waited"][0], 5, r)
        self.assertLess(r["wall"], 60, r)
        self.assertEqual(r["tac"].get("single_flight_timeout", 0), 0, r)
        self.assertEqual(r["aot"].get("autograd_cache_saved"), 1, r)


@slow
class TestReleaseWithoutSaveInProcess(CacheTestCase):
    """The key's lock is free again (another descriptor can take it at once)
    after a compile that did not save."""

    def setUp(self) -> None:
        super().setUp()
        self.keys: list[str] = []
        coordinate = single_flight.coordinate

        def recording(key, *args, **kwargs):
            self.keys.append(key)
            return coordinate(key, *args, **kwargs)

        patcher = unittest.mock.patch.object(single_flight, "coordinate", recording)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.addCleanup(single_flight.release_all)

    def assert_free(self) -> None:
        self.assertEqual(len(self.keys), 1, self.keys)
        key = self.keys[0]
        self.assertFalse(single_flight.holding(key))
        other = single_flight.Flight(key)
        try:
            self.assertTrue(other.try_local())
            self.assertIsNotNone(other.fd)
        finally:
            other.release()

    def no_save(self):
        return unittest.mock.patch.object(graph_compile, "_should_save_cache", lambda *fns: False)

    def test_compile_raises(self) -> None:
        def broken(*args, **kwargs):
            raise RuntimeError("Inductor failed")

        with unittest.mock.patch.object(compile_fx, "_compile_fx_inner", broken):
            with self.assertRaises(Exception):
                torch.compile(torch.sin)(torch.randn(4))
        self.assertEqual(counters["torch_aotcache"]["single_flight_released_unsaved"], 1)
        self.assert_free()

    def test_inference_graph_not_saved(self) -> None:
        with self.no_save():
            torch.compile(torch.sin)(torch.randn(4))
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1})
        self.assert_free()

    def test_lazy_backward_holds_until_its_save_is_skipped(self) -> None:
        x = torch.randn(4, requires_grad=True)
        with self.no_save():
            out = torch.compile(lambda t: t.sin().sum())(x)
            # The backward compiles lazily: the save is still to come.
            self.assertEqual(len(self.keys), 1)
            self.assertTrue(single_flight.holding(self.keys[0]))
            out.backward()
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1})
        self.assert_free()

    def test_lazy_backward_save_releases(self) -> None:
        x = torch.randn(4, requires_grad=True)
        out = torch.compile(lambda t: t.cos().sum())(x)
        self.assertTrue(single_flight.holding(self.keys[0]))
        out.backward()
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assertEqual(counters["torch_aotcache"]["single_flight_released_unsaved"], 0)
        self.assert_free()

    def test_save_fails(self) -> None:
        def failing_make_entry(*args, **kwargs):
            raise RuntimeError("no entry")

        with unittest.mock.patch.object(upstream_cache.AOTAutogradCache, "make_entry", staticmethod(failing_make_entry)):
            with self.assertRaises(Exception):
                torch.compile(torch.exp)(torch.randn(4))
        self.assert_free()


if __name__ == "__main__":
    unittest.main()
