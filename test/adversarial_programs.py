"""
Programs for the second-process adversarial tests of newly cached constructs.

Run as a script: ``python adversarial_programs.py VARIANT CASE [CASE ...]``.
Each case builds a function in one of two variants: 0 is what the first
process compiles and saves; 1 changes one thing that matters (a backward's
constant, its code, a closure value, a global, a saved tensor, an autocast
dtype, enabled flag or device type ...).  The script compiles each case with
torch_aotcache installed, runs forward and backward, runs the same variant
eagerly, and prints one ``RESULT`` line of JSON: per case, the AOTAutograd
cache counters, whether the compiled outputs and gradients equal eager's,
and whether this variant's eager results differ from variant 0's (so that a
stale entry of variant 0 would have been caught).

Variants of a Function's code are written as source text and ``exec``'d, as
a user editing their file between two runs would change it.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import torch_aotcache  # noqa: F401  (installs the cache)

import torch
from torch._dynamo.utils import counters


Inputs = Callable[[], list[torch.Tensor]]
Case = tuple[Callable[..., Any], Inputs]


def _inputs(*shapes: tuple[int, ...]) -> Inputs:
    def make() -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        return [torch.randn(*s, generator=g).requires_grad_(True) for s in shapes]

    return make


def _exec(source: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"torch": torch, **names}
    exec(textwrap.dedent(source), namespace)  # noqa: S102 - test programs written here
    return namespace


_FUNCTION = """
class Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward({saved})
        {ctx_attr}
        return x.sin()

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return {grad}
"""


def _function_case(saved: str = "x", ctx_attr: str = "pass", grad: str = "g * s.cos() * 2.0", **names: Any) -> Case:
    ns = _exec(_FUNCTION.format(saved=saved, ctx_attr=ctx_attr, grad=grad), **names)
    fn_cls = ns["Fn"]

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return fn_cls.apply(x @ w) * 1.5

    return f, _inputs((4, 4), (4, 4))


def bwd_constant(v: int) -> Case:
    return _function_case(grad=("g * s.cos() * 2.0", "g * s.cos() * 3.0")[v])


def bwd_code(v: int) -> Case:
    return _function_case(grad=("g * s.cos() * 2.0", "g * s.sin() * 2.0")[v])


def saved_tensor(v: int) -> Case:
    # Variant 1 saves the output instead of the input (and uses it the same way).
    saved = ("x", "x.sin()")[v]
    return _function_case(saved=saved, grad="g * s.cos() * 2.0")


def ctx_attribute(v: int) -> Case:
    return _function_case(ctx_attr="ctx.k = %s" % (2.0, 5.0)[v], grad="g * s.cos() * ctx.k")


def closure_value(v: int) -> Case:
    k = (2.0, 7.0)[v]

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            (s,) = ctx.saved_tensors
            return g * s.cos() * k

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return Fn.apply(x @ w) * 1.5

    return f, _inputs((4, 4), (4, 4))


def global_value(v: int) -> Case:
    return _function_case(grad="g * s.cos() * SCALE", SCALE=(2.0, 4.0)[v])


def default_argument(v: int) -> Case:
    helper = _exec("def helper(g, s, k=%s):\n    return g * s.cos() * k\n" % (2.0, 6.0)[v])["helper"]
    return _function_case(grad="helper(g, s)", helper=helper)


_SETUP_CONTEXT = """
class Fn(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x.sin()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward({saved})

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return g * s
"""


def setup_context(v: int) -> Case:
    fn_cls = _exec(_SETUP_CONTEXT.format(saved=("inputs[0].cos()", "output")[v]))["Fn"]

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return fn_cls.apply(x @ w) * 1.5

    return f, _inputs((4, 4), (4, 4))


_NON_DIFFERENTIABLE = """
class Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        a = x.sin()
        b = x.cos()
        {mark}
        ctx.save_for_backward(x)
        return a, b

    @staticmethod
    def backward(ctx, ga, gb):
        (x,) = ctx.saved_tensors
        gb = torch.zeros_like(x) if gb is None else gb
        return ga * x.cos() - gb * x.sin()
"""


def non_differentiable(v: int) -> Case:
    mark = ("pass", "ctx.mark_non_differentiable(b)")[v]
    fn_cls = _exec(_NON_DIFFERENTIABLE.format(mark=mark))["Fn"]

    def f(x: torch.Tensor) -> torch.Tensor:
        a, b = fn_cls.apply(x)
        return a + b * 3.0

    return f, _inputs((5,))


_ONCE = """
from torch.autograd.function import once_differentiable

class Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x.cos() * {k}
"""


def once_differentiable(v: int) -> Case:
    fn_cls = _exec(_ONCE.format(k=(2.0, 9.0)[v]))["Fn"]

    def f(x: torch.Tensor) -> torch.Tensor:
        return fn_cls.apply(x) * 1.5

    return f, _inputs((5,))


_NON_TENSOR = """
class Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin(), {n}

    @staticmethod
    def backward(ctx, g, gn):
        (x,) = ctx.saved_tensors
        return g * x.cos()
"""


def non_tensor_output(v: int) -> Case:
    fn_cls = _exec(_NON_TENSOR.format(n=(2, 5)[v]))["Fn"]

    def f(x: torch.Tensor) -> torch.Tensor:
        y, n = fn_cls.apply(x)
        return y * n

    return f, _inputs((5,))


_DIRTY = """
class Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x.mul_({k})
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, g):
        return g * {k}
