"""
Naming the code objects a frame package holds (wrappers installed while the
frame cache is on; install.py).

Note [Codes a package cannot name]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Besides the compiled function and its resume functions, a package records
every function Dynamo compiles as a frame of its own while the compiled
function runs: a function called where the compiled frame broke its graph,
or one whose own graph break made Dynamo run it as its own frame.  A later
process finds such a function again by a path from its module (its qualified
name, then attributes down to the code object); upstream's search for that
path raises ``PackageError`` for anything else, and nothing catches it: the
compile fails, in every process, with or without a stored frame.  Seen on
transformers' GPT-2, whose ``loss_function`` is a property: its getter's
qualified name leads to the property object, not to a function.

* A property's (or ``functools.cached_property``'s) accessor is named through
  the descriptor: the path to the property, then ``fget.__code__`` (``fset``,
  ``fdel``, ``func``), which upstream's lookup follows attribute by attribute.
* Any other function upstream cannot name (a closure made by a factory,
  ``make.<locals>.helper``; a function kept only in a container) is compiled
  as usual and left out of the package: it is recorded without a name, so
  that the compile goes on, and :func:`unnamed` tells the save to drop it
  (counted ``frame_code_not_packaged``), with the resume functions made
  while compiling it (only its own bytecode calls them).  A later process
  runs the stored frame and traces that function when it is called.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
from collections.abc import Callable
from typing import Any

from ..counters import count


log = logging.getLogger(__name__)

# The accessors of a descriptor that may hold the code, in the order tried.
_ACCESSORS = {property: ("fget", "fset", "fdel"), functools.cached_property: ("func",)}


def through_descriptor(code: types.CodeType) -> tuple[str, str] | None:
    """(function path, code path) naming ``code`` through a property on the
    way from its module along its qualified name, or None."""
    module = inspect.getmodule(code)
    qualname = getattr(code, "co_qualname", None)
    if module is None or not isinstance(qualname, str) or "<" in qualname:
        return None
    obj: Any = module
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - a descriptor may raise on the class
            return None
        accessors = next((names for kind, names in _ACCESSORS.items() if isinstance(obj, kind)), None)
        if accessors is None:
            continue
        if i != len(parts) - 1:
            return None
        for name in accessors:
            fn = getattr(obj, name, None)
            if getattr(fn, "__code__", None) is code:
                return ".".join(parts), f"{name}.__code__"
        return None
    return None


def get_code_source(original: Callable[..., Any], code: types.CodeType) -> Any:
    """``torch._dynamo.package._get_code_source``, which also names a
    property's accessors (Note [Codes a package cannot name])."""
    try:
        return original(code)
    except Exception:
        found = through_descriptor(code)
        if found is None:
            raise
        return found


def add_user_function(original: Callable[..., Any], package: Any, code: types.CodeType) -> None:
    """``CompilePackage._add_user_function``: a function upstream cannot name
    is recorded without a name and left out when the package is saved (Note
    [Codes a package cannot name]); the compile goes on."""
    try:
        original(package, code)
        return
    except Exception as e:  # noqa: BLE001 - naming a code never fails a compile
        reason = f"{type(e).__name__}: {e}"
    if code not in package._codes:
        module = inspect.getmodule(code)
        package._add_function(code, module.__name__ if module is not None else code.co_filename)
    _unnamed(package)[code] = reason
    count("frame_code_not_packaged")
    log.info("torch_aotcache: %s is compiled but left out of its frame package: %s",
             getattr(code, "co_qualname", code.co_name), reason)


def add_resume_function(original: Callable[..., Any], package: Any, code: types.CodeType, *args: Any,
                        **kwargs: Any) -> None:
    """``CompilePackage.add_resume_function``: a resume function made while
    compiling a code the package leaves out is left out with it (only that
    code's bytecode calls it)."""
    original(package, code, *args, **kwargs)
    current = getattr(package, "_current_entry", None)
    left_out = package.__dict__.get("_aotcache_unnamed_codes")
    if current is None or not left_out:
        return
    for parent, reason in list(left_out.items()):
        if package._codes.get(parent) is current:
            left_out[code] = f"resumes {getattr(parent, 'co_qualname', parent.co_name)}, which {reason}"
            return


def _unnamed(package: Any) -> dict[types.CodeType, str]:
    found = package.__dict__.get("_aotcache_unnamed_codes")
    if found is None:
        found = package.__dict__["_aotcache_unnamed_codes"] = {}
    return found


def unnamed(package: Any) -> dict[types.CodeType, str]:
    """The codes of ``package`` that the save leaves out, with why."""
    return dict(package.__dict__.get("_aotcache_unnamed_codes", {}))


def without_unnamed(package: Any, entry: Any) -> Any:
    """``entry`` (the package's cache entry) without the codes it cannot name."""
    left_out = unnamed(package)
    if not left_out:
        return entry
    import dataclasses

    dropped = {id(package._codes[c]) for c in left_out if c in package._codes}
    codes = [c for c in entry.codes if id(c) not in dropped]
    return dataclasses.replace(entry, codes=codes)
