"""
Switching the frame cache on and off (Note [Caching Dynamo's frames]).

Note [When the frame cache switches]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Dynamo looks for a stored frame when ``torch.compile`` wraps a function, not
when it first runs, so the frame cache must be in place before that call.
``import torch_aotcache`` wraps ``torch.compile`` (at once if torch is
imported, else when it is; see installer/lazy.py); each call reads
``config.dynamo`` (``TORCH_AOTCACHE_DYNAMO``) and switches the frame cache
on or off to match before going on.  On: torch_aotcache is installed, our
store takes the place of ``torch._dynamo.package.DynamoCache``,
``caching_precompile`` is set, and eight of Dynamo's functions are
wrapped: ``_optimize`` (its package learns the call's settings),
``CheckFunctionManager.__init__`` (our guard filter), ``load_guards_state``
and ``load_guard_manager`` (a loaded guard set gets its replacement guards),
``CompilePackage.install`` (a stored frame that fails to install is taken
out), ``_get_code_source``, ``CompilePackage._add_user_function`` and
``add_resume_function`` (Note [Codes a package cannot name] in codes.py).
Off puts back every object exactly.  On a release the frame cache was not
checked against (``_compat.FRAME_RELEASES``: 2.15) the knob warns once and
nothing changes.  Programs that call ``torch._dynamo.optimize`` directly get
the frame cache once a ``torch.compile`` call (or :func:`enable`) switched
it on.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from .. import _once


log = logging.getLogger(__name__)

_lock = threading.RLock()
# (owner object, attribute) -> original, for everything enable() replaced.
_saved: dict[tuple[int, str], tuple[Any, str, Any]] = {}
_enabled = False
_previous_caching_precompile: bool | None = None
_compile_wrapper: Callable[..., Any] | None = None
_original_compile: Any = None


def supported() -> bool:
    """Whether this torch has what the frame cache builds on (a release it was checked against)."""
    from .. import _compat

    if _compat.torch_release() not in _compat.FRAME_RELEASES:
        return False
    try:
        from torch._dynamo import package

        return all(hasattr(package, n) for n in ("DynamoCache", "DiskDynamoCache", "load_guard_manager",
                                                  "load_guards_state", "PrecompileCacheEntry"))
    except ImportError:
        return False


def is_enabled() -> bool:
    return _enabled


def wanted() -> bool:
    from .. import config

    return bool(config.dynamo)


def sync() -> None:
    """Match the frame cache to ``config.dynamo``; never raises."""
    try:
        if wanted():
            enable()
        elif _enabled:
            disable()
    except Exception as e:  # noqa: BLE001 - a compile never fails because of us
        if _once.first_time("frames-sync"):
            log.warning("torch_aotcache: the Dynamo frame cache stays off: %s: %s", type(e).__name__, e)
        try:
            disable()
        except Exception:  # noqa: BLE001
            pass


def _replace(owner: Any, attr: str, new: Any) -> None:
    k = (id(owner), attr)
    if k not in _saved:
        _saved[k] = (owner, attr, owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr))
    setattr(owner, attr, new)


def enable() -> bool:
    """Switch the frame cache on; returns whether it is on."""
    global _enabled, _previous_caching_precompile
    with _lock:
        if _enabled:
            return True
        if not supported():
            if _once.first_time("frames-unsupported"):
                import torch

                warnings.warn(
                    f"torch_aotcache: the Dynamo frame cache (TORCH_AOTCACHE_DYNAMO) needs torch 2.15 or "
                    f"later; this is torch {torch.__version__}, so it stays off",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return False
        import torch
        from torch._dynamo import eval_frame, guards as dynamo_guards, package, precompile_context

        from .. import install as install_cache
        from . import codes, guards

        install_cache()
        try:
            store = make_store()
            _replace(package, "DynamoCache", store)
            _replace(precompile_context, "DynamoCache", store)
            _replace(eval_frame, "_optimize", _bind(optimize, eval_frame._optimize))
            init = dynamo_guards.CheckFunctionManager.__dict__["__init__"]
            sig = inspect.signature(init)

            @functools.wraps(init)
            def check_function_manager_init(*args: Any, **kwargs: Any) -> None:
                guards.check_function_manager_init(init, sig, *args, **kwargs)

            _replace(dynamo_guards.CheckFunctionManager, "__init__", check_function_manager_init)
            _replace(package, "load_guards_state", _bind(guards.load_guards_state, package.load_guards_state))
            _replace(package, "load_guard_manager", _bind(guards.load_guard_manager, package.load_guard_manager))
            install = package.CompilePackage.__dict__["install"]

            @functools.wraps(install)
            def install_package(self: Any, backends: Any) -> None:
                install_or_start_afresh(install, self, backends)

            _replace(package.CompilePackage, "install", install_package)
            _replace(package, "_get_code_source", _bind(codes.get_code_source, package._get_code_source))
            add_user_function = package.CompilePackage.__dict__["_add_user_function"]

            @functools.wraps(add_user_function)
            def add_user_function_or_leave_out(self: Any, code: Any) -> None:
                codes.add_user_function(add_user_function, self, code)

            _replace(package.CompilePackage, "_add_user_function", add_user_function_or_leave_out)
            add_resume_function = package.CompilePackage.__dict__["add_resume_function"]

            @functools.wraps(add_resume_function)
            def add_resume_function_or_leave_out(self: Any, code: Any, *args: Any, **kwargs: Any) -> None:
                codes.add_resume_function(add_resume_function, self, code, *args, **kwargs)

            _replace(package.CompilePackage, "add_resume_function", add_resume_function_or_leave_out)
            _previous_caching_precompile = torch._dynamo.config.caching_precompile
            torch._dynamo.config.caching_precompile = True
        except BaseException:
            _restore()
            raise
        _enabled = True
        log.debug("torch_aotcache: Dynamo frame cache on")
        return True


def disable() -> None:
    """Switch the frame cache off, restoring every object it replaced."""
    global _enabled, _previous_caching_precompile
    with _lock:
        if _previous_caching_precompile is not None:
            import torch

            torch._dynamo.config.caching_precompile = _previous_caching_precompile
            _previous_caching_precompile = None
        _restore()
        _enabled = False


def _restore() -> None:
    for owner, attr, original in reversed(list(_saved.values())):
        setattr(owner, attr, original)
    _saved.clear()


def _bind(ours: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return ours(original, *args, **kwargs)

    wrapper.__original__ = original  # type: ignore[attr-defined]
    return wrapper


def make_store() -> Any:
    """Our store, in the shape of upstream's ``DiskDynamoCache``: Dynamo records
    and loads packages through it; ``write``/``read`` (the explicit
    ``save_cache_artifacts`` path) stay upstream's."""
    from torch._dynamo.package import DiskDynamoCache

    from . import frames

    class FrameStore(DiskDynamoCache):
        def record_package(self, package: Any) -> None:
            super().record_package(package)
            try:
                frames.package_recorded(package)
            except Exception as e:  # noqa: BLE001
                log.warning("torch_aotcache: cannot record a Dynamo frame package: %s", e)

        def load(self, fn: Any) -> Any:
            # Called by _TorchDynamoContext.__call__, whose package names the
            # torch.compile call's settings (installed by optimize below).
            caller = sys._getframe(1).f_locals.get("self")
            try:
                return frames.load(fn, getattr(caller, "_package", None))
            except Exception as e:  # noqa: BLE001 - a lookup never fails a compile
                from ..counters import count

                count("frame_load_failed")
                log.warning("torch_aotcache: Dynamo frame lookup failed: %s", e,
                            exc_info=log.isEnabledFor(logging.DEBUG))
                return None

    return FrameStore(DiskDynamoCache().path_prefix())


