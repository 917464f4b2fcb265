"""
The package's import graph has no circle.

Every ``from . import x`` / ``from .x import y`` in every module counts, at
module level or inside a function (an import hidden in a function is still a
dependency), and so does a module named as a string (a ``sys.modules``
lookup is a dependency through a back door).  ``_compat`` is a leaf: it imports nothing of the package.
"""

from __future__ import annotations

import ast
import os
import unittest

import torch_aotcache


PACKAGE_DIR = os.path.dirname(os.path.abspath(torch_aotcache.__file__))


def _module_names() -> dict[str, str]:
    """Dotted module name within the package (``store.local``; a group's
    ``__init__`` is the group's name) -> its file."""
    names = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), PACKAGE_DIR)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1] or ["__init__"]
            names[".".join(rel)] = os.path.join(folder, name)
    return names


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, modules: set[str]) -> set[str]:
    """The package's modules an ``ImportFrom`` in ``module`` depends on."""
    if node.level == 0:
        if not (node.module or "").startswith("torch_aotcache."):
            return set()
        base = node.module.split(".")[1:]
    else:
        here = module.split(".") if module != "__init__" else []
        package = here if is_package else here[:-1]
        if node.level - 1 > len(package):
            raise AssertionError(f"{module}: relative import above the package")
        base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    found = set()
    target = ".".join(base)
    for alias in node.names:
        sub = f"{target}.{alias.name}" if target else alias.name
        if sub in modules:
            found.add(sub)
        elif target in modules:
            found.add(target)
    # Importing a.b also runs a's __init__ (a group's docstring-only module).
    return found


def import_graph() -> dict[str, set[str]]:
    files = _module_names()
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        is_package = path.endswith("__init__.py")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                graph[module] |= _resolve(module, is_package, node, modules)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("torch_aotcache."):
                        graph[module].add(alias.name.split(".", 1)[1])
            elif (
                isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value.startswith("torch_aotcache.") and node.value.split(".", 1)[1] in modules
            ):
                # A module named as a string (``sys.modules.get("torch_aotcache.x")``,
                # ``importlib.import_module``): a dependency all the same.
                graph[module].add(node.value.split(".", 1)[1])
        graph[module].discard(module)
    # The package's __init__ is where installing starts; nothing imports it back.
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


class TestImportGraph(unittest.TestCase):
    def test_the_scan_sees_imports(self) -> None:
        graph = import_graph()
        self.assertIn("_compat", graph["autograd_cache"])
        self.assertIn("inductor.artifacts", graph["runtime_wrappers"])
        self.assertIn("store.layout", graph["store.local"])
        self.assertIn("config", graph["inductor.front_door"])

    def test_no_import_circle(self) -> None:
        cycle = find_cycle(import_graph())
        self.assertIsNone(cycle, " -> ".join(cycle or []))

    def test_compat_is_a_leaf(self) -> None:
        self.assertEqual(import_graph()["_compat"], set())

    def test_a_module_named_as_a_string_counts(self) -> None:
        # The package's __init__ looks its modules up to undo what they did.
        self.assertIn("installer.patching", import_graph()["__init__"])

    def test_nothing_imports_patching_back(self) -> None:
        # The two switches (the cache's, the frame cache's) install through
        # the table; no module the table names as a replacement imports it.
        graph = import_graph()
        importers = {m for m, deps in graph.items() if "installer.patching" in deps}
        self.assertLessEqual(importers, {"__init__", "dynamo.install"}, importers)
        from torch_aotcache.installer import patching

        named = set()
        for site in patching.PATCH_SITES:
            specs = site.replacement.values() if isinstance(site.replacement, dict) else [site.replacement]
            named |= {spec.split(":")[0] for spec in specs}
        self.assertTrue(named)
        self.assertEqual(named & importers, set())

    def test_groups_are_docstrings_only(self) -> None:
        # Importing one module of a group runs the group's __init__: it must
        # import nothing (the command line reads the store without torch).
        for module, path in _module_names().items():
            if path.endswith("__init__.py") and module != "__init__":
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                self.assertTrue(len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), module)


class TestCycleFinder(unittest.TestCase):
    def test_cycle_finder_finds_a_cycle(self) -> None:
        self.assertEqual(find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])
        self.assertIsNone(find_cycle({"a": {"b"}, "b": set()}))


if __name__ == "__main__":
    unittest.main()
