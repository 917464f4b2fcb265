"""
What a program registers for operators, by content, for the key's ``ops``
component.

Note [Registered operators in the key]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Dynamo hands AOTAutograd a graph in which a custom operator is one opaque
call (``torch.ops.ns.acc.default``).  What the compile then does with it is
decided by what the program registered for that operator in this process,
none of which the graph shows: the schema's alias and mutation annotations
(AOTAutograd functionalizes what the op mutates), the autograd formula
(traced into the compiled backward), the fake kernel (the output shapes and
strides the compiled code is specialized for), Python kernels that tracing
runs (``CompositeImplicitAutograd``, ``Autograd``, ``Meta``, vmap, autocast
and ``__torch_dispatch__`` rules), user Triton kernels behind ``triton_op``.
Upstream's key names the operator only, so a process whose op mutates a
buffer loads the code of one whose op did not (pytorch/pytorch#187319), and
an edited backward is served the old one (#144344).

For every operator the graph calls outside torch's own namespaces, the
``ops`` component holds one line per *facet*, each a digest of its content:

``schema``        the schema with its annotations, and the op's tags
``fake``          the fake/abstract kernel (``register_fake``)
``autograd``      backward and setup_context (``register_autograd``)
``vmap``, ``autocast``, ``torch_dispatch`` the other rules of a ``custom_op``
``kernel:<Key>``  a Python kernel registered for a dispatch key that tracing
                  runs (``Library.impl``, ``torch.library.impl``, ``py_impl``)
``triton``        the sources of a ``triton_op``'s kernels and its Python body
``library``       for an operator defined in C++, the registration sites
                  and the identity and content of the compiled libraries
                  the process loaded outside torch

A Python callable is digested by content (:func:`callable_digest`): its
bytecode and constants, closure values, defaults, and the globals it reads,
recursively through the functions, classes and user modules they name.  A
value it cannot write down exactly makes the graph a bypass that names the
operator and facet: a miss costs seconds, a false hit a wrong result.

Torch's own operators (``aten``, ``prims``, ...) are fixed by the torch
install (the ``torch_src`` component), except where the program overrides
them: a Python kernel registered on them by code outside torch, a
decomposition or Inductor lowering registered by such code.  Those change
what *any* graph traces into, and are keyed for every graph (``override``
lines).

Python kernels live in the dispatcher, which cannot hand them back, so
``Library.impl`` is wrapped (:func:`watch_registrations`) to remember each
function as it is registered: from the end of torch's import when
torch_aotcache is imported first, else from its import.  The wrapper is not
one of ``installer/patching.py``'s patch sites, which are installed at the
first compile: registrations come before that.  A kernel on torch's
namespaces is kept only when it is the program's (its function, under its
wrappers, is not torch's code, or torch's code closes over a program's
function, as ``register_autograd`` builds it).

A kernel on torch's namespaces that neither the registrations seen nor the
snapshot of ``torch.library._impls`` taken when watching began accounts for
(registered around the wrapper) makes every graph a bypass.  A registration
made before the wrapper (torch_aotcache imported after the program registered
its kernels) is found in ``torch.library._impls`` without a function: for
an operator the graph calls it is a bypass; on ``aten`` the dispatcher's
record of where each such kernel was registered tells torch's
own from the program's (read once a process), and a program's is a bypass for
every graph.  Not covered there: a program's ``Meta`` kernel for an ``aten``
operator registered before the import (torch registers some 1,500 of its
own, too many to tell apart at a key's cost), and operators of torch's other
namespaces (``prims``, ...).  Registrations for the backend keys (``CPU``,
``CUDA``, ...) run at run time, through the dispatcher, in the process that
runs the code, so they are not keyed.  An operator a registered function
calls through ``torch.ops.ns.name`` is keyed by name only (a module attribute
chain); one it names directly (a global holding the op) is keyed by its
facets.

Rejected: keying the operator's eager implementation (``custom_op``'s body).
The compiled code calls it through the dispatcher at run time, so it is
always the current one; keying it would make every edit a miss and every
unencodable global in it a bypass, for nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .graph_hashing import digest, encode_value, qualified_name, tensor_values_digest, Unkeyable


log = logging.getLogger(__name__)


# Namespaces whose operators torch itself defines (fixed by the torch install).
TORCH_NAMESPACES = frozenset(
    {
        "aten",
        "prims",
        "prim",
        "rngprims",
        "debugprims",
        "quantized",
        "quantized_decomposed",
        "_quantized",
        "c10d",
        "_c10d_functional",
        "_c10d_functional_autograd",
        "_dtensor",
        "inductor",
        "higher_order",
        "profiler",
        "mkldnn",
        "mkl",
        "onednn",
        "_native",
        "_inductor_test",
        "symm_mem",
        "export",
        "fsdp",
        "streams",
        "_test",
        "debug_mode_ops",
        "flex_gemm",
        "coor",
        "torch_c10d",
        "sparse",
        "xnnpack",
        "_prims",
        "dist_c10d",
        "_mps",
        "cudnn",
        "vulkan_prepack",
        "aoti_torch",
    }
)

# Dispatch keys whose kernels run only when the compiled code runs (through
# the dispatcher, in the running process): not keyed.
_RUNTIME_KEYS = frozenset(
    {
        "CPU",
        "CUDA",
        "HIP",
        "XPU",
        "MPS",
        "MTIA",
        "HPU",
        "XLA",
        "Lazy",
        "IPU",
        "VE",
        "PrivateUse1",
        "PrivateUse2",
        "PrivateUse3",
        "SparseCPU",
        "SparseCUDA",
        "QuantizedCPU",
        "QuantizedCUDA",
        "BackendSelect",
    }
)


# ---------------------------------------------------------------------------
# Registrations, as they are made
# ---------------------------------------------------------------------------

_lock = threading.Lock()
# "ns/name[.overload]/DispatchKey" (torch.library._impls' spelling) -> the function.
_recorded: dict[str, Any] = {}
# torch.library._impls as it was when we started watching, or None before.
_before: frozenset[str] | None = None
_pre_overrides: list[str] | None = None
# Registrations on torch's namespaces made since, that were torch's own.
_torch_keys: set[str] = set()
_watch_failed = False


def _impl_key(lib: Any, op_name: Any, dispatch_key: str) -> str | None:
    try:
        name = lib._resolve_op_name(op_name, "impl")
    except Exception:  # noqa: BLE001 - upstream's impl reports its own error
        return None
    return f"{lib.ns}/{name.split('::')[-1]}/{dispatch_key or lib.dispatch_key}"


def _program_kernel(fn: Any) -> bool:
    """Whether a kernel registered on one of torch's operators is the
    program's: the function at the bottom of its wrappers is not torch's
    code, or torch's code closes over a program's function (as
    ``register_autograd`` builds the kernel around the program's backward)."""
    if not _torch_owned(fn):
        return True
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            v = cell.cell_contents
        except ValueError:
            continue
        values = [getattr(v, f.name) for f in dataclasses.fields(v)] if (
            dataclasses.is_dataclass(v) and not isinstance(v, type)
        ) else [v]
        if any(isinstance(x, types.FunctionType) and not _is_torch_code(x) for x in values):
            return True
    return False


def _record(lib: Any, op_name: Any, fn: Any, dispatch_key: str) -> None:
    key = _impl_key(lib, op_name, dispatch_key)
    if key is None:
        return
    # On torch's namespaces only what the program registers is kept (torch's
    # own kernels are fixed by the install); a kernel we cannot classify is
    # kept (keyed, or a bypass), never dropped.
    try:
        torch_own = key.partition("/")[0] in TORCH_NAMESPACES and not _program_kernel(fn)
    except Exception:  # noqa: BLE001 - see above
        torch_own = False
    with _lock:
        if torch_own:
            _recorded.pop(key, None)
            _torch_keys.add(key)
        else:
            _recorded[key] = fn
            _torch_keys.discard(key)


def _recording_impl(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def impl(self: Any, op_name: Any, fn: Any, dispatch_key: str = "", *args: Any, **kwargs: Any) -> Any:
        result = original(self, op_name, fn, dispatch_key, *args, **kwargs)
        try:
            _record(self, op_name, fn, dispatch_key)
        except Exception as e:  # noqa: BLE001 - a registration never fails because of us
            log.debug("torch_aotcache: cannot record a kernel registration: %s", e)
        return result

    impl.__torch_aotcache_original__ = original  # type: ignore[attr-defined]
    return impl


def watch_registrations() -> None:
    """Start remembering the Python kernels registered through
    ``torch.library.Library.impl``; idempotent.  See Note [Registered
    operators in the key]."""
    global _before
    library = sys.modules.get("torch.library")
    if library is None:
        return
    cls = library.Library
    current = vars(cls)["impl"]
    if getattr(current, "__torch_aotcache_original__", None) is not None:
        return
    try:
        cls.impl = _recording_impl(current)
    except Exception as e:  # noqa: BLE001 - importing must never fail; see overrides_lines
        global _watch_failed
        _watch_failed = True
        log.warning("torch_aotcache: cannot watch kernel registrations (%s); graphs will bypass", e)
        return
    with _lock:
        if _before is None:
            _before = frozenset(library._impls)


def unwatch_registrations() -> None:
    library = sys.modules.get("torch.library")
    if library is None:
        return
    current = vars(library.Library)["impl"]
    original = getattr(current, "__torch_aotcache_original__", None)
    if original is not None:
        library.Library.impl = original


def _impls() -> set[str]:
    import torch.library

    return torch.library._impls


# ---------------------------------------------------------------------------
# Content of Python callables
# ---------------------------------------------------------------------------

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ())) | {"builtins"}


