"""
Cache behaviour, shaped like upstream's test/dynamo/test_aot_autograd_cache.py:
compile and see a miss and a save; forget the in-memory state but keep the
disk; compile again and see a hit with the same outputs and gradients.
"""

from __future__ import annotations

import logging
import os
import pickle
import unittest
import unittest.mock

import torch
import torch._functorch._aot_autograd.autograd_cache as upstream_cache
from torch._dynamo.utils import counters
from torch._functorch._aot_autograd.autograd_cache import (
    AOTAutogradCache,
    BypassAOTAutogradCache,
)
from torch._inductor.remote_cache import cache_stats
from torch._inductor.utils import fresh_cache
from torch.testing._internal.common_utils import instantiate_parametrized_tests, parametrize

import torch_aotcache
from torch_aotcache import autograd_cache as ours
from torch_aotcache import _compat, runtime_wrappers
from torch_aotcache.entry import framing
from torch_aotcache.store.layout import entries_root
from torch_aotcache.store.local import LocalStore

from common import aot_counts, cache_enabled, CacheTestCase, clear_in_memory_state, DEVICES, slow

# Every test here starts other processes or compiles many programs (CONTRIBUTING.md, "Tests").
pytestmark = slow


def mlp_step(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).pow(2).mean()


def make_mlp(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)
    ).to(device)


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


