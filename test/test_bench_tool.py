"""
Smoke test of ``tools/bench_warmstart.py``: ``--quick`` runs end to end.

It checks that every mode produced a measurement and that the warm processes
really hit their cache (upstream's and ours); where ``redis-server`` and
redis-py are available, also that the remote section exists and its warm
process (empty cache dir) hit Redis.  It asserts no timing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import unittest
from pathlib import Path

from common import child_env, run_child, slow

# Every test here starts other processes or compiles many programs (CONTRIBUTING.md, "Tests").
pytestmark = slow


REPO_ROOT = Path(__file__).resolve().parent.parent
TOOL = REPO_ROOT / "tools" / "bench_warmstart.py"


class TestBenchWarmstartTool(unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(self.enterContext(tempfile.TemporaryDirectory()))

    def test_quick_benchmark_runs(self) -> None:
        out = self.tmp / "bench"
        proc = run_child([str(TOOL), "--quick", "--out", str(out)], child_env(path=()), cwd=REPO_ROOT, timeout=400)
        self.assertEqual(proc.returncode, 0, proc.stdout[-4000:] + proc.stderr[-4000:])
        with open(out / "results.json", encoding="utf-8") as f:
            data = json.load(f)
        self.assertTrue((out / "results.md").exists())

        steps = [r for r in data["runs"] if r["kind"] == "step" and r["model"] == "mlp"]
        by_phase = {(r["mode"], r["phase"]): r for r in steps}
        for mode_phase in [("off", "cold"), ("upstream", "cold"), ("ours", "cold"),
                           ("upstream", "warm"), ("ours", "warm"), ("floor", "floor"), ("eager", "floor")]:
            self.assertIn(mode_phase, by_phase, sorted(by_phase))
            self.assertIn("step_s", by_phase[mode_phase]["result"], by_phase[mode_phase])

        def aot_counters(mode: str, phase: str) -> dict[str, int]:
            return by_phase[(mode, phase)]["result"]["counters"]["aot_autograd"]

        self.assertGreaterEqual(
            aot_counters("ours", "warm").get("autograd_cache_hit", 0), 1, aot_counters("ours", "warm")
        )
        self.assertGreaterEqual(
            aot_counters("upstream", "warm").get("autograd_cache_hit", 0), 1, aot_counters("upstream", "warm")
        )
        self.assertTrue(by_phase[("ours", "warm")]["result"]["torch_aotcache_imported"])
        measured = Path(by_phase[("ours", "warm")]["result"]["torch_aotcache_file"]).resolve()
        self.assertTrue(measured.is_relative_to(REPO_ROOT), measured)
        self.assertFalse(by_phase[("upstream", "warm")]["result"]["torch_aotcache_imported"])
        self.assertIn("mlp", data["models"])
        # The eager floor compiles nothing and imports no Dynamo (a plain
        # module program never does), and the report sets the warm processes
        # against it.
        eager = by_phase[("eager", "floor")]["result"]
        self.assertFalse(eager["dynamo_imported"], eager)
        self.assertEqual(eager["counters"], {}, eager)
        self.assertTrue(by_phase[("floor", "floor")]["result"]["dynamo_imported"])
        self.assertGreaterEqual(
            by_phase[("floor", "floor")]["result"]["counters"]["stats"].get("unique_graphs", 0), 1
        )
        process = data["models"]["mlp"]["process"]
        self.assertIsNotNone(process["eager_s"])
        self.assertAlmostEqual(process["above_eager_ours_s"], process["warm_ours_s"] - process["eager_s"])
        self.assertIn("above eager", (out / "results.md").read_text(encoding="utf-8"))

        if shutil.which("redis-server") is None:
            return
        try:
            import redis  # noqa: F401
        except ImportError:
            return
        remote_runs = {(r["mode"], r["phase"]): r for r in steps if r["phase"].startswith("remote_")}
        self.assertTrue(
            ("ours", "remote_cold") in remote_runs and ("ours", "remote_warm") in remote_runs, sorted(remote_runs)
        )
        warm_remote = remote_runs[("ours", "remote_warm")]["result"]
        self.assertGreaterEqual(
            warm_remote["counters"]["torch_aotcache"].get("remote_hit", 0), 1, warm_remote["counters"]
        )
        self.assertGreaterEqual(
            warm_remote["counters"]["aot_autograd"].get("autograd_cache_hit", 0), 1, warm_remote["counters"]
        )
        remote = data["remote"]["mlp"]
        self.assertIsNone(remote["error"], remote["error"])
        self.assertTrue(remote["remote_hits_per_process"] and remote["remote_hits_per_process"][0] >= 1)
        self.assertTrue(remote["local_entry_bytes"] > 0 and remote["remote_value_bytes"] > 0, remote)
        self.assertIn("## Remote warm start", (out / "results.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    unittest.main()