def _is_torch_module(name: str | None) -> bool:
    return bool(name) and (name == "torch" or name.startswith("torch."))  # type: ignore[union-attr]


def _is_fixed_module(name: str | None) -> bool:
    """Modules whose contents the key names by the module alone: torch's
    (the ``torch_src`` component), Python's (the ``system`` component)."""
    if not name:
        return False
    top = name.partition(".")[0]
    return _is_torch_module(name) or top in _STDLIB


_torch_files: dict[str, bool] = {}


def _is_torch_file(filename: str) -> bool:
    try:
        return _torch_files[filename]
    except KeyError:
        found = _torch_files[filename] = os.path.abspath(filename).startswith(_TORCH_DIR)
        return found


def _is_torch_code(fn: Any) -> bool:
    code = getattr(fn, "__code__", None)
    if code is not None:
        return _is_torch_file(code.co_filename)
    return _is_torch_module(getattr(fn, "__module__", None))


class _Digester:
    """Writes callables and the values they read as text, recursively."""

    def __init__(self) -> None:
        self._seen: dict[int, str] = {}
        self._depth = 0

    def value(self, v: Any, names: frozenset[str] = frozenset()) -> str:
        """``names``: attribute names the reading code uses (for modules)."""
        op = _registered_op_of(v)
        if op is not None:
            return self.operator(op)
        if type(v).__name__ == "CustomOpDef":  # one of torch's own
            return "op:" + str(getattr(v, "_qualname", "?"))
        if isinstance(v, types.ModuleType):
            return self.module(v, names)
        if isinstance(v, (types.FunctionType, types.MethodType, functools.partial)) or (
            callable(v) and hasattr(v, "__wrapped__") and not isinstance(v, type)
        ):
            return self.callable(v)
        if isinstance(v, type):
            return self.cls(v)
        if isinstance(v, torch.Tensor):
            return "tensor:" + tensor_values_digest(v)
        if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
            inner = ",".join(self.value(x, names) for x in v)
            return ("[%s]" if isinstance(v, list) else "(%s)") % inner
        if isinstance(v, dict):
            try:
                return encode_value(v)
            except Unkeyable:
                items = sorted((encode_value(k), self.value(x, names)) for k, x in v.items())
                return "{" + ",".join(f"{k}:{x}" for k, x in items) + "}"
        triton = _triton_kernel_text(v)
        if triton is not None:
            return triton
        try:
            return encode_value(v)
        except Unkeyable:
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                fields = ",".join(f"{f.name}={self.value(getattr(v, f.name), names)}" for f in dataclasses.fields(v))
                return f"{self.cls(type(v))}({fields})"
            if isinstance(v, torch.library.Library):
                return f"library:{v.ns}:{v.kind}"
            attrs = getattr(v, "__dict__", None)
            if _is_torch_module(getattr(type(v), "__module__", None)) and isinstance(attrs, dict):
                # One of torch's holders (a fake-kernel holder, say): what it holds.
                key = id(v)
                if key in self._seen:
                    return self._seen[key]
                self._seen[key] = "obj:" + qualified_name(type(v))
                text = "obj:%s{%s}" % (
                    qualified_name(type(v)),
                    ";".join(f"{k}={self.value(x, names)}" for k, x in sorted(attrs.items())),
                )
                self._seen[key] = text
                return text
            raise

    def operator(self, op: Any) -> str:
        """A program's operator named by the code (its backward calls it,
        say): its facets, as in the ``ops`` component."""
        name = op_qualname(op)
        key = id(op)
        if key in self._seen:
            return self._seen[key]
        stack = _facets_in_progress()
        if name in stack:  # the operator's own kernel names it: a reference
            return "op:" + name
        self._seen[key] = "op:" + name
        text = "op:" + name + "{" + ",".join(f"{k}={v}" for k, v in sorted(op_facets(op).items())) + "}"
        self._seen[key] = text
        return text

    def module(self, m: types.ModuleType, names: frozenset[str]) -> str:
        name = m.__name__
        if _is_fixed_module(name):
            return "module:" + name
        key = id(m)
        if key in self._seen:
            return self._seen[key]
        self._seen[key] = "module:" + name
        version = getattr(m, "__version__", None)
        parts = ["module:" + name + (f"@{version}" if isinstance(version, str) else "")]
        if _is_third_party(m):
            return parts[0]
        # A user module: the attributes the code reads by name.
        for attr in sorted(names):
            if attr in vars(m):
                parts.append(f"{attr}={self.value(vars(m)[attr], names)}")
        return "{" + ";".join(parts) + "}"

    def cls(self, c: type) -> str:
        name = qualified_name(c)
        module = getattr(c, "__module__", None)
        if (_is_fixed_module(module) or _is_third_party_name(module)) and _named_by_reference(c):
            return "type:" + name
        key = id(c)
        if key in self._seen:
            return self._seen[key]
        self._seen[key] = "type:" + name
        parts = ["type:" + name, "bases=" + ",".join(qualified_name(b) for b in c.__bases__)]
        for attr in sorted(vars(c)):
            if attr.startswith("__") and attr.endswith("__"):
                continue
            raw = vars(c)[attr]
            if isinstance(raw, (staticmethod, classmethod)):
                raw = raw.__func__
            if isinstance(raw, property):
                raw = raw.fget
            parts.append(f"{attr}={self.value(raw)}")
        return "{" + ";".join(parts) + "}"

    def callable(self, fn: Any) -> str:
        if isinstance(fn, functools.partial):
            return "partial(%s;%s;%s)" % (
                self.callable(fn.func),
                ",".join(self.value(a) for a in fn.args),
                ",".join(f"{k}={self.value(v)}" for k, v in sorted(fn.keywords.items())),
            )
        if isinstance(fn, types.MethodType):
            owner = fn.__self__
            owner_text = self.cls(owner) if isinstance(owner, type) else self.value(owner)
            return f"method({owner_text};{self.callable(fn.__func__)})"
        if not isinstance(fn, types.FunctionType):
            wrapped = getattr(fn, "__wrapped__", None)
            if wrapped is not None and wrapped is not fn:
                return f"wrapper:{qualified_name(type(fn))}({self.callable(wrapped)})"
            if isinstance(fn, (types.BuiltinFunctionType, types.BuiltinMethodType)):
                return "builtin:" + qualified_name(fn)
            triton = _triton_kernel_text(fn)
            if triton is not None:
                return triton
            return encode_value(fn)
        if _is_torch_code(fn) and not fn.__closure__:
            return "fn:" + qualified_name(fn)
        key = id(fn)
        if key in self._seen:
            return self._seen[key]
        self._seen[key] = "rec:" + qualified_name(fn)
        self._depth += 1
        try:
            if self._depth > 64:
                raise Unkeyable(f"functions nested too deeply at {qualified_name(fn)}")
            code = fn.__code__
            names = _code_names(code)
            torch_code = _is_torch_code(fn)
            # torch's own code is fixed by the install (the torch_src
            # component); what a torch wrapper closes over may be the program's.
            parts = ["fn:" + qualified_name(fn)] + ([] if torch_code else ["code:" + _code_digest(code)])
            if fn.__defaults__:
                parts.append("defaults=" + self.value(fn.__defaults__))
            if fn.__kwdefaults__:
                parts.append("kwdefaults=" + self.value(fn.__kwdefaults__))
            for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
                try:
                    contents = cell.cell_contents
                except ValueError:
                    parts.append(f"cell {var}=<empty>")
                    continue
                parts.append(f"cell {var}={self.value(contents, names)}")
            glb = {} if torch_code else fn.__globals__
            for name in sorted(names):
                if name in glb:
                    parts.append(f"global {name}={self.value(glb[name], names)}")
            text = "{" + ";".join(parts) + "}"
        finally:
            self._depth -= 1
        self._seen[key] = text
        return text


