"""
``tools/upstream_tests.py`` on a small stand-in for upstream's test file: each
mode really is what it says (ours installed, stock untouched), and the counts
per class and the failures come back right.  The real file is not ours to
ship; CONTRIBUTING.md says how to run the tool on it.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import textwrap
import unittest
from pathlib import Path

from common import child_env, REPO_ROOT, run_child, slow

# Every test here starts other processes or compiles many programs (CONTRIBUTING.md, "Tests").
pytestmark = slow


TOOL = Path(REPO_ROOT) / "tools" / "upstream_tests.py"

STAND_IN = '''
import sys
import unittest

import torch._functorch._aot_autograd.autograd_cache as autograd_cache


def ours_active():
    try_load = vars(autograd_cache.AOTAutogradCache)["try_load"].__func__
    return try_load.__module__.startswith("torch_aotcache")


class CacheActiveTests(unittest.TestCase):
    def test_active(self):
        self.assertTrue(ours_active())

    def test_also_passes(self):
        pass

    @unittest.skip("stands for a GPU test")
    def test_skipped(self):
        pass


class StockTests(unittest.TestCase):
    def test_stock(self):
        self.assertFalse(ours_active())
'''


class TestUpstreamTestsTool(unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(self.enterContext(tempfile.TemporaryDirectory()))

    def run_tool(self, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        test_file = self.tmp / "test_stand_in.py"
        test_file.write_text(textwrap.dedent(STAND_IN))
        out = self.tmp / "results.json"
        # The tool puts its own paths on the runs' PYTHONPATH: none added here.
        proc = run_child([str(TOOL), str(test_file), "--json", str(out), *args], child_env(path=()), cwd=self.tmp)
        self.assertTrue(out.exists(), proc.stdout + proc.stderr)
        return proc, json.loads(out.read_text())

    def test_both_modes_per_class(self) -> None:
        proc, data = self.run_tool()
        runs = data["runs"]
        self.assertEqual(runs["ours"]["classes"], {
            "CacheActiveTests": {"passed": 2, "failed": 0, "skipped": 1},
            "StockTests": {"passed": 0, "failed": 1, "skipped": 0},
        })
        self.assertEqual(runs["stock"]["classes"], {
            "CacheActiveTests": {"passed": 1, "failed": 1, "skipped": 1},
            "StockTests": {"passed": 1, "failed": 0, "skipped": 0},
        })
        self.assertEqual(runs["ours"]["failures"], ["StockTests::test_stock"])
        self.assertEqual(runs["stock"]["failures"], ["CacheActiveTests::test_active"])
        # The ours run failed a test: the tool says so.
        self.assertEqual(proc.returncode, 1)
        self.assertIn("FAILED StockTests::test_stock", proc.stdout)
        self.assertIn("| total", proc.stdout)

    def test_exit_status_follows_ours(self) -> None:
        proc, data = self.run_tool("--modes", "ours", "-k", "CacheActiveTests")
        self.assertEqual(list(data["runs"]), ["ours"])
        self.assertEqual(data["runs"]["ours"]["failures"], [])
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
