"""
``python -m torch_aotcache demo``: the cache at work, cold then warm.

Note [Demo processes]
~~~~~~~~~~~~~~~~~~~~~
The demo compiles one training step (forward, loss, ``loss.backward()``) in a
fresh interpreter, then again in a second fresh interpreter that shares the
first one's cache dir, and reports both.  Two processes, not one process with
its in-memory caches cleared, because a fresh process is what a user's second
run is: nothing survives in memory (Dynamo's, Inductor's and our own state are
all rebuilt), so a hit can only have come from the disk.  Each process is a
*worker* (``python -m torch_aotcache.cli.demo --worker --out FILE``) that builds
the model from the same seed, times its first compiled step, computes an eager
reference on a deep copy of the model, and writes its counters to ``FILE``
(JSON) and its tensors beside it (``torch.save``); the parent compares the
tensors and prints the table.

Rejected: timing the whole subprocess.  Interpreter start and ``import torch``
take seconds that the cache cannot remove, and would hide the compile time it
does remove; the worker times its first step only.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, TextIO

import torch
import torch.nn.functional as F
from torch import nn

import torch_aotcache  # noqa: F401  (installs itself; see __init__.py)


log = logging.getLogger(__name__)

# Tolerance of "matches eager": compiled kernels may fuse and reorder float ops.
ATOL = 1e-5
RTOL = 1e-4
SEED = 0
WORKER_TIMEOUT_S = 900
STDERR_TAIL_LINES = 40

# The counters of counters["aot_autograd"] the table shows, by column name.
COUNTER_COLUMNS: dict[str, str] = {
    "hit": "autograd_cache_hit",
    "miss": "autograd_cache_miss",
    "saved": "autograd_cache_saved",
    "bypass": "autograd_cache_bypass",
}


@dataclasses.dataclass(frozen=True)
class DemoModel:
    """A model the demo can train one step of."""

    title: str
    build: Callable[[], nn.Module]
    # Input and target of one step, drawn from the seeded global generator.
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]


def _mlp(width: int = 64, depth: int = 4) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(width, width))
        if i < depth - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def _mlp_batch(batch: int = 32, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, width), torch.randn(batch, width)


# Models by ``--model`` name; a new one is one more row.
MODELS: dict[str, DemoModel] = {
    "mlp": DemoModel("4-layer MLP", _mlp, _mlp_batch),
}


# --------------------------------------------------------------------------
# Worker: runs in its own interpreter.  See Note [Demo processes].


def _step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
) -> dict[str, Any]:
    """One training step without an optimizer: forward, loss, backward.

    ``forward`` is ``model`` or its compiled form; gradients are read from
    ``model`` so that both name them alike (a compiled module's own parameter
    names start with ``_orig_mod.``).
    """
    out = forward(x)
    loss = F.mse_loss(out, y)
    loss.backward()
    return {
        "out": out.detach(),
        "loss": loss.detach(),
        "grads": {
            n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None
        },
    }


def run_worker(model_name: str, out_path: str) -> None:
    from torch._dynamo.utils import counters

    spec = MODELS[model_name]
    torch.manual_seed(SEED)
    model = spec.build()
    reference = copy.deepcopy(model)
    x, y = spec.batch()

    compiled = torch.compile(model)
    start = time.perf_counter()
    result = _step(compiled, model, x, y)
    first_step_s = time.perf_counter() - start

    eager = _step(reference, reference, x, y)

    tensors_path = os.path.splitext(out_path)[0] + ".pt"
    torch.save({"compiled": result, "eager": eager}, tensors_path)
    report = {
        "pid": os.getpid(),
        "torch_version": torch.__version__,
        "installed": torch_aotcache.is_installed(),
        "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "first_step_s": first_step_s,
        "counters": {
            col: counters["aot_autograd"][name] for col, name in COUNTER_COLUMNS.items()
        },
        "aot_autograd_counters": dict(counters["aot_autograd"]),
        "torch_aotcache_counters": dict(counters["torch_aotcache"]),
        "tensors": tensors_path,
    }
    with open(out_path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)


# --------------------------------------------------------------------------
# Parent: starts the workers and compares what they wrote.


class WorkerFailed(Exception):
    def __init__(self, label: str, returncode: int, stderr: str) -> None:
        super().__init__(f"{label} worker exited with {returncode}")
        self.label = label
        self.returncode = returncode
        self.stderr = stderr


def _worker_env(cache_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    # Enabled whatever the caller's setting: the demo is of the cache.
    env["TORCH_AOTCACHE_DISABLE"] = ""
    # The worker imports the same torch_aotcache as this process, wherever
    # this one was found.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(torch_aotcache.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, env.get("PYTHONPATH", "")) if p
    )
    return env


def _run_worker_process(
    label: str, model_name: str, cache_dir: str, work_dir: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    out_path = os.path.join(work_dir, f"{label}.json")
    cmd = [
        sys.executable, "-m", "torch_aotcache.cli.demo",
        "--worker", "--model", model_name, "--out", out_path,
    ]
    log.debug("torch_aotcache demo: running %s", cmd)
    try:
        proc = subprocess.run(
            cmd,
            env=_worker_env(cache_dir),
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        raise WorkerFailed(label, -1, stderr or f"timed out after {WORKER_TIMEOUT_S} s") from None
    if proc.returncode != 0 or not os.path.exists(out_path):
        raise WorkerFailed(label, proc.returncode, proc.stderr)
    with open(out_path) as f:
        report = json.load(f)
    tensors = torch.load(report["tensors"], weights_only=True)
    return report, tensors


def _close(a: Any, b: Any, *, exact: bool = False) -> bool:
    """Tensors (or dicts of them) equal, bitwise or within the demo's tolerance."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], exact=exact) for k in a)
    if exact:
        return torch.equal(a, b)
    try:
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
    except AssertionError:
        return False
    return True


