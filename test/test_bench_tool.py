"""
Smoke test of ``tools/bench_warmstart.py``: ``--quick`` runs end to end.

It checks that every mode produced a measurement and that the warm processes
really hit their cache (upstream's and ours); where ``redis-server`` and
redis-py are available, also that the remote section exists and its warm
process (empty cache dir) hit Redis.  It asserts no timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parent.parent
TOOL = REPO_ROOT / "tools" / "bench_warmstart.py"


def test_quick_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = dict(os.environ)
    env.pop("TORCH_AOTCACHE_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(out / "results.json", encoding="utf-8") as f:
        data = json.load(f)
    assert (out / "results.md").exists()

    steps = [r for r in data["runs"] if r["kind"] == "step" and r["model"] == "mlp"]
    by_phase = {(r["mode"], r["phase"]): r for r in steps}
    for mode_phase in [("off", "cold"), ("upstream", "cold"), ("ours", "cold"),
                       ("upstream", "warm"), ("ours", "warm"), ("floor", "floor")]:
        assert mode_phase in by_phase, sorted(by_phase)
        assert "step_s" in by_phase[mode_phase]["result"], by_phase[mode_phase]

    def aot_counters(mode: str, phase: str) -> dict[str, int]:
        return by_phase[(mode, phase)]["result"]["counters"]["aot_autograd"]

    assert aot_counters("ours", "warm").get("autograd_cache_hit", 0) >= 1, aot_counters("ours", "warm")
    assert aot_counters("upstream", "warm").get("autograd_cache_hit", 0) >= 1, aot_counters("upstream", "warm")
    assert by_phase[("ours", "warm")]["result"]["torch_aotcache_imported"]
    measured = Path(by_phase[("ours", "warm")]["result"]["torch_aotcache_file"]).resolve()
    assert measured.is_relative_to(REPO_ROOT), measured
    assert not by_phase[("upstream", "warm")]["result"]["torch_aotcache_imported"]
    assert "mlp" in data["models"]

    if shutil.which("redis-server") is None:
        return
    try:
        import redis  # noqa: F401
    except ImportError:
        return
    remote_runs = {(r["mode"], r["phase"]): r for r in steps if r["phase"].startswith("remote_")}
    assert ("ours", "remote_cold") in remote_runs and ("ours", "remote_warm") in remote_runs, sorted(remote_runs)
    warm_remote = remote_runs[("ours", "remote_warm")]["result"]
    assert warm_remote["counters"]["torch_aotcache"].get("remote_hit", 0) >= 1, warm_remote["counters"]
    assert warm_remote["counters"]["aot_autograd"].get("autograd_cache_hit", 0) >= 1, warm_remote["counters"]
    remote = data["remote"]["mlp"]
    assert remote["error"] is None, remote["error"]
    assert remote["remote_hits_per_process"] and remote["remote_hits_per_process"][0] >= 1
    assert remote["local_entry_bytes"] > 0 and remote["remote_value_bytes"] > 0, remote
    assert "## Remote (Redis) warm start" in (out / "results.md").read_text(encoding="utf-8")
