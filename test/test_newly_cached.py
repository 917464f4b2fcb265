"""
Constructs torch_aotcache caches where upstream bypasses: custom
``autograd.Function`` (Note [Custom autograd.Function] in autograd_cache.py)
and autocast regions (Note [Autocast regions] in key/graph_hashing.py).

The adversarial tests run ``adversarial_programs.py`` in two fresh processes
sharing one cache dir: the first compiles and saves variant 0 of every case,
the second compiles variant 1, which changes one thing that matters.  Variant
1 must never load variant 0's entry: its compiled outputs and gradients must
equal eager's, and its lookup must miss.  A control case, unchanged between
the processes, must hit.  One more pair of processes shows the check can fail:
with an autocast region's resolved state left out of the key, the second
process loads a stale entry and the check reports it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import unittest
from typing import Any
from unittest import mock

import torch
import torch.fx
from hypothesis import given, settings, strategies as st
from torch.testing._internal.common_utils import instantiate_parametrized_tests, parametrize, subtest

from torch_aotcache import _compat
from torch_aotcache.autograd_cache import (
    BypassAOTAutogradCache,
    check_cacheable,
    custom_autograd_functions_allowed,
    describe_key,
)
from torch_aotcache.key.graph_hashing import autocast_resolved_state

from common import aot_counts, CacheTestCase, child_env, clear_in_memory_state, run_child, slow

# Every test here starts other processes or compiles many programs (CONTRIBUTING.md, "Tests").
pytestmark = slow
from fx_strategies import aot_config, fx_config


HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(HERE, "adversarial_programs.py")
sys.path.insert(0, HERE)
import adversarial_programs  # noqa: E402

CASES = sorted(adversarial_programs.CASES)
# Variant 1 changes nothing that shows in results: only its key must differ.
SAME_RESULTS = {"unchanged", "autocast_cache_flag"}


def run_variant(variant: int, cases: list[str], cache_dir: str, prelude: str = "") -> dict[str, Any]:
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{PROGRAMS!r}, {str(variant)!r}] + {cases!r}\n"
        f"{prelude}\n"
        f"runpy.run_path({PROGRAMS!r}, run_name='__main__')\n"
    )
    # In the parent's working directory, as a child started without cwd.
    proc = run_child(["-c", code], child_env({"TORCHINDUCTOR_CACHE_DIR": cache_dir}), timeout=900, cwd=os.getcwd())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    # Also run by setUpClass, outside any test method: a plain check.
    if not (proc.returncode == 0 and lines):
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-6000:])
    return json.loads(lines[-1][len("RESULT "):])


@instantiate_parametrized_tests
class TestSecondProcess(unittest.TestCase):
    """Variant 0 of every case compiled and saved by one process, variant 1 by
    a second one sharing its cache dir (both run once for the class)."""

    first: dict[str, Any]
    second: dict[str, Any]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cache_dir = cls.enterClassContext(tempfile.TemporaryDirectory())
        cls.first = run_variant(0, CASES, cache_dir)
        cls.second = run_variant(1, CASES, cache_dir)

    @parametrize("case", CASES)
    def test_second_process_change_is_never_a_stale_entry(self, case: str) -> None:
        first, second = self.first[case], self.second[case]
        # Cached, not bypassed, in both processes.
        self.assertNotIn("autograd_cache_bypass", first["counts"], first)
        self.assertNotIn("autograd_cache_bypass", second["counts"], second)
        self.assertTrue(first["equal_to_eager"], first)
        self.assertTrue(second["equal_to_eager"], second)
        if case == "unchanged":
            self.assertEqual(second["counts"], {"autograd_cache_hit": 1}, second)
            return
        # The change matters (a stale entry would have been caught) ...
        if case not in SAME_RESULTS:
            self.assertTrue(second["differs_from_variant_0"], second)
        # ... and the key saw it.
        self.assertEqual(second["counts"].get("autograd_cache_hit", 0), 0, second)
        self.assertEqual(second["counts"].get("autograd_cache_miss"), 1, second)


class TestStaleEntryCheck(unittest.TestCase):
    def test_the_check_catches_a_stale_entry(self) -> None:
        """With the resolved autocast state left out of the key, a region without a
        dtype compiled under another per-device autocast dtype loads the first
        process's entry, and the comparison with eager reports it."""
        blind = (
            "import torch_aotcache.key.graph_hashing as gh\n"
            "gh.autocast_resolved_state = lambda args: ''"
        )
        with tempfile.TemporaryDirectory() as cache_dir:
            run_variant(0, ["autocast_default_dtype"], cache_dir, prelude=blind)
            result = run_variant(1, ["autocast_default_dtype"], cache_dir, prelude=blind)["autocast_default_dtype"]
        self.assertEqual(result["counts"], {"autograd_cache_hit": 1}, result)
        self.assertFalse(result["equal_to_eager"], result)


