"""
Saving and loading Dynamo's frame packages in our store (Note [Caching
Dynamo's frames] in dynamo/__init__.py).

Note [Frame keys]
~~~~~~~~~~~~~~~~~
Upstream keys a package by the function's qualified name and first line: two
scripts with a function ``f`` on line 10 share a key, and a package is
loaded whatever backend or options the ``torch.compile`` call asks for.
Ours is the SHA-256 of, each also kept in the header for ``explain``:

* ``function``: the module and qualified name of the function Dynamo
  compiles (for a module, its ``forward``);
* ``code``: the digest of its bytecode (identity.code_digest), so an edited
  function never meets the package of its old self (the sources it inlines
  are checked by upstream's digests of their lines, see :func:`_check`);
* ``settings``: the arguments of the ``torch.compile`` call that change the
  program (the backend, named by reference, with Inductor's mode and
  options; fullgraph, dynamic, the guard filter, the recompile limit);
* ``dynamo_config``, ``inductor_config``, ``functorch_config``: the
  portable configs when ``torch.compile`` is called;
* ``python`` and ``torch`` (the header's torch version is checked as for
  every entry).

A call whose settings or configs cannot be named by value or by reference (a
lambda as backend, a config holding a local function) is not cached:
``frame_unkeyable``.

Note [Configs of a compile]
~~~~~~~~~~~~~~~~~~~~~~~~~~~
The key is made when ``torch.compile`` wraps the function, but Dynamo,
AOTAutograd and Inductor read their configs when the frame is compiled, at
its first call: a program may change a config in between (Inductor's
``fallback_random`` set after ``torch.compile``).  The key's configs are the
lookup's index, nothing more; what was compiled is recorded per guard set:
the digests of the three configs when its guards were built (the end of
that compile) go into the entry (``extra["configs"]``), and a loaded guard
set gets one more guard, which holds only where the configs are those
digests at its first check (once it has held, it always holds: a compiled
frame does not recompile for a config changed later, as with no frame
cache).  A mismatch fails that guard set; Dynamo traces with the configs of
the moment, as it would have with nothing stored.

Note [Saving when the graphs are saved]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Dynamo records a package when a frame's compile ends, but the compiled graphs
it calls are complete later: AOTAutograd compiles the backward, and saves
the graph, at the first backward.  So a recorded package waits (in
:data:`_pending`) until every graph it calls is recorded, and is saved then;
each graph recorded, and each package recorded, tries again, and so does the
end of the process (a package whose graphs never completed is dropped,
counted ``frame_not_saved_incomplete``).  A package is saved again after a
recompile adds to it (one entry per key: the latest holds every variant).

Note [Registered operators in stored frames]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A frame's key is made before Dynamo traces, so it cannot name the operators
its graphs will call; a stored frame runs its compiled graphs without
computing their AOTAutograd keys.  So the AOTAutograd key of each graph of a
frame being compiled (named by ``precompile_backend_id``) leaves its ``ops``
record behind (key/registered_ops.py: the digest of the overrides of torch's
operators, and each registered operator's facets), the frame's entry carries
the records of all its graphs (``extra["ops"]``), and a lookup recomputes
them in the loading process before anything is unpickled: an operator whose
schema, fake kernel, autograd formula, kernels ... differ, or that is not
registered, is a miss (``frame_miss_ops_changed``, named by ``explain``:
``op ns::acc autograd``).  A frame one of whose graphs was not keyed by us
(bypassed, so its registrations are unknown) is not saved
(``frame_not_saved_unkeyed_ops``).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import importlib
import logging
import pickle
import sys
import threading
import time
import weakref
from typing import Any

from .. import schemas
from ..counters import count
from ..entry import framing
from ..store import explain
from . import guards, identity
from .configs import Unkeyable, config_components, digest as _digest, named as _named
from .events import listen_for_backends


log = logging.getLogger(__name__)

KEY_PREFIX = explain.FRAME_KEY_PREFIX
MODE = explain.FRAME_MODE
# Bump when what a frame entry holds, or how its key is made, changes.
FRAME_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a ``torch.compile`` call contributes to its frames' keys."""

    components: dict[str, str]


