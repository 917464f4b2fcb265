"""
The object-store tier (Note [Object-store layout and leases] in
tiers/object_store.py) against a real S3 API server (moto's server mode,
started on a free loopback port) and against a local folder (``file://``):
hits across machines with empty local stores, signing, read-only mode,
leases, faults, and single flight across processes through the store alone.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import unittest
import unittest.mock

import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import fresh_cache

from torch_aotcache import config as tac_config
from torch_aotcache.tiers import remote, single_flight
from torch_aotcache.tiers.object_store import ObjectStoreBackend

from common import aot_counts, CacheTestCase, child_env, clear_in_memory_state, slow, spawn_child
from s3_server import closed_endpoint, S3Server, s3_env, s3_missing, StatusServer
# The same cold worker as the Redis fleet test.
from test_single_flight import WORKER

# Every test here starts a server or other processes (CONTRIBUTING.md, "Tests").
pytestmark = slow

SKIP_REASON = s3_missing()


def tac_counts() -> dict[str, int]:
    return {k: v for k, v in counters["torch_aotcache"].items() if k.startswith("remote")}


def compile_step() -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    x = torch.randn(4, 6)
    out = torch.compile(lambda m, t: m(t).square().mean())(model, x)
    out.backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def eager_step() -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    x = torch.randn(4, 6)
    out = model(x).square().mean()
    out.backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


class ObjectStoreCase(CacheTestCase):
    """A fresh bucket on one S3 server per class; the tier pointed at it."""

    server: S3Server
    buckets = 0

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = S3Server().start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.close()
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        type(self).buckets += 1
        self.bucket = self.server.create_bucket(f"fleet{type(self).buckets}")
        self.url = f"s3://{self.bucket}/team"
        self.enterContext(unittest.mock.patch.dict(os.environ, s3_env(self.server.endpoint)))
        remote.reset()
        self.addCleanup(remote.reset)
        self.enterContext(
            tac_config.patch(remote_url=self.url, signing_key="fleet-secret", remote_sync_writes=True)
        )

    def put_raw(self, name: str, data: bytes) -> None:
        """Write an object as another client of the bucket would."""
        import obstore
        from obstore.store import from_url

        obstore.put(from_url(f"s3://{self.bucket}", client_options={"allow_http": True}), name, data)

    def assert_matches_eager(self, got: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
        ref = eager_step()
        torch.testing.assert_close(got[0], ref[0])
        for a, b in zip(got[1], ref[1]):
            torch.testing.assert_close(a, b)


@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class TestObjectStoreTier(ObjectStoreCase):
    def test_second_machine_hits_from_the_bucket_with_an_empty_cache_dir(self) -> None:
        with fresh_cache():
            compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertEqual(tac_counts().get("remote_put"), 1)
        objects = self.server.objects(self.bucket)
        self.assertEqual(len(objects), 1, objects)
        from torch_aotcache import schemas

        self.assertTrue(objects[0].startswith(f"team/torch_aotcache/v{schemas.FORMAT_VERSION}/-/entries/tac"))
        clear_in_memory_state()
        with fresh_cache():  # another machine: nothing on its disk
            got = compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
            self.assertEqual(tac_counts().get("remote_hit"), 1)
            self.assertGreater(counters["torch_aotcache"]["kernels_loaded"], 0)
        self.assert_matches_eager(got)

    def test_cache_key_tag_keeps_writers_apart(self) -> None:
        with fresh_cache():
            compile_step()
        clear_in_memory_state()
        with fresh_cache(), unittest.mock.patch.object(torch.compiler.config, "cache_key_tag", "other-team"):
            got = compile_step()
            self.assertEqual(tac_counts().get("remote_miss"), 1)
            self.assertNotIn("remote_hit", tac_counts())
        self.assert_matches_eager(got)

    def test_unsigned_entries_need_explicit_trust(self) -> None:
        with tac_config.patch(signing_key=None):
            self.assertIsNone(remote.tier(True))
            with tac_config.patch(trust_unsigned_remote=True):
                self.assertIsNotNone(remote.tier(True))

    def test_entry_signed_with_another_key_is_refused(self) -> None:
        with fresh_cache():
            compile_step()
        clear_in_memory_state()
        with fresh_cache(), tac_config.patch(signing_key="another-secret"):
            got = compile_step()
            self.assertEqual(counters["torch_aotcache"]["remote_rejected"], 1)
            self.assertNotIn("autograd_cache_hit", aot_counts())
        self.assert_matches_eager(got)

    def test_read_only_reads_and_writes_nothing(self) -> None:
        with fresh_cache(), tac_config.patch(remote_read_only=True):
            got = compile_step()
            self.assertEqual(tac_counts().get("remote_read_only_skipped"), 1)
            self.assertEqual(self.server.objects(self.bucket), [])
            self.assertIsNone(remote.tier(True).take_lease("tac" + "0" * 40, "t", 5.0))
        self.assert_matches_eager(got)
        # A writer fills the bucket; a read-only consumer then hits.
        clear_in_memory_state()
        with fresh_cache():
            compile_step()
        clear_in_memory_state()
        with fresh_cache(), tac_config.patch(remote_read_only=True):
            got = compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        self.assert_matches_eager(got)

    def test_corrupt_and_truncated_objects_are_misses(self) -> None:
        with fresh_cache():
            compile_step()
        [name] = self.server.objects(self.bucket)
        t = remote.tier(True)
        good = t.encode(t.get(name.split("/")[-2])[0][1])
        for bad in (b"not an entry", good[: len(good) // 2], good[:-8] + b"\0" * 8):
            self.put_raw(name, bad)
            clear_in_memory_state()
            with fresh_cache():
                got = compile_step()
                self.assertNotIn("autograd_cache_hit", aot_counts())
                c = counters["torch_aotcache"]
                self.assertEqual(c["remote_garbage"] + c["remote_rejected"], 1, dict(c))
            self.assert_matches_eager(got)


@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class TestRemoteCommands(ObjectStoreCase):
    """``python -m torch_aotcache remote ...`` on the bucket (in this process)."""

    def cli(self, *argv: str) -> tuple[int, str, str]:
        import contextlib
        import io

        from torch_aotcache.cli import commands

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = commands.main(["remote", *argv])
        return rc, out.getvalue(), err.getvalue()

    def test_push_pull_ls_stats_prune(self) -> None:
        from torch_aotcache.store.local import LocalStore

        with tac_config.patch(remote_url=None):  # compile with the local store only
            compile_step()
        [local_path] = list(LocalStore().iter_paths())
        self.assertEqual(self.server.objects(self.bucket), [])
        rc, out, err = self.cli("push", "--url", self.url)
        self.assertEqual((rc, err), (0, ""), out)
        self.assertIn("pushed 1 entries", out)
        rc, out, _ = self.cli("ls")
        self.assertEqual(rc, 0)
        self.assertEqual(len(out.strip().splitlines()), 1, out)
        key = out.split()[0]
        self.assertEqual(key, os.path.basename(os.path.dirname(local_path)))
        rc, out, _ = self.cli("stats")
        self.assertIn("entries:      1 (1 keys)", out)
        # Another machine pulls it into its empty store and hits locally.
        clear_in_memory_state()
        with fresh_cache(), tac_config.patch(remote_url=None):
            rc, out, err = self.cli("pull", "--url", self.url)
            self.assertEqual((rc, err), (0, ""), out)
            self.assertEqual(len(list(LocalStore().iter_paths())), 1)
            got = compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        self.assert_matches_eager(got)
        # Another signing key: the pull refuses the entry.
        with fresh_cache(), tac_config.patch(signing_key="another-secret"):
            rc, out, err = self.cli("pull")
            self.assertEqual(rc, 1)
            self.assertIn("refused", err)
            self.assertEqual(list(LocalStore().iter_paths()), [])
        # Prune: nothing is older than a day; a 1-byte bound removes it.
        rc, out, _ = self.cli("prune", "--older-than", "1")
        self.assertIn("removed 0 entries", out)
        rc, out, _ = self.cli("prune", "--max-size", "1", "--dry-run")
        self.assertIn("would remove 1 entries", out)
        self.assertEqual(len(self.server.objects(self.bucket)), 1)
        rc, out, _ = self.cli("prune", "--max-size", "1")
        self.assertIn("removed 1 entries", out)
        self.assertEqual(self.server.objects(self.bucket), [])

    def test_unusable_store_is_a_clear_error(self) -> None:
        rc, _, err = self.cli("ls", "--url", "nosuch://x")
        self.assertEqual(rc, 2)
        self.assertIn("no remote cache backend for 'nosuch'", err)


class DictBackend:
    """A user's backend: a dict in this process (the README's example)."""

    def __init__(self, url: str) -> None:
        from torch_aotcache.tiers.backend import RemoteBackend

        class Backend(RemoteBackend):
            objects: dict[tuple[str, str], bytes] = {}
            leases: dict[str, str] = {}

            def read(self, key: str) -> dict[str, bytes]:
                return {e: v for (k, e), v in self.objects.items() if k == key}

            def write(self, key: str, entry_id: str, value: bytes, ttl_s: int) -> None:
                self.objects[key, entry_id] = value

            def create_lease(self, key: str, token: str, ttl_s: float) -> bool:
                return self.leases.setdefault(key, token) == token

            def refresh_lease(self, key: str, token: str, ttl_s: float) -> bool:
                return self.leases.get(key) == token

            def release_lease(self, key: str, token: str) -> None:
                if self.leases.get(key) == token:
                    del self.leases[key]

        self.backend = Backend()
        self.backend.url = url


@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class TestUserBackend(CacheTestCase):
    def test_entry_point_names_a_backend(self) -> None:
        from importlib import metadata

        point = metadata.EntryPoint("dictep", "test_object_store:DictBackend", remote.ENTRY_POINT_GROUP)
        with unittest.mock.patch.object(metadata, "entry_points", lambda group: [point] if group == point.group else []):
            made = remote.create_backend("dictep://x")
        self.assertIsInstance(made, DictBackend)
        with self.assertRaisesRegex(ValueError, "no remote cache backend for 'nosuch'"):
            remote.create_backend("nosuch://x")

    def test_registered_scheme_serves_the_tier(self) -> None:
        made: list[object] = []

        def factory(url: str) -> object:
            made.append(DictBackend(url).backend)
            return made[-1]

        remote.register_backend("dict", factory)
        self.addCleanup(remote.unregister_backend, "dict")
        remote.reset()
        self.addCleanup(remote.reset)
        self.enterContext(tac_config.patch(remote_url="dict://team", signing_key="k", remote_sync_writes=True))
        with fresh_cache():
            compile_step()
        self.assertEqual(len(made[0].objects), 1)
        self.assertEqual(made[0].leases, {})  # released after the save
        clear_in_memory_state()
        with fresh_cache():
            got = compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        torch.testing.assert_close(got[0], eager_step()[0])


class TestClientImport(unittest.TestCase):
    def test_tier_off_imports_no_client(self) -> None:
        from common import run_python

        with tempfile.TemporaryDirectory() as d:
            proc = run_python(
                """
                import sys, torch
                import torch_aotcache
                out = torch.compile(torch.nn.Linear(3, 2))(torch.randn(2, 3))
                # (Inductor itself imports redis where it is installed.)
                print(sorted(m for m in ("obstore", "zstandard", "moto", "boto3") if m in sys.modules))
                """,
                {"TORCHINDUCTOR_CACHE_DIR": d},
            )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(proc.stdout.strip().splitlines()[-1], "[]")


@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class TestFileUrl(CacheTestCase):
    def test_shared_folder_hit(self) -> None:
        folder = tempfile.mkdtemp(prefix="tac-shared-")
        remote.reset()
        self.addCleanup(remote.reset)
        self.enterContext(tac_config.patch(remote_url="file://" + folder, signing_key="k", remote_sync_writes=True))
        with fresh_cache():
            compile_step()
        files = [f for _, _, fs in os.walk(folder) for f in fs]
        self.assertEqual(len(files), 1)
        clear_in_memory_state()
        with fresh_cache():
            got = compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        ref = eager_step()
        torch.testing.assert_close(got[0], ref[0])


@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class TestLeases(ObjectStoreCase):
    def backends(self) -> list[ObjectStoreBackend]:
        return [ObjectStoreBackend(self.url), ObjectStoreBackend("file://" + tempfile.mkdtemp(prefix="tac-lease-"))]

    def test_one_holder_and_release_by_token(self) -> None:
        for b in self.backends():
            key = "tac" + "1" * 40
            self.assertTrue(b.create_lease(key, "a", 30))
            self.assertFalse(b.create_lease(key, "b", 30))
            b.release_lease(key, "b")  # not the holder: nothing happens
            self.assertFalse(b.create_lease(key, "b", 30))
            self.assertTrue(b.refresh_lease(key, "a", 30))
            self.assertFalse(b.refresh_lease(key, "b", 30))
            b.release_lease(key, "a")
            self.assertTrue(b.create_lease(key, "b", 30))

    def test_expired_lease_is_taken_over(self) -> None:
        for b in self.backends():
            key = "tac" + "2" * 40
            self.assertTrue(b.create_lease(key, "dead-machine", 0.2))
            self.assertFalse(b.create_lease(key, "waiter", 30))
            time.sleep(0.4)
            self.assertTrue(b.create_lease(key, "waiter", 30))
            self.assertFalse(b.refresh_lease(key, "dead-machine", 30))

    def test_one_of_many_waiters_takes_an_expired_lease(self) -> None:
        key = "tac" + "3" * 40
        b = ObjectStoreBackend(self.url)
        self.assertTrue(b.create_lease(key, "dead-machine", 0.1))
        time.sleep(0.3)
        won: list[str] = []
        start = threading.Barrier(6)

        def wait(i: int) -> None:
            mine = ObjectStoreBackend(self.url)
            start.wait()
            if mine.create_lease(key, f"waiter{i}", 30):
                won.append(f"waiter{i}")

        threads = [threading.Thread(target=wait, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(won), 1, won)

    def test_holder_refreshes_and_waiter_takes_over_a_dead_one(self) -> None:
        key = "tac" + "4" * 40
        tier = remote.tier(True)
        with tac_config.patch(single_flight_remote_ttl_s=0.3):
            self.assertIsNone(single_flight.coordinate(key, lambda: None, tier))
            time.sleep(0.8)  # well past the expiry: the heartbeat kept it
            self.assertFalse(ObjectStoreBackend(self.url).create_lease(key, "other", 30))
            single_flight.release(key)
        self.assertTrue(ObjectStoreBackend(self.url).create_lease(key, "other", 0.5))
        # "other" dies without releasing: a waiter takes over after the expiry.
        start = time.monotonic()
        self.assertIsNone(single_flight.coordinate(key, lambda: None, tier))
        self.assertGreater(time.monotonic() - start, 0.2)
        self.assertTrue(single_flight.holding(key))
        single_flight.release_all()


@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class TestFaults(CacheTestCase):
    def use(self, endpoint: str, **settings: object) -> None:
        remote.reset()
        self.addCleanup(remote.reset)
        self.enterContext(unittest.mock.patch.dict(os.environ, s3_env(endpoint)))
        self.enterContext(tac_config.patch(remote_url="s3://fleet/team", signing_key="k",
                                           remote_sync_writes=True, **settings))

    def test_server_down_is_a_miss_and_opens_the_breaker(self) -> None:
        self.use(closed_endpoint())
        t = remote.tier(True)
        for _ in range(3):
            self.assertEqual(t.get("tac" + "0" * 40), [])
        self.assertEqual(counters["torch_aotcache"]["remote_error"], 3)
        self.assertEqual(t.get("tac" + "0" * 40), [])
        self.assertEqual(counters["torch_aotcache"]["remote_skipped"], 1)
        with fresh_cache():
            got = compile_step()
        torch.testing.assert_close(got[0], eager_step()[0])

    def test_error_statuses_are_misses(self) -> None:
        for status in (403, 500, 503):
            server = StatusServer(status)
            try:
                clear_in_memory_state()
                self.use(server.endpoint)
                with fresh_cache():
                    got = compile_step()
                self.assertNotIn("autograd_cache_hit", aot_counts())
                c = counters["torch_aotcache"]
                self.assertGreaterEqual(c["remote_error"] + c["remote_timeout"], 1, (status, dict(c)))
                self.assertGreater(server.requests, 0)
                torch.testing.assert_close(got[0], eager_step()[0])
            finally:
                server.close()

    def test_write_cut_mid_body_loses_nothing_locally(self) -> None:
        server = StatusServer(200, cut=True)
        try:
            self.use(server.endpoint)
            with fresh_cache():
                got = compile_step()
                from torch_aotcache.store.local import LocalStore

                self.assertEqual(len(list(LocalStore().iter_paths())), 1)  # saved locally all the same
                c = counters["torch_aotcache"]
                self.assertGreaterEqual(c["remote_error"] + c["remote_timeout"], 1, dict(c))
                self.assertNotIn("remote_put", c)
                self.assertNotIn("remote_skipped", c)  # the write was sent, and cut
            self.assertGreaterEqual(server.requests, 3)  # the read, the lease, the write
            torch.testing.assert_close(got[0], eager_step()[0])
        finally:
            server.close()

    def test_slow_server_is_a_bounded_miss(self) -> None:
        server = StatusServer(200, delay_s=5.0)
        try:
            self.use(server.endpoint, remote_object_read_timeout_s=0.3)
            t = remote.tier(True)
            start = time.monotonic()
            self.assertEqual(t.get("tac" + "0" * 40), [])
            self.assertLess(time.monotonic() - start, 3.0)
            self.assertEqual(counters["torch_aotcache"]["remote_timeout"], 1, dict(counters["torch_aotcache"]))
        finally:
            server.close()


HOLDER = """
import sys, time
import torch_aotcache
from torch_aotcache import config as tac_config
from torch_aotcache.tiers import remote, single_flight
tac_config.single_flight_remote_ttl_s = 1.0
assert single_flight.coordinate(sys.argv[1], lambda: None, remote.tier(True)) is None
print("holding", flush=True)
time.sleep(600)
"""


@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class TestKilledHolder(ObjectStoreCase):
    def test_waiter_takes_over_within_the_expiry(self) -> None:
        key = "tac" + "9" * 40
        env = child_env({**s3_env(self.server.endpoint), "TORCH_AOTCACHE_REMOTE_URL": self.url,
                         "TORCH_AOTCACHE_SIGNING_KEY": "fleet-secret",
                         "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="tac-holder-")})
        holder = spawn_child(["-c", HOLDER, key], env)
        try:
            self.assertEqual(holder.stdout.readline().strip(), "holding", holder.stderr.read()[-3000:]
                             if holder.poll() is not None else "")
            time.sleep(1.5)  # the heartbeat keeps it past one expiry
            self.assertFalse(ObjectStoreBackend(self.url).create_lease(key, "probe", 30))
            holder.kill()  # SIGKILL: no release, no more refreshes
            holder.wait()
            start = time.monotonic()
            with tac_config.patch(single_flight_wait_s=30):
                self.assertIsNone(single_flight.coordinate(key, lambda: None, remote.tier(True)))
            waited = time.monotonic() - start
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
            single_flight.release_all()
        # Within the lease's expiry (1 s) and a few polls; not the 30 s bound.
        self.assertLess(waited, 5.0)
        self.assertEqual(counters["torch_aotcache"]["single_flight_timeout"], 0)




@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class TestFleetThroughTheBucket(unittest.TestCase):
    def test_six_machines_compile_once(self) -> None:
        server = S3Server().start()
        try:
            server.create_bucket("fleet")
            with tempfile.TemporaryDirectory() as d:
                go = time.time() + 15
                env = {
                    **s3_env(server.endpoint),
                    "TORCH_AOTCACHE_REMOTE_URL": "s3://fleet/jobs",
                    "TORCH_AOTCACHE_SIGNING_KEY": "fleet",
                    "TORCH_AOTCACHE_REMOTE_SYNC": "1",
                }
                procs = [
                    spawn_child(["-c", WORKER, str(go)],
                                child_env({**env, "TORCHINDUCTOR_CACHE_DIR": os.path.join(d, f"machine{i}")}))
                    for i in range(6)
                ]
                results = []
                for p in procs:
                    out, err = p.communicate(timeout=600)
                    self.assertEqual(p.returncode, 0, err[-3000:])
                    results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            server.close()
        self.assertEqual(sum(r["aot"].get("autograd_cache_saved", 0) for r in results), 1,
                         [r["aot"] for r in results])
        self.assertEqual(sum(r["aot"].get("autograd_cache_hit", 0) for r in results), 5)
        self.assertEqual(sum(r["tac"].get("remote_hit", 0) for r in results), 5)
        for r in results[1:]:
            self.assertEqual(r["out"], results[0]["out"])
            self.assertEqual(r["grad"], results[0]["grad"])


if __name__ == "__main__":
    unittest.main()
