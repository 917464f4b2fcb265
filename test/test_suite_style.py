"""
The suite keeps one style (CONTRIBUTING.md, "Tests"), checked here so that it
cannot drift:

- tests are methods of ``unittest.TestCase`` classes, as in PyTorch's own
  suite: no module-level ``test_*`` functions, no pytest fixtures;
- a test file starts other Python processes only through ``common``'s
  helpers (``child_env``, ``run_child``, ``spawn_child``, ``run_python``),
  never by copying ``os.environ`` itself;
- disk faults come from ``tools/fault_injection.py`` (shared with
  ``tools/soak.py``), not from a copy of it;
- a ``if __name__ == "__main__":`` guard, where a file has one, is its last
  statement (mid-file, running the file directly would skip the tests below).
"""

from __future__ import annotations

import ast
import os
import unittest

from common import REPO_ROOT

TEST_DIR = os.path.join(REPO_ROOT, "test")
# Patched by the shared fault injector; a test file that patches several of
# them itself has grown a second injector.
FAULT_TARGETS = {"tempfile.mkstemp", "os.makedirs", "os.replace", "os.unlink", "os.scandir", "builtins.open"}


def suite_files() -> list[str]:
    return sorted(
        os.path.join(TEST_DIR, n) for n in os.listdir(TEST_DIR) if n.startswith("test_") and n.endswith(".py")
    )


def parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def module_level_tests(tree: ast.Module) -> list[str]:
    return [
        n.name for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test")
    ]


def fixtures(tree: ast.Module) -> list[str]:
    return [
        n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        for d in n.decorator_list if "fixture" in ast.unparse(d)
    ]


def environ_copies(tree: ast.Module) -> list[int]:
    return [
        n.lineno for n in ast.walk(tree)
        if isinstance(n, ast.Call) and (
            (ast.unparse(n.func) == "dict" and any(ast.unparse(a) == "os.environ" for a in n.args))
            or ast.unparse(n.func) == "os.environ.copy"
        )
    ]


def fault_targets_patched(tree: ast.Module) -> set[str]:
    return FAULT_TARGETS & {
        n.args[0].value for n in ast.walk(tree)
        if isinstance(n, ast.Call) and ast.unparse(n.func).endswith("mock.patch")
        and n.args and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)
    }


def main_guard_not_last(tree: ast.Module) -> list[int]:
    """Lines of ``__main__`` guards that some statement follows."""
    return [
        n.lineno for i, n in enumerate(tree.body)
        if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) and i != len(tree.body) - 1
    ]


class TestSuiteStyle(unittest.TestCase):
    def test_tests_are_testcase_methods(self) -> None:
        for path in suite_files():
            tree = parse(path)
            self.assertEqual(module_level_tests(tree), [], f"{path}: module-level tests (put them in a TestCase)")
            self.assertEqual(fixtures(tree), [], f"{path}: pytest fixtures (use setUp / enterContext)")

    def test_child_processes_go_through_common(self) -> None:
        for path in suite_files():
            self.assertEqual(
                environ_copies(parse(path)), [], f"{path}: copies os.environ for a child (use common.child_env)"
            )

    def test_one_fault_injector(self) -> None:
        for path in suite_files():
            patched = fault_targets_patched(parse(path))
            self.assertLess(len(patched), 3, f"{path}: patches {sorted(patched)} itself (tools/fault_injection.py)")

    def test_main_guard_comes_last(self) -> None:
        for path in suite_files():
            self.assertEqual(main_guard_not_last(parse(path)), [], f"{path}: tests follow the __main__ guard")

    def test_the_checks_catch_what_they_look_for(self) -> None:
        """Each check above, on a made-up file that breaks it."""
        bad = ast.parse(
            "import os, pytest, unittest.mock\n"
            "@pytest.fixture\n"
            "def cache_dir(tmp_path): return tmp_path\n"
            "def test_x(cache_dir):\n"
            "    env = dict(os.environ)\n"
            "    other = os.environ.copy()\n"
            "    unittest.mock.patch('os.replace', 1); unittest.mock.patch('os.unlink', 1)\n"
            "    unittest.mock.patch('builtins.open', 1)\n"
        )
        self.assertEqual(module_level_tests(bad), ["test_x"])
        self.assertEqual(fixtures(bad), ["cache_dir"])
        self.assertEqual(environ_copies(bad), [5, 6])
        self.assertEqual(fault_targets_patched(bad), {"os.replace", "os.unlink", "builtins.open"})
        mid = ast.parse("import unittest\nif __name__ == '__main__':\n    unittest.main()\nclass T(unittest.TestCase): pass\n")
        self.assertEqual(main_guard_not_last(mid), [2])
