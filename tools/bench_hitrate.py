"""
Hit-rate benchmark: which realistic programs hit the AOTAutograd cache in a
second process, with stock torch and with torch_aotcache.

Usage::

    python tools/bench_hitrate.py [--programs a,b,...] [--modes stock,ours]
        [--json PATH] [--markdown PATH]

Every program runs twice per mode, each run in a fresh interpreter
(``python tools/bench_hitrate.py --worker PROGRAM``), the two runs sharing a
new ``TORCHINDUCTOR_CACHE_DIR`` of their own: the first fills the cache, the
second shows what a repeat of the same work gets from it.  ``stock`` is torch's
own cache (``TORCH_AOTCACHE_DISABLE=1``, torch_aotcache never imported);
``ours`` imports torch_aotcache.  Each run does one training step (forward,
``backward``), compares its outputs and gradients with eager's, and reports the
AOTAutograd cache counters (``counters["aot_autograd"]``: hit, miss, bypass,
saved) and the reasons of its bypasses (read from the INFO log lines both
caches write).  The table gives, per program and mode, the counts of each run;
``repeat`` is ``hit`` when the second run hit every graph it looked up and
neither run bypassed.

The programs (small, so the whole benchmark takes a few minutes on two cores):

``transformer_autocast``  a transformer encoder layer whose step runs under
                          ``torch.autocast("cpu", dtype=torch.bfloat16)``
``autograd_function``     an MLP whose activations are custom ``autograd.Function``s
``checkpoint``            activation checkpointing (non-reentrant) around a block
``graph_break``           a model with a graph break in the middle (two graphs)
``dynamic_batch``         one model stepped at batch sizes 4, 8 and 6
``buffers``               a module with a registered buffer and BatchNorm in training
``tiny``                  a pointwise function (for the test of this tool; not in the default set)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any


DEFAULT_PROGRAMS = (
    "transformer_autocast",
    "autograd_function",
    "checkpoint",
    "graph_break",
    "dynamic_batch",
    "buffers",
)
MODES = ("stock", "ours")
COUNTS = ("hit", "miss", "bypass", "saved")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# The programs (built in the worker, after torch is imported)
# ---------------------------------------------------------------------------

Step = Callable[[bool], list[Any]]


def _program(name: str) -> tuple[Step, Any]:
    """A step function ``step(compiled) -> tensors to compare`` and its module."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    def inputs(*shape: int) -> Any:
        g = torch.Generator().manual_seed(1)
        return torch.randn(*shape, generator=g)

    def training_step(model: nn.Module, fn: Callable[..., Any], batches: Sequence[Any]) -> Step:
        def step(compiled: bool) -> list[Any]:
            run = torch.compile(fn) if compiled else fn
            model.zero_grad(set_to_none=True)
            outs = []
            for x in batches:
                out = run(model, x)
                out.float().sum().backward()
                outs.append(out.detach().float())
            return outs + [p.grad for p in model.parameters() if p.grad is not None]

        return step

    if name == "transformer_autocast":
        model = nn.TransformerEncoderLayer(d_model=32, nhead=2, dim_feedforward=64, dropout=0.0, batch_first=True)

        def fwd(m: nn.Module, x: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return m(x)

        return training_step(model, fwd, [inputs(2, 8, 32)]), model

    if name == "autograd_function":

        class ScaledTanh(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: Any) -> Any:
                y = torch.tanh(x)
                ctx.save_for_backward(y)
                return y * 1.5

            @staticmethod
            def backward(ctx: Any, g: Any) -> Any:
                (y,) = ctx.saved_tensors
                return g * (1 - y * y) * 1.5

        class ClampGrad(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: Any) -> Any:
                return x.clone()

            @staticmethod
            def backward(ctx: Any, g: Any) -> Any:
                return g.clamp(-0.1, 0.1)

        model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 8))

        def fwd(m: nn.Module, x: Any) -> Any:
            h = ScaledTanh.apply(m[0](x))
            return ClampGrad.apply(m[1](h))

        return training_step(model, fwd, [inputs(4, 16)]), model

    if name == "checkpoint":
        from torch.utils.checkpoint import checkpoint

        model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16), nn.Linear(16, 4))

        def fwd(m: nn.Module, x: Any) -> Any:
            h = checkpoint(lambda t: m[2](m[1](m[0](t))), x, use_reentrant=False)
            return m[3](h)

        return training_step(model, fwd, [inputs(4, 16)]), model

    if name == "graph_break":
        model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))

        def fwd(m: nn.Module, x: Any) -> Any:
            h = m[1](m[0](x))
            torch._dynamo.graph_break()
            return m[2](h)

        return training_step(model, fwd, [inputs(4, 16)]), model

    if name == "dynamic_batch":
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

        def fwd(m: nn.Module, x: Any) -> Any:
            return m(x)

        return training_step(model, fwd, [inputs(b, 16) for b in (4, 8, 6)]), model

    if name == "buffers":

        class WithBuffers(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lin = nn.Linear(16, 16)
                self.bn = nn.BatchNorm1d(16)
                self.register_buffer("scale", torch.linspace(0.5, 1.5, 16))

            def forward(self, x: Any) -> Any:
                return self.bn(self.lin(x)) * self.scale

        model = WithBuffers()
        model.train()

        def fwd(m: nn.Module, x: Any) -> Any:
            return m(x)

        return training_step(model, fwd, [inputs(4, 16)]), model

    if name == "tiny":
        model = nn.Linear(4, 4)

        def fwd(m: nn.Module, x: Any) -> Any:
            return torch.sin(m(x)) + 1

        return training_step(model, fwd, [inputs(2, 4)]), model

    raise SystemExit(f"unknown program {name!r}")


class _BypassReasons(logging.Handler):
    """Collects the reasons of bypasses from both caches' INFO log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        prefix = "Bypassing autograd cache due to: "
        if msg.startswith(prefix):
            reason = msg[len(prefix):].strip().splitlines()[0]
            # Object addresses differ between processes.
            reason = re.sub(r" at 0x[0-9a-fA-F]+", "", reason).rstrip(". ")
            self.reasons.append(reason[:200])


def worker(name: str) -> dict[str, Any]:
    if os.environ.get("TORCH_AOTCACHE_DISABLE") != "1":
        import torch_aotcache  # noqa: F401

    import torch
    from torch._dynamo.utils import counters

    handler = _BypassReasons()
    for logger_name in ("torch._functorch._aot_autograd.autograd_cache", "torch_aotcache.autograd_cache"):
        logger = logging.getLogger(logger_name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

    step, model = _program(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    got = step(True)
    aot = dict(counters["aot_autograd"])
    model.load_state_dict(state)
    torch._dynamo.reset()
    want = step(False)
    matches = len(got) == len(want) and all(
        g.shape == w.shape and torch.allclose(g.float(), w.float(), rtol=5e-2, atol=5e-2)
        for g, w in zip(got, want, strict=True)
    )
    counts = {c: int(aot.get(f"autograd_cache_{c}", 0)) for c in COUNTS}
    return {"counts": counts, "bypass_reasons": sorted(set(handler.reasons)), "matches_eager": bool(matches)}


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


def run_worker(name: str, mode: str, cache_dir: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        env.pop(var, None)
    if mode == "stock":
        env["TORCH_AOTCACHE_DISABLE"] = "1"
    else:
        env.pop("TORCH_AOTCACHE_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stdout[-1500:] + proc.stderr[-3000:]).strip()}
    return json.loads(lines[-1][len("RESULT "):])


def repeat_verdict(first: dict[str, Any], second: dict[str, Any]) -> str:
    if "error" in first or "error" in second:
        return "error"
    c1, c2 = first["counts"], second["counts"]
    if c1["bypass"] or c2["bypass"]:
        return "bypass"
    if c2["hit"] > 0 and c2["miss"] == 0:
        return "hit"
    return "miss"


def run_benchmark(programs: Sequence[str], modes: Sequence[str], log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in programs:
        results[name] = {}
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="hitrate_") as cache_dir:
                runs = [run_worker(name, mode, cache_dir) for _ in range(2)]
            results[name][mode] = {"runs": runs, "repeat": repeat_verdict(*runs)}
            log(f"{name:22s} {mode:6s} {results[name][mode]['repeat']}")
    return results


def _cell(run: dict[str, Any]) -> str:
    if "error" in run:
        return "error"
    c = run["counts"]
    text = "/".join(str(c[k]) for k in ("hit", "miss", "bypass"))
    return text if run["matches_eager"] else text + " WRONG"


def render_markdown(results: dict[str, Any], modes: Sequence[str]) -> str:
    header = ["program"]
    for mode in modes:
        header += [f"{mode} run 1", f"{mode} run 2", f"{mode} repeat"]
    lines = [
        "Counts are hit/miss/bypass of `counters[\"aot_autograd\"]`; each run is a fresh process.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    reasons: list[str] = []
    for name, by_mode in results.items():
        row = [name]
        for mode in modes:
            r = by_mode[mode]
            row += [_cell(r["runs"][0]), _cell(r["runs"][1]), r["repeat"]]
            for run in r["runs"]:
                for reason in run.get("bypass_reasons", []):
                    line = f"- {name}, {mode}: {reason}"
                    if line not in reasons:
                        reasons.append(line)
        lines.append("| " + " | ".join(row) + " |")
    if reasons:
        lines += ["", "Bypass reasons:", ""] + reasons
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--programs", default=",".join(DEFAULT_PROGRAMS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--markdown", help="write the table as Markdown to this path")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker), sort_keys=True))
        return 0
    programs = [p for p in args.programs.split(",") if p]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}")
    results = run_benchmark(programs, modes)
    table = render_markdown(results, modes)
    print()
    print(table)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"programs": programs, "modes": modes, "results": results}, f, indent=2, sort_keys=True)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table)
    errors = [n for n, by in results.items() for m in modes if by[m]["repeat"] == "error"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
