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

* ``CLOSURE_MATCH`` on a Python function checks its code, not the function
  (a closure made on each call is a new function with the same code): we
  check the digest of the code (identity.SameCode).
* A guard whose object has such a name stays in the guard set this process
  builds, as Dynamo built it (a native check: the frame costs what it costs
  without the frame cache), and is left out of the guard set's serialized
  form (:func:`serialize_guards`), where upstream drops it too; its
  replacement is recorded instead: the source and the object's name.  In a
  later process the names are resolved again when the package is loaded (a
  module imported, a function found, its bytecode compared): a name that
  leads nowhere, or to changed code, is a miss and the frame is traced;
  otherwise the loaded guard set gets one more guard, on the root: one
  generated Python function that reads every replaced source from the
  frame's locals and globals and checks that it *is* the object of that
  name found in this process (for a code, that its digest is the one
  recorded).  That guard is Python, evaluated at every call of a loaded
  frame: native checks there would need Dynamo's sources in the entry and a
  guard builder over the frame's real locals, which a load does not have.
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

import ast
import builtins
import dataclasses
import functools
import hashlib
import logging
import re
import threading
import types
from collections import ChainMap
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
# sha256(guards_state) -> the configs it was compiled under (Note [Configs of
# a compile] in frames.py).
_configs_by_state: dict[str, dict[str, str]] = {}
_lock = threading.Lock()


def state_digest(guards_state: bytes) -> str:
    return hashlib.sha256(guards_state).hexdigest()


def remember(digest: str, replacements: list[dict[str, Any]], configs: dict[str, str] | None) -> None:
    with _lock:
        _by_state[digest] = replacements
        if configs is None:
            _configs_by_state.pop(digest, None)
        else:
            _configs_by_state[digest] = configs


def compiled_configs(digest: str) -> dict[str, str] | None:
    """The configs a guard set was compiled under, or None if unknown."""
    with _lock:
        return _configs_by_state.get(digest)


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

    def __init__(self, user_filter: Callable[[Sequence[Any]], Sequence[bool]] | None,
                 global_scope: dict[str, Any] | None = None) -> None:
        self.user_filter = user_filter
        self.global_scope = global_scope if global_scope is not None else {}
        self.replacements: list[dict[str, Any]] = []
        self.kept: list[str] = []
        # The ids of Dynamo's guards that were replaced: built as Dynamo
        # builds them (native checks) in this process, left out of the
        # guard set's serialized form (:func:`serialize_guards`).
        self.replaced_guards: set[int] = set()

    def __call__(self, entries: Sequence[Any]) -> list[bool]:
        keep = list(self.user_filter(entries)) if self.user_filter is not None else [True] * len(entries)
        self.replacements, self.kept = [], []
        self.replaced_guards = set()
        for i, entry in enumerate(entries):
            if not keep[i] or not _needs_replacing(entry):
                continue
            # The source as Dynamo evaluates it (the entry's ``name`` has the
            # frame's ``L[...]`` stripped for the program's filter).
            source = getattr(getattr(entry, "orig_guard", None), "name", None) or entry.name
            description = None
            if not ({entry.guard_type, *entry.derived_guard_types} & KEPT_GUARDS) and entry.has_value:
                if (entry.guard_type == "CLOSURE_MATCH" or "CLOSURE_MATCH" in entry.derived_guard_types
                        or isinstance(entry.value, types.CodeType)):
                    # Dynamo checks a Python function's code here (or a code
                    # object, by identity), not the function object: so do we,
                    # by the code's digest.
                    description = identity.describe_code(entry.value) or identity.describe(entry.value)
                else:
                    description = identity.describe(entry.value)
            bound = self._bindings(source) if description is not None and _evaluable(source) else None
            if description is None or bound is None:
                self.kept.append(f"{entry.guard_type} {source}")
                continue
            self.replaced_guards.add(id(getattr(entry, "orig_guard", None)))
            replacement = {"source": source, "guard": entry.guard_type, "object": description}
            if bound:
                replacement["bindings"] = {name: d for name, (d, _) in bound.items()}
            self.replacements.append(replacement)
        return keep

    def _bindings(self, source: str) -> dict[str, tuple[dict[str, str], Any]] | None:
        """The per-process globals ``source`` reads, each described by
        reference with its value; None if one cannot be described."""
        found = {}
        for name in per_process_globals(source):
            if name not in self.global_scope:
                return None
            value = self.global_scope[name]
            description = identity.describe(value)
            if description is None:
                return None
            found[name] = (description, value)
        return found