def _backend(backend: Any) -> Any:
    import torch

    if isinstance(backend, str):
        return {"name": backend}
    if isinstance(backend, torch._TorchCompileInductorWrapper):
        return {"name": "inductor", "config": _named(dict(backend.config), "the Inductor options"),
                "dynamic": _named(backend.dynamic, "dynamic")}
    return {"callable": _named(backend, "the backend")}


def settings_for(arguments: dict[str, Any]) -> Settings:
    """The settings of an ``_optimize`` call (its bound arguments); raises Unkeyable."""
    described = {}
    for name, value in sorted(arguments.items()):
        if name in ("rebuild_ctx", "guard_export_fn", "guard_fail_fn", "package"):
            continue
        described[name] = _backend(value) if name == "backend" else _named(value, name)
    return Settings({"settings": _digest(described), **config_components()})


def key_for(fn: Any, settings: Settings) -> tuple[str, dict[str, str]]:
    """The key of ``fn``'s frames under ``settings``, and its components
    (Note [Frame keys])."""
    import torch

    code = getattr(fn, "__code__", None)
    if code is None:
        raise Unkeyable(f"{fn!r:.60} has no code")
    components = {
        "format": str(FRAME_FORMAT),
        "torch": torch.__version__,
        "python": sys.version,
        "function": f"{getattr(fn, '__module__', None)}:{getattr(fn, '__qualname__', None)}",
        "code": identity.code_digest(code),
        **settings.components,
    }
    return KEY_PREFIX + _digest(components)[:40], components


def header_components(components: dict[str, str]) -> dict[str, str]:
    """The components as a header (and ``explain``) keeps them: names as
    they are, the rest as short digests."""
    return {k: (v if k in ("function", "torch", "format") else _digest(v)[:16]) for k, v in components.items()}


def _remember_miss(key: str, components: dict[str, str], reason: str | None) -> None:
    """For ``explain`` (Note [Explaining misses] in store/explain.py); never raises."""
    try:
        miss = explain.Miss(key, time.time_ns(), header_components(components),
                            {"reason": reason} if reason else {})
        explain.remember_miss(miss)
        explain.log_miss(miss)
    except Exception as e:  # noqa: BLE001
        log.debug("torch_aotcache: cannot record a frame miss for explain: %s", e)


# ---------------------------------------------------------------------------
# Saving: Note [Saving when the graphs are saved]
# ---------------------------------------------------------------------------

_lock = threading.RLock()
# id(package) -> package, waiting for its compiled graphs.
_pending: dict[int, Any] = {}
# (store root, key) -> payload digest of the last entry saved (or loaded) by
# this process under it: a package saved again unchanged is not written
# again.  Forgotten by ``AOTAutogradCache.clear()`` and ``fresh_cache()``.
_saved: dict[tuple[str, str], str] = {}


def _saved_key(key: str) -> tuple[str, str]:
    from ..store import layout

    return (layout.store_root(), key)


def forget() -> None:
    """Forget what this process saved and loaded (the store was cleared, or
    another store is in use); packages still waiting for their graphs stay."""
    with _lock:
        _saved.clear()
        _by_key.clear()
    guards.forget()


class _Forget:
    """Registered with Inductor's ``fresh_cache()`` (it calls ``cache_clear``)."""

    @staticmethod
    def cache_clear() -> None:
        forget()


_forget_registered = False


def register_forget() -> None:
    """Have ``fresh_cache()`` forget too; once per process."""
    global _forget_registered
    if _forget_registered:
        return
    try:
        from torch._inductor.utils import clear_on_fresh_cache

        clear_on_fresh_cache(_Forget)
        _forget_registered = True
    except (ImportError, AttributeError) as e:
        log.debug("torch_aotcache: fresh_cache() cannot clear the frame cache's records: %s", e)


