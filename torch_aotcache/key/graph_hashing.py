"""
Canonical, process-independent encodings of the things a key is made of.

Note [Canonical graph encoding]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Upstream pickles the graph module (regenerating its Python code) to hash it;
that costs about 0.1 ms a node, depends on node names, and reaches Python's
``hash()`` through sets in metadata.  We walk the graph once instead and write
one line per node:

* nodes are referred to by their position, never their name, so renaming
  placeholders or intermediate nodes keeps the key;
* targets are written as qualified names (``aten.add.Tensor``,
  ``operator.getitem``, ``torch.nn.functional.gelu``);
* every argument is encoded by :func:`encode_value`, which knows a closed set
  of types and raises :class:`Unkeyable` for anything else.  An unknown object
  is a bypass, not a guess: a miss costs seconds, a false hit a wrong answer;
* sets and dicts are written in sorted order, so ``PYTHONHASHSEED`` cannot
  reach a key;
* ``get_attr`` tensors that are parameters or buffers are lifted to inputs by
  AOTAutograd, so only their metadata counts; any other tensor attribute is a
  constant baked into the compiled code, so its *values* count too;
* sub-graphs (higher-order operators, saved-tensor hooks) are encoded
  recursively;
* of node metadata, only the fields that change what AOTAutograd and Inductor
  produce are kept (recompute tags, annotations); stack traces and Dynamo's
  bookkeeping are not;
* an autocast region's entry also carries the state the region resolves to
  (Note [Autocast regions]);
* a graph that calls scaled-dot-product attention or holds an
  ``sdpa_kernel`` block ends with the attention backends enabled around it
  (the block's own list and the restore at its exit are constants of the
  graph), so another backend list misses and the same one hits;
* the operators the graph calls are collected for the ``ops`` component
  (Note [Registered operators in the key] in key/registered_ops.py).

Note [Autocast regions]
~~~~~~~~~~~~~~~~~~~~~~~
Dynamo writes ``with torch.autocast(...)`` (and the decorator form, and the
deprecated ``torch.cpu.amp``/``torch.cuda.amp`` spellings) into the graph as
``_enter_autocast(device_type, dtype, enabled, cache_enabled)`` and
``_exit_autocast(<enter node>)``; the ``wrap_with_autocast`` higher-order
operator takes the same four arguments before its body.  Those arguments are
constants and are encoded by value like any other.  But they are what the
user wrote, not what AOTAutograd traces under: ``dtype=None`` becomes
``torch.get_autocast_dtype(device)`` and ``cache_enabled=None`` becomes
``torch.is_autocast_cache_enabled()`` when the region is entered, at trace
time, and ``enabled`` is turned off where the device cannot autocast (CUDA
without a GPU) or the dtype is not supported there.  The per-device autocast
dtype is process state that the ``runtime`` component only records for the
devices where autocast is on, so a region written without a dtype would
otherwise compile to fp16 or bf16 under one key.  Each such node's line
therefore ends with the region's *resolved* state (device, dtype, enabled,
cache), computed as ``torch.autocast`` itself computes it; a region whose
arguments do not resolve (an unknown device) is a bypass.  The ambient state
(autocast entered outside the compiled function) is the ``runtime``
component's.
"""

from __future__ import annotations

import enum
import hashlib
import math
import operator
import types
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.fx


class Unkeyable(Exception):
    """A value we cannot encode canonically; the graph bypasses the cache."""


def digest(text: str | bytes, size: int = 16) -> str:
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=size).hexdigest()


