"""Summaries of a run: medians, ratios and the targets, from the raw records of the workers.

Standard library only; ``--render`` redoes them from a saved ``results.json``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .config import (
    QUIET_LOAD_CORES,
    TARGET_KEY_RATIO,
    TARGET_LOOKUP_MS,
    TARGET_MISS_PCT,
    TARGET_OVERHEAD_RATIO,
    TARGET_PROCESS_ABOVE_EAGER_S,
    TARGET_PROCESS_ABOVE_FLOOR_S,
    TARGET_PROCESS_RATIO,
    TARGET_OBJECT_STORE_PROCESS_MS,
    TARGET_REMOTE_MS,
)


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def add_summaries(data: dict[str, Any]) -> None:
    """The summaries of the raw records in ``data``, added to it: models, keys, lookup, remote, targets."""
    settings = data["settings"]
    data["models"] = summarize_models(data["runs"], settings["models"])
    data["keys"] = summarize_keys(data["key_runs"], settings["node_counts"])
    data["lookup"] = (data.get("lookup_run") or {}).get("result")
    data["remote"] = summarize_remote(data["runs"], data.get("remote_runs", []), data["models"])
    data["targets"] = evaluate_targets(data["models"], data["keys"], data["lookup"], data["remote"])


def _step_records(runs: list[dict[str, Any]], model: str, mode: str, phase: str) -> list[dict[str, Any]]:
    """The step records of one model, mode and phase whose worker produced a result."""
    return [
        r for r in runs
        if r.get("kind") == "step" and r["model"] == model and r["mode"] == mode
        and r["phase"] == phase and "result" in r
    ]


def _results(runs: list[dict[str, Any]], model: str, mode: str, phase: str) -> list[dict[str, Any]]:
    return [r["result"] for r in _step_records(runs, model, mode, phase)]


def summarize_models(runs: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in models:
        out[model] = _summarize_model(runs, model)
    return out


def _summarize_model(runs: list[dict[str, Any]], model: str) -> dict[str, Any]:
    def med(mode: str, phase: str, field: str) -> float | None:
        return _median([res.get(field) for res in _results(runs, model, mode, phase)])

    def all_steps(mode: str, phase: str) -> list[float]:
        return [res["step_s"] for res in _results(runs, model, mode, phase)]

    m: dict[str, Any] = {
        "cold_off_s": med("off", "cold", "step_s"),
        "cold_upstream_s": med("upstream", "cold", "step_s"),
        "cold_ours_s": med("ours", "cold", "step_s"),
        "warm_upstream_s": med("upstream", "warm", "step_s"),
        "warm_ours_s": med("ours", "warm", "step_s"),
        "floor_s": med("floor", "floor", "step_s"),
        "eager_s": med("eager", "floor", "step_s"),
        "warm_upstream_all_s": all_steps("upstream", "warm"),
        "warm_ours_all_s": all_steps("ours", "warm"),
        "floor_all_s": all_steps("floor", "floor"),
        "floor_cpu_s": med("floor", "floor", "step_cpu_s"),
    }
    loads = [r["other_load_cores"] for r in runs
             if r.get("kind") == "step" and r["model"] == model and "other_load_cores" in r]
    m["other_load_cores_median"] = _median(loads)
    m["other_load_cores_max"] = max(loads) if loads else None
    for mode in ("upstream", "ours"):
        m.update(_mode_summary(runs, model, mode, m))
    m["overhead_ratio"] = _ratio(m["overhead_ours_s"], m["overhead_upstream_s"])
    m["process"] = _process_summary(runs, model)
    m["cpu_overhead_ratio"] = _ratio(m["cpu_overhead_ours_s"], m["cpu_overhead_upstream_s"])
    m["quiet"] = _quiet_summary(runs, model)
    m["frames"] = _frames_summary(runs, model, m["process"])
    return m


def _frames_summary(runs: list[dict[str, Any]], model: str, p: dict[str, Any]) -> dict[str, Any] | None:
    """torch_aotcache with its Dynamo frame cache on (``--frames``); None when not measured."""
    warm, cold = _step_records(runs, model, "frames", "warm"), _step_records(runs, model, "frames", "cold")
    if not warm and not cold:
        return None
    warm_s = _median([r["process_wall_s"] for r in warm])
    cold_s = _median([r["process_wall_s"] for r in cold])
    past = _median([r["process_wall_s"] - (r.get("startup_s") or 0.0) - r["result"]["import_s"]
                    for r in warm if r["result"].get("import_s") is not None])
    past_eager = (p.get("past_imports") or {}).get("eager")
    eager, floor = p.get("eager_s"), p.get("floor_s")
    return {
        "warm_s": warm_s,
        "cold_s": cold_s,
        "above_eager_s": None if warm_s is None or eager is None else warm_s - eager,
        "above_floor_s": None if warm_s is None or floor is None else warm_s - floor,
        "past_imports_s": past,
        "past_imports_above_eager_s": None if past is None or past_eager is None else past - past_eager,
        "cold_minus_ours_s": None if cold_s is None or p.get("cold_ours_s") is None else cold_s - p["cold_ours_s"],
        "first_step_s": _median([r["result"].get("step_s") for r in warm]),
        "frame_hits": [r["result"]["counters"].get("torch_aotcache", {}).get("frame_hit", 0) for r in warm],
        "traced_graphs": [r["result"]["counters"].get("stats", {}).get("unique_graphs", 0) for r in warm],
    }


def _mode_summary(runs: list[dict[str, Any]], model: str, mode: str, m: dict[str, Any]) -> dict[str, Any]:
    """The warm and cold medians of one mode; ``m`` holds the model's medians of every mode."""
    warm = _results(runs, model, mode, "warm")
    d: dict[str, Any] = {}
    d[f"{mode}_warm_key_s"] = _median([res.get("key_in_try_load_s") for res in warm])
    d[f"{mode}_warm_first_key_s"] = _median([res.get("first_key_s") for res in warm])
    d[f"{mode}_warm_try_load_s"] = _median([res.get("try_load_s") for res in warm])
    d[f"{mode}_warm_rest_s"] = _median([res.get("rest_of_try_load_s") for res in warm])
    d[f"{mode}_warm_import_s"] = _median([res.get("import_s") for res in warm])
    cold_runs = _results(runs, model, mode, "cold")
    d[f"{mode}_cold_cache_code_s"] = _median([res.get("cache_code_s") for res in cold_runs])
    d[f"{mode}_cold_key_s"] = _median([res.get("key_in_try_load_s") for res in cold_runs])
    d[f"{mode}_cold_save_s"] = _median([res.get("save_s") for res in cold_runs])
    code, off = d[f"{mode}_cold_cache_code_s"], m["cold_off_s"]
    d[f"{mode}_cold_cache_code_pct"] = None if code is None or not off else code / off * 100.0
    d[f"{mode}_warm_process_s"] = _median([r["process_wall_s"] for r in _step_records(runs, model, mode, "warm")])
    d[f"{mode}_warm_cpu_s"] = _median([res.get("step_cpu_s") for res in warm])
    d[f"{mode}_warm_min_s"] = min([res["step_s"] for res in warm], default=None)
    fc, wc = m["floor_cpu_s"], d[f"{mode}_warm_cpu_s"]
    d[f"cpu_overhead_{mode}_s"] = None if fc is None or wc is None else wc - fc
    d[f"{mode}_warm_hits"] = [res["counters"]["aot_autograd"].get("autograd_cache_hit", 0) for res in warm]
    d[f"{mode}_cold_counters"] = [res["counters"]["aot_autograd"] for res in cold_runs]
    d[f"{mode}_graph_breaks"] = max(
        [res["counters"]["graph_break"].get("total", 0) for res in warm] or [0]
    )
    floor, w = m["floor_s"], m[f"warm_{mode}_s"]
    d[f"overhead_{mode}_s"] = None if floor is None or w is None else w - floor
    cold, off = m[f"cold_{mode}_s"], m["cold_off_s"]
    d[f"miss_overhead_{mode}_pct"] = (
        None if cold is None or not off else (cold - off) / off * 100.0
    )
    return d