def _named_by_reference(c: type) -> bool:
    """Whether its module's attribute of its qualified name is ``c`` (a class
    made at run time, as torch makes one per registered backward, is not)."""
    obj: Any = sys.modules.get(c.__module__)
    for part in c.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is c


def _registered_op_of(v: Any) -> Any:
    """The program's OpOverload that ``v`` stands for, or None (torch's own
    operators, and anything else)."""
    from torch._library.custom_ops import CustomOpDef

    if isinstance(v, CustomOpDef):
        v = v._opoverload
    if isinstance(v, torch._ops.OpOverloadPacket):
        names = v.overloads()
        v = getattr(v, "default" if "default" in names else names[0]) if names else None
    if isinstance(v, torch._ops.OpOverload) and not is_torch_op(v):
        return v
    return None


def _is_third_party_name(name: str | None) -> bool:
    if not name:
        return False
    mod = sys.modules.get(name.partition(".")[0])
    return mod is not None and _is_third_party(mod)


def _is_third_party(m: types.ModuleType) -> bool:
    """An installed distribution (site-packages), keyed by name and version."""
    path = getattr(m, "__file__", None) or ""
    return "site-packages" in path or "dist-packages" in path


def _code_names(code: types.CodeType) -> frozenset[str]:
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _code_names(c)
    return frozenset(names)


