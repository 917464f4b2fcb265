"""
The package's import graph has no circle.

Every ``from . import x`` / ``from .x import y`` in every module counts, at
module level or inside a function (an import hidden in a function is still a
dependency).  ``_compat`` is a leaf: it imports nothing of the package.
"""

from __future__ import annotations

import ast
import os

import torch_aotcache


PACKAGE_DIR = os.path.dirname(os.path.abspath(torch_aotcache.__file__))


def import_graph() -> dict[str, set[str]]:
    modules = {
        name[:-3] for name in os.listdir(PACKAGE_DIR) if name.endswith(".py")
    }
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module in modules:
        with open(os.path.join(PACKAGE_DIR, module + ".py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    target = node.module.split(".")[0]
                    graph[module].add(target)
                elif node.level == 1:
                    graph[module].update(a.name for a in node.names if a.name in modules)
                elif node.level == 0 and (node.module or "").startswith("torch_aotcache."):
                    graph[module].add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("torch_aotcache."):
                        graph[module].add(alias.name.split(".")[1])
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


def test_the_scan_sees_imports() -> None:
    graph = import_graph()
    assert "_compat" in graph["autograd_cache"]
    assert "artifacts" in graph["runtime_wrappers"]


def test_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_compat_is_a_leaf() -> None:
    assert import_graph()["_compat"] == set()


def test_nothing_imports_patching_back() -> None:
    importers = {m for m, deps in import_graph().items() if "patching" in deps}
    assert importers <= {"__init__"}, importers


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
