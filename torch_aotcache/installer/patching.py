"""
Installing torch_aotcache in place of upstream's AOTAutograd cache.

Note [Patch sites]
~~~~~~~~~~~~~~~~~~
``aot_autograd.py`` and ``graph_compile.py`` import the *class*
``AOTAutogradCache`` by name, so rebinding module globals would not reach
them; attributes on the class are shared by identity and do.  The key function
is the exception: upstream looks it up as the module global
``autograd_cache.autograd_cache_key`` at call time, and so does the public key
API.  :data:`PATCH_SITES` lists every attribute we replace; a test checks the
list against upstream's call sites and each original's signature.

Originals are read with ``vars(owner)`` (the raw ``staticmethod`` /
``classmethod`` object, never a bound method) and saved once: installing twice
changes nothing, and ``uninstall()`` puts back the identical objects.  On a
torch release we do not support, ``install()`` warns once and touches
nothing; it also touches nothing if any site is missing or has another
signature than expected, so torch is never left half-patched.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from .. import _compat, _once
from . import lazy as _lazy


log = logging.getLogger(__name__)

# The package that PatchSite.replacement names its modules in.
_PACKAGE = __package__.rpartition(".")[0]

_OWNER_MODULE = "torch._functorch._aot_autograd.autograd_cache"


@dataclasses.dataclass(frozen=True)
class PatchSite:
    """One attribute we replace: ``<module>.<owner>.<attr>`` (owner None: a module global)."""

    owner: str | None
    attr: str
    kind: str  # "function", "staticmethod" or "classmethod"
    # Our replacement, by name: "module:function" or "module:Class.method"
    # ("group.module:..." for a module in a group)
    # under torch_aotcache, or a dict from release to such a name.
    replacement: str | dict[str, str]
    # Upstream's parameter names, per release (cls excluded for classmethods).
    params: dict[str, tuple[str, ...]]
    module: str = _OWNER_MODULE
    # An optional site speeds things up but is not needed for correctness: if
    # it is missing or differs, it is skipped (logged) and the rest installs.
    optional: bool = False
    # The replacement takes upstream's function as its first argument (as
    # wrapt's wrappers take ``wrapped``): see Note [Replacements receive
    # their original].
    wraps: bool = False
    # Which switch installs it: "cache" (``install()``) or "frames" (the
    # frame cache's, Note [Patch groups]).
    group: str = "cache"

    @property
    def name(self) -> str:
        return f"{self.module}.{self.owner + '.' if self.owner else ''}{self.attr}"

    def replacement_for(self, release: str, original: Any = None) -> Callable[..., Any]:
        """Our function for this site; for a ``wraps`` site, bound to
        ``original`` (the raw attribute as upstream stores it)."""
        spec = self.replacement[release] if isinstance(self.replacement, dict) else self.replacement
        mod_name, path = spec.split(":")
        # Names are relative to the package (this module sits one level down).
        ours: Any = importlib.import_module(f"{_PACKAGE}.{mod_name}")
        for i, name in enumerate(path.split(".")):
            # A method is read as stored (vars), its function taken from a
            # staticmethod / classmethod: the patch applies the kind.
            ours = _function_of(vars(ours)[name]) if i else getattr(ours, name)
        if not self.wraps:
            return ours
        if original is None:
            original = _raw(_owner_object(self), self.attr)
        return _bind_original(ours, _function_of(original))


# Note [Replacements receive their original]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# A replacement that calls upstream's code (a wrapper around it) takes the
# original function as its first parameter; installing binds it.  So no
# module of the package reaches back into this one for originals, the import
# graph has no circle, and a replacement can be read (and tested) on its own
# with any stand-in for the original.


def _bind_original(ours: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(ours)
    def replacement(*args: Any, **kwargs: Any) -> Any:
        return ours(original, *args, **kwargs)

    # Upstream's parameters, as the patch table checks them (without ours'
    # leading ``original``).
    sig = inspect.signature(ours)
    replacement.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])  # type: ignore[attr-defined]
    del replacement.__wrapped__  # a bound replacement is not ``ours`` to introspection
    replacement.__original__ = original  # type: ignore[attr-defined]
    return replacement


def _both(params: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {rel: params for rel in _compat.SUPPORTED_RELEASES}


PATCH_SITES: tuple[PatchSite, ...] = (
    PatchSite(
        None,
        "autograd_cache_key",
        "function",
        "autograd_cache:autograd_cache_key",
        _compat.UPSTREAM_PARAMS["autograd_cache_key"],
    ),
    PatchSite(
        "AOTAutogradCache",
        "try_load",
        "staticmethod",
        "autograd_cache:AOTAutogradCache.try_load",
        _compat.UPSTREAM_PARAMS["try_load"],
    ),
    PatchSite(
        "AOTAutogradCache",
        "_lookup",
        "staticmethod",
        "autograd_cache:AOTAutogradCache._lookup",
        _both(("key", "local", "remote", "args", "cache_info", "aot_config")),
    ),
    PatchSite(
        "AOTAutogradCache",
        "make_entry",
        "staticmethod",
        "autograd_cache:AOTAutogradCache.make_entry",
        dict(_compat.MAKE_ENTRY_PARAMS),
    ),
    PatchSite(
        "AOTAutogradCache",
        "save",
        "staticmethod",
        "autograd_cache:AOTAutogradCache.save",
        _both(("key", "entry", "remote")),
    ),
    PatchSite(
        "AOTAutogradCache",
        "generate_guards_expression",
        "classmethod",
        "autograd_cache:AOTAutogradCache.generate_guards_expression",
        _both(("cache_info",)),
    ),
    PatchSite(
        "AOTAutogradCache",
        "clear",
        "staticmethod",
        "autograd_cache:AOTAutogradCache.clear",
        _both(()),
    ),
    PatchSite(
        "AOTAutogradCache",
        "_write_to_local_cache",
        "staticmethod",
        "autograd_cache:AOTAutogradCache._write_to_local_cache",
        _both(("key", "content")),
        wraps=True,
    ),
    # See Note [Persisting Inductor's ISA probe] in inductor/isa_probes.py.
    PatchSite(
        "VecISA",
        "check_build",
        "function",
        "inductor.isa_probes:check_build",
        _both(("self", "code")),
        module="torch._inductor.cpu_vec_isa",
        optional=True,
        wraps=True,
    ),
    # See Note [Persisting Inductor's precompiled-header lookup].
    PatchSite(
        None,
        "_precompile_header",
        "function",
        "inductor.isa_probes:precompile_header",
        _both(("header", "hashable_cmd_line", "compile_command")),
        module="torch._inductor.codecache",
        optional=True,
        wraps=True,
    ),
    # See Note [Self-contained entries] in inductor/artifacts.py.
    PatchSite(
        "CppCodeCache",
        "load_async",
        "classmethod",
        "inductor.artifacts:load_async",
        _compat.UPSTREAM_PARAMS["load_async"],
        module="torch._inductor.codecache",
        optional=True,
        wraps=True,
    ),
    # See Note [Entries that stand for Inductor's FX graph cache].
    PatchSite(
        "FxGraphCache",
        "clear",
        "staticmethod",
        "autograd_cache:clear_fx_graph_cache",
        _both(()),
        module="torch._inductor.codecache",
        optional=True,
        wraps=True,
    ),
    # See Note [Front door] in inductor/front_door.py.
    PatchSite(
        "_TorchCompileInductorWrapper",
        "__call__",
        "function",
        "inductor.front_door:inductor_call",
        _compat.UPSTREAM_PARAMS["inductor_call"],
        module="torch",
        optional=True,
        wraps=True,
    ),
    PatchSite(
        "_TorchCompileInductorWrapper",
        "get_compiler_config",
        "function",
        "inductor.front_door:compiler_config",
        _both(("self",)),
        module="torch",
        optional=True,
        wraps=True,
    ),
    PatchSite(
        "FxGraphCache",
        "cache_hit_post_compile",
        "staticmethod",
        "inductor.front_door:cache_hit_post_compile",
        _both(("graph", "cache_info", "constants")),
        module="torch._inductor.codecache",
        optional=True,
        wraps=True,
    ),
    # See Note [Releasing a flight the compile does not save] in tiers/single_flight.py.
    PatchSite(
        None,
        "create_aot_state",
        "function",
        "tiers.single_flight:create_aot_state",
        _both(
            ("stack", "flat_fn", "fake_flat_args", "flat_args_descs", "aot_config", "fake_mode", "shape_env")
        ),
        module="torch._functorch.aot_autograd",
        optional=True,
        wraps=True,
    ),
    PatchSite(
        None,
        "_cache_autograd_info",
        "function",
        "tiers.single_flight:cache_autograd_info",
        dict(_compat.CACHE_AUTOGRAD_INFO_PARAMS),
        module="torch._functorch._aot_autograd.graph_compile",
        optional=True,
        wraps=True,
    ),
    # See Note [Registered operators in Inductor's key] in key/registered_ops.py.
    PatchSite(
        "FxGraphHashDetails",
        "__init__",
        "function",
        "key.registered_ops:fx_graph_hash_details_init",
        _both(("self", "gm", "example_inputs", "fx_kwargs", "inputs_to_check")),
        module="torch._inductor.codecache",
        optional=True,
        wraps=True,
    ),
    PatchSite(
        "CompiledFxGraph",
        "write_to_disk",
        "function",
        "inductor.artifacts:write_to_disk",
        _both(("self",)),
        module="torch._inductor.output_code",
        optional=True,
        wraps=True,
    ),
    # The frame cache's (Note [Patch groups]; Note [When the frame cache
    # switches] in dynamo/install.py).
    PatchSite(
        None,
        "_optimize",
        "function",
        "dynamo.hooks:optimize",
        {"2.15": ("rebuild_ctx", "backend", "nopython", "error_on_graph_break", "guard_export_fn", "guard_fail_fn",
                  "guard_filter_fn", "disable", "dynamic", "package", "recompile_limit", "isolate_recompiles",
                  "dynamic_shapes")},
        module="torch._dynamo.eval_frame",
        wraps=True,
        group="frames",
    ),
    PatchSite(
        "CheckFunctionManager",
        "__init__",
        "function",
        "dynamo.guards:check_function_manager_init",
        {"2.15": ("self", "f_code", "output_graph", "cache_entries", "guard_fail_fn", "guard_filter_fn",
                  "shape_code_parts", "runtime_global_scope", "save_guards", "strict_error",
                  "guard_build_local_state")},
        module="torch._dynamo.guards",
        wraps=True,
        group="frames",
    ),
    PatchSite(
        "CheckFunctionManager",
        "serialize_guards",
        "function",
        "dynamo.guards:serialize_guards",
        {"2.15": ("self", "builder", "sorted_guards", "output_graph")},
        module="torch._dynamo.guards",
        wraps=True,
        group="frames",
    ),
    PatchSite(
        None,
        "load_guards_state",
        "function",
        "dynamo.guards:load_guards_state",
        {"2.15": ("guards_state",)},
        module="torch._dynamo.package",
        wraps=True,
        group="frames",
    ),
    PatchSite(
        None,
        "load_guard_manager",
        "function",
        "dynamo.guards:load_guard_manager",
        {"2.15": ("guards_state", "target_code", "runtime_global_scope")},
        module="torch._dynamo.package",
        wraps=True,
        group="frames",
    ),
    PatchSite(
        "CompilePackage",
        "install",
        "function",
        "dynamo.hooks:install_or_start_afresh",
        {"2.15": ("self", "backends")},
        module="torch._dynamo.package",
        wraps=True,
        group="frames",
    ),
    PatchSite(
        "DiskDynamoCache",
        "load",
        "function",
        "dynamo.hooks:load_frame",
        {"2.15": ("self", "fn")},
        module="torch._dynamo.package",
        wraps=True,
        group="frames",
    ),
    PatchSite(
        "DynamoStore",
        "record_package",
        "function",
        "dynamo.hooks:record_package",
        {"2.15": ("self", "package")},
        module="torch._dynamo.package",
        wraps=True,
        group="frames",
    ),
    # See Note [Codes a package cannot name] in dynamo/codes.py.
    PatchSite(
        None,
        "_get_code_source",
        "function",
        "dynamo.codes:get_code_source",
        {"2.15": ("code",)},
        module="torch._dynamo.package",
        wraps=True,
        group="frames",
    ),
    PatchSite(
        "CompilePackage",
        "_add_user_function",
        "function",
        "dynamo.codes:add_user_function",
        {"2.15": ("self", "code")},
        module="torch._dynamo.package",
        wraps=True,
        group="frames",
    ),
    PatchSite(
        "CompilePackage",
        "add_resume_function",
        "function",
        "dynamo.codes:add_resume_function",
        {"2.15": ("self", "python_code", "python_module", "function_name")},
        module="torch._dynamo.package",
        wraps=True,
        group="frames",
    ),
)

# Note [Patch groups]
# ~~~~~~~~~~~~~~~~~~~
# The cache's sites ("cache") are installed by ``install()``, from the import
# hook on (Note [Lazy install]); the frame cache's ("frames") only while it
# is on (dynamo/install.py), by :func:`install_group` and
# :func:`uninstall_group`.  Both go through this table: the same signature
# check per release (all of a group, or none of it), the same exact restore,
# the same listing for ``tools/port_check.py``.  A group other than "cache"
# is installed beside the cache's, keeps its originals apart, and is
# restored by ``uninstall()`` too.


def sites(group: str = "cache") -> tuple[PatchSite, ...]:
    """The sites of one group, in table order."""
    return tuple(s for s in PATCH_SITES if s.group == group)

# Attributes of AOTAutogradCache that upstream code calls and that we
# deliberately leave as upstream's (they are building blocks we reuse).
UNPATCHED_BY_DESIGN = frozenset(
    {"evaluate_guards", "_filter_backed_symints", "_get_shape_env", "get_remote_cache"}
)

_lock = threading.RLock()
# (module, owner, attr) -> the original raw object.  See Note [Patch sites].
_saved: dict[tuple[str, str | None, str], Any] = {}
# (module, owner, attr) -> our replacement as installed (raw object).
_replacements: dict[tuple[str, str | None, str], Any] = {}
# (module, owner, attr) -> the trampoline function placed there.
_trampolines: dict[tuple[str, str | None, str], Callable[..., Any]] = {}
# Every site holds our replacement (or was skipped as optional).
_installed = False
# Trampolines wait for the first call to install.  See Note [Lazy install]
# in installer/lazy.py.
_pending = False


def _owner_object(site: PatchSite) -> Any:
    module = importlib.import_module(site.module)
    return getattr(module, site.owner) if site.owner else module


def _raw(owner: Any, attr: str) -> Any:
    """The attribute as stored (not bound), found along the MRO for classes."""
    if inspect.isclass(owner):
        for klass in owner.__mro__:
            if attr in vars(klass):
                return vars(klass)[attr]
        raise AttributeError(attr)
    return vars(owner)[attr]


def _function_of(raw: Any) -> Callable[..., Any]:
    return raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw


def expected_signature_problem(site: PatchSite, release: str) -> str | None:
    """Why ``site``'s current original does not match what we expect, or None."""
    try:
        owner = _owner_object(site)
        raw = _saved.get((site.module, site.owner, site.attr)) or _raw(owner, site.attr)
    except (ImportError, AttributeError) as e:
        return f"{site.name} is missing: {e}"
    kinds = {"staticmethod": staticmethod, "classmethod": classmethod}
    if site.kind in kinds and not isinstance(raw, kinds[site.kind]):
        return f"{site.name} is a {type(raw).__name__}, expected a {site.kind}"
    params = list(inspect.signature(_function_of(raw)).parameters)
    if site.kind == "classmethod":
        params = params[1:]
    if tuple(params) != site.params[release]:
        return f"{site.name} takes {tuple(params)}, expected {site.params[release]}"
    return None