def _code_digest(code: types.CodeType) -> str:
    """The code without its file name and line numbers (moving a function
    keeps its digest; changing what it does does not)."""
    consts = []
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            consts.append("code:" + _code_digest(c))
        else:
            try:
                consts.append(encode_value(c))
            except Unkeyable:
                consts.append(type(c).__name__ + ":" + repr(c))
    h = hashlib.blake2b(code.co_code, digest_size=16)
    for part in (
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        (code.co_argcount, code.co_kwonlyargcount, code.co_posonlyargcount, code.co_flags),
        consts,
    ):
        h.update(repr(part).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _triton_kernel_text(obj: Any) -> str | None:
    if "triton" not in sys.modules:
        return None
    try:
        from triton.runtime.autotuner import Autotuner
        from triton.runtime.jit import JITFunction
    except ImportError:
        return None
    if isinstance(obj, (JITFunction, Autotuner)):
        from .graph_hashing import triton_kernel_source

        return "triton:" + digest(triton_kernel_source(obj))
    return None


def callable_digest(fn: Any) -> str:
    """A digest of what ``fn`` does; raises :class:`Unkeyable` where that
    cannot be written down exactly."""
    return digest(_Digester().callable(fn))


# ---------------------------------------------------------------------------
# Facets of one operator
# ---------------------------------------------------------------------------


def _op_parts(op: Any) -> tuple[str, str, str]:
    """(namespace, name, overload) of an OpOverload."""
    schema = op._schema
    ns, _, name = schema.name.partition("::")
    return ns, name, schema.overload_name


def op_qualname(op: Any) -> str:
    ns, name, overload = _op_parts(op)
    return f"{ns}::{name}" + (f".{overload}" if overload else "")


def _facet(facets: dict[str, str], name: str, fn: Any, op_name: str) -> None:
    if fn is None:
        return
    try:
        facets[name] = digest(_Digester().value(fn))
    except Unkeyable as e:
        raise Unkeyable(f"operator {op_name}: its {name} cannot be keyed by content ({e})") from None
    except RecursionError:
        raise Unkeyable(f"operator {op_name}: its {name} is too deeply nested to key") from None


def op_facets(op: Any) -> dict[str, str]:
    """Facet name -> digest for one operator outside torch's namespaces; see
    Note [Registered operators in the key].  Raises :class:`Unkeyable`."""

    qualname = op_qualname(op)
    stack = _facets_in_progress()
    stack.append(qualname)
    try:
        return _op_facets(op, qualname)
    finally:
        stack.pop()


_progress = threading.local()


def _facets_in_progress() -> list[str]:
    stack = getattr(_progress, "stack", None)
    if stack is None:
        stack = _progress.stack = []
    return stack


def _op_facets(op: Any, qualname: str) -> dict[str, str]:
    from torch._library import custom_ops, simple_registry

    ns, name, overload = _op_parts(op)
    facets: dict[str, str] = {}
    tags = ",".join(sorted(str(t) for t in getattr(op, "tags", ())))
    facets["schema"] = digest(str(op._schema) + "|" + tags)
    opdef = custom_ops.OPDEFS.get(f"{ns}::{name}")
    explained: set[str] = set()
    if opdef is not None:
        explained = set(getattr(opdef._lib, "_op_impls", ()))
        _facet(facets, "fake", opdef._abstract_fn, qualname)
        if opdef._backward_fn is not None or opdef._setup_context_fn is not None:
            _facet(facets, "autograd", (opdef._backward_fn, opdef._setup_context_fn), qualname)
        _facet(facets, "vmap", opdef._vmap_fn, qualname)
        if opdef._torch_dispatch_fns:
            rules = sorted(
                (qualified_name(k), v) for k, v in opdef._torch_dispatch_fns.items()
            )
            _facet(facets, "torch_dispatch", rules, qualname)
        autocast = getattr(opdef, "_autocast_dtype", None)
        if autocast:
            facets["autocast"] = digest(encode_value(dict(autocast)))
        disabled = getattr(opdef, "_disabled_kernel", None)
        if disabled:
            facets["disabled"] = digest(encode_value(sorted(str(d) for d in disabled)))
        _triton_facet(facets, opdef, qualname)
    entry = simple_registry.singleton.get(qualname) or simple_registry.singleton.get(f"{ns}::{name}")
    if entry is not None and opdef is None:
        holder = entry.fake_impl
        kernels = getattr(holder, "kernels", None)
        kernel = kernels[-1] if kernels else getattr(holder, "kernel", None)
        if kernel is not None:
            _facet(facets, "fake", kernel.func, qualname)
    if entry is not None:
        table: dict[Any, Any] | None = getattr(entry.torch_dispatch_rules, "_data", None)
        if table:
            by_name = sorted((qualified_name(k), v) for k, v in table.items())
            _facet(facets, "torch_dispatch_rule", by_name, qualname)
        effect = getattr(getattr(entry, "effect", None), "effect", None)
        if effect is not None:
            facets["effect"] = digest(str(effect))
    for table_name, table in _decomposition_tables():
        fn = table.get(op)
        if fn is not None and not _torch_owned(fn):
            _facet(facets, table_name, fn, qualname)
    for key, fn in sorted((getattr(k, "name", str(k)), v) for k, v in getattr(op, "py_kernels", {}).items()):
        if not _is_torch_code(fn):
            _facet(facets, f"py_kernel:{key}", fn, qualname)
    if "fake" in facets:
        # The Meta kernel torch registers for a fake kernel calls the
        # registry's, keyed above.
        explained |= {f"{ns}/{name}/Meta", f"{ns}/{name}.{overload}/Meta"}
    _kernel_facets(facets, ns, name, overload, explained, qualname)
    if opdef is None and not _python_defined(qualname):
        facets["library"] = _compiled_library_digest(qualname)
    return facets


def _triton_facet(facets: dict[str, str], opdef: Any, qualname: str) -> None:
    try:
        from torch._library import triton as library_triton
    except ImportError:
        return
    kernels = getattr(library_triton, "triton_ops_to_kernels", {}).get(f"{opdef._namespace}::{opdef._name}")
    if not kernels:
        return
    try:
        from .graph_hashing import triton_kernel_source

        text = "\n".join(triton_kernel_source(k) for k in kernels)
    except Unkeyable as e:
        raise Unkeyable(f"operator {qualname}: {e}") from None
    # A triton_op's body is traced into the graph (it decomposes).
    backends = sorted(opdef._backend_fns.items(), key=lambda kv: str(kv[0]))
    _facet(facets, "triton_body", (opdef._init_fn, backends), qualname)
    facets["triton"] = digest(text)


def _kernel_facets(
    facets: dict[str, str], ns: str, name: str, overload: str, explained: set[str], qualname: str
) -> None:
    names = {f"{ns}/{name}/", f"{ns}/{name}.{overload}/"} if overload else {f"{ns}/{name}/"}
    for key in sorted(_impls()):
        prefix, _, dispatch_key = key.rpartition("/")
        if prefix + "/" not in names or key in explained or dispatch_key in _RUNTIME_KEYS:
            continue
        with _lock:
            fn = _recorded.get(key)
        if fn is None:
            raise Unkeyable(
                f"operator {qualname} has a Python kernel for {dispatch_key} registered before "
                "torch_aotcache was imported, which cannot be keyed by content; import "
                "torch_aotcache before the code that registers it"
            )
        _facet(facets, f"kernel:{dispatch_key}", fn, qualname)


def _python_defined(qualname: str) -> bool:
    """Whether the operator's schema was defined from Python (``Library.define``)."""
    import torch.library

    return qualname in torch.library._defs or qualname.partition(".")[0] in torch.library._defs


# (path, size, mtime_ns) -> content digest of a loaded library.
_library_digests: dict[tuple[str, int, int], str] = {}


def _loaded_libraries() -> list[str]:
    """Shared libraries this process mapped outside torch and the system's
    library folders (extensions that may define operators)."""
    paths: set[str] = set(getattr(torch.ops, "loaded_libraries", ()) or ())
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.rstrip("\n").partition("/")[2]
                if path and ".so" in path:
                    paths.add("/" + path)
    except OSError:
        for mod in list(sys.modules.values()):
            path = getattr(mod, "__file__", None) or ""
            if path.endswith((".so", ".pyd", ".dylib")):
                paths.add(path)
    system = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/local/lib/lib")
    return sorted(
        p for p in paths if not os.path.abspath(p).startswith(_TORCH_DIR) and not p.startswith(system)
        and "lib-dynload" not in p and "/nvidia/" not in p and not os.path.basename(p).startswith("libpython")
    )


# Libraries larger than this are keyed by identity alone (path, size, mtime,
# inode): hashing hundreds of megabytes would cost a warm process seconds.
CONTENT_DIGEST_LIMIT = 64 << 20


def _compiled_library_digest(qualname: str) -> str:
    sites = _registration_sites(qualname)
    parts = ["sites=" + ",".join(sites)]
    for path in _loaded_libraries():
        try:
            st = os.stat(path)
        except OSError:
            continue
        ident = (path, st.st_size, st.st_mtime_ns)
        content = _library_digests.get(ident)
        if content is None and st.st_size > CONTENT_DIGEST_LIMIT:
            content = _library_digests[ident] = f"identity:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        if content is None:
            h = hashlib.blake2b(digest_size=16)
            try:
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            except OSError:
                raise Unkeyable(f"operator {qualname}: cannot read loaded library {path}") from None
            content = _library_digests[ident] = h.hexdigest()
        parts.append(f"{path}:{content}")
    return digest("\n".join(parts))


def _registration_sites(qualname: str) -> list[str]:
    dump = torch._C._dispatch_dump(qualname)
    sites = []
    for line in dump.splitlines():
        head, sep, rest = line.partition(": registered at ")
        if sep:
            sites.append(head.strip() + "@" + rest.partition(" ")[0])
    return sites


# ---------------------------------------------------------------------------
# Overrides of torch's own operators, for every graph
# ---------------------------------------------------------------------------


def _pre_watch_overrides() -> list[str]:
    """Registrations on torch's namespaces made before we watched, by code
    outside torch (read once a process, from the dispatcher's record of
    where each Python kernel was registered)."""
    global _pre_overrides
    if _pre_overrides is not None:
        return _pre_overrides
    before = _before or frozenset()
    found = []
    by_op: dict[str, list[str]] = {}
    for key in before:
        prefix, _, dispatch_key = key.rpartition("/")
        ns = prefix.partition("/")[0]
        # Only aten's: the operators programs override.  torch registers its
        # Python meta kernels (and its prims) itself; see Note [Registered
        # operators in the key] for this limit.
        if ns == "aten" and dispatch_key not in _RUNTIME_KEYS and dispatch_key != "Meta":
            by_op.setdefault(prefix, []).append(dispatch_key)
    for prefix, keys in sorted(by_op.items()):
        ns, _, name = prefix.partition("/")
        try:
            sites = _registration_sites(f"{ns}::{name}")
        except Exception:  # noqa: BLE001 - an op that is gone: nothing runs it
            continue
        for site in sites:
            key_name, _, where = site.partition("@")
            key_name = key_name.replace("[alias]", "")
            path = where.rpartition(":")[0]
            if key_name in keys and (path.endswith(".py") or path.startswith("<")) and not os.path.abspath(
                path
            ).startswith(_TORCH_DIR):
                found.append(f"{ns}::{name} {key_name} at {where}")
    _pre_overrides = found
    return found


# id -> (object, whether torch owns it); the object is kept, so an id is never reused.
_owned_memo: dict[int, tuple[Any, bool]] = {}


def _torch_owned(fn: Any) -> bool:
    hit = _owned_memo.get(id(fn))
    if hit is not None and hit[0] is fn:
        return hit[1]
    owned = _torch_owned_uncached(fn)
    _owned_memo[id(fn)] = (fn, owned)
    return owned


def _torch_owned_uncached(fn: Any) -> bool:
    """Whether a decomposition or lowering table's entry is torch's own: the
    function at the bottom of its wrappers (``__wrapped__``, a partial's
    ``func``) is torch's code.  Inductor's ``register_lowering`` and torch's
    decomposition decorators wrap with ``functools.wraps``, so a program's
    function shows at the bottom."""
    for _ in range(16):
        if isinstance(fn, functools.partial):
            fn = fn.func
            continue
        inner = getattr(fn, "__wrapped__", None)
        if inner is None or inner is fn:
            break
        fn = inner
    if isinstance(fn, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return True
    if isinstance(fn, types.FunctionType):
        return _is_torch_code(fn)
    return _is_torch_module(getattr(type(fn), "__module__", None))


_unexplained_memo: tuple[tuple[int, int, int], str | None] | None = None


def _unexplained(live: set[str]) -> str | None:
    """A kernel on torch's namespaces that neither the snapshot taken when
    watching began, nor a registration seen since, accounts for (registered
    some other way than ``Library.impl``); rechecked when the counts change.
    Called with ``_lock`` held."""
    global _unexplained_memo
    sizes = (len(live), len(_recorded), len(_torch_keys))
    if _unexplained_memo is not None and _unexplained_memo[0] == sizes:
        return _unexplained_memo[1]
    before = _before or frozenset()
    found = sorted(
        k for k in live
        if k not in before and k not in _recorded and k not in _torch_keys
        and k.partition("/")[0] in TORCH_NAMESPACES and k.rpartition("/")[2] not in _RUNTIME_KEYS
    )
    result = found[0] if found else None
    _unexplained_memo = (sizes, result)
    return result


def _decomposition_tables() -> Iterable[tuple[str, dict[Any, Any]]]:
    decomp = sys.modules.get("torch._decomp")
    if decomp is not None:
        for name, table in sorted(getattr(decomp, "global_decomposition_table", {}).items()):
            yield "decomp." + name, table
    inductor_decomp = sys.modules.get("torch._inductor.decomposition")
    if inductor_decomp is not None:
        yield "inductor.decompositions", getattr(inductor_decomp, "decompositions", {})
    lowering = sys.modules.get("torch._inductor.lowering")
    if lowering is not None:
        yield "inductor.lowerings", getattr(lowering, "lowerings", {})
        yield "inductor.user_lowerings", getattr(lowering, "user_lowerings", {})


def overrides_lines() -> list[str]:
    """Lines for what code outside torch registered on torch's own operators
    (Python kernels, decompositions, Inductor lowerings); raises
    :class:`Unkeyable` where that cannot be keyed by content."""
    lines = []
    pre = _pre_watch_overrides()
    if pre:
        raise Unkeyable(
            "a Python kernel was registered on torch's operator "
            + pre[0]
            + " before torch_aotcache was imported; it changes what every graph traces into and "
            "cannot be keyed by content: import torch_aotcache before the code that registers it"
        )
    if _watch_failed:
        raise Unkeyable("torch_aotcache could not watch kernel registrations, so none can be keyed")
    live = _impls()
    with _lock:
        recorded = sorted(_recorded.items())
        unexplained = _unexplained(live)
    if unexplained:
        raise Unkeyable(
            f"a kernel for {unexplained} was registered where torch_aotcache could not see it; "
            "it may change what every graph traces into"
        )
    for key, fn in recorded:
        prefix, _, dispatch_key = key.rpartition("/")
        ns = prefix.partition("/")[0]
        if ns not in TORCH_NAMESPACES or dispatch_key in _RUNTIME_KEYS or key not in live:
            continue
        try:
            lines.append(f"override {key} {callable_digest(fn)}")
        except Unkeyable as e:
            raise Unkeyable(f"the Python kernel registered for {key}: {e}") from None
    for table_name, table in _decomposition_tables():
        lines.extend(_table_overrides(table_name, table))
    return sorted(lines)


# table name -> (fingerprint of its entries, their override lines).
_table_memo: dict[str, tuple[Any, list[str]]] = {}


def _table_overrides(table_name: str, table: dict[Any, Any]) -> list[str]:
    """The program's entries for torch's operators in one decomposition or
    lowering table, digested; reread only when an entry was added or
    replaced (the fingerprint is the identities of its values: a program's
    entry is a function of its own)."""
    fingerprint = (len(table), hash(tuple(map(id, table.values()))))
    memo = _table_memo.get(table_name)
    if memo is not None and memo[0] == fingerprint:
        return memo[1]
    items = list(table.items())
    lines = []
    function = types.FunctionType
    for op, fn in items:
        # The common case first: a plain function of torch's, unwrapped.
        if type(fn) is function and "__wrapped__" not in fn.__dict__ and _is_torch_file(fn.__code__.co_filename):
            continue
        # A program's operator's entries are that operator's facets.
        if _torch_owned(fn) or (isinstance(op, torch._ops.OpOverload) and not is_torch_op(op)):
            continue
        try:
            lines.append(f"override {table_name} {op} {callable_digest(fn)}")
        except Unkeyable as e:
            raise Unkeyable(f"the {table_name} entry for {op}: {e}") from None
    # Program entries are digested at every key (what they read may change);
    # torch-only tables are remembered.
    if not lines:
        _table_memo[table_name] = (fingerprint, lines)
    return lines


# ---------------------------------------------------------------------------
# The component
# ---------------------------------------------------------------------------


def is_torch_op(op: Any) -> bool:
    return _op_parts(op)[0] in TORCH_NAMESPACES


def ops_component(ops: Iterable[Any]) -> tuple[str, dict[str, dict[str, str]]]:
    """The ``ops`` component's text, and per operator its facets' short
    digests (for ``explain``).  Raises :class:`Unkeyable`."""
    text, record = ops_record(ops)
    return text, short_facets(record)


def short_facets(record: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per operator of an :func:`ops_record`, its facets' short digests (what
    ``explain`` compares)."""
    return {name: {k: v[:12] for k, v in facets.items()} for name, facets in record["ops"].items()}


def ops_record(ops: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    """The ``ops`` component's text, and what it was made of: the digest of
    the override lines, and per operator its facets' digests (what a stored
    frame checks before it runs: :func:`changed_since`)."""
    lines = overrides_lines()
    record: dict[str, Any] = {"overrides": digest("\n".join(lines)), "ops": {}}
    for op in sorted({o for o in ops if not is_torch_op(o)}, key=op_qualname):
        name = op_qualname(op)
        facets = op_facets(op)
        record["ops"][name] = facets
        lines.extend(f"op {name} {k}={v}" for k, v in sorted(facets.items()))
    return "\n".join(lines), record


def resolve_op(qualname: str) -> Any:
    """The OpOverload named ``ns::name[.overload]`` in this process, or None."""
    ns, _, rest = qualname.partition("::")
    name, _, overload = rest.partition(".")
    try:
        packet = getattr(getattr(torch.ops, ns), name)
        return getattr(packet, overload or "default")
    except (AttributeError, RuntimeError):
        return None


def changed_since(record: Any) -> str | None:
    """What differs between a stored :func:`ops_record` and the registrations
    of this process (``op ns::acc schema``), or None when nothing does."""
    if not isinstance(record, dict) or not isinstance(record.get("ops"), dict):
        return "the stored registrations are malformed"
    try:
        if digest("\n".join(overrides_lines())) != record.get("overrides"):
            return "overrides of torch's operators"
        for name, facets in sorted(record["ops"].items()):
            op = resolve_op(name)
            if op is None:
                return f"op {name} is not registered"
            now = op_facets(op)
            if now != facets:
                changed = sorted(k for k in set(now) | set(facets) if now.get(k) != facets.get(k))
                return f"op {name} " + ", ".join(changed)
    except Exception as e:  # noqa: BLE001 - what cannot be checked is not reused
        return f"{type(e).__name__}: {e}"
    return None


# Per compiled-graph name of a frame being compiled (``precompile_backend_id``),
# the ops record of its graph, kept until clear() or fresh_cache(): a package
# saved again after a recompile needs the records of every graph it holds
# (Note [Registered operators in stored frames] in dynamo/frames.py).
_by_backend: dict[str, dict[str, Any]] = {}


def remember_for_backend(backend_id: str, record: dict[str, Any]) -> None:
    with _lock:
        _by_backend[backend_id] = record


def take_for_backends(backend_ids: Iterable[str]) -> dict[str, Any] | None:
    """The merged records of a frame's compiled graphs, or None where one of
    them was not keyed by us (its registrations are unknown)."""
    merged: dict[str, Any] = {"overrides": None, "ops": {}}
    with _lock:
        records = [_by_backend.get(b) for b in backend_ids]
    if any(r is None for r in records):
        return None
    for r in records:
        assert r is not None
        merged["overrides"] = r["overrides"]
        merged["ops"].update(r["ops"])
    if merged["overrides"] is None:
        merged["overrides"] = digest("\n".join(overrides_lines()))
    return merged


def clear() -> None:
    """Forget what was kept for frames being compiled (``fresh_cache()``, ``clear()``)."""
    with _lock:
        _by_backend.clear()


def graph_ops(gm: torch.fx.GraphModule) -> set[Any]:
    """The program's operators a graph (and its sub-graphs) calls or names."""
    found: set[Any] = set()
    for module in gm.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op != "call_function":
                continue
            target = node.target
            candidates = (target,) if not isinstance(target, torch._ops.HigherOrderOperator) else node.args
            for c in candidates:
                if isinstance(c, torch._ops.OpOverload) and not is_torch_op(c):
                    found.add(c)
    return found


# Note [Registered operators in Inductor's key]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Where our entry misses, Inductor compiles the graph AOTAutograd traced and
# looks it up in its own FX graph cache first.  That key pickles the graph's
# code and the example inputs, not the nodes' metadata, so a custom operator
# whose fake kernel now returns another dtype, or whose Inductor lowering
# changed, has the same key as before and loads code compiled for the old
# one (stock torch does the same).  So the hash details Inductor builds carry
# the ``ops`` text of that graph too (an attribute the key's pickler hashes
# with the rest); a registration that cannot be keyed bypasses that cache,
# with the reason.


def fx_graph_hash_details_init(
    original: Callable[..., Any],
    self: Any,
    gm: Any,
    example_inputs: Any,
    fx_kwargs: Any,
    inputs_to_check: Any,
) -> None:
    """``FxGraphHashDetails.__init__``, with the ``ops`` text of ``gm``: see
    Note [Registered operators in Inductor's key]."""
    original(self, gm, example_inputs, fx_kwargs, inputs_to_check)
    if gm is None:
        return
    try:
        text, _ = ops_component(graph_ops(gm))
    except Exception as e:  # noqa: BLE001 - never fail a compile: that cache is bypassed
        from torch._inductor.codecache import BypassFxGraphCache

        raise BypassFxGraphCache(f"torch_aotcache: {e}") from None
    if text:
        # Only then: a graph without registered operators keeps stock's key.
        self.torch_aotcache_ops = text
