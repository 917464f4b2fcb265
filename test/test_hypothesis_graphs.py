"""
Property tests of torch_aotcache over random programs (see fx_strategies.py).

* compiling a program cold, then loading it warm from our cache, gives eager's
  outputs and gradients, and the counters say miss/saved, then hit;
* a program's key is the same in another process with another
  ``PYTHONHASHSEED``, working directory and cache directory;
* changing any one factor of a key changes the key, and only the component
  that holds that factor; two different programs never share a key;
* renaming a graph's nodes keeps its key, and computing a key leaves the graph
  as it was; FakeTensor inputs (what Dynamo passes) key like real ones.

Example counts follow the Hypothesis profile (conftest.py): the ``ci`` profile
compiles a few programs and keys about fifty; ``dev`` ten times as many.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import operator
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.fx
from hypothesis import assume, event, given, note, settings, strategies as st
from torch._dynamo.utils import counters
from torch.testing._internal.common_utils import instantiate_parametrized_tests, parametrize, subtest

import torch_aotcache
from torch_aotcache.store import layout

import fx_strategies
from common import child_env, slow, spawn_child
from fx_strategies import (
    aot_config,
    fx_config,
    fx_programs,
    keys_for_seeds,
    Program,
    program_key,
    seeded_programs,
)


# The ci profile's 100 examples give 6 compiles and 50 key checks; dev's 1000, 62 and 500.
COMPILE_EXAMPLES = max(1, settings.default.max_examples // 16)
KEY_EXAMPLES = max(1, settings.default.max_examples // 2)

HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    subtest("cpu", name="cpu"),
    subtest("cuda", name="cuda", decorators=[unittest.skipIf(not HAS_CUDA, "needs a CUDA device")]),
]


# ---------------------------------------------------------------------------
# Eager == cold compile == warm load
# ---------------------------------------------------------------------------


def _clear_in_memory_state() -> None:
    """Forget everything compiled in this process; the cache on disk stays."""
    counters.clear()
    torch._dynamo.reset()
    torch._inductor.codecache.PyCodeCache.cache_clear(purge=True)


@dataclasses.dataclass
class RunResult:
    outputs: list[torch.Tensor]
    grads: list[torch.Tensor | None] | None


def _run(fn: Callable[..., Sequence[torch.Tensor]], inputs: list[torch.Tensor]) -> RunResult:
    """Outputs, and gradients of the sum of the differentiable outputs w.r.t. the inputs that require grad."""
    outputs = fn(*inputs)
    wrt = [x for x in inputs if x.requires_grad]
    differentiable = [o for o in outputs if o.requires_grad]
    grads = None
    if wrt and differentiable:
        loss = sum(o.sum() for o in differentiable)
        grads = list(torch.autograd.grad(loss, wrt, allow_unused=True))
    return RunResult([o.detach() for o in outputs], grads)


def _tensors(result: RunResult) -> list[torch.Tensor]:
    return result.outputs + [g for g in result.grads or [] if g is not None]


class SameResultsTestCase(unittest.TestCase):
    def assert_same(self, actual: RunResult, expected: RunResult, exact: bool = False) -> None:
        self.assertEqual(len(actual.outputs), len(expected.outputs))
        pairs = list(zip(actual.outputs, expected.outputs))
        if expected.grads is None:
            self.assertIsNone(actual.grads)
        else:
            self.assertIsNotNone(actual.grads)
            self.assertEqual([g is None for g in actual.grads], [g is None for g in expected.grads])
            pairs += [(a, e) for a, e in zip(actual.grads, expected.grads) if e is not None]
        for a, e in pairs:
            if exact or not e.is_floating_point():
                torch.testing.assert_close(a, e, rtol=0, atol=0, equal_nan=True)
            elif e.dtype == torch.float64:
                torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-7)
            else:
                torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


@contextlib.contextmanager
def _caches_on() -> Iterator[None]:
    with (
        torch._dynamo.config.patch(error_on_recompile=True),
        torch._functorch.config.patch(enable_autograd_cache=True, strict_autograd_cache=True),
        torch._inductor.config.patch(fx_graph_cache=True),
        torch.compiler.config.patch(force_disable_caches=False),
    ):
        yield


def _stored_entries() -> list[str]:
    found = []
    for folder, _, files in os.walk(layout.entries_root()):
        found += [os.path.join(folder, f) for f in files if f.endswith(layout.ENTRY_SUFFIX)]
    return found


@contextlib.contextmanager
def _upstream_save_decisions() -> Iterator[list[bool] | None]:
    """The answers of upstream's ``_should_save_cache`` meanwhile (None where torch has no such function)."""
    from torch._functorch._aot_autograd import graph_compile

    original = getattr(graph_compile, "_should_save_cache", None)
    if original is None:
        yield None
        return
    decisions: list[bool] = []

    def spy(*compiled_fns: Any) -> bool:
        decisions.append(bool(original(*compiled_fns)))
        return decisions[-1]

    with mock.patch.object(graph_compile, "_should_save_cache", spy):
        yield decisions