def package_recorded(package: Any) -> None:
    """Dynamo recorded ``package`` (a frame compile ended)."""
    with _lock:
        if getattr(package, "_aotcache_settings", None) is None:
            count("frame_unkeyable")
            return
        if getattr(package, "_aotcache_loaded", False):
            # Dynamo traced a frame of a package we loaded: a guard set failed
            # (or the frame called code the package does not hold).
            count("frame_retraced")
        _pending[id(package)] = package
    save_pending()


def backend_recorded() -> None:
    """A compiled graph was recorded (AOTAutograd saved it)."""
    if _pending:
        save_pending()


listen_for_backends(backend_recorded)


def save_pending(final: bool = False) -> None:
    with _lock:
        for ident, package in list(_pending.items()):
            try:
                done = _save(package)
            except Exception as e:  # noqa: BLE001 - saving never fails a compile
                count("frame_save_failed")
                log.warning("torch_aotcache: cannot save a Dynamo frame package: %s", e,
                            exc_info=log.isEnabledFor(logging.DEBUG))
                done = True
            if done:
                _pending.pop(ident, None)
            elif final:
                count("frame_not_saved_incomplete")
                _pending.pop(ident, None)


def _save(package: Any) -> bool:
    """Save ``package`` if its graphs are all recorded; False: not yet."""
    import torch
    from torch._dynamo.package import PrecompileCacheEntry
    from torch._dynamo.precompile_context import PrecompileContext

    if getattr(package, "_current_entry", None) is not None:
        return False  # mid-compile; its record_package comes

    key, components = key_for(package._innermost_fn, package._aotcache_settings)
    entry = _merged(_entry_of(package), [_entry_of(p) for p in _siblings(key, package)])
    backends = {}
    for backend_id in sorted(entry.backend_ids):
        artifact = PrecompileContext.serialize_artifact_by_key(backend_id)
        if artifact is None:
            return False
        backends[backend_id] = artifact
    replacements: dict[str, list[dict[str, Any]]] = {}
    configs: dict[str, dict[str, str]] = {}
    for code in entry.codes:
        for guarded in code.guarded_codes:
            digest = guards.state_digest(guarded.guards_state)
            found = guards.recorded(digest)
            compiled_under = guards.compiled_configs(digest)
            if found is None or compiled_under is None:
                count("frame_not_saved_unknown_guards")
                return True
            if found:
                replacements[digest] = found
            configs[digest] = compiled_under
    if not any(code.guarded_codes for code in entry.codes):
        count("frame_not_saved_empty")
        return True
    needed_globals = _per_process_globals(entry)
    if needed_globals is None:
        count("frame_not_saved_unnamed_global")
        return True
    from ..key import registered_ops

    ops = registered_ops.take_for_backends(sorted(entry.backend_ids))
    if ops is None:
        count("frame_not_saved_unkeyed_ops")
        return True
    payload = pickle.dumps(PrecompileCacheEntry(entry, backends))
    # The compiled C++ kernels of its graphs travel with it, as in our
    # AOTAutograd entries (Note [Self-contained entries] in inductor/artifacts.py).
    from ..inductor import artifacts

    kernels: dict[str, bytes] = {}
    for artifact in backends.values():
        kernels.update(artifacts.collect(getattr(artifact, "content", None)))
    digest = schemas.payload_digest(payload)
    if _saved.get(_saved_key(key)) == digest:
        return True
    forward_cost = sum(int(getattr(getattr(a, "content", None), "forward_time_taken_ns", 0) or 0)
                       for a in backends.values())
    backward_cost = sum(int(getattr(getattr(a, "content", None), "backward_time_taken_ns", 0) or 0)
                        for a in backends.values())
    header = schemas.make_header(
        key=key,
        payload=payload,
        torch_version=torch.__version__,
        created_ns=time.time_ns(),
        forward_cost_ns=forward_cost,
        backward_cost_ns=backward_cost,
        guards_expr=None,
        mode=MODE,
        components=header_components(components),
        extra={
            schemas.EXTRA_FUNCTION: components["function"],
            schemas.EXTRA_REPLACEMENTS: replacements,
            schemas.EXTRA_GLOBALS: needed_globals,
            schemas.EXTRA_CODES: len(entry.codes),
            schemas.EXTRA_GUARDED_CODES: sum(len(c.guarded_codes) for c in entry.codes),
            schemas.EXTRA_NOT_PACKAGED_CODES: sum(1 for c in entry.codes if c.bypassed),
            # See Note [Registered operators in stored frames].
            schemas.EXTRA_OPS: ops,
            schemas.EXTRA_CONFIGS: configs,
        },
        artifacts=sorted(kernels.items()),
    )
    data = framing.encode_entry(header, payload, [b for _, b in sorted(kernels.items())])
    from ..store import stats
    from ..tiers import lookup

    try:
        path = lookup.local_store.put(key, header.entry_id, data)
    except OSError as e:
        lookup.local_store.report_fault("write", e)
        return True
    _saved[_saved_key(key)] = digest
    stats.record("save", len(data))
    count("frame_saved")
    log.info("torch_aotcache: saved Dynamo frame package %s (%s) to %s", key, components["function"], path)
    _remote_put(key, header.entry_id, data)
    return True