@instantiate_parametrized_tests
class TestAutogradCache(CacheTestCase):
    @parametrize("device", DEVICES)
    @parametrize("bundled", [False, True])
    @parametrize("self_contained", [False, True])
    def test_miss_save_then_hit_training(self, device: str, bundled: bool, self_contained: bool) -> None:
        from torch_aotcache import config as tac_config

        with cache_enabled(bundled=bundled), tac_config.patch(self_contained=self_contained):
            x = torch.randn(4, 8, device=device)
            eager = make_mlp(device)
            ref = mlp_step(eager, x)
            ref.backward()

            cold = make_mlp(device)
            out = torch.compile(mlp_step)(cold, x)
            out.backward()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            files = self.entry_files()
            self.assertEqual(len(files), 1)
            header, _ = framing.decode_header(open(files[0], "rb").read())
            self.assertEqual(header.mode, "bundled" if bundled or self_contained else "fxgraphcache")
            self.assertGreater(header.forward_cost_ns, 0)

            clear_in_memory_state()
            warm = make_mlp(device)
            out2 = torch.compile(mlp_step)(warm, x)
            out2.backward()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
            torch.testing.assert_close(out2, ref)
            torch.testing.assert_close(out2, out)
            for a, b in zip(grads(warm), grads(eager)):
                torch.testing.assert_close(a, b)

    @parametrize("device", DEVICES)
    def test_inference_graph(self, device: str) -> None:
        def f(x):
            return (x.sin() + 1).cos()

        x = torch.randn(6, device=device)
        torch.compile(f)(x)
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        clear_in_memory_state()
        torch.testing.assert_close(torch.compile(f)(x), f(x))
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_local_cache_stats(self) -> None:
        def snapshot() -> tuple[int, int, int]:
            st = cache_stats._stats["LocalAOTAutogradCache"]
            return st.hit, st.miss, st.put

        def f(x):
            return x * 3

        x = torch.randn(3)
        h0, m0, p0 = snapshot()
        torch.compile(f)(x)
        h1, m1, p1 = snapshot()
        self.assertEqual((h1 - h0, m1 - m0, p1 - p0), (0, 1, 1))
        clear_in_memory_state()
        torch.compile(f)(x)
        h2, m2, p2 = snapshot()
        self.assertEqual((h2 - h1, m2 - m1, p2 - p1), (1, 0, 0))

    def test_clear_keeps_nothing(self) -> None:
        torch.compile(lambda x: x + 1)(torch.randn(3))
        self.assertEqual(len(self.entry_files()), 1)
        AOTAutogradCache.clear()
        self.assertEqual(self.entry_files(), [])
        clear_in_memory_state()
        torch.compile(lambda x: x + 1)(torch.randn(3))
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})

    def test_fresh_cache_isolates_store(self) -> None:
        torch.compile(lambda x: x - 1)(torch.randn(3))
        outer_root = entries_root()
        with fresh_cache():
            self.assertNotEqual(entries_root(), outer_root)
            clear_in_memory_state()
            torch.compile(lambda x: x - 1)(torch.randn(3))
            self.assertEqual(aot_counts()["autograd_cache_miss"], 1)

    def test_entries_live_under_inductor_cache_dir(self) -> None:
        torch.compile(lambda x: x * x)(torch.randn(3))
        from torch._inductor.runtime.runtime_utils import cache_dir

        [path] = self.entry_files()
        self.assertTrue(path.startswith(os.path.join(cache_dir(), "torch_aotcache") + os.sep))
        # Upstream's own folder gets nothing from us.
        self.assertFalse(os.path.exists(os.path.join(cache_dir(), "aotautograd")))

    def test_dynamic_shapes_guard_hit_and_guard_miss(self) -> None:
        def f(x, y):
            return (x * 2 + y).sin().sum(0)

        def inputs(n: int):
            a, b = torch.randn(n, 3), torch.randn(n, 3)
            torch._dynamo.mark_dynamic(a, 0)
            torch._dynamo.mark_dynamic(b, 0)
            return a, b

        torch.compile(f)(*inputs(5))
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        [path] = self.entry_files()
        header, _ = framing.decode_header(open(path, "rb").read())
        self.assertIn("L['", header.guards_expr)

        clear_in_memory_state()
        a, b = inputs(7)
        torch.testing.assert_close(torch.compile(f)(a, b), f(a, b))
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

        # Outside the saved guard's range: same key, guard fails, compile again.
        clear_in_memory_state()
        a, b = inputs(5000)
        torch.testing.assert_close(torch.compile(f)(a, b), f(a, b), rtol=1e-4, atol=1e-3)
        counts = aot_counts()
        self.assertEqual(counts.get("autograd_cache_guard_miss"), 1)
        self.assertEqual(counts.get("autograd_cache_miss"), 1)
        self.assertEqual(counts.get("autograd_cache_saved"), 1)
        self.assertEqual(len(self.entry_files()), 2)

    def test_bypass_unknown_python_function(self) -> None:
        @torch._dynamo.allow_in_graph
        def opaque(x):
            return x * 5

        def f(x):
            return opaque(x) + 1

        with self.assertLogs("torch_aotcache.autograd_cache", level=logging.INFO) as logs:
            out = torch.compile(f)(torch.ones(3))
        torch.testing.assert_close(out, torch.full((3,), 6.0))
        self.assertEqual(aot_counts(), {"autograd_cache_bypass": 1})
        self.assertTrue(any("Bypassing autograd cache due to" in m and "opaque" in m for m in logs.output))
        self.assertEqual(self.entry_files(), [])

    def test_strict_mode_raises_on_bypass(self) -> None:
        @torch._dynamo.allow_in_graph
        def opaque(x):
            return x * 5

        with torch._functorch.config.patch(strict_autograd_cache=True):
            with self.assertRaisesRegex(Exception, "Unsupported call_function target"):
                torch.compile(lambda x: opaque(x) + 1)(torch.ones(3))

    def test_bypass_freezing_and_fx_graph_cache_off(self) -> None:
        with torch._inductor.config.patch(fx_graph_cache=False):
            torch.compile(lambda x: x.exp())(torch.ones(3))
        self.assertEqual(aot_counts(), {"autograd_cache_bypass": 1})
        with self.assertRaisesRegex(BypassAOTAutogradCache, "freezing"):
            with torch._inductor.config.patch(freezing=True):
                ours.check_cacheable(torch.fx.symbolic_trace(lambda x: x + 1))

    def test_custom_pass_without_uuid_bypasses(self) -> None:
        def my_pass(graph):
            return None

        with torch._inductor.config.patch(post_grad_custom_post_pass=my_pass):
            torch.compile(lambda x: x.cos())(torch.ones(3))
        self.assertEqual(aot_counts(), {"autograd_cache_bypass": 1})

    def test_knobs_disable_the_cache(self) -> None:
        with torch._functorch.config.patch(enable_autograd_cache=False):
            torch.compile(lambda x: x.tan())(torch.ones(3))
        self.assertEqual(aot_counts(), {})
        clear_in_memory_state()
        with torch.compiler.config.patch(force_disable_caches=True):
            torch.compile(lambda x: x.tan())(torch.ones(3))
        self.assertEqual(aot_counts(), {})
        self.assertEqual(self.entry_files(), [])

    def test_cache_key_tag_separates_entries(self) -> None:
        f = lambda x: x.abs() + 1  # noqa: E731
        torch.compile(f)(torch.ones(3))
        clear_in_memory_state()
        with torch.compiler.config.patch(cache_key_tag="other"):
            torch.compile(f)(torch.ones(3))
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})

    def test_corrupt_entry_is_a_miss_and_never_unpickled(self) -> None:
        f = lambda x: x.sigmoid() * 2  # noqa: E731
        x = torch.randn(4)
        torch.compile(f)(x)
        [path] = self.entry_files()
        data = bytearray(open(path, "rb").read())
        header, body = framing.decode_header(bytes(data))
        payload_end = len(data) - len(body) + header.payload_size  # carried kernels follow
        data[payload_end - 10] ^= 0xFF
        with open(path, "wb") as fh:
            fh.write(bytes(data))
        bad_payload = bytes(data[payload_end - header.payload_size : payload_end])
        clear_in_memory_state()
        unpickled = []
        real_loads = pickle.loads

        def spy(b, *a, **k):
            unpickled.append(bytes(b))
            return real_loads(b, *a, **k)

        with unittest.mock.patch.object(pickle, "loads", spy):
            torch.testing.assert_close(torch.compile(f)(x), f(x))
        self.assertNotIn(bad_payload, unpickled)
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assertGreaterEqual(counters["torch_aotcache"]["entry_rejected"], 1)
        # The recompile replaced the corrupt entry with a good one.
        clear_in_memory_state()
        torch.compile(f)(x)
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_stock_entries_are_not_ours(self) -> None:
        f = lambda x: x.neg() * 4  # noqa: E731
        x = torch.randn(4)
        torch_aotcache.uninstall()
        try:
            torch.compile(f)(x)  # stock torch writes its own entry
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        finally:
            self.assertTrue(torch_aotcache.install())
        clear_in_memory_state()
        torch.compile(f)(x)
        # We never read stock entries: a miss, and our own save.
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        # And stock torch does not read ours.
        torch_aotcache.uninstall()
        try:
            AOTAutogradCache.clear()  # upstream's: removes only its own folder
            clear_in_memory_state()
            torch.compile(f)(x)
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        finally:
            self.assertTrue(torch_aotcache.install())
        self.assertEqual(len(self.entry_files()), 1)

    def test_hit_logs_aot_graphs(self) -> None:
        if _compat.torch_release() == "2.11":
            self.skipTest("torch 2.11 logs a hit's AOT graphs to the structured trace only")
        f = lambda x: x.exp().sum()  # noqa: E731
        x = torch.randn(4, requires_grad=True)
        torch.compile(f)(x).backward()
        clear_in_memory_state()
        torch._logging.set_logs(aot_graphs=True)
        try:
            with self.assertLogs("torch._functorch._aot_autograd", level=logging.INFO) as logs:
                torch.compile(f)(x).backward()
        finally:
            torch._logging.set_logs()
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        self.assertTrue(any("Forward graph (from cache)" in m for m in logs.output))

    def test_public_key_api_matches_pipeline_and_leaves_graph(self) -> None:

        import torch._inductor.compile_fx as compile_fx

        if not hasattr(compile_fx, "autograd_cache_key"):
            self.skipTest("the public key API (torch._inductor.compile_fx.autograd_cache_key) exists from torch 2.13")
        seen = {}
        real = upstream_cache.autograd_cache_key

        def spy(mod, args, cfg, *extra):  # 2.14+ pass act_input_paths too
            key, lines = real(mod, args, cfg, *extra)
            seen["key"] = key
            return key, lines

        def f(x, y):
            return torch.nn.functional.gelu(x @ y).sum(1)

        x, y = torch.randn(4, 5), torch.randn(5, 3)
        gms = []

        def backend(gm, example_inputs):
            gms.append((gm, example_inputs))
            return torch._inductor.compile(gm, example_inputs)

        torch.compile(f, backend=backend)(x, y)
        gm, example_inputs = gms[0]
        code_before = gm.code
        from torch._inductor.compile_fx import autograd_cache_key as public_key

        key_public, _ = public_key(gm, example_inputs, ignore_shape_env=False)
        self.assertEqual(gm.code, code_before)
        with unittest.mock.patch.object(upstream_cache, "autograd_cache_key", spy):
            from torch._inductor.compile_fx import compile_fx

            clear_in_memory_state()
            compile_fx(gm, example_inputs)
        self.assertEqual(gm.code, code_before)
        self.assertTrue(key_public.startswith(ours.KEY_PREFIX))
        self.assertEqual(seen["key"], key_public)

    def test_mega_cache_round_trip(self) -> None:
        f = lambda x: (x * x).cos().sum()  # noqa: E731
        x = torch.randn(5, requires_grad=True)
        torch.compiler.reset() if hasattr(torch.compiler, "reset") else None
        from torch.compiler._cache import CacheArtifactManager

        CacheArtifactManager.clear()
        torch.compile(f)(x).backward()
        artifacts = torch.compiler.save_cache_artifacts()
        self.assertIsNotNone(artifacts)
        blob, info = artifacts
        self.assertGreaterEqual(len(info.aot_autograd_artifacts), 1)
        with fresh_cache():
            clear_in_memory_state()
            self.assertEqual(list(LocalStore().iter_paths()), [])
            torch.compiler.load_cache_artifacts(blob)
            self.assertEqual(len(list(LocalStore().iter_paths())), 1)
            out = torch.compile(f)(x)
            out.backward()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
            torch.testing.assert_close(out, f(x))

    def test_mega_cache_foreign_artifact_goes_to_upstream_folder(self) -> None:
        from torch._inductor.runtime.runtime_utils import cache_dir

        stock = pickle.dumps({"not": "ours"})
        AOTAutogradCache._write_to_local_cache("aupstreamkey", stock)
        self.assertEqual(self.entry_files(), [])
        self.assertTrue(os.path.isdir(os.path.join(cache_dir(), "aotautograd", "aupstreamkey")))

    def test_unpicklable_entry_does_not_fail_compile(self) -> None:
        f = lambda x: x.log1p()  # noqa: E731
        x = torch.rand(4)
        with unittest.mock.patch.object(ours, "pickle_entry", side_effect=pickle.PicklingError("nope")):
            torch.testing.assert_close(torch.compile(f)(x), f(x))
        self.assertEqual(self.entry_files(), [])
        self.assertEqual(counters["torch_aotcache"]["pickle_failed"], 1)

    def test_write_failure_does_not_fail_compile(self) -> None:
        f = lambda x: x.expm1()  # noqa: E731
        x = torch.rand(4)
        err = OSError(28, "No space left on device")
        with unittest.mock.patch.object(LocalStore, "put", side_effect=err):
            torch.testing.assert_close(torch.compile(f)(x), f(x))
        self.assertEqual(counters["torch_aotcache"]["store_write_failed"], 1)
        self.assertNotIn("autograd_cache_saved", aot_counts())

    def test_entry_that_fails_to_load_is_replaced(self) -> None:
        f = lambda x: x.erf() + 1  # noqa: E731
        x = torch.randn(4)
        torch.compile(f)(x)
        clear_in_memory_state()
        with unittest.mock.patch.object(runtime_wrappers, "wrap_cached_result", side_effect=RuntimeError("stale")):
            torch.testing.assert_close(torch.compile(f)(x), f(x))
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assertEqual(counters["torch_aotcache"]["load_failed"], 1)
        self.assertEqual(len(self.entry_files()), 1)

    @parametrize("self_contained", [False, True])
    def test_missing_inductor_artifacts(self, self_contained: bool) -> None:
        # An entry that refers to Inductor's FX graph cache is a miss once
        # that cache is gone; a self-contained entry does not need it.
        import shutil

        from torch._inductor.runtime.runtime_utils import cache_dir

        from torch_aotcache import config as tac_config

        f = lambda x: x.sqrt() * 3  # noqa: E731
        x = torch.rand(4)
        with tac_config.patch(self_contained=self_contained):
            torch.compile(f)(x)
            for name in os.listdir(cache_dir()):
                if name != "torch_aotcache":
                    shutil.rmtree(os.path.join(cache_dir(), name), ignore_errors=True)
            clear_in_memory_state()
            torch.testing.assert_close(torch.compile(f)(x), f(x))
            if self_contained:
                self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
                return
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            clear_in_memory_state()
            torch.compile(f)(x)
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_standalone_compile_round_trip(self) -> None:
        import tempfile

        def f(x):
            return x.sin() * 2

        x = torch.randn(4)
        captured = []

        def backend(gm, example_inputs):
            captured.append((gm, example_inputs))
            return gm.forward

        torch.compile(f, backend=backend)(x)
        gm, example_inputs = captured[0]
        art = torch._inductor.standalone_compile(gm, example_inputs, dynamic_shapes="from_example_inputs")
        self.assertEqual(len(self.entry_files()), 1)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "artifact.bin")
            art.save(path=path, format="binary")
            with fresh_cache():
                clear_in_memory_state()
                loaded = torch._inductor.CompiledArtifact.load(path=path, format="binary")
                self.assertEqual(len(list(LocalStore().iter_paths())), 1)
                torch.testing.assert_close(loaded(x)[0], f(x))

    def test_entry_records_the_components_of_its_key(self) -> None:
        # The key carries its components through the compile to the save
        # (ours.CacheKey): the header lists exactly those of its own key.
        keys = []
        real = upstream_cache.autograd_cache_key

        def spy(*args, **kwargs):
            key, lines = real(*args, **kwargs)
            keys.append(key)
            return key, lines

        with unittest.mock.patch.object(upstream_cache, "autograd_cache_key", spy):
            torch.compile(lambda x: x.cosh() - 1)(torch.randn(4))
        # On the CPU a miss is looked up twice, by the front door and by the
        # normal path (Note [Front door]): one key either way.
        self.assertIn(len(keys), (1, 2))
        self.assertEqual(len(set(keys)), 1)
        key = keys[-1]
        [path] = self.entry_files()
        header = framing.read_header(path)
        self.assertEqual(header.key, key)
        self.assertEqual(header.components, key.components)
        self.assertIn("graph", header.components)
        self.assertIn("inductor", header.components)

    def test_entries_get_ordinary_file_permissions(self) -> None:
        torch.compile(lambda x: x * 7)(torch.randn(3))
        [path] = self.entry_files()
        # The process's umask, read here rather than from the package, so the
        # check does not trust the value the store computed.
        umask = os.umask(0o022)
        os.umask(umask)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o666 & ~umask)

    def test_unreadable_signing_key_file_warns_once(self) -> None:
        from torch_aotcache import config as tac_config

        with tac_config.patch(signing_key_file="/nonexistent/key"):
            with self.assertLogs("torch_aotcache.autograd_cache", level=logging.WARNING) as logs:
                for fn in (lambda x: x + 11, lambda x: x - 11):
                    x = torch.randn(3)
                    torch.testing.assert_close(torch.compile(fn)(x), fn(x))
        warnings = [m for m in logs.output if "nonexistent/key" in m]
        self.assertEqual(len(warnings), 1, logs.output)
        self.assertEqual(self.entry_files(), [])


if __name__ == "__main__":
    from torch._dynamo.test_case import run_tests

    run_tests()