# ---------------------------------------------------------------------------
# In-process: the knob, bypass reasons, hits
# ---------------------------------------------------------------------------


class _Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * x.cos() * 2.0


def _opaque_scale(t: torch.Tensor) -> torch.Tensor:
    return t * 2.0


class _OpaqueBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _opaque_scale(g * x.cos())


@torch.autocast("cpu", dtype=torch.bfloat16)
def _bf16_mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.mm(x, w)


class CaptureTestCase(unittest.TestCase):
    def captured(self, fn: Any, *inputs: torch.Tensor) -> tuple[torch.fx.GraphModule, list[torch.Tensor]]:
        """The graph Dynamo hands to AOTAutograd, and its example inputs."""
        graphs: list[tuple[torch.fx.GraphModule, list[torch.Tensor]]] = []

        def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
            graphs.append((gm, list(example_inputs)))
            return gm.forward

        torch._dynamo.reset()
        torch.compile(fn, backend=backend, fullgraph=True)(*inputs)
        self.assertEqual(len(graphs), 1)
        return graphs[0]

    def function_graph(self) -> tuple[torch.fx.GraphModule, list[torch.Tensor]]:
        return self.captured(lambda x: _Fn.apply(x) * 2, torch.randn(4, requires_grad=True))


KNOB = "autograd_cache_allow_custom_autograd_functions"


def _unset_knob() -> None:
    override = torch._functorch.config._config[KNOB].user_override
    if hasattr(override, "set"):
        override.set(_compat._CONFIG_UNSET)
    else:
        torch._functorch.config._config[KNOB].user_override = _compat._CONFIG_UNSET


class KnobUnsetMixin(unittest.TestCase):
    """The knob as a fresh process has it (config.patch restores by assigning
    the prior value, which torch's config then reports as set), before and
    after each test."""

    def setUp(self) -> None:
        super().setUp()
        _unset_knob()
        self.addCleanup(_unset_knob)


def _targets(gm: torch.fx.GraphModule) -> set[str]:
    return {getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes if n.op == "call_function"}


