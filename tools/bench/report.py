"""The report: ``results.md`` from the summaries, and the writing of every output file.

``render_markdown`` joins one section per table, in the order of the report.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .chart import render_png, render_process_png
from .config import QUIET_LOAD_CORES, TARGET_REMOTE_MS
from .summary import _ratio, add_summaries


def _s(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1e3:.1f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.1f}%"



def _heading(title: str, *paragraphs: str) -> list[str]:
    """A section's first lines: a blank line, its ``## title`` and a blank
    line, then each paragraph of its introduction and a blank line."""
    lines = ["", title, ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    return lines


def _table_head(header: str) -> list[str]:
    """A table's header row and the separator row under it."""
    return [header, "|" + "---|" * (header.count("|") - 1)]

def write_outputs(data: dict[str, Any], out_dir: str) -> None:
    """Summaries from the raw records in ``data``, then results.json/.md and the PNG."""
    notes = [n for n in data["notes"] if "warmstart.png" not in n and "process.png" not in n]
    data["notes"] = notes
    add_summaries(data)
    for png_note in (render_process_png(data, os.path.join(out_dir, "process.png")),
                     render_png(data, os.path.join(out_dir, "warmstart.png"))):
        if png_note:
            notes.append(png_note)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=str)
    markdown = render_markdown(data)
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    print(markdown)


