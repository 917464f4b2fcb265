"""The charts: ``warmstart.png`` (where a warm first step goes) and ``process.png`` (a whole warm process).

Both need matplotlib (pip install -e '.[bench]'); without it they are skipped
and the report says so.
"""

from __future__ import annotations

from typing import Any


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only backend, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _warm_segments(data: dict[str, Any]) -> tuple[list[str], dict[str, list[float]], bool, bool]:
    """The bars of ``render_png``: labels, their segments, and whether quiet-run and all-run medians were used."""
    labels: list[str] = []
    segments: dict[str, list[float]] = {"Dynamo-only floor": [], "key computation": [],
                                        "rest of try_load": [], "other": []}
    used_quiet = used_all = False
    for model, m in data["models"].items():
        q = m.get("quiet", {})
        for mode in ("upstream", "ours"):
            # Quiet-run medians where there are any (see Note [Noise from other load]).
            step, floor = q.get(f"warm_{mode}_s"), q.get("floor_s")
            contended = step is None or floor is None
            if contended:
                step, floor = m[f"warm_{mode}_s"], m["floor_s"]
            key, rest = m[f"{mode}_warm_key_s"], m[f"{mode}_warm_rest_s"]
            if None in (step, floor, key, rest):
                continue
            used_all |= contended
            used_quiet |= not contended
            labels.append(f"{model} / {mode}" + (" *" if contended else ""))
            # A bar is as long as the measured step: the floor segment is capped
            # where the compiled step beats Dynamo + eager.
            segments["Dynamo-only floor"].append(max(0.0, min(floor, step - key - rest)))
            segments["key computation"].append(key)
            segments["rest of try_load"].append(rest)
            segments["other"].append(max(0.0, step - floor - key - rest))
    return labels, segments, used_quiet, used_all


def render_png(data: dict[str, Any], path: str) -> str | None:
    """A stacked horizontal bar per model and mode; returns why it was skipped, or None."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is not importable; warmstart.png skipped (pip install -e '.[bench]')"
    labels, segments, used_quiet, used_all = _warm_segments(data)
    if not labels:
        return "no complete warm measurements; warmstart.png skipped"
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(labels) + 1.6))
    left = [0.0] * len(labels)
    colors = ["#9e9e9e", "#d62728", "#ff7f0e", "#1f77b4"]
    ys = list(range(len(labels)))[::-1]
    for (name, values), color in zip(segments.items(), colors, strict=True):
        ax.barh(ys, values, left=left, label=name, color=color)
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, total in zip(ys, left, strict=True):
        ax.text(total, y, f" {total:.2f} s", va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    xlabel = "warm first step (s), medians" + (" of quiet runs" if used_quiet else "")
    if used_quiet and used_all:
        xlabel += "; * all runs (no quiet run: other load inflates these)"
    ax.set_xlabel(xlabel)
    mach = data["machine"]
    ax.set_title(f"Warm start: where the time goes ({mach.get('device_name')}, torch {mach.get('torch_version')})",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, max(left) * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


PROCESS_PARTS = (("startup_s", "interpreter start-up"), ("import_s", "imports"),
                 ("setup_s", "model set-up and torch.compile"), ("step_s", "first step"),
                 ("after_step_s", "after the step (exit)"))
PROCESS_MODES = (("eager", "eager floor (no torch.compile)"),
                 ("floor", "Dynamo-only floor"), ("floor_inductor", "floor + Inductor import"),
                 ("upstream", "upstream's cache"), ("ours", "torch_aotcache"))


def _process_rows(data: dict[str, Any]) -> tuple[list[str], list[list[float]]]:
    """The bars of ``render_process_png``: a label and the ``PROCESS_PARTS`` of each complete one."""
    labels: list[str] = []
    rows: list[list[float]] = []
    for model, m in data["models"].items():
        parts = (m.get("process") or {}).get("parts") or {}
        for mode, name in PROCESS_MODES:
            values = parts.get(mode) or {}
            if any(values.get(f) is None for f, _ in PROCESS_PARTS):
                continue
            labels.append(f"{model} / {name}")
            rows.append([float(values[f]) for f, _ in PROCESS_PARTS])
    return labels, rows


def render_process_png(data: dict[str, Any], path: str) -> str | None:
    """The whole warm process, start to exit: a stacked bar per model and
    mode (the parts ``summary._process_parts`` measures); returns why it
    was skipped, or None."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is not importable; process.png skipped (pip install -e '.[bench]')"
    labels, rows = _process_rows(data)
    if not labels:
        return "no complete whole-process measurements; process.png skipped"
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(labels) + 1.8))
    ys = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    colors = ["#bdbdbd", "#7f7f7f", "#2ca02c", "#1f77b4", "#ff7f0e"]
    for i, ((_, part_name), color) in enumerate(zip(PROCESS_PARTS, colors, strict=True)):
        values = [r[i] for r in rows]
        ax.barh(ys, values, left=left, label=part_name, color=color)
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, total in zip(ys, left, strict=True):
        ax.text(total, y, f" {total:.2f} s", va="center", fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("warm process, spawn to exit (s), medians of fresh processes")
    mach = data["machine"]
    ax.set_title(f"Whole warm process ({mach.get('device_name')}, torch {mach.get('torch_version')})",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_xlim(0, max(left) * 1.12)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
