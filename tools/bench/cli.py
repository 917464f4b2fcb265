"""The command line of ``tools/bench_warmstart.py``: a whole run, ``--render`` or one ``--worker``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from .config import ALL_MODELS, FULL_SIZES, QUICK_SIZES, REPO_ROOT, TRANSFORMERS_MODELS, Settings
from .machine import _loadavg, machine_description
from .measure import Driver
from .report import write_outputs
from .worker import run_worker

# The first paragraph of tools/bench_warmstart.py's docstring, which says the rest.
DESCRIPTION = "Warm-start benchmark: torch_aotcache against torch's own AOTAutograd cache."


def settings_from(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    notes: list[str] = []
    if args.quick:
        models = ["mlp"]
        sizes = QUICK_SIZES
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        sizes = FULL_SIZES
    for m in models:
        if m not in ALL_MODELS:
            raise SystemExit(f"unknown model {m!r}; choose from {', '.join(ALL_MODELS)}")
    if importlib.util.find_spec("transformers") is None:
        for m in TRANSFORMERS_MODELS:
            if m in models:
                models.remove(m)
                notes.append(f"{m} skipped: `transformers` is not importable here (pip install -e '.[bench]')")
    repeats = 1 if args.quick and args.repeats is None else (args.repeats or 3)
    remote = _remote_wanted(args, notes)
    cold = args.cold_repeats or (1 if args.quick else 2)
    return Settings(
        models=models, repeats=repeats, cold_repeats=cold, device=args.device, quick=args.quick,
        node_counts=[40, 400] if args.quick else [40, 400, 1600],
        key_reps=3 if args.quick else 5,
        key_processes=1 if args.quick else max(1, repeats),
        lookup_sizes=[10, 200] if args.quick else [10, 10_000],
        lookup_reps=50 if args.quick else 200,
        sizes=sizes,
        settle_s=args.settle,
        remote=remote,
        only_remote=bool(args.only_remote),
        object_store=_object_store_wanted(args, notes),
        frames=bool(args.frames),
    ), notes


def _remote_wanted(args: argparse.Namespace, notes: list[str]) -> bool:
    """Whether the Redis runs happen: asked for, or by default where redis-server and redis-py are there."""
    remote = args.remote
    if remote is None or args.only_remote:
        remote = shutil.which("redis-server") is not None
    if remote:
        try:
            import redis  # noqa: F401
        except ImportError:
            remote = False
            notes.append("remote (Redis) runs skipped: redis-py is not importable here")
    elif args.remote is None or args.only_remote:
        notes.append("remote (Redis) runs skipped: no redis-server on PATH")
    if args.only_remote and not remote:
        raise SystemExit("--only-remote needs redis-server on PATH and redis-py")
    return remote


def _object_store_wanted(args: argparse.Namespace, notes: list[str]) -> bool:
    """Whether the object-store runs happen: with --remote-object-store, where obstore and moto are there."""
    if not args.object_store:
        return False
    missing = [m for m in ("obstore", "moto", "zstandard") if importlib.util.find_spec(m) is None]
    if missing:
        notes.append(f"object-store runs skipped: {', '.join(missing)} not importable here (pip install -e '.[test]')")
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="smallest settings (MLP only, tiny)")
    parser.add_argument("--models", default=",".join(ALL_MODELS))
    parser.add_argument("--repeats", type=int, default=None, help="warm processes per mode (default 3; quick 1)")
    parser.add_argument("--cold-repeats", type=int, default=None, help="cold processes per mode (default 2; quick 1)")
    parser.add_argument("--settle", type=float, default=0.0, metavar="S",
                        help="before each worker, wait up to S seconds for other load to drop below 1/4 core")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "bench_out"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--remote", dest="remote", action="store_true", default=None,
                        help="also measure a warm start from Redis (default: on when redis-server is on PATH)")
    parser.add_argument("--no-remote", dest="remote", action="store_false", help="skip the Redis runs")
    parser.add_argument("--only-remote", action="store_true",
                        help="only the Redis runs and the local ours cold/warm they are compared with")
    parser.add_argument("--remote-object-store", dest="object_store", action="store_true",
                        help="also measure a warm start from an object store (moto's S3 API server on loopback), "
                             "beside the Redis runs")
    parser.add_argument("--frames", action="store_true",
                        help="also measure torch_aotcache with its Dynamo frame cache on (TORCH_AOTCACHE_DYNAMO=1; "
                             "torch 2.15 and later)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true",
                        help="only redo results.md and warmstart.png from --out's results.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return run_worker(args.worker, args.result)
    if args.render:
        out_dir = os.path.abspath(args.out)
        with open(os.path.join(out_dir, "results.json"), encoding="utf-8") as f:
            write_outputs(json.load(f), out_dir)
        return 0
    return run_benchmark(args)


def run_benchmark(args: argparse.Namespace) -> int:
    """Every measurement the settings ask for, then the outputs; 1 if a worker failed."""
    settings, notes = settings_from(args)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    machine = machine_description()
    driver = Driver(settings, out_dir)
    try:
        driver.run_models()
        key_records = [] if settings.only_remote else driver.run_keys()
        lookup_record = {} if settings.only_remote else driver.run_lookup()
    finally:
        driver.cleanup()
    machine["loadavg_end"] = _loadavg()
    for record in driver.runs + key_records:
        res = record.get("result", {})
        machine.setdefault("torch_version", res.get("torch_version"))
        machine.setdefault("device_name", res.get("device_name"))
    data: dict[str, Any] = {
        "machine": machine,
        "settings": dataclasses.asdict(settings),
        "notes": notes,
        "failures": driver.failures,
        "runs": driver.runs,
        "key_runs": key_records,
        "lookup_run": lookup_record,
        "remote_runs": driver.remote_info,
        "total_s": time.perf_counter() - t0,
    }
    write_outputs(data, out_dir)
    print(f"(total {data['total_s']:.0f} s; outputs in {out_dir})", file=sys.stderr)
    return 1 if driver.failures else 0