def is_installed() -> bool:
    """Whether our cache is in place, or will be at torch's first call into
    it (see Note [Lazy install] in installer/lazy.py)."""
    return _installed or _pending


def is_active() -> bool:
    """Whether every site holds our replacement now (not just a trampoline)."""
    return _installed


def get_original(owner: Any, attr: str) -> Any:
    """The upstream object behind a patched attribute (bound as ``getattr`` would)."""
    module = owner.__module__ if inspect.isclass(owner) else owner.__name__
    owner_name = owner.__name__ if inspect.isclass(owner) else None
    raw = _saved.get((module, owner_name, attr))
    if raw is None:
        return getattr(owner, attr)
    return raw.__get__(None, owner) if isinstance(raw, (staticmethod, classmethod)) else raw


def install() -> bool:
    """Put torch_aotcache in place of upstream's cache; returns whether it is installed."""
    global _installed, _pending
    with _lock:
        if _installed:
            return True
        _lazy.unwatch()
        import torch

        release = _compat.torch_release()
        if release is None:
            if _once.first_time("unsupported-release"):
                warnings.warn(
                    "torch_aotcache supports torch %s; this is torch %s, so torch's "
                    "own AOTAutograd cache stays in use"
                    % (", ".join(f"{r}.x" for r in _compat.SUPPORTED_RELEASES), torch.__version__),
                    RuntimeWarning,
                    stacklevel=3,
                )
            uninstall()  # trampolines placed before the release was read
            return False
        chosen = []
        problems = []
        for s in sites():
            problem = expected_signature_problem(s, release)
            if problem is None:
                chosen.append(s)
            elif s.optional:
                log.info("torch_aotcache: skipping optional patch: %s", problem)
            else:
                problems.append(problem)
        if problems:
            warnings.warn(
                "torch_aotcache left torch untouched: " + "; ".join(problems),
                RuntimeWarning,
                stacklevel=3,
            )
            uninstall()
            return False
        plan = []
        for site in chosen:
            owner = _owner_object(site)
            original = _saved.get(_site_key(site)) or _raw(owner, site.attr)
            func = site.replacement_for(release, original)
            new = {"staticmethod": staticmethod, "classmethod": classmethod}.get(site.kind)
            plan.append((site, owner, new(func) if new else func))
        try:
            for site, owner, new_obj in plan:
                k = _site_key(site)
                _saved.setdefault(k, _raw(owner, site.attr))
                _replacements[k] = new_obj
                trampoline = _trampolines.get(k)
                if trampoline is not None and _function_of(_raw(owner, site.attr)) is not trampoline:
                    # Someone wrapped the trampoline meanwhile (a mock, a
                    # timer): keep their wrapper; the trampoline it calls
                    # forwards to our replacement.
                    log.debug("torch_aotcache: %s is wrapped; installing beneath the wrapper", site.name)
                    continue
                setattr(owner, site.attr, new_obj)
            # An optional site skipped above may hold a trampoline.
            for site in sites():
                if site not in chosen and _site_key(site) in _saved:
                    setattr(_owner_object(site), site.attr, _saved.pop(_site_key(site)))
        except BaseException:
            uninstall()  # never leave torch half-patched
            raise
        _installed, _pending = True, False
        _skip_in_dynamo(True)
        # Not a patch site: it must be in place from torch's import on, not
        # from the first compile (Note [Registered operators in the key] in
        # key/registered_ops.py); here too for a torch tree we are patched into.
        from ..key import registered_ops

        registered_ops.watch_registrations()
        from ..key.fingerprint import torch_fingerprint

        torch_fingerprint.prefetch()
        log.debug("torch_aotcache installed over torch %s", torch.__version__)
        return True


