"""
Random small PyTorch programs for property tests of torch_aotcache's key.

Shaped like PyTorch's torchfuzz: a table of ops (:data:`OP_TABLE`) in which
each entry says what operand it accepts and emits the Python code that applies
it.  A builder grows a program one op at a time from a pool of values (the
inputs and every intermediate), evaluating each emitted statement on ``meta``
tensors so that the shape, dtype and ``requires_grad`` of every value are
torch's own, never a model of them.  A draw that torch rejects, or that grows
a tensor past the size limits, is pruned with ``assume``.

The builder reads its choices from a *chooser*, so one table serves two
drivers:

* :func:`fx_programs` draws through Hypothesis (``@st.composite``), which
  shrinks a failing program to a small one;
* :func:`build_program` draws from ``random.Random(seed)``, so the same integer
  seed gives the same program in any process whatever its ``PYTHONHASHSEED``
  (the cross-process key test relies on it; run this file as a script to
  print the keys of a list of seeds).

A :class:`Program` is plain Python source for ``program(x0, x1, ...)`` plus one
:class:`InputSpec` per argument, from which real inputs are made with a fixed
``torch.Generator`` seed.  ``Program.graph_module()`` gives its FX graph with
FakeTensor ``example_value`` metadata, as Dynamo leaves it, for tests that only
compute keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import linecache
import math
import random
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from hypothesis import assume
from hypothesis import strategies as st


MAX_INPUTS = 5
MAX_STEPS = 5
MAX_RANK = 4
MAX_DIM = 4
MAX_NUMEL = 128
INPUT_SEED = 0

# Scalar constants the ops may bake into the program.
CONSTANTS = (0.5, 2.0, -1.5, 3.0)


# ---------------------------------------------------------------------------
# Choosers: where the builder's decisions come from
# ---------------------------------------------------------------------------


class Rejected(Exception):
    """A random-mode draw violated an assumption; the builder starts over."""


class RandomChooser:
    """Choices from ``random.Random(seed)``: the same seed, the same program, in any process."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.rng.randrange(len(options))]

    def flag(self, p: float) -> bool:
        return self.rng.random() < p

    def assume(self, condition: bool) -> None:
        if not condition:
            raise Rejected