def _compile_without_caches(fn: Callable[..., Any], inputs: list[torch.Tensor]) -> RunResult:
    with torch._inductor.utils.fresh_cache(), torch.compiler.config.patch(force_disable_caches=True):
        _clear_in_memory_state()
        try:
            return _run(torch.compile(fn, backend="inductor", fullgraph=True), inputs)
        finally:
            _clear_in_memory_state()


@slow
@instantiate_parametrized_tests
class TestEagerColdWarm(SameResultsTestCase):
    @parametrize("device", DEVICES)
    @settings(max_examples=COMPILE_EXAMPLES)
    @given(program=fx_programs())
    def test_eager_equals_cold_compile_equals_warm_load(self, device: str, program: Program) -> None:
        self.assertTrue(torch_aotcache.is_installed())
        note(program.describe())
        fn, make_inputs = program.callable(device)
        eager = _run(fn, make_inputs())
        # Overflow (exp of exp of ...) makes nan gradients whose comparison says nothing.
        assume(all(bool(torch.isfinite(t).all()) for t in _tensors(eager) if t.is_floating_point()))

        with torch._inductor.utils.fresh_cache(), _caches_on():
            _clear_in_memory_state()
            with _upstream_save_decisions() as decisions:
                cold = _run(torch.compile(fn, backend="inductor", fullgraph=True), make_inputs())
            stats = dict(counters["aot_autograd"])
            self.assertEqual(stats.get("autograd_cache_bypass", 0), 0, stats)
            self.assertGreaterEqual(stats.get("autograd_cache_miss", 0), 1, stats)
            self.assertEqual(stats.get("autograd_cache_hit", 0), 0, stats)
            # Upstream offers an entry to the cache only when Inductor compiled every
            # graph through its FX graph cache (a program that returns an input, or
            # whose backward just passes the gradient through, has nothing to save).
            expected = stats["autograd_cache_miss"] if decisions is None else sum(decisions)
            self.assertEqual(stats.get("autograd_cache_saved", 0), expected, (stats, decisions))
            if expected:
                self.assertTrue(_stored_entries(), "no entry in torch_aotcache's store after a cold compile")
            else:
                event("nothing to save")
            saved = stats.get("autograd_cache_saved", 0)
            missed = stats["autograd_cache_miss"]

            _clear_in_memory_state()
            warm = _run(torch.compile(fn, backend="inductor", fullgraph=True), make_inputs())
            stats = dict(counters["aot_autograd"])
            self.assertEqual(stats.get("autograd_cache_hit", 0), saved, stats)
            self.assertEqual(stats.get("autograd_cache_miss", 0), missed - saved, stats)
            self.assertEqual(stats.get("autograd_cache_bypass", 0), 0, stats)
            _clear_in_memory_state()

        # A warm load runs the very kernels the cold compile built.
        self.assert_same(warm, cold, exact=True)
        try:
            self.assert_same(cold, eager)
        except AssertionError:
            # Inductor itself may differ from eager (e.g. amax's backward recomputes
            # its input and misses the maximum).  Not the cache's doing if a compile
            # with every cache off gives the very same numbers.
            self.assert_same(cold, _compile_without_caches(fn, make_inputs()), exact=True)
            event("Inductor differs from eager, with or without caches")


