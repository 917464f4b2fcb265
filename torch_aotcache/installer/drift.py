"""
Parts that mirror upstream code, and the check that upstream is still the
code they mirror.

Note [Drift fails safe]
~~~~~~~~~~~~~~~~~~~~~~~
Some parts of torch_aotcache take the same steps as an upstream function
instead of calling it, to skip work a hit does not need: the front door
(Note [Front door] in inductor/front_door.py) mirrors the prefix of ``compile_fx`` and
of ``aot_module_simplified``, ``compiler_config`` mirrors
``get_compiler_config``, the light post-compile mirrors
``FxGraphCache.cache_hit_post_compile``, and the light runtime imports (Note
[Light runtime imports] in inductor/light_runtime.py) mirror what Inductor's generated
modules import.  Each is right only for the upstream sources it was written
against.  A patch release, a local build or an edited install may change
them, and a mirror would then follow the old steps silently.

So each part names the upstream functions it mirrors (:data:`MIRRORS`), and
``_compat`` records, per supported release, a digest of each function as it
was read (``_compat.MIRROR_DIGESTS``).  A part runs only while every function
it mirrors has its recorded digest; otherwise it stays off for the process,
warned once, counted as ``drift_<part>``, and the compile takes upstream's
path (everything else of ours works as before).

The digest is SHA-256 of the function's syntax tree (``ast.dump``, without
positions): a change of comments, blank lines or line numbers keeps it, any
change of code or docstring does not.  The sources are parsed without
importing them (the point of the front door is not to import ``compile_fx``).
Parsing costs tens of milliseconds, so the digests are kept in
``<store>/meta/drift-<ident>.json`` beside the size and mtime of each file
they were read from, and parsed again only when a file's stat changes.
``tools/port_check.py`` compares the same functions between two torch trees.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import os
import threading
import warnings
from typing import Any

from .. import _compat, _once
from ..counters import count


log = logging.getLogger(__name__)

# part -> the upstream functions it mirrors, as "module:qualname".
MIRRORS: dict[str, tuple[str, ...]] = {
    "front_door": (
        "torch:_TorchCompileInductorWrapper.__call__",
        "torch._inductor.compile_fx:compile_fx",
        "torch._inductor.compile_fx:_compile_fx_main",
        "torch._functorch.aot_autograd:aot_module_simplified",
        "torch._functorch.aot_autograd:prepare_aot_module_simplified",
        "torch._dynamo.backends.common:AotAutograd.__call__",
    ),
    "compiler_config": (
        "torch:_TorchCompileInductorWrapper.get_compiler_config",
        "torch._inductor.compile_fx:get_patched_config_dict",
    ),
    "light_post_compile": ("torch._inductor.codecache:FxGraphCache.cache_hit_post_compile",),
    "light_runtime": (
        "torch._inductor.codegen.wrapper:PythonWrapperCodegen.write_header",
        "torch._inductor.select_algorithm:ExternKernelChoice.__init__",
    ),
    # The frame cache (dynamo/hooks.py): the lookup finds its torch.compile
    # call's package in the caller's frame, and a package that fails to
    # install is reset field by field.
    "frames": (
        "torch._dynamo.eval_frame:_TorchDynamoContext.__call__",
        "torch._dynamo.package:CompilePackage.initialize",
        "torch._dynamo.package:CompilePackage.uninstall",
        "torch._dynamo.package:CompilePackage.install",
    ),
}

# Parts written for fewer releases than ``_compat.FRONT_DOOR_RELEASES``: on
# the others they are off, with nothing to warn of.
PART_RELEASES: dict[str, frozenset[str]] = {"frames": _compat.FRAME_RELEASES}


def parts_for(release: str | None) -> list[str]:
    """The parts written for ``release``."""
    if release not in _compat.FRONT_DOOR_RELEASES:
        return []
    return [p for p in MIRRORS if release in PART_RELEASES.get(p, _compat.FRONT_DOOR_RELEASES)]


def names_for(release: str | None) -> list[str]:
    """The upstream functions the parts of ``release`` mirror, sorted, once."""
    return sorted({n for p in parts_for(release) for n in MIRRORS[p]})

_lock = threading.Lock()
_intact: dict[str, bool] = {}


def source_file(module: str) -> str | None:
    """The ``.py`` file of ``module``, found without importing it (its
    parent packages are imported, as for any submodule lookup)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    return origin if origin and origin.endswith(".py") else None


