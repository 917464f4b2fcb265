"""
Programs for the second-process tests of registered operators (Note
[Registered operators in the key] in torch_aotcache/key/registered_ops.py).

Run as a script: ``python registered_op_programs.py VARIANT OUTDIR [--stock]
[--late] CASE [CASE ...]``.  Each case registers an operator (in a namespace
of its own) through one registration API, in one of two variants: 0 is what
the first process compiles and saves; 1 changes one thing about the
registration (a mutation annotation, a backward's factor, a fake kernel's
dtype, a decomposition ...).  The script compiles each case, runs it forward
and backward, runs it eagerly, and prints one ``RESULT`` line of JSON: per
case the AOTAutograd cache counters and whether the compiled results equal
eager's.  It saves its eager results in ``OUTDIR`` and, for variant 1, says
whether they differ from variant 0's (so that a stale entry of variant 0
would have been caught).

``--stock`` leaves torch_aotcache out (torch's own AOTAutograd cache runs),
for the comparison with stock torch.  ``--late`` imports torch_aotcache
after the operators are registered.

Registered functions are written as source text and ``exec``'d, as a user
editing their file between two runs would change them.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable
from typing import Any

if __name__ == "__main__":
    _FLAGS = {a for a in sys.argv[1:] if a.startswith("--")}
else:
    _FLAGS = set()
if "--stock" not in _FLAGS and "--late" not in _FLAGS:
    import torch_aotcache  # noqa: F401  (installs the cache)

import torch
from torch._dynamo.utils import counters


# A case: (the function to compile, a maker of fresh inputs, whether to run backward).
Case = tuple[Callable[..., Any], Callable[[], list[torch.Tensor]], bool]


def _exec(source: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"torch": torch, "Tensor": torch.Tensor, **names}
    exec(textwrap.dedent(source), namespace)  # noqa: S102 - test programs written here
    return namespace


def _inputs(*shapes: tuple[int, ...], grad: bool = True) -> Callable[[], list[torch.Tensor]]:
    def make() -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        return [torch.randn(*s, generator=g).requires_grad_(grad) for s in shapes]

    return make


def _ns(case: str) -> str:
    return "tac_" + case


# ---------------------------------------------------------------------------
# custom_op and its registrations
# ---------------------------------------------------------------------------


def mutation(v: int) -> Case:
    """``mutates_args`` changes (pytorch/pytorch#187319): the op's result is
    unused; variant 1 mutates a module buffer in it."""
    ns = _exec(
        f"""
        @torch.library.custom_op("{_ns("mutation")}::acc", mutates_args={("()", "('buf',)")[v]})
        def acc(x: Tensor, buf: Tensor) -> Tensor:
            {("pass", "buf.add_(x.sum())")[v]}
            return x * 2

        @acc.register_fake
        def _(x, buf):
            return torch.empty_like(x)
        """
    )
    acc = ns["acc"]

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("buf", torch.full((4,), 8.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            acc(x, self.buf)
            return x.sin() + self.buf

    def f(x: torch.Tensor, module: Any = None) -> torch.Tensor:
        return (module or M())(x)

    f.fresh_module = M  # type: ignore[attr-defined]
    return f, _inputs((4,), grad=False), False


_AUTOGRAD_OP = """
@torch.library.custom_op("{ns}::scaled", mutates_args=())
def scaled(x: Tensor) -> Tensor:
    return x.sin()

@scaled.register_fake
def _(x):
    return torch.empty_like(x)

factor = {factor}

def backward(ctx, g):
    (x,) = ctx.saved_tensors
    return g * x.cos() * factor * ctx.extra

def setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.extra = {extra}

scaled.register_autograd(backward, setup_context=setup_context)
"""


def _scaled_case(case: str, factor: str, extra: str) -> Case:
    ns = _exec(_AUTOGRAD_OP.format(ns=_ns(case), factor=factor, extra=extra))
    op = ns["scaled"]

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return op(x @ w) * 1.5

    return f, _inputs((4, 4), (4, 4)), True


def backward(v: int) -> Case:
    """A ``register_autograd`` backward whose factor (read from the enclosing
    scope) changes (pytorch/pytorch#144344)."""
    return _scaled_case("backward", ("2.0", "3.0")[v], "1.0")


def setup_context(v: int) -> Case:
    """``setup_context`` saves another value on ctx."""
    return _scaled_case("setup_context", "2.0", ("1.0", "-1.0")[v])


def unchanged(v: int) -> Case:
    """The control: the same registrations in both processes must hit."""
    return _scaled_case("unchanged", "2.0", "1.0")


def fake(v: int) -> Case:
    """``register_fake``: the fake kernel (and the kernel) return another dtype."""
    dtype = ("torch.float32", "torch.float64")[v]
    ns = _exec(
        f"""
        @torch.library.custom_op("{_ns("fake")}::cast", mutates_args=())
        def cast(x: Tensor) -> Tensor:
            return (x * 2).to({dtype})

        @cast.register_fake
        def _(x):
            return torch.empty_like(x, dtype={dtype})
        """
    )
    op = ns["cast"]

    def f(x: torch.Tensor) -> torch.Tensor:
        return op(x).sin() + 1

    return f, _inputs((4,), grad=False), False


def vmap_rule(v: int) -> Case:
    """``register_vmap``: the batching rule, traced under ``torch.vmap``."""
    ns = _exec(
        f"""
        @torch.library.custom_op("{_ns("vmap_rule")}::twice", mutates_args=())
        def twice(x: Tensor) -> Tensor:
            return x * 2

        @twice.register_fake
        def _(x):
            return torch.empty_like(x)

        @twice.register_vmap
        def _(info, in_dims, x):
            return x * {("2", "5")[v]}, in_dims[0]
        """
    )
    op = ns["twice"]

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.vmap(op)(x) + 1

    return f, _inputs((3, 4), grad=False), False


# ---------------------------------------------------------------------------
# Low-level registrations (torch.library.Library)
# ---------------------------------------------------------------------------

_LIBS: list[Any] = []


def _library(case: str, schema: str) -> Any:
    lib = torch.library.Library(_ns(case), "DEF")
    lib.define(schema)
    _LIBS.append(lib)
    return lib


def composite(v: int) -> Case:
    """A ``CompositeImplicitAutograd`` Python kernel, decomposed at trace time."""
    lib = _library("composite", "mix(Tensor x) -> Tensor")
    ns = _exec(f"def mix(x):\n    return x * {('2', '3')[v]} + 1\n")
    lib.impl("mix", ns["mix"], "CompositeImplicitAutograd")
    op = getattr(torch.ops, _ns("composite")).mix.default

    def f(x: torch.Tensor) -> torch.Tensor:
        return op(x).cos()

    return f, _inputs((4,)), True


def library_autograd(v: int) -> Case:
    """``torch.library.register_autograd`` on an operator defined with
    ``Library.define`` (an ``Autograd`` kernel in the dispatcher)."""
    name = _ns("library_autograd") + "::sq"
    lib = _library("library_autograd", "sq(Tensor x) -> Tensor")
    lib.impl("sq", lambda x: x * x, "CompositeExplicitAutograd")
    torch.library.register_fake(name, lambda x: torch.empty_like(x), lib=lib)
    ns = _exec(
        f"""
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x * {("2", "4")[v]}

        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])
        """
    )
    torch.library.register_autograd(name, ns["backward"], setup_context=ns["setup_context"], lib=lib)
    op = getattr(torch.ops, _ns("library_autograd")).sq.default

    def f(x: torch.Tensor) -> torch.Tensor:
        return op(x.sin()) * 1.5

    return f, _inputs((4,)), True


def _scaling_op(case: str, name: str, factor: float) -> tuple[Any, Callable[..., Any]]:
    """``<case>::<name>(x) = x * factor`` defined with ``Library.define``, its
    eager kernel and fake kernel; the op, and the case's function around it."""
    lib = _library(case, f"{name}(Tensor x) -> Tensor")
    lib.impl(name, lambda x: x * factor, "CompositeExplicitAutograd")
    torch.library.register_fake(f"{_ns(case)}::{name}", lambda x: torch.empty_like(x), lib=lib)
    op = getattr(getattr(torch.ops, _ns(case)), name).default

    def f(x: torch.Tensor) -> torch.Tensor:
        return op(x) + 1

    return op, f


def py_kernel(v: int) -> Case:
    """A Python-dispatcher kernel (``OpOverload.py_impl``), run while tracing."""
    factor = (-3, 7)[v]
    op, f = _scaling_op("py_kernel", "neg3", factor)
    ns = _exec(f"def kernel(x):\n    return x * {factor}\n")
    op.py_impl(torch._C.DispatchKey.CompositeImplicitAutograd)(ns["kernel"])
    return f, _inputs((4,), grad=False), False


def decomposition(v: int) -> Case:
    """An Inductor decomposition registered for the program's operator."""
    from torch._inductor.decomposition import register_decomposition

    factor = (0.5, 0.25)[v]
    op, f = _scaling_op("decomposition", "halve", factor)
    ns = _exec(f"def halve(x):\n    return x * {factor}\n")
    register_decomposition(op)(ns["halve"])
    return f, _inputs((4,), grad=False), False


def lowering(v: int) -> Case:
    """An Inductor lowering registered for the program's operator."""
    from torch._inductor.lowering import lowerings, register_lowering

    factor = (3.0, 4.0)[v]
    op, f = _scaling_op("lowering", "triple", factor)
    ns = _exec(f"def triple(x):\n    return mul(x, {factor})\n", mul=lowerings[torch.ops.aten.mul.Tensor])
    register_lowering(op)(ns["triple"])
    return f, _inputs((4,), grad=False), False


def torch_op_override(v: int) -> Case:
    """A program's Python kernel on one of torch's own operators
    (``aten::square``, ``CompositeImplicitAutograd``): every graph that
    traces into it is keyed by it."""
    lib = torch.library.Library("aten", "IMPL")
    _LIBS.append(lib)
    ns = _exec(f"def square(x):\n    return x * x * {('1', '2')[v]}\n")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib.impl("square", ns["square"], "CompositeImplicitAutograd")

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.square.default(x) + 1

    return f, _inputs((4,), grad=False), False


CASES: dict[str, Callable[[int], Case]] = {
    f.__name__: f
    for f in (
        mutation,
        backward,
        setup_context,
        unchanged,
        fake,
        vmap_rule,
        composite,
        library_autograd,
        py_kernel,
        decomposition,
        lowering,
        torch_op_override,
    )
}
# Cases whose variant 1 changes what every graph traces into: run alone.
GLOBAL_CASES = frozenset({"torch_op_override"})


def _flat(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _run(case: Case, compiled: bool) -> list[torch.Tensor]:
    fn, make, backward_too = case
    inputs = make()
    module_cls = getattr(fn, "fresh_module", None)
    module = module_cls() if module_cls is not None else None
    call = torch.compile(fn) if compiled else fn
    outs = _flat(call(*inputs, module=module) if module is not None else call(*inputs))
    results = [o.detach() for o in outs]
    if module is not None:
        results += [b.detach().clone() for b in module.buffers()]
    if backward_too:
        sum(o.float().sum() for o in outs).backward()
        results += [x.grad for x in inputs]
    return results


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and torch.allclose(x, y, rtol=1e-4, atol=1e-5)
        for x, y in zip(a, b, strict=True)
    )


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    variant, outdir, names = int(args[0]), args[1], args[2:]
    built = {name: CASES[name](variant) for name in names}
    if "--late" in _FLAGS:
        import torch_aotcache  # noqa: F401
    results = {}
    for name, case in built.items():
        torch._dynamo.reset()
        counters.clear()
        try:
            got = _run(case, compiled=True)
            error = None
        except Exception as e:  # noqa: BLE001 - a stale entry may crash: reported
            got, error = [], f"{type(e).__name__}: {e}"[:2000]
        counts = {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")}
        want = _run(case, compiled=False)
        torch.save(want, os.path.join(outdir, f"{name}_v{variant}.pt"))
        result: dict[str, Any] = {"counts": counts, "equal_to_eager": error is None and _same(got, want)}
        if error:
            result["error"] = error
        base = os.path.join(outdir, f"{name}_v0.pt")
        if variant == 1 and os.path.exists(base):
            result["differs_from_variant_0"] = not _same(torch.load(base), want)
        results[name] = result
    print("RESULT " + json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