# Note [Packages of one key]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~
# Every ``torch.compile`` call makes a package of its own, but two calls on
# one function with the same settings (two instances of one module class,
# whose ``forward`` is one code object) share a key, and Dynamo keeps the
# compiled variants of a code on the code object, for all of them.  Saved one
# by one, the later package would replace the earlier, and a warm process
# would trace the variant of the other again.  So the entry saved under a key
# holds the variants of every package of that key this process compiled or
# loaded (:data:`_by_key`): codes are matched by module, names and bytecode,
# and a variant (guard set) is added once, by its digest.  Processes that
# save one key apart still replace each other's entry (the latest wins; a
# process that loads it and traces another variant saves the union).

# key -> the packages of this process saved or loaded under it (weakly: a
# package lives as long as its compiled function).
_by_key: dict[str, weakref.WeakSet[Any]] = {}


def _siblings(key: str, package: Any) -> list[Any]:
    """The other live packages of ``key`` with nothing being compiled, and
    records ``package`` as one of them."""
    with _lock:
        known = _by_key.setdefault(key, weakref.WeakSet())
        others = [p for p in known if p is not package]
        known.add(package)
    return [p for p in others if p.is_initialized() and getattr(p, "_current_entry", None) is None]


def _entry_of(package: Any) -> Any:
    from . import codes

    return _with_true_module(codes.without_unnamed(package, package.cache_entry()), package._innermost_fn)


def _code_identity(code: Any) -> tuple[str, tuple[str, ...], str | None, str]:
    return (code.python_module, tuple(code.function_names), code.code_source,
            hashlib.sha256(pickle.dumps(code.python_code)).hexdigest())


def _merged(entry: Any, others: list[Any]) -> Any:
    """``entry`` with the codes and variants of ``others`` it lacks (Note
    [Packages of one key])."""
    if not others:
        return entry
    merged = list(entry.codes)
    where = {_code_identity(c): i for i, c in enumerate(merged)}
    inlined = set(entry.source_info.inlined_sources)
    for other in others:
        inlined |= set(other.source_info.inlined_sources)
        for code in other.codes:
            ident = _code_identity(code)
            i = where.get(ident)
            if i is None:
                where[ident] = len(merged)
                merged.append(code)
                continue
            mine = merged[i]
            if code.bypassed:
                continue
            if mine.bypassed:
                merged[i] = code
                continue
            have = {guards.state_digest(g.guards_state) for g in mine.guarded_codes}
            extra = [g for g in code.guarded_codes if guards.state_digest(g.guards_state) not in have]
            if extra:
                merged[i] = dataclasses.replace(
                    mine,
                    guarded_codes=[*mine.guarded_codes, *extra],
                    backend_ids=list(dict.fromkeys([*mine.backend_ids, *code.backend_ids])),
                    import_sources={**code.import_sources, **mine.import_sources},
                )
    return dataclasses.replace(entry, codes=merged,
                               source_info=dataclasses.replace(entry.source_info, inlined_sources=inlined))