def uninstall() -> None:
    """Restore every patched attribute to the identical upstream object."""
    global _installed, _pending
    with _lock:
        _lazy.unwatch()
        for group in list(_group_saved):
            uninstall_group(group)
        for site in reversed(sites()):
            k = _site_key(site)
            if k in _saved:
                setattr(_owner_object(site), site.attr, _saved.pop(k))
        _saved.clear()
        _replacements.clear()
        _trampolines.clear()
        _installed = _pending = False
        if "torch._dynamo.trace_rules" in sys.modules:
            _skip_in_dynamo(False)


# group -> (module, owner, attr) -> (the original raw object, whether the
# owner held it itself rather than inheriting it), for the groups other than
# "cache" (Note [Patch groups]).
_group_saved: dict[str, dict[tuple[str, str | None, str], tuple[Any, bool]]] = {}


def group_problems(group: str) -> list[str]:
    """Why the sites of ``group`` cannot be installed on this torch (empty: they can)."""
    release = _compat.torch_release()
    found = []
    for site in sites(group):
        if release is None or release not in site.params:
            found.append(f"{site.name} was not checked against this torch release")
            continue
        problem = expected_signature_problem(site, release)
        if problem is not None:
            found.append(problem)
    return found


def install_group(group: str) -> None:
    """Install every site of ``group`` (not "cache"), or none: raises
    RuntimeError naming the sites that do not match this torch."""
    if group == "cache":
        raise ValueError("the cache's sites are installed by install()")
    with _lock:
        if group in _group_saved:
            return
        problems = group_problems(group)
        if problems:
            raise RuntimeError("; ".join(problems))
        release = _compat.torch_release()
        assert release is not None
        saved: dict[tuple[str, str | None, str], tuple[Any, bool]] = {}
        _group_saved[group] = saved
        try:
            for site in sites(group):
                owner = _owner_object(site)
                original = _raw(owner, site.attr)
                func = site.replacement_for(release, original)
                wrap = _KINDS.get(site.kind)
                saved[_site_key(site)] = (original, site.attr in vars(owner))
                setattr(owner, site.attr, wrap(func) if wrap else func)
        except BaseException:
            uninstall_group(group)
            raise


