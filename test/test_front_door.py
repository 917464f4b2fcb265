"""
The front door (Note [Front door] in inductor/front_door.py) and the light runtime
imports of a hit (Note [Light runtime imports] in inductor/light_runtime.py).

In fresh processes: a warm hit through the front door imports none of
Inductor's compiler and computes what eager computes (outputs and gradients,
training, inference, dynamic shapes); with the front door off the same
entries hit through compile_fx; a compile the front door cannot serve (a
miss) is counted once.  In this process: the facts the light imports rely
on, checked against the installed torch; what the front door turns away;
that giving way hands back the AOTConfig id.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shutil
import sys
import tempfile
import unittest
import unittest.mock

import torch
import torch._functorch.aot_autograd as aot_module
import torch._inductor.compile_fx  # noqa: F401 - registers every extern kernel
from torch._inductor import config as inductor_config, select_algorithm
from torch._inductor.codegen import memory_planning

import torch_aotcache
from torch_aotcache import _compat
from torch_aotcache.inductor import front_door, light_runtime
from torch_aotcache import config as our_config

from common import cache_enabled, run_python, slow


HEAVY = (
    "torch._inductor.compile_fx",
    "torch._inductor.select_algorithm",
    "torch._inductor.lowering",
    "torch._inductor.graph",
    "torch._inductor.decomposition",
    "torch._inductor.codegen.memory_planning",
    "torch._inductor.debug",
)

SCRIPT = r"""
import copy, json, os, sys
if os.environ["ORDER"] == "package-first":
    import torch_aotcache
    import torch
else:
    import torch
    import torch_aotcache
from torch._dynamo.utils import counters

torch.manual_seed(0)

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(32, 64)
        self.b = torch.nn.Linear(64, 8)
        self.register_buffer("scale", torch.rand(8) + 0.5)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) * self.scale

def dyn(a, w):
    return (torch.sin(a) @ w).sum(1) * 2

options = json.loads(os.environ.get("OPTIONS", "null"))
net = Net()
ref = copy.deepcopy(net)
x = torch.randn(4, 32)
compiled = torch.compile(net, options=options)
out = compiled(x)
out.sum().backward()
expected = ref(x)
expected.sum().backward()
diffs = [float((out - expected).abs().max())]
diffs += [float((p.grad - q.grad).abs().max()) for p, q in zip(net.parameters(), ref.parameters())]
with torch.no_grad():
    x2 = torch.randn(6, 32)
    diffs.append(float((compiled(x2) - ref(x2)).abs().max()))
w = torch.randn(16, 4)
dyn_compiled = torch.compile(dyn, dynamic=True, options=options)
for n in (3, 5):
    a = torch.randn(n, 16)
    diffs.append(float((dyn_compiled(a, w) - dyn(a, w)).abs().max()))
