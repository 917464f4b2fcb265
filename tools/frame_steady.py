#!/usr/bin/env python3
"""
Per-call time after a warm start: the frame cache on, off, and stock torch.

    python tools/frame_steady.py [--models mlp,bert] [--calls 300] [--rounds 3] [--json FILE]

For each model and mode, a first process fills an empty cache dir; then
``--rounds`` fresh warm processes (modes interleaved) each run ``--calls``
compiled inference calls and ``--calls`` compiled training steps (forward,
backward), after a few unmeasured calls, and report the median time of one
call.  Modes: ``stock`` (no torch_aotcache), ``ours`` (torch_aotcache, frame
cache off) and ``frames`` (``TORCH_AOTCACHE_DYNAMO=1``: the warm process runs
its frames from the store, so what is timed includes the guards of loaded
frames).  The figures printed are medians over rounds, in microseconds, and
each mode's ratio to stock.  ``bert`` needs transformers (the ``bench``
extra).  Nothing here is a test: timings vary with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("stock", "ours", "frames")

WORKER = r'''
import json, os, sys, time
MODEL, MODE, CALLS = sys.argv[1], sys.argv[2], int(sys.argv[3])
if MODE == "frames":
    os.environ["TORCH_AOTCACHE_DYNAMO"] = "1"
import torch
if MODE != "stock":
    import torch_aotcache
torch.manual_seed(0)
if MODEL == "mlp":
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    inputs = (torch.randn(4, 32),)
    def loss_of(out):
        return out.sum()
else:
    import transformers
    c = transformers.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                                intermediate_size=128, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)
    model = transformers.BertModel(c)
    inputs = (torch.randint(0, 128, (2, 16)),)
    def loss_of(out):
        return out.last_hidden_state.sum()
train = torch.compile(model)
def median_us(fn):
    for _ in range(10):
        fn()
    times = []
    for _ in range(CALLS):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    times.sort()
    return times[len(times) // 2] / 1000
def step():
    loss_of(train(*inputs)).backward()
model.train()
train_us = median_us(step)
def infer():
    with torch.no_grad():
        train(*inputs)
infer_us = median_us(infer)
from torch._dynamo.utils import counters
print("REPORT " + json.dumps({"train_us": train_us, "infer_us": infer_us,
                              "frame_hit": counters["torch_aotcache"].get("frame_hit", 0)}), flush=True)
'''


def run(model: str, mode: str, calls: int, cache: str) -> dict:
    env = dict(os.environ)
    env.pop("TORCH_AOTCACHE_DYNAMO", None)
    env.update({"TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")})
    p = subprocess.run([sys.executable, "-c", WORKER, model, mode, str(calls)], env=env, capture_output=True,
                       text=True, timeout=1200)
    for line in p.stdout.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT "):])
    raise SystemExit(f"{model} {mode} failed (rc={p.returncode}):\n{p.stderr[-3000:]}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,bert")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    results: dict[str, dict[str, list[dict]]] = {}
    for model in args.models.split(","):
        caches = {mode: tempfile.mkdtemp(prefix=f"steady-{model}-{mode}-") for mode in MODES}
        try:
            for mode in MODES:
                run(model, mode, 20, caches[mode])  # fills the cache dir
            results[model] = {mode: [] for mode in MODES}
            for _ in range(args.rounds):
                for mode in MODES:
                    results[model][mode].append(run(model, mode, args.calls, caches[mode]))
        finally:
            for d in caches.values():
                shutil.rmtree(d, ignore_errors=True)
        stock = {k: statistics.median(r[k] for r in results[model]["stock"]) for k in ("infer_us", "train_us")}
        for mode in MODES:
            rs = results[model][mode]
            med = {k: statistics.median(r[k] for r in rs) for k in ("infer_us", "train_us")}
            hits = [r["frame_hit"] for r in rs]
            print(f"{model:5s} {mode:7s} inference {med['infer_us']:8.1f} us ({med['infer_us'] / stock['infer_us']:.2f}x)"
                  f"  training {med['train_us']:8.1f} us ({med['train_us'] / stock['train_us']:.2f}x)"
                  f"  frame hits {hits}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
