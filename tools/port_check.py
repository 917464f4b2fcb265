#!/usr/bin/env python3
"""
What a port to another torch release has to look at: the upstream code
torch_aotcache depends on, compared between two torch trees.

    python tools/port_check.py --old OLD_SITE_PACKAGES --new NEW_SITE_PACKAGES [--json]
    python tools/port_check.py --digests SITE_PACKAGES

``OLD`` and ``NEW`` are folders that hold ``torch/`` (site-packages folders
or checkouts; a ``torch/`` folder itself is taken too).  Neither torch is
imported: every file is parsed with ``ast``, so the tool runs in any Python
3.10+, with or without torch, and two releases can be compared side by side.

Three groups of upstream names are listed, one line each:

* patched: every attribute ``patching.PATCH_SITES`` replaces
  (``module:owner.attr``);
* mirrored: every function ``drift.MIRRORS`` names (``module:qualname``),
  whose steps our code repeats;
* called: the private names (a part after ``torch`` that starts with one
  underscore) our modules import (``from torch._x.y import Z``) or reach as
  attribute chains (``torch._inductor.codecache.FxGraphCache.clear``, or
  ``FxGraphCache.clear`` after that import).  A chain is cut where it leaves
  what the tree defines (a call, a subscript, an attribute of a value).
  Names listed as patched or mirrored are not repeated here (a function
  both patched and mirrored is in both of those groups).

A dotted name is split into module and qualified name by the files in the
tree: the longest prefix that is a ``.py`` file or a package is the module.
A name a module imports from another is followed to where it is defined.

Status, old tree against new:

* ``same``;
* ``signature changed``: a function's parameters (names, kinds, defaults);
  for a class, its ``__init__``'s parameters and the names its body defines;
* ``source changed``: the same signature, another body (the digest of
  ``drift``; for a value, of its assigned expression);
* ``missing in new`` / ``new only``;
* ``not found``: in neither tree (an attribute set at run time, or a chain the
  scan misread): look at the use by hand.

A config module (one that calls ``install_config_module``) also has the
methods of ``torch.utils._config_module.ConfigModule`` (``patch``,
``get_config_copy``); a class has what its bases define.

Modules that are only reached through (``torch._dynamo.utils`` in
``torch._dynamo.utils.counters``) are listed by their longest names only.

How the package's tables are read.  Importing ``torch_aotcache.installer.patching`` or
``drift`` would import torch, so the tool parses them: ``PATCH_SITES`` is a
tuple of ``PatchSite(owner, attr, ...)`` calls whose owner and attr are
literals and whose ``module=`` is a literal or ``_OWNER_MODULE`` (a literal
assigned at the top of the file), and ``MIRRORS`` is a dict literal; anything
else stops the tool with an error saying what it could not read, rather than
a guess.  The digest is ``drift.function_digest`` itself, taken from
``installer/drift.py``'s syntax tree and compiled alone (it needs only ``ast`` and
``hashlib``), so the tool and the package's run-time check cannot disagree
on what a digest is.

``--digests DIR`` prints the digests of the mirrored functions of one tree as
the dict literal ``_compat.MIRROR_DIGESTS[release]`` holds, to paste when a
release is added.
"""

from __future__ import annotations

import __future__

import argparse
import ast
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(REPO_ROOT, "torch_aotcache")

GROUPS = ("patched", "mirrored", "called")
CONFIG_MODULE = "torch.utils._config_module"
STATUSES = ("same", "signature changed", "source changed", "missing in new", "new only", "not found")


class PortCheckError(Exception):
    pass


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _parse(path: str) -> ast.Module:
    return ast.parse(_read(path), filename=path)


# ---------------------------------------------------------------------------
# The package's tables, read without importing it
# ---------------------------------------------------------------------------


def load_function_digest(package_dir: str) -> Callable[[ast.Module, str], str | None]:
    """``drift.function_digest``, compiled alone from ``installer/drift.py``."""
    path = os.path.join(package_dir, "installer", "drift.py")
    found = [n for n in _parse(path).body if isinstance(n, ast.FunctionDef) and n.name == "function_digest"]
    if len(found) != 1:
        raise PortCheckError(f"{path}: function_digest not found")
    module = ast.Module(body=found, type_ignores=[])
    code = compile(module, path, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True)
    namespace: dict[str, Any] = {"ast": ast, "hashlib": hashlib}
    exec(code, namespace)
    return namespace["function_digest"]


