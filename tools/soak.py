"""
Soak test: many processes compiling against one cache dir while faults are
injected.  Not run by CI; see docs/RELIABILITY.md for figures and how to rerun.

Usage::

    python tools/soak.py [--procs 4] [--rounds 2] [--compiles 4]
        [--faults none,readonly,eacces,enospc,vanish,corrupt,kill,delete]
        [--probability 0.5] [--signing-key KEY] [--json OUT.json]

For each fault kind, a fresh cache dir; in each round, ``--procs`` fresh
interpreters (``python tools/soak.py --worker SPEC``) start together and each
compiles ``--compiles`` graphs: some shared by every process, one training
graph (forward and backward), and graphs of its own, so hits, misses and
concurrent writes of one key all happen.  Each compile is checked against
eager (outputs, and gradients for the training graph).

Faults, in the workers (each store file-system call fails with
``--probability``, for paths under the store only):

``readonly``  writes fail with EROFS
``eacces``    reads and writes fail with EACCES
``enospc``    an entry's bytes go to /dev/full (ENOSPC)
``vanish``    an entry file is deleted between listing and reading

and from the parent:

``corrupt``   before each round and once while it runs, bytes of most entry
              files are flipped or the file is cut short (in place)
``kill``      in each round one worker is killed with SIGKILL at a random moment
``delete``    in each round the store is deleted while the workers run

Every worker counts the payloads it unpickled that it had not verified: bytes
read from the store that reach ``pickle.loads`` without ``verify_entry``
having accepted them (a spy on both).  The goal for that column, for failed
compiles and for wrong results is 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from torch_aotcache.store import layout  # noqa: E402  (torch-free: the store's paths)
WORKER_FAULTS = ("readonly", "eacces", "enospc", "vanish")
PARENT_FAULTS = ("corrupt", "kill", "delete")
ALL_FAULTS = ("none",) + WORKER_FAULTS + PARENT_FAULTS


# ---------------------------------------------------------------------------
# Worker
# ---------------------------------------------------------------------------


_WORKER_CONTEXTS = contextlib.ExitStack()


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch_aotcache  # noqa: F401 - installs the cache
    from torch._dynamo.utils import counters

    # Shared with test/test_faults.py; this file's folder is on sys.path.
    from fault_injection import disk_fault, spy_unverified_unpickling

    rng = random.Random(spec["seed"])
    # Both stay on for the life of this worker: the stack is kept (a context
    # manager dropped after __enter__ would be collected, undoing its patches).
    stack = _WORKER_CONTEXTS
    if spec["fault"] in WORKER_FAULTS:
        stack.enter_context(disk_fault(spec["fault"], spec["probability"], rng))
    # Payloads read from the store that reached pickle.loads unverified.
    unverified_payloads = stack.enter_context(spy_unverified_unpickling())

    def chain(depth: int) -> Any:
        def fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            for _ in range(depth):  # unrolled by Dynamo: one graph per depth
                x = x @ w
            return x.t()

        return fn

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g)
    sq = torch.linalg.qr(torch.randn(3, 3, generator=g))[0]  # orthogonal: chains stay bounded
    # (name, function, its first input)
    plan: list[tuple[str, Any, torch.Tensor]] = [("shared", chain(1), x), ("train", None, x), ("shared", chain(2), x)]
    for i in range(max(0, spec["compiles"] - len(plan))):
        k = spec["own_base"] + i  # unique to this process and round: new keys
        plan.append(("own", chain(1 + k % 4), torch.randn(5 + k, 3, generator=g)))
    plan = plan[: spec["compiles"]]

    compiles = failed = wrong = 0
    errors: list[str] = []
    for name, fn, x in plan:
        torch._dynamo.reset()
        # Loaded modules are forgotten too, where Inductor's code cache was
        # imported at all (a front-door hit does not import it).
        codecache = sys.modules.get("torch._inductor.codecache")
        if codecache is not None:
            codecache.PyCodeCache.cache_clear(purge=False)
        compiles += 1
        try:
            if name == "train":
                w1 = sq.clone().requires_grad_(True)
                w2 = sq.clone().requires_grad_(True)
                step = lambda w: (x @ w).t()  # noqa: E731
                out = torch.compile(step)(w1)
                out.backward(torch.ones_like(out))
                ref = step(w2)
                ref.backward(torch.ones_like(ref))
                ok = torch.allclose(out, ref) and torch.allclose(w1.grad, w2.grad)
            else:
                ok = torch.allclose(torch.compile(fn)(x, sq), fn(x, sq))
            if not ok:
                wrong += 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            failed += 1
            errors.append(f"{name}: {type(e).__name__}: {e}")
    return {
        "compiles": compiles,
        "failed": failed,
        "wrong": wrong,
        "unverified": len(unverified_payloads),
        "errors": errors[:3],
        "counters": {k: v for k, v in counters["torch_aotcache"].items() if k != "post_compile_ns"},
        "aot": {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")},
    }


# ---------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------


def corrupt_store(store: str, rng: random.Random) -> int:
    hit = 0
    for dirpath, _dirs, files in os.walk(store):
        for name in files:
            if not name.endswith(layout.ENTRY_SUFFIX) or rng.random() < 0.3:
                continue
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    data = bytearray(f.read())
            except FileNotFoundError:  # replaced or quarantined meanwhile
                continue
            if not data:
                continue
            if rng.random() < 0.3:
                data = data[: rng.randrange(len(data))]
            else:
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            with open(path, "wb") as f:
                f.write(bytes(data))
            hit += 1
    return hit


def run_kind(kind: str, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    row = {"fault": kind, "processes": 0, "compiles": 0, "failed": 0, "wrong": 0, "unverified": 0,
           "killed": 0, "corrupted": 0, "crashed": 0, "hits": 0, "store_faults": 0, "vanished": 0,
           "rejected": 0, "errors": []}
    with tempfile.TemporaryDirectory(prefix=f"soak-{kind}-") as tmp:
        cache = os.path.join(tmp, "cache")
        env = dict(os.environ)
        env.pop("TORCH_AOTCACHE_DISABLE", None)
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
        env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
        if args.signing_key:
            env["TORCH_AOTCACHE_SIGNING_KEY"] = args.signing_key
        store = layout.store_root(cache)
        for rnd in range(args.rounds):
            if kind == "corrupt":
                row["corrupted"] += corrupt_store(store, rng)
            procs = []
            for i in range(args.procs):
                spec = {
                    "fault": kind, "probability": args.probability, "compiles": args.compiles,
                    "seed": rng.randrange(1 << 30), "own_base": (rnd * args.procs + i) * args.compiles,
                }
                procs.append(subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                    env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                ))
            row["processes"] += len(procs)
            victim = rng.randrange(len(procs)) if kind == "kill" else None
            if kind in ("kill", "delete", "corrupt"):
                time.sleep(rng.uniform(3.0, 10.0))  # imports take a few seconds
                if kind == "corrupt":
                    row["corrupted"] += corrupt_store(store, rng)
                if kind == "kill" and procs[victim].poll() is None:
                    procs[victim].send_signal(signal.SIGKILL)
                    row["killed"] += 1
                if kind == "delete":
                    shutil.rmtree(store, ignore_errors=True)
            for i, p in enumerate(procs):
                out, err = p.communicate(timeout=args.timeout)
                if i == victim and p.returncode == -signal.SIGKILL:
                    continue
                if p.returncode != 0:
                    row["crashed"] += 1
                    row["errors"].append(err[-500:])
                    continue
                res = json.loads(out.strip().splitlines()[-1])
                row["compiles"] += res["compiles"]
                row["failed"] += res["failed"]
                row["wrong"] += res["wrong"]
                row["unverified"] += res["unverified"]
                row["hits"] += res["aot"].get("autograd_cache_hit", 0)
                row["store_faults"] += sum(v for k, v in res["counters"].items() if k.startswith("store_"))
                row["vanished"] += res["counters"].get("entry_vanished", 0)
                row["rejected"] += res["counters"].get("entry_rejected", 0)
                row["errors"].extend(res["errors"])
    return row


COLUMNS = [
    ("fault", "fault kind"), ("processes", "processes"), ("compiles", "compiles"),
    ("failed", "compiles failed"), ("wrong", "wrong results"), ("unverified", "unverified payloads unpickled"),
    ("hits", "hits"), ("store_faults", "store faults counted"), ("vanished", "files vanished"),
    ("rejected", "entries refused"),
    ("killed", "killed"), ("corrupted", "files corrupted"), ("crashed", "crashed"),
]


def table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|"
    body = ["| " + " | ".join(str(r[k]) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule] + body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--procs", type=int, default=4, help="processes per round (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per fault kind (default 2)")
    parser.add_argument("--compiles", type=int, default=4, help="compiles per process (default 4)")
    parser.add_argument("--faults", default=",".join(ALL_FAULTS),
                        help="comma-separated fault kinds (default: all of %s)" % ",".join(ALL_FAULTS))
    parser.add_argument("--probability", type=float, default=0.5,
                        help="chance that a store call fails, for worker faults (default 0.5)")
    parser.add_argument("--signing-key", help="sign and verify entries with this key")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per worker")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = set(kinds) - set(ALL_FAULTS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}")
    rng = random.Random(args.seed)
    rows = []
    start = time.monotonic()
    for kind in kinds:
        t = time.monotonic()
        rows.append(run_kind(kind, args, rng))
        print(f"# {kind}: {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"python {platform.python_version()}; {args.procs} processes x {args.rounds} rounds x "
          f"{args.compiles} compiles per fault kind; signing {'on' if args.signing_key else 'off'}; "
          f"{time.monotonic() - start:.0f} s")
    print(table(rows))
    for r in rows:
        for e in r["errors"][:3]:
            print(f"  {r['fault']}: {e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = sum(r["failed"] + r["wrong"] + r["unverified"] + r["crashed"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
