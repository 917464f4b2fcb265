"""
Guards that hold across processes, in place of the identity guards upstream
drops when it packages a frame.

Note [Replacement guards]
~~~~~~~~~~~~~~~~~~~~~~~~~
Dynamo guards a function it inlined, a module it read an attribute of, a
class, by the object's identity: ``ID_MATCH`` and the guards built on it
(``FUNCTION_MATCH``, ``BUILTIN_MATCH``, ``CLASS_MATCH``, ``MODULE_MATCH``),
and ``CLOSURE_MATCH`` for a function's code.  An address cannot be
serialized, so with ``caching_precompile`` upstream drops those guards, in
the compiling process too, and a stored frame then runs whatever the name is
bound to: a global rebound from ``torch.sin`` to ``torch.cos``, a
monkeypatched ``F.relu``, gives a wrong result.

We keep Dynamo's own filter out (``caching_precompile`` is off while the
guards are built) and pass a filter of ours (composed with the program's
``guard_filter_fn``).  For each identity guard it names the guarded object
by reference (identity.py): a module by name, a function or class by module
and qualified name, a Python function also by its bytecode's digest.

* A guard whose object has such a name is taken out of Dynamo's set and
  replaced by one lambda guard per guard set, on the root: each source, read
  from the frame's locals and globals, must *be* the object of that name.
  In the compiling process that object is the guarded one, so the check is
  the identity check Dynamo would make.  In a later process the names are
  resolved again when the package is loaded (a module imported, a function
  found, its bytecode compared): a name that leads nowhere, or to changed
  code, is a miss and the frame is traced; otherwise the loaded guard set
  gets the same lambda guard, with the objects found in that process.
* A guard whose object has no such name (a lambda, an instance, a dict's
  version, a weak reference) is kept: serializing it fails, so upstream's
  package leaves that compile out, and the guard checks the frame in this
  process as usual.  Counted as ``frame_guard_kept``.

Each guard set's replacements are recorded under the SHA-256 of its
serialized form (``CheckFunctionManager.guards_state``), which is what the
package stores; the saved entry carries them in its JSON header, so they
are checked (and signed) before anything is unpickled.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..counters import count
from . import identity


log = logging.getLogger(__name__)

# Guard types whose check is an object's identity (upstream cannot serialize
# them; CheckFunctionManager.UNSUPPORTED_SERIALIZATION_GUARD_TYPES and the
# builtins guard).
IDENTITY_GUARDS = frozenset(
    {"ID_MATCH", "FUNCTION_MATCH", "BUILTIN_MATCH", "CLASS_MATCH", "MODULE_MATCH", "CLOSURE_MATCH"}
)
# Guards we never replace: the frame keeps them and is not packaged.
KEPT_GUARDS = frozenset({"DICT_VERSION", "WEAKREF_ALIVE", "NN_MODULE"})

# sha256(guards_state) -> the replacements of that guard set (JSON-able),
# for the save of the package that holds it.
_by_state: dict[str, list[dict[str, Any]]] = {}
_lock = threading.Lock()


def state_digest(guards_state: bytes) -> str:
    return hashlib.sha256(guards_state).hexdigest()


def remember(digest: str, replacements: list[dict[str, Any]]) -> None:
    with _lock:
        _by_state[digest] = replacements


def recorded(digest: str) -> list[dict[str, Any]] | None:
    """The replacements recorded for a guard set, or None if it was not built
    (or loaded) through us: a frame we cannot vouch for is not saved."""
    with _lock:
        return _by_state.get(digest)


def _needs_replacing(entry: Any) -> bool:
    kinds = {entry.guard_type, *entry.derived_guard_types}
    return bool(kinds & (IDENTITY_GUARDS | KEPT_GUARDS))


class Collector:
    """The filter passed to one ``CheckFunctionManager``: replaces what it can
    (see Note [Replacement guards]) and keeps the rest."""

    def __init__(self, user_filter: Callable[[Sequence[Any]], Sequence[bool]] | None) -> None:
        self.user_filter = user_filter
        self.replacements: list[dict[str, Any]] = []
        self.objects: list[Any] = []
        self.kept: list[str] = []

    def __call__(self, entries: Sequence[Any]) -> list[bool]:
        keep = list(self.user_filter(entries)) if self.user_filter is not None else [True] * len(entries)
        self.replacements, self.objects, self.kept = [], [], []
        for i, entry in enumerate(entries):
            if not keep[i] or not _needs_replacing(entry):
                continue
            description = None
            if not ({entry.guard_type, *entry.derived_guard_types} & KEPT_GUARDS) and entry.has_value:
                description = identity.describe(entry.value)
            if description is None or not _evaluable(entry.name):
                self.kept.append(f"{entry.guard_type} {entry.name}")
                continue
            keep[i] = False
            self.replacements.append({"source": entry.name, "guard": entry.guard_type, "object": description})
            self.objects.append(entry.value)
        return keep


# The guard sources we replace, and later evaluate: a frame local or global
# by name, then attributes and subscripts by constant (no call, no operator),
# as Dynamo spells them: ``G['torch'].nn.functional.relu``,
# ``G['__builtins_dict___0']['iter']``, ``L['self'].act``.  A source read from
# an entry's header is evaluated only if it has this form (signed or not).
_SOURCE = re.compile(
    r"[GL]\[(?:'[A-Za-z0-9_.<>]+'|\"[A-Za-z0-9_.<>]+\")\]"
    r"(?:\.[A-Za-z_][A-Za-z0-9_]*|\[(?:'[A-Za-z0-9_.<>]+'|\"[A-Za-z0-9_.<>]+\"|[0-9]+)\])*"
)


def _evaluable(source: str) -> bool:
    return isinstance(source, str) and len(source) < 1000 and _SOURCE.fullmatch(source) is not None


def add_lambda_guard(guard_manager: Any, replacements: list[dict[str, Any]], objects: list[Any],
                     global_scope: dict[str, Any]) -> None:
    """Add one root guard to ``guard_manager`` (a GuardManagerWrapper): each
    replacement's source is the object given for it."""
    if not replacements:
        return
    from torch._dynamo.guards import _get_closure_vars

    namespace = dict(_get_closure_vars())
    namespace["__builtins__"] = builtins
    checks = [
        (compile(r["source"], "<guard source>", "eval"), obj) for r, obj in zip(replacements, objects, strict=True)
    ]
    frame_globals = global_scope

    def same_objects(f_locals: Any) -> bool:
        scope = {"L": f_locals, "G": frame_globals}
        try:
            for code, obj in checks:
                if eval(code, namespace, scope) is not obj:  # noqa: S307 - Dynamo's own guard sources
                    return False
        except Exception:  # noqa: BLE001 - a source that no longer reads: the guard fails
            return False
        return True

    parts = [f"{r['source']} is {identity.spelled(r['object'])} (torch_aotcache)" for r in replacements]
    guard_manager.root.add_lambda_guard(same_objects, parts, None)


