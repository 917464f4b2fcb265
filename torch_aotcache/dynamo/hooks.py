"""
The frame cache's replacements of Dynamo's functions (installed by
install.py through ``installer/patching.py``'s table, group "frames"; Note
[Patch groups]).  Each takes upstream's function first (Note [Replacements
receive their original] in installer/patching.py).
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any


log = logging.getLogger(__name__)


def _calling_context() -> Any:
    """The ``_TorchDynamoContext`` whose call looks up a stored frame (its
    package names the ``torch.compile`` call's settings): the nearest caller
    frame whose ``self`` is one.  None if there is none."""
    from torch._dynamo.eval_frame import _TorchDynamoContext

    frame: Any = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            return None
        caller = frame.f_locals.get("self")
        if isinstance(caller, _TorchDynamoContext):
            return caller
        frame = frame.f_back
    return None


def load_frame(original: Callable[..., Any], store: Any, fn: Any) -> Any:
    """``DiskDynamoCache.load``: the stored frame for ``fn`` in our store, as
    ``_TorchDynamoContext.__call__`` (which calls it, with its package set up
    by :func:`optimize`) would compile it; None: a miss."""
    from . import frames

    try:
        return frames.load(fn, getattr(_calling_context(), "_package", None))
    except Exception as e:  # noqa: BLE001 - a lookup never fails a compile
        from ..counters import count

        count("frame_load_failed")
        log.warning("torch_aotcache: Dynamo frame lookup failed: %s", e, exc_info=log.isEnabledFor(logging.DEBUG))
        return None


def record_package(original: Callable[..., Any], store: Any, package: Any) -> None:
    """``DynamoStore.record_package``: upstream's record, then our save
    (Note [Saving when the graphs are saved] in frames.py)."""
    original(store, package)
    from . import frames

    try:
        frames.package_recorded(package)
    except Exception as e:  # noqa: BLE001
        log.warning("torch_aotcache: cannot record a Dynamo frame package: %s", e)


def install_or_start_afresh(original: Callable[..., Any], package: Any, backends: Any) -> None:
    """``CompilePackage.install``: a package we loaded that fails to install
    is taken out again and the package starts afresh, so Dynamo traces as if
    nothing was stored (upstream's caller cannot recover from that: it would
    initialize the package twice).  Packages from elsewhere install as upstream's."""
    from . import frames, guards

    entry_codes = list(dict(getattr(package, "_codes", None) or {}).values())
    try:
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
    finally:
        if getattr(package, "_aotcache_loaded", False):
            guards.forget_loaded(_guard_set_digests(entry_codes))


def _guard_set_digests(codes: list[Any]) -> list[str]:
    from . import guards

    digests = []
    for code in codes:
        for guarded in getattr(code, "guarded_codes", ()):
            state = getattr(guarded, "guards_state", None)
            if isinstance(state, bytes):
                digests.append(guards.state_digest(state))
    return digests


def optimize(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``torch._dynamo.eval_frame._optimize``: the package it makes learns the
    call's settings (Note [Frame keys] in frames.py)."""
    ctx = original(*args, **kwargs)
    package = getattr(ctx, "_package", None)
    if package is not None and not package.is_initialized():
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
