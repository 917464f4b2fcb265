"""
torch_aotcache: a drop-in replacement for the AOTAutograd cache of
``torch.compile``.

``import torch_aotcache`` installs it (see patching.py); set
``TORCH_AOTCACHE_DISABLE=1`` to make the import a no-op.
"""

from __future__ import annotations

import os


__version__ = "0.1.0"
__all__ = ["install", "uninstall", "is_installed", "__version__"]


def _disabled() -> bool:
    return os.environ.get("TORCH_AOTCACHE_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def install() -> bool:
    """Install torch_aotcache over torch's AOTAutograd cache; idempotent."""
    from . import patching

    return patching.install()


def uninstall() -> None:
    """Restore torch's own AOTAutograd cache exactly."""
    from . import patching

    patching.uninstall()


def is_installed() -> bool:
    from . import patching

    return patching.is_installed()


if not _disabled():
    try:
        install()
    except Exception as _e:  # noqa: BLE001 - an import must never break the program
        import warnings

        warnings.warn(
            f"torch_aotcache could not install itself ({type(_e).__name__}: {_e}); "
            "torch's own AOTAutograd cache stays in use",
            RuntimeWarning,
            stacklevel=2,
        )
