"""
Golden keys: key derivation must not change by accident.

Each reference graph is built with ``torch.fx.symbolic_trace`` (deterministic,
independent of Dynamo's version) and keyed with fixed inputs.  The goldens are
over the portable components (``PORTABLE_COMPONENTS``: graph, inputs, configs
of the call, runtime state, tag): they are the same on every machine and both
supported releases.  The components that describe the torch build and the
machine (``torch_src``, ``system``, ``hardware``, ``functorch``, ``inductor``)
are checked for presence and shape here, and for sensitivity by the
Hypothesis tests.  Regenerate with ``EXPECTTEST_ACCEPT=1`` and read the diff.
"""

from __future__ import annotations

import operator

import expecttest
import torch
import torch.fx
from torch.fx.passes.shape_prop import ShapeProp

from torch_aotcache.autograd_cache import describe_key, PORTABLE_COMPONENTS

from fx_strategies import aot_config, fx_config


FX_CONFIG = fx_config()


def traced(fn, *inputs: torch.Tensor) -> torch.fx.GraphModule:
    gm = torch.fx.symbolic_trace(fn)
    ShapeProp(gm).propagate(*inputs)
    for node in gm.graph.nodes:
        if "tensor_meta" in node.meta:
            node.meta["example_value"] = node.meta["tensor_meta"]
    return gm


def t(*shape: int, dtype: torch.dtype = torch.float32, grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).to(dtype)
    return x.requires_grad_(grad)


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor([2.0, 3.0]))

    def forward(self, x):
        return x * self.scale


def reference_cases() -> list[tuple[str, torch.fx.GraphModule, list]]:
    cases = []

    def add(name, fn, *inputs):
        cases.append((name, traced(fn, *inputs), list(inputs)))

    add("pointwise", lambda x: torch.sin(x) + 1, t(4))
    add("binary", lambda x, y: torch.mul(x, y) - y, t(3, 4), t(3, 4))
    add("matmul_relu", lambda a, b: torch.relu(torch.matmul(a, b)), t(4, 5, grad=True), t(5, 2))
    add("reduction", lambda x: torch.sum(x, 1), t(6, 7))
    add("views", lambda x: torch.transpose(torch.reshape(x, (2, 6)), 0, 1), t(3, 4))
    add("cat_two_outputs", lambda x, y: (torch.cat([x, y], 0), torch.neg(x)), t(2, 3), t(2, 3))
    add("getitem_max", lambda x: operator.getitem(torch.max(x, 0), 1), t(5, 3))
    add("float64_input", lambda x: torch.exp(x) * 2.5, t(4, dtype=torch.float64))
    add("noncontiguous", lambda x: torch.tanh(x), t(4, 3).t())
    add("gelu_linear", lambda x, w: torch.nn.functional.gelu(torch.nn.functional.linear(x, w)),
        t(2, 4, grad=True), t(3, 4, grad=True))
    buffered = torch.fx.symbolic_trace(_Linear())
    cases.append(("buffer_constant", buffered, [t(3, 2)]))
    return cases


class TestGoldenKeys(expecttest.TestCase):
    def keys(self) -> str:
        lines = []
        for name, gm, inputs in reference_cases():
            with torch.enable_grad():
                kc = describe_key(gm, inputs, aot_config(), FX_CONFIG)
            lines.append(f"{name}: {kc.subkey(PORTABLE_COMPONENTS)}")
        return "\n".join(lines)

    def test_golden_keys(self) -> None:
        self.assertExpectedInline(
            self.keys(),
            """\
pointwise: 74dada5d13bf9aeef8f79e37bb16e51e5d769693
binary: bc76d464b6ad8a3d759982c613bddf56e8a789b8
matmul_relu: 35615055adb24facf1dbd1df16fdfb44bc674c8f
reduction: ce917cc152a827b916672617af8978a440e549cd
views: ce2d95a0cbd1953cd3c93e0b2176ac764b81139a
cat_two_outputs: ef752add32d068e2a7911da918eb546955192080
getitem_max: 1f99f6764ad25908c6c8ca59a9bfe5e2754efffa
float64_input: 05ecbe959c44132a41bf4d5231c47c399ca0dfaf
noncontiguous: d32b0d887c30e48b8926065a019807359cc6eaed
gelu_linear: 4272e08546b5662dbb3019355aebc234e408d591
buffer_constant: c751c23aafe791444c6f7454c316052440245cdc""",
        )

    def test_component_listing(self) -> None:
        name, gm, inputs = reference_cases()[2]
        kc = describe_key(gm, inputs, aot_config(), FX_CONFIG)
        listing = "\n".join(
            f"[{c}]\n{kc.detail[c]}" for c in ("graph", "inputs", "aot_config", "fx_config")
        )
        self.assertExpectedInline(
            listing,
            """\
[graph]
0 placeholder 0 ()
1 placeholder 1 ()
2 call_function torch._VariableFunctionsClass.matmul (%0,%1) {}
3 call_function torch._VariableFunctionsClass.relu (%2) {}
4 output  (%3) {}
[inputs]
tensor T|torch.float32|cpu|torch.strided|rg|shape=4,5|stride=5,1|off=0
tensor T|torch.float32|cpu|torch.strided|nrg|shape=5,2|stride=2,1|off=0
[aot_config]
num_params_buffers=0
keep_inference_input_mutations=False
is_export=False
no_tangents=False
dynamic_shapes=False
aot_autograd_arg_pos_to_source=None
static_input_indices=[]
enable_log=True
pre_dispatch=False
precompile_backend_id=None
[fx_config]
cudagraphs=False
forward_device=None""",
        )

    def test_all_components_present(self) -> None:
        name, gm, inputs = reference_cases()[0]
        kc = describe_key(gm, inputs, aot_config(), FX_CONFIG)
        self.assertEqual(
            list(kc.components),
            ["format", "graph", "ops", "inputs", "aot_config", "fx_config", "runtime", "functorch",
             "inductor", "system", "hardware", "torch_src", "triton_src", "tag"],
        )
        for value in kc.components.values():
            self.assertRegex(value, r"^[0-9a-f]{32,64}$")
        self.assertRegex(kc.key, r"^tac[0-9a-f]{40}$")

    def test_golden_fails_on_accidental_change(self) -> None:
        # The same derivation with one component's text changed gives another digest:
        # a golden over it would fail.
        name, gm, inputs = reference_cases()[0]
        kc = describe_key(gm, inputs, aot_config(), FX_CONFIG)
        kc2 = describe_key(gm, inputs, aot_config(num_params_buffers=1), FX_CONFIG)
        self.assertNotEqual(kc.subkey(PORTABLE_COMPONENTS), kc2.subkey(PORTABLE_COMPONENTS))
        self.assertEqual(kc.components["graph"], kc2.components["graph"])


if __name__ == "__main__":
    import unittest

    unittest.main()
