"""
Smoke test of ``tools/bench_hitrate.py``: one tiny program through the tool's
machinery (two fresh worker processes sharing a cache dir, the counters, the
verdict, the table and the JSON).
"""

from __future__ import annotations

import json
import sys
import tempfile
import unittest
from pathlib import Path

from common import child_env, run_child, slow

# Every test here starts other processes or compiles many programs (CONTRIBUTING.md, "Tests").
pytestmark = slow


REPO_ROOT = Path(__file__).resolve().parent.parent
TOOL = REPO_ROOT / "tools" / "bench_hitrate.py"
sys.path.insert(0, str(TOOL.parent))
import bench_hitrate  # noqa: E402


class TestBenchHitrate(unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(self.enterContext(tempfile.TemporaryDirectory()))

    def test_tiny_program_misses_then_hits(self) -> None:
        out = self.tmp / "hitrate.json"
        proc = run_child(
            [str(TOOL), "--programs", "tiny", "--modes", "ours", "--json", str(out)],
            child_env(path=()),
            cwd=REPO_ROOT,
            timeout=600,
        )
        self.assertEqual(proc.returncode, 0, proc.stdout[-4000:] + proc.stderr[-4000:])
        with open(out, encoding="utf-8") as f:
            data = json.load(f)
        tiny = data["results"]["tiny"]["ours"]
        first, second = tiny["runs"]
        self.assertEqual(first["counts"], {"hit": 0, "miss": 1, "bypass": 0, "saved": 1}, first)
        self.assertEqual(second["counts"], {"hit": 1, "miss": 0, "bypass": 0, "saved": 0}, second)
        self.assertTrue(first["matches_eager"] and second["matches_eager"])
        self.assertEqual(tiny["repeat"], "hit")
        self.assertIn("| tiny | 0/1/0 | 1/0/0 | hit |", proc.stdout)

    def test_verdicts_and_table(self) -> None:
        def run(hit: int, miss: int, bypass: int, ok: bool = True, reasons: tuple[str, ...] = ()) -> dict:
            counts = {"hit": hit, "miss": miss, "bypass": bypass, "saved": miss}
            return {"counts": counts, "matches_eager": ok, "bypass_reasons": list(reasons)}

        self.assertEqual(bench_hitrate.repeat_verdict(run(0, 1, 0), run(1, 0, 0)), "hit")
        self.assertEqual(bench_hitrate.repeat_verdict(run(0, 1, 0), run(1, 1, 0)), "miss")
        self.assertEqual(bench_hitrate.repeat_verdict(run(0, 0, 1), run(0, 0, 1)), "bypass")
        self.assertEqual(bench_hitrate.repeat_verdict(run(0, 1, 0), {"error": "boom"}), "error")
        results = {
            "p": {
                "stock": {"runs": [run(0, 0, 1, reasons=("why",)), run(0, 0, 1, reasons=("why",))], "repeat": "bypass"},
                "ours": {"runs": [run(0, 1, 0), run(1, 0, 0, ok=False)], "repeat": "hit"},
            }
        }
        table = bench_hitrate.render_markdown(results, ["stock", "ours"])
        self.assertIn("| p | 0/0/1 | 0/0/1 | bypass | 0/1/0 | 1/0/0 WRONG | hit |", table)
        self.assertEqual(table.count("- p, stock: why"), 1)


if __name__ == "__main__":
    unittest.main()
