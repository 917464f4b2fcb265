"""
Smoke test of ``tools/bench_hitrate.py``: one tiny program through the tool's
machinery (two fresh worker processes sharing a cache dir, the counters, the
verdict, the table and the JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parent.parent
TOOL = REPO_ROOT / "tools" / "bench_hitrate.py"
sys.path.insert(0, str(TOOL.parent))
import bench_hitrate  # noqa: E402


def test_tiny_program_misses_then_hits(tmp_path: Path) -> None:
    out = tmp_path / "hitrate.json"
    env = dict(os.environ)
    env.pop("TORCH_AOTCACHE_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--programs", "tiny", "--modes", "ours", "--json", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(out, encoding="utf-8") as f:
        data = json.load(f)
    tiny = data["results"]["tiny"]["ours"]
    first, second = tiny["runs"]
    assert first["counts"] == {"hit": 0, "miss": 1, "bypass": 0, "saved": 1}, first
    assert second["counts"] == {"hit": 1, "miss": 0, "bypass": 0, "saved": 0}, second
    assert first["matches_eager"] and second["matches_eager"]
    assert tiny["repeat"] == "hit"
    assert "| tiny | 0/1/0 | 1/0/0 | hit |" in proc.stdout


def test_verdicts_and_table() -> None:
    def run(hit: int, miss: int, bypass: int, ok: bool = True, reasons: tuple[str, ...] = ()) -> dict:
        counts = {"hit": hit, "miss": miss, "bypass": bypass, "saved": miss}
        return {"counts": counts, "matches_eager": ok, "bypass_reasons": list(reasons)}

    assert bench_hitrate.repeat_verdict(run(0, 1, 0), run(1, 0, 0)) == "hit"
    assert bench_hitrate.repeat_verdict(run(0, 1, 0), run(1, 1, 0)) == "miss"
    assert bench_hitrate.repeat_verdict(run(0, 0, 1), run(0, 0, 1)) == "bypass"
    assert bench_hitrate.repeat_verdict(run(0, 1, 0), {"error": "boom"}) == "error"
    results = {
        "p": {
            "stock": {"runs": [run(0, 0, 1, reasons=("why",)), run(0, 0, 1, reasons=("why",))], "repeat": "bypass"},
            "ours": {"runs": [run(0, 1, 0), run(1, 0, 0, ok=False)], "repeat": "hit"},
        }
    }
    table = bench_hitrate.render_markdown(results, ["stock", "ours"])
    assert "| p | 0/0/1 | 0/0/1 | bypass | 0/1/0 | 1/0/0 WRONG | hit |" in table
    assert table.count("- p, stock: why") == 1
