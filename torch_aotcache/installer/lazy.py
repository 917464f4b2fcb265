"""
Noticing when torch's modules that we patch are imported, without importing
torch.

Note [Lazy install]
~~~~~~~~~~~~~~~~~~~
``import torch_aotcache`` must cost little: a process that never compiles
should not pay for importing Dynamo and Inductor, and ``python -m
torch_aotcache stats`` should not import torch at all.  So when none of the
modules we patch (:data:`WATCHED`) is imported yet, the package only adds a
finder to ``sys.meta_path``.  When one of those modules has finished
executing, the finder calls back (``patching.place_trampolines``), which puts
a small *trampoline* on each of that module's patch sites: a function that,
when torch first calls it, installs everything (``patching.install``) and
then forwards the call to our replacement.  The first call comes from a
compile, outside any import, so installing then cannot meet a half-imported
module; installing from inside the import hook could (the module we watch is
often imported in the middle of ``torch._dynamo``'s own imports).

A trampoline forwards to our replacement by lookup, not through the
attribute: a wrapper someone puts on a site before the first call (a
``mock.patch``, a timer) stays where it is, and what it calls is ours.

When a watched module is already imported (``import torch._dynamo`` before
``import torch_aotcache``), the package installs at once, as it always did.

The finder delegates to the finders after it, and hands the module back its
real loader before it executes, so nothing of ours stays on the module.
Rejected: wrapping ``builtins.__import__`` (seen by every import of the
program, and skipped by ``importlib.import_module``), and installing on the
first ``torch.compile`` call (not every compile goes through it).

This module imports nothing of torch and nothing of the package.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any


# The modules holding our patch sites; a test checks this against
# ``patching.PATCH_SITES``.
WATCHED = frozenset(
    {
        "torch",
        "torch._functorch._aot_autograd.autograd_cache",
        "torch._functorch._aot_autograd.graph_compile",
        "torch._functorch.aot_autograd",
        "torch._inductor.codecache",
        "torch._inductor.cpu_vec_isa",
        "torch._inductor.output_code",
    }
)


# Modules whose import also calls back, though they hold no patch site:
# ``torch._dynamo`` has ``optimize``, an entry point the frame cache wraps
# (Note [When the frame cache switches] in dynamo/install.py).
ENTRY_MODULES = frozenset({"torch._dynamo"})


# ``torch`` itself holds the front door's site (Note [Front door] in
# inductor/front_door.py): imported, it gets its trampoline at once, but it does not
# make the package install at once (``import torch`` alone imports none of
# the modules we patch).
TOP = "torch"


def any_imported() -> bool:
    """Whether a watched module other than ``torch`` itself is imported."""
    return any(name in sys.modules for name in WATCHED if name != TOP)


def top_imported() -> bool:
    """Whether ``torch`` is imported, and done importing."""
    module = sys.modules.get(TOP)
    spec = getattr(module, "__spec__", None)
    return module is not None and not getattr(spec, "_initializing", False)


class _NotifyingLoader(importlib.abc.Loader):
    """Runs the real loader, then calls back with the module's name."""

    def __init__(self, inner: Any, callback: Callable[[str], None]) -> None:
        self._inner = inner
        self._callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Give the module its real loader first: tracebacks, inspect and
        # linecache then never see this wrapper.
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        self._inner.exec_module(module)
        self._callback(module.__name__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Watcher(importlib.abc.MetaPathFinder):
    def __init__(self, callback: Callable[[str], None]) -> None:
        self.callback = callback

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in WATCHED and fullname not in ENTRY_MODULES:
            return None
        after = False
        for finder in list(sys.meta_path):
            if finder is self:
                after = True
                continue
            find = getattr(finder, "find_spec", None) if after else None
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _NotifyingLoader(spec.loader, self._notify)
            return spec
        return None

    def _notify(self, name: str) -> None:
        try:
            self.callback(name)
        except Exception as e:  # noqa: BLE001 - an import of torch must never fail because of us
            import warnings

            warnings.warn(
                f"torch_aotcache could not prepare its install ({type(e).__name__}: {e}); "
                "torch's own AOTAutograd cache stays in use",
                RuntimeWarning,
                stacklevel=2,
            )


_lock = threading.Lock()
_watcher: _Watcher | None = None


def watch(callback: Callable[[str], None]) -> None:
    """Call ``callback(name)`` after each module of :data:`WATCHED` is imported."""
    global _watcher
    with _lock:
        if _watcher is None:
            _watcher = _Watcher(callback)
            sys.meta_path.insert(0, _watcher)


def unwatch() -> None:
    global _watcher
    with _lock:
        if _watcher is not None:
            try:
                sys.meta_path.remove(_watcher)
            except ValueError:
                pass
            _watcher = None


def watching() -> bool:
    return _watcher is not None
