"""
Behaviours upstream's own test file checks, in our words: each test here
follows one thing a user of stock torch observes, and fails if
torch_aotcache behaves otherwise.

* Dynamo never traces the cache's own frames (Note [Dynamo never traces the
  cache] in installer/patching.py);
* selective activation checkpointing: the policy's ``cache_hash`` is keyed,
  a policy without one bypasses;
* custom pre-grad passes that run before the lookup (``pre_grad_pass_timing``
  "early", or "default" for a pass without a uuid) miss once, then hit;
* a hit counts the compiled graphs it loads as FX graph cache hits, and
  ``FxGraphCache.clear()`` makes the next compile compile (Note [Entries that
  stand for Inductor's FX graph cache] in autograd_cache.py).
"""

from __future__ import annotations

import functools
import operator
import os
import unittest

import torch
from torch._dynamo.utils import counters
from torch._inductor.codecache import FxGraphCache
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch.utils.checkpoint import (
    checkpoint,
    CheckpointPolicy,
    create_selective_checkpoint_contexts,
)

import torch_aotcache
from torch_aotcache import _compat
from torch_aotcache.installer import patching
from torch_aotcache import autograd_cache as ours
from torch_aotcache import config as tac_config

from common import aot_counts, cache_enabled, CacheTestCase, clear_in_memory_state, slow
from fx_strategies import aot_config, fx_config


PACKAGE_DIR = os.path.dirname(os.path.abspath(torch_aotcache.__file__))


def traced_frames() -> list[str]:
    return list(torch._dynamo.eval_frame.dynamo_tls.traced_frame_infos)


class TestDynamoSkipsTheCache(CacheTestCase):
    def test_autograd_inside_a_compiled_function(self) -> None:
        # The compiled function runs a backward while it executes: the lazy
        # backward compile (and its save) happen under Dynamo's frame hook.
        @torch.compile
        def fn(x):
            (g,) = torch.autograd.grad(x.sin().sum(), x)
            return g

        x = torch.randn(6, 6, requires_grad=True)
        with torch._functorch.config.patch(strict_autograd_cache=True):
            torch._dynamo.eval_frame.clear_dynamo_tls()
            cold = fn(x)
            cold_frames = traced_frames()
            self.assertEqual(aot_counts().get("autograd_cache_saved"), 1)
            torch._dynamo.reset()
            torch._dynamo.eval_frame.clear_dynamo_tls()
            warm = fn(x)
            warm_frames = traced_frames()
        self.assertEqual(aot_counts().get("autograd_cache_hit"), 1)
        torch.testing.assert_close(warm, cold)
        torch.testing.assert_close(warm, x.cos())
        for frame in cold_frames + warm_frames:
            self.assertNotIn(PACKAGE_DIR, frame)
        self.assertEqual(cold_frames, warm_frames)

    def test_install_and_uninstall_set_the_skip_rule(self) -> None:
        self.assertTrue(patching.skipped_by_dynamo())
        torch_aotcache.uninstall()
        try:
            self.assertFalse(patching.skipped_by_dynamo())
        finally:
            torch_aotcache.install()
        self.assertTrue(patching.skipped_by_dynamo())
        # Installing again adds nothing twice.
        from torch._dynamo import trace_rules

        before = list(trace_rules.SKIP_DIRS)
        torch_aotcache.install()
        self.assertEqual(trace_rules.SKIP_DIRS, before)


def _save_matmuls(ctx, op, *args, **kwargs):
    if op == torch.ops.aten.mm.default:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _recompute_all(ctx, op, *args, **kwargs):
    return CheckpointPolicy.PREFER_RECOMPUTE


def _context_fn(policy, cache_hash=None):
    fn = functools.partial(create_selective_checkpoint_contexts, policy)
    if cache_hash is not None:
        fn.cache_hash = cache_hash
    return fn


def _region(x, y):
    return torch.sigmoid(torch.matmul(torch.matmul(x, y), y)) * y


