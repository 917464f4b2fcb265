"""
The benchmark's package (``tools/bench/``) without running a benchmark: every
module imports with neither torch nor torch_aotcache, and the report of a fixed
made-up run is the text below, both from the functions and through
``tools/bench_warmstart.py --render`` started in another working directory.

The expected text is what the benchmark printed for this run when it was still
one file: a change to it is a change to the report.
"""

from __future__ import annotations

import json
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

from common import child_env, run_child


REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS = REPO_ROOT / "tools"
TOOL = TOOLS / "bench_warmstart.py"
sys.path.insert(0, str(TOOLS))
from bench import report, summary  # noqa: E402


MODULES = ("bench", "bench.chart", "bench.cli", "bench.config", "bench.machine", "bench.measure",
           "bench.programs", "bench.report", "bench.summary", "bench.worker")


def _step(model: str, mode: str, phase: str, index: int, step_s: float | None, load: float,
          commit: str = "abc1234", hits: int = 1, tac: dict[str, int] | None = None) -> dict[str, Any]:
    """One worker record of a first step; ``step_s=None`` is a worker that failed."""
    record: dict[str, Any] = {
        "label": f"{model}-{mode}-{phase}{index}", "mode": mode, "rc": 1 if step_s is None else 0,
        "process_wall_s": 4.0 if step_s is None else step_s + 3.5, "process_cpu_s": 3.0,
        "settle_wait_s": 0.0, "commit": commit, "log": f"logs/{model}-{mode}-{phase}{index}.log",
        "other_load_cores": load, "kind": "step", "model": model, "phase": phase, "index": index,
    }
    if step_s is None:
        record["error_tail"] = "RuntimeError: synthetic failure"
        return record
    cold = phase.endswith("cold")
    key = 0.0625 if mode == "upstream" else 0.015625
    record["result"] = {
        "torch_version": "2.15.0", "import_s": 2.25 if mode == "ours" else 2.0, "setup_s": 0.375,
        "step_s": step_s, "step_cpu_s": step_s * 1.5, "device_name": "Synthetic CPU",
        "first_key_s": key * 2, "key_in_try_load_s": key, "try_load_s": key * 4,
        "rest_of_try_load_s": key * 3, "save_s": 0.03125 if cold else 0.0,
        "cache_code_s": key * 4 + (0.09375 if cold else 0.0),
        "counters": {
            "aot_autograd": {"autograd_cache_miss": 1} if cold else {"autograd_cache_hit": hits},
            "graph_break": {"total": 0},
            "torch_aotcache": tac or {},
        },
        "started_at": 100.0, "step_ended_at": 103.0,
    }
    record["startup_s"] = 0.25
    record["after_step_s"] = 0.5
    return record


def _keys(mode: str, index: int, first_key_s: float, error: str | None = None) -> dict[str, Any]:
    """One worker record of the key micro-benchmark."""
    scale = 1.0 if mode == "upstream" else 0.125
    large = {"nodes": 402, "times_s": [], "error": error} if error else \
        {"nodes": 402, "times_s": [0.25 * scale, 0.375 * scale, 0.3125 * scale], "error": None}
    return {
        "label": f"keys-{mode}{index}", "mode": mode, "rc": 0, "process_wall_s": 5.0, "commit": "abc1234",
        "kind": "keys", "index": index, "primer": index == 0,
        "result": {
            "torch_version": "2.15.0", "first_key_s": first_key_s, "first_key_graph_nodes": 6,
            "by_size": {"40": {"nodes": 42, "times_s": [0.0125 * scale, 0.015 * scale, 0.01 * scale],
                               "error": None},
                        "400": large},
        },
    }