def _with_true_module(entry: Any, fn: Any) -> Any:
    """``entry`` with its first code recorded under the module whose globals
    the function runs with.

    Upstream records the compiled function's ``__module__``, which
    ``functools.wraps`` copies from the function a decorator wraps: the
    wrapper of a decorated ``forward`` (transformers' models) is recorded
    under the model's module, and a loaded package then evaluates its guards
    on global names, and installs its compiled graphs, in the wrong module's
    globals (the guards fail, or worse, read another module's value).  The
    module whose dict *is* the function's ``__globals__`` is the right one."""
    globals_ = getattr(fn, "__globals__", None)
    name = globals_.get("__name__") if isinstance(globals_, dict) else None
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is None or module.__dict__ is not globals_ or not entry.codes:
        return entry
    main = entry.codes[0]
    if main.python_module == name:
        return entry
    return dataclasses.replace(entry, codes=[dataclasses.replace(main, python_module=name), *entry.codes[1:]])


# Note [Globals of one process]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Dynamo's transformed bytecode may read globals it installed under names made
# of an object's address (``___module_collections_139983710817152_c0``,
# ``output_graph.install_global_by_id``).  Upstream's package does not carry
# them: a later process runs the bytecode and fails with a NameError.  We name
# each such object by reference when saving (a frame holding one we cannot
# name is not saved) and put it back under the same name in the module before
# the package is installed (:func:`_restore_globals`).


def _names_read(code: Any) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, type(code)):
            names |= _names_read(const)
    return names


def _per_process_globals(entry: Any) -> dict[str, dict[str, Any]] | None:
    """module -> {name: description} of the per-process globals the package's
    bytecode reads; None if one has no name by reference."""
    from torch._dynamo.package import SerializedCode

    found: dict[str, dict[str, Any]] = {}
    for code in entry.codes:
        names: set[str] = set()
        for guarded in code.guarded_codes:
            names |= {n for n in _names_read(SerializedCode.to_code_object(guarded.dynamo_code))
                      if guards.PER_PROCESS_NAME.fullmatch(n)}
        if not names:
            continue
        module = sys.modules.get(code.python_module)
        if module is None:
            return None
        for name in sorted(names):
            if name not in module.__dict__:
                return None
            description = identity.describe(module.__dict__[name])
            if description is None:
                return None
            found.setdefault(code.python_module, {})[name] = description
    return found


def _restore_globals(described: Any) -> None:
    """Put back the per-process globals a package's bytecode reads (Note
    [Globals of one process]); raises Miss before changing anything if one
    cannot be."""
    if not isinstance(described, dict):
        raise Miss("malformed", "globals are malformed")
    plan = []
    for module_name, names in described.items():
        module = sys.modules.get(module_name)
        if module is None or not isinstance(names, dict):
            raise Miss("guard_unresolved", f"module {module_name} is not imported")
        for name, description in names.items():
            if not isinstance(name, str) or not guards.PER_PROCESS_NAME.fullmatch(name):
                raise Miss("malformed", f"unexpected global name {name!r}")
            try:
                value = identity.resolve(description)
            except identity.Unresolved as e:
                raise Miss("guard_unresolved", str(e)) from None
            current = module.__dict__.get(name, value)
            if current is not value:
                raise Miss("guard_unresolved", f"{module_name}.{name} holds another object here")
            plan.append((module, name, value))
    for module, name, value in plan:
        module.__dict__[name] = value


def _remote_put(key: str, entry_id: str, data: bytes) -> None:
    from ..tiers import lookup

    if not lookup.remote_tier_requested(False):
        return
    from ..tiers import remote

    t = remote.tier(True)
    if t is not None:
        t.put(key, entry_id, data)


@atexit.register
def _at_exit() -> None:
    if _pending:
        save_pending(final=True)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


