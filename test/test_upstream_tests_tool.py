"""
``tools/upstream_tests.py`` on a small stand-in for upstream's test file: each
mode really is what it says (ours installed, stock untouched), and the counts
per class and the failures come back right.  The real file is not ours to
ship; CONTRIBUTING.md says how to run the tool on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parent.parent
TOOL = REPO_ROOT / "tools" / "upstream_tests.py"

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


def run_tool(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    test_file = tmp_path / "test_stand_in.py"
    test_file.write_text(textwrap.dedent(STAND_IN))
    out = tmp_path / "results.json"
    env = dict(os.environ)
    env.pop("TORCH_AOTCACHE_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, str(TOOL), str(test_file), "--json", str(out), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def test_both_modes_per_class(tmp_path: Path) -> None:
    proc, data = run_tool(tmp_path)
    runs = data["runs"]
    assert runs["ours"]["classes"] == {
        "CacheActiveTests": {"passed": 2, "failed": 0, "skipped": 1},
        "StockTests": {"passed": 0, "failed": 1, "skipped": 0},
    }
    assert runs["stock"]["classes"] == {
        "CacheActiveTests": {"passed": 1, "failed": 1, "skipped": 1},
        "StockTests": {"passed": 1, "failed": 0, "skipped": 0},
    }
    assert runs["ours"]["failures"] == ["StockTests::test_stock"]
    assert runs["stock"]["failures"] == ["CacheActiveTests::test_active"]
    # The ours run failed a test: the tool says so.
    assert proc.returncode == 1
    assert "FAILED StockTests::test_stock" in proc.stdout
    assert "| total" in proc.stdout


def test_exit_status_follows_ours(tmp_path: Path) -> None:
    proc, data = run_tool(tmp_path, "--modes", "ours", "-k", "CacheActiveTests")
    assert list(data["runs"]) == ["ours"]
    assert data["runs"]["ours"]["failures"] == []
    assert proc.returncode == 0, proc.stdout + proc.stderr