@slow
class TestSelectiveCheckpointing(CacheTestCase):
    def run_step(self, context_fn) -> None:
        def fn(x, y):
            return checkpoint(_region, x, y, use_reentrant=False, context_fn=context_fn)

        torch.manual_seed(0)
        x = torch.randn(4, 4, requires_grad=True)
        y = torch.randn(4, 4, requires_grad=True)
        xe, ye = (t.detach().clone().requires_grad_(True) for t in (x, y))
        out = torch.compile(fn)(x, y)
        out.sum().backward()
        ref = _region(xe, ye)
        ref.sum().backward()
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(x.grad, xe.grad)
        torch.testing.assert_close(y.grad, ye.grad)
        torch._dynamo.reset()
        torch._inductor.codecache.PyCodeCache.cache_clear(purge=True)

    def test_policies_are_keyed_by_their_cache_hash(self) -> None:
        self.run_step(_context_fn(_save_matmuls, "save-matmuls-v1"))
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        # Another policy, another hash: a miss, never the other plan.
        self.run_step(_context_fn(_recompute_all, "recompute-all-v1"))
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 2, "autograd_cache_saved": 2})
        # The same policy under a changed hash: a miss.
        self.run_step(_context_fn(_save_matmuls, "save-matmuls-v2"))
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 3, "autograd_cache_saved": 3})
        # The first again: a hit.
        self.run_step(_context_fn(_save_matmuls, "save-matmuls-v1"))
        self.assertEqual(
            aot_counts(),
            {"autograd_cache_miss": 3, "autograd_cache_saved": 3, "autograd_cache_hit": 1},
        )

    def test_policy_without_cache_hash_bypasses(self) -> None:
        self.run_step(_context_fn(_save_matmuls))
        self.assertEqual(aot_counts(), {"autograd_cache_bypass": 1})
        self.run_step(_context_fn(_save_matmuls))
        self.assertEqual(aot_counts(), {"autograd_cache_bypass": 2})
        self.assertEqual(self.entry_files(), [])

    def test_unkeyable_cache_hash_bypasses(self) -> None:
        self.run_step(_context_fn(_save_matmuls, object()))
        self.assertEqual(aot_counts(), {"autograd_cache_bypass": 1})


@torch.fx.wrap
def _opaque_scale(x):
    return x * 2


class TestWrappedFunctionHash(unittest.TestCase):
    def test_user_cache_hash_is_keyed(self) -> None:
        # torch.fx.wrap'ed functions (saved-tensor hooks) are opaque to the
        # graph; the user's hash of them stands for their code.
        def graph_with(hash_value):
            gm = torch.fx.symbolic_trace(lambda x: _opaque_scale(x) + 1)
            for node in gm.graph.nodes:
                if node.op == "call_function" and node.target is _opaque_scale:
                    node.meta["is_wrapped"] = True
                    node.meta["user_cache_hash"] = hash_value
            return gm

        inputs = [torch.randn(3)]
        keys = {
            h: ours.compute_key(graph_with(h), inputs, aot_config(), fx_config()).key
            for h in ("v1", "v2")
        }
        self.assertNotEqual(keys["v1"], keys["v2"])
        self.assertEqual(
            keys["v1"], ours.compute_key(graph_with("v1"), inputs, aot_config(), fx_config()).key
        )