def _literal(node: ast.AST, what: str, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise PortCheckError(f"cannot read {what}: {ast.unparse(node)} is not a literal") from None


def _top_assignment(tree: ast.Module, name: str) -> ast.expr | None:
    value = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            value = node.value
    return value


def patch_sites(package_dir: str) -> list[str]:
    """``patching.PATCH_SITES`` as ``module:owner.attr`` names."""
    path = os.path.join(package_dir, "installer", "patching.py")
    tree = _parse(path)
    constants: dict[str, Any] = {}
    owner_module = _top_assignment(tree, "_OWNER_MODULE")
    if owner_module is not None:
        constants["_OWNER_MODULE"] = _literal(owner_module, "_OWNER_MODULE", {})
    sites = _top_assignment(tree, "PATCH_SITES")
    if not isinstance(sites, (ast.Tuple, ast.List)):
        raise PortCheckError(f"{path}: PATCH_SITES is not a tuple literal")
    names = []
    for call in sites.elts:
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "PatchSite"):
            raise PortCheckError(f"{path}: an entry of PATCH_SITES is not PatchSite(...)")
        args = {k.arg: k.value for k in call.keywords if k.arg}
        owner = _literal(call.args[0] if call.args else args["owner"], "a PatchSite owner", constants)
        attr = _literal(call.args[1] if len(call.args) > 1 else args["attr"], "a PatchSite attr", constants)
        module_node = args.get("module")
        if module_node is None:
            if "_OWNER_MODULE" not in constants:
                raise PortCheckError(f"{path}: _OWNER_MODULE not found")
            module = constants["_OWNER_MODULE"]
        else:
            module = _literal(module_node, "a PatchSite module", constants)
        names.append(f"{module}:{owner + '.' if owner else ''}{attr}")
    return names


def mirrors(package_dir: str) -> list[str]:
    """Every function ``drift.MIRRORS`` names, in order, once."""
    path = os.path.join(package_dir, "installer", "drift.py")
    value = _top_assignment(_parse(path), "MIRRORS")
    if value is None:
        raise PortCheckError(f"{path}: MIRRORS not found")
    table = _literal(value, "drift.MIRRORS", {})
    return list(dict.fromkeys(n for names in table.values() for n in names))


def _private(parts: list[str]) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in parts[1:])


def private_uses(package_dir: str) -> list[str]:
    """Dotted ``torch._...`` names the package's modules import or reach."""
    found: dict[str, None] = {}
    paths = sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(package_dir)
        for name in names
        if name.endswith(".py")
    )
    for path in paths:
        tree = _parse(path)
        bound: dict[str, str] = {}  # local name -> dotted torch name
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "torch" or alias.name.startswith("torch."):
                        if alias.asname:
                            bound[alias.asname] = alias.name
                        else:
                            bound["torch"] = "torch"
                        if _private(alias.name.split(".")):
                            found[alias.name] = None
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "torch" or node.module.startswith("torch."):
                    for alias in node.names:
                        if alias.name == "*":
                            continue
                        dotted = f"{node.module}.{alias.name}"
                        bound[alias.asname or alias.name] = dotted
                        if _private(dotted.split(".")):
                            found[dotted] = None
        for dotted in _chains(tree, bound):
            if _private(dotted.split(".")):
                found[dotted] = None
    return list(found)


def _chains(tree: ast.Module, bound: dict[str, str]) -> Iterator[str]:
    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.Attribute):
            parts = []
            inner: ast.AST = node
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name):
                if inner.id in bound:
                    yield ".".join([bound[inner.id], *reversed(parts)])
                return
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(tree)


# ---------------------------------------------------------------------------
# One torch tree
# ---------------------------------------------------------------------------


@dataclass
class Found:
    kind: str  # "function", "class", "value", "module"
    signature: Any = None
    digest: str | None = None
    where: str = ""  # module:qualname where it is defined

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "signature": self.signature, "digest": self.digest, "defined_in": self.where}


def _signature(args: ast.arguments) -> list[list[Any]]:
    out: list[list[Any]] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for i, (a, d) in enumerate(zip(positional, defaults)):
        kind = "positional only" if i < len(args.posonlyargs) else "positional or keyword"
        out.append([a.arg, kind, None if d is None else ast.unparse(d)])
    if args.vararg:
        out.append([args.vararg.arg, "var positional", None])
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append([a.arg, "keyword only", None if d is None else ast.unparse(d)])
    if args.kwarg:
        out.append([args.kwarg.arg, "var keyword", None])
    return out


