"""
Facts with one owner each, checked so that a copy cannot drift:

- the entry modes (``schemas.MODE_*``), the key prefixes
  (``store/layout.py``) and the store's file names (``store/layout.py``) are
  spelled in their owner only: anywhere else in the package or the tools a
  string equal to one of them is a copy;
- the fields of an entry header's ``extra`` are those of
  ``schemas.EXTRA_FIELDS``, checked both ways: every field the package writes
  or reads is listed, and every listed field is used;
- every key prefix has the length the store's folders fan out after.
"""

from __future__ import annotations

import ast
import os
import unittest

import torch  # noqa: F401  (first: the package's install waits for torch's import)

from torch_aotcache import schemas
from torch_aotcache.store import layout

from common import REPO_ROOT

OWNED = {
    "torch_aotcache/schemas.py": set(schemas.ENTRY_MODES),
    "torch_aotcache/store/layout.py": {
        layout.GRAPH_KEY_PREFIX, layout.FRAME_KEY_PREFIX, layout.ENTRY_SUFFIX, layout.LOCK_SUFFIX,
        layout.TEMP_PREFIX, layout.MISSES,
    },
}


def python_files() -> list[str]:
    found = []
    for folder in ("torch_aotcache", "tools"):
        for dirpath, _dirs, files in os.walk(os.path.join(REPO_ROOT, folder)):
            found += [os.path.relpath(os.path.join(dirpath, f), REPO_ROOT) for f in files if f.endswith(".py")]
    return sorted(found)


def parse(relpath: str) -> ast.Module:
    with open(os.path.join(REPO_ROOT, relpath), encoding="utf-8") as f:
        return ast.parse(f.read(), relpath)


def copies(trees: dict[str, ast.Module]) -> list[str]:
    """Strings equal to an owned fact, outside its owner."""
    out = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            for owner, facts in OWNED.items():
                if owner != path and node.value in facts:
                    out.append(f"{path}:{node.lineno}: {node.value!r} (owned by {owner})")
    return out


def extra_fields_used(trees: dict[str, ast.Module]) -> tuple[set[str], set[str]]:
    """(string keys of ``extra``, names of ``schemas.EXTRA_*`` used), over the package."""
    literal: set[str] = set()
    named: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("EXTRA_") and node.attr != "EXTRA_FIELDS":
                named.add(node.attr)
            # extra["x"], extra.get("x"), extra={"x": ...}
            if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("extra"):
                if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                    literal.add(node.slice.value)
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("extra.get") and node.args:
                if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    literal.add(node.args[0].value)
            if isinstance(node, ast.keyword) and node.arg == "extra" and isinstance(node.value, ast.Dict):
                literal |= {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return literal, named


class TestOwners(unittest.TestCase):
    def setUp(self) -> None:
        self.trees = {p: parse(p) for p in python_files()}

    def test_owned_facts_are_not_spelled_elsewhere(self) -> None:
        self.assertEqual(copies(self.trees), [])

    def test_header_extra_fields_both_ways(self) -> None:
        package = {p: t for p, t in self.trees.items() if p.startswith("torch_aotcache/")}
        literal, named = extra_fields_used(package)
        self.assertEqual(literal, set(), "extra written or read by a string key: use schemas.EXTRA_*")
        listed = {name for name in vars(schemas) if name.startswith("EXTRA_") and name != "EXTRA_FIELDS"}
        self.assertEqual({getattr(schemas, n) for n in listed}, set(schemas.EXTRA_FIELDS))
        used_elsewhere = set()
        for path, tree in package.items():
            if path != "torch_aotcache/schemas.py":
                used_elsewhere |= extra_fields_used({path: tree})[1]
        self.assertEqual(listed - used_elsewhere, set(), "fields listed but never used")

    def test_key_prefixes_have_the_fan_out_length(self) -> None:
        for prefix in (layout.GRAPH_KEY_PREFIX, layout.FRAME_KEY_PREFIX):
            self.assertEqual(len(prefix), layout.KEY_PREFIX_LEN, prefix)
        key = layout.GRAPH_KEY_PREFIX + "ab" + "0" * 38
        self.assertEqual(os.path.basename(os.path.dirname(layout.key_dir(key, "/s"))), "ab")

    def test_the_checks_catch_a_copy(self) -> None:
        drifted = {"tools/x.py": ast.parse("mode = 'bundled'\nh.extra.get('upstream_mode')\nmake(extra={'ops': 1})\n")}
        self.assertEqual(copies(drifted), ["tools/x.py:1: 'bundled' (owned by torch_aotcache/schemas.py)"])
        self.assertEqual(extra_fields_used(drifted)[0], {"upstream_mode", "ops"})


if __name__ == "__main__":
    unittest.main()
