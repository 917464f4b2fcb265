#!/usr/bin/env python3
"""
Carry torch_aotcache into a torch tree, as a patch.

    python tools/upstream_patch.py --root DIR --output aotcache.patch
    git -C DIR apply aotcache.patch      # or: patch -p1 -d DIR < aotcache.patch

``DIR`` holds ``torch/``: a site-packages folder with an installed torch of a
supported release (read from ``torch/version.py``), or a PyTorch source
checkout (read from its ``version.txt``).  A checkout whose ``version.txt`` is
a pre-release newer than every supported release (PyTorch's main branch,
``2.16.0a0``) gets the cut for the newest supported release, and a line on
stderr says so; any other tree of an unsupported release is refused (exit 2).
``--output`` writes the patch only once it is complete (a temporary file in
the same folder, renamed at the end); without it the patch goes to stdout.
The patch (git's unified format, ``a/`` and ``b/`` prefixes) makes four
changes:

* ``torch/_functorch/_aot_autograd/aotcache/``: this package's modules beside
  upstream's ``autograd_cache.py`` (the command line and demo stay out).
  Their imports are relative already; what changes is ``_compat.py``, whose
  blocks for other releases (``# [release X.Y]`` ... ``# [end release]``) are
  dropped and whose ``torch_release()`` names the release it was cut for
  (inside torch the module always belongs to the torch around it, a main
  branch's pre-release included), ``config.py``, which becomes a view of the
  knobs below, and
  ``__init__.py``, which installs the cache without the import-time warning
  machinery of the stand-alone package.
* ``torch/_functorch/config.py``: every knob of ``torch_aotcache/knobs.py``,
  as ``aotcache_<name>`` with the same environment variables.
* ``torch/_functorch/_aot_autograd/autograd_cache.py``: at its end, the
  import that installs the cache over this module's ``AOTAutogradCache``
  and ``autograd_cache_key`` (``TORCH_AOTCACHE_DISABLE=1`` keeps upstream's).
* ``torch/_functorch/aot_autograd.py``: at its end, the same install where
  ``autograd_cache.py`` deferred it: ``aot_autograd.py`` imports
  ``autograd_cache.py`` before it defines what the cache patches, so when it
  is the first of the two imported, the install waits for its last lines.

After it, ``import torch`` compiles with this cache and nothing named
``torch_aotcache`` is imported (``test/test_upstream_patch.py`` checks it on a
copy of the installed torch).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import json
import os
import re
import sys
from typing import Any, NamedTuple


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(REPO_ROOT, "torch_aotcache")

TARGET_PACKAGE = "torch/_functorch/_aot_autograd/aotcache"
AUTOGRAD_CACHE = "torch/_functorch/_aot_autograd/autograd_cache.py"
AOT_AUTOGRAD = "torch/_functorch/aot_autograd.py"
FUNCTORCH_CONFIG = "torch/_functorch/config.py"
KNOB_PREFIX = "aotcache_"

# Modules that stay in the stand-alone package only.
LEFT_OUT = {"__main__.py", "cli"}

MARKER = "# torch_aotcache (tools/upstream_patch.py)"

INIT_DOC = '''"""
torch_aotcache's AOTAutograd cache, carried into torch: it takes the place of
the methods of ``torch._functorch._aot_autograd.autograd_cache.AOTAutogradCache``
and of ``autograd_cache_key`` (see installer/patching.py), installed when that module is
imported.  ``TORCH_AOTCACHE_DISABLE=1`` keeps upstream's cache.  Its knobs are
``torch._functorch.config.aotcache_*``.
"""
'''

CONFIG_VIEW = '''"""
The knobs of this cache, a view of ``torch._functorch.config``: each name
``n`` here reads and writes ``torch._functorch.config.aotcache_<n>``, and
``patch`` takes the short names.
"""

import sys
import types
from typing import Any

from torch._functorch import config as _functorch_config


_PREFIX = "aotcache_"


class _ConfigView(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_functorch_config, _PREFIX + name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_functorch_config, _PREFIX + name, value)

    def patch(self, arg1: Any = None, arg2: Any = None, **kwargs: Any) -> Any:
        changes = dict(arg1) if isinstance(arg1, dict) else ({arg1: arg2} if arg1 is not None else {})
        changes.update(kwargs)
        return _functorch_config.patch({_PREFIX + k: v for k, v in changes.items()})


sys.modules[__name__].__class__ = _ConfigView
'''

ACTIVATION = f'''

{MARKER}: the verified, self-contained AOTAutograd cache in
# aotcache/ takes the place of AOTAutogradCache's methods and of
# autograd_cache_key (TORCH_AOTCACHE_DISABLE=1 keeps these).
from torch._functorch._aot_autograd import aotcache as _aotcache  # noqa: E402


if not _aotcache._disabled():
    import sys as _sys

    _parent = _sys.modules.get("torch._functorch.aot_autograd")
    if _parent is not None and getattr(getattr(_parent, "__spec__", None), "_initializing", False):
        # aot_autograd.py imports this module before it defines what the
        # cache patches: its last lines install it.
        _aotcache._install_deferred = True
    else:
        _aotcache.install()
'''

# The end of aot_autograd.py: the install that autograd_cache.py deferred
# while aot_autograd.py was still being imported.
DEFERRED_ACTIVATION = f'''

{MARKER}: finish the install that
# _aot_autograd/autograd_cache.py deferred while this module was imported.
from torch._functorch._aot_autograd import aotcache as _aotcache  # noqa: E402


if getattr(_aotcache, "_install_deferred", False):
    _aotcache._install_deferred = False
    _aotcache.install()
'''


class PatchError(Exception):
    """The tree under --root cannot take the patch."""


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class Target(NamedTuple):
    """What the tree under ``--root`` is, and the release the patch is cut for."""

    release: str  # the supported release (major.minor) the patch is cut for
    version: str  # the version found in the tree
    source: str  # the file it was read from
    note: str | None  # a line for stderr when the cut is not the tree's own release


PRE_RELEASE = re.compile(r"^\d+\.\d+\.\d+(?:a|b|rc|\.dev)\d*")


def version_key(release: str) -> tuple[int, int]:
    major, minor = release.split(".")
    return int(major), int(minor)


def tree_version(root: str) -> tuple[str, str]:
    """``(version, file it was read from)`` of the torch tree under ``root``.

    A checkout's ``version.txt`` wins over a ``torch/version.py`` a build left
    beside it (which may be stale); an installed torch has only the latter.
    """
    version_txt = os.path.join(root, "version.txt")
    if os.path.isfile(version_txt):
        return read(version_txt).strip(), version_txt
    version_py = os.path.join(root, "torch", "version.py")
    if os.path.isfile(version_py):
        m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", read(version_py), re.M)
        if not m:
            raise PatchError(f"no __version__ in {version_py}")
        return m.group(1), version_py
    raise PatchError(f"no version.txt or torch/version.py under {root}: which torch is this?")


def target_release(root: str) -> Target:
    """The release to cut the patch for, or PatchError for a tree of an
    unsupported release."""
    version, source = tree_version(root)
    supported = supported_releases()
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise PatchError(f"cannot read torch's version {version!r} in {source}")
    release = f"{m.group(1)}.{m.group(2)}"
    if release in supported:
        return Target(release, version, source, None)
    newest = max(supported, key=version_key)
    is_checkout = os.path.basename(source) == "version.txt"
    if is_checkout and PRE_RELEASE.match(version) and version_key(release) > version_key(newest):
        note = (
            f"torch {version} ({source}) is a pre-release newer than every supported release: "
            f"cutting the patch for {newest}, the newest"
        )
        return Target(newest, version, source, note)
    raise PatchError(
        f"torch {version} (read from {source}) is not a supported release; supported: "
        f"{', '.join(supported)} (or a checkout whose version.txt is a pre-release newer than {newest})"
    )


def torch_release(root: str) -> str:
    """The release (major.minor) the patch for the tree under ``root`` is cut for."""
    return target_release(root).release


def supported_releases() -> tuple[str, ...]:
    m = re.search(r"^SUPPORTED_RELEASES = (\(.*\))$", read(os.path.join(PACKAGE_DIR, "_compat.py")), re.M)
    if not m:
        raise PatchError("_compat.SUPPORTED_RELEASES not found")
    return tuple(ast.literal_eval(m.group(1)))


def for_release(source: str, release: str) -> str:
    """``_compat.py`` for one release: other releases' blocks dropped."""
    out: list[str] = []
    keep = True
    inside = None
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        # A block names one release or several: "# [release 2.14 2.15]".
        m = re.fullmatch(r"# \[release (\d+\.\d+(?: \d+\.\d+)*)\]", stripped)
        if m:
            if inside is not None:
                raise PatchError(f"release block {m.group(1)} opens inside block {inside}")
            inside = m.group(1)
            keep = release in inside.split()
            continue
        if stripped == "# [end release]":
            if inside is None:
                raise PatchError("'# [end release]' without a block")
            inside = None
            keep = True
            continue
        if keep:
            out.append(line)
    if inside is not None:
        raise PatchError(f"release block {inside} is never closed")
    # A dropped block leaves its blank lines behind: at most one inside a
    # function, two between top-level definitions.
    text = re.sub(r"\n{3,}(?= )", "\n\n", "".join(out))
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    text, n = re.subn(r"^SUPPORTED_RELEASES = \(.*\)$", f'SUPPORTED_RELEASES = ("{release}",)', text, flags=re.M)
    if n != 1:
        raise PatchError("_compat.SUPPORTED_RELEASES not found")
    return own_release(text, release)