def uninstall_group(group: str) -> None:
    """Put back the identical originals of ``group``'s sites (harmless when not installed)."""
    with _lock:
        saved = _group_saved.pop(group, {})
        for site in reversed(sites(group)):
            if _site_key(site) not in saved:
                continue
            original, own = saved[_site_key(site)]
            owner = _owner_object(site)
            if own:
                setattr(owner, site.attr, original)
            else:
                delattr(owner, site.attr)  # it was inherited: ours goes, the base's shows again


def group_installed(group: str) -> bool:
    return group in _group_saved


def _site_key(site: PatchSite) -> tuple[str, str | None, str]:
    return (site.module, site.owner, site.attr)


_KINDS: dict[str, type] = {"staticmethod": staticmethod, "classmethod": classmethod}


def place_trampolines(module_name: str) -> None:
    """Put a trampoline on each patch site of ``module_name`` (just imported)."""
    # Called inside an import.  Another thread that holds the lock while
    # installing may be waiting for this very import: wait a bounded time,
    # then leave the sites alone (installing patches every site anyway).
    if not _lock.acquire(timeout=5.0):
        log.debug("torch_aotcache: install in progress elsewhere; no trampolines on %s", module_name)
        return
    try:
        _place_trampolines_locked(module_name)
    finally:
        _lock.release()