def function_digest(tree: ast.Module, qualname: str) -> str | None:
    """Digest of the function ``qualname`` (``Class.method`` or ``function``)
    defined at the top of ``tree`` (None: not found)."""
    body: list[ast.stmt] = tree.body
    node: ast.AST | None = None
    for part in qualname.split("."):
        node = None
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and stmt.name == part:
                node = stmt  # the last definition wins, as at run time
        if node is None:
            return None
        body = node.body
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    return hashlib.sha256(ast.dump(node, include_attributes=False).encode()).hexdigest()[:16]


def digests_of_file(path: str, qualnames: list[str]) -> dict[str, str | None]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    return {q: function_digest(tree, q) for q in qualnames}


def current_digests(
    names: list[str], kept: dict[str, Any] | None = None
) -> tuple[dict[str, str | None], dict[str, Any]]:
    """Digests of ``names`` ("module:qualname") in the installed torch, and
    the per-file record to keep (reusing ``kept`` where a file's stat is
    unchanged)."""
    by_module: dict[str, list[str]] = {}
    for name in names:
        module, _, qualname = name.partition(":")
        by_module.setdefault(module, []).append(qualname)
    out: dict[str, str | None] = {}
    record: dict[str, Any] = {}
    for module, qualnames in by_module.items():
        path = source_file(module)
        if path is None:
            out.update({f"{module}:{q}": None for q in qualnames})
            continue
        st = os.stat(path)
        stat = [path, st.st_size, st.st_mtime_ns]
        old = (kept or {}).get(module)
        if old and old.get("stat") == stat and all(q in old["digests"] for q in qualnames):
            found = old["digests"]
        else:
            found = digests_of_file(path, qualnames)
        record[module] = {"stat": stat, "digests": found}
        out.update({f"{module}:{q}": found.get(q) for q in qualnames})
    return out, record


def _check_all() -> dict[str, bool]:
    release = _compat.torch_release()
    parts = parts_for(release)
    if release is None or not parts:
        return {part: False for part in MIRRORS}  # never written for it: off, nothing to warn of
    expected = _compat.MIRROR_DIGESTS.get(release, {})
    names = names_for(release)
    try:
        from ..store import records

        path = records.install_record_path("drift")
        kept = records.read_record(path)
    except Exception:  # noqa: BLE001 - no store: parse every time
        path, kept = None, None
    current, record = current_digests(names, kept)
    if path is not None and record != kept:
        from ..store import records

        records.write_record(path, record)
    result = {part: False for part in MIRRORS}
    for part in parts:
        funcs = MIRRORS[part]
        changed = [f for f in funcs if expected.get(f) is None or current.get(f) != expected.get(f)]
        result[part] = not changed
        if changed:
            count(f"drift_{part}")
            if _once.first_time(f"drift-{part}"):
                warnings.warn(
                    "torch_aotcache: %s stays off on this torch (%s): upstream's %s differ from the "
                    "sources it was written for; compiles take upstream's path there"
                    % (part.replace("_", " "), _version(), ", ".join(changed)),
                    RuntimeWarning,
                    stacklevel=2,
                )
    return result


def _version() -> str:
    import torch

    return torch.__version__


def intact(part: str) -> bool:
    """Whether ``part`` may run: every upstream function it mirrors is the one
    it was written for (checked once per process)."""
    if not _intact:
        with _lock:
            if not _intact:
                try:
                    _intact.update(_check_all())
                except Exception as e:  # noqa: BLE001 - unknown: every part off
                    log.debug("torch_aotcache: drift check failed: %s", e)
                    _intact.update({p: False for p in MIRRORS})
    return _intact.get(part, False)


def reset() -> None:
    """Forget the check (tests)."""
    with _lock:
        _intact.clear()