class _RemoveTimesOne(CustomGraphPass):
    """Pre-grad pass: ``1 * x`` becomes ``x``."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, graph: torch.fx.Graph) -> None:
        self.runs += 1
        for node in list(graph.nodes):
            if node.op == "call_function" and node.target is operator.mul and node.args[0] == 1:
                node.replace_all_uses_with(node.args[1])
                graph.erase_node(node)

    def uuid(self) -> None:
        return None


def _times_one(x):
    return (1 * x).sin() + 1


@unittest.skipUnless(
    hasattr(torch._inductor.config, "pre_grad_pass_timing"),
    "this torch has no pre_grad_pass_timing (2.13 and later)",
)
class TestPreGradPassesBeforeLookup(CacheTestCase):
    def check_miss_then_hit(self, timing: str) -> None:
        custom = _RemoveTimesOne()
        x = torch.randn(5)
        with torch._inductor.config.patch(pre_grad_custom_pass=custom, pre_grad_pass_timing=timing):
            torch.testing.assert_close(torch.compile(_times_one)(x), _times_one(x))
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertGreaterEqual(custom.runs, 1)
            clear_in_memory_state()
            runs = custom.runs
            torch.testing.assert_close(torch.compile(_times_one)(x), _times_one(x))
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
            # The passes ran again before the lookup, as upstream runs them.
            self.assertGreater(custom.runs, runs)
            self.assertTrue(_compat.pre_grad_passes_run_before_lookup())

    def test_default_timing_without_uuid(self) -> None:
        self.check_miss_then_hit("default")

    def test_early_timing_without_uuid(self) -> None:
        self.check_miss_then_hit("early")

    def test_late_timing_keys_the_pass_uuid(self) -> None:
        class WithUUID(_RemoveTimesOne):
            def __init__(self, uuid: str) -> None:
                super().__init__()
                self._uuid = uuid

            def uuid(self) -> str:
                return self._uuid

        x = torch.randn(5)
        for uuid, expected in (
            ("v1", {"autograd_cache_miss": 1, "autograd_cache_saved": 1}),
            ("v2", {"autograd_cache_miss": 1, "autograd_cache_saved": 1}),
            ("v1", {"autograd_cache_hit": 1}),
        ):
            with torch._inductor.config.patch(
                pre_grad_custom_pass=WithUUID(uuid), pre_grad_pass_timing="late"
            ):
                torch.testing.assert_close(torch.compile(_times_one)(x), _times_one(x))
            self.assertEqual(aot_counts(), expected, uuid)
            clear_in_memory_state()


def _training_step(x, w):
    return (x @ w).tanh().sum()


@slow
class TestFxGraphCacheObservations(CacheTestCase):
    def compile_step(self) -> None:
        torch.manual_seed(0)
        x = torch.randn(4, 4)
        w = torch.randn(4, 4, requires_grad=True)
        we = w.detach().clone().requires_grad_(True)
        torch.compile(_training_step)(x, w).backward()
        _training_step(x, we).backward()
        torch.testing.assert_close(w.grad, we.grad)

    def test_hit_counts_fx_graph_cache_hits(self) -> None:
        for bundled, expected in ((False, 2), (True, 0)):
            with self.subTest(bundled=bundled), cache_enabled(bundled=bundled):
                ours.AOTAutogradCache.clear()
                clear_in_memory_state()
                self.compile_step()
                self.assertEqual(counters["inductor"]["fxgraph_cache_hit"], 0)
                clear_in_memory_state()
                self.compile_step()
                self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
                # The forward and the backward graph.
                self.assertEqual(counters["inductor"]["fxgraph_cache_hit"], expected)
                self.assertEqual(counters["inductor"]["fxgraph_lookup_write_file"], expected)

    def test_clearing_the_fx_graph_cache(self) -> None:
        # Without bundled_autograd_cache the next compile compiles (and saves
        # again); with it, the entry does not depend on the FX graph cache.
        for bundled, after_clear in (
            (False, {"autograd_cache_miss": 1, "autograd_cache_saved": 1}),
            (True, {"autograd_cache_hit": 1}),
        ):
            with self.subTest(bundled=bundled), cache_enabled(bundled=bundled):
                ours.AOTAutogradCache.clear()
                clear_in_memory_state()
                self.compile_step()
                self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
                clear_in_memory_state()
                FxGraphCache.clear()
                self.compile_step()
                self.assertEqual(aot_counts(), after_clear)
                clear_in_memory_state()
                self.compile_step()
                self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_store_set_apart_is_not_cleared(self) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as store, tac_config.patch(store_dir=store):
            self.compile_step()
            clear_in_memory_state()
            FxGraphCache.clear()
            self.compile_step()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})



class _PassWithoutUUID(CustomGraphPass):
    def __call__(self, graph: torch.fx.Graph) -> None:
        pass

    def uuid(self) -> None:
        return None


class TestBypassMessagesKeepUpstreamWords(CacheTestCase):
    """Strict mode raises the bypass; its message begins with the words
    upstream uses for the same refusal (Note [Bypass messages are a contract]
    in autograd_cache.py), which upstream's tests and users match."""

    UPSTREAM_PREFIX = r".*BypassAOTAutogradCache: Unsupported call_function target .*"

    def strict(self):
        return torch._functorch.config.patch(strict_autograd_cache=True)

    def bypass_message(self, fn, *args) -> str:
        with self.strict():
            with self.assertRaises(torch._dynamo.exc.BackendCompilerFailed) as e:
                torch.compile(fn)(*args)
        self.assertEqual(aot_counts(), {"autograd_cache_bypass": 1})
        return str(e.exception)

    def test_allow_in_graph_function(self) -> None:
        # Upstream's test_unsafe_mark_cacheable, allow_in_graph variant.
        @torch._dynamo.allow_in_graph
        class AllowInGraphFunc(torch.autograd.Function):
            @staticmethod
            def forward(_, x):
                torch._dynamo.graph_break()
                return x.sin()

        def fn(x, y, z):
            return AllowInGraphFunc.apply(x)

        for bundled in (False, True):
            with self.subTest(bundled=bundled), cache_enabled(bundled=bundled):
                clear_in_memory_state()
                message = self.bypass_message(fn, *(torch.randn(4, 4) for _ in range(3)))
                self.assertRegex(message, self.UPSTREAM_PREFIX)
                self.assertIn("AllowInGraphFunc is allow_in_graph", message)

    def test_opaque_python_function(self) -> None:
        @torch._dynamo.allow_in_graph
        def opaque(x):
            return x * 5

        message = self.bypass_message(lambda x: opaque(x) + 1, torch.ones(3))
        self.assertRegex(message, self.UPSTREAM_PREFIX)
        self.assertIn("opaque", message)

    def test_custom_function_with_the_knob_off(self) -> None:
        class Double(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return g * 2

        x = torch.randn(4, requires_grad=True)
        with torch._functorch.config.patch(autograd_cache_allow_custom_autograd_functions=False):
            message = self.bypass_message(lambda t: Double.apply(t).sin(), x)
        self.assertRegex(message, r"BypassAOTAutogradCache: Unsupported call_function target autograd_function_apply")
        self.assertIn("is set to False", message)

    def test_compiled_autograd(self) -> None:
        # Upstream's test_compiled_autograd_bypass.
        def fn(a, b):
            out = a.cos() + b
            loss = out.sum()
            torch.autograd.grad(loss, inputs=[a, b])

        a = torch.randn(25, requires_grad=True)
        b = torch.randn(25, requires_grad=True)
        with self.strict(), torch._dynamo.config.patch(compiled_autograd=True):
            with self.assertRaisesRegex(
                torch._dynamo.exc.BackendCompilerFailed,
                "BypassAOTAutogradCache: Unsupported call_function target "
                "torch._dynamo.compiled_autograd.ops.validate_outputs",
            ):
                torch.compile(fn)(a, b)

    def check_prefix(self, prefix: str, fn, *args) -> None:
        message = self.bypass_message(fn, *args)
        self.assertIn("BypassAOTAutogradCache: " + prefix, message)

    def test_settings(self) -> None:
        x = torch.randn(3)
        with torch._inductor.config.patch(fx_graph_cache=False):
            self.check_prefix("FX graph cache is not enabled", torch.sin, x)
        clear_in_memory_state()
        with torch._inductor.config.patch(freezing=True), torch.no_grad():
            self.check_prefix("Cannot cache a graph with freezing enabled", torch.cos, x)

    def test_custom_pass_without_uuid(self) -> None:
        x = torch.randn(3)
        with torch._inductor.config.patch(post_grad_custom_post_pass=_PassWithoutUUID()):
            self.check_prefix("Unsupported post grad custom pass", torch.sin, x)
        clear_in_memory_state()
        with torch._inductor.config.patch(joint_custom_post_pass=_PassWithoutUUID()):
            self.check_prefix("Unsupported joint custom pass", torch.sin, x)

    def test_selective_checkpointing_without_cache_hash(self) -> None:
        def fn(x, y):
            return checkpoint(_region, x, y, use_reentrant=False, context_fn=_context_fn(_save_matmuls))

        x = torch.randn(4, 4, requires_grad=True)
        y = torch.randn(4, 4, requires_grad=True)
        self.check_prefix("SAC context_fn does not have a cache_hash attribute", fn, x, y)

    def test_raw_callable_estimator(self) -> None:
        def estimator(node):
            return 1.0

        x = torch.randn(3)
        with torch._functorch.config.patch(activation_memory_budget_runtime_estimator=estimator):
            self.check_prefix(
                "activation_memory_budget_runtime_estimator is a raw callable without uuid() method",
                torch.sin, x,
            )


if __name__ == "__main__":
    unittest.main()
