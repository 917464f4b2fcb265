#!/usr/bin/env python3
"""
Second-process soundness of a cache of Dynamo's compiled frames.

    python tools/dynamo_soundness.py [--mode plain|upstream|ours] [--cases a,b,...]
        [--json FILE] [--keep DIR]

A cache that skips Dynamo's tracing in a later process may only run a stored
frame where tracing would produce the same program.  Each case here writes a
small program (and, for some, a module it imports), runs it once to fill an
empty cache dir, changes ONE thing (the compiled function's source, a global,
a closure cell, a monkeypatched torch function, the input's dtype, ...), and
runs it again in a fresh process against the same cache dir.  The second
process compares the compiled result with the same function run eagerly
(values, dtype, shape, ``requires_grad``) and reports whether Dynamo traced
again and whether a stored frame was loaded.

Modes:

``plain``     ``torch.compile`` with Dynamo's frame cache off: every second
              process traces; the control that shows the programs themselves
              are right.
``upstream``  torch's own ``torch._dynamo.config.caching_precompile`` with the
              explicit ``torch.compiler.save_cache_artifacts()`` it needs in the
              first process (torch 2.15).
``ours``      torch_aotcache's frame cache (``TORCH_AOTCACHE_DYNAMO=1``): no call
              from the program.

The ``unchanged`` case changes nothing: a frame cache must reuse the stored
frame there (verdict ``reused``), or the other verdicts prove nothing.

A second process whose result differs from eager is ``WRONG``; the goal of a
frame cache is zero of them.  The exit status is 1 when any case is wrong, 2
when a case could not run, 3 when a caching mode did not reuse the frame of
the ``unchanged`` case, 0 otherwise.  Nothing is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The frame of every program: set the mode up, run the case's ``fn`` compiled
# and eagerly on the same inputs, report as one JSON line.
PROLOGUE = '''
import json, sys
import torch
PHASE, MODE = sys.argv[1], sys.argv[2]
if MODE == "upstream":
    torch._dynamo.config.caching_precompile = True
if MODE == "ours":
    import torch_aotcache
import contextlib
ctx = contextlib.nullcontext
'''

EPILOGUE = '''
compiled = torch.compile(fn)
with ctx():
    out = compiled(*args)
with ctx():
    ref = fn(*args)
if PHASE == "fill" and MODE == "upstream":
    torch.compiler.save_cache_artifacts()
from torch._dynamo.utils import counters
same = (
    out.shape == ref.shape and out.dtype == ref.dtype
    and out.requires_grad == ref.requires_grad
    and bool(torch.allclose(out.detach(), ref.detach(), rtol=1e-5, atol=1e-6))
)
print("SOUNDNESS " + json.dumps({
    "equal": same,
    "traced": int(counters["stats"].get("unique_graphs", 0)),
    "frame_cache": {k: int(v) for k, v in counters["dynamo_cache"].items()},
    "ours": {k: int(v) for k, v in counters["torch_aotcache"].items() if k.startswith("frame_")},
}))
'''


@dataclass
class Case:
    """One change between the process that fills the cache and the one that reads it."""

    name: str
    what: str
    # Program bodies (they define ``fn`` and ``args``, may set ``ctx``):
    # before and after the change; and a module ``helper.py`` each imports.
    before: str
    after: str
    helper_before: str = ""
    helper_after: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def _cases() -> list[Case]:
    x = "x = torch.randn(4, 6)\nargs = (x,)\n"
    return [
        Case("unchanged", "nothing (the stored frame must be reused)",
             "import torch.nn.functional as F\ndef fn(x):\n    return F.relu(torch.sin(x)) + 1\n" + x,
             "import torch.nn.functional as F\ndef fn(x):\n    return F.relu(torch.sin(x)) + 1\n" + x),
        Case("source", "the compiled function's source",
             "def fn(x):\n    return torch.sin(x) + 1\n" + x,
             "def fn(x):\n    return torch.sin(x) + 2\n" + x),
        Case("inlined_source", "the source of a function it inlines, in another module",
             "import helper\ndef fn(x):\n    return helper.g(x) + 1\n" + x,
             "import helper\ndef fn(x):\n    return helper.g(x) + 1\n" + x,
             helper_before="import torch\ndef g(x):\n    return torch.cos(x) * 2\n",
             helper_after="import torch\ndef g(x):\n    return torch.cos(x) * 3\n"),
        Case("global", "a global the function reads",
             "SCALE = 2.0\ndef fn(x):\n    return torch.sin(x) * SCALE\n" + x,
             "SCALE = 3.0\ndef fn(x):\n    return torch.sin(x) * SCALE\n" + x),
        Case("global_tensor_fn", "a global bound to another function",
             "act = torch.sin\ndef fn(x):\n    return act(x) + 1\n" + x,
             "act = torch.cos\ndef fn(x):\n    return act(x) + 1\n" + x),
        Case("closure", "a closure cell",
             "def make(k):\n    def fn(x):\n        return torch.sin(x) * k\n    return fn\nfn = make(2.0)\n" + x,
             "def make(k):\n    def fn(x):\n        return torch.sin(x) * k\n    return fn\nfn = make(3.0)\n" + x),
        Case("default_argument", "a default argument",
             "def fn(x, k=2.0):\n    return torch.sin(x) * k\n" + x,
             "def fn(x, k=3.0):\n    return torch.sin(x) * k\n" + x),
        Case("module_attribute", "an nn.Module attribute",
             _module_body("self.k = 2.0", "self.k"), _module_body("self.k = 3.0", "self.k")),
        Case("module_buffer", "an nn.Module buffer",
             _module_body('self.register_buffer("b", torch.full((6,), 2.0))', "self.b"),
             _module_body('self.register_buffer("b", torch.full((6,), 3.0))', "self.b")),
        Case("monkeypatched_torch", "a torch function monkeypatched",
             "def fn(x):\n    return torch.nn.functional.relu(x) + 1\n" + x,
             "torch.nn.functional.relu = torch.nn.functional.gelu\n"
             "def fn(x):\n    return torch.nn.functional.relu(x) + 1\n" + x),
        Case("shape", "the input's shape",
             "def fn(x):\n    return torch.sin(x).sum(0)\n" + x,
             "def fn(x):\n    return torch.sin(x).sum(0)\nx = torch.randn(4, 7)\nargs = (x,)\n"),
        Case("dtype", "the input's dtype",
             "def fn(x):\n    return torch.sin(x) + 1\n" + x,
             "def fn(x):\n    return torch.sin(x) + 1\nx = torch.randn(4, 6, dtype=torch.float64)\nargs = (x,)\n"),
        Case("strides", "the input's strides",
             "def fn(x):\n    return x.view(-1)[:5] + 1 if x.is_contiguous() else x.reshape(-1)[:5] + 2\n" + x,
             "def fn(x):\n    return x.view(-1)[:5] + 1 if x.is_contiguous() else x.reshape(-1)[:5] + 2\n"
             "x = torch.randn(6, 4).t()\nargs = (x,)\n"),
        Case("requires_grad", "the input's requires_grad",
             "def fn(x):\n    return torch.sin(x) + 1\n" + x,
             "def fn(x):\n    return torch.sin(x) + 1\nx = torch.randn(4, 6, requires_grad=True)\nargs = (x,)\n"),
        Case("grad_mode", "grad mode",
             "w = torch.randn(6, requires_grad=True)\ndef fn(x):\n    return torch.sin(x) * w\n" + x,
             "w = torch.randn(6, requires_grad=True)\ndef fn(x):\n    return torch.sin(x) * w\n" + x
             + "ctx = torch.no_grad\n"),
        Case("autocast", "an autocast region around the call",
             "w = torch.randn(6, 6)\ndef fn(x):\n    return x @ w\n" + x,
             "w = torch.randn(6, 6)\ndef fn(x):\n    return x @ w\n" + x
             + "ctx = lambda: torch.autocast('cpu', dtype=torch.bfloat16)\n"),
        Case("dynamo_config", "a Dynamo config",
             "def fn(x):\n    n = x.sum().item()\n    return x * n\n" + x,
             "torch._dynamo.config.capture_scalar_outputs = True\n"
             "def fn(x):\n    n = x.sum().item()\n    return x * n\n" + x),
        Case("inductor_config", "an Inductor config (random numbers as eager draws them)",
             _dropout_body(""), _dropout_body("torch._inductor.config.fallback_random = True\n")),
        Case("torch_version", "the torch version (the second process reports another)",
             "def fn(x):\n    return torch.sin(x) + 1\n" + x,
             "torch.__version__ = torch.__version__ + '.other'\n"
             "def fn(x):\n    return torch.sin(x) + 1\n" + x),
    ]


def _module_body(init: str, use: str) -> str:
    """An nn.Module whose ``__init__`` runs ``init`` and whose forward scales by ``use``."""
    return textwrap.dedent(f"""
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                {init}
            def forward(self, x):
                return torch.sin(x) * {use}
        fn = M()
        x = torch.randn(4, 6)
        args = (x,)
    """)


def _dropout_body(config: str) -> str:
    # Each call (compiled, then eager) starts from the same seed.
    return config + textwrap.dedent("""
        def fn(x):
            return torch.nn.functional.dropout(x, 0.5, training=True)
        x = torch.randn(4, 6)
        args = (x,)
        def ctx():
            torch.manual_seed(0)
            return contextlib.nullcontext()
    """)


def _write(folder: str, body: str, helper: str) -> None:
    with open(os.path.join(folder, "prog.py"), "w", encoding="utf-8") as f:
        f.write(PROLOGUE + body + EPILOGUE)
    helper_path = os.path.join(folder, "helper.py")
    if helper:
        with open(helper_path, "w", encoding="utf-8") as f:
            f.write(helper)
    shutil.rmtree(os.path.join(folder, "__pycache__"), ignore_errors=True)


def _run(folder: str, phase: str, mode: str, cache_dir: str, timeout: float,
         extra_env: dict[str, str] | None = None) -> dict[str, object]:
    # A clean environment, but for the vector ISA probe's answer (a fact of
    # the machine's compiler, not a setting of the program).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TORCH_AOTCACHE_", "TORCHINDUCTOR_")) or k == "TORCHINDUCTOR_VEC_ISA_OK"}
    env.update(extra_env or {})
    env.update(TORCHINDUCTOR_CACHE_DIR=cache_dir, PYTHONDONTWRITEBYTECODE="1")
    if mode == "ours":
        env["TORCH_AOTCACHE_DYNAMO"] = "1"
    else:
        env["TORCH_AOTCACHE_DISABLE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([folder, REPO_ROOT])
    proc = subprocess.run([sys.executable, "prog.py", phase, mode], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("SOUNDNESS "):
            result: dict[str, object] = json.loads(line[len("SOUNDNESS "):])
            return result
    raise RuntimeError(f"{phase} process failed (rc={proc.returncode}):\n{proc.stderr[-2000:]}")


def run_case(case: Case, mode: str, root: str, timeout: float = 600,
             extra_env: dict[str, str] | None = None) -> dict[str, object]:
    """Fill a cache with ``case.before``, read it with ``case.after``; the
    verdict and both processes' reports.  ``extra_env`` is added to both
    processes' environment."""
    folder = os.path.join(root, case.name)
    os.makedirs(folder, exist_ok=True)
    cache_dir = os.path.join(folder, "cache")
    out: dict[str, object] = {"case": case.name, "what": case.what}
    try:
        _write(folder, case.before, case.helper_before)
        out["fill"] = _run(folder, "fill", mode, cache_dir, timeout, extra_env)
        _write(folder, case.after, case.helper_after)
        second = _run(folder, "read", mode, cache_dir, timeout, extra_env)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        out["verdict"] = "ERROR"
        out["error"] = str(e)
        return out
    out["read"] = second
    loaded = (second["frame_cache"].get("dynamo_cache_hit", 0) > 0  # type: ignore[union-attr]
              or second.get("ours", {}).get("frame_hit", 0) > 0)  # type: ignore[union-attr]
    out["verdict"] = (
        "WRONG" if not second["equal"] else "retraced" if second["traced"] else "reused" if loaded else "no trace"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("plain", "upstream", "ours"), default="upstream")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--keep", default=None, help="keep the programs and cache dirs under this folder")
    args = ap.parse_args(argv)
    cases = _cases()
    names = [c.name for c in cases]
    if args.cases:
        wanted = args.cases.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            print(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        cases = [c for c in cases if c.name in wanted]
    root = args.keep or tempfile.mkdtemp(prefix="dynamo-soundness-")
    os.makedirs(root, exist_ok=True)
    results = []
    try:
        for case in cases:
            r = run_case(case, args.mode, root)
            results.append(r)
            print(f"{case.name:22s} {r['verdict']:9s} {case.what}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"mode": args.mode, "results": results}, f, indent=2)
    verdicts = [r["verdict"] for r in results]
    print(f"mode {args.mode}: " + ", ".join(f"{v} {verdicts.count(v)}" for v in sorted(set(verdicts))))
    if "ERROR" in verdicts:
        for r in results:
            if r["verdict"] == "ERROR":
                print(f"--- {r['case']}\n{r['error']}", file=sys.stderr)
        return 2
    if "WRONG" in verdicts:
        return 1
    unchanged = [r for r in results if r["case"] == "unchanged"]
    if args.mode != "plain" and unchanged and unchanged[0]["verdict"] != "reused":
        print("the unchanged case did not reuse the stored frame: the cache did nothing", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