# The guard sources we replace, and later evaluate, are checked to be of
# this small grammar: the frame's locals or globals (``L``, ``G``), then
# attributes, subscripts by constants and by such sources, and calls of
# ``type``, ``dict``, ``list``, ``dict.keys`` and ``dict.__getitem__`` (as
# Dynamo spells sources: ``G['torch'].nn.functional.relu``,
# ``dict(type(L['self']).__dict__)['forward'].__closure__[0].cell_contents``).
# A source read from an entry's header is evaluated only if it is of this
# form (signed or not), and it reads attributes, never calls the program.
_CALLABLE_NAMES = frozenset({"type", "dict", "list"})
_DICT_METHODS = frozenset({"keys", "__getitem__"})


def _allowed(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("G", "L") or node.id in _CALLABLE_NAMES
    if isinstance(node, ast.Constant):
        return type(node.value) in (str, int)
    if isinstance(node, ast.Attribute):
        return _allowed(node.value)
    if isinstance(node, ast.Subscript):
        return _allowed(node.value) and _allowed(node.slice)
    if isinstance(node, ast.Call):
        func = node.func
        named = isinstance(func, ast.Name) and func.id in _CALLABLE_NAMES
        method = (isinstance(func, ast.Attribute) and func.attr in _DICT_METHODS
                  and isinstance(func.value, ast.Name) and func.value.id == "dict")
        return (named or method) and not node.keywords and all(_allowed(a) for a in node.args)
    return False


# Globals Dynamo installs under a name made of an object's address
# (``output_graph.install_global_by_id``: ``_139717128640272_c0``): they exist
# only in the process that compiled, so a replacement records which object
# each held (by reference) and a later process reads the source with them.
PER_PROCESS_NAME = re.compile(r"\w*_[0-9]{6,}_c[0-9]+")


def per_process_globals(source: str) -> list[str]:
    """The per-process global names a (valid) source reads as ``G['name']``."""
    names = []
    for node in ast.walk(ast.parse(source, mode="eval")):
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "G"
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
                and PER_PROCESS_NAME.fullmatch(node.slice.value)):
            names.append(node.slice.value)
    return names


def _evaluable(source: str) -> bool:
    if not isinstance(source, str) or len(source) > 2000:
        return False
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        return False
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return _allowed(tree.body) and bool(names & {"G", "L"})


def add_lambda_guard(guard_manager: Any, replacements: list[dict[str, Any]], objects: list[Any],
                     bindings: list[dict[str, Any]], global_scope: dict[str, Any]) -> None:
    """Add one root guard to ``guard_manager`` (a GuardManagerWrapper): each
    replacement's source, read with its bindings over the frame's globals, is
    the object given for it."""
    if not replacements:
        return
    objects_by_index = list(objects)
    same_objects = _compiled_check(replacements, objects_by_index, bindings, global_scope)

    # Dynamo evaluates each part where the guard set fails (the reason of a
    # recompile, guard failure reports): each must be Python that is False
    # where its check fails.  It calls a checker placed in the guard set's
    # closure variables, and says in a comment what it checks.
    def same_object(value: Any, index: int) -> bool:
        obj = objects_by_index[index]
        return value is obj or (isinstance(obj, identity.SameCode) and obj.matches(value))

    closure_vars = getattr(guard_manager, "closure_vars", None)
    if isinstance(closure_vars, dict):
        closure_vars[CHECKER_NAME] = same_object
    parts = [
        f"{CHECKER_NAME}({r['source']}, {i})  # {_comment(r['source'])} is {_comment(identity.spelled(r['object']))}"
        for i, r in enumerate(replacements)
    ]
    guard_manager.root.add_lambda_guard(same_objects, parts, None)


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(self.new, node.ctx), node) if node.id == self.old else node