def own_release(source: str, release: str) -> str:
    """``_compat.torch_release()`` of the cut: the release it was cut for.

    Stand-alone, the package reads torch's version and stays out of a release
    it does not support.  Inside torch, the module belongs to the torch around
    it: a main branch's pre-release (``2.16.0a0``) gets the newest supported
    release's code, and a version test there would turn the cache off.
    """
    tree = ast.parse(source)
    found = [
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "torch_release"
    ]
    if len(found) != 1 or found[0].decorator_list:
        raise PatchError("_compat.torch_release() not found")
    node = found[0]
    assert node.end_lineno is not None
    lines = source.splitlines(keepends=True)
    body = (
        "def torch_release() -> str | None:\n"
        f'    """The release this module was cut for: inside torch, always {release}."""\n'
        "    return SUPPORTED_RELEASES[0]\n"
    )
    return "".join(lines[: node.lineno - 1]) + body + "".join(lines[node.end_lineno :])


def package_knobs() -> dict[str, Any]:
    """``torch_aotcache/knobs.py``'s table, read without importing the package
    (the module needs only the standard library)."""
    path = os.path.join(PACKAGE_DIR, "knobs.py")
    spec = importlib.util.spec_from_file_location("_torch_aotcache_knobs", path)
    if spec is None or spec.loader is None:
        raise PatchError(f"cannot read {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # NamedTuple resolves its module by name
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return dict(module.KNOBS)


def _literal(value: Any) -> str:
    """Python source for a knob's value, strings in double quotes as torch's config modules write them."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def knob_lines(knobs: dict[str, Any]) -> list[str]:
    """torch_aotcache's knobs as lines of torch._functorch.config."""
    lines = ["", "", f"{MARKER}: the knobs of _aot_autograd/aotcache/", "# (it reads them as aotcache.config.<name>)."]
    for name, knob in knobs.items():
        annotation = re.sub(r"Optional\[(.+)\]", r"\1 | None", knob.type)
        default = _literal(knob.default)
        value = f"Config(env_name_default={_literal(knob.env)}, default={default})" if knob.env else default
        lines.append(f"{KNOB_PREFIX}{name}: {annotation} = {value}")
    if len(lines) <= 4:
        raise PatchError("no knobs found in torch_aotcache/knobs.py")
    return lines


def patched_functorch_config(original: str, knobs: dict[str, Any]) -> str:
    anchor = "install_config_module(sys.modules[__name__])"
    at = original.rfind("\n" + anchor)
    if at < 0:
        raise PatchError(f"{FUNCTORCH_CONFIG} does not end with {anchor}")
    if MARKER in original:
        raise PatchError(f"{FUNCTORCH_CONFIG} is patched already")
    # Before the TYPE_CHECKING stub import that precedes install, if any.
    stub = original.rfind("\nif TYPE_CHECKING:", 0, at)
    insert_at = stub if stub >= 0 and original[stub:at].count("\n\n\n") <= 1 else at
    block = "\n".join(knob_lines(knobs)) + "\n"
    return original[:insert_at].rstrip("\n") + "\n" + block + "\n\n" + original[insert_at:].lstrip("\n")


def patched_autograd_cache(original: str) -> str:
    if MARKER in original:
        raise PatchError(f"{AUTOGRAD_CACHE} is patched already")
    return original.rstrip("\n") + "\n" + ACTIVATION


def patched_aot_autograd(original: str) -> str:
    if MARKER in original:
        raise PatchError(f"{AOT_AUTOGRAD} is patched already")
    return original.rstrip("\n") + "\n" + DEFERRED_ACTIVATION


def patched_init(source: str) -> str:
    """The package's ``__init__.py`` inside torch: its own docstring, and no
    install at import (upstream's autograd_cache.py installs it)."""
    tree = ast.parse(source)
    first = tree.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)):
        raise PatchError("torch_aotcache/__init__.py has no docstring")
    cut = source.find("\nif not _disabled():")
    if cut < 0:
        raise PatchError("torch_aotcache/__init__.py: the install at import was not found")
    lines = source[:cut].splitlines(keepends=True)
    assert first.end_lineno is not None
    return INIT_DOC + "".join(lines[first.end_lineno :])


