"""
Naming a Python object so that another process can find the same object.

A guard Dynamo builds on an object's identity (``ID_MATCH`` and the guards
made of it: a function, a class, a module) compares addresses, which mean
nothing in another process.  :func:`describe` names such an object by
reference instead: a module by its name, a function or class by its module
and qualified name (and a Python function also by a digest of its bytecode),
when that name leads back to the very object; :func:`resolve` finds the
object a description names in the running process, or raises
:class:`Unresolved`.
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import sys
import types
import weakref
from typing import Any


class Unresolved(Exception):
    """A description that names no object (or another one) in this process."""


def _follow(module: str, qualname: str) -> Any:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any import failure means: no such object
            raise Unresolved(f"cannot import {module}: {type(e).__name__}: {e}") from None
    obj: Any = mod
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise Unresolved(f"{module} has no {qualname}") from None
    return obj


def describe(value: Any) -> dict[str, str] | None:
    """A JSON-able description of ``value`` by reference, or None when it has
    no name that leads back to it (a lambda, a local function, an instance)."""
    op = _describe_operator(value)
    if op is not None:
        return op
    if isinstance(value, types.ModuleType):
        name = getattr(value, "__name__", None)
        if isinstance(name, str) and sys.modules.get(name) is value:
            return {"kind": "module", "module": name}
        return None
    if isinstance(value, enum.Enum):
        # An enum member: its class's name and the member's.
        cls = type(value)
        module, qualname = getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
            try:
                if _follow(module, f"{qualname}.{value.name}") is value:
                    return {"kind": "object", "module": module, "qualname": f"{qualname}.{value.name}"}
            except Unresolved:
                pass
        return None
    if not isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)) and not callable(value):
        return None
    module = getattr(value, "__module__", None)
    if not isinstance(module, str):
        # A method of a builtin type (``dict.get``, ``object.__getattribute__``):
        # the module of the type it belongs to.
        owner = getattr(value, "__objclass__", None)
        module = getattr(owner, "__module__", None) if isinstance(owner, type) else None
    if not isinstance(module, str):
        return None
    # The qualified name, or for a builtin bound into a module under its
    # plain name (``torch.sin``, whose qualified name is a method of a class
    # torch hides), that name.
    for qualname in (getattr(value, "__qualname__", None), getattr(value, "__name__", None)):
        if not isinstance(qualname, str) or "<" in qualname:
            continue
        try:
            if _follow(module, qualname) is value:
                break
        except Unresolved:
            continue
    else:
        return None
    found = {"kind": "object", "module": module, "qualname": qualname}
    if isinstance(value, types.FunctionType):
        found["code"] = code_digest(value.__code__)
    return found


def _describe_operator(value: Any) -> dict[str, str] | None:
    """An operator namespace, packet or overload, by its name under
    ``torch.ops`` (``torch.ops.ns.name.overload`` is one object a process;
    what a program registered for it is checked by content, Note
    [Registered operators in stored frames] in dynamo/frames.py)."""
    ops = sys.modules.get("torch._ops")
    if ops is None:
        return None
    if isinstance(value, ops.OpOverload):
        schema = value._schema
        path = schema.name.replace("::", ".") + "." + (schema.overload_name or "default")
    elif isinstance(value, ops.OpOverloadPacket):
        path = value._qualified_op_name.replace("::", ".")
    elif isinstance(value, ops._OpNamespace):
        path = value.name
    else:
        return None
    try:
        if _resolve_operator(path) is value:
            return {"kind": "op", "path": path}
    except Unresolved:
        pass
    return None


def _resolve_operator(path: str) -> Any:
    import torch

    obj: Any = torch.ops
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except (AttributeError, RuntimeError):
            raise Unresolved(f"torch.ops has no {path}") from None
    return obj


def describe_code(value: Any) -> dict[str, str] | None:
    """A Python function (or a code object) described by what it does rather
    than which object it is: its bytecode's digest (what ``CLOSURE_MATCH``
    checks is the code, not the function: a closure made anew on each call
    matches)."""
    if isinstance(value, types.FunctionType):
        return {"kind": "code", "code": code_digest(value.__code__)}
    if isinstance(value, types.CodeType):
        return {"kind": "code", "code": code_digest(value)}
    return None


class SameCode:
    """What a ``code`` description resolves to: a test that a value is a
    Python function whose code has the described digest."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        # The last code object that matched: a guard checks the same code on
        # every call, so its digest is computed once.
        self._matched: types.CodeType | None = None

    def matches(self, value: Any) -> bool:
        if isinstance(value, types.FunctionType):
            value = value.__code__
        if value is self._matched and value is not None:
            return True
        if isinstance(value, types.CodeType) and code_digest(value) == self.digest:
            self._matched = value
            return True
        return False