def install_or_start_afresh(original: Callable[..., Any], package: Any, backends: Any) -> None:
    """``CompilePackage.install``: a package we loaded that fails to install
    is taken out again and the package starts afresh, so Dynamo traces as if
    nothing was stored (upstream's caller cannot recover from that: it would
    initialize the package twice).  Packages from elsewhere install as upstream's."""
    from . import frames

    if not any(isinstance(b, frames.SealedBackend) for b in dict(backends or {}).values()):
        original(package, backends)
        return
    try:
        original(package, backends)
    except Exception as e:  # noqa: BLE001 - a stored frame never fails a compile
        from ..counters import count

        count("frame_install_failed")
        log.warning("torch_aotcache: a stored Dynamo frame did not install (%s: %s); tracing instead",
                    type(e).__name__, e)
        fn = package._innermost_fn
        try:
            package.uninstall()
        finally:
            package._initialized = False
            package._codes = {}
            package._source_info = type(package._source_info)(inlined_sources=set())
            package.initialize(fn, None, ignore_inlined_sources=False)


def optimize(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``torch._dynamo.eval_frame._optimize``: the package it makes learns the
    call's settings (Note [Frame keys] in frames.py)."""
    ctx = original(*args, **kwargs)
    package = getattr(ctx, "_package", None)
    if package is not None and _enabled and not package.is_initialized():
        from . import frames

        try:
            bound = inspect.signature(original).bind(*args, **kwargs)
            bound.apply_defaults()
            package._aotcache_settings = frames.settings_for(dict(bound.arguments))
        except frames.Unkeyable as e:
            log.debug("torch_aotcache: frames of this torch.compile call are not cached: %s", e)
        except Exception as e:  # noqa: BLE001
            log.debug("torch_aotcache: cannot key this torch.compile call: %s", e)
    return ctx


# ---------------------------------------------------------------------------
# The torch.compile wrapper (Note [When the frame cache switches])
# ---------------------------------------------------------------------------


def wrap_compile() -> None:
    """Put our wrapper on ``torch.compile`` (torch is imported); idempotent."""
    global _compile_wrapper, _original_compile
    torch: Any = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "compile"):
        return
    with _lock:
        current = torch.compile
        if _compile_wrapper is not None and current is _compile_wrapper:
            return
        original = current

        @functools.wraps(original)
        def compile(*args: Any, **kwargs: Any) -> Any:
            sync()
            return original(*args, **kwargs)

        compile.__original__ = original  # type: ignore[attr-defined]
        _compile_wrapper, _original_compile = compile, original
        torch.compile = compile


def unwrap_compile() -> None:
    global _compile_wrapper, _original_compile
    with _lock:
        torch: Any = sys.modules.get("torch")
        if torch is not None and _compile_wrapper is not None and torch.compile is _compile_wrapper:
            torch.compile = _original_compile
        _compile_wrapper = _original_compile = None
    if _enabled:
        disable()