def package_files(release: str) -> dict[str, str]:
    files: dict[str, str] = {}
    for folder, dirs, names in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d not in LEFT_OUT and not d.startswith((".", "__pycache__")))
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(folder, name), PACKAGE_DIR).replace(os.sep, "/")
            if not name.endswith(".py") or rel in LEFT_OUT:
                continue
            source = read(os.path.join(folder, name))
            if rel == "__init__.py":
                source = patched_init(source)
            elif rel == "config.py":
                source = CONFIG_VIEW
            elif rel == "_compat.py":
                source = for_release(source, release)
            if re.search(r"^\s*(from|import) torch_aotcache\b", source, re.M):
                raise PatchError(f"{rel} imports torch_aotcache by name; use a relative import")
            files[f"{TARGET_PACKAGE}/{rel}"] = source.rstrip("\n") + "\n"
    return dict(sorted(files.items()))


def file_diff(path: str, old: str | None, new: str) -> str:
    new_lines = new.splitlines(keepends=True)
    if old is None:
        head = f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
        body = f"@@ -0,0 +1,{len(new_lines)} @@\n" + "".join("+" + line for line in new_lines)
        return head + body
    if not old.endswith("\n"):
        raise PatchError(f"{path} does not end with a newline")
    hunks = difflib.unified_diff(old.splitlines(keepends=True), new_lines, f"a/{path}", f"b/{path}", n=3)
    return f"diff --git a/{path} b/{path}\n" + "".join(hunks)