def _compiled_check(replacements: list[dict[str, Any]], objects: list[Any], bindings: list[dict[str, Any]],
                    global_scope: dict[str, Any]) -> Callable[[Any], bool]:
    """One Python function that reads every replaced source from the frame's
    locals (and globals) and compares it with its object: ``(source) is o``,
    or the code's digest for a code check.  The sources are of the checked
    grammar (:func:`_evaluable`); a source that no longer reads fails the
    guard.  One call per check of the guard set, with no ``eval`` of each
    source and no namespace built per call."""
    namespace: dict[str, Any] = {"__builtins__": builtins, "G": global_scope}
    terms = []
    for i, (r, obj, bound) in enumerate(zip(replacements, objects, bindings, strict=True)):
        tree = ast.parse(r["source"], mode="eval")
        if not _allowed(tree.body):
            raise ValueError(f"unexpected guard source {r['source']!r}")
        if bound:
            namespace[f"___G{i}"] = ChainMap(bound, global_scope)
            tree = _Rename("G", f"___G{i}").visit(tree)
        expr = ast.unparse(tree.body)
        namespace[f"___o{i}"] = obj
        terms.append(f"___o{i}.matches({expr})" if isinstance(obj, identity.SameCode) else f"({expr}) is ___o{i}")
    source = ("def ___same_objects(L):\n    try:\n        return bool(" + " and ".join(terms) + ")\n"
              "    except Exception:\n        return False\n")
    exec(compile(source, "<torch_aotcache replaced guards>", "exec"), namespace)  # noqa: S102 - checked sources
    check: Callable[[Any], bool] = namespace["___same_objects"]
    return check


# The name of a replacement guard set's checker among Dynamo's closure
# variables of that guard set (read where a recompile's reason is found).
CHECKER_NAME = "___torch_aotcache_same_object"


def _comment(text: str) -> str:
    """``text`` as it may stand in a one-line comment of a guard part."""
    return " ".join(str(text).split())[:200]


def resolve_all(replacements: list[dict[str, Any]]) -> list[Any]:
    """The objects the replacements name in this process; raises identity.Unresolved."""
    return resolve_with_bindings(replacements)[0]