def _place_trampolines_locked(module_name: str) -> None:
    global _pending
    if _installed:
        return
    _pending = True
    if _compat.torch_release() is None:
        install()  # warns once and leaves torch untouched
        return
    module = sys.modules[module_name]
    for site in sites():
        if site.module != module_name or _site_key(site) in _saved:
            continue
        owner = getattr(module, site.owner, None) if site.owner else module
        try:
            raw = _raw(owner, site.attr)
        except (AttributeError, TypeError):
            continue  # missing: install() reports it
        wrap = _KINDS.get(site.kind)
        if wrap is not None and not isinstance(raw, wrap):
            continue  # install() reports it
        _saved[_site_key(site)] = raw
        trampoline = _trampoline(site, raw)
        _trampolines[_site_key(site)] = trampoline
        setattr(owner, site.attr, wrap(trampoline) if wrap else trampoline)


def _install_on_first_call() -> None:
    with _lock:
        if not _pending or _installed:
            return
        try:
            install()
        except Exception as e:  # noqa: BLE001 - a compile must never fail because of us
            uninstall()
            warnings.warn(
                f"torch_aotcache could not install itself ({type(e).__name__}: {e}); "
                "torch's own AOTAutograd cache stays in use",
                RuntimeWarning,
                stacklevel=4,
            )