def synthetic_run() -> dict[str, Any]:
    """The raw records of a made-up run: two models, one of them mostly failed, remote and key runs
    (one key failed), a lookup; quiet and loaded runs, and a tree that changed during the run."""
    remote_hit = {"remote_hit": 1, "remote_bytes_read": 4096}
    runs = [
        _step("mlp", "off", "cold", 0, 20.0, 0.125),
        _step("mlp", "upstream", "cold", 0, 21.0, 0.5),
        _step("mlp", "ours", "cold", 0, 20.25, 0.125),
        _step("mlp", "eager", "floor", 0, 0.25, 0.0625),
        _step("mlp", "floor", "floor", 0, 1.5, 0.0625),
        _step("mlp", "floor_inductor", "floor", 0, 1.75, 0.0625),
        _step("mlp", "upstream", "warm", 0, 2.5, 0.0625),
        _step("mlp", "ours", "warm", 0, 1.75, 0.0625, commit="abc1234+dirty"),
        _step("mlp", "eager", "floor", 1, 0.375, 0.75),
        _step("mlp", "floor", "floor", 1, 1.625, 0.75),
        _step("mlp", "floor_inductor", "floor", 1, 1.875, 0.75),
        _step("mlp", "upstream", "warm", 1, 2.75, 0.75, hits=2),
        _step("mlp", "ours", "warm", 1, 1.8125, 0.75),
        _step("mlp", "ours", "remote_cold", 0, 20.5, 0.125, tac={"remote_miss": 1, "remote_put": 1}),
        _step("mlp", "ours", "remote_warm", 0, 1.875, 0.125, tac=remote_hit),
        _step("mlp", "ours", "remote_warm", 1, 1.9375, 0.25, tac=remote_hit),
        _step("conv", "off", "cold", 0, 10.0, 0.5),
        _step("conv", "upstream", "cold", 0, 10.5, 0.5),
        _step("conv", "ours", "cold", 0, None, 0.5),
        _step("conv", "upstream", "warm", 0, 1.25, 0.5),
        _step("conv", "ours", "warm", 0, None, 0.5),
    ]
    return {
        "machine": {
            "platform": "Linux-6.0-x86_64", "machine": "x86_64", "python": "3.11.7", "cpu_count": 2,
            "cpu_affinity": 2, "git_commit": "abc1234", "git_dirty": False, "loadavg_start": [0.5, 0.25, 0.125],
            "loadavg_end": [1.0, 0.5, 0.25], "torch_version": "2.15.0", "device_name": "Synthetic CPU",
        },
        "settings": {
            "models": ["mlp", "conv"], "repeats": 2, "cold_repeats": 1, "device": "cpu", "quick": False,
            "node_counts": [40, 400], "key_reps": 3, "key_processes": 1, "lookup_sizes": [10, 200],
            "lookup_reps": 50, "sizes": {"mlp": {"width": 16, "batch": 4, "layers": 8}, "conv": {"batch": 8}},
            "settle_s": 0.0, "remote": True, "only_remote": False,
        },
        "notes": ["bert skipped: `transformers` is not importable here (pip install -e '.[bench]')"],
        "failures": 3,
        "runs": runs,
        "key_runs": [
            _keys("upstream", 0, 0.5), _keys("ours", 0, 0.0625),
            _keys("upstream", 1, 0.25), _keys("ours", 1, 0.015625, error="TypeError: synthetic key failure"),
        ],
        "lookup_run": {
            "label": "lookup", "mode": "ours", "rc": 0, "commit": "abc1234",
            "result": {"torch_version": "2.15.0", "by_entries": {
                "10": {"entries": 10, "populate_s": 0.01, "first_ms": 0.5, "median_ms": 0.125},
                "200": {"entries": 200, "populate_s": 0.2, "first_ms": 0.75, "median_ms": 0.1875},
            }},
        },
        "remote_runs": [
            {"model": "mlp", "local_entry_bytes": 12000, "remote_value_bytes": 5000, "remote_fields": 2,
             "remote_keys": 1, "redis_version": "7.0.15"},
            {"model": "conv", "error": "ConnectionError: synthetic refusal"},
        ],
        "total_s": 123.0,
    }