def resolve_with_bindings(replacements: list[dict[str, Any]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """The objects the replacements name in this process, and the objects of
    the per-process globals each reads; raises identity.Unresolved."""
    if not isinstance(replacements, list):
        raise identity.Unresolved("malformed replacements")
    objects, bindings = [], []
    for r in replacements:
        if not isinstance(r, dict) or not isinstance(r.get("source"), str) or not isinstance(r.get("object"), dict):
            raise identity.Unresolved("malformed replacement")
        if not _evaluable(r["source"]):
            raise identity.Unresolved(f"unexpected guard source {r['source']!r}")
        described = r.get("bindings", {})
        names = per_process_globals(r["source"])
        if not isinstance(described, dict) or set(described) != set(names):
            raise identity.Unresolved(f"bindings do not match the source {r['source']!r}")
        objects.append(identity.resolve(r["object"]))
        bindings.append({name: identity.resolve(described[name]) for name in names})
    return objects, bindings


# ---------------------------------------------------------------------------
# Wrappers installed while the frame cache is on (install.py)
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _signature(function: Callable[..., Any]) -> Any:
    import inspect

    return inspect.signature(function)


def check_function_manager_init(original: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``CheckFunctionManager.__init__`` with our filter in place of upstream's drop."""
    import torch

    bound = _signature(original).bind(*args, **kwargs)
    bound.apply_defaults()
    self = bound.arguments["self"]
    output_graph = bound.arguments.get("output_graph")
    collector = Collector(bound.arguments.get("guard_filter_fn"), getattr(output_graph, "global_scope", None))
    bound.arguments["guard_filter_fn"] = collector
    # For serialize_guards, called from within (explicitly, on the object it serializes for).
    self.__dict__[COLLECTOR_ATTR] = collector
    try:
        with torch._dynamo.config.patch(caching_precompile=False):
            original(*bound.args, **bound.kwargs)
    finally:
        self.__dict__.pop(COLLECTOR_ATTR, None)
    if collector.kept:
        count("frame_guard_kept", len(collector.kept))
        log.debug("torch_aotcache: identity guards kept (frame not packaged): %s", collector.kept)
    if collector.replacements:
        count("frame_guard_replaced", len(collector.replacements))
    state = getattr(self, "guards_state", None)
    if state is not None:
        remember(state_digest(state), list(collector.replacements), _configs_now())


# The attribute of a ``CheckFunctionManager`` being built that holds its
# Collector, for :func:`serialize_guards`.
COLLECTOR_ATTR = "_torch_aotcache_collector"


def serialize_guards(original: Callable[..., Any], manager: Any, builder: Any, sorted_guards: list[Any],
                     output_graph: Any) -> bytes:
    """``CheckFunctionManager.serialize_guards``: the guard set is serialized
    without the identity guards we replaced (as upstream drops them), which
    this process keeps as Dynamo built them (Note [Replacement guards])."""
    collector = manager.__dict__.get(COLLECTOR_ATTR)
    if isinstance(collector, Collector) and collector.replaced_guards:
        sorted_guards = [g for g in sorted_guards if id(g) not in collector.replaced_guards]
    result: bytes = original(manager, builder, sorted_guards, output_graph)
    return result


# The attribute of a loaded ``GuardsState`` that carries what the load of its
# package resolved for it (a :class:`Loaded`), from ``load_guards_state`` to
# the ``load_guard_manager`` call that follows it in ``CompilePackage.install``.
LOADED_ATTR = "_torch_aotcache_loaded"


def load_guards_state(original: Callable[..., Any], data: bytes) -> Any:
    """``torch._dynamo.package.load_guards_state``: the state of a guard set
    of a package we loaded carries what the load resolved for it."""
    state = original(data)
    with _lock:
        loaded = _resolved.get(state_digest(data))
    if loaded is not None:
        setattr(state, LOADED_ATTR, loaded)
    return state


def load_guard_manager(original: Callable[..., Any], guards_state: Any, target_code: Any,
                       runtime_global_scope: Any) -> Any:
    """``torch._dynamo.package.load_guard_manager``: a loaded guard set gets
    the replacement guards its entry carries (Note [Replacement guards]) and
    the check of its configs (Note [Configs of a compile] in frames.py)."""
    manager = original(guards_state, target_code, runtime_global_scope)
    loaded: Loaded | None = getattr(guards_state, LOADED_ATTR, None)
    if loaded is not None:
        add_config_check(manager, loaded.configs)
        if loaded.replacements:
            add_lambda_guard(manager, loaded.replacements, loaded.objects, loaded.bindings, runtime_global_scope)
            count("frame_guard_replaced", len(loaded.replacements))
    return manager


@dataclasses.dataclass(frozen=True)
class Loaded:
    """What the load of a package resolved for one of its guard sets."""

    replacements: list[dict[str, Any]]
    objects: list[Any]
    bindings: list[dict[str, Any]]
    configs: dict[str, str]


# sha256(guards_state) -> what the load of a package resolved for it.
_resolved: dict[str, Loaded] = {}


def expect_loaded(digest: str, loaded: Loaded) -> None:
    with _lock:
        _resolved[digest] = loaded
        _by_state[digest] = loaded.replacements
        _configs_by_state[digest] = loaded.configs


def forget_loaded(digests: list[str]) -> None:
    """Drop what loads resolved for these guard sets (their package is
    installed, or failed to): no reference to the program's objects stays
    here past their package."""
    with _lock:
        for digest in digests:
            _resolved.pop(digest, None)


def forget() -> None:
    """Forget every guard set (``AOTAutogradCache.clear()``, ``fresh_cache()``)."""
    with _lock:
        _resolved.clear()
        _by_state.clear()
        _configs_by_state.clear()


def _configs_now() -> dict[str, str] | None:
    """The digests of the configs now (Note [Configs of a compile] in
    frames.py), or None where one cannot be named (the frame is not saved)."""
    from . import configs

    try:
        return configs.config_components()
    except configs.Unkeyable as e:
        log.debug("torch_aotcache: a compile's configs cannot be named: %s", e)
        return None


# The name of the config check among a loaded guard set's closure variables.
CONFIG_CHECKER_NAME = "___torch_aotcache_configs_as_compiled"


def add_config_check(guard_manager: Any, expected: dict[str, str]) -> None:
    """Add to a loaded guard set the guard of Note [Configs of a compile] in
    frames.py: the configs are the ones it was compiled under, checked until
    it first holds."""
    import torch

    held = False
    # torch's own hashes of the configs (cached by torch until a config is
    # set): a check that failed is not computed again until one changed.
    modules = (torch._dynamo.config, torch._inductor.config, torch._functorch.config)
    failed_at: tuple[bytes, ...] | None = None

    def configs_as_compiled(*_: Any) -> bool:
        nonlocal held, failed_at
        if held:
            return True
        hashes = tuple(m.get_hash() for m in modules)
        if hashes == failed_at:
            return False
        now = _configs_now()
        if now is not None and all(now.get(k) == v for k, v in expected.items()) and set(now) == set(expected):
            held = True
        else:
            failed_at = hashes
        return held

    closure_vars = getattr(guard_manager, "closure_vars", None)
    if isinstance(closure_vars, dict):
        closure_vars[CONFIG_CHECKER_NAME] = configs_as_compiled
    part = f"{CONFIG_CHECKER_NAME}()  # the configs this frame was compiled under (torch_aotcache)"
    guard_manager.root.add_lambda_guard(configs_as_compiled, [part], None)