# ---------------------------------------------------------------------------
# The same key in another process
# ---------------------------------------------------------------------------

# Seeds spread over the whole range (Knuth's multiplicative hash of 0..39).
CROSS_PROCESS_SEEDS = [(i * 2654435761) % 2**32 for i in range(40)]


@slow
@instantiate_parametrized_tests
class TestKeyInAnotherProcess(unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(self.enterContext(tempfile.TemporaryDirectory()))

    @parametrize("device", DEVICES)
    def test_key_is_the_same_in_another_process(self, device: str) -> None:
        request = json.dumps({"seeds": CROSS_PROCESS_SEEDS, "device": device})
        procs = []
        for hash_seed in ("0", "4242"):
            cwd = self.tmp / f"cwd-{hash_seed}"
            cache = self.tmp / f"cache-{hash_seed}"
            cwd.mkdir()
            cache.mkdir()
            # child_env: this checkout's package first on PYTHONPATH, installed or not.
            # Keys are compared with this process's: no ISA answer handed down (it is a config).
            env = child_env({"PYTHONHASHSEED": hash_seed, "TORCHINDUCTOR_CACHE_DIR": str(cache)}, probed_isa=False)
            procs.append(spawn_child([os.path.abspath(fx_strategies.__file__), request], env, cwd=cwd))
        # This process (whatever its own hash seed) meanwhile computes the same keys.
        here = keys_for_seeds(CROSS_PROCESS_SEEDS, device)
        results = {"this process": here}
        for hash_seed, proc in zip(("0", "4242"), procs):
            out, err = proc.communicate(timeout=300)
            self.assertEqual(proc.returncode, 0, err)
            results[f"PYTHONHASHSEED={hash_seed}"] = json.loads(out)

        mismatches = []
        for seed in map(str, CROSS_PROCESS_SEEDS):
            for where, keys in results.items():
                if keys[seed]["key"] != here[seed]["key"]:
                    differ = sorted(
                        name
                        for name, value in keys[seed]["components"].items()
                        if here[seed]["components"].get(name) != value
                    )
                    mismatches.append(
                        f"seed {seed}: {where} differs in {differ}\n"
                        + fx_strategies.build_program(int(seed)).describe()
                    )
        self.assertFalse(mismatches, "\n\n".join(mismatches))

        # And no false equality: different programs, different keys.
        programs: dict[str, str] = {}
        for seed in map(str, CROSS_PROCESS_SEEDS):
            text = fx_strategies.build_program(int(seed)).describe().split("\n", 1)[1]
            other = programs.setdefault(here[seed]["key"], text)
            self.assertEqual(other, text, f"two programs share key {here[seed]['key']}:\n{other}\n\n{text}")


# ---------------------------------------------------------------------------
# One factor changed, one component changed
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """A program, its inputs and its graph, and the key of all three unchanged."""

    program: Program
    device: str
    inputs: list[torch.Tensor]
    gm: torch.fx.GraphModule
    # Picks one of several places a mutation could apply (drawn by Hypothesis).
    choose: Callable[[Sequence[Any]], Any] = operator.itemgetter(0)

    @classmethod
    def of(cls, program: Program, device: str, data: Any = None) -> Case:
        inputs = program.make_inputs(device)
        case = cls(program, device, inputs, program.graph_module(inputs))
        if data is not None:
            case.choose = lambda options: data.draw(st.sampled_from(list(options)))
        return case

    def fresh_gm(self) -> torch.fx.GraphModule:
        return self.program.graph_module(self.inputs)

    def key(
        self,
        gm: torch.fx.GraphModule | None = None,
        inputs: Sequence[torch.Tensor] | None = None,
        aot: Any = None,
        fx: dict[str, Any] | None = None,
    ) -> Any:
        return program_key(
            gm if gm is not None else self.gm, inputs if inputs is not None else self.inputs, aot, fx
        )


def _replace_input(
    case: Case, pred: Callable[[torch.Tensor], bool], change: Callable[[torch.Tensor], torch.Tensor]
) -> Any:
    """The key with an input satisfying ``pred`` replaced by ``change(input)``; None if none does."""
    candidates = [i for i, x in enumerate(case.inputs) if pred(x)]
    if not candidates:
        return None
    i = case.choose(candidates)
    inputs = list(case.inputs)
    inputs[i] = change(inputs[i])
    return case.key(inputs=inputs)


def _aliased_inputs(case: Case) -> Any:
    """The key with two inputs of one dtype sharing a storage, every other metadata kept."""
    pairs = [
        (i, j)
        for i, x in enumerate(case.inputs)
        for j, y in enumerate(case.inputs)
        if i < j and x.dtype == y.dtype
    ]
    if not pairs:
        return None
    i, j = case.choose(pairs)
    inputs = list(case.inputs)
    size = max(x.untyped_storage().nbytes() for x in (inputs[i], inputs[j])) // inputs[i].element_size()
    base = torch.zeros(size, dtype=inputs[i].dtype, device=inputs[i].device)
    for k in (i, j):
        x = inputs[k]
        view = base.as_strided(x.shape, x.stride(), x.storage_offset())
        inputs[k] = view.detach().requires_grad_(x.requires_grad)
    return case.key(inputs=inputs)


def _other_dtype(x: torch.Tensor) -> torch.Tensor:
    dtype = {torch.float32: torch.float64, torch.float64: torch.float32, torch.int64: torch.int32}[x.dtype]
    return x.detach().to(dtype).requires_grad_(x.requires_grad)


def _other_shape(x: torch.Tensor) -> torch.Tensor:
    shape = (x.shape[0] + 1, *x.shape[1:]) if x.dim() else (2,)
    return torch.zeros(shape, dtype=x.dtype, device=x.device).requires_grad_(x.requires_grad)


def _other_strides(x: torch.Tensor) -> torch.Tensor:
    contiguous = fx_strategies._contiguous_strides(x.shape)
    strides = contiguous if x.stride() != contiguous else tuple(2 * s for s in contiguous)
    y = torch.empty_strided(x.shape, strides, dtype=x.dtype, device=x.device)
    return y.requires_grad_(x.requires_grad)


def _flip_requires_grad(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_(not x.requires_grad)


def _scalar_args(gm: torch.fx.GraphModule) -> list[tuple[int, int | str]]:
    """(node index, argument position or keyword) of every int or float literal in a call."""
    found: list[tuple[int, int | str]] = []
    for n, node in enumerate(gm.graph.nodes):
        if node.op in ("call_function", "call_method"):
            found += [(n, i) for i, a in enumerate(node.args) if type(a) in (int, float)]
            found += [(n, k) for k, a in sorted(node.kwargs.items()) if type(a) in (int, float)]
    return found


def _constant_changed(case: Case) -> tuple[Any, Any]:
    gm = case.fresh_gm()
    literals = _scalar_args(gm)
    if literals:
        n, where = case.choose(literals)
        node = list(gm.graph.nodes)[n]
        if isinstance(where, int):
            args = list(node.args)
            args[where] += 1
            node.args = tuple(args)
        else:
            node.kwargs = {**node.kwargs, where: node.kwargs[where] + 1}
        gm.recompile()
        return case.key(), case.key(gm=gm)
    # No constant in the program: compare two graphs that add different ones to an output.
    keys = []
    for constant in (1.0, 2.0):
        gm = case.fresh_gm()
        output = next(n for n in gm.graph.nodes if n.op == "output")
        first = output.args[0][0]
        with gm.graph.inserting_before(output):
            added = gm.graph.call_function(operator.add, (first, constant))
        added.meta["example_value"] = first.meta["example_value"]
        output.args = ((added, *output.args[0][1:]),)
        gm.recompile()
        keys.append(case.key(gm=gm))
    return keys[0], keys[1]


def _target_changed(case: Case) -> tuple[Any, Any]:
    gm = case.fresh_gm()
    calls = [n for n, node in enumerate(gm.graph.nodes) if node.op in ("call_function", "call_method")]
    node = list(gm.graph.nodes)[case.choose(calls)]
    if node.op == "call_function":
        node.target = torch.abs if node.target is torch.neg else torch.neg
    else:
        node.target = "abs" if node.target == "neg" else "neg"
    gm.recompile()
    return case.key(), case.key(gm=gm)


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def _matmul_precision(precision: str) -> Iterator[None]:
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def _under(make_context: Callable[[], Any]) -> Callable[[Case], Any]:
    def key(case: Case) -> Any:
        with make_context():
            return case.key()

    return key


def _is_float(x: torch.Tensor) -> bool:
    return x.is_floating_point()


def _has_dims(x: torch.Tensor) -> bool:
    return x.dim() > 0


# torch.use_deterministic_algorithms also sets torch._inductor.config.deterministic
# (torch 2.13's write_are_deterministic_algorithms_enabled), so that knob moves two components.
_DETERMINISTIC_COMPONENTS = frozenset(
    {"runtime", "inductor"}
    if getattr(torch._inductor.config, "write_are_deterministic_algorithms_enabled", False)
    else {"runtime"}
)


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One factor of a key, changed alone; ``expected`` names the components that must change.

    ``changed(case)`` returns the changed key, or a (base, changed) pair when the
    change needs a base of its own, or None when the program has nothing to change.
    """

    name: str
    expected: frozenset[str]
    changed: Callable[[Case], Any]


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("input dtype", frozenset({"inputs"}), lambda c: _replace_input(c, lambda x: True, _other_dtype)),
    Mutation("input shape", frozenset({"inputs"}), lambda c: _replace_input(c, lambda x: True, _other_shape)),
    Mutation("input strides", frozenset({"inputs"}), lambda c: _replace_input(c, _has_dims, _other_strides)),
    Mutation(
        "requires_grad", frozenset({"inputs"}), lambda c: _replace_input(c, _is_float, _flip_requires_grad)
    ),
    Mutation("input aliasing", frozenset({"inputs"}), _aliased_inputs),
    Mutation("graph constant", frozenset({"graph"}), _constant_changed),
    Mutation("graph target", frozenset({"graph"}), _target_changed),
    Mutation("grad mode", frozenset({"runtime"}), _under(torch.no_grad)),
    Mutation(
        "autocast",
        frozenset({"runtime"}),
        _under(lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
    ),
    Mutation("deterministic algorithms", _DETERMINISTIC_COMPONENTS, _under(_deterministic)),
    Mutation("default dtype", frozenset({"runtime"}), _under(lambda: _default_dtype(torch.float64))),
    Mutation("matmul precision", frozenset({"runtime"}), _under(lambda: _matmul_precision("medium"))),
    Mutation(
        "inductor config",
        frozenset({"inductor"}),
        _under(lambda: torch._inductor.config.patch(max_autotune=True)),
    ),
    Mutation(
        "functorch config",
        frozenset({"functorch"}),
        _under(lambda: torch._functorch.config.patch(activation_memory_budget=0.5)),
    ),
    Mutation(
        "cache key tag",
        frozenset({"tag"}),
        _under(lambda: torch.compiler.config.patch(cache_key_tag="x")),
    ),
    Mutation("aot_config", frozenset({"aot_config"}), lambda c: c.key(aot=aot_config(num_params_buffers=1))),
    Mutation("fx_config", frozenset({"fx_config"}), lambda c: c.key(fx=fx_config(cudagraphs=True))),
)


@instantiate_parametrized_tests
class TestOneFactorOneComponent(unittest.TestCase):
    def check_mutations(self, case: Case, mutations: Sequence[Mutation]) -> None:
        base = case.key()
        self.assertEqual(case.key().key, base.key, "the same graph and inputs gave two keys")
        failures = []
        for mutation in mutations:
            result = mutation.changed(case)
            if result is None:
                continue
            before, after = result if isinstance(result, tuple) else (base, result)
            changed = {n for n, v in after.components.items() if before.components.get(n) != v}
            if after.key == before.key or changed != mutation.expected:
                failures.append(
                    f"{mutation.name}: key {'unchanged' if after.key == before.key else 'changed'}, "
                    f"components changed {sorted(changed)}, expected {sorted(mutation.expected)}"
                )
        self.assertFalse(failures, "\n".join(failures) + "\n" + case.program.describe())

    @parametrize("device", DEVICES)
    @settings(max_examples=KEY_EXAMPLES)
    @given(program=fx_programs(), data=st.data())
    def test_one_factor_changes_its_component(self, device: str, program: Program, data: Any) -> None:
        self.check_mutations(Case.of(program, device, data), MUTATIONS)

    @parametrize("device", DEVICES)
    @settings(max_examples=KEY_EXAMPLES)
    @given(first=fx_programs(), second=fx_programs())
    def test_different_programs_have_different_keys(self, device: str, first: Program, second: Program) -> None:
        # Same text and inputs is the same program; anything else must not share a key.
        assume((first.inputs, first.source()) != (second.inputs, second.source()))
        a, b = Case.of(first, device).key(), Case.of(second, device).key()
        self.assertNotEqual(a.key, b.key, f"one key for two programs:\n{first.describe()}\n{second.describe()}")

    @unittest.skipIf(not HAS_CUDA, "needs a CUDA device")
    @settings(max_examples=max(1, KEY_EXAMPLES // 5))
    @given(program=fx_programs())
    def test_device_changes_key(self, program: Program) -> None:
        case = Case.of(program, "cpu")
        moved = [x.detach().to("cuda").requires_grad_(x.requires_grad) for x in case.inputs]
        mutation = Mutation("device", frozenset({"inputs", "hardware"}), lambda c: c.key(inputs=moved))
        self.check_mutations(case, [mutation])


# ---------------------------------------------------------------------------
# Names do not matter; the key leaves the graph alone
# ---------------------------------------------------------------------------


def _renamed(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """An isomorphic copy of ``gm`` in which every placeholder and intermediate has a new name."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for i, node in enumerate(gm.graph.nodes):
        if node.op == "placeholder":
            new = graph.placeholder(f"renamed_arg_{len(env)}")
            new.meta = dict(node.meta)
        elif node.op == "output":
            graph.output(torch.fx.map_arg(node.args[0], env.__getitem__))
            continue
        else:
            new = graph.node_copy(node, env.__getitem__)
            new._rename(f"tmp_{i}_{node.name[::-1]}")
        env[node] = new
    return torch.fx.GraphModule(gm, graph)


def _snapshot(gm: torch.fx.GraphModule) -> tuple[str, str, list[tuple[str, list[str]]]]:
    return gm.code, str(gm.graph), [(n.name, sorted(n.meta)) for n in gm.graph.nodes]


@slow
@instantiate_parametrized_tests
class TestNamesDoNotMatter(SameResultsTestCase):
    @parametrize("device", DEVICES)
    @settings(max_examples=KEY_EXAMPLES)
    @given(program=fx_programs())
    def test_renamed_graph_keeps_its_key(self, device: str, program: Program) -> None:
        case = Case.of(program, device)
        renamed = _renamed(case.gm)
        self.assertNotEqual(renamed.code, case.gm.code)
        self.assertNotEqual([n.name for n in renamed.graph.nodes][:-1], [n.name for n in case.gm.graph.nodes][:-1])
        # Isomorphic: same results on the same inputs.
        self.assert_same(
            RunResult(list(renamed(*program.make_inputs(device))), None),
            RunResult(list(case.gm(*program.make_inputs(device))), None),
            exact=True,
        )

        before = _snapshot(case.gm), _snapshot(renamed)
        key, renamed_key = case.key(), case.key(gm=renamed)
        self.assertEqual((_snapshot(case.gm), _snapshot(renamed)), before, "computing a key changed the graph")
        changed = sorted(n for n, v in renamed_key.components.items() if key.components[n] != v)
        self.assertEqual(renamed_key.key, key.key, f"renaming changed {changed}\n{case.gm.code}\n{renamed.code}")

    @parametrize("device", DEVICES)
    @settings(max_examples=KEY_EXAMPLES)
    @given(program=seeded_programs())
    def test_fake_inputs_give_the_key_of_real_inputs(self, device: str, program: Program) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode

        case = Case.of(program, device)
        mode = FakeTensorMode()
        fakes = [mode.from_tensor(x) for x in case.inputs]
        self.assertEqual(case.key(inputs=fakes).key, case.key().key)
