"""
What a hit's generated module imports, without Inductor's compiler.

Note [Light runtime imports]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~
The Python module Inductor generates for a graph starts with imports, two
of which reach far into Inductor's compiler although the module only needs
a small object from each:

* ``from torch._inductor.codegen.memory_planning import _align as align``:
  ``memory_planning`` re-exports ``torch._inductor.utils._align`` (already
  imported by Dynamo) but imports Inductor's IR and scheduler first.
* ``from torch._inductor.select_algorithm import extern_kernels``: the
  namespace through which the module calls ATen kernels (``extern_kernels.mm``,
  ``.addmm``, ...).  ``select_algorithm`` imports the lowering, the kernel
  templates and the autotuner: on the 2-core CPU machine most of a second,
  the largest part of a warm process above Dynamo's floor.

When a hit loads a generated module (from its private folder, see Note
[Self-contained entries] in inductor/artifacts.py), :func:`rewrite_imports` replaces
those two lines, one line for one line (line numbers, and so tracebacks,
stay right), with imports of the same objects from light places:

* ``align`` from ``torch._inductor.utils`` (the identical function; a test
  checks ``memory_planning._align is utils._align``);
* ``extern_kernels`` from here: a namespace that hands out, for the names in
  :data:`TORCH_KERNELS`, the torch function of the same name (Inductor
  registers exactly those functions under those names: a test compares every
  name with the real namespace), and for any other name imports
  ``select_algorithm`` and hands out its object.  Once ``select_algorithm`` is
  imported (this process compiled something), every name comes from it.

Two more objects of Inductor's compiler that a hit touches stand in until
their modules are imported: ``select_decomp_table``, which a compiled graph
keeps among its compile arguments and a hit never calls (an entry unpickles
it as a function that imports the decompositions when called), and
``torch._inductor.debug``, whose three switches a compiled graph reads at
every call (a stand-in module on ``torch._inductor`` gives their starting
values and imports the real module for anything else; importing the real
one puts it in the stand-in's place, as any import of a submodule does).

Only on releases where those facts were checked (``_compat.FRONT_DOOR_RELEASES``);
elsewhere the module is loaded as generated.  Nothing changes in the entry,
in its key or in the module's source as saved: only the file this process
imports.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
import sys
import types
from typing import Any


SELECT_ALGORITHM = "torch._inductor.select_algorithm"

# Names under which Inductor's ``extern_kernels`` holds the torch function of
# the same name (test/test_front_door.py checks each against the real one).
TORCH_KERNELS = frozenset(
    {
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "convolution",
        "_int_mm",
        "_scaled_mm",
        "_grouped_mm",
        "_scaled_grouped_mm",
        "_sparse_semi_structured_mm",
        "_weight_int8pack_mm",
    }
)

_REWRITES = (
    (
        "from torch._inductor.codegen.memory_planning import _align as align",
        "from torch._inductor.utils import _align as align",
    ),
    (
        "from torch._inductor.select_algorithm import extern_kernels",
        # This module by its own name (it is renamed when carried into torch).
        f"from {__name__} import extern_kernels",
    ),
)


class _ExternKernels:
    """Inductor's ``extern_kernels``, importing ``select_algorithm`` only for
    a name that is not a torch function (see Note [Light runtime imports])."""

    def __getattr__(self, name: str) -> Any:
        real = sys.modules.get(SELECT_ALGORITHM)
        if real is None and name in TORCH_KERNELS:
            import torch

            value = getattr(torch, name)
        else:
            if real is None:
                real = importlib.import_module(SELECT_ALGORITHM)
            value = getattr(real.extern_kernels, name)
        # The same object either way; later reads skip __getattr__.
        setattr(self, name, value)
        return value

    def __repr__(self) -> str:
        return "<torch_aotcache extern_kernels>"


extern_kernels = _ExternKernels()


def rewrite_imports(source: str, checked: bool) -> str:
    """``source`` with its heavy runtime imports replaced by light ones (each
    whole line, one for one), or ``source`` unchanged where that is not
    known to be the same (``checked``: a release where it was checked)."""
    if not checked:
        return source
    lines = source.split("\n")
    changed = False
    for old, new in _REWRITES:
        if old.endswith("extern_kernels") and SELECT_ALGORITHM in sys.modules:
            continue  # already imported: nothing to save
        for i, line in enumerate(lines):
            if line == old:
                lines[i] = new
                changed = True
    return "\n".join(lines) if changed else source


# ``torch.ops.<namespace>.<name>``, and the module's aliases of namespaces.
_OPERATOR = re.compile(r"\b(?:torch\.ops\.([A-Za-z_]\w*)|(aten|inductor_ops|_quantized))\.([A-Za-z_]\w*)")
_ALIASES = {"aten": "aten", "inductor_ops": "inductor", "_quantized": "_quantized"}


def unregistered_operators(source: str) -> list[str]:
    """The operators ``source`` names that are not registered in this process
    (some are registered by Python modules of Inductor's compiler, which a
    hit through the front door does not import)."""
    import torch

    missing = []
    seen = set()
    for m in _OPERATOR.finditer(source):
        namespace = m.group(1) or _ALIASES[m.group(2)]
        name = m.group(3)
        if (namespace, name) in seen:
            continue
        seen.add((namespace, name))
        try:
            getattr(getattr(torch.ops, namespace), name)
        except (AttributeError, RuntimeError):
            missing.append(f"{namespace}.{name}")
    return missing


# ---------------------------------------------------------------------------
# Unpickling an entry
# ---------------------------------------------------------------------------


def _select_decomp_table() -> Any:
    """Stands for Inductor's ``select_decomp_table`` in a loaded entry (a
    compiled graph keeps it among its compile arguments; a hit never calls
    it): imports the decompositions only when called."""
    from torch._inductor.decomposition import select_decomp_table

    return select_decomp_table()


# Globals an entry names that a hit does not use, and whose modules are
# costly to import: while their module is not imported, they unpickle as
# a stand-in that imports it when used.
_STAND_INS = {("torch._inductor.decomposition", "select_decomp_table"): _select_decomp_table}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        stand_in = _STAND_INS.get((module, name))
        if stand_in is not None and module not in sys.modules:
            return stand_in
        return super().find_class(module, name)


def loads(data: memoryview | bytes) -> Any:
    """``pickle.loads``, with the stand-ins above."""
    return _Unpickler(io.BytesIO(data)).load()


# ---------------------------------------------------------------------------
# torch._inductor.debug's switches
# ---------------------------------------------------------------------------

DEBUG_MODULE = "torch._inductor.debug"

# The switches a compiled graph reads at every call, with the values
# ``torch._inductor.debug`` starts with (a test compares them).
DEBUG_SWITCHES: dict[str, Any] = {
    "RECORD_GRAPH_EXECUTION": False,
    "GRAPH_EXECUTION_ORDER": None,
    "GRAPH_COMPILE_IDS": None,
}


class _DebugSwitches(types.ModuleType):
    """Stands for ``torch._inductor.debug`` as an attribute of
    ``torch._inductor`` until that module is imported (Inductor's compiler
    imports it, and with it the IR and the scheduler).  Reading a switch
    gives its starting value; anything else, or any write, imports the real
    module, whose import puts it in this object's place."""

    def __getattr__(self, name: str) -> Any:
        real = sys.modules.get(DEBUG_MODULE)
        if real is None and name in DEBUG_SWITCHES:
            return DEBUG_SWITCHES[name]
        if real is None:
            real = importlib.import_module(DEBUG_MODULE)
        return getattr(real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(importlib.import_module(DEBUG_MODULE), name, value)


def place_debug_switches() -> bool:
    """Put the stand-in on ``torch._inductor`` if ``torch._inductor.debug``
    is neither imported nor set there; returns whether it is in place."""
    import torch._inductor

    current = getattr(torch._inductor, "debug", None)
    if isinstance(current, _DebugSwitches):
        return True
    if DEBUG_MODULE in sys.modules or current is not None:
        return False
    torch._inductor.debug = _DebugSwitches(DEBUG_MODULE)
    return True