def resolve_all(replacements: list[dict[str, Any]]) -> list[Any]:
    """The objects the replacements name in this process; raises identity.Unresolved."""
    if not isinstance(replacements, list):
        raise identity.Unresolved("malformed replacements")
    objects = []
    for r in replacements:
        if not isinstance(r, dict) or not isinstance(r.get("source"), str) or not isinstance(r.get("object"), dict):
            raise identity.Unresolved("malformed replacement")
        if not _evaluable(r["source"]):
            raise identity.Unresolved(f"unexpected guard source {r['source']!r}")
        objects.append(identity.resolve(r["object"]))
    return objects


# ---------------------------------------------------------------------------
# Wrappers installed while the frame cache is on (install.py)
# ---------------------------------------------------------------------------

_loading = threading.local()


def check_function_manager_init(original: Callable[..., Any], signature: Any, *args: Any, **kwargs: Any) -> None:
    """``CheckFunctionManager.__init__`` with our filter in place of upstream's drop."""
    import torch

    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    self = bound.arguments["self"]
    collector = Collector(bound.arguments.get("guard_filter_fn"))
    bound.arguments["guard_filter_fn"] = collector
    with torch._dynamo.config.patch(caching_precompile=False):
        original(*bound.args, **bound.kwargs)
    if collector.kept:
        count("frame_guard_kept", len(collector.kept))
        log.debug("torch_aotcache: identity guards kept (frame not packaged): %s", collector.kept)
    runtime_scope = bound.arguments.get("runtime_global_scope")
    output_graph = bound.arguments.get("output_graph")
    scope = runtime_scope if runtime_scope is not None else getattr(output_graph, "global_scope", None)
    loaded = getattr(_loading, "pending", None)
    replacements, objects = collector.replacements, collector.objects
    if loaded is not None:
        # A guard set loaded from a package: its replacements come from the entry.
        _loading.pending = None
        replacements, objects = loaded
    if replacements:
        if scope is None:
            raise RuntimeError("torch_aotcache: no global scope to evaluate replacement guards in")
        add_lambda_guard(self.guard_manager, replacements, objects, scope)
        count("frame_guard_replaced", len(replacements))
    state = getattr(self, "guards_state", None)
    if state is not None and loaded is None:
        remember(state_digest(state), list(collector.replacements))


def load_guards_state(original: Callable[..., Any], data: bytes) -> Any:
    """``torch._dynamo.package.load_guards_state``: note the replacements
    resolved for this guard set when its package was loaded, for the
    ``load_guard_manager`` call that follows it in ``CompilePackage.install``."""
    state = original(data)
    with _lock:
        _loading.next = _resolved.get(state_digest(data))
    return state


def load_guard_manager(original: Callable[..., Any], guards_state: Any, target_code: Any,
                       runtime_global_scope: Any) -> Any:
    """``torch._dynamo.package.load_guard_manager``: a loaded guard set gets
    the replacement guards its entry carries (Note [Replacement guards])."""
    _loading.pending, _loading.next = getattr(_loading, "next", None), None
    try:
        return original(guards_state, target_code, runtime_global_scope)
    finally:
        _loading.pending = None


# sha256(guards_state) -> (replacements, objects) resolved by the load of a package.
_resolved: dict[str, tuple[list[dict[str, Any]], list[Any]]] = {}


def expect_loaded(digest: str, replacements: list[dict[str, Any]], objects: list[Any]) -> None:
    with _lock:
        _resolved[digest] = (replacements, objects)
        _by_state[digest] = replacements