class TestCustomFunctionGraphs(CaptureTestCase):
    def test_function_graph_holds_the_hop_and_its_bodies(self) -> None:
        gm, _ = self.function_graph()
        self.assertIn("autograd_function_apply", _targets(gm))
        bodies = [n for n, m in gm.named_children() if isinstance(m, torch.fx.GraphModule)]
        self.assertEqual(sorted(bodies), ["bwd_body_0", "fwd_body_0"])

    def test_opaque_call_in_a_backward_bypasses(self) -> None:
        torch._dynamo.allow_in_graph(_opaque_scale)
        try:
            gm, _ = self.captured(lambda x: _OpaqueBackward.apply(x) * 2, torch.randn(4, requires_grad=True))
        finally:
            torch._dynamo.disallow_in_graph(_opaque_scale)
        with self.assertRaisesRegex(BypassAOTAutogradCache, "_opaque_scale"):
            check_cacheable(gm)

    def test_allow_in_graph_function_bypasses(self) -> None:
        class Opaque(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
                return x.sin()

            @staticmethod
            def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
                return g

        torch._dynamo.allow_in_graph(Opaque)
        try:
            gm, _ = self.captured(lambda x: Opaque.apply(x) * 2, torch.randn(4, requires_grad=True))
        finally:
            torch._dynamo.disallow_in_graph(Opaque)
        with self.assertRaises(BypassAOTAutogradCache) as e:
            check_cacheable(gm)
        message = str(e.exception)
        self.assertTrue(message.startswith("Unsupported call_function target <function "), message)
        self.assertIn("trampoline_autograd_apply", message)
        # The Function's qualified name: this class's method's local.
        self.assertTrue(message.endswith(
            ": custom autograd.Function TestCustomFunctionGraphs.test_allow_in_graph_function_bypasses.<locals>.Opaque "
            "is allow_in_graph: the compiled code calls its Python, which the graph does not show"
        ), message)


class TestCustomFunctionKnob(KnobUnsetMixin, CaptureTestCase):
    def test_knob_default_caches_explicit_false_bypasses_explicit_true_caches(self) -> None:
        gm, inputs = self.function_graph()
        self.assertTrue(custom_autograd_functions_allowed())
        default = describe_key(gm, inputs, aot_config(), fx_config())
        default_key = default.key
        with torch._functorch.config.patch(autograd_cache_allow_custom_autograd_functions=False):
            self.assertFalse(custom_autograd_functions_allowed())
            with self.assertRaises(BypassAOTAutogradCache) as e:
                check_cacheable(gm)
        self.assertEqual(str(e.exception), (
            "Unsupported call_function target autograd_function_apply: custom autograd.Function: "
            "torch._functorch.config.autograd_cache_allow_custom_autograd_functions is set to False"
        ))
        with torch._functorch.config.patch(autograd_cache_allow_custom_autograd_functions=True):
            self.assertTrue(custom_autograd_functions_allowed())
            forced = describe_key(gm, inputs, aot_config(), fx_config())
        # The knob is a functorch config value: forcing it moves that component only.
        self.assertNotEqual(forced.key, default_key)
        self.assertEqual({n for n, v in forced.components.items() if v != default.components[n]}, {"functorch"})

    def test_knob_left_set_by_an_undone_patch_reads_as_false(self) -> None:
        # torch's config.patch restores by assignment: afterwards the knob reads as
        # set to False, and graphs holding a Function bypass (see README).
        with torch._functorch.config.patch(autograd_cache_allow_custom_autograd_functions=True):
            pass
        self.assertFalse(custom_autograd_functions_allowed())
        _unset_knob()
        self.assertTrue(custom_autograd_functions_allowed())

    def test_knob_forced_by_environment(self) -> None:
        name = KNOB
        entry = torch._functorch.config._config[name]
        self.assertFalse(_compat.config_is_set(torch._functorch.config, name))
        self.enterContext(mock.patch.object(entry, "env_value_force", False, create=True))
        self.assertTrue(_compat.config_is_set(torch._functorch.config, name))
        self.assertFalse(custom_autograd_functions_allowed())


@instantiate_parametrized_tests
class TestHitAfterClearingMemory(KnobUnsetMixin, CacheTestCase):
    @parametrize(
        "fn",
        [
            subtest(lambda x, w: _Fn.apply(x @ w).sum(), name="function"),
            subtest(lambda x, w: _bf16_mm(x, w).float().sum(), name="autocast_decorator"),
        ],
    )
    def test_hit_after_clearing_memory(self, fn: Any) -> None:
        def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
            g = torch.Generator().manual_seed(0)
            x, w = (torch.randn(6, 6, generator=g).requires_grad_(True) for _ in range(2))
            out = torch.compile(fn)(x, w)
            out.backward()
            return out.detach(), [x.grad, w.grad]  # type: ignore[list-item]

        with torch._functorch.config.patch(strict_autograd_cache=True):
            clear_in_memory_state()
            first = run()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            clear_in_memory_state()
            second = run()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        torch.testing.assert_close(first, second)


_FUNCTION_SOURCE = """
class Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward({saved})
        ctx.k = {ctx_k}
        return x.sin()

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return g * {op} * {const} * ctx.k
"""

function_sources = st.fixed_dictionaries(
    {
        "saved": st.sampled_from(["x", "x.cos()", "x * 2"]),
        "ctx_k": st.sampled_from(["1.0", "3.0"]),
        "op": st.sampled_from(["s", "s.cos()", "s.exp()", "s.neg()"]),
        "const": st.sampled_from(["2.0", "0.5", "7.0"]),
    }
)


class TestFunctionKey(CaptureTestCase):
    def function_key(self, source: dict[str, str]) -> Any:
        fn_cls = adversarial_programs._exec(_FUNCTION_SOURCE.format(**source))["Fn"]
        gm, inputs = self.captured(lambda x: fn_cls.apply(x) * 2, torch.randn(4, requires_grad=True))
        return describe_key(gm, inputs, aot_config(), fx_config())

    @settings(max_examples=max(1, settings.default.max_examples // 4))
    @given(first=function_sources, second=function_sources)
    def test_function_key_changes_with_its_python(self, first: dict[str, str], second: dict[str, str]) -> None:
        """Two Functions share a key exactly when their source is the same (what
        the backward computes, which tensor is saved, a ctx attribute, a constant)."""
        _unset_knob()
        a, b = self.function_key(first), self.function_key(second)
        changed = {n for n, v in a.components.items() if b.components[n] != v}
        self.assertLessEqual(changed, {"graph"})
        self.assertEqual(a.key == b.key, first == second, (first, second))


# ---------------------------------------------------------------------------
# Autocast regions: the resolved state in the key (Hypothesis)
# ---------------------------------------------------------------------------


def autocast_graph(args: tuple[Any, ...]) -> torch.fx.GraphModule:
    g = torch.fx.Graph()
    x, w = g.placeholder("x"), g.placeholder("w")
    enter = g.call_function(torch.amp.autocast_mode._enter_autocast, args)
    y = g.call_function(torch.mm, (x, w))
    g.call_function(torch.amp.autocast_mode._exit_autocast, (enter,))
    g.output((y,))
    return torch.fx.GraphModule(torch.nn.Module(), g)


region_args = st.tuples(
    st.sampled_from(["cpu", "cuda"]),
    st.sampled_from([None, torch.bfloat16, torch.float16]),
    st.booleans(),
    st.sampled_from([None, True, False]),
)


class _AutocastDtype:
    """Sets the per-device autocast dtype (without enabling autocast) for a block."""

    def __init__(self, device: str, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype

    def __enter__(self) -> None:
        self.saved = torch.get_autocast_dtype(self.device)
        torch.set_autocast_dtype(self.device, self.dtype)

    def __exit__(self, *exc: object) -> None:
        torch.set_autocast_dtype(self.device, self.saved)


def _deprecated_spelling(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    with torch.cpu.amp.autocast(dtype=torch.bfloat16):
        return torch.mm(x, w)


def _hop_region(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    from torch._higher_order_ops.wrap import wrap_with_autocast

    return wrap_with_autocast("cpu", torch.bfloat16, True, None, torch.mm, x, w)


@instantiate_parametrized_tests
class TestAutocastRegions(CaptureTestCase):
    @settings(max_examples=max(1, settings.default.max_examples // 2))
    @given(
        first=region_args,
        second=region_args,
        ambient=st.tuples(*[st.sampled_from([torch.bfloat16, torch.float16])] * 2),
    )
    def test_region_key_changes_with_what_the_region_runs_under(
        self, first: tuple[Any, ...], second: tuple[Any, ...], ambient: tuple[torch.dtype, torch.dtype]
    ) -> None:
        inputs = [torch.randn(3, 3), torch.randn(3, 3)]
        with _AutocastDtype("cpu", ambient[0]):
            a = describe_key(autocast_graph(first), inputs, aot_config(), fx_config())
            state_a = autocast_resolved_state(first)
        with _AutocastDtype("cpu", ambient[1]):
            b = describe_key(autocast_graph(second), inputs, aot_config(), fx_config())
            state_b = autocast_resolved_state(second)
        # Only the graph component may differ (the ambient dtype of a disabled
        # device is not runtime state of its own) ...
        changed = {n for n, v in a.components.items() if b.components[n] != v}
        self.assertLessEqual(changed, {"graph"})
        # ... and it differs exactly when the written or the resolved region does.
        self.assertEqual(a.key == b.key, first == second and state_a == state_b, (state_a, state_b))

    def test_resolved_state_follows_the_per_device_dtype(self) -> None:
        with _AutocastDtype("cpu", torch.float16):
            fp16 = autocast_resolved_state(("cpu", None, True, None))
        with _AutocastDtype("cpu", torch.bfloat16):
            bf16 = autocast_resolved_state(("cpu", None, True, None))
        self.assertEqual((fp16, bf16), (
            "autocast[cpu,torch.float16,True,True]",
            "autocast[cpu,torch.bfloat16,True,True]",
        ))

    @parametrize(
        "fn", [subtest(_deprecated_spelling, name="cpu_amp"), subtest(_hop_region, name="wrap_with_autocast")]
    )
    def test_other_region_spellings_are_cached_with_their_state(self, fn: Any) -> None:
        inputs = [torch.randn(3, 3), torch.randn(3, 3)]
        gm, example = self.captured(fn, *inputs)
        check_cacheable(gm)
        graph = describe_key(gm, example, aot_config(), fx_config()).detail["graph"]
        self.assertIn("autocast[cpu,torch.bfloat16,True,True]", graph)

    def test_region_that_does_not_resolve_bypasses(self) -> None:
        inputs = [torch.randn(3, 3), torch.randn(3, 3)]
        with self.assertRaisesRegex(BypassAOTAutogradCache, "does not resolve"):
            describe_key(autocast_graph(("no_such_device", None, True, None)), inputs, aot_config(), fx_config())
