"""
Switching the frame cache on and off (Note [Caching Dynamo's frames]).

Note [When the frame cache switches]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Dynamo looks for a stored frame when ``torch.compile`` wraps a function, not
when it first runs, so the frame cache must be in place before that call.
``import torch_aotcache`` wraps ``torch.compile`` (at once if torch is
imported, else when it is; see installer/lazy.py); each call reads
``config.dynamo`` (``TORCH_AOTCACHE_DYNAMO``) and switches the frame cache
on or off to match before going on.  On: torch_aotcache is installed,
``caching_precompile`` is set, and the sites of group "frames" in
``installer/patching.py``'s table (Note [Patch groups]) are installed, all
or none, with the same signature check per release and the same exact
restore as the cache's: ``_optimize`` (its package learns the call's
settings), ``CheckFunctionManager.__init__`` (our guard filter),
``load_guards_state`` and ``load_guard_manager`` (a loaded guard set gets
its replacement guards, carried on its state object from one to the other),
``CompilePackage.install`` (a stored frame that fails to install is taken
out), ``DiskDynamoCache.load`` and ``DynamoStore.record_package`` (our
store in place of upstream's folder), ``_get_code_source``,
``CompilePackage._add_user_function`` and ``add_resume_function`` (Note
[Codes a package cannot name] in codes.py); the replacements are in hooks.py.
Off puts back every object exactly.  On a release the frame cache was not
checked against (``_compat.FRAME_RELEASES``: 2.15) the knob warns once and
nothing changes.  ``torch._dynamo.optimize`` is wrapped the same way, when
``torch._dynamo`` is imported (installer/lazy.py calls back then).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from .. import _once


log = logging.getLogger(__name__)

_lock = threading.RLock()
_previous_caching_precompile: bool | None = None
# The frame cache's patch sites (installer/patching.py, Note [Patch groups]).
GROUP = "frames"


def supported() -> bool:
    """Whether this torch has what the frame cache builds on (a release it
    was checked against, every patch site with the signature expected)."""
    from .. import _compat

    if _compat.torch_release() not in _compat.FRAME_RELEASES:
        return False
    try:
        from torch._dynamo import package

        if not all(hasattr(package, n) for n in ("DynamoCache", "DiskDynamoCache", "PrecompileCacheEntry")):
            return False
    except ImportError:
        return False
    from ..installer import drift, patching

    # Its hooks lean on upstream's code beyond the patched signatures
    # (Note [Drift fails safe] in installer/drift.py).
    return not patching.group_problems(GROUP) and drift.intact("frames")


def is_enabled() -> bool:
    from ..installer import patching

    return patching.group_installed(GROUP)


def wanted() -> bool:
    from .. import config

    return bool(config.dynamo)


def sync() -> None:
    """Match the frame cache to ``config.dynamo``; never raises."""
    try:
        if wanted():
            enable()
        elif is_enabled():
            disable()
    except Exception as e:  # noqa: BLE001 - a compile never fails because of us
        if _once.first_time("frames-sync"):
            log.warning("torch_aotcache: the Dynamo frame cache stays off: %s: %s", type(e).__name__, e)
        try:
            disable()
        except Exception:  # noqa: BLE001
            pass


def enable() -> bool:
    """Switch the frame cache on; returns whether it is on."""
    global _previous_caching_precompile
    with _lock:
        if is_enabled():
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

        from .. import install as install_cache
        from ..installer import patching
        from . import frames

        install_cache()
        try:
            patching.install_group(GROUP)
            frames.register_forget()
            _previous_caching_precompile = torch._dynamo.config.caching_precompile
            torch._dynamo.config.caching_precompile = True
        except BaseException:
            patching.uninstall_group(GROUP)
            raise
        log.debug("torch_aotcache: Dynamo frame cache on")
        return True


def disable() -> None:
    """Switch the frame cache off, restoring every object it replaced."""
    global _previous_caching_precompile
    with _lock:
        if _previous_caching_precompile is not None:
            import torch

            torch._dynamo.config.caching_precompile = _previous_caching_precompile
            _previous_caching_precompile = None
        if "torch_aotcache.installer.patching" in sys.modules:
            from ..installer import patching

            patching.uninstall_group(GROUP)


# ---------------------------------------------------------------------------
# The torch.compile wrapper (Note [When the frame cache switches])
# ---------------------------------------------------------------------------


# The entry points that switch the frame cache: (module, attribute).
ENTRY_POINTS = (("torch", "compile"), ("torch._dynamo", "optimize"))
# (module, attribute) -> (our wrapper, the original), for those wrapped.
_entry_wrappers: dict[tuple[str, str], tuple[Callable[..., Any], Any]] = {}


def wrap_compile() -> None:
    """Put our wrapper on ``torch.compile`` and ``torch._dynamo.optimize``
    (those of their modules that are imported); idempotent."""
    with _lock:
        for module_name, attr in ENTRY_POINTS:
            module: Any = sys.modules.get(module_name)
            if module is None or not callable(getattr(module, attr, None)):
                continue
            current = getattr(module, attr)
            known = _entry_wrappers.get((module_name, attr))
            if known is not None and current is known[0]:
                continue
            original = current

            def make(original: Any) -> Callable[..., Any]:
                @functools.wraps(original)
                def entry_point(*args: Any, **kwargs: Any) -> Any:
                    sync()
                    return original(*args, **kwargs)

                entry_point.__original__ = original  # type: ignore[attr-defined]
                return entry_point

            wrapper = make(original)
            _entry_wrappers[(module_name, attr)] = (wrapper, original)
            setattr(module, attr, wrapper)


def unwrap_compile() -> None:
    with _lock:
        for (module_name, attr), (wrapper, original) in list(_entry_wrappers.items()):
            module: Any = sys.modules.get(module_name)
            if module is not None and getattr(module, attr, None) is wrapper:
                setattr(module, attr, original)
        _entry_wrappers.clear()
    if is_enabled():
        disable()