class Miss(Exception):
    """A stored package that must not be installed here; its reason is counted."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def load(fn: Any, package: Any) -> Any:
    """The verified, checked ``PrecompileCacheEntry`` stored for ``fn`` as
    ``package`` (its ``torch.compile`` call) would compile it, or None."""
    settings = getattr(package, "_aotcache_settings", None)
    if settings is None:
        count("frame_unkeyable")
        return None
    try:
        from torch._dynamo.eval_frame import innermost_fn

        key, components = key_for(innermost_fn(fn), settings)
    except Unkeyable as e:
        count("frame_unkeyable")
        log.debug("torch_aotcache: frame not cached: %s", e)
        return None
    from ..store import stats
    from ..tiers import lookup

    remote = lookup.remote_tier_requested(False)
    for tier in lookup.tiers(True, remote):
        for candidate in tier.candidates(key):
            try:
                entry = _verified(key, candidate)
            except schemas.EntryFormatError as e:
                lookup.reject(tier, key, candidate, e)
                continue
            try:
                result = _check(entry, FirstRun(entry.header.compile_cost_ns))
            except Miss as e:
                count(f"frame_miss_{e.reason}")
                stats.record("frame_miss")
                log.info("torch_aotcache: stored Dynamo frame for %s not used: %s", key, e)
                _remember_miss(key, components, f"{e.reason}: {e}")
                return None
            # A hit is counted when the stored frame first runs (a guard set
            # may still fail, and Dynamo trace); see FirstRun.
            count("frame_loaded")
            if package is not None:
                package._aotcache_loaded = True
                with _lock:
                    _by_key.setdefault(key, weakref.WeakSet()).add(package)
            if candidate.path is not None:
                lookup.local_store.record_hit(candidate.path)
            elif tier.name != "local":
                try:
                    lookup.local_store.put(key, entry.header.entry_id, entry.data)
                except OSError as e:
                    lookup.local_store.report_fault("write", e)
            _saved[_saved_key(key)] = entry.header.payload_sha256
            log.info("torch_aotcache: Dynamo frame hit for %s", key)
            return result
    count("frame_miss")
    stats.record("frame_miss")
    _remember_miss(key, components, None)
    return None


def _verified(key: str, candidate: Any) -> schemas.VerifiedEntry:
    """The lookup's verification of every candidate (tiers/lookup.py), and a frame's mode."""
    from ..tiers import lookup

    entry = lookup._verified(key, candidate)
    if entry.header.mode != MODE:
        raise schemas.EntryFormatError(f"entry holds {entry.header.mode!r}, not a Dynamo frame")
    return entry


def _check(entry: schemas.VerifiedEntry, first_run: FirstRun) -> Any:
    """Everything that must hold before the package is installed; raises Miss."""
    from torch._dynamo.package import PrecompileCacheEntry, _hash_sourcelines
    from torch._dynamo.precompile_context import BackendCacheArtifact, PrecompileContext

    replacements = entry.header.extra.get(schemas.EXTRA_REPLACEMENTS, {})
    if not isinstance(replacements, dict):
        raise Miss("malformed", "replacements are malformed")
    # See Note [Registered operators in stored frames]; before anything is unpickled.
    from ..key import registered_ops

    ops = entry.header.extra.get(schemas.EXTRA_OPS)
    changed = registered_ops.changed_since(ops)
    if changed is not None:
        raise Miss("ops_changed", "differs: " + changed)
    if not isinstance(ops, dict):
        raise Miss("malformed", "the registered operators are malformed")
    configs = entry.header.extra.get(schemas.EXTRA_CONFIGS)
    if not isinstance(configs, dict) or not all(isinstance(c, dict) for c in configs.values()):
        raise Miss("malformed", "the configs of its compiles are malformed")
    resolved = {}
    for digest, items in replacements.items():
        try:
            resolved[digest] = (items, *guards.resolve_with_bindings(items))
        except identity.Unresolved as e:
            raise Miss("guard_unresolved", str(e)) from None
    from ..inductor import light_runtime

    try:
        result = light_runtime.loads(entry.payload)
    except Exception as e:  # noqa: BLE001 - a verified payload that does not load here
        raise Miss("load_failed", f"cannot unpickle: {type(e).__name__}: {e}") from None
    if not isinstance(result, PrecompileCacheEntry):
        raise Miss("malformed", f"payload is a {type(result).__name__}")
    try:
        result.dynamo.check_versions()
    except Exception as e:  # noqa: BLE001
        raise Miss("system_changed", str(e)) from None
    for source in result.dynamo.source_info.inlined_sources:
        try:
            module = importlib.import_module(source.module)
            same = _hash_sourcelines(module, source.firstlineno, source.lastlineno) == source.checksum
        except Exception as e:  # noqa: BLE001
            raise Miss("source_changed", f"cannot read {source.module}: {e}") from None
        if not same:
            raise Miss("source_changed", f"{source.module} lines {source.firstlineno}-{source.lastlineno} changed")
    for code in result.dynamo.codes:
        if code.bypassed:
            continue
        for backend_id in code.backend_ids:
            if not isinstance(result.backends.get(backend_id), BackendCacheArtifact):
                raise Miss("incomplete", f"compiled graph {backend_id} is missing")
        for guarded in code.guarded_codes:
            digest = guards.state_digest(guarded.guards_state)
            if digest not in configs:
                raise Miss("malformed", "a guard set has no record of its configs")
            items, objects, bindings = resolved.get(digest, ([], [], []))
            guards.expect_loaded(digest, guards.Loaded(items, objects, bindings, configs[digest]))
    for backend_id, artifact in result.backends.items():
        PrecompileContext.record_artifact(artifact)
        # Checked above: a later save of this package (after a recompile)
        # carries the same record for the graphs it loaded.
        registered_ops.remember_for_backend(backend_id, ops)
    _restore_globals(entry.header.extra.get(schemas.EXTRA_GLOBALS, {}))
    kernels = entry.kernels()
    sealed = {bid: SealedBackend(artifact, kernels, first_run) for bid, artifact in result.backends.items()}
    if not sealed:
        first_run()
    # Load every compiled graph now, while a failure is still a plain miss
    # (once CompilePackage.install has begun, upstream cannot go back).
    for backend_id, backend in sealed.items():
        try:
            backend.load()
        except Exception as e:  # noqa: BLE001 - a graph that does not load here: trace instead
            raise Miss("load_failed", f"compiled graph {backend_id} does not load: {type(e).__name__}: {e}") from None
    result.backends = sealed
    return result


class FirstRun:
    """Counts a frame hit (and the compile time it saved) when a stored
    frame's compiled code first runs: a loaded frame whose guards fail is
    traced, and is counted ``frame_loaded`` and ``frame_retraced``, not hit."""

    def __init__(self, cost_ns: int) -> None:
        self.cost_ns = cost_ns
        self.ran = False

    def __call__(self) -> None:
        if self.ran:
            return
        self.ran = True
        from ..store import stats

        count("frame_hit")
        stats.record("frame_hit", self.cost_ns)


class SealedBackend:
    """A stored compiled graph as ``CompilePackage.install`` uses it: its
    generated module and kernels load from the entry (``sealed_load``), with
    the light runtime imports (Note [Light runtime imports] in
    inductor/light_runtime.py), as our AOTAutograd hits load.  What it
    installs tells ``first_run`` when it is first called."""

    def __init__(self, artifact: Any, kernels: dict[str, memoryview], first_run: FirstRun) -> None:
        self.artifact = artifact
        self.kernels = kernels
        self.first_run = first_run
        self.loaded: Any = None

    def load(self) -> Any:
        if self.loaded is None:
            from ..inductor import artifacts, light_runtime

            # A compiled graph reads torch._inductor.debug's switches at every
            # call (compile_fx imports that module on the normal path).
            if not light_runtime.place_debug_switches():
                import torch._inductor.debug  # noqa: F401
            with artifacts.sealed_load(self.kernels):
                self.loaded = self.artifact.after_deserialization()
        return self.loaded

    def after_deserialization(self) -> Any:
        compiled = self.load()
        first_run = self.first_run

        @functools.wraps(compiled)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not first_run.ran:
                first_run()
            return compiled(*args, **kwargs)

        return run

    def __getattr__(self, name: str) -> Any:
        return getattr(self.artifact, name)
