#!/usr/bin/env python3
"""
The frame cache on real model code: small transformers models, two fresh processes.

    python tools/frame_models.py [--models gpt2,llama_ckpt,...] [--json FILE] [--keep DIR]

Each case builds a small model from a config (no weights, no hub access;
needs ``transformers``, the ``bench`` extra), seeds it, runs one training step
compiled (``torch.compile(model)``, loss, backward) and the same step eagerly
on a copy, and reports: whether it crashed, whether the compiled loss and
gradients equal eager's, and torch_aotcache's counters (frame hits, misses by
reason, frames saved or not packaged, graphs traced).  The first process fills
an empty cache dir; the second, a fresh process on the same dir, is the warm
start the frame cache exists for: it should run every packaged frame from the
store (``frame_hit`` > 0, no frame traced).

Modes: ``ours`` (``TORCH_AOTCACHE_DYNAMO=1``, the default), ``aot`` (torch_aotcache
with the frame cache off) and ``stock`` (no torch_aotcache): the same cases.

The exit status is 1 if a process crashed or a result differs from eager,
2 if a case could not run (transformers missing), 0 otherwise.  Nothing is
timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each case: the model it builds (dropout off, so that compiled and eager
# steps draw nothing at random); ``_autocast`` runs the step under CPU
# autocast (bfloat16), ``_ckpt`` turns on activation checkpointing.
CASES = {
    "bert": "bert",
    "vit": "vit",
    "gpt2": "gpt2",
    "gpt2_autocast": "gpt2",
    "llama": "llama",
    "llama_ckpt": "llama",
    "t5": "t5",
}

WORKER = r'''
import copy, json, os, sys, traceback
CASE, MODE = sys.argv[1], sys.argv[2]
if MODE == "ours":
    os.environ["TORCH_AOTCACHE_DYNAMO"] = "1"
import torch
if MODE != "stock":
    import torch_aotcache
import transformers

def build(case):
    torch.manual_seed(0)
    kind = case.split("_")[0]
    if kind == "bert":
        c = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)
        m = transformers.BertForSequenceClassification(c)
        ids = torch.randint(0, 128, (2, 16))
        return m, dict(input_ids=ids, labels=torch.tensor([0, 1]))
    if kind == "vit":
        c = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                   image_size=16, patch_size=4, num_labels=3, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0)
        m = transformers.ViTForImageClassification(c)
        return m, dict(pixel_values=torch.randn(2, 3, 16, 16), labels=torch.tensor([0, 2]))
    if kind == "gpt2":
        c = transformers.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        m = transformers.GPT2LMHeadModel(c)
        ids = torch.randint(0, 128, (2, 16))
        return m, dict(input_ids=ids, labels=ids)
    if kind == "llama":
        c = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
        m = transformers.LlamaForCausalLM(c)
        if case.endswith("_ckpt"):
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        ids = torch.randint(0, 128, (2, 16))
        return m, dict(input_ids=ids, labels=ids)
    if kind == "t5":
        c = transformers.T5Config(vocab_size=128, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                  decoder_start_token_id=0, pad_token_id=0, dropout_rate=0.0)
        m = transformers.T5ForConditionalGeneration(c)
        ids = torch.randint(1, 128, (2, 12))
        return m, dict(input_ids=ids, labels=torch.randint(1, 128, (2, 8)))
    raise SystemExit(f"unknown case {case}")

report = {"case": CASE, "mode": MODE}
try:
    model, inputs = build(CASE)
    model.train()
    eager = copy.deepcopy(model)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if CASE.endswith("_autocast") else None
    import contextlib
    ctx = ctx or contextlib.nullcontext
    compiled = torch.compile(model)
    torch.manual_seed(1)
    with ctx():
        loss = compiled(**inputs).loss
    loss.backward()
    torch.manual_seed(1)
    with ctx():
        ref = eager(**inputs).loss
    ref.backward()
    tol = dict(rtol=2e-2, atol=2e-2) if CASE.endswith("_autocast") else dict(rtol=1e-4, atol=1e-5)
    same = bool(torch.allclose(loss.float(), ref.float(), **tol))
    for (n, p), (_, q) in zip(model.named_parameters(), eager.named_parameters()):
        if (p.grad is None) != (q.grad is None):
            same = False
        elif p.grad is not None and not torch.allclose(p.grad.float(), q.grad.float(), **tol):
            same = False
    report["equal_to_eager"] = same
    report["crashed"] = None
except BaseException as e:
    report["crashed"] = f"{type(e).__name__}: {str(e)[:300]}"
    report["traceback"] = traceback.format_exc()[-3000:]
from torch._dynamo.utils import counters
report["counters"] = {k: dict(v) for k, v in counters.items() if k in ("torch_aotcache", "aot_autograd", "stats")}
report["frames_traced"] = int(counters["stats"].get("unique_graphs", 0))
print("REPORT " + json.dumps(report), flush=True)
'''


def run(case: str, mode: str, cache_dir: str, timeout: float) -> dict:
    env = dict(os.environ)
    env.pop("TORCH_AOTCACHE_DYNAMO", None)
    env.update({"TORCHINDUCTOR_CACHE_DIR": cache_dir, "TORCH_AOTCACHE_DIR": os.path.join(cache_dir, "aotcache"),
                "PYTHONPATH": REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")})
    try:
        p = subprocess.run([sys.executable, "-c", WORKER, case, mode], env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": case, "mode": mode, "crashed": f"timed out after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT "):])
    return {"case": case, "mode": mode, "crashed": f"exit {p.returncode}: {p.stderr[-2000:]}"}


def summary(r: dict) -> str:
    c = r.get("counters", {}).get("torch_aotcache", {})
    a = r.get("counters", {}).get("aot_autograd", {})
    interesting = {k: v for k, v in c.items() if k.startswith("frame") or k in ("hit", "miss", "bypass")}
    if r.get("crashed"):
        return f"CRASH {r['crashed'][:160]}"
    return (f"{'ok' if r.get('equal_to_eager') else 'WRONG'} traced={r.get('frames_traced')} "
            f"aot_hit={a.get('autograd_cache_hit', 0)} {json.dumps(interesting, sort_keys=True)}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(CASES))
    ap.add_argument("--mode", default="ours", choices=("ours", "aot", "stock"))
    ap.add_argument("--json")
    ap.add_argument("--keep")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("transformers is not installed (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    results = []
    bad = False
    for case in args.models.split(","):
        if case not in CASES:
            print(f"unknown case {case}; known: {', '.join(CASES)}", file=sys.stderr)
            return 2
        root = tempfile.mkdtemp(prefix=f"frame-models-{case}-", dir=args.keep)
        try:
            first = run(case, args.mode, root, args.timeout)
            print(f"{case:14s} cold: {summary(first)}", flush=True)
            second = run(case, args.mode, root, args.timeout)
            print(f"{case:14s} warm: {summary(second)}", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        for r in (first, second):
            bad |= bool(r.get("crashed")) or not r.get("equal_to_eager")
        results.append({"case": case, "cold": first, "warm": second})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