class DrawChooser:
    """Choices drawn through Hypothesis; each shrinks towards the simpler option."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(list(options)))

    def flag(self, p: float) -> bool:
        # Shrinks to 0, i.e. to False: the unusual option is the True one.
        return self.draw(st.integers(0, 99)) >= round(100 * (1 - p))

    def assume(self, condition: bool) -> None:
        assume(condition)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = []
    acc = 1
    for size in reversed(shape):
        strides.append(acc)
        acc *= max(size, 1)
    return tuple(reversed(strides))


@dataclasses.dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype
    requires_grad: bool
    noncontiguous: bool

    def make(self, generator: torch.Generator | None, device: str | torch.device) -> torch.Tensor:
        """A tensor of this spec; values from ``generator`` (None on the meta device)."""
        base_shape = list(self.shape)
        layout = None
        if self.noncontiguous:
            rank = len(self.shape)
            if rank >= 2 and self.shape[-1] > 1 and self.shape[-2] > 1:
                layout = "transpose"
                base_shape[-1], base_shape[-2] = base_shape[-2], base_shape[-1]
            else:
                layout = max(range(rank), key=lambda d: (self.shape[d] > 1, -d))
                base_shape[layout] *= 2
        if device == "meta" or str(device) == "meta":
            base = torch.empty(base_shape, dtype=self.dtype, device="meta")
        elif self.dtype.is_floating_point:
            base = torch.randn(base_shape, generator=generator, dtype=self.dtype).to(device)
        else:
            base = torch.randint(-4, 5, base_shape, generator=generator, dtype=self.dtype).to(device)
        if layout == "transpose":
            t = base.transpose(-1, -2)
        elif layout is not None:
            index = [slice(None)] * len(base_shape)
            index[layout] = slice(None, None, 2)
            t = base[tuple(index)]
        else:
            t = base
        return t.detach().requires_grad_(self.requires_grad)

    def describe(self) -> str:
        parts = [str(self.dtype).replace("torch.", ""), "x".join(map(str, self.shape)) or "scalar"]
        if self.requires_grad:
            parts.append("requires_grad")
        if self.noncontiguous:
            parts.append("non-contiguous")
        return " ".join(parts)


def make_inputs(
    specs: Sequence[InputSpec], device: str | torch.device = "cpu", seed: int = INPUT_SEED
) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [spec.make(generator, device) for spec in specs]


# ---------------------------------------------------------------------------
# The op table
# ---------------------------------------------------------------------------


def is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point()


def any_tensor(t: torch.Tensor) -> bool:
    return True


Predicate = Callable[[torch.Tensor], bool]


def rank_at_least(n: int, pred: Predicate = any_tensor) -> Predicate:
    return lambda t: t.dim() >= n and pred(t)


@dataclasses.dataclass(frozen=True)
class Op:
    """One entry of the op table.

    ``accepts`` says which values may be the first operand; ``emit(b, x, t,
    out)`` returns the statements that compute ``out`` from the value named
    ``x`` (whose meta tensor is ``t``), drawing parameters, second operands and
    new inputs from the builder ``b``.
    """

    name: str
    kind: str
    accepts: Callable[[torch.Tensor], bool]
    emit: Callable[[Builder, str, torch.Tensor, str], list[str]]

    def __repr__(self) -> str:
        return f"Op({self.name})"


def _expr(template: str) -> Callable[[Builder, str, torch.Tensor, str], list[str]]:
    return lambda b, x, t, out: [f"{out} = " + template.format(x=x)]


def _with_dim(template: str) -> Callable[[Builder, str, torch.Tensor, str], list[str]]:
    def emit(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
        return [f"{out} = " + template.format(x=x, d=b.dim_of(t), k=b.c.flag(0.3))]

    return emit


def _with_const(template: str) -> Callable[[Builder, str, torch.Tensor, str], list[str]]:
    def emit(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
        return [f"{out} = " + template.format(x=x, c=b.constant(t))]

    return emit


def _binary(template: str) -> Callable[[Builder, str, torch.Tensor, str], list[str]]:
    def emit(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
        y = b.broadcastable_operand(t)
        return [f"{out} = " + template.format(x=x, y=y)]

    return emit


def _clamp(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    lo = b.c.choice((-1.0, -0.5, 0.0))
    return [f"{out} = torch.clamp({x}, min={lo}, max={lo + b.c.choice((0.5, 1.0, 2.0))})"]


def _softmax(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    return [f"{out} = F.softmax({x}, dim={b.dim_of(t)})"]


def _cast(dtype: str) -> Callable[[Builder, str, torch.Tensor, str], list[str]]:
    return lambda b, x, t, out: [f"{out} = {x}.to(torch.{dtype})"]


def _matmul(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    w = b.new_input((t.shape[-1], b.c.integer(1, MAX_DIM)), dtype=t.dtype)
    return [f"{out} = torch.matmul({x}, {w})"]


def _matmul_square(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    return [f"{out} = torch.matmul({x}, {x})"]


def _linear(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    features = b.c.integer(1, MAX_DIM)
    w = b.new_input((features, t.shape[-1]), dtype=t.dtype)
    if b.c.flag(0.5):
        bias = b.new_input((features,), dtype=t.dtype)
        return [f"{out} = F.linear({x}, {w}, {bias})"]
    return [f"{out} = F.linear({x}, {w})"]


def _reshape(method: str) -> Callable[[Builder, str, torch.Tensor, str], list[str]]:
    def emit(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
        rest = t.numel()
        rank = b.c.integer(1, 3)
        sizes = []
        for _ in range(rank - 1):
            sizes.append(b.c.choice([d for d in range(1, rest + 1) if rest % d == 0]))
            rest //= sizes[-1]
        sizes.append(-1 if b.c.flag(0.5) else rest)
        return [f"{out} = {x}.{method}({', '.join(map(str, sizes))})"]

    return emit


def _transpose(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    d0 = b.dim_of(t)
    d1 = (d0 + b.c.integer(1, t.dim() - 1)) % t.dim()
    return [f"{out} = torch.transpose({x}, {d0}, {d1})"]


def _permute(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    perm = list(range(t.dim()))
    for i in range(len(perm) - 1, 0, -1):
        j = b.c.integer(0, i)
        perm[i], perm[j] = perm[j], perm[i]
    return [f"{out} = {x}.permute({', '.join(map(str, perm))})"]


def _unsqueeze(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    return [f"{out} = torch.unsqueeze({x}, {b.c.integer(0, t.dim())})"]


def _flatten(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    return [f"{out} = torch.flatten({x}, {b.dim_of(t)})"]


def _slice(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    dims = [d for d in range(t.dim()) if t.shape[d] > 1]
    d = b.c.choice(dims)
    start = b.c.integer(0, t.shape[d] - 2)
    stop = b.c.integer(start + 1, t.shape[d])
    index = [":"] * d + [f"{start}:{stop}"]
    return [f"{out} = {x}[{', '.join(index)}]"]


def _cat(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    d = b.dim_of(t)
    shape = list(t.shape)
    shape[d] = b.c.integer(1, 2)

    def fits(u: torch.Tensor) -> bool:
        return u.dim() == t.dim() and all(u.shape[i] == t.shape[i] for i in range(t.dim()) if i != d)

    y = b.operand(fits, lambda: b.new_input(tuple(shape), dtype=t.dtype))
    return [f"{out} = torch.cat([{x}, {y}], dim={d})"]


def _inplace_scalar(method: str) -> Callable[[Builder, str, torch.Tensor, str], list[str]]:
    def emit(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
        return [f"{out} = {x}.clone()", f"{out}.{method}({b.constant(t)})"]

    return emit


def _inplace_tensor(method: str) -> Callable[[Builder, str, torch.Tensor, str], list[str]]:
    def emit(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
        y = b.broadcastable_operand(t, into=True)
        return [f"{out} = {x}.clone()", f"{out}.{method}({y})"]

    return emit


def _relu_(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    return [f"{out} = {x}.clone()", f"{out}.relu_()"]


def _fill_slice(b: Builder, x: str, t: torch.Tensor, out: str) -> list[str]:
    # An in-place op through a view (what ``out[..., 0] = c`` does; FX cannot trace item assignment).
    return [f"{out} = {x}.clone()", f"{out}.select(-1, 0).fill_({b.constant(t)})"]


OP_TABLE: tuple[Op, ...] = (
    # Pointwise unary.
    Op("sin", "unary", is_float, _expr("torch.sin({x})")),
    Op("cos", "unary", is_float, _expr("torch.cos({x})")),
    Op("exp", "unary", is_float, _expr("torch.exp({x})")),
    Op("tanh", "unary", is_float, _expr("torch.tanh({x})")),
    Op("relu", "unary", is_float, _expr("torch.relu({x})")),
    Op("sigmoid", "unary", is_float, _expr("torch.sigmoid({x})")),
    Op("gelu", "unary", is_float, _expr("F.gelu({x})")),
    Op("leaky_relu", "unary", is_float, _expr("F.leaky_relu({x}, 0.1)")),
    Op("sqrt_abs", "unary", is_float, _expr("torch.sqrt({x}.abs() + 1)")),
    Op("square", "unary", is_float, _expr("{x} ** 2")),
    Op("clamp", "unary", is_float, _clamp),
    Op("neg", "unary", any_tensor, _expr("torch.neg({x})")),
    Op("abs", "unary", any_tensor, _expr("torch.abs({x})")),
    Op("add_scalar", "unary", any_tensor, _with_const("{x} + {c}")),
    Op("mul_scalar", "unary", any_tensor, _with_const("{x} * {c}")),
    # Casts: ints become floats, float32 becomes float64 (mixed dtypes).
    Op("to_float32", "cast", lambda t: t.dtype != torch.float32, _cast("float32")),
    Op("to_float64", "cast", lambda t: t.dtype == torch.float32, _cast("float64")),
    # Pointwise binary, the second operand broadcastable to the first.
    Op("add", "binary", any_tensor, _binary("{x} + {y}")),
    Op("sub", "binary", any_tensor, _binary("torch.sub({x}, {y})")),
    Op("mul", "binary", any_tensor, _binary("{x} * {y}")),
    Op("div_nonzero", "binary", is_float, _binary("{x} / ({y}.abs() + 1)")),
    Op("maximum", "binary", any_tensor, _binary("torch.maximum({x}, {y})")),
    Op("where", "binary", is_float, _binary("torch.where({x} > 0, {x}, {y})")),
    # Reductions.
    Op("sum_dim", "reduction", rank_at_least(1), _with_dim("torch.sum({x}, {d}, keepdim={k})")),
    Op("mean_dim", "reduction", rank_at_least(1, is_float), _with_dim("{x}.mean({d}, keepdim={k})")),
    Op("amax", "reduction", rank_at_least(1, is_float), _with_dim("torch.amax({x}, {d}, keepdim={k})")),
    Op("sum_all", "reduction", any_tensor, _expr("{x}.sum()")),
    Op("softmax", "reduction", rank_at_least(1, is_float), _softmax),
    # Matrix products, against a new weight input or the value itself.
    Op("matmul", "matmul", rank_at_least(1, is_float), _matmul),
    Op("linear", "matmul", rank_at_least(1, is_float), _linear),
    Op(
        "matmul_square",
        "matmul",
        lambda t: t.dim() >= 2 and is_float(t) and t.shape[-1] == t.shape[-2],
        _matmul_square,
    ),
    # Views and layout changes.
    Op("reshape", "view", any_tensor, _reshape("reshape")),
    Op("view", "view", any_tensor, _reshape("view")),
    Op("transpose", "view", rank_at_least(2), _transpose),
    Op("permute", "view", rank_at_least(2), _permute),
    Op("t", "view", lambda t: t.dim() == 2, _expr("{x}.t()")),
    Op("unsqueeze", "view", lambda t: t.dim() < MAX_RANK, _unsqueeze),
    Op("flatten", "view", rank_at_least(1), _flatten),
    Op("slice", "view", lambda t: any(s > 1 for s in t.shape), _slice),
    Op("contiguous", "view", any_tensor, _expr("{x}.contiguous()")),
    # Concatenation.
    Op("cat", "cat", rank_at_least(1), _cat),
    # In-place ops on a fresh intermediate.
    Op("add_", "inplace", any_tensor, _inplace_scalar("add_")),
    Op("mul_", "inplace", any_tensor, _inplace_tensor("mul_")),
    Op("relu_", "inplace", is_float, _relu_),
    Op("fill_slice", "inplace", rank_at_least(1), _fill_slice),
)


# ---------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Value:
    name: str
    meta: torch.Tensor
    is_input: bool


class Builder:
    """Grows one program; every decision goes through ``self.c``."""

    def __init__(self, chooser: RandomChooser | DrawChooser) -> None:
        self.c = chooser
        self.specs: list[InputSpec] = []
        self.values: list[Value] = []
        self.body: list[str] = []
        self.ops: list[str] = []
        self.namespace: dict[str, Any] = {"torch": torch, "F": F}

    # -- parameters --------------------------------------------------------

    def dim_of(self, t: torch.Tensor) -> int:
        return self.c.integer(0, t.dim() - 1)

    def constant(self, t: torch.Tensor) -> float | int:
        value = self.c.choice(CONSTANTS)
        return value if t.is_floating_point() else int(value)

    def shape(self) -> tuple[int, ...]:
        rank = self.c.integer(1, 3)
        return tuple(self.c.integer(1, MAX_DIM) for _ in range(rank))

    # -- operands ------------------------------------------------------------

    def new_input(self, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None) -> str:
        self.c.assume(len(self.specs) < MAX_INPUTS)
        if shape is None:
            shape = self.shape()
        if dtype is None:
            # float32 first: the simplest input is what a failure shrinks to.
            dtype = self.c.choice((torch.float32, torch.float32, torch.float64, torch.int64))
        requires_grad = dtype.is_floating_point and self.c.flag(0.6)
        noncontiguous = math.prod(shape) > 1 and self.c.flag(0.3)
        spec = InputSpec(tuple(int(s) for s in shape), dtype, requires_grad, noncontiguous)
        name = f"x{len(self.specs)}"
        self.specs.append(spec)
        meta = spec.make(None, "meta")
        self.namespace[name] = meta
        self.values.append(Value(name, meta, True))
        return name

    def pick(self, pred: Callable[[torch.Tensor], bool]) -> Value | None:
        """A pool value satisfying ``pred``, the most recent one preferred; None if none does."""
        fits = [v for v in self.values if pred(v.meta)]
        if not fits:
            return None
        if len(fits) == 1 or not self.c.flag(0.4):
            return fits[-1]
        return self.c.choice(fits[:-1])

    def operand(self, pred: Callable[[torch.Tensor], bool], make_new: Callable[[], str]) -> str:
        """A pool value satisfying ``pred``, or a new input from ``make_new``."""
        if len(self.specs) < MAX_INPUTS and self.c.flag(0.5):
            return make_new()
        found = self.pick(pred)
        return found.name if found is not None else make_new()

    def broadcastable_operand(self, t: torch.Tensor, into: bool = False) -> str:
        """A second operand for ``t``; with ``into``, one that broadcasts to ``t``'s shape."""

        def fits(u: torch.Tensor) -> bool:
            try:
                shape = torch.broadcast_shapes(t.shape, u.shape)
            except RuntimeError:
                return False
            return shape == t.shape if into else math.prod(shape) <= MAX_NUMEL

        def make_new() -> str:
            shape = [1 if self.c.flag(0.3) else s for s in t.shape]
            shape = shape[self.c.integer(0, len(shape) - 1) if shape and self.c.flag(0.3) else 0 :]
            dtype = t.dtype
            if t.dtype.is_floating_point and self.c.flag(0.2):
                dtype = torch.float64 if t.dtype == torch.float32 else torch.float32
            return self.new_input(tuple(shape), dtype)

        return self.operand(fits, make_new)

    # -- steps -------------------------------------------------------------------

    def step(self, index: int) -> None:
        candidates = [op for op in OP_TABLE if any(op.accepts(v.meta) for v in self.values)]
        op = self.c.choice(candidates)
        x = self.pick(op.accepts)
        assert x is not None
        out = f"v{index}"
        statements = op.emit(self, x.name, x.meta, out)
        try:
            exec("\n".join(statements), self.namespace)
        except (RuntimeError, TypeError, IndexError, ValueError):
            self.c.assume(False)  # torch rejects this combination
        result = self.namespace[out]
        self.c.assume(
            isinstance(result, torch.Tensor)
            and result.dim() <= MAX_RANK
            and 1 <= result.numel() <= MAX_NUMEL
        )
        self.body.extend(statements)
        self.ops.append(op.name)
        self.values.append(Value(out, result, False))

    def build(self) -> Program:
        for _ in range(self.c.integer(1, 2)):
            self.new_input()
        for index in range(self.c.integer(1, MAX_STEPS)):
            self.step(index)
        computed = [v.name for v in self.values if not v.is_input]
        outputs = [computed[-1]]
        for _ in range(self.c.integer(0, min(2, len(computed) - 1))):
            extra = self.c.choice(computed[:-1])
            if extra not in outputs:
                outputs.append(extra)
        return Program(tuple(self.specs), tuple(self.body), tuple(outputs), tuple(self.ops))