# The warm processes a model's process summary reports, each with the
# phase its records carry: the three floors, then the two caches.
PROCESS_MODE_PHASES = (("eager", "floor"), ("floor", "floor"), ("floor_inductor", "floor"),
                       ("upstream", "warm"), ("ours", "warm"))


def _process_summary(runs: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Whole processes, start to exit, timed from outside the worker."""
    def process_med(mode: str, phase: str) -> float | None:
        return _median([r["process_wall_s"] for r in _step_records(runs, model, mode, phase)])

    p: dict[str, Any] = {
        "floor_s": process_med("floor", "floor"),
        "floor_inductor_s": process_med("floor_inductor", "floor"),
        "eager_s": process_med("eager", "floor"),
        "cold_off_s": process_med("off", "cold"),
    }
    for mode in ("upstream", "ours"):
        p[f"warm_{mode}_s"] = process_med(mode, "warm")
        p[f"cold_{mode}_s"] = process_med(mode, "cold")
        floor, w = p["floor_s"], p[f"warm_{mode}_s"]
        p[f"above_floor_{mode}_s"] = None if floor is None or w is None else w - floor
        # Above the same program without torch.compile: all a cache could
        # still remove, Dynamo's tracing included.
        eager = p["eager_s"]
        p[f"above_eager_{mode}_s"] = None if eager is None or w is None else w - eager
    p["ratio"] = _ratio(p["above_floor_ours_s"], p["above_floor_upstream_s"])
    p["parts"] = _process_parts(runs, model)
    p["past_imports"] = _past_imports(runs, model)
    p["import_s"] = {
        mode: _median([res.get("import_s") for res in _results(runs, model, mode, phase)])
        for mode, phase in PROCESS_MODE_PHASES
    }
    return p


def _process_parts(runs: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Where a whole process goes: startup, imports, model set-up and
    torch.compile, the first step, and everything after it (exit)."""
    def part(mode: str, phase: str, field: str) -> float | None:
        return _median([
            (r.get(field) if field in ("startup_s", "after_step_s") else r["result"].get(field))
            for r in _step_records(runs, model, mode, phase)
        ])

    return {
        mode: {f: part(mode, phase, f) for f in ("startup_s", "import_s", "setup_s", "step_s", "after_step_s")}
        for mode, phase in PROCESS_MODE_PHASES
    }


def _past_imports(runs: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """The same without interpreter start and imports: identical work in
    every mode (import torch; torch_aotcache's import adds ~10 ms), whose
    run-to-run noise on a small VM can exceed the differences measured."""
    def past_imports(mode: str, phase: str) -> float | None:
        return _median([
            r["process_wall_s"] - (r.get("startup_s") or 0.0) - r["result"]["import_s"]
            for r in _step_records(runs, model, mode, phase)
            if r["result"].get("import_s") is not None
        ])

    past: dict[str, Any] = {
        mode: past_imports(mode, phase)
        for mode, phase in (("eager", "floor"), ("floor", "floor"), ("upstream", "warm"), ("ours", "warm"))
    }
    for mode in ("upstream", "ours"):
        past[f"above_floor_{mode}_s"] = (
            None if past["floor"] is None or past[mode] is None else past[mode] - past["floor"]
        )
        past[f"above_eager_{mode}_s"] = (
            None if past["eager"] is None or past[mode] is None else past[mode] - past["eager"]
        )
    past["ratio"] = _ratio(past["above_floor_ours_s"], past["above_floor_upstream_s"])
    return past


def _quiet_summary(runs: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """The first-step medians again, of the quiet runs only (Note [Noise from other load])."""
    def quiet(mode: str, phase: str) -> list[float]:
        return [
            r["result"]["step_s"] for r in _step_records(runs, model, mode, phase)
            if r.get("other_load_cores", 1e9) < QUIET_LOAD_CORES
        ]

    q: dict[str, Any] = {}
    for name, mode, phase in (("cold_off", "off", "cold"), ("cold_upstream", "upstream", "cold"),
                              ("cold_ours", "ours", "cold"), ("warm_upstream", "upstream", "warm"),
                              ("warm_ours", "ours", "warm"), ("floor", "floor", "floor")):
        values = quiet(mode, phase)
        q[f"{name}_s"], q[f"{name}_n"] = _median(values), len(values)
    for mode in ("upstream", "ours"):
        floor, w = q["floor_s"], q[f"warm_{mode}_s"]
        q[f"overhead_{mode}_s"] = None if floor is None or w is None else w - floor
        cold, off = q[f"cold_{mode}_s"], q["cold_off_s"]
        q[f"miss_overhead_{mode}_pct"] = None if cold is None or not off else (cold - off) / off * 100.0
    q["overhead_ratio"] = _ratio(q["overhead_ours_s"], q["overhead_upstream_s"])
    return q


def summarize_remote(runs: list[dict[str, Any]], infos: list[dict[str, Any]],
                     models: dict[str, Any]) -> dict[str, Any]:
    """Per model: warm first step from Redis into an empty cache dir vs the local-hit warm step."""
    out: dict[str, Any] = {}
    for info in infos:
        prefix = info.get("phase_prefix", "remote")
        label = info["model"] if prefix == "remote" else f"{info['model']} ({info.get('store', prefix)})"
        out[label] = _summarize_remote_model(runs, info, models)
    return out


def _summarize_remote_model(runs: list[dict[str, Any]], info: dict[str, Any],
                            models: dict[str, Any]) -> dict[str, Any]:
    """One model's entry of ``summarize_remote``; ``info`` is what its remote run noted."""
    model = info["model"]
    prefix = info.get("phase_prefix", "remote")

    def records(phase: str) -> list[dict[str, Any]]:
        return [r for r in runs if r.get("kind") == "step" and r["model"] == model
                and r["mode"] == "ours" and r["phase"] == phase]

    warm = [r["result"] for r in records(f"{prefix}_warm") if "result" in r]
    cold = [r["result"] for r in records(f"{prefix}_cold") if "result" in r]
    warm_process = _median([r["process_wall_s"] for r in records(f"{prefix}_warm") if "result" in r])
    local_process = models.get(model, {}).get("ours_warm_process_s")
    remote_s = _median([res.get("step_s") for res in warm])
    local_s = models.get(model, {}).get("warm_ours_s")
    diff = None if remote_s is None or local_s is None else remote_s - local_s
    tac = [res["counters"].get("torch_aotcache", {}) for res in warm]
    local_b, remote_b = info.get("local_entry_bytes"), info.get("remote_value_bytes")
    return {
        "store": info.get("store", "redis"),
        "warm_local_process_s": local_process,
        "warm_remote_process_s": warm_process,
        "process_diff_s": None if warm_process is None or local_process is None else warm_process - local_process,
        "warm_local_hit_s": local_s,
        "warm_remote_hit_s": remote_s,
        "warm_remote_hit_all_s": [res.get("step_s") for res in warm],
        "warm_remote_hit_cpu_s": _median([res.get("step_cpu_s") for res in warm]),
        "diff_s": diff,
        "target_met": None if diff is None else diff * 1e3 <= TARGET_REMOTE_MS,
        "process_target_met": (None if warm_process is None or local_process is None
                               else (warm_process - local_process) * 1e3 <= TARGET_OBJECT_STORE_PROCESS_MS),
        "cold_remote_s": _median([res.get("step_s") for res in cold]),
        "cold_remote_counters": [res["counters"].get("torch_aotcache", {}) for res in cold],
        "remote_hits_per_process": [c.get("remote_hit", 0) for c in tac],
        "remote_misses_per_process": [c.get("remote_miss", 0) for c in tac],
        "remote_bytes_read_per_process": [c.get("remote_bytes_read", 0) for c in tac],
        "warm_remote_counters": tac,
        "warm_remote_aot_hits": [res["counters"]["aot_autograd"].get("autograd_cache_hit", 0) for res in warm],
        "warm_remote_aot_misses": [res["counters"]["aot_autograd"].get("autograd_cache_miss", 0) for res in warm],
        "local_entry_bytes": local_b,
        "remote_value_bytes": remote_b,
        "remote_fields": info.get("remote_fields"),
        "compression_ratio": _ratio(local_b, remote_b),
        "other_load_cores": [r.get("other_load_cores") for r in records(f"{prefix}_warm")],
        "redis_version": info.get("redis_version"),
        "error": info.get("error"),
    }


def summarize_keys(records: list[dict[str, Any]], node_counts: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"notes": []}
    for mode in ("upstream", "ours"):
        measured = [r["result"] for r in records if r["mode"] == mode and not r["primer"] and "result" in r]
        primers = [r["result"] for r in records if r["mode"] == mode and r["primer"] and "result" in r]
        out[f"{mode}_first_key_s"] = _median([res["first_key_s"] for res in measured])
        out[f"{mode}_first_key_empty_dir_s"] = _median([res["first_key_s"] for res in primers])
        sizes: dict[str, Any] = {}
        for n in node_counts:
            times: list[float] = []
            nodes = None
            errors = set()
            for res in measured + primers:
                entry = res["by_size"].get(str(n), {})
                nodes = entry.get("nodes") or nodes
                if entry.get("error"):
                    errors.add(entry["error"])
            for res in measured or primers:
                times += res["by_size"].get(str(n), {}).get("times_s", [])
            sizes[str(n)] = {"nodes": nodes, "median_s": _median(times), "errors": sorted(errors)}
            if errors:
                out["notes"].append(
                    f"{mode} key on the {n}-op synthetic graph failed ({'; '.join(sorted(errors))}); "
                    "compare the real models' keys instead"
                )
        out[mode] = sizes
    out["first_key_ratio"] = _ratio(out["ours_first_key_s"], out["upstream_first_key_s"])
    out["by_size"] = {}
    for n in node_counts:
        up, ours = out["upstream"][str(n)], out["ours"][str(n)]
        nodes = ours["nodes"] or up["nodes"]
        out["by_size"][str(n)] = {
            "nodes": nodes,
            "upstream_s": up["median_s"],
            "ours_s": ours["median_s"],
            "ratio": _ratio(ours["median_s"], up["median_s"]),
            "upstream_us_per_node": None if up["median_s"] is None or not nodes else up["median_s"] / nodes * 1e6,
            "ours_us_per_node": None if ours["median_s"] is None or not nodes else ours["median_s"] / nodes * 1e6,
        }
    return out


def evaluate_targets(models: dict[str, Any], keys: dict[str, Any], lookup: dict[str, Any] | None,
                     remote: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each target of the issue: the measured value and whether it is met."""
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, fmt: str, less_than: bool = False,
            quiet: float | None = None) -> None:
        def is_met(v: float | None) -> bool | None:
            return None if v is None else (v < limit if less_than else v <= limit)

        targets.append({"target": name, "value": value, "limit": limit, "met": is_met(value),
                        "text": "n/a" if value is None else fmt % value,
                        "quiet_value": quiet, "quiet_met": is_met(quiet),
                        "quiet_text": "n/a" if quiet is None else fmt % quiet})

    add("first key of a process, ours/upstream", keys.get("first_key_ratio"), TARGET_KEY_RATIO, "%.3f")
    if keys.get("by_size"):
        largest = max(keys["by_size"], key=int)
        entry = keys["by_size"][largest]
        add(f"later key per node ({entry['nodes']}-node graph), ours/upstream", entry["ratio"], TARGET_KEY_RATIO,
            "%.3f")
    for model, m in models.items():
        p = m.get("process") or {}
        add(f"{model}: whole warm process above floor, ours/upstream", p.get("ratio"), TARGET_PROCESS_RATIO, "%.2f")
        add(f"{model}: whole warm process above floor, ours (s; stretch)", p.get("above_floor_ours_s"),
            TARGET_PROCESS_ABOVE_FLOOR_S, "%.2f s")
        add(f"{model}: whole warm process above the eager floor, ours (s)", p.get("above_eager_ours_s"),
            TARGET_PROCESS_ABOVE_EAGER_S, "%.2f s")
        frames = m.get("frames")
        if frames:
            add(f"{model}: whole warm process above the eager floor, ours with the frame cache (s)",
                frames.get("above_eager_s"), TARGET_PROCESS_ABOVE_EAGER_S, "%.2f s")
            add(f"{model}: whole cold process, frame cache on minus off (s)", frames.get("cold_minus_ours_s"),
                0.0, "%+.2f s")
        cold_u, cold_o = p.get("cold_upstream_s"), p.get("cold_ours_s")
        add(f"{model}: whole cold process, ours minus upstream (s)",
            None if cold_u is None or cold_o is None else cold_o - cold_u, 0.0, "%+.2f s")
    for model, m in models.items():
        add(f"{model}: warm first step above floor, ours/upstream", m["overhead_ratio"], TARGET_OVERHEAD_RATIO,
            "%.2f", quiet=m.get("quiet", {}).get("overhead_ratio"))
    for model, m in models.items():
        add(f"{model}: miss cost above caches-off, ours", m["miss_overhead_ours_pct"], TARGET_MISS_PCT, "%+.1f%%",
            quiet=m.get("quiet", {}).get("miss_overhead_ours_pct"))
    for model, m in models.items():
        add(f"{model}: miss, cache code timed in-process (share of cold off), ours", m.get("ours_cold_cache_code_pct"),
            TARGET_MISS_PCT, "%.2f%%")
    if lookup:
        largest = max(lookup["by_entries"], key=int)
        add(f"lookup with {largest} entries (median)", lookup["by_entries"][largest]["median_ms"],
            TARGET_LOOKUP_MS, "%.3f ms", less_than=True)
    for model, r in (remote or {}).items():
        diff = r.get("diff_s")
        if r.get("store", "redis") == "redis":
            add(f"{model}: remote hit from an empty cache dir, minus local hit (ms)",
                None if diff is None else diff * 1e3, TARGET_REMOTE_MS, "%+.1f ms")
        else:
            pdiff = r.get("process_diff_s")
            add(f"{model}: whole warm process from an empty cache dir, minus one that hits locally (ms)",
                None if pdiff is None else pdiff * 1e3, TARGET_OBJECT_STORE_PROCESS_MS, "%+.1f ms")
    return targets