heavy = [m for m in HEAVY if m in sys.modules]
from torch._inductor import debug as switches
debug_ok = switches.RECORD_GRAPH_EXECUTION is False and callable(switches.DebugContext)
import torch._inductor.debug
debug_ok = debug_ok and torch._inductor.debug is sys.modules["torch._inductor.debug"]
print(json.dumps({
    "debug_ok": debug_ok,
    "diffs": diffs,
    "aot": dict(counters["aot_autograd"]),
    "ours": dict(counters["torch_aotcache"]),
    "heavy": heavy,
    "next_aot_id": next(sys.modules["torch._functorch.aot_autograd"].AOT_COUNTER),
}))
"""


ON_THIS_RELEASE = unittest.skipUnless(
    _compat.front_door_release(), "the front door is not used on this torch release"
)


@slow
@ON_THIS_RELEASE
class TestFrontDoorProcesses(unittest.TestCase):
    """One store shared by fresh processes, in order."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="front-door-")

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_script(self, label: str, order: str = "package-first", **env: str) -> dict:
        full_env = {
            "TORCHINDUCTOR_CACHE_DIR": os.path.join(self.tmp, "inductor-" + label),
            "TORCH_AOTCACHE_DIR": os.path.join(self.tmp, "store"),
            "ORDER": order,
            **env,
        }
        code = f"HEAVY = {HEAVY!r}\n" + SCRIPT
        result = run_python(code, env=full_env)
        self.assertEqual(result.returncode, 0, result.stderr[-4000:])
        return json.loads(result.stdout.strip().splitlines()[-1])

    def check_equal_to_eager(self, report: dict) -> None:
        self.assertEqual(len(report["diffs"]), 8)
        for d in report["diffs"]:
            self.assertLess(d, 1e-5, report["diffs"])

    def test_processes(self) -> None:
        cold = self.run_script("cold")
        self.check_equal_to_eager(cold)
        self.assertEqual(cold["aot"].get("autograd_cache_hit", 0), 0, cold)
        graphs = cold["aot"]["autograd_cache_miss"]
        self.assertGreaterEqual(graphs, 3, cold)
        self.assertEqual(cold["aot"].get("autograd_cache_saved"), graphs, cold)

        # Warm, through the front door, torch imported first.
        warm = self.run_script("warm", order="torch-first")
        self.check_equal_to_eager(warm)
        self.assertEqual(warm["aot"].get("autograd_cache_hit"), graphs, warm)
        self.assertEqual(warm["aot"].get("autograd_cache_miss", 0), 0, warm)
        self.assertEqual(warm["ours"].get("front_door_hits"), graphs, warm)
        self.assertEqual(warm["ours"].get("front_door_errors", 0), 0, warm)
        self.assertEqual(warm["heavy"], [], "a hit imported Inductor's compiler")
        self.assertTrue(warm["debug_ok"])
        # The AOTConfig ids a hit takes are the ones the normal path takes.
        self.assertEqual(warm["next_aot_id"], cold["next_aot_id"])

        # The same entries through compile_fx.
        normal = self.run_script("normal", TORCH_AOTCACHE_FRONT_DOOR="0")
        self.check_equal_to_eager(normal)
        self.assertEqual(normal["aot"].get("autograd_cache_hit"), graphs, normal)
        self.assertEqual(normal["ours"].get("front_door_hits", 0), 0, normal)
        self.assertIn("torch._inductor.compile_fx", normal["heavy"])

        # Other options: other keys.  The front door gives way and the
        # normal path counts each miss once, with the AOTConfig ids of a run
        # without the front door.
        other = self.run_script("other", OPTIONS=json.dumps({"epilogue_fusion": False}))
        self.check_equal_to_eager(other)
        self.assertEqual(other["aot"].get("autograd_cache_hit", 0), 0, other)
        self.assertEqual(other["aot"].get("autograd_cache_miss"), graphs, other)
        self.assertEqual(other["aot"].get("total"), cold["aot"].get("total"), other)
        self.assertEqual(other["ours"].get("front_door_hits", 0), 0, other)
        self.assertEqual(other["next_aot_id"], cold["next_aot_id"])

        # ... and those entries hit through the front door too.
        other_warm = self.run_script("other-warm", OPTIONS=json.dumps({"epilogue_fusion": False}))
        self.check_equal_to_eager(other_warm)
        self.assertEqual(other_warm["ours"].get("front_door_hits"), graphs, other_warm)
        self.assertEqual(other_warm["heavy"], [])


def _graph(fn, *args):  # type: ignore[no-untyped-def]
    return torch.fx.symbolic_trace(fn), list(args)


class TestFrontDoorInProcess(unittest.TestCase):
    def test_knows_the_common_case(self) -> None:
        gm, inputs = _graph(lambda x: (x.sin(),), torch.randn(3))
        with cache_enabled():
            self.assertIsNone(front_door.why_not(gm, inputs))

    def test_turns_away(self) -> None:
        gm, inputs = _graph(lambda x: (x.sin(),), torch.randn(3))
        with cache_enabled():
            for option, value, reason in (
                ("cpp_wrapper", True, "cpp_wrapper"),
                ("freezing", True, "freezing"),
                ("triton.cudagraphs", True, "CUDA graphs"),
            ):
                with inductor_config.patch({option: value}):
                    self.assertEqual(front_door.why_not(gm, inputs), reason)
            self.assertEqual(front_door.why_not(gm, [[torch.randn(3)]]), "nested inputs")
            single, one = _graph(lambda x: x.sin(), torch.randn(3))
            self.assertEqual(front_door.why_not(single, one), "graph does not return a tuple")
            meta, on_meta = _graph(lambda x: (x.sin(),), torch.randn(3, device="meta"))
            self.assertEqual(front_door.why_not(meta, on_meta), "meta tensor")
        with torch._functorch.config.patch(enable_autograd_cache=False):
            self.assertEqual(front_door.why_not(gm, inputs), "local cache off")

    def test_giving_way_hands_back_the_aot_id(self) -> None:
        seen = []

        def backend(gm, example_inputs):  # type: ignore[no-untyped-def]
            first = next(aot_module.AOT_COUNTER)
            aot_module.AOT_COUNTER = itertools.chain([first], aot_module.AOT_COUNTER)
            result = front_door.through_front_door(gm, example_inputs, {}, None)
            seen.append((result, next(aot_module.AOT_COUNTER), first))
            return gm.forward

        store = tempfile.mkdtemp(prefix="front-door-empty-")
        try:
            with cache_enabled(), our_config.patch(store_dir=store):
                torch._dynamo.reset()
                torch.compile(lambda x: x.cos() + 1, backend=backend)(torch.randn(4))
        finally:
            shutil.rmtree(store, ignore_errors=True)
            torch._dynamo.reset()
        self.assertEqual(len(seen), 1)
        result, taken, first = seen[0]
        self.assertIsNone(result)  # an empty store: nothing to hit
        self.assertEqual(taken, first)

    def test_compiler_config_is_upstreams(self) -> None:
        wrapper = torch._TorchCompileInductorWrapper(
            None, {"epilogue_fusion": False, "max_autotune": True}, False
        )
        original = torch_aotcache.installer.patching.get_original(torch._TorchCompileInductorWrapper, "get_compiler_config")
        self.assertEqual(front_door.compiler_config(original, wrapper), original(wrapper))
        self.assertEqual(
            front_door.compiler_config(original, wrapper),
            torch._inductor.compile_fx.get_patched_config_dict(config_patches=wrapper.config),
        )