def _trampoline(site: PatchSite, original: Any) -> Callable[..., Any]:
    """Installs on its first call, then forwards to our replacement (or to
    upstream's function while ours is not installed)."""
    k = _site_key(site)

    def trampoline(*args: Any, **kwargs: Any) -> Any:
        _install_on_first_call()
        target = _replacements.get(k) if _installed else None
        return _function_of(original if target is None else target)(*args, **kwargs)

    trampoline.__name__ = site.attr
    trampoline.__qualname__ = f"{site.owner + '.' if site.owner else ''}{site.attr}"
    return trampoline


# Note [Dynamo never traces the cache]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Dynamo's trace rules skip the files under torch/, so upstream's cache code
# never runs under Dynamo.  Ours lives elsewhere: a compiled function that
# runs autograd inside itself (``torch.autograd.grad`` in a compiled region)
# would have Dynamo intercept our save and lookup frames and try to compile
# them.  Installing adds this package's folder to Dynamo's skip folders (and
# uninstalling takes it out again): the whole package, every group in it.
_PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")


def _skip_in_dynamo(skip: bool) -> None:
    import torch

    if _PACKAGE_DIR.startswith(os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "")):
        return  # carried into torch's tree: torch's own files are skipped already
    try:
        from torch._dynamo import trace_rules
    except ImportError:  # pragma: no cover - Dynamo is part of every supported torch
        return
    folder = _PACKAGE_DIR.replace(os.sep, "/")
    present = folder in trace_rules.SKIP_DIRS
    if skip and not present:
        trace_rules.SKIP_DIRS.append(folder)
    elif not skip and present:
        trace_rules.SKIP_DIRS.remove(folder)
    else:
        return
    trace_rules._recompile_re()


def skipped_by_dynamo() -> bool:
    """Whether Dynamo's trace rules skip this package's files (for tests)."""
    from torch._dynamo import trace_rules

    return all(
        trace_rules.check_file(os.path.join(_PACKAGE_DIR, *rel)).skipped
        for rel in (("autograd_cache.py",), ("installer", "patching.py"), ("tiers", "single_flight.py"))
    )


def is_patched(site: PatchSite) -> bool:
    return (site.module, site.owner, site.attr) in _saved