# ---------------------------------------------------------------------------
# Programs
# ---------------------------------------------------------------------------


_DTYPES = {str(d): d for d in (torch.float32, torch.float64, torch.int64, torch.int32)}


@dataclasses.dataclass(frozen=True)
class Program:
    inputs: tuple[InputSpec, ...]
    body: tuple[str, ...]
    outputs: tuple[str, ...]
    ops: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def arg_names(self) -> list[str]:
        return [f"x{i}" for i in range(len(self.inputs))]

    def source(self) -> str:
        lines = [f"def program({', '.join(self.arg_names)}):"]
        lines += ["    " + s for s in self.body]
        lines.append(f"    return ({', '.join(self.outputs)},)")
        return "\n".join(lines) + "\n"

    def function(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        """A fresh Python function running the program (its source is in linecache)."""
        source = self.source()
        filename = "<fx_program %s>" % hashlib.sha1(source.encode()).hexdigest()[:12]
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace: dict[str, Any] = {"torch": torch, "F": F}
        exec(compile(source, filename, "exec"), namespace)
        return namespace["program"]

    def make_inputs(self, device: str | torch.device = "cpu", seed: int = INPUT_SEED) -> list[torch.Tensor]:
        return make_inputs(self.inputs, device, seed)

    def callable(
        self, device: str | torch.device = "cpu"
    ) -> tuple[Callable[..., Any], Callable[[], list[torch.Tensor]]]:
        """(fn, make_inputs): ``make_inputs()`` gives fresh tensors with the same values each call."""
        return self.function(), lambda: self.make_inputs(device)

    def graph_module(self, example_inputs: Sequence[torch.Tensor] | None = None) -> torch.fx.GraphModule:
        """The program's FX graph, with FakeTensor ``example_value`` metadata as Dynamo leaves it."""
        gm = torch.fx.symbolic_trace(self.function())
        if example_inputs is None:
            example_inputs = self.make_inputs()
        annotate_example_values(gm, example_inputs)
        return gm

    def describe(self) -> str:
        head = "Program" + (f" (seed {self.seed})" if self.seed is not None else "")
        lines = [head + ": " + ", ".join(self.ops)]
        for name, spec in zip(self.arg_names, self.inputs):
            lines.append(f"  {name}: {spec.describe()}")
        lines += ["  " + line for line in self.source().splitlines()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()

    def to_json(self) -> str:
        specs = [
            [list(s.shape), str(s.dtype), s.requires_grad, s.noncontiguous] for s in self.inputs
        ]
        return json.dumps(
            {"inputs": specs, "body": self.body, "outputs": self.outputs, "ops": self.ops, "seed": self.seed}
        )

    @classmethod
    def from_json(cls, text: str) -> Program:
        d = json.loads(text)
        specs = tuple(InputSpec(tuple(s[0]), _DTYPES[s[1]], s[2], s[3]) for s in d["inputs"])
        return cls(specs, tuple(d["body"]), tuple(d["outputs"]), tuple(d["ops"]), d["seed"])


def annotate_example_values(gm: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> None:
    """Set ``node.meta["example_value"]`` to a FakeTensor on every node, as Dynamo does."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    fakes = [mode.from_tensor(t) for t in example_inputs]

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            if n.op != "output":
                n.meta["example_value"] = result
            return result

    with mode:
        Recorder(gm).run(*fakes)


def build_program(seed: int, max_attempts: int = 200) -> Program:
    """The program of ``seed``: the same in every process (no ``hash()`` involved)."""
    for attempt in range(max_attempts):
        rng = random.Random(seed * 1_000_003 + attempt)
        try:
            return dataclasses.replace(Builder(RandomChooser(rng)).build(), seed=seed)
        except Rejected:
            continue
    raise RuntimeError(f"no valid program for seed {seed} in {max_attempts} attempts")


@st.composite
def fx_programs(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Program:
    """A random small program drawn from :data:`OP_TABLE`; shrinks towards fewer, simpler ops."""
    return Builder(DrawChooser(draw)).build()


def seeded_programs() -> st.SearchStrategy[Program]:
    """Programs named by a seed (:func:`build_program`), for properties that cross processes."""
    return st.integers(0, 2**32 - 1).map(build_program)


# ---------------------------------------------------------------------------
# Keys without compiling
# ---------------------------------------------------------------------------


def aot_config(**overrides: Any) -> types.SimpleNamespace:
    """A stand-in for AOTConfig with the fields the key reads, as Dynamo's compile sets them."""
    fields = dict(
        num_params_buffers=0,
        keep_inference_input_mutations=False,
        is_export=False,
        no_tangents=False,
        dynamic_shapes=False,
        aot_autograd_arg_pos_to_source=None,
        static_input_indices=[],
        enable_log=True,
        pre_dispatch=False,
        precompile_backend_id=None,
    )
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


def fx_config(**overrides: Any) -> dict[str, Any]:
    config = {"cudagraphs": False, "boxed_forward_device_index": None}
    config.update(overrides)
    return config


def program_key(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[torch.Tensor],
    aot: Any = None,
    fx: dict[str, Any] | None = None,
) -> Any:
    """torch_aotcache's KeyComputation (with component text) for a graph and its inputs."""
    from torch_aotcache.autograd_cache import describe_key

    with torch._inductor.config.patch(fx_graph_cache=True):
        return describe_key(gm, list(example_inputs), aot or aot_config(), fx or fx_config())


def keys_for_seeds(seeds: Sequence[int], device: str = "cpu") -> dict[str, dict[str, Any]]:
    """{seed: {"key": ..., "components": {...}}} for the programs of ``seeds``."""
    out = {}
    for seed in seeds:
        program = build_program(seed)
        inputs = program.make_inputs(device)
        result = program_key(program.graph_module(inputs), inputs)
        out[str(seed)] = {"key": result.key, "components": dict(result.components)}
    return out


if __name__ == "__main__":
    # python fx_strategies.py '{"seeds": [...], "device": "cpu"}' prints keys_for_seeds as JSON.
    import torch_aotcache  # noqa: F401

    request = json.loads(sys.argv[1])
    print(json.dumps(keys_for_seeds(request["seeds"], request.get("device", "cpu")), sort_keys=True))
