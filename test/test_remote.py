"""
The Redis tier against a real redis-server that each test class starts on a
free loopback port (and stops, kills and breaks).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import unittest
import unittest.mock

import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import fresh_cache

from torch_aotcache import config as tac_config
from torch_aotcache.tiers import remote
from torch_aotcache import schemas
from torch_aotcache.entry import framing
from torch_aotcache.store.local import LocalStore

from common import aot_counts, CacheTestCase, clear_in_memory_state, run_python, slow

# Every test here starts other processes or compiles many programs (CONTRIBUTING.md, "Tests").
pytestmark = slow
from redis_server import RedisServer, redis_missing, unused_url


SKIP_REASON = redis_missing()
HAVE_REDIS = SKIP_REASON is None


def tac_counts() -> dict[str, int]:
    return {k: v for k, v in counters["torch_aotcache"].items() if k.startswith("remote")}


def model_and_input():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    return model, torch.randn(4, 6)


def train_step(model, x):
    return model(x).square().mean()


@unittest.skipUnless(HAVE_REDIS, SKIP_REASON or "")
class RemoteTestCase(CacheTestCase):
    server_args: tuple[str, ...] = ()

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer(*cls.server_args).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.close()

    def setUp(self) -> None:
        super().setUp()
        if self.server.proc is None:
            self.server.start()
        self.server.client().flushall()
        remote.reset()
        self.addCleanup(remote.reset)
        self.enterContext(
            tac_config.patch(redis_url=self.server.url, signing_key="fleet-secret", remote_sync_writes=True)
        )

    def compile_step(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model, x = model_and_input()
        out = torch.compile(train_step)(model, x)
        out.backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    def eager_step(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model, x = model_and_input()
        out = train_step(model, x)
        out.backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    def assert_matches_eager(self, got) -> None:
        ref = self.eager_step()
        torch.testing.assert_close(got[0], ref[0])
        for a, b in zip(got[1], ref[1]):
            torch.testing.assert_close(a, b)


class TestRemoteTier(RemoteTestCase):
    def test_second_machine_hits_from_remote_with_empty_cache_dir(self) -> None:
        with fresh_cache():
            self.compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertEqual(tac_counts().get("remote_put"), 1)
        keys = self.server.client().keys("torch_aotcache:*")
        self.assertEqual(len(keys), 1)
        self.assertTrue(keys[0].startswith(b"torch_aotcache:v%d:-:tac" % schemas.FORMAT_VERSION))
        clear_in_memory_state()
        with fresh_cache():  # another machine: nothing on its disk, no Inductor artifacts
            from torch._inductor.runtime.runtime_utils import cache_dir

            got = self.compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
            self.assertEqual(tac_counts().get("remote_hit"), 1)
            self.assertFalse(os.path.exists(os.path.join(cache_dir(), "fxgraph")))
            # Nothing compiled: the C++ kernels came inside the entry.
            self.assertGreater(counters["torch_aotcache"]["kernels_loaded"], 0)
            self.assertNotIn("kernels_not_carried", counters["torch_aotcache"])
            built = [f for _, _, fs in os.walk(cache_dir()) for f in fs if f.endswith((".so", ".cpp"))]
            self.assertEqual(built, [])
            self.assertEqual(len(list(LocalStore().iter_paths())), 1)  # written through
            self.assert_matches_eager(got)

    def test_remote_entry_is_compressed_with_same_header(self) -> None:
        with fresh_cache():
            self.compile_step()
            [path] = list(LocalStore().iter_paths())
            local_bytes = open(path, "rb").read()
        [name] = self.server.client().keys("torch_aotcache:*")
        [value] = self.server.client().hgetall(name).values()
        self.assertTrue(value.startswith(remote.COMPRESSED_MAGIC))
        self.assertLess(len(value), len(local_bytes))
        t = remote.tier(True)
        self.assertEqual(t.decode(value), local_bytes)
        header = framing.verify_entry(local_bytes, key=None, torch_version=torch.__version__).header
        self.assertTrue(header.signature)
        self.assertEqual(header.mode, "bundled")

    def test_unsigned_remote_is_off_unless_trusted(self) -> None:
        with tac_config.patch(signing_key=None):
            remote.reset()
            with self.assertLogs("torch_aotcache.tiers.remote", level="WARNING") as logs:
                self.assertIsNone(remote.tier(True))
                self.assertIsNone(remote.tier(True))
            self.assertEqual(len(logs.output), 1)
            self.assertIn("TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE", logs.output[0])
            with tac_config.patch(trust_unsigned_remote=True):
                with self.assertLogs("torch_aotcache.tiers.remote", level="WARNING") as logs:
                    self.assertIsNotNone(remote.tier(True))
                self.assertIn("UNSIGNED", logs.output[0])

    def test_entry_signed_with_another_key_is_refused(self) -> None:
        with fresh_cache():
            with tac_config.patch(signing_key="attacker-key"):
                self.compile_step()
        clear_in_memory_state()
        with fresh_cache():
            got = self.compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertEqual(counters["torch_aotcache"]["signature_rejected"], 1)
            self.assert_matches_eager(got)

    def test_garbage_values_are_a_miss(self) -> None:
        with fresh_cache():
            self.compile_step()
        client = self.server.client()
        [name] = client.keys("torch_aotcache:*")
        for field in client.hkeys(name):
            client.hset(name, field, b"TACZ" + os.urandom(64))
        client.hset(name, "extra", b"not even ours")
        clear_in_memory_state()
        with fresh_cache():
            got = self.compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertGreaterEqual(tac_counts().get("remote_garbage", 0), 2)
            self.assert_matches_eager(got)

    def test_truncated_values_are_a_miss(self) -> None:
        # A value cut short (a write interrupted, an eviction mid-transfer):
        # our magic is intact, the compressed frame is not.
        with fresh_cache():
            self.compile_step()
        client = self.server.client()
        [name] = client.keys("torch_aotcache:*")
        for field, value in client.hgetall(name).items():
            client.hset(name, field, value[: len(value) // 2])
        clear_in_memory_state()
        with fresh_cache():
            got = self.compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertGreaterEqual(tac_counts().get("remote_garbage", 0) + tac_counts().get("remote_rejected", 0), 1)
            self.assertNotIn("remote_hit", tac_counts())
            self.assert_matches_eager(got)

    def test_upstream_settings_reach_the_tier(self) -> None:
        with tac_config.patch(redis_url=None):
            self.assertIsNone(remote.configured_url(False))
            with unittest.mock.patch.dict(os.environ, {"TORCHINDUCTOR_REDIS_URL": self.server.url}):
                self.assertEqual(remote.configured_url(False), self.server.url)
            with unittest.mock.patch.dict(
                os.environ, {"TORCHINDUCTOR_REDIS_HOST": "127.0.0.1", "TORCHINDUCTOR_REDIS_PORT": str(self.server.port)}
            ):
                self.assertIsNone(remote.configured_url(False))
                self.assertEqual(remote.configured_url(True), f"redis://127.0.0.1:{self.server.port}")
                with torch._functorch.config.patch(enable_remote_autograd_cache=True):
                    self.assertIsNotNone(remote.configured_url(False))
        with torch._functorch.config.patch(enable_remote_autograd_cache=False):
            self.assertIsNone(remote.configured_url(True))

    def test_ttl(self) -> None:
        with tac_config.patch(remote_ttl_s="120"), fresh_cache():
            self.compile_step()
        [name] = self.server.client().keys("torch_aotcache:*")
        ttl = self.server.client().ttl(name)
        self.assertTrue(0 < ttl <= 120, ttl)

    def test_background_writes_flush(self) -> None:
        with tac_config.patch(remote_sync_writes=False), fresh_cache():
            self.compile_step()
            self.assertTrue(remote.flush_all(5.0))
        self.assertEqual(len(self.server.client().keys("torch_aotcache:*")), 1)


class TestRemoteFaults(RemoteTestCase):
    def test_redis_down_at_start(self) -> None:
        with tac_config.patch(redis_url=unused_url()), fresh_cache():
            remote.reset()
            start = time.monotonic()
            got = self.compile_step()
            self.assert_matches_eager(got)
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertGreaterEqual(tac_counts().get("remote_error", 0), 1)
            clear_in_memory_state()
            self.compile_step()  # local hit; remote not needed
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        del start

    def test_redis_killed_mid_run(self) -> None:
        with fresh_cache():
            self.compile_step()
            self.server.stop()
            clear_in_memory_state()

            def other(x):
                return torch.tanh(x) * 3

            x = torch.randn(5)
            torch.testing.assert_close(torch.compile(other)(x), other(x))
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertGreaterEqual(tac_counts().get("remote_error", 0) + tac_counts().get("remote_timeout", 0), 1)
        self.server.start()

    def test_slow_redis_times_out(self) -> None:
        import threading

        with fresh_cache():
            blocker = threading.Thread(
                target=lambda: self.server.client().execute_command("DEBUG", "SLEEP", "1.5")
            )
            blocker.start()
            time.sleep(0.2)
            try:
                t = remote.tier(True)
                start = time.monotonic()
                self.assertEqual(t.get("tac" + "0" * 40), [])
                self.assertLess(time.monotonic() - start, 0.5)
                self.assertEqual(tac_counts().get("remote_timeout"), 1)
            finally:
                blocker.join()

    def test_connection_dropped_mid_read(self) -> None:
        # A server that starts answering and hangs up half-way through.
        import socket
        import threading

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        stop = threading.Event()

        def serve() -> None:
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                with conn:
                    conn.settimeout(1.0)
                    try:
                        conn.recv(65536)
                        # Half of a two-field hash reply, then the connection goes.
                        conn.sendall(b"*4\r\n$3\r\nabc\r\n$100\r\nTACZ")
                    except OSError:
                        pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with tac_config.patch(redis_url=f"redis://127.0.0.1:{port}/0"), fresh_cache():
                remote.reset()
                self.assertEqual(remote.tier(True).get("tac" + "1" * 40), [])
                self.assertGreaterEqual(tac_counts().get("remote_error", 0) + tac_counts().get("remote_timeout", 0), 1)
                got = self.compile_step()
                self.assert_matches_eager(got)
                self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        finally:
            stop.set()
            thread.join()
            listener.close()
            remote.reset()

    def test_circuit_breaker_stops_asking_then_retries(self) -> None:
        with tac_config.patch(redis_url=unused_url(), remote_failure_threshold=2, remote_cooldown_s=0.3):
            remote.reset()
            t = remote.tier(True)
            for _ in range(5):
                self.assertEqual(t.get("tacx"), [])
            self.assertEqual(tac_counts().get("remote_error"), 2)
            self.assertEqual(tac_counts().get("remote_skipped"), 3)
            time.sleep(0.35)
            self.assertEqual(t.get("tacx"), [])  # half-open: one try
            self.assertEqual(tac_counts().get("remote_error"), 3)
            self.assertEqual(t.get("tacx"), [])
            self.assertEqual(tac_counts().get("remote_skipped"), 4)


class TestRemoteFull(RemoteTestCase):
    server_args = ("--maxmemory", "1mb", "--maxmemory-policy", "noeviction")

    def test_full_redis_does_not_fail_compiles(self) -> None:
        client = self.server.client()
        filler = b"x" * 100_000
        try:
            for i in range(40):
                client.set(f"fill{i}", filler)
        except Exception:
            pass
        with fresh_cache():
            got = self.compile_step()
            self.assert_matches_eager(got)
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertGreaterEqual(tac_counts().get("remote_error", 0), 1)
            self.assertNotIn("remote_put", tac_counts())


@unittest.skipUnless(HAVE_REDIS, SKIP_REASON or "")
class TestTwoProcesses(unittest.TestCase):
    WORKER = """
        import json, torch
        import torch_aotcache
        from torch._dynamo.utils import counters
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
        x = torch.randn(4, 6)
        out = torch.compile(m)(x)
        out.sum().backward()
        print(json.dumps({"aot": dict(counters["aot_autograd"]), "tac": dict(counters["torch_aotcache"]),
                          "out": out.tolist(), "grad": m[0].weight.grad.tolist()}))
    """

    def test_second_process_hits_from_remote(self) -> None:
        server = RedisServer().start()
        try:
            with tempfile.TemporaryDirectory() as d:
                key_file = os.path.join(d, "key")
                with open(key_file, "w") as f:
                    f.write("shared fleet secret\n")
                results = []
                for name in ("machine-a", "machine-b"):
                    env = {
                        "TORCHINDUCTOR_CACHE_DIR": os.path.join(d, name),
                        "TORCH_AOTCACHE_REDIS_URL": server.url,
                        "TORCH_AOTCACHE_SIGNING_KEY_FILE": key_file,
                    }
                    proc = run_python(self.WORKER, env=env)
                    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
                    results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            first, second = results
            self.assertEqual(first["aot"].get("autograd_cache_saved"), 1)
            # The first process wrote in the background; its exit flushed the write.
            self.assertEqual(second["aot"].get("autograd_cache_hit"), 1)
            self.assertEqual(second["tac"].get("remote_hit"), 1)
            self.assertEqual(first["out"], second["out"])
            self.assertEqual(first["grad"], second["grad"])
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