def render_markdown(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for section in (_header, _process_table, _past_imports_table, _frames_table, _process_parts_table,
                    _first_step_table, _quiet_table, _cpu_table, _miss_cost_table, _warm_start_table, _keys_section,
                    _lookup_section, _remote_section, _targets_table):
        lines += section(data)
    if data.get("failures"):
        lines.append("")
        lines.append(f"**{data['failures']} worker process(es) failed; see logs/ under the output folder.**")
    return "\n".join(lines) + "\n"


def _header(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    mach, st = data["machine"], data["settings"]
    lines.append("# Warm-start benchmark: torch_aotcache vs upstream")
    lines.append("")
    lines.append(
        f"Machine: {mach.get('device_name')} ({mach['platform']}, {mach['cpu_count']} CPUs), "
        f"torch {mach.get('torch_version')}, Python {mach['python']}; device `{st['device']}`; "
        f"torch_aotcache at {mach.get('git_commit', '?')}{' (dirty)' if mach.get('git_dirty') else ''}."
    )
    lines.append(
        f"Settings: repeats {st['repeats']} warm, {st['cold_repeats']} cold per mode; "
        f"quick={st['quick']}. Load average at start {mach.get('loadavg_start')}, at end {mach.get('loadavg_end')}."
    )
    commits = sorted({r["commit"] for r in data["runs"] + data.get("key_runs", []) if r.get("commit")})
    if len(commits) > 1:
        lines.append(f"**The tree changed during the run**: workers ran at {', '.join(commits)}.")
    elif commits:
        lines.append(f"Every worker ran at {commits[0]}.")
    return lines


def _process_table(data: dict[str, Any]) -> list[str]:
    lines = _heading(
        "## Whole process, start to exit (what the user waits for); seconds, medians",
        "Timed from outside each worker: interpreter start, imports, model set-up, the first training "
        "step, exit. Floors: eager (the same program without `torch.compile`), Dynamo only "
        "(`backend=\"eager\"`), and Dynamo plus importing Inductor's compiler (`torch._inductor.compile_fx`).",
    )
    lines += _table_head(
        "| model | eager | floor | floor + Inductor import | warm upstream | warm ours "
        "| above floor: upstream / ours | ours/upstream | above eager: upstream / ours "
        "| cold: off / upstream / ours | import (s): floor / upstream / ours |"
    )
    for model, m in data["models"].items():
        p = m.get("process")
        if not p:
            continue
        imp = p.get("import_s", {})
        lines.append(
            f"| {model} | {_s(p.get('eager_s'))} | {_s(p['floor_s'])} | {_s(p['floor_inductor_s'])} "
            f"| {_s(p['warm_upstream_s'])} "
            f"| {_s(p['warm_ours_s'])} | {_s(p['above_floor_upstream_s'])} / {_s(p['above_floor_ours_s'])} "
            f"| {_s(p['ratio'], 2)} | {_s(p.get('above_eager_upstream_s'))} / {_s(p.get('above_eager_ours_s'))} "
            f"| {_s(p['cold_off_s'])} / {_s(p['cold_upstream_s'])} / {_s(p['cold_ours_s'])} "
            f"| {_s(imp.get('floor'))} / {_s(imp.get('upstream'))} / {_s(imp.get('ours'))} |"
        )
    return lines


def _frames_table(data: dict[str, Any]) -> list[str]:
    """torch_aotcache with its Dynamo frame cache on (``--frames``), when measured."""
    rows = [(model, m["frames"]) for model, m in data["models"].items() if m.get("frames")]
    if not rows:
        return []
    lines = ["", "With the Dynamo frame cache on (`TORCH_AOTCACHE_DYNAMO=1`): whole processes, and the "
             "warm ones after the imports; a warm process that ran the stored frame traced no graph.", ""]
    lines += _table_head("| model | warm | above eager | above floor | past imports: above eager | first step "
                         "| cold | cold: frames minus ours | frame hits / graphs traced (warm) |")
    for model, f in rows:
        lines.append(
            f"| {model} | {_s(f['warm_s'])} | {_s(f['above_eager_s'])} | {_s(f['above_floor_s'])} "
            f"| {_s(f['past_imports_above_eager_s'])} | {_s(f['first_step_s'], 3)} | {_s(f['cold_s'])} "
            f"| {_s(f['cold_minus_ours_s'])} | {f['frame_hits']} / {f['traced_graphs']} |"
        )
    return lines


def _past_imports_table(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines.append("")
    lines.append(
        "The same after the imports (wall time minus interpreter start and imports, per process; "
        "the imports are the same work in every mode, and their noise on a small VM can exceed "
        "the differences measured):"
    )
    lines.append("")
    lines += _table_head("| model | eager | floor | warm upstream | warm ours | above floor: upstream / ours "
                         "| ours/upstream | above eager: upstream / ours |")
    for model, m in data["models"].items():
        past = (m.get("process") or {}).get("past_imports")
        if not past:
            continue
        lines.append(
            f"| {model} | {_s(past.get('eager'))} | {_s(past.get('floor'))} | {_s(past.get('upstream'))} "
            f"| {_s(past.get('ours'))} "
            f"| {_s(past.get('above_floor_upstream_s'))} / {_s(past.get('above_floor_ours_s'))} "
            f"| {_s(past.get('ratio'), 2)} "
            f"| {_s(past.get('above_eager_upstream_s'))} / {_s(past.get('above_eager_ours_s'))} |"
        )
    return lines


def _parts_cell(parts: dict[str, Any] | None) -> str:
    if not parts:
        return "n/a"
    return " / ".join(_s(parts.get(f)) for f in ("startup_s", "import_s", "setup_s", "step_s", "after_step_s"))


def _process_parts_table(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines.append("")
    lines.append("### Where a warm process goes (s, medians): startup / imports / set-up / first step / after it")
    lines.append("")
    lines.append(
        "Startup: interpreter start to the worker's first line; imports: torch (and torch_aotcache, or "
        "Inductor's compiler for the second floor); set-up: model build and `torch.compile`; after: "
        "the rest of the worker and interpreter exit."
    )
    lines.append("")
    lines += _table_head("| model | eager | floor | floor + Inductor import | warm upstream | warm ours |")
    for model, m in data["models"].items():
        parts = (m.get("process") or {}).get("parts")
        if not parts:
            continue
        lines.append(
            f"| {model} | {_parts_cell(parts.get('eager'))} | {_parts_cell(parts.get('floor'))} "
            f"| {_parts_cell(parts.get('floor_inductor'))} "
            f"| {_parts_cell(parts.get('upstream'))} | {_parts_cell(parts.get('ours'))} |"
        )
    return lines


def _first_step_table(data: dict[str, Any]) -> list[str]:
    lines = _heading("## First step (forward + backward), seconds; medians of fresh processes")
    lines += _table_head(
        "| model | cold (off) | cold (upstream miss) | cold (ours miss) | warm upstream | warm ours "
        "| Dynamo-only floor | overhead above floor: upstream / ours | ours/upstream overhead "
        "| miss cost vs off: upstream / ours | other load on the machine (cores, median / max) |"
    )
    for model, m in data["models"].items():
        lines.append(
            f"| {model} | {_s(m['cold_off_s'])} | {_s(m['cold_upstream_s'])} | {_s(m['cold_ours_s'])} "
            f"| {_s(m['warm_upstream_s'], 3)} | {_s(m['warm_ours_s'], 3)} | {_s(m['floor_s'], 3)} "
            f"| {_s(m['overhead_upstream_s'], 3)} / {_s(m['overhead_ours_s'], 3)} | {_s(m['overhead_ratio'], 2)} "
            f"| {_pct(m['miss_overhead_upstream_pct'])} / {_pct(m['miss_overhead_ours_pct'])} "
            f"| {_s(m['other_load_cores_median'])} / {_s(m['other_load_cores_max'])} |"
        )
    lines.append("")
    lines.append(
        "Other load: cores kept busy by other processes while a worker ran (from /proc/stat, minus the "
        "worker's own CPU time). Anything well above 0 on a 2-core machine inflates wall times."
    )
    return lines


def _quiet_cell(q: dict[str, Any], name: str, digits: int) -> str:
    return f"{_s(q.get(name + '_s'), digits)} ({q.get(name + '_n', 0)})"


def _quiet_table(data: dict[str, Any]) -> list[str]:
    lines = _heading(f"## The same, quiet runs only (other load < {QUIET_LOAD_CORES:g} cores); medians, s (runs)")
    lines += _table_head(
        "| model | cold (off) | cold (upstream miss) | cold (ours miss) | warm upstream | warm ours | floor "
        "| overhead above floor: upstream / ours | ours/upstream overhead | miss cost vs off: upstream / ours |"
    )
    qv = _quiet_cell
    for model, m in data["models"].items():
        q = m.get("quiet")
        if not q:
            continue
        lines.append(
            f"| {model} | {qv(q, 'cold_off', 2)} | {qv(q, 'cold_upstream', 2)} | {qv(q, 'cold_ours', 2)} "
            f"| {qv(q, 'warm_upstream', 3)} | {qv(q, 'warm_ours', 3)} | {qv(q, 'floor', 3)} "
            f"| {_s(q['overhead_upstream_s'], 3)} / {_s(q['overhead_ours_s'], 3)} | {_s(q['overhead_ratio'], 2)} "
            f"| {_pct(q['miss_overhead_upstream_pct'])} / {_pct(q['miss_overhead_ours_pct'])} |"
        )
    return lines


def _cpu_table(data: dict[str, Any]) -> list[str]:
    lines = _heading(
        "## Warm start in CPU seconds (this process and the subprocesses it waited for; medians)",
        "CPU time would be immune to other load on dedicated cores; on a shared VM it inflates with it "
        "(vCPU contention), so read it as a cross-check, not a cure.",
    )
    lines += _table_head(
        "| model | warm upstream (min wall) | warm ours (min wall) | floor | overhead above floor: upstream / ours "
        "| ours/upstream overhead |"
    )
    for model, m in data["models"].items():
        lines.append(
            f"| {model} | {_s(m['upstream_warm_cpu_s'], 3)} ({_s(m['upstream_warm_min_s'], 3)}) "
            f"| {_s(m['ours_warm_cpu_s'], 3)} ({_s(m['ours_warm_min_s'], 3)}) | {_s(m['floor_cpu_s'], 3)} "
            f"| {_s(m['cpu_overhead_upstream_s'], 3)} / {_s(m['cpu_overhead_ours_s'], 3)} "
            f"| {_s(m['cpu_overhead_ratio'], 2)} |"
        )
    for note in data.get("notes", []):
        lines.append("")
        lines.append(f"Note: {note}")
    return lines


def _miss_cost_table(data: dict[str, Any]) -> list[str]:
    lines = _heading(
        "## What a miss costs in cache code (cold processes; medians, ms)",
        "Timed inside the cold process: the key, the failed lookup, `make_entry` and `save`. "
        "This is what the cache itself adds to a compile; the wall-time difference to `off` above also "
        "holds Inductor's own FX-graph cache and the run-to-run noise of a 10-40 s compile.",
    )
    lines += _table_head(
        "| model | upstream: key / save / all cache code | % of cold (off) "
        "| ours: key / save / all cache code | % of cold (off) |"
    )
    for model, m in data["models"].items():
        if m.get("upstream_cold_cache_code_s") is None and m.get("ours_cold_cache_code_s") is None:
            continue
        lines.append(
            f"| {model} | {_ms(m['upstream_cold_key_s'])} / {_ms(m['upstream_cold_save_s'])} / "
            f"{_ms(m['upstream_cold_cache_code_s'])} | {_s(m['upstream_cold_cache_code_pct'], 2)}% "
            f"| {_ms(m['ours_cold_key_s'])} / {_ms(m['ours_cold_save_s'])} / {_ms(m['ours_cold_cache_code_s'])} "
            f"| {_s(m['ours_cold_cache_code_pct'], 2)}% |"
        )
    return lines


def _warm_start_table(data: dict[str, Any]) -> list[str]:
    lines = _heading("## Where a warm start goes (medians, ms)")
    lines += _table_head(
        "| model | mode | first step | key | rest of try_load | other above floor | floor "
        "| hits per warm process | imports before the step | whole warm process |"
    )
    for model, m in data["models"].items():
        for mode in ("upstream", "ours"):
            step = m[f"warm_{mode}_s"]
            tl = m[f"{mode}_warm_try_load_s"]
            floor = m["floor_s"]
            other = None if None in (step, tl, floor) else step - floor - tl
            lines.append(
                f"| {model} | {mode} | {_ms(step)} | {_ms(m[f'{mode}_warm_key_s'])} | {_ms(m[f'{mode}_warm_rest_s'])} "
                f"| {_ms(other)} | {_ms(floor)} | {m[f'{mode}_warm_hits']} | {_ms(m[f'{mode}_warm_import_s'])} "
                f"| {_ms(m[f'{mode}_warm_process_s'])} |"
            )
    return lines


def _keys_section(data: dict[str, Any]) -> list[str]:
    keys = data.get("keys")
    if not keys:
        return []
    lines = _heading("## Key computation (ms; medians)")
    lines += _table_head("| graph | upstream | ours | ours/upstream | µs per node: upstream / ours |")
    lines.append(
        f"| first key of a process (tiny graph, cache dir seen before) | {_ms(keys['upstream_first_key_s'])} "
        f"| {_ms(keys['ours_first_key_s'])} | {_s(keys['first_key_ratio'], 3)} | |"
    )
    lines.append(
        f"| first key, first process ever in an empty cache dir | {_ms(keys['upstream_first_key_empty_dir_s'])} "
        f"| {_ms(keys['ours_first_key_empty_dir_s'])} "
        f"| {_s(_ratio(keys['ours_first_key_empty_dir_s'], keys['upstream_first_key_empty_dir_s']), 3)} | |"
    )
    for e in keys["by_size"].values():
        lines.append(
            f"| later key, {e['nodes']}-node chain | {_ms(e['upstream_s'])} | {_ms(e['ours_s'])} "
            f"| {_s(e['ratio'], 3)} | {_s(e['upstream_us_per_node'], 1)} / {_s(e['ours_us_per_node'], 1)} |"
        )
    for model, m in data["models"].items():
        lines.append(
            f"| {model}: first key of a warm process (real graph) | {_ms(m['upstream_warm_first_key_s'])} "
            f"| {_ms(m['ours_warm_first_key_s'])} "
            f"| {_s(_ratio(m['ours_warm_first_key_s'], m['upstream_warm_first_key_s']), 3)} | |"
        )
    for note in keys.get("notes", []):
        lines.append("")
        lines.append(f"Note: {note}")
    return lines


def _lookup_section(data: dict[str, Any]) -> list[str]:
    lookup = data.get("lookup")
    if not lookup:
        return []
    lines = _heading("## Lookup scaling (`find_entry` of a key with a real entry)")
    lines += _table_head("| entries in the store | first lookup (ms) | median lookup (ms) |")
    for n, e in sorted(lookup["by_entries"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {n} | {e['first_ms']:.3f} | {e['median_ms']:.3f} |")
    return lines


def _remote_section(data: dict[str, Any]) -> list[str]:
    remote = data.get("remote")
    if not remote:
        return []
    lines = _heading(
        "## Remote warm start (first step, s; medians)",
        "Cold `ours` process with a loopback Redis (or, for rows marked so, moto's S3 API server), a "
        "signing key and synchronous writes; then warm processes, each with a new empty cache dir (no local "
        "entry, no Inductor artifact) and the same store. Compared with the local-hit warm `ours` step of "
        "the same run.",
    )
    lines += _table_head(
        f"| model | warm local hit (s) | warm remote hit from an empty cache dir (s) | difference (ms) "
        f"| within {TARGET_REMOTE_MS:g} ms of a local hit | remote hits per process "
        "| entry bytes local / remote | compression ratio |"
    )
    for model, r in remote.items():
        lines += _remote_row(model, r)
    lines += _heading(
        "### Whole warm processes (start to exit, s; medians)",
        "The same warm processes timed from outside, against the warm `ours` processes that hit locally.",
    )
    lines += _table_head("| model | local hit (s) | remote hit from an empty cache dir (s) | difference (ms) |")
    for model, r in remote.items():
        lp, rp, d = r.get("warm_local_process_s"), r.get("warm_remote_process_s"), r.get("process_diff_s")
        lines.append(f"| {model} | {_s(lp, 3)} | {_s(rp, 3)} | {'n/a' if d is None else f'{d * 1e3:+.1f}'} |")
    return lines


def _remote_row(model: str, r: dict[str, Any]) -> list[str]:
    """One model's row of the remote table, and the error of its run if it failed."""
    met = r.get("target_met")
    lb, rb = r.get("local_entry_bytes"), r.get("remote_value_bytes")
    diff = r.get("diff_s")
    lines = [
        f"| {model} | {_s(r['warm_local_hit_s'], 3)} | {_s(r['warm_remote_hit_s'], 3)} "
        f"| {'n/a' if diff is None else f'{diff * 1e3:+.1f}'} "
        f"| {'n/a' if met is None else ('met' if met else 'missed')} | {r['remote_hits_per_process']} "
        f"| {'n/a' if lb is None else lb} / {'n/a' if rb is None else rb} "
        f"| {_s(r['compression_ratio'], 2)} |"
    ]
    if r.get("error"):
        lines.append("")
        lines.append(f"Remote run of {model} failed: {r['error']}")
    return lines


def _verdict(v: bool | None) -> str:
    return "n/a" if v is None else ("met" if v else "missed")


def _limit_text(t: dict[str, Any]) -> str:
    """A target's limit with its comparison and unit: ``< 5 ms``, ``≤ 2%``, ``≤ 0.25``."""
    name = t["target"]
    unit = " ms" if ("lookup" in name or "remote" in name) else ("%" if "miss" in name else "")
    return f"{'<' if 'lookup' in name else '≤'} {t['limit']:g}{unit}"


def _targets_table(data: dict[str, Any]) -> list[str]:
    lines = _heading("## Targets")
    lines += _table_head("| target | limit | measured (all runs) | met | measured (quiet runs only) | met |")
    for t in data["targets"]:
        limit_text = _limit_text(t)
        quiet_text = t.get("quiet_text", "n/a")
        quiet_met = _verdict(t.get("quiet_met")) if "quiet_met" in t and quiet_text != "n/a" else ""
        lines.append(
            f"| {t['target']} | {limit_text} | {t['text']} | {_verdict(t['met'])} | {quiet_text} | {quiet_met} |"
        )
    return lines