def _digest(node: ast.AST) -> str:
    return hashlib.sha256(ast.dump(node, include_attributes=False).encode()).hexdigest()[:16]


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of a body, those under ``if``/``try``/``with`` included."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If):
            yield from _statements(stmt.body)
            yield from _statements(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from _statements(stmt.body)
            for h in stmt.handlers:
                yield from _statements(h.body)
            yield from _statements(stmt.orelse)
            yield from _statements(stmt.finalbody)
        elif isinstance(stmt, ast.With):
            yield from _statements(stmt.body)


def _defines(stmt: ast.stmt, name: str) -> bool:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return stmt.name == name
    if isinstance(stmt, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets)
    if isinstance(stmt, ast.AnnAssign):
        return isinstance(stmt.target, ast.Name) and stmt.target.id == name
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return any((a.asname or a.name.split(".")[0]) == name for a in stmt.names)
    return False


def _class_names(node: ast.ClassDef) -> list[str]:
    names = set()
    for stmt in _statements(node.body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            names |= {t.id for t in stmt.targets if isinstance(t, ast.Name)}
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names.add(stmt.target.id)
    return sorted(names)


class Tree:
    """A torch tree on disk, read with ``ast`` only."""

    def __init__(self, root: str, function_digest: Callable[[ast.Module, str], str | None]) -> None:
        root = os.path.abspath(root)
        if not os.path.isdir(os.path.join(root, "torch")) and os.path.basename(root) == "torch":
            root = os.path.dirname(root)
        if not os.path.isfile(os.path.join(root, "torch", "__init__.py")):
            raise PortCheckError(f"no torch/__init__.py under {root}: pass the folder that holds torch/")
        self.root = root
        self.function_digest = function_digest
        self._trees: dict[str, ast.Module | None] = {}

    def version(self) -> str | None:
        for rel, pattern in (("version.txt", r"^\s*(\S+)"), ("torch/version.py", r"^__version__\s*=\s*['\"]([^'\"]+)")):
            path = os.path.join(self.root, rel)
            if os.path.isfile(path):
                m = re.search(pattern, _read(path), re.M)
                if m:
                    return m.group(1)
        return None

    def module_file(self, module: str) -> str | None:
        base = os.path.join(self.root, *module.split("."))
        for path in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(path):
                return path
        return None

    def module_tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            path = self.module_file(module)
            try:
                self._trees[module] = _parse(path) if path else None
            except (SyntaxError, UnicodeDecodeError, OSError):
                self._trees[module] = None
        return self._trees[module]

    def split(self, dotted: str) -> tuple[str, str] | None:
        """``(module, qualname)``: the longest prefix that is a module here."""
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            module = ".".join(parts[:i])
            if self.module_file(module):
                return module, ".".join(parts[i:])
        return None

    def lookup(self, module: str, qualname: str) -> tuple[Found | None, str]:
        """What ``module:qualname`` is here, and the name cut to what the tree
        defines (``counters.clear`` is ``counters``)."""
        if self.module_tree(module) is None:
            return None, f"{module}:{qualname}" if qualname else module
        if not qualname:
            return Found("module", where=module), module
        parts = qualname.split(".")
        found, used = self._resolve(module, parts, 0)
        return found, f"{module}:{'.'.join(parts[:max(used, 1)])}"

    def _resolve(self, module: str, parts: list[str], hops: int) -> tuple[Found | None, int]:
        """``parts`` looked up from the top of ``module``: what they name, and
        how many of them name it."""
        tree = self.module_tree(module)
        if tree is None or hops > 8:
            return None, len(parts)
        body: list[ast.stmt] = tree.body
        cls: ast.ClassDef | None = None
        node: ast.stmt | None = None
        for i, part in enumerate(parts):
            node = None
            for stmt in _statements(body):
                if _defines(stmt, part):
                    node = stmt  # the last definition wins
            if node is None:
                if cls is not None:  # inherited?
                    for base in cls.bases:
                        target = self._base(module, base)
                        if target is None:
                            continue
                        prefix = target[1].split(".") if target[1] else []
                        found, used = self._resolve(target[0], [*prefix, *parts[i:]], hops + 1)
                        if found is not None:
                            return found, i + max(used - len(prefix), 1)
                elif i == 0 and self._config_module(tree):
                    # install_config_module makes the module a ConfigModule.
                    found, used = self._resolve(CONFIG_MODULE, ["ConfigModule", *parts], hops + 1)
                    if found is not None:
                        return found, max(used - 1, 1)
                return None, len(parts)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and i == 0:
                target = self._imported(node, module, part)
                if target is None or self.module_file(target[0]) is None or target == (module, part):
                    return Found("compiled", where=f"{module}:{part}"), 1  # an extension module's name
                prefix = target[1].split(".") if target[1] else []
                found, used = self._resolve(target[0], [*prefix, *parts[1:]], hops + 1)
                if found is None and not prefix and len(parts) == 1:
                    return Found("module", where=target[0]), 1
                return found, max(used - len(prefix), 0) + 1 if prefix else max(used, 1)
            if i < len(parts) - 1 and not isinstance(node, ast.ClassDef):
                return self._found(module, parts[: i + 1], node), i + 1  # an attribute of a function or value
            if isinstance(node, ast.ClassDef):
                cls = node
                body = node.body
        assert node is not None
        return self._found(module, parts, node), len(parts)

    def _found(self, module: str, parts: list[str], node: ast.stmt) -> Found:
        where = f"{module}:{'.'.join(parts)}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            digest = self.function_digest(ast.Module(body=[node], type_ignores=[]), node.name)
            return Found("function", _signature(node.args), digest, where)
        if isinstance(node, ast.ClassDef):
            init = [s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"]
            signature = {"__init__": _signature(init[-1].args) if init else None, "defines": _class_names(node)}
            return Found("class", signature, _digest(node), where)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            return Found("value", None, _digest(node.value), where)
        return Found("value", None, None, where)

    @staticmethod
    def _config_module(tree: ast.Module) -> bool:
        return any(
            isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
            and isinstance(n.value.func, ast.Name) and n.value.func.id == "install_config_module"
            for n in tree.body
        )

    def _base(self, module: str, base: ast.expr) -> tuple[str, str] | None:
        """A base class expression as ``(module, qualname)``."""
        if isinstance(base, ast.Subscript):  # Generic[T]
            base = base.value
        parts = []
        while isinstance(base, ast.Attribute):
            parts.append(base.attr)
            base = base.value
        if not isinstance(base, ast.Name):
            return None
        return module, ".".join([base.id, *reversed(parts)])

    def _imported(self, node: ast.Import | ast.ImportFrom, module: str, name: str) -> tuple[str, str] | None:
        """Where the name an import statement binds comes from: ``(module, qualname)``."""
        for alias in node.names:
            if (alias.asname or alias.name.split(".")[0]) != name:
                continue
            if isinstance(node, ast.Import):
                return (alias.name, "") if alias.asname else (name, "")
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if self.module_file(module) and not self.module_file(module).endswith("__init__.py"):
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            full = f"{base}.{alias.name}"
            return (full, "") if self.module_file(full) else (base, alias.name)
        return None


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------


@dataclass
class Row:
    group: str
    name: str
    status: str
    old: Found | None = None
    new: Found | None = None
    detail: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "status": self.status,
            "kind": (self.new or self.old).kind if (self.new or self.old) else None,
            "old": self.old.as_json() if self.old else None,
            "new": self.new.as_json() if self.new else None,
            "detail": self.detail,
        }


def _status(old: Found | None, new: Found | None) -> tuple[str, list[str]]:
    if old is None and new is None:
        return "not found", ["in neither tree: set at run time, or not what the scan took it for"]
    if new is None:
        return "missing in new", []
    if old is None:
        return "new only", []
    if old.kind != new.kind:
        return "signature changed", [f"was a {old.kind}, now a {new.kind}"]
    if old.signature != new.signature:
        return "signature changed", _signature_detail(old, new)
    if old.digest != new.digest:
        return "source changed", []
    return "same", []


def _signature_detail(old: Found, new: Found) -> list[str]:
    if old.kind == "function":
        return [f"({_params(old.signature)}) -> ({_params(new.signature)})"]
    if old.kind == "class":
        out = []
        if old.signature["__init__"] != new.signature["__init__"]:
            out.append(f"__init__ ({_params(old.signature['__init__'] or [])}) -> "
                       f"({_params(new.signature['__init__'] or [])})")
        gone = sorted(set(old.signature["defines"]) - set(new.signature["defines"]))
        added = sorted(set(new.signature["defines"]) - set(old.signature["defines"]))
        if gone:
            out.append("removed: " + ", ".join(gone))
        if added:
            out.append("added: " + ", ".join(added))
        return out
    return []


def _params(sig: list[list[Any]]) -> str:
    marks = {"var positional": "*", "var keyword": "**"}
    out = []
    star = False
    for name, kind, default in sig:
        if kind == "keyword only" and not star:
            out.append("*")
        star = star or kind in ("keyword only", "var positional")
        text = marks.get(kind, "") + name + ("" if default is None else f"={default}")
        out.append(text)
    posonly = sum(1 for _, kind, _ in sig if kind == "positional only")
    if posonly:
        out.insert(posonly, "/")
    return ", ".join(out)


def _name_of(tree: Tree, other: Tree, dotted: str) -> tuple[str, str]:
    for t in (tree, other):
        split = t.split(dotted)
        if split:
            return split
    module, _, attr = dotted.rpartition(".")
    return module, attr


def compare(old: Tree, new: Tree, package_dir: str = PACKAGE_DIR) -> list[Row]:
    rows: list[Row] = []
    seen: dict[str, set[str]] = {g: set() for g in GROUPS}

    def add(group: str, module: str, qualname: str) -> None:
        found_old, name = old.lookup(module, qualname)
        found_new, name_new = new.lookup(module, qualname)
        if found_old is None and found_new is not None:
            name = name_new
        if name in seen[group] or (group == "called" and name in seen["patched"] | seen["mirrored"]):
            return
        seen[group].add(name)
        status, detail = _status(found_old, found_new)
        rows.append(Row(group, name, status, found_old, found_new, detail))

    for name in patch_sites(package_dir):
        module, _, qualname = name.partition(":")
        add("patched", module, qualname)
    for name in mirrors(package_dir):
        module, _, qualname = name.partition(":")
        add("mirrored", module, qualname)
    called = []
    for dotted in private_uses(package_dir):
        module, qualname = _name_of(old, new, dotted)
        called.append((module, qualname))
    for module, qualname in sorted(set(called)):
        add("called", module, qualname)
    # A module listed only because a longer name runs through it says nothing.
    longer = {r.name.split(":")[0] for r in rows if ":" in r.name}
    return [r for r in rows if not (r.group == "called" and ":" not in r.name and r.name in longer
                                    and r.status == "same")]


def counts(rows: list[Row]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {g: {s: 0 for s in STATUSES} for g in GROUPS}
    for r in rows:
        out[r.group][r.status] += 1
    return out


def render(rows: list[Row], old: Tree, new: Tree) -> str:
    lines = [f"old: {old.root} (torch {old.version() or '?'})", f"new: {new.root} (torch {new.version() or '?'})"]
    for group in GROUPS:
        members = [r for r in rows if r.group == group]
        c = counts(rows)[group]
        summary = ", ".join(f"{n} {s}" for s, n in c.items() if n)
        lines += ["", f"{group} ({len(members)}: {summary or 'none'})"]
        if not members:
            continue
        width = max(len(r.name) for r in members)
        for r in members:
            kind = (r.new or r.old).kind if (r.new or r.old) else "?"
            lines.append(f"  {r.name:<{width}}  {kind:<8}  {r.status}")
            lines += [f"  {'':<{width}}            {d}" for d in r.detail]
    return "\n".join(lines) + "\n"


def mirror_digests(tree: Tree, package_dir: str = PACKAGE_DIR) -> tuple[str, dict[str, str | None]]:
    out = {}
    for name in sorted(mirrors(package_dir)):
        module, _, qualname = name.partition(":")
        module_tree = tree.module_tree(module)
        out[name] = tree.function_digest(module_tree, qualname) if module_tree is not None else None
    version = tree.version() or "?"
    m = re.match(r"(\d+\.\d+)", version)
    return (m.group(1) if m else version), out


def render_digests(release: str, digests: dict[str, str | None]) -> str:
    lines = [f'MIRROR_DIGESTS["{release}"] = {{']
    for name, digest in digests.items():
        lines.append(f'    "{name}": "{digest}",' if digest else f'    # "{name}": not found in this tree')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--old", help="the folder that holds the old torch/")
    parser.add_argument("--new", help="the folder that holds the new torch/")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--digests", metavar="DIR", help="print the mirrored functions' digests of one tree")
    parser.add_argument("--package", default=PACKAGE_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        function_digest = load_function_digest(args.package)
        if args.digests:
            release, digests = mirror_digests(Tree(args.digests, function_digest), args.package)
            if args.json:
                print(json.dumps({"release": release, "digests": digests}, indent=2))
            else:
                sys.stdout.write(render_digests(release, digests))
            return 0
        if not (args.old and args.new):
            parser.error("give --old and --new, or --digests")
        old, new = Tree(args.old, function_digest), Tree(args.new, function_digest)
        rows = compare(old, new, args.package)
    except (PortCheckError, OSError, SyntaxError) as e:
        print(f"port_check: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({
            "old": {"root": old.root, "version": old.version()},
            "new": {"root": new.root, "version": new.version()},
            "counts": counts(rows),
            "rows": [r.as_json() for r in rows],
        }, indent=2))
    else:
        sys.stdout.write(render(rows, old, new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