def qualified_name(obj: Any) -> str:
    if isinstance(obj, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(obj)
    if isinstance(obj, torch._ops.HigherOrderOperator):
        return "hop." + obj.name()
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is None:
        raise Unkeyable(f"object of type {type(obj).__qualname__} has no name")
    if module is None:
        self_obj = getattr(obj, "__self__", None)
        if self_obj is not None and isinstance(self_obj, types.ModuleType):
            module = self_obj.__name__
        elif self_obj is not None:
            module = qualified_name(type(self_obj))
        else:
            module = "?"
    return f"{module}.{name}"


_SIMPLE_TYPES: tuple[type, ...] = (
    torch.dtype,
    torch.device,
    torch.layout,
    torch.memory_format,
)


def tensor_metadata(t: torch.Tensor) -> str:
    """Metadata of a tensor that compiled code specializes on (no values)."""
    from torch._subclasses.fake_tensor import FakeTensor

    typ = type(t)
    if typ is torch.nn.Parameter or typ is FakeTensor:
        typ = torch.Tensor
    parts = [
        "T" if typ is torch.Tensor else "T:" + qualified_name(typ),
        str(t.dtype),
        str(t.device),
        str(t.layout),
        "rg" if t.requires_grad else "nrg",
    ]
    if t.layout == torch.strided:
        parts.append("shape=" + ",".join(_size(s) for s in t.shape))
        parts.append("stride=" + ",".join(_size(s) for s in t.stride()))
        parts.append("off=" + _size(t.storage_offset()))
    else:
        parts.append("shape=" + ",".join(_size(s) for s in t.shape))
    flags = []
    if t.is_conj():
        flags.append("conj")
    if t.is_neg():
        flags.append("neg")
    if t.is_inference():
        flags.append("inference")
    if not t.is_leaf:
        flags.append("nonleaf")
    if flags:
        parts.append("+".join(flags))
    return "|".join(parts)


def _size(s: Any) -> str:
    if isinstance(s, int):
        return str(s)
    if isinstance(s, torch.SymInt):
        node = s.node
        if node.is_nested_int():
            return "nested"
        return "s:" + str(node.expr)
    return "?" + type(s).__name__


def tensor_values_digest(t: torch.Tensor) -> str:
    """Digest of a real tensor's values (for constants baked into code)."""
    from torch._subclasses.fake_tensor import is_fake

    if is_fake(t) or t.device.type == "meta":
        raise Unkeyable("constant tensor attribute without values")
    # clone() gives the data a storage of its own (a view's storage is shared).
    data = t.detach().to("cpu").contiguous().clone()
    return digest(str(data.dtype) + "|" + ",".join(map(str, data.shape))) + digest(
        bytes(data.untyped_storage())
    )


def encode_value(value: Any, ref: Callable[[torch.fx.Node], str] | None = None) -> str:
    """A canonical string for an FX argument or config value.

    ``ref`` names FX nodes (by position).  Raises :class:`Unkeyable` for any
    value whose identity we cannot write down exactly.
    """
    if value is None or value is Ellipsis:
        return repr(value)
    typ = type(value)
    if typ is bool or typ is int or typ is str:
        return repr(value)
    if typ is float:
        if math.isnan(value):
            return "nan"
        return repr(value)
    if typ is complex:
        return repr(value)
    if isinstance(value, torch.fx.Node):
        if ref is None:
            raise Unkeyable("node outside a graph")
        return ref(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        inner = ",".join(encode_value(v, ref) for v in value)
        return f"{qualified_name(typ)}({inner})"
    if isinstance(value, (list, tuple)):  # FX's immutable_list too, and torch.Size
        inner = ",".join(encode_value(v, ref) for v in value)
        return ("[%s]" if isinstance(value, list) else "(%s)") % inner
    if isinstance(value, dict):
        items = sorted(
            (encode_value(k, ref), encode_value(v, ref)) for k, v in value.items()
        )
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):
        return "set{" + ",".join(sorted(encode_value(v, ref) for v in value)) + "}"
    if isinstance(value, _SIMPLE_TYPES):
        return f"{typ.__name__}:{value}"
    if isinstance(value, slice):
        return "slice(%s,%s,%s)" % (
            encode_value(value.start, ref),
            encode_value(value.stop, ref),
            encode_value(value.step, ref),
        )
    if isinstance(value, enum.Enum):
        return f"{qualified_name(typ)}.{value.name}"
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return f"sym:{value.node.expr}"
    if isinstance(value, torch.Tensor):
        return "tensor(" + tensor_metadata(value) + ")"
    if isinstance(value, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return "op:" + str(value)
    if isinstance(value, torch._ops.HigherOrderOperator):
        return "hop:" + value.name()
    if isinstance(value, type):
        return "type:" + qualified_name(value)
    if isinstance(value, torch.fx.GraphModule):
        return "graph:" + GraphEncoder(value).digest()
    # Objects that name their own identity.
    cache_hash = getattr(value, "cache_hash", None)
    if isinstance(cache_hash, str):
        return f"hashed:{qualified_name(typ)}:{cache_hash}"
    uuid = getattr(value, "uuid", None)
    if callable(uuid) and not isinstance(value, type):
        try:
            u = uuid()
        except Exception as e:  # noqa: BLE001
            raise Unkeyable(f"{qualified_name(typ)}.uuid() failed: {e}") from None
        if u is None:
            raise Unkeyable(f"{qualified_name(typ)}.uuid() returned None")
        return f"uuid:{qualified_name(typ)}:{encode_value(u)}"
    if isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return "builtin:" + qualified_name(value)
    if typ in _SAFE_CALLABLE_TYPES or (typ.__hash__ is not None and _safe_function(value)):
        return "fn:" + qualified_name(value)
    raise Unkeyable(f"cannot key a value of type {qualified_name(typ)}")


def _safe_function(value: Any) -> bool:
    try:
        return value in _SAFE_FUNCTIONS
    except TypeError:  # a __hash__ that refuses (a dataclass with eq and no frozen)
        return False


# Functions whose behaviour is fixed by the torch version, so their name is
# enough to key them when they appear as *arguments* (targets are checked
# separately in autograd_cache.check_node_safe).
_SAFE_FUNCTIONS: frozenset[Any] = frozenset(
    v for v in vars(operator).values() if callable(v) and not isinstance(v, type)
)
_SAFE_CALLABLE_TYPES: tuple[type, ...] = ()

# Node metadata that changes what AOTAutograd or Inductor produce.
_META_KEYS: tuple[str, ...] = (
    "recompute",
    "ac_graph_id",
    "custom",
    "partitioner_tag",
    "is_backward",
    # A function wrapped with torch.fx.wrap is opaque; the user's hash of it
    # (saved-tensor hooks) stands for its code.
    "user_cache_hash",
)

# Selective activation checkpointing: a checkpointed region's graph module
# carries the user's ``context_fn`` (which ops are saved, which recomputed)
# in its meta.  Its code cannot be keyed; its ``cache_hash`` attribute (set by
# the user, also on a functools.partial) stands for it, and a context_fn
# without one cannot be cached.
_SAC_CONTEXT_FN = "_checkpoint_context_fn"

# Triton kernel wrappers refer to a process-local side table by index; the
# index is replaced by what it points to.
_TRITON_WRAPPERS = ("triton_kernel_wrapper_mutation", "triton_kernel_wrapper_functional")


_SCALAR_TYPES = (bool, int, str)


def _encode_args(args: Any, ref: Callable[[torch.fx.Node], str]) -> str:
    """``encode_value`` of a node's args/kwargs, with a fast path for the
    common shapes (nodes and plain scalars in a tuple; empty kwargs)."""
    typ = type(args)
    if typ is torch.fx.immutable_collections.immutable_dict or typ is dict:
        if not args:
            return "{}"
        return encode_value(args, ref)
    if typ is tuple or typ is torch.fx.immutable_collections.immutable_list:
        parts = []
        for a in args:
            ta = type(a)
            if ta is torch.fx.Node:
                parts.append(ref(a))
            elif ta in _SCALAR_TYPES:
                parts.append(repr(a))
            else:
                parts.append(encode_value(a, ref))
        return ("(%s)" if typ is tuple else "[%s]") % ",".join(parts)
    return encode_value(args, ref)


_META_SET = frozenset(_META_KEYS)
_OP_TYPES = (torch._ops.OpOverload, torch._ops.OpOverloadPacket)
# qualified_name of call_function targets, by target (operators and torch
# functions are long-lived; weak keys let a user function go).
_TARGET_NAMES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


class GraphEncoder:
    """Writes one canonical line per node of a graph module; see Note [Canonical graph encoding]."""

    def __init__(self, gm: torch.fx.GraphModule, root: torch.fx.GraphModule | None = None):
        self.gm = gm
        self.root = root if root is not None else gm
        self._index: dict[torch.fx.Node, int] = {}
        self.triton_sources: list[str] = []
        # The operators the graph calls or names, for the ``ops`` component
        # (Note [Registered operators in the key] in key/registered_ops.py).
        self.ops: set[Any] = set()
        # Whether it (or a sub-graph) calls attention (the backends around it are keyed).
        self.calls_attention = False
        self._lifted: set[str] | None = None

    def _ref(self, node: torch.fx.Node) -> str:
        try:
            return "%" + str(self._index[node])
        except KeyError:
            raise Unkeyable(f"node {node.name} used before it is defined") from None

    def _lifted_names(self) -> set[str]:
        if self._lifted is None:
            self._lifted = {n for n, _ in self.root.named_parameters(remove_duplicate=False)}
            self._lifted |= {n for n, _ in self.root.named_buffers(remove_duplicate=False)}
        return self._lifted

    def _encode_attr(self, target: str) -> str:
        try:
            obj: Any = self.gm
            for atom in target.split("."):
                obj = getattr(obj, atom)
        except AttributeError:
            raise Unkeyable(f"get_attr {target} does not resolve") from None
        if isinstance(obj, torch.fx.GraphModule):
            sub = GraphEncoder(obj, self.root)
            d = sub.digest()
            self.triton_sources.extend(sub.triton_sources)
            self.ops |= sub.ops
            self.calls_attention |= sub.calls_attention
            return "graph:" + d
        if isinstance(obj, torch.Tensor):
            meta = tensor_metadata(obj)
            if self.gm is self.root and target in self._lifted_names():
                return "param(" + meta + ")"
            return "const(" + meta + "|" + tensor_values_digest(obj) + ")"
        if isinstance(obj, torch.nn.Module):
            return "module:" + self._encode_module(obj)
        return encode_value(obj)

    def _encode_module(self, mod: torch.nn.Module) -> str:
        if isinstance(mod, torch.fx.GraphModule):
            sub = GraphEncoder(mod, self.root)
            d = sub.digest()
            self.triton_sources.extend(sub.triton_sources)
            self.ops |= sub.ops
            self.calls_attention |= sub.calls_attention
            return "graph:" + d
        parts = [qualified_name(type(mod)), mod.extra_repr()]
        for name, p in mod.named_parameters():
            parts.append(f"{name}={tensor_metadata(p)}")
        for name, b in mod.named_buffers():
            parts.append(f"{name}={tensor_metadata(b)}")
        if mod.training:
            parts.append("training")
        return digest("|".join(parts))

    def _encode_target(self, node: torch.fx.Node) -> str:
        if node.op == "call_function":
            target = node.target
            if isinstance(target, _OP_TYPES):
                self._note_op(target)
            elif isinstance(target, torch._ops.HigherOrderOperator):
                for a in node.args:
                    if isinstance(a, _OP_TYPES):
                        self._note_op(a)
            try:
                return _TARGET_NAMES[target]
            except (KeyError, TypeError):
                name = qualified_name(target)
                try:
                    _TARGET_NAMES[target] = name
                except TypeError:
                    pass
                return name
        if node.op == "call_module":
            sub = self.gm.get_submodule(node.target)  # type: ignore[arg-type]
            return self._encode_module(sub)
        return str(node.target) if node.op == "call_method" else ""

    def _note_op(self, op: Any) -> None:
        if isinstance(op, torch._ops.OpOverloadPacket):
            for name in op.overloads():
                self.ops.add(getattr(op, name))
        else:
            self.ops.add(op)

    def _encode_triton_kwargs(self, node: torch.fx.Node) -> str:
        from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

        kwargs: dict[str, Any] = dict(node.kwargs)
        kernel = kernel_side_table.get_kernel(kwargs.pop("kernel_idx"))
        source = triton_kernel_source(kernel)
        self.triton_sources.append(source)
        if "constant_args_idx" in kwargs:
            consts = kernel_side_table.get_constant_args(kwargs.pop("constant_args_idx"))
            kwargs["constant_args"] = consts
        return "kernel=" + digest(source) + ";" + encode_value(kwargs, self._ref)

    def lines(self) -> list[str]:
        out = []
        placeholder = 0
        index = self._index
        ref = self._ref
        autocast_targets = _autocast_targets()
        attention_targets = _attention_targets()
        for i, node in enumerate(self.gm.graph.nodes):
            op = node.op
            if op == "placeholder":
                line = f"{i} placeholder {placeholder} {_encode_args(node.args, ref)}"
                placeholder += 1
            else:
                target = self._encode_target(node) if op != "get_attr" else self._encode_attr(node.target)
                if op == "call_function" and getattr(node.target, "__name__", "") in _TRITON_WRAPPERS:
                    kw = self._encode_triton_kwargs(node)
                else:
                    kw = _encode_args(node.kwargs, ref)
                line = f"{i} {op} {target} {_encode_args(node.args, ref)} {kw}"
                if op == "call_function":
                    if any(node.target is t for t in autocast_targets):
                        line += " " + autocast_resolved_state(node.args)
                    elif any(node.target is t for t in attention_targets):
                        self.calls_attention = True
            meta = node.meta
            if not _META_SET.isdisjoint(meta):
                extras = [
                    f"{k}={encode_value(meta[k])}" for k in _META_KEYS if meta.get(k) is not None
                ]
                if extras:
                    line += " meta{" + ",".join(extras) + "}"
            index[node] = i
            out.append(line)
        if self.gm is self.root and self.calls_attention:
            out.append("attention_backends " + attention_backend_state())
        context_fn = getattr(self.gm, "meta", {}).get(_SAC_CONTEXT_FN)
        if context_fn is not None:
            out.append("checkpoint_context_fn " + sac_cache_hash(context_fn))
        codegen = self.gm.graph._codegen
        if type(codegen) is not torch.fx.graph.CodeGen:
            info = getattr(codegen, "pytree_info", None)
            out.append(f"codegen {qualified_name(type(codegen))} {info!s}")
        # Saved-tensor hooks are sub-graphs that no node refers to.
        for name in sorted(vars(self.gm).get("_modules", {})):
            if name.startswith("saved_tensors_hooks"):
                out.append(f"hooks {name} {self._encode_module(getattr(self.gm, name))}")
        return out

    def digest(self) -> str:
        return digest("\n".join(self.lines()))


def _attention_targets() -> tuple[Any, ...]:
    """Targets whose compiled code depends on the enabled attention backends."""
    global _ATTENTION
    if _ATTENTION is None:
        found: list[Any] = [torch._C._nn.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention]
        attention = __import__("torch.nn.attention", fromlist=["_sdpa_kernel"])
        for name in ("_sdpa_kernel", "_sdpa_kernel_variadic"):
            if hasattr(attention, name):
                found.append(getattr(attention, name))
        _ATTENTION = tuple(found)
    return _ATTENTION


_ATTENTION: tuple[Any, ...] | None = None


def attention_backend_state() -> str:
    """The scaled-dot-product-attention backends enabled outside any
    ``sdpa_kernel`` block (the block's own list is in the graph, by value;
    its exit restores this state, also in the graph)."""
    b = torch.backends.cuda
    flags = [
        ("flash", b.flash_sdp_enabled),
        ("mem_efficient", b.mem_efficient_sdp_enabled),
        ("math", b.math_sdp_enabled),
        ("cudnn", getattr(b, "cudnn_sdp_enabled", None)),
        ("fp16_bf16_reduction_math", getattr(b, "fp16_bf16_reduction_math_sdp_allowed", None)),
    ]
    state = ",".join(f"{name}={fn()}" for name, fn in flags if fn is not None)
    priority = getattr(torch._C, "_get_sdp_priority_order", None)
    if priority is not None:
        state += ",priority=" + ",".join(str(p) for p in priority())
    return state


def sac_cache_hash(context_fn: Any) -> str:
    """The key's stand-in for a selective-checkpointing ``context_fn``."""
    cache_hash = getattr(context_fn, "cache_hash", None)
    if cache_hash is None:
        raise Unkeyable(
            "SAC context_fn does not have a cache_hash attribute: "
            "a selective activation checkpointing context_fn without one "
            "cannot be cached; set context_fn.cache_hash to a value that "
            "changes whenever the policy does (on a functools.partial, set it on "
            "the partial)"
        )
    try:
        return encode_value(cache_hash)
    except Unkeyable as e:
        raise Unkeyable(f"the cache_hash of a checkpointing context_fn: {e}") from None


def _autocast_targets() -> tuple[Any, ...]:
    """The call_function targets that open an autocast region (Note [Autocast regions])."""
    from torch._higher_order_ops.wrap import wrap_with_autocast

    return (torch.amp.autocast_mode._enter_autocast, wrap_with_autocast)


def autocast_resolved_state(args: Sequence[Any]) -> str:
    """The state an autocast region with these ``(device_type, dtype, enabled,
    cache_enabled)`` arguments runs under in this process; see Note [Autocast regions]."""
    values = list(args[:4])
    for v in values:
        if isinstance(v, torch.fx.Node) or not (
            v is None or type(v) in (str, bool) or isinstance(v, torch.dtype)
        ):
            raise Unkeyable(f"autocast region with a non-constant argument {v!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Constructing (not entering) the context manager resolves its
            # defaults and checks exactly as entering it at trace time does.
            mode = torch.amp.autocast_mode.autocast(*values)
    except Exception as e:  # noqa: BLE001 - an unknown device or dtype: no key
        raise Unkeyable(f"autocast region {values!r} does not resolve: {e}") from None
    return "autocast[%s,%s,%s,%s]" % (
        mode.device,
        mode.fast_dtype,
        getattr(mode, "_enabled", None),
        getattr(mode, "_cache_enabled", None),
    )


def triton_kernel_source(kernel: Any) -> str:
    """Source of a user Triton kernel and every JIT function it calls."""
    try:
        from triton.runtime.autotuner import Autotuner

        if isinstance(kernel, Autotuner):
            configs = getattr(kernel, "configs", [])
            kernel_src = triton_kernel_source(kernel.fn)
            return kernel_src + "\n#configs " + "|".join(str(c) for c in configs)
    except ImportError:
        pass
    try:
        from torch._inductor.codegen.wrapper import (
            user_defined_triton_kernel_transitive_closure_source_code,
        )

        return user_defined_triton_kernel_transitive_closure_source_code(kernel)
    except Exception as e:  # noqa: BLE001
        src = getattr(kernel, "src", None)
        if isinstance(src, str):
            return src
        raise Unkeyable(f"cannot read the source of Triton kernel {kernel}: {e}") from None


def encode_inputs(example_inputs: Sequence[Any]) -> list[str]:
    """One canonical line per example input, with storage aliasing between them."""
    lines = []
    storages: dict[int, int] = {}
    for i, x in enumerate(example_inputs):
        if isinstance(x, torch.Tensor):
            line = "tensor " + tensor_metadata(x)
            from torch.utils._python_dispatch import is_traceable_wrapper_subclass

            if is_traceable_wrapper_subclass(x):
                line += " subclass " + subclass_digest(x)
            try:
                sid = _storage_identity(x)
            except Exception:  # noqa: BLE001 - aliasing unknown; no line
                sid = None
            if sid is not None:
                first = storages.setdefault(sid, i)
                if first != i:
                    line += f" aliases {first}"
        elif isinstance(x, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            line = f"{type(x).__name__} {x.node.expr}"
        else:
            line = type(x).__name__ + " " + encode_value(x)
        lines.append(line)
    return lines


def _storage_identity(t: torch.Tensor) -> int | None:
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(t) or t.layout != torch.strided:
        return None
    return StorageWeakRef(t.untyped_storage()).cdata


def subclass_digest(t: torch.Tensor) -> str:
    """Stable digest of a tensor subclass's metadata (sets sorted, no ``hash()``)."""
    stable = getattr(t, "_stable_hash_for_caching", None)
    if callable(stable):
        return "stable:" + str(stable())
    attrs, ctx = t.__tensor_flatten__()  # type: ignore[attr-defined]
    inner = []
    for a in attrs:
        v: Any = getattr(t, a)
        from torch.utils._python_dispatch import is_traceable_wrapper_subclass

        if is_traceable_wrapper_subclass(v):
            sub = cast(torch.Tensor, v)
            inner.append(f"{a}={tensor_metadata(sub)}/{subclass_digest(sub)}")
        else:
            inner.append(f"{a}={tensor_metadata(v)}")
    return digest(qualified_name(type(t)) + "|" + encode_value(ctx) + "|" + ";".join(inner))
