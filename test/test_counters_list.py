"""
``counters.COUNTERS`` is the one list of our counters: the package counts
every name through ``counters.count`` and counts no name the list lacks, and
the list names nothing that is never counted.
"""

from __future__ import annotations

import ast
import os
import re
import unittest

import torch_aotcache
from torch_aotcache.counters import COUNTERS


PACKAGE_DIR = os.path.dirname(os.path.abspath(torch_aotcache.__file__))


def package_files() -> list[str]:
    """Every module of the package, its groups' included."""
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(PACKAGE_DIR)
        for name in names
        if name.endswith(".py")
    )


def counted_names() -> set[str]:
    """Names passed to ``count(...)`` anywhere in the package; an f-string
    such as ``f"store_{op}_failed"`` stands for every listed name it matches."""
    names: set[str] = set()
    for file in package_files():
        with open(file, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "count"):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant):
                names.add(arg.value)
            elif isinstance(arg, ast.JoinedStr):
                pattern = "".join(
                    re.escape(v.value) if isinstance(v, ast.Constant) else "[a-z_]+" for v in arg.values
                )
                matched = {n for n in COUNTERS if re.fullmatch(pattern, n)}
                if not matched:
                    raise AssertionError(f"{file}: count({ast.unparse(arg)}) matches no listed counter")
                names |= matched
            elif isinstance(arg, ast.IfExp):
                names |= {a.value for a in (arg.body, arg.orelse) if isinstance(a, ast.Constant)}
            else:
                raise AssertionError(f"{file}: count() of {ast.unparse(arg)}: name it literally")
    return names


class TestCountersList(unittest.TestCase):
    def test_every_counted_name_is_listed(self) -> None:
        self.assertEqual(counted_names() - COUNTERS.keys(), set())

    def test_every_listed_name_is_counted(self) -> None:
        self.assertEqual(COUNTERS.keys() - counted_names(), set())

    def test_nothing_counts_around_the_list(self) -> None:
        for file in package_files():
            if os.path.basename(file) != "counters.py":
                with open(file, encoding="utf-8") as f:
                    source = f.read()
                self.assertIsNone(re.search(r'counters\["torch_aotcache"\]\[[^\]]+\]\s*\+=', source), file)


if __name__ == "__main__":
    unittest.main()
