"""
torch_aotcache: a drop-in replacement for the AOTAutograd cache of
``torch.compile``.

``import torch_aotcache`` installs it (see installer/patching.py), lazily: when none of
torch's modules that it patches is imported yet, it waits for them without
importing torch (Note [Lazy install] in installer/lazy.py).  Set
``TORCH_AOTCACHE_DISABLE=1`` to make the import a no-op.
"""

from __future__ import annotations

import sys


__version__ = "0.1.0"
__all__ = ["install", "uninstall", "is_installed", "__version__"]


def _disabled() -> bool:
    from .knobs import disabled

    return disabled()


def install() -> bool:
    """Install torch_aotcache over torch's AOTAutograd cache now; idempotent."""
    from .dynamo import install as _frames
    from .installer import patching

    installed = patching.install()
    if installed:
        _frames.wrap_compile()
        _watch_registrations()
    return installed


def uninstall() -> None:
    """Restore torch's own AOTAutograd cache exactly."""
    from .installer import lazy as _lazy

    _lazy.unwatch()
    if "torch_aotcache.dynamo.install" in sys.modules:
        from .dynamo import install as _frames

        _frames.unwrap_compile()
    if "torch_aotcache.installer.patching" in sys.modules:
        from .installer import patching

        patching.uninstall()
    if "torch_aotcache.key.registered_ops" in sys.modules:
        from .key import registered_ops

        registered_ops.unwatch_registrations()


def is_installed() -> bool:
    """Whether our cache is in place, or will be at torch's first call into it."""
    from .installer import lazy as _lazy

    if _lazy.watching():
        return True
    from .installer import patching

    return patching.is_installed()


_TOP = "torch"


def _on_watched_import(module_name: str) -> None:
    compat = sys.modules.get(__name__ + "._compat")
    if compat is not None and getattr(getattr(compat, "__spec__", None), "_initializing", False):
        # torch is being imported by ``_compat`` itself (its first importer
        # imported it before torch): the patch table is not readable yet; a
        # later watched import, or the first install, places everything.
        return
    from .installer import lazy as _lazy, patching

    if module_name in _lazy.ENTRY_MODULES:
        from .dynamo import install as _frames

        _frames.wrap_compile()
        return
    patching.place_trampolines(module_name)
    if module_name == _TOP:
        from .dynamo import install as _frames

        _frames.wrap_compile()
        _watch_registrations()


def _watch_registrations() -> None:
    """Remember Python kernels as they are registered, from as early as we
    can; see Note [Registered operators in the key] in key/registered_ops.py."""
    from .key import registered_ops

    registered_ops.watch_registrations()


def _install_at_import() -> None:
    """See Note [Lazy install] in installer/lazy.py: at once if torch's modules that we
    patch are imported already, else when they are (without importing torch)."""
    from .installer import lazy as _lazy

    if _lazy.any_imported():
        install()
    else:
        _lazy.watch(_on_watched_import)
        if _lazy.top_imported():
            _on_watched_import(_lazy.TOP)


if not _disabled():
    try:
        _install_at_import()
    except Exception as _e:  # noqa: BLE001 - an import must never break the program
        import warnings

        warnings.warn(
            f"torch_aotcache could not install itself ({type(_e).__name__}: {_e}); "
            "torch's own AOTAutograd cache stays in use",
            RuntimeWarning,
            stacklevel=2,
        )