class TestBenchReport(unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(self.enterContext(tempfile.TemporaryDirectory()))

    def test_modules_import_without_torch(self) -> None:
        code = (
            f"import sys; sys.path.insert(0, {str(TOOLS)!r})\n"
            + "".join(f"import {name}\n" for name in MODULES)
            + "loaded = [m for m in ('torch', 'torch_aotcache', 'matplotlib') if m in sys.modules]\n"
            + "assert not loaded, loaded\n"
        )
        proc = run_child(["-c", code], child_env(), timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_report_of_a_fixed_run(self) -> None:
        data = synthetic_run()
        summary.add_summaries(data)
        self.assertEqual(report.render_markdown(data), EXPECTED_REPORT)

    def test_render_from_another_directory(self) -> None:
        out = self.tmp / "out"
        out.mkdir()
        with open(out / "results.json", "w", encoding="utf-8") as f:
            json.dump(synthetic_run(), f)
        proc = run_child([str(TOOL), "--render", "--out", "out"], child_env(), cwd=self.tmp, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stdout[-4000:] + proc.stderr[-4000:])
        text = (out / "results.md").read_text(encoding="utf-8")
        self.assertEqual(proc.stdout, text + "\n")
        with open(out / "results.json", encoding="utf-8") as f:
            data = json.load(f)
        for key in ("models", "keys", "lookup", "remote", "targets"):
            self.assertIn(key, data, sorted(data))
        # Without matplotlib the report also notes each chart it skipped.
        for note in data["notes"]:
            if ".png" in note:
                text = text.replace(f"\nNote: {note}\n", "", 1)
        self.assertEqual(text, EXPECTED_REPORT)


EXPECTED_REPORT = """\
# Warm-start benchmark: torch_aotcache vs upstream

Machine: Synthetic CPU (Linux-6.0-x86_64, 2 CPUs), torch 2.15.0, Python 3.11.7; device `cpu`; torch_aotcache at abc1234.
Settings: repeats 2 warm, 1 cold per mode; quick=False. Load average at start [0.5, 0.25, 0.125], at end [1.0, 0.5, 0.25].
**The tree changed during the run**: workers ran at abc1234, abc1234+dirty.

## Whole process, start to exit (what the user waits for); seconds, medians

Timed from outside each worker: interpreter start, imports, model set-up, the first training step, exit. Floors: eager (the same program without `torch.compile`), Dynamo only (`backend="eager"`), and Dynamo plus importing Inductor's compiler (`torch._inductor.compile_fx`).

| model | eager | floor | floor + Inductor import | warm upstream | warm ours | above floor: upstream / ours | ours/upstream | above eager: upstream / ours | cold: off / upstream / ours | import (s): floor / upstream / ours |
|---|---|---|---|---|---|---|---|---|---|---|
| mlp | 3.81 | 5.06 | 5.31 | 6.12 | 5.28 | 1.06 / 0.22 | 0.21 | 2.31 / 1.47 | 23.50 / 24.50 / 23.75 | 2.00 / 2.00 / 2.25 |
| conv | n/a | n/a | n/a | 4.75 | n/a | n/a / n/a | n/a | n/a / n/a | 13.50 / 14.00 / n/a | n/a / 2.00 / n/a |

The same after the imports (wall time minus interpreter start and imports, per process; the imports are the same work in every mode, and their noise on a small VM can exceed the differences measured):

| model | eager | floor | warm upstream | warm ours | above floor: upstream / ours | ours/upstream | above eager: upstream / ours |
|---|---|---|---|---|---|---|---|
| mlp | 1.56 | 2.81 | 3.88 | 2.78 | 1.06 / -0.03 | -0.03 | 2.31 / 1.22 |
| conv | n/a | n/a | 2.50 | n/a | n/a / n/a | n/a | n/a / n/a |

### Where a warm process goes (s, medians): startup / imports / set-up / first step / after it

Startup: interpreter start to the worker's first line; imports: torch (and torch_aotcache, or Inductor's compiler for the second floor); set-up: model build and `torch.compile`; after: the rest of the worker and interpreter exit.

| model | eager | floor | floor + Inductor import | warm upstream | warm ours |
|---|---|---|---|---|---|
| mlp | 0.25 / 2.00 / 0.38 / 0.31 / 0.50 | 0.25 / 2.00 / 0.38 / 1.56 / 0.50 | 0.25 / 2.00 / 0.38 / 1.81 / 0.50 | 0.25 / 2.00 / 0.38 / 2.62 / 0.50 | 0.25 / 2.25 / 0.38 / 1.78 / 0.50 |
| conv | n/a / n/a / n/a / n/a / n/a | n/a / n/a / n/a / n/a / n/a | n/a / n/a / n/a / n/a / n/a | 0.25 / 2.00 / 0.38 / 1.25 / 0.50 | n/a / n/a / n/a / n/a / n/a |

## First step (forward + backward), seconds; medians of fresh processes

| model | cold (off) | cold (upstream miss) | cold (ours miss) | warm upstream | warm ours | Dynamo-only floor | overhead above floor: upstream / ours | ours/upstream overhead | miss cost vs off: upstream / ours | other load on the machine (cores, median / max) |
|---|---|---|---|---|---|---|---|---|---|---|
| mlp | 20.00 | 21.00 | 20.25 | 2.625 | 1.781 | 1.562 | 1.062 / 0.219 | 0.21 | +5.0% / +1.2% | 0.12 / 0.75 |
| conv | 10.00 | 10.50 | n/a | 1.250 | n/a | n/a | n/a / n/a | n/a | +5.0% / n/a | 0.50 / 0.50 |

Other load: cores kept busy by other processes while a worker ran (from /proc/stat, minus the worker's own CPU time). Anything well above 0 on a 2-core machine inflates wall times.

## The same, quiet runs only (other load < 0.25 cores); medians, s (runs)

| model | cold (off) | cold (upstream miss) | cold (ours miss) | warm upstream | warm ours | floor | overhead above floor: upstream / ours | ours/upstream overhead | miss cost vs off: upstream / ours |
|---|---|---|---|---|---|---|---|---|---|
| mlp | 20.00 (1) | n/a (0) | 20.25 (1) | 2.500 (1) | 1.750 (1) | 1.500 (1) | 1.000 / 0.250 | 0.25 | n/a / +1.2% |
| conv | n/a (0) | n/a (0) | n/a (0) | n/a (0) | n/a (0) | n/a (0) | n/a / n/a | n/a | n/a / n/a |

## Warm start in CPU seconds (this process and the subprocesses it waited for; medians)

CPU time would be immune to other load on dedicated cores; on a shared VM it inflates with it (vCPU contention), so read it as a cross-check, not a cure.

| model | warm upstream (min wall) | warm ours (min wall) | floor | overhead above floor: upstream / ours | ours/upstream overhead |
|---|---|---|---|---|---|
| mlp | 3.938 (2.500) | 2.672 (1.750) | 2.344 | 1.594 / 0.328 | 0.21 |
| conv | 1.875 (1.250) | n/a (n/a) | n/a | n/a / n/a | n/a |

Note: bert skipped: `transformers` is not importable here (pip install -e '.[bench]')

## What a miss costs in cache code (cold processes; medians, ms)

Timed inside the cold process: the key, the failed lookup, `make_entry` and `save`. This is what the cache itself adds to a compile; the wall-time difference to `off` above also holds Inductor's own FX-graph cache and the run-to-run noise of a 10-40 s compile.

| model | upstream: key / save / all cache code | % of cold (off) | ours: key / save / all cache code | % of cold (off) |
|---|---|---|---|---|
| mlp | 62.5 / 31.2 / 343.8 | 1.72% | 15.6 / 31.2 / 156.2 | 0.78% |
| conv | 62.5 / 31.2 / 343.8 | 3.44% | n/a / n/a / n/a | n/a% |

## Where a warm start goes (medians, ms)

| model | mode | first step | key | rest of try_load | other above floor | floor | hits per warm process | imports before the step | whole warm process |
|---|---|---|---|---|---|---|---|---|---|
| mlp | upstream | 2625.0 | 62.5 | 187.5 | 812.5 | 1562.5 | [1, 2] | 2000.0 | 6125.0 |
| mlp | ours | 1781.2 | 15.6 | 46.9 | 156.2 | 1562.5 | [1, 1] | 2250.0 | 5281.2 |
| conv | upstream | 1250.0 | 62.5 | 187.5 | n/a | n/a | [1] | 2000.0 | 4750.0 |
| conv | ours | n/a | n/a | n/a | n/a | n/a | [] | n/a | n/a |

## Key computation (ms; medians)

| graph | upstream | ours | ours/upstream | µs per node: upstream / ours |
|---|---|---|---|---|
| first key of a process (tiny graph, cache dir seen before) | 250.0 | 15.6 | 0.062 | |
| first key, first process ever in an empty cache dir | 500.0 | 62.5 | 0.125 | |
| later key, 42-node chain | 12.5 | 1.6 | 0.125 | 297.6 / 37.2 |
| later key, 402-node chain | 312.5 | n/a | n/a | 777.4 / n/a |
| mlp: first key of a warm process (real graph) | 125.0 | 31.2 | 0.250 | |
| conv: first key of a warm process (real graph) | 125.0 | n/a | n/a | |

Note: ours key on the 400-op synthetic graph failed (TypeError: synthetic key failure); compare the real models' keys instead

## Lookup scaling (`find_entry` of a key with a real entry)

| entries in the store | first lookup (ms) | median lookup (ms) |
|---|---|---|
| 10 | 0.500 | 0.125 |
| 200 | 0.750 | 0.188 |

## Remote warm start (first step, s; medians)

Cold `ours` process with a loopback Redis (or, for rows marked so, moto's S3 API server), a signing key and synchronous writes; then warm processes, each with a new empty cache dir (no local entry, no Inductor artifact) and the same store. Compared with the local-hit warm `ours` step of the same run.

| model | warm local hit (s) | warm remote hit from an empty cache dir (s) | difference (ms) | within 50 ms of a local hit | remote hits per process | entry bytes local / remote | compression ratio |
|---|---|---|---|---|---|---|---|
| mlp | 1.781 | 1.906 | +125.0 | missed | [1, 1] | 12000 / 5000 | 2.40 |
| conv | n/a | n/a | n/a | n/a | [] | n/a / n/a | n/a |

Remote run of conv failed: ConnectionError: synthetic refusal

### Whole warm processes (start to exit, s; medians)

The same warm processes timed from outside, against the warm `ours` processes that hit locally.

| model | local hit (s) | remote hit from an empty cache dir (s) | difference (ms) |
|---|---|---|---|
| mlp | 5.281 | 5.406 | +125.0 |
| conv | n/a | n/a | n/a |

## Targets

| target | limit | measured (all runs) | met | measured (quiet runs only) | met |
|---|---|---|---|---|---|
| first key of a process, ours/upstream | ≤ 0.1 | 0.062 | met | n/a |  |
| later key per node (402-node graph), ours/upstream | ≤ 0.1 | n/a | n/a | n/a |  |
| mlp: whole warm process above floor, ours/upstream | ≤ 0.25 | 0.21 | met | n/a |  |
| mlp: whole warm process above floor, ours (s; stretch) | ≤ 0.2 | 0.22 s | missed | n/a |  |
| mlp: whole warm process above the eager floor, ours (s) | ≤ 0.5 | 1.47 s | missed | n/a |  |
| mlp: whole cold process, ours minus upstream (s) | ≤ 0 | -0.75 s | met | n/a |  |
| conv: whole warm process above floor, ours/upstream | ≤ 0.25 | n/a | n/a | n/a |  |
| conv: whole warm process above floor, ours (s; stretch) | ≤ 0.2 | n/a | n/a | n/a |  |
| conv: whole warm process above the eager floor, ours (s) | ≤ 0.5 | n/a | n/a | n/a |  |
| conv: whole cold process, ours minus upstream (s) | ≤ 0 | n/a | n/a | n/a |  |
| mlp: warm first step above floor, ours/upstream | ≤ 0.25 | 0.21 | met | 0.25 | met |
| conv: warm first step above floor, ours/upstream | ≤ 0.25 | n/a | n/a | n/a |  |
| mlp: miss cost above caches-off, ours | ≤ 2% | +1.2% | met | +1.2% | met |
| conv: miss cost above caches-off, ours | ≤ 2% | n/a | n/a | n/a |  |
| mlp: miss, cache code timed in-process (share of cold off), ours | ≤ 2% | 0.78% | met | n/a |  |
| conv: miss, cache code timed in-process (share of cold off), ours | ≤ 2% | n/a | n/a | n/a |  |
| lookup with 200 entries (median) | < 5 ms | 0.188 ms | met | n/a |  |
| mlp: remote hit from an empty cache dir, minus local hit (ms) | ≤ 50 ms | +125.0 ms | missed | n/a |  |
| conv: remote hit from an empty cache dir, minus local hit (ms) | ≤ 50 ms | n/a | n/a | n/a |  |

**3 worker process(es) failed; see logs/ under the output folder.**
"""  # noqa: E501


if __name__ == "__main__":
    unittest.main()