@ON_THIS_RELEASE
class TestLightRuntime(unittest.TestCase):
    def test_torch_kernels_are_inductors(self) -> None:
        real = select_algorithm.extern_kernels
        for name in ("mm", "addmm", "bmm", "baddbmm", "convolution"):
            self.assertTrue(hasattr(real, name), name)
        for name in light_runtime.TORCH_KERNELS:
            if hasattr(real, name):
                self.assertIs(getattr(real, name), getattr(torch, name), name)

    def test_align_is_utils_align(self) -> None:
        from torch._inductor import utils

        self.assertIs(memory_planning._align, utils._align)

    def test_extern_kernels_namespace(self) -> None:
        ns = light_runtime._ExternKernels()
        self.assertIs(ns.mm, torch.mm)
        # Not a torch function: the real namespace's object.
        self.assertIs(ns.bias_addmm, select_algorithm.extern_kernels.bias_addmm)
        with self.assertRaises(AttributeError):
            ns.no_such_kernel  # noqa: B018

    def test_rewrite_imports(self) -> None:
        release = _compat.front_door_release()
        source = "\n".join(
            [
                "import torch",
                "from torch._inductor.codegen.memory_planning import _align as align",
                "from torch._inductor.select_algorithm import extern_kernels",
                "    from torch._inductor.select_algorithm import extern_kernels",
                "def call(args):",
                "    return extern_kernels.mm(*args)",
            ]
        )
        with unittest.mock.patch.dict(sys.modules):
            del sys.modules[light_runtime.SELECT_ALGORITHM]
            rewritten = light_runtime.rewrite_imports(source, release)
        lines = rewritten.split("\n")
        self.assertEqual(len(lines), len(source.split("\n")))
        self.assertEqual(lines[1], "from torch._inductor.utils import _align as align")
        self.assertEqual(lines[2], "from torch_aotcache.inductor.light_runtime import extern_kernels")
        self.assertEqual(lines[3], "    from torch._inductor.select_algorithm import extern_kernels")
        self.assertEqual(lines[4:], source.split("\n")[4:])
        # select_algorithm imported: that line stays.
        self.assertIn(
            "from torch._inductor.select_algorithm import extern_kernels\n",
            light_runtime.rewrite_imports(source, release),
        )
        self.assertIs(light_runtime.rewrite_imports(source, False), source)

    def test_unregistered_operators(self) -> None:
        source = (
            "aten = torch.ops.aten\n"
            "x = aten.addmm.default(a, b, c)  # Original ATen: [aten.addmm]\n"
            "y = torch.ops.aten.mm.default(a, b)\n"
            "z = torch.ops.torch_aotcache_nowhere.op(a)\n"
            "w = torch.ops.aten.no_such_operator_here(a)\n"
        )
        self.assertEqual(
            sorted(light_runtime.unregistered_operators(source)),
            ["aten.no_such_operator_here", "torch_aotcache_nowhere.op"],
        )

    def test_debug_switches(self) -> None:
        import torch._inductor.debug as real

        for name, value in light_runtime.DEBUG_SWITCHES.items():
            self.assertEqual(getattr(real, name), value, name)
        stand_in = light_runtime._DebugSwitches(light_runtime.DEBUG_MODULE)
        # With the real module imported, everything is the real module's.
        self.assertIs(stand_in.DebugContext, real.DebugContext)
        try:
            stand_in.RECORD_GRAPH_EXECUTION = True
            self.assertIs(real.RECORD_GRAPH_EXECUTION, True)
            self.assertIs(stand_in.RECORD_GRAPH_EXECUTION, True)
        finally:
            real.RECORD_GRAPH_EXECUTION = False
        # Imported (or set): nothing is placed.
        self.assertFalse(light_runtime.place_debug_switches())
        self.assertIs(torch._inductor.debug, real)

    def test_stand_in_for_the_decomposition_table(self) -> None:
        from torch._inductor.decomposition import select_decomp_table

        data = pickle.dumps({"get_decomp_fn": select_decomp_table})
        # Imported: the real function.
        self.assertIs(light_runtime.loads(data)["get_decomp_fn"], select_decomp_table)
        with unittest.mock.patch.dict(sys.modules):
            del sys.modules["torch._inductor.decomposition"]
            stand_in = light_runtime.loads(data)["get_decomp_fn"]
        self.assertIs(stand_in, light_runtime._select_decomp_table)
        self.assertEqual(stand_in(), select_decomp_table())


if __name__ == "__main__":
    unittest.main()