def make_patch(root: str, target: Target | None = None) -> str:
    if not os.path.isfile(os.path.join(root, AUTOGRAD_CACHE)):
        raise PatchError(f"no {AUTOGRAD_CACHE} under {root}: pass the folder that holds torch/")
    release = (target or target_release(root)).release
    if os.path.exists(os.path.join(root, TARGET_PACKAGE)):
        raise PatchError(f"{TARGET_PACKAGE} exists already under {root}")
    parts = []
    for path, text in package_files(release).items():
        parts.append(file_diff(path, None, text))
    fc_old = read(os.path.join(root, FUNCTORCH_CONFIG))
    parts.append(file_diff(FUNCTORCH_CONFIG, fc_old, patched_functorch_config(fc_old, package_knobs())))
    ac_old = read(os.path.join(root, AUTOGRAD_CACHE))
    parts.append(file_diff(AUTOGRAD_CACHE, ac_old, patched_autograd_cache(ac_old)))
    if not os.path.isfile(os.path.join(root, AOT_AUTOGRAD)):
        raise PatchError(f"no {AOT_AUTOGRAD} under {root}")
    aa_old = read(os.path.join(root, AOT_AUTOGRAD))
    parts.append(file_diff(AOT_AUTOGRAD, aa_old, patched_aot_autograd(aa_old)))
    return "".join(parts)


def write_whole(path: str, text: str) -> None:
    """``text`` into ``path``, all of it or nothing, with the permissions a
    new file gets: the store's atomic writer (a temporary file in the same
    folder, renamed over ``path`` at the end)."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from torch_aotcache.store.records import write_atomically  # torch-free

    umask = os.umask(0)
    os.umask(umask)
    write_atomically(path, text.encode("utf-8"), mode=0o666 & ~umask)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the folder that holds torch/ (checkout or site-packages)")
    parser.add_argument(
        "--output", "-o", default=None, help="write the patch here (only a complete one) instead of stdout"
    )
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    try:
        if not os.path.isfile(os.path.join(root, AUTOGRAD_CACHE)):
            raise PatchError(f"no {AUTOGRAD_CACHE} under {root}: pass the folder that holds torch/")
        target = target_release(root)
        if target.note:
            print(f"upstream_patch: {target.note}", file=sys.stderr)
        patch = make_patch(root, target)
        if args.output:
            write_whole(args.output, patch)
        else:
            sys.stdout.write(patch)
    except (PatchError, OSError) as e:
        print(f"upstream_patch: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