def _outputs(t: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {"out": t["out"], "loss": t["loss"]}


def compare(cold: dict[str, Any], warm: dict[str, Any]) -> dict[str, Any]:
    """Every comparison the demo reports, from the tensors the workers saved."""
    cc, wc = cold["compiled"], warm["compiled"]
    return {
        "outputs_match_eager": {
            "cold": _close(_outputs(cc), _outputs(cold["eager"])),
            "warm": _close(_outputs(wc), _outputs(warm["eager"])),
        },
        "grads_match_eager": {
            "cold": _close(cc["grads"], cold["eager"]["grads"]),
            "warm": _close(wc["grads"], warm["eager"]["grads"]),
        },
        "cold_warm_identical": _close(cc, wc, exact=True),
        "cold_warm_close": _close(cc, wc),
    }


def _yes(b: bool) -> str:
    return "yes" if b else "NO"


def format_table(result: dict[str, Any]) -> str:
    m = result["matches"]
    lines = [
        f"torch_aotcache demo: {result['model_title']} training step, "
        f"torch {result['torch_version']}, cache dir {result['cache_dir']}",
        "process  first step" + "".join(f"{c:>7}" for c in COUNTER_COLUMNS),
    ]
    for label in ("cold", "warm"):
        w = result[label]
        lines.append(
            f"{label:<9}{w['first_step_s']:>8.2f} s"
            + "".join(f"{w['counters'][c]:>7}" for c in COUNTER_COLUMNS)
        )
    oe, ge = m["outputs_match_eager"], m["grads_match_eager"]
    lines.append(
        f"outputs match eager: {_yes(oe['cold'])} (cold), {_yes(oe['warm'])} (warm); "
        f"gradients match eager: {_yes(ge['cold'])}, {_yes(ge['warm'])}"
    )
    if m["cold_warm_identical"]:
        same = "yes"
    elif m["cold_warm_close"]:
        same = f"no, but within tolerance (atol {ATOL:g}, rtol {RTOL:g})"
    else:
        same = "NO"
    lines.append(f"cold and warm outputs identical: {same}")
    cold_s, warm_s = result["cold"]["first_step_s"], result["warm"]["first_step_s"]
    if result["ok"]:
        lines.append(f"ok: warm first step {cold_s / warm_s:.1f}x faster than cold")
    else:
        lines.append("FAILED: " + "; ".join(result["problems"]))
    if result["kept"]:
        lines.append(f"cache kept in {result['cache_dir']}")
    return "\n".join(lines)


def _problems(cold: dict[str, Any], warm: dict[str, Any], m: dict[str, Any]) -> list[str]:
    problems = []
    if warm["counters"]["hit"] < 1:
        problems.append("the warm process did not hit the cache")
    for label in ("cold", "warm"):
        if not m["outputs_match_eager"][label]:
            problems.append(f"{label} outputs differ from eager")
        if not m["grads_match_eager"][label]:
            problems.append(f"{label} gradients differ from eager")
    if not m["cold_warm_close"]:
        problems.append("cold and warm results differ")
    return problems


def _prepare_keep_dir(keep: str) -> str | None:
    """``keep`` as an absolute path, or None when it holds files already."""
    keep = os.path.abspath(keep)
    if os.path.isdir(keep) and os.listdir(keep):
        return None
    os.makedirs(keep, exist_ok=True)
    return keep


def run_demo(
    model: str = "mlp",
    keep: str | None = None,
    as_json: bool = False,
    stream: TextIO | None = None,
) -> int:
    """Run the demo; returns 0 when the warm process hit and everything matched."""
    stream = stream if stream is not None else sys.stdout
    if keep is not None:
        cache_dir = _prepare_keep_dir(keep)
        if cache_dir is None:
            # A non-empty dir would let the cold process hit, which defeats the demo.
            print(f"torch_aotcache demo: --keep {keep}: not empty; give a new or empty dir",
                  file=sys.stderr)
            return 2
    else:
        cache_dir = tempfile.mkdtemp(prefix="torch_aotcache-demo-")
    work_dir = tempfile.mkdtemp(prefix="torch_aotcache-demo-work-")
    try:
        try:
            cold, cold_t = _run_worker_process("cold", model, cache_dir, work_dir)
            warm, warm_t = _run_worker_process("warm", model, cache_dir, work_dir)
        except WorkerFailed as e:
            tail = "\n".join(e.stderr.splitlines()[-STDERR_TAIL_LINES:])
            print(f"torch_aotcache demo: the {e.label} worker failed "
                  f"(exit code {e.returncode}); end of its stderr:\n{tail}", file=sys.stderr)
            return 1
        matches = compare(cold_t, warm_t)
        problems = _problems(cold, warm, matches)
        result = {
            "model": model,
            "model_title": MODELS[model].title,
            "torch_version": torch.__version__,
            "cache_dir": cache_dir,
            "kept": keep is not None,
            "cold": {k: v for k, v in cold.items() if k != "tensors"},
            "warm": {k: v for k, v in warm.items() if k != "tensors"},
            "matches": matches,
            "ok": not problems,
            "problems": problems,
        }
        if as_json:
            print(json.dumps(result, indent=2, sort_keys=True), file=stream)
        else:
            print(format_table(result), file=stream)
        return 0 if result["ok"] else 1
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        if keep is None:
            shutil.rmtree(cache_dir, ignore_errors=True)


def _worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torch_aotcache.cli.demo",
        description="Worker process of `python -m torch_aotcache demo`.",
    )
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--out", required=True, help="JSON report to write")
    args = parser.parse_args(argv)
    run_worker(args.model, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker_main())