"""


def mark_dirty(v: int) -> Case:
    fn_cls = _exec(_DIRTY.format(k=(2.0, 3.0)[v]))["Fn"]

    def f(x: torch.Tensor) -> torch.Tensor:
        return fn_cls.apply(x * 1.0).sin()

    return f, _inputs((5,))


def unchanged(v: int) -> Case:
    """The control: the same Function in both processes must hit."""
    return _function_case()


# --- autocast ---------------------------------------------------------------


def _region(device: str, dtype: torch.dtype | None, enabled: bool = True, cache: bool | None = None) -> Case:
    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=dtype, enabled=enabled, cache_enabled=cache):
            y = torch.mm(x, w)
        return y * 2

    return f, _inputs((8, 8), (8, 8))


def autocast_dtype(v: int) -> Case:
    return _region("cpu", (torch.bfloat16, torch.float16)[v])


def autocast_enabled(v: int) -> Case:
    return _region("cpu", torch.bfloat16, enabled=(True, False)[v])


def autocast_device(v: int) -> Case:
    # On a machine without a GPU a CUDA region is disabled: a CPU matmul in fp32.
    return _region(("cpu", "cuda")[v], torch.bfloat16)


def autocast_cache_flag(v: int) -> Case:
    return _region("cpu", torch.bfloat16, cache=(None, False)[v])


def autocast_default_dtype(v: int) -> Case:
    """A region without a dtype takes the per-device autocast dtype set outside."""
    torch.set_autocast_dtype("cpu", (torch.bfloat16, torch.float16)[v])
    return _region("cpu", None)


def autocast_nested(v: int) -> Case:
    inner = (torch.float16, None)[v]

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # Not leaves: eager autocast caches a leaf's cast by tensor, not by
        # dtype, so an inner fp16 region would reuse the outer bf16 cast in
        # eager and not in compiled code (torch's behaviour, not the cache's).
        x, w = x * 1.0, w * 1.0
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = torch.mm(x, w)
            if inner is None:
                with torch.autocast("cpu", enabled=False):
                    b = torch.mm(x.float(), w.float())
            else:
                with torch.autocast("cpu", dtype=inner):
                    b = torch.mm(x, w)
        return a, b

    return f, _inputs((8, 8), (8, 8))


def autocast_decorator(v: int) -> Case:
    dtype = (torch.bfloat16, torch.float16)[v]

    @torch.autocast("cpu", dtype=dtype)
    def inner(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.mm(x, w)

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return inner(x, w) * 2

    return f, _inputs((8, 8), (8, 8))


def autocast_ambient(v: int) -> Case:
    """Autocast entered outside the compiled function (the ``runtime`` component)."""
    dtype = (torch.bfloat16, torch.float16)[v]

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.mm(x, w) * 2

    def under(x: torch.Tensor, w: torch.Tensor, compiled: Any = None) -> torch.Tensor:
        with torch.autocast("cpu", dtype=dtype):
            return (compiled or f)(x, w)

    under.inner = f  # type: ignore[attr-defined]
    return under, _inputs((8, 8), (8, 8))


def autocast_with_function(v: int) -> Case:
    """A custom Function inside an autocast region (mixed)."""
    fn_cls = _exec(_FUNCTION.format(saved="x", ctx_attr="pass", grad="g * s.cos() * 2.0"))["Fn"]
    dtype = (torch.bfloat16, torch.float16)[v]

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=dtype):
            y = torch.mm(x, w)
        return fn_cls.apply(y)

    return f, _inputs((8, 8), (8, 8))


_CUSTOM_FWD = """
class Fn(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs={dtype})
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w.t(), x.t() @ g
"""


def autocast_custom_fwd(v: int) -> Case:
    """``torch.amp.custom_fwd``/``custom_bwd`` on a Function called in a region:
    the cast dtype changes."""
    fn_cls = _exec(_CUSTOM_FWD.format(dtype=("torch.bfloat16", "torch.float16")[v]))["Fn"]

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn_cls.apply(x, w)

    return f, _inputs((8, 8), (8, 8))


CASES: dict[str, Callable[[int], Case]] = {
    f.__name__: f
    for f in (
        bwd_constant,
        bwd_code,
        saved_tensor,
        ctx_attribute,
        closure_value,
        global_value,
        default_argument,
        setup_context,
        non_differentiable,
        once_differentiable,
        non_tensor_output,
        mark_dirty,
        unchanged,
        autocast_dtype,
        autocast_enabled,
        autocast_device,
        autocast_cache_flag,
        autocast_default_dtype,
        autocast_nested,
        autocast_decorator,
        autocast_ambient,
        autocast_with_function,
        autocast_custom_fwd,
    )
}


def _flat(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _run(fn: Callable[..., Any], inputs: list[torch.Tensor], compiled: bool) -> list[torch.Tensor]:
    inner = getattr(fn, "inner", None)
    if compiled:
        if inner is not None:
            c = torch.compile(inner)
            outs = _flat(fn(*inputs, compiled=c))
        else:
            outs = _flat(torch.compile(fn)(*inputs))
    else:
        outs = _flat(fn(*inputs))
    loss = sum(o.float().sum() for o in outs if o.requires_grad)
    loss.backward()  # type: ignore[union-attr]
    return [o.detach() for o in outs] + [x.grad for x in inputs]  # type: ignore[misc]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        # Loose enough for bf16 rounding inside compiled code (outputs and the
        # fp32 gradients computed through it); every variant pair below differs
        # in a dtype or by far more.
        if not torch.allclose(x.float(), y.float(), rtol=5e-2, atol=5e-2):
            return False
    return True


def main(argv: list[str]) -> None:
    variant = int(argv[0])
    results = {}
    for name in argv[1:]:
        torch._dynamo.reset()
        counters.clear()
        fn, make = CASES[name](variant)
        got = _run(fn, make(), compiled=True)
        counts = {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")}
        want = _run(fn, make(), compiled=False)
        base_fn, base_make = CASES[name](0)
        base = _run(base_fn, base_make(), compiled=False)
        CASES[name](variant)  # restore process state a builder set (autocast dtype)
        results[name] = {
            "counts": counts,
            "equal_to_eager": _same(got, want),
            "differs_from_variant_0": not _same(base, want),
        }
    print("RESULT " + json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
