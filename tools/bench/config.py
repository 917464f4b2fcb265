"""Paths, model sizes and targets of the warm-start benchmark, and the settings of a run."""

from __future__ import annotations

import dataclasses
import os


# This file is tools/bench/config.py.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Every worker runs as ``python tools/bench_warmstart.py --worker SPEC``.
ENTRY_POINT = os.path.join(REPO_ROOT, "tools", "bench_warmstart.py")
ALL_MODELS = ("mlp", "encoder", "conv", "bert", "gpt2")
# Models built from `transformers` configs (no weights); skipped without it
# (pip install -e ".[bench]").
TRANSFORMERS_MODELS = ("bert", "gpt2")

# Model sizes: the full run, and --quick's (smallest that still compiles a real graph).
FULL_SIZES: dict[str, dict[str, int]] = {
    "mlp": {"width": 256, "batch": 32, "layers": 8},
    "encoder": {"d_model": 128, "heads": 4, "layers": 4, "seq": 32, "batch": 8},
    "conv": {"batch": 8},
    "bert": {"layers": 4, "hidden": 256, "heads": 4, "seq": 32, "batch": 8},
    "gpt2": {"layers": 4, "hidden": 256, "heads": 4, "seq": 32, "batch": 8},
}
QUICK_SIZES: dict[str, dict[str, int]] = {
    "mlp": {"width": 16, "batch": 4, "layers": 8},
}

# Targets of the issue (medians of one run).
TARGET_KEY_RATIO = 0.10
TARGET_OVERHEAD_RATIO = 0.25
TARGET_MISS_PCT = 2.0
TARGET_LOOKUP_MS = 5.0
TARGET_REMOTE_MS = 50.0
# A whole warm process hitting an object store from an empty cache dir, against
# one hitting its local store (issue target: within 0.3 s).
TARGET_OBJECT_STORE_PROCESS_MS = 300.0
# Whole warm process above the Dynamo-only floor: ours/upstream, and (the
# stretch) seconds.
TARGET_PROCESS_RATIO = 0.25
TARGET_PROCESS_ABOVE_FLOOR_S = 0.2
# Whole warm process above the eager floor (the same program without
# torch.compile): what is left once Dynamo's tracing is skipped too.
TARGET_PROCESS_ABOVE_EAGER_S = 0.5
# Signing key of the remote runs (a throwaway; nothing outside the run trusts it).
BENCH_SIGNING_KEY = "bench-warmstart-throwaway-key"
# A run during which other processes kept less than this many cores busy is
# "quiet"; quiet-only medians are reported beside the medians of all runs.
QUIET_LOAD_CORES = 0.25


@dataclasses.dataclass
class Settings:
    models: list[str]
    repeats: int
    cold_repeats: int
    device: str
    quick: bool
    node_counts: list[int]
    key_reps: int
    key_processes: int
    lookup_sizes: list[int]
    lookup_reps: int
    sizes: dict[str, dict[str, int]]
    settle_s: float = 0.0
    remote: bool = False
    only_remote: bool = False
    # Also a warm start from an object store (an S3 API server on loopback).
    object_store: bool = False
    # Also measure torch_aotcache with its Dynamo frame cache on (mode "frames").
    frames: bool = False