def resolve(description: dict[str, Any]) -> Any:
    """The object ``description`` names in this process (for a ``code``
    description, a :class:`SameCode`); raises :class:`Unresolved`."""
    kind = description.get("kind")
    if kind == "code":
        digest = description.get("code")
        if not isinstance(digest, str) or len(digest) != 64:
            raise Unresolved("malformed code description")
        return SameCode(digest)
    if kind == "module":
        name = description.get("module")
        if not isinstance(name, str):
            raise Unresolved("malformed module description")
        mod = sys.modules.get(name)
        if mod is None:
            try:
                mod = importlib.import_module(name)
            except Exception as e:  # noqa: BLE001
                raise Unresolved(f"cannot import {name}: {type(e).__name__}: {e}") from None
        return mod
    if kind == "object":
        module, qualname = description.get("module"), description.get("qualname")
        if not isinstance(module, str) or not isinstance(qualname, str):
            raise Unresolved("malformed object description")
        obj = _follow(module, qualname)
        want = description.get("code")
        if want is not None:
            if not isinstance(obj, types.FunctionType):
                raise Unresolved(f"{module}.{qualname} is no longer a Python function")
            if code_digest(obj.__code__) != want:
                raise Unresolved(f"the code of {module}.{qualname} changed")
        return obj
    if kind == "op":
        path = description.get("path")
        if not isinstance(path, str) or not path:
            raise Unresolved("malformed operator description")
        return _resolve_operator(path)
    raise Unresolved(f"unknown description kind {kind!r}")


def spelled(description: dict[str, Any]) -> str:
    """A description as a person reads it (``torch.nn.functional.relu``)."""
    if description.get("kind") == "module":
        return f"module {description.get('module')}"
    if description.get("kind") == "code":
        return f"a function with code {str(description.get('code'))[:12]}"
    if description.get("kind") == "op":
        return f"torch.ops.{description.get('path')}"
    return f"{description.get('module')}.{description.get('qualname')}"


# Code objects are immutable: a digest, once computed, holds for the object's life.
_digests: weakref.WeakKeyDictionary[types.CodeType, str] = weakref.WeakKeyDictionary()


def code_digest(code: types.CodeType) -> str:
    """SHA-256 of what a code object does: its bytecode, constants (nested
    code objects digested in turn), names and argument layout; not its line
    numbers or file name, so moving a function leaves it unchanged."""
    try:
        return _digests[code]
    except (KeyError, TypeError):
        pass
    h = hashlib.sha256()
    for part in (
        code.co_code,
        code.co_name.encode(),
        getattr(code, "co_qualname", code.co_name).encode(),
        repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags)).encode(),
        repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)).encode(),
    ):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    for const in code.co_consts:
        item = code_digest(const).encode() if isinstance(const, types.CodeType) else _const_repr(const).encode()
        h.update(len(item).to_bytes(8, "little"))
        h.update(item)
    digest = h.hexdigest()
    try:
        _digests[code] = digest
    except TypeError:
        pass
    return digest


def _const_repr(value: Any) -> str:
    # Constants are literals (numbers, strings, bytes, None, Ellipsis and
    # tuples/frozensets of them): their type and repr identify them.
    if isinstance(value, tuple):
        return "(" + ",".join(_const_repr(v) for v in value) + ")"
    if isinstance(value, frozenset):
        return "{" + ",".join(sorted(_const_repr(v) for v in value)) + "}"
    return f"{type(value).__name__}:{value!r}"
