"""
Warm-start benchmark: torch_aotcache against torch's own AOTAutograd cache.

Usage::

    python tools/bench_warmstart.py [--quick] [--models mlp,encoder,conv,bert,gpt2]
        [--repeats N] [--cold-repeats N] [--settle S] [--out DIR] [--device cpu|cuda]
        [--no-remote] [--only-remote]
    python tools/bench_warmstart.py --render --out DIR   # redo the report from DIR/results.json

Every measurement runs in a fresh interpreter (``python tools/bench_warmstart.py
--worker SPEC``), so nothing in memory is shared between runs; only the
Inductor cache dir (``TORCHINDUCTOR_CACHE_DIR``) carries state from a cold
process to the warm ones after it.  The modes:

``off``       caches off (``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``): the cold compile.
``upstream``  torch's own cache; torch_aotcache is not imported
              (``TORCH_AOTCACHE_DISABLE=1`` as well, for safety).
``ours``      ``import torch_aotcache``.
``floor``     ``torch.compile(model, backend="eager")``: Dynamo's tracing and eager
              execution, what a perfect cache would leave (a warm step can dip a
              little below it: compiled kernels run faster than eager ones).
``floor_inductor``  the same, after ``import torch._inductor.compile_fx``: the
              floor of a hit that goes through Inductor's compile_fx.

The headline is the whole process, start to exit, timed from outside the
worker (``process_wall_s``): what the user waits for, import and exit
included.  The first step, timed inside, follows it.

For ``upstream`` and ``ours`` a cold process fills an empty cache dir (its
first step is the cost of a miss), then ``--repeats`` warm processes share that
dir; the warm first step is reported as a median.  The "first step" is the
first compiled forward plus ``loss.backward()`` in training mode, timed inside
the worker after the model and its (seeded) inputs exist.  Inside each worker
the key function (the module global
``torch._functorch._aot_autograd.autograd_cache.autograd_cache_key``, looked up
by ``try_load`` at call time) and ``AOTAutogradCache.try_load`` are wrapped
with timers, so a hit splits into key computation and the rest of the hit path.

Remote (Redis) warm start (``--remote``, on by default when ``redis-server``
is on PATH; ``--no-remote`` skips it): per model, a throwaway loopback
redis-server, one cold ``ours`` process with ``TORCH_AOTCACHE_REDIS_URL``, a
signing key and ``TORCH_AOTCACHE_REMOTE_SYNC=1`` filling Redis, then
``--repeats`` warm processes, each with a new *empty* cache dir (no local
entry, no Inductor artifact) and the same Redis and key: their first step is
compared with the local-hit warm ``ours`` step of the same run.  The report
also gives the remote counters of each warm process and the compression
ratio (local ``.entry`` bytes written by the cold process / Redis value bytes).
``--only-remote`` runs just that and the local ``ours`` cold/warm it is
compared with (no off/upstream/floor, no key or lookup micro-benchmarks).

Two micro-benchmarks complete the picture: key computation on synthetic FX
graphs of growing size (upstream's key function and ours, each in its own
process, with a real ``AOTConfig`` captured from a real compile), and a lookup
in a store of 10,000 entries.

Outputs, under ``--out`` (default ``bench_out/``): ``results.json`` (every
raw number and the machine), ``results.md`` (the tables, printed at the end)
and ``warmstart.png`` (where a warm start spends its time; needs matplotlib).
No timing is ever asserted: the numbers are reported, not judged, except in
the "targets" table, which only says met or missed.

Note [Noise from other load]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~
On a small shared machine another process can double a wall time.  For every
worker the driver reads ``/proc/stat`` before and after and subtracts the
worker's own CPU time (``RUSAGE_CHILDREN``): what is left is how many cores
other processes kept busy meanwhile (``other_load_cores``).  The report gives
medians of all runs (what the targets are judged on) and, beside them, medians
of the quiet runs only (other load under ``QUIET_LOAD_CORES``).  ``--settle S``
waits up to S seconds before each worker for the machine to go quiet.  CPU
time is recorded too, but on a VM it inflates under contention as wall time
does.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
# Whole warm process above the Dynamo-only floor: ours/upstream, and (the
# stretch) seconds.
TARGET_PROCESS_RATIO = 0.25
TARGET_PROCESS_ABOVE_FLOOR_S = 0.2
# Signing key of the remote runs (a throwaway; nothing outside the run trusts it).
BENCH_SIGNING_KEY = "bench-warmstart-throwaway-key"
# A run during which other processes kept less than this many cores busy is
# "quiet"; quiet-only medians are reported beside the medians of all runs.
QUIET_LOAD_CORES = 0.25


# ---------------------------------------------------------------------------
# Worker side (runs in a fresh interpreter; imports torch)
# ---------------------------------------------------------------------------


def _loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _cpu_s() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _children_cpu_s() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def _machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return (total - idle) / tick, total / tick


def _device_name(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def build_model(name: str, size: dict[str, int], device: str) -> tuple[Any, tuple[Any, ...]]:
    """A seeded model in training mode and its inputs."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "mlp":
        w = size["width"]
        layers: list[nn.Module] = []
        for _ in range(size["layers"]):
            layers += [nn.Linear(w, w), nn.ReLU()]
        model: nn.Module = nn.Sequential(*layers)
        inputs: tuple[Any, ...] = (torch.randn(size["batch"], w),)
    elif name == "encoder":
        layer = nn.TransformerEncoderLayer(
            d_model=size["d_model"],
            nhead=size["heads"],
            dim_feedforward=4 * size["d_model"],
            batch_first=True,
        )
        model = nn.TransformerEncoder(layer, num_layers=size["layers"], enable_nested_tensor=False)
        inputs = (torch.randn(size["batch"], size["seq"], size["d_model"]),)
    elif name == "conv":
        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
        )
        inputs = (torch.randn(size["batch"], 3, 32, 32),)
    elif name == "bert":
        from transformers import BertConfig, BertModel

        config = BertConfig(
            num_hidden_layers=size["layers"],
            hidden_size=size["hidden"],
            num_attention_heads=size["heads"],
            intermediate_size=4 * size["hidden"],
        )
        model = BertModel(config)
        inputs = (torch.randint(0, config.vocab_size, (size["batch"], size["seq"])),)
    elif name == "gpt2":
        from transformers import GPT2Config, GPT2Model

        gpt_config = GPT2Config(
            n_layer=size["layers"],
            n_embd=size["hidden"],
            n_head=size["heads"],
            n_positions=max(64, size["seq"]),
        )
        model = GPT2Model(gpt_config)
        inputs = (torch.randint(0, gpt_config.vocab_size, (size["batch"], size["seq"])),)
    else:
        raise ValueError(f"unknown model {name!r}")
    model = model.to(device).train()
    return model, tuple(t.to(device) for t in inputs)


def _loss(out: Any) -> Any:
    if hasattr(out, "last_hidden_state"):
        out = out.last_hidden_state
    return out.float().pow(2).mean()


class CacheTimers:
    """Timing wrappers around the key function and ``AOTAutogradCache``'s entry points.

    Installed over whatever is there when ``install()`` runs (upstream's
    functions, or torch_aotcache's once it is imported).  The key function is
    the module global that ``try_load`` reads at call time; ``try_load``,
    ``make_entry`` and ``save`` are staticmethods on the class (their callers
    look them up there), read with ``vars`` and re-wrapped as staticmethods.
    ``make_entry`` and ``save`` run only on a miss: with the key and the failed
    lookup they are all a miss costs in cache code.
    """

    def __init__(self) -> None:
        self.key_calls: list[dict[str, Any]] = []
        self.try_load_calls: list[dict[str, float]] = []
        self.miss_path_calls: list[dict[str, Any]] = []
        self._depth = 0
        self._key_in_current = 0.0

    def install(self) -> None:
        import torch._functorch._aot_autograd.autograd_cache as ac

        orig_key = ac.autograd_cache_key
        orig_try_load = vars(ac.AOTAutogradCache)["try_load"].__func__

        def timed_key(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return orig_key(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                self.key_calls.append({"s": dt, "in_try_load": self._depth > 0})
                if self._depth > 0:
                    self._key_in_current += dt

        def timed_try_load(*args: Any, **kwargs: Any) -> Any:
            return timed_lookup(orig_try_load, *args, **kwargs)

        def timed_lookup(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self._depth += 1
            self._key_in_current = 0.0
            t = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                self._depth -= 1
                self.try_load_calls.append({"s": dt, "key_s": self._key_in_current})

        timed_key.__wrapped__ = orig_key  # type: ignore[attr-defined]
        timed_try_load.__wrapped__ = orig_try_load  # type: ignore[attr-defined]
        ac.autograd_cache_key = timed_key
        ac.AOTAutogradCache.try_load = staticmethod(timed_try_load)  # type: ignore[method-assign]
        if "torch_aotcache" in sys.modules:
            # A hit through torch_aotcache's front door looks up here instead
            # of try_load (Note [Front door] in inductor/front_door.py).
            from torch_aotcache import autograd_cache as ours

            orig_front = ours.load_if_stored

            def timed_front(*args: Any, **kwargs: Any) -> Any:
                return timed_lookup(orig_front, *args, **kwargs)

            timed_front.__wrapped__ = orig_front  # type: ignore[attr-defined]
            ours.load_if_stored = timed_front
        for name in ("make_entry", "save"):
            raw = vars(ac.AOTAutogradCache).get(name)
            if isinstance(raw, staticmethod):
                setattr(ac.AOTAutogradCache, name, staticmethod(self._timed(name, raw.__func__)))

    def _timed(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.miss_path_calls.append({"name": name, "s": time.perf_counter() - t})

        timed.__wrapped__ = func  # type: ignore[attr-defined]
        return timed

    def summary(self) -> dict[str, Any]:
        try_load_s = sum(c["s"] for c in self.try_load_calls)
        key_s = sum(c["key_s"] for c in self.try_load_calls)
        return {
            "key_calls": self.key_calls,
            "try_load_calls": self.try_load_calls,
            "first_key_s": self.key_calls[0]["s"] if self.key_calls else None,
            "later_keys_s": [c["s"] for c in self.key_calls[1:]],
            "try_load_s": try_load_s,
            "key_in_try_load_s": key_s,
            "rest_of_try_load_s": try_load_s - key_s,
            "miss_path_calls": self.miss_path_calls,
            "make_entry_s": sum(c["s"] for c in self.miss_path_calls if c["name"] == "make_entry"),
            "save_s": sum(c["s"] for c in self.miss_path_calls if c["name"] == "save"),
            # Everything cache code took in this process (key, lookup, entry, save).
            "cache_code_s": try_load_s + sum(c["s"] for c in self.miss_path_calls),
        }


def _counters() -> dict[str, dict[str, int]]:
    from torch._dynamo.utils import counters

    wanted = ("aot_autograd", "inductor", "torch_aotcache", "graph_break")
    out: dict[str, dict[str, int]] = {}
    for group in wanted:
        values = dict(counters.get(group, {}))
        if group == "inductor":
            values = {k: v for k, v in values.items() if "cache" in k}
        if group == "graph_break":
            values = {"total": sum(values.values())}
        out[group] = {str(k): int(v) for k, v in values.items()}
    return out


def _import_for_mode(mode: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch_version": torch.__version__}
    if mode == "ours":
        import torch_aotcache

        info["torch_aotcache_installed"] = torch_aotcache.is_installed()
        # The copy measured: this checkout's (PYTHONPATH), not another editable install.
        info["torch_aotcache_file"] = torch_aotcache.__file__
    info["torch_aotcache_imported"] = "torch_aotcache" in sys.modules
    if mode in ("upstream", "off", "floor", "floor_inductor") and info["torch_aotcache_imported"]:
        raise RuntimeError(f"torch_aotcache was imported in a {mode!r} worker")
    return info


def worker_step(spec: dict[str, Any]) -> dict[str, Any]:
    """One first step of one model in one mode."""
    started_at = time.time()  # wall clock: the driver compares it with its own
    t_start = time.perf_counter()
    mode, device = spec["mode"], spec["device"]
    info = _import_for_mode(mode)
    import torch

    if mode == "floor_inductor":
        # The second floor: Dynamo plus importing Inductor's compiler, which
        # a hit that goes through compile_fx pays whatever the cache does.
        import torch._inductor.compile_fx  # noqa: F401

    timers = CacheTimers()
    timers.install()
    info["import_s"] = time.perf_counter() - t_start
    info["started_at"] = started_at
    info["loadavg_before"] = _loadavg()
    t_setup = time.perf_counter()
    model, inputs = build_model(spec["model"], spec["size"], device)
    compiled = torch.compile(model, backend="eager" if mode.startswith("floor") else "inductor")
    _sync(device)
    info["setup_s"] = time.perf_counter() - t_setup
    cpu = _cpu_s()
    t = time.perf_counter()
    out = compiled(*inputs)
    _loss(out).backward()
    _sync(device)
    info["step_s"] = time.perf_counter() - t
    info["step_ended_at"] = time.time()
    # CPU time of the step (this process and the subprocesses it waited for;
    # not Inductor's long-lived compile workers): less sensitive than wall time
    # to other load on the machine.
    info["step_cpu_s"] = _cpu_s() - cpu
    info["loadavg_after"] = _loadavg()
    info["counters"] = _counters()
    info["device_name"] = _device_name(device)
    info.update(timers.summary())
    return info


def build_chain_graph(n_ops: int, example: Any) -> Any:
    """A Dynamo-like GraphModule: a chain of ``n_ops`` pointwise ops on one input.

    Every node carries ``meta["example_value"]`` as Dynamo's do.
    """
    import operator

    import torch

    graph = torch.fx.Graph()
    x = graph.placeholder("l_x_")
    value = example.detach()
    x.meta["example_value"] = value
    cur = x
    with torch.no_grad():
        for i in range(n_ops):
            kind = i % 3
            if kind == 0:
                cur = graph.call_function(torch.sin, (cur,))
                value = torch.sin(value)
            elif kind == 1:
                cur = graph.call_function(torch.cos, (cur,))
                value = torch.cos(value)
            else:
                const = float(i % 7) + 0.5
                cur = graph.call_function(operator.add, (cur, const))
                value = value + const
            cur.meta["example_value"] = value
    graph.output((cur,))
    return torch.fx.GraphModule(torch.nn.Module(), graph)


class _Captured(Exception):
    pass


def worker_keys(spec: dict[str, Any]) -> dict[str, Any]:
    """Key computation: the first key of the process, then synthetic graphs by size.

    The first call is a real one: a tiny function is compiled with the key
    function wrapped to time the call and capture its arguments (a real
    ``AOTConfig`` and ``CompilerConfigExtra``), then abort the compile.  The
    captured arguments are reused for the synthetic graphs.
    """
    t_start = time.perf_counter()
    mode, device = spec["mode"], spec["device"]
    info = _import_for_mode(mode)
    import torch
    import torch._functorch._aot_autograd.autograd_cache as ac
    import torch._functorch.config as functorch_config

    info["import_s"] = time.perf_counter() - t_start
    info["loadavg_before"] = _loadavg()
    key_fn: Callable[..., Any]
    if mode == "ours":
        import torch_aotcache
        from torch_aotcache import autograd_cache as ours

        # Installed lazily, at the first compile (Note [Lazy install]); this
        # worker times the key function itself, so it installs now.
        torch_aotcache.install()
        key_fn = ours.autograd_cache_key
        if ac.autograd_cache_key is not key_fn:
            raise RuntimeError("torch_aotcache's key function is not installed")
    else:
        key_fn = ac.autograd_cache_key
    captured: dict[str, Any] = {}

    def capture(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            key_fn(*args, **kwargs)
        finally:
            captured["first_key_s"] = time.perf_counter() - t
        captured["args"], captured["kwargs"] = args, kwargs
        # Upstream reads the ShapeEnv from the tracing context: keep it.
        captured["tracing_context"] = torch._guards.TracingContext.try_get()
        raise _Captured

    def tiny(x: torch.Tensor) -> torch.Tensor:
        return (x.sin() + 1.0).sum()

    ac.autograd_cache_key = capture
    x = torch.randn(8, device=device, requires_grad=True)
    try:
        with functorch_config.patch(strict_autograd_cache=True):
            torch.compile(tiny)(x)
    except Exception as e:  # noqa: BLE001 - _Captured arrives wrapped by Dynamo
        if "args" not in captured:
            raise RuntimeError("could not capture the key function's arguments") from e
    finally:
        ac.autograd_cache_key = key_fn
    info["first_key_s"] = captured["first_key_s"]
    mod, args, aot_config, extra = captured["args"][:4]
    info["first_key_graph_nodes"] = len(getattr(mod, "gm", mod).graph.nodes)
    example = args[0]
    by_size: dict[str, Any] = {}
    for n_ops in spec["node_counts"]:
        times: list[float] = []
        error = None
        n_nodes = 0
        for _ in range(spec["reps"]):
            gm = build_chain_graph(n_ops, example)  # fresh: nothing memoized by identity
            n_nodes = len(gm.graph.nodes)
            t = time.perf_counter()
            try:
                with torch._guards.tracing(captured["tracing_context"]):
                    key_fn(gm, args, aot_config, extra)
            except Exception as e:  # noqa: BLE001 - reported, the run goes on
                error = f"{type(e).__name__}: {e}"
                break
            times.append(time.perf_counter() - t)
        by_size[str(n_ops)] = {"nodes": n_nodes, "times_s": times, "error": error}
    info["by_size"] = by_size
    info["loadavg_after"] = _loadavg()
    info["device_name"] = _device_name(device)
    return info


def worker_lookup(spec: dict[str, Any]) -> dict[str, Any]:
    """``find_entry`` of a key with a real entry, in stores of different sizes."""
    import pickle
    import random

    import torch

    import torch_aotcache  # noqa: F401  (installs itself)
    from torch_aotcache import autograd_cache, schemas
    from torch_aotcache.key import fingerprint
    from torch_aotcache.store import local as storage

    # The fingerprint thread started by the import persists its result under
    # the cache dir current when it finishes: let it finish before the dirs
    # below come and go.
    fingerprint.torch_fingerprint.get()
    rng = random.Random(0)
    results: dict[str, Any] = {}
    for n in spec["sizes"]:
        root = tempfile.mkdtemp(prefix=f"bench-lookup-{n}-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = root
        store = storage.LocalStore()
        t = time.perf_counter()
        for _ in range(n - 1):
            key = autograd_cache.KEY_PREFIX + "%040x" % rng.getrandbits(160)
            store.put(key, "fake", b"not an entry" * 8)
        payload = pickle.dumps({"harmless": list(range(10))})
        real_key = autograd_cache.KEY_PREFIX + "%040x" % rng.getrandbits(160)
        header = schemas.make_header(
            key=real_key, payload=payload, torch_version=torch.__version__,
            created_ns=time.time_ns(), forward_cost_ns=0, backward_cost_ns=0,
            guards_expr=None, mode="bundled", components={},
        )
        store.put(real_key, header.entry_id, schemas.encode_entry(header, payload))
        populate_s = time.perf_counter() - t
        times = []
        for _ in range(spec["reps"]):
            t = time.perf_counter()
            found = autograd_cache.find_entry(real_key, True, [], {})
            times.append(time.perf_counter() - t)
            if found is None:
                raise RuntimeError("the real entry was not found")
        results[str(n)] = {
            "entries": n,
            "populate_s": populate_s,
            "first_ms": times[0] * 1e3,
            "median_ms": statistics.median(times) * 1e3,
        }
        shutil.rmtree(root, ignore_errors=True)
    return {"by_entries": results, "torch_version": torch.__version__}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "step": worker_step,
    "keys": worker_keys,
    "lookup": worker_lookup,
}


def run_worker(spec_json: str, result_path: str) -> int:
    spec = json.loads(spec_json)
    result = WORKERS[spec["kind"]](spec)
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f, default=str)
    return 0


# ---------------------------------------------------------------------------
# Driver side (never imports torch: every number comes from a fresh worker)
# ---------------------------------------------------------------------------


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


REMOTE_ENV = (
    "TORCH_AOTCACHE_REDIS_URL", "TORCHINDUCTOR_REDIS_URL", "TORCH_AOTCACHE_SIGNING_KEY",
    "TORCH_AOTCACHE_SIGNING_KEY_FILE", "TORCH_AOTCACHE_VERIFY_KEY_FILES",
    "TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE", "TORCH_AOTCACHE_REMOTE_SYNC",
)


def _env_for(mode: str, cache_dir: str, redis_url: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Only the remote runs talk to Redis (and sign): whatever the caller's
    # shell set must not leak into the local measurements.
    for name in ("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "TORCH_AOTCACHE_DISABLE", *REMOTE_ENV):
        env.pop(name, None)
    env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    if redis_url is not None:
        env["TORCH_AOTCACHE_REDIS_URL"] = redis_url
        env["TORCH_AOTCACHE_SIGNING_KEY"] = BENCH_SIGNING_KEY
        env["TORCH_AOTCACHE_REMOTE_SYNC"] = "1"
    if mode != "ours":
        env["TORCH_AOTCACHE_DISABLE"] = "1"
    if mode == "off":
        env["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    return env


def _redis_value_bytes(server: Any) -> dict[str, Any]:
    """Sizes of every value under ``torch_aotcache:*`` (HSTRLEN of each field)."""
    client = server.client()
    try:
        total, fields, keys = 0, 0, 0
        for key in client.scan_iter(match="torch_aotcache:*"):
            keys += 1
            for field in client.hkeys(key):
                fields += 1
                total += int(client.hstrlen(key, field))
        return {"remote_value_bytes": total, "remote_fields": fields, "remote_keys": keys}
    finally:
        client.close()


def _redis_version(server: Any) -> str | None:
    client = server.client()
    try:
        return str(client.info("server").get("redis_version"))
    except Exception:  # noqa: BLE001
        return None
    finally:
        client.close()


class Driver:
    def __init__(self, settings: Settings, out_dir: str) -> None:
        self.settings = settings
        self.out_dir = out_dir
        self.log_dir = os.path.join(out_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.tmp_root = tempfile.mkdtemp(prefix="bench-warmstart-")
        self.runs: list[dict[str, Any]] = []
        self.failures = 0
        self._n = 0
        self.remote_info: list[dict[str, Any]] = []

    def new_cache_dir(self, label: str) -> str:
        self._n += 1
        path = os.path.join(self.tmp_root, f"{self._n:03d}-{label}")
        os.makedirs(path)
        return path

    def worker(self, spec: dict[str, Any], mode: str, cache_dir: str, label: str,
               redis_url: str | None = None) -> dict[str, Any]:
        """Run one worker process; returns its record (result or error)."""
        self._n += 1
        result_path = os.path.join(self.tmp_root, f"result-{self._n:03d}.json")
        log_path = os.path.join(self.log_dir, f"{self._n:03d}-{label}.log")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec), "--result", result_path]
        waited = self.settle()
        # Others may commit while a long run goes on: note the tree each worker ran.
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", "torch_aotcache"))
        busy0, kids0 = _machine_busy(), _children_cpu_s()
        spawned_at = time.time()
        t = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as logf:
            try:
                rc = subprocess.run(
                    cmd, env=_env_for(mode, cache_dir, redis_url), stdout=logf, stderr=subprocess.STDOUT,
                    timeout=1800, cwd=REPO_ROOT,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -9
        wall = time.perf_counter() - t
        exited_at = time.time()
        busy1, kids1 = _machine_busy(), _children_cpu_s()
        record: dict[str, Any] = {
            "label": label, "spec": spec, "mode": mode, "rc": rc,
            "process_wall_s": wall, "process_cpu_s": kids1 - kids0, "settle_wait_s": waited,
            "commit": f"{commit}{'+dirty' if dirty else ''}",
            "log": os.path.relpath(log_path, self.out_dir),
        }
        if busy0 is not None and busy1 is not None and wall > 0:
            # Cores kept busy by everything else on the machine while the
            # worker ran: the noise this measurement suffered.
            record["other_load_cores"] = max(0.0, (busy1[0] - busy0[0]) - (kids1 - kids0)) / wall
        if rc == 0:
            with open(result_path, encoding="utf-8") as f:
                record["result"] = json.load(f)
            res = record["result"]
            if "started_at" in res and "step_ended_at" in res:
                # Before the worker's first line (interpreter start, this
                # module's imports) and after its first step (the rest of
                # the worker, interpreter shutdown, atexit handlers).
                record["startup_s"] = res["started_at"] - spawned_at
                record["after_step_s"] = exited_at - res["step_ended_at"]
        else:
            self.failures += 1
            with open(log_path, encoding="utf-8", errors="replace") as f:
                record["error_tail"] = f.read()[-3000:]
            print(f"  !! {label} failed (rc={rc}); see {log_path}", file=sys.stderr)
        step = record.get("result", {}).get("step_s")
        extra = f" step={step:.3f}s" if isinstance(step, float) else ""
        if "other_load_cores" in record:
            extra += f" (other load {record['other_load_cores']:.2f} cores)"
        print(f"  {label}: {record['process_wall_s']:.1f}s{extra}", file=sys.stderr, flush=True)
        return record

    def settle(self) -> float:
        """With --settle S: wait up to S seconds for the rest of the machine to go quiet."""
        limit = self.settings.settle_s
        start = time.perf_counter()
        while limit > 0 and time.perf_counter() - start < limit:
            b0 = _machine_busy()
            time.sleep(1.0)
            b1 = _machine_busy()
            if b0 is None or b1 is None or (b1[0] - b0[0]) / max(1e-9, b1[1] - b0[1]) * (os.cpu_count() or 1) < 0.25:
                break
        return time.perf_counter() - start

    def step(self, model: str, mode: str, phase: str, cache_dir: str, index: int,
             redis_url: str | None = None) -> dict[str, Any]:
        s = self.settings
        spec = {"kind": "step", "model": model, "mode": mode, "device": s.device, "size": s.sizes[model]}
        record = self.worker(spec, mode, cache_dir, f"{model}-{mode}-{phase}{index}", redis_url)
        record.update(kind="step", model=model, phase=phase, index=index)
        self.runs.append(record)
        return record

    def run_models(self) -> None:
        s = self.settings
        for model in s.models:
            print(f"[{model}]", file=sys.stderr, flush=True)
            warm_dirs: dict[str, str] = {}
            local_modes = ("ours",) if s.only_remote else ("upstream", "ours")
            for c in range(s.cold_repeats):
                if not s.only_remote:
                    self.step(model, "off", "cold", self.new_cache_dir("off"), c)
                for mode in local_modes:
                    d = self.new_cache_dir(f"{model}-{mode}")
                    warm_dirs.setdefault(mode, d)
                    self.step(model, mode, "cold", d, c)
            warm_modes = ([] if s.only_remote else ["floor", "floor_inductor"]) + list(local_modes)
            for r in range(s.repeats):
                # Each round starts with another mode, so no mode always runs
                # first (or last) after the machine has settled.
                shift = r % len(warm_modes)
                for mode in warm_modes[shift:] + warm_modes[:shift]:
                    if mode.startswith("floor"):
                        self.step(model, mode, "floor", self.new_cache_dir("floor"), r)
                    else:
                        self.step(model, mode, "warm", warm_dirs[mode], r)
            if s.remote:
                self.run_remote(model)

    def run_remote(self, model: str) -> None:
        """Cold ``ours`` filling a throwaway Redis, then warm processes from empty cache dirs."""
        s = self.settings
        sys.path.insert(0, os.path.join(REPO_ROOT, "test"))
        try:
            from redis_server import RedisServer  # type: ignore[import-not-found]
        finally:
            sys.path.pop(0)
        server = RedisServer().start()
        info: dict[str, Any] = {"model": model}
        try:
            cold_dir = self.new_cache_dir(f"{model}-remote-cold")
            self.step(model, "ours", "remote_cold", cold_dir, 0, server.url)
            local = 0
            entries_root = os.path.join(cold_dir, "torch_aotcache", "entries")
            for root, _dirs, files in os.walk(entries_root):
                local += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(".entry"))
            info["local_entry_bytes"] = local
            info.update(_redis_value_bytes(server))
            for r in range(s.repeats):
                self.step(model, "ours", "remote_warm", self.new_cache_dir(f"{model}-remote-warm"), r, server.url)
            info["redis_version"] = _redis_version(server)
        except Exception as e:  # noqa: BLE001 - a report, never a crash of the whole run
            info["error"] = f"{type(e).__name__}: {e}"
            self.failures += 1
            print(f"  !! remote run of {model} failed: {info['error']}", file=sys.stderr)
        finally:
            server.close()
        self.remote_info.append(info)

    def run_keys(self) -> list[dict[str, Any]]:
        s = self.settings
        print("[keys]", file=sys.stderr, flush=True)
        out = []
        dirs = {mode: self.new_cache_dir(f"keys-{mode}") for mode in ("upstream", "ours")}
        # Process 0 of each mode is the first ever in its cache dir (ours
        # persists its torch fingerprint there); the later ones are reported.
        for i in range(s.key_processes + 1):
            for mode in ("upstream", "ours"):
                spec = {"kind": "keys", "mode": mode, "device": s.device,
                        "node_counts": s.node_counts, "reps": s.key_reps}
                record = self.worker(spec, mode, dirs[mode], f"keys-{mode}{i}")
                record.update(kind="keys", index=i, primer=(i == 0))
                out.append(record)
        return out

    def run_lookup(self) -> dict[str, Any]:
        s = self.settings
        print("[lookup]", file=sys.stderr, flush=True)
        spec = {"kind": "lookup", "sizes": s.lookup_sizes, "reps": s.lookup_reps, "device": s.device}
        return self.worker(spec, "ours", self.new_cache_dir("lookup"), "lookup")

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp_root, ignore_errors=True)


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def summarize_models(runs: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in models:
        def results(mode: str, phase: str) -> list[dict[str, Any]]:
            return [
                r["result"] for r in runs
                if r.get("kind") == "step" and r["model"] == model and r["mode"] == mode
                and r["phase"] == phase and "result" in r
            ]

        def med(mode: str, phase: str, field: str) -> float | None:
            return _median([res.get(field) for res in results(mode, phase)])

        def quiet(mode: str, phase: str) -> list[float]:
            return [
                r["result"]["step_s"] for r in runs
                if r.get("kind") == "step" and r["model"] == model and r["mode"] == mode
                and r["phase"] == phase and "result" in r
                and r.get("other_load_cores", 1e9) < QUIET_LOAD_CORES
            ]

        m: dict[str, Any] = {
            "cold_off_s": med("off", "cold", "step_s"),
            "cold_upstream_s": med("upstream", "cold", "step_s"),
            "cold_ours_s": med("ours", "cold", "step_s"),
            "warm_upstream_s": med("upstream", "warm", "step_s"),
            "warm_ours_s": med("ours", "warm", "step_s"),
            "floor_s": med("floor", "floor", "step_s"),
            "warm_upstream_all_s": [res["step_s"] for res in results("upstream", "warm")],
            "warm_ours_all_s": [res["step_s"] for res in results("ours", "warm")],
            "floor_all_s": [res["step_s"] for res in results("floor", "floor")],
            "floor_cpu_s": med("floor", "floor", "step_cpu_s"),
        }
        loads = [r["other_load_cores"] for r in runs
                 if r.get("kind") == "step" and r["model"] == model and "other_load_cores" in r]
        m["other_load_cores_median"] = _median(loads)
        m["other_load_cores_max"] = max(loads) if loads else None
        for mode in ("upstream", "ours"):
            warm = results(mode, "warm")
            m[f"{mode}_warm_key_s"] = _median([res.get("key_in_try_load_s") for res in warm])
            m[f"{mode}_warm_first_key_s"] = _median([res.get("first_key_s") for res in warm])
            m[f"{mode}_warm_try_load_s"] = _median([res.get("try_load_s") for res in warm])
            m[f"{mode}_warm_rest_s"] = _median([res.get("rest_of_try_load_s") for res in warm])
            m[f"{mode}_warm_import_s"] = _median([res.get("import_s") for res in warm])
            cold_runs = results(mode, "cold")
            m[f"{mode}_cold_cache_code_s"] = _median([res.get("cache_code_s") for res in cold_runs])
            m[f"{mode}_cold_key_s"] = _median([res.get("key_in_try_load_s") for res in cold_runs])
            m[f"{mode}_cold_save_s"] = _median([res.get("save_s") for res in cold_runs])
            code, off = m[f"{mode}_cold_cache_code_s"], m["cold_off_s"]
            m[f"{mode}_cold_cache_code_pct"] = None if code is None or not off else code / off * 100.0
            m[f"{mode}_warm_process_s"] = _median([
                r["process_wall_s"] for r in runs
                if r.get("kind") == "step" and r["model"] == model and r["mode"] == mode
                and r["phase"] == "warm" and "result" in r
            ])
            m[f"{mode}_warm_cpu_s"] = _median([res.get("step_cpu_s") for res in warm])
            m[f"{mode}_warm_min_s"] = min([res["step_s"] for res in warm], default=None)
            fc, wc = m["floor_cpu_s"], m[f"{mode}_warm_cpu_s"]
            m[f"cpu_overhead_{mode}_s"] = None if fc is None or wc is None else wc - fc
            m[f"{mode}_warm_hits"] = [res["counters"]["aot_autograd"].get("autograd_cache_hit", 0) for res in warm]
            m[f"{mode}_cold_counters"] = [res["counters"]["aot_autograd"] for res in results(mode, "cold")]
            m[f"{mode}_graph_breaks"] = max(
                [res["counters"]["graph_break"].get("total", 0) for res in warm] or [0]
            )
            floor, w = m["floor_s"], m[f"warm_{mode}_s"]
            m[f"overhead_{mode}_s"] = None if floor is None or w is None else w - floor
            cold, off = m[f"cold_{mode}_s"], m["cold_off_s"]
            m[f"miss_overhead_{mode}_pct"] = (
                None if cold is None or not off else (cold - off) / off * 100.0
            )
        m["overhead_ratio"] = _ratio(m["overhead_ours_s"], m["overhead_upstream_s"])

        # Whole processes, start to exit, timed from outside the worker.
        def process_med(mode: str, phase: str) -> float | None:
            return _median([
                r["process_wall_s"] for r in runs
                if r.get("kind") == "step" and r["model"] == model and r["mode"] == mode
                and r["phase"] == phase and "result" in r
            ])

        p: dict[str, Any] = {
            "floor_s": process_med("floor", "floor"),
            "floor_inductor_s": process_med("floor_inductor", "floor"),
            "cold_off_s": process_med("off", "cold"),
        }
        for mode in ("upstream", "ours"):
            p[f"warm_{mode}_s"] = process_med(mode, "warm")
            p[f"cold_{mode}_s"] = process_med(mode, "cold")
            floor, w = p["floor_s"], p[f"warm_{mode}_s"]
            p[f"above_floor_{mode}_s"] = None if floor is None or w is None else w - floor
        p["ratio"] = _ratio(p["above_floor_ours_s"], p["above_floor_upstream_s"])

        # Where a whole process goes: startup, imports, model set-up and
        # torch.compile, the first step, and everything after it (exit).
        def part(mode: str, phase: str, field: str) -> float | None:
            return _median([
                (r.get(field) if field in ("startup_s", "after_step_s") else r["result"].get(field))
                for r in runs
                if r.get("kind") == "step" and r["model"] == model and r["mode"] == mode
                and r["phase"] == phase and "result" in r
            ])

        p["parts"] = {
            mode: {f: part(mode, phase, f) for f in ("startup_s", "import_s", "setup_s", "step_s", "after_step_s")}
            for mode, phase in (("floor", "floor"), ("floor_inductor", "floor"), ("upstream", "warm"),
                                ("ours", "warm"))
        }
        # The same without interpreter start and imports: identical work in
        # every mode (import torch; torch_aotcache's import adds ~10 ms), whose
        # run-to-run noise on a small VM can exceed the differences measured.
        def past_imports(mode: str, phase: str) -> float | None:
            return _median([
                r["process_wall_s"] - (r.get("startup_s") or 0.0) - r["result"]["import_s"]
                for r in runs
                if r.get("kind") == "step" and r["model"] == model and r["mode"] == mode
                and r["phase"] == phase and "result" in r and r["result"].get("import_s") is not None
            ])

        past = {
            mode: past_imports(mode, phase)
            for mode, phase in (("floor", "floor"), ("upstream", "warm"), ("ours", "warm"))
        }
        for mode in ("upstream", "ours"):
            past[f"above_floor_{mode}_s"] = (
                None if past["floor"] is None or past[mode] is None else past[mode] - past["floor"]
            )
        past["ratio"] = _ratio(past["above_floor_ours_s"], past["above_floor_upstream_s"])
        p["past_imports"] = past
        p["import_s"] = {
            mode: _median([res.get("import_s") for res in results(mode, phase)])
            for mode, phase in (("floor", "floor"), ("floor_inductor", "floor"), ("upstream", "warm"),
                                ("ours", "warm"))
        }
        m["process"] = p
        m["cpu_overhead_ratio"] = _ratio(m["cpu_overhead_ours_s"], m["cpu_overhead_upstream_s"])
        q: dict[str, Any] = {}
        for name, mode, phase in (("cold_off", "off", "cold"), ("cold_upstream", "upstream", "cold"),
                                  ("cold_ours", "ours", "cold"), ("warm_upstream", "upstream", "warm"),
                                  ("warm_ours", "ours", "warm"), ("floor", "floor", "floor")):
            values = quiet(mode, phase)
            q[f"{name}_s"], q[f"{name}_n"] = _median(values), len(values)
        for mode in ("upstream", "ours"):
            floor, w = q["floor_s"], q[f"warm_{mode}_s"]
            q[f"overhead_{mode}_s"] = None if floor is None or w is None else w - floor
            cold, off = q[f"cold_{mode}_s"], q["cold_off_s"]
            q[f"miss_overhead_{mode}_pct"] = None if cold is None or not off else (cold - off) / off * 100.0
        q["overhead_ratio"] = _ratio(q["overhead_ours_s"], q["overhead_upstream_s"])
        m["quiet"] = q
        out[model] = m
    return out


def summarize_remote(runs: list[dict[str, Any]], infos: list[dict[str, Any]],
                     models: dict[str, Any]) -> dict[str, Any]:
    """Per model: warm first step from Redis into an empty cache dir vs the local-hit warm step."""
    out: dict[str, Any] = {}
    for info in infos:
        model = info["model"]

        def records(phase: str) -> list[dict[str, Any]]:
            return [r for r in runs if r.get("kind") == "step" and r["model"] == model
                    and r["mode"] == "ours" and r["phase"] == phase]

        warm = [r["result"] for r in records("remote_warm") if "result" in r]
        cold = [r["result"] for r in records("remote_cold") if "result" in r]
        remote_s = _median([res.get("step_s") for res in warm])
        local_s = models.get(model, {}).get("warm_ours_s")
        diff = None if remote_s is None or local_s is None else remote_s - local_s
        tac = [res["counters"].get("torch_aotcache", {}) for res in warm]
        local_b, remote_b = info.get("local_entry_bytes"), info.get("remote_value_bytes")
        out[model] = {
            "warm_local_hit_s": local_s,
            "warm_remote_hit_s": remote_s,
            "warm_remote_hit_all_s": [res.get("step_s") for res in warm],
            "warm_remote_hit_cpu_s": _median([res.get("step_cpu_s") for res in warm]),
            "diff_s": diff,
            "target_met": None if diff is None else diff * 1e3 <= TARGET_REMOTE_MS,
            "cold_remote_s": _median([res.get("step_s") for res in cold]),
            "cold_remote_counters": [res["counters"].get("torch_aotcache", {}) for res in cold],
            "remote_hits_per_process": [c.get("remote_hit", 0) for c in tac],
            "remote_misses_per_process": [c.get("remote_miss", 0) for c in tac],
            "remote_bytes_read_per_process": [c.get("remote_bytes_read", 0) for c in tac],
            "warm_remote_counters": tac,
            "warm_remote_aot_hits": [res["counters"]["aot_autograd"].get("autograd_cache_hit", 0) for res in warm],
            "warm_remote_aot_misses": [res["counters"]["aot_autograd"].get("autograd_cache_miss", 0) for res in warm],
            "local_entry_bytes": local_b,
            "remote_value_bytes": remote_b,
            "remote_fields": info.get("remote_fields"),
            "compression_ratio": _ratio(local_b, remote_b),
            "other_load_cores": [r.get("other_load_cores") for r in records("remote_warm")],
            "redis_version": info.get("redis_version"),
            "error": info.get("error"),
        }
    return out


def summarize_keys(records: list[dict[str, Any]], node_counts: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"notes": []}
    for mode in ("upstream", "ours"):
        measured = [r["result"] for r in records if r["mode"] == mode and not r["primer"] and "result" in r]
        primers = [r["result"] for r in records if r["mode"] == mode and r["primer"] and "result" in r]
        out[f"{mode}_first_key_s"] = _median([res["first_key_s"] for res in measured])
        out[f"{mode}_first_key_empty_dir_s"] = _median([res["first_key_s"] for res in primers])
        sizes: dict[str, Any] = {}
        for n in node_counts:
            times: list[float] = []
            nodes = None
            errors = set()
            for res in measured + primers:
                entry = res["by_size"].get(str(n), {})
                nodes = entry.get("nodes") or nodes
                if entry.get("error"):
                    errors.add(entry["error"])
            for res in measured or primers:
                times += res["by_size"].get(str(n), {}).get("times_s", [])
            sizes[str(n)] = {"nodes": nodes, "median_s": _median(times), "errors": sorted(errors)}
            if errors:
                out["notes"].append(
                    f"{mode} key on the {n}-op synthetic graph failed ({'; '.join(sorted(errors))}); "
                    "compare the real models' keys instead"
                )
        out[mode] = sizes
    out["first_key_ratio"] = _ratio(out["ours_first_key_s"], out["upstream_first_key_s"])
    out["by_size"] = {}
    for n in node_counts:
        up, ours = out["upstream"][str(n)], out["ours"][str(n)]
        nodes = ours["nodes"] or up["nodes"]
        out["by_size"][str(n)] = {
            "nodes": nodes,
            "upstream_s": up["median_s"],
            "ours_s": ours["median_s"],
            "ratio": _ratio(ours["median_s"], up["median_s"]),
            "upstream_us_per_node": None if up["median_s"] is None or not nodes else up["median_s"] / nodes * 1e6,
            "ours_us_per_node": None if ours["median_s"] is None or not nodes else ours["median_s"] / nodes * 1e6,
        }
    return out


def evaluate_targets(models: dict[str, Any], keys: dict[str, Any], lookup: dict[str, Any] | None,
                     remote: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each target of the issue: the measured value and whether it is met."""
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, fmt: str, less_than: bool = False,
            quiet: float | None = None) -> None:
        def is_met(v: float | None) -> bool | None:
            return None if v is None else (v < limit if less_than else v <= limit)

        targets.append({"target": name, "value": value, "limit": limit, "met": is_met(value),
                        "text": "n/a" if value is None else fmt % value,
                        "quiet_value": quiet, "quiet_met": is_met(quiet),
                        "quiet_text": "n/a" if quiet is None else fmt % quiet})

    add("first key of a process, ours/upstream", keys.get("first_key_ratio"), TARGET_KEY_RATIO, "%.3f")
    if keys.get("by_size"):
        largest = max(keys["by_size"], key=int)
        entry = keys["by_size"][largest]
        add(f"later key per node ({entry['nodes']}-node graph), ours/upstream", entry["ratio"], TARGET_KEY_RATIO, "%.3f")
    for model, m in models.items():
        p = m.get("process") or {}
        add(f"{model}: whole warm process above floor, ours/upstream", p.get("ratio"), TARGET_PROCESS_RATIO, "%.2f")
        add(f"{model}: whole warm process above floor, ours (s; stretch)", p.get("above_floor_ours_s"),
            TARGET_PROCESS_ABOVE_FLOOR_S, "%.2f s")
        cold_u, cold_o = p.get("cold_upstream_s"), p.get("cold_ours_s")
        add(f"{model}: whole cold process, ours minus upstream (s)",
            None if cold_u is None or cold_o is None else cold_o - cold_u, 0.0, "%+.2f s")
    for model, m in models.items():
        add(f"{model}: warm first step above floor, ours/upstream", m["overhead_ratio"], TARGET_OVERHEAD_RATIO,
            "%.2f", quiet=m.get("quiet", {}).get("overhead_ratio"))
    for model, m in models.items():
        add(f"{model}: miss cost above caches-off, ours", m["miss_overhead_ours_pct"], TARGET_MISS_PCT, "%+.1f%%",
            quiet=m.get("quiet", {}).get("miss_overhead_ours_pct"))
    for model, m in models.items():
        add(f"{model}: miss, cache code timed in-process (share of cold off), ours", m.get("ours_cold_cache_code_pct"),
            TARGET_MISS_PCT, "%.2f%%")
    if lookup:
        largest = max(lookup["by_entries"], key=int)
        add(f"lookup with {largest} entries (median)", lookup["by_entries"][largest]["median_ms"],
            TARGET_LOOKUP_MS, "%.3f ms", less_than=True)
    for model, r in (remote or {}).items():
        diff = r.get("diff_s")
        add(f"{model}: remote hit from an empty cache dir, minus local hit (ms)",
            None if diff is None else diff * 1e3, TARGET_REMOTE_MS, "%+.1f ms")
    return targets


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _s(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1e3:.1f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.1f}%"


def render_markdown(data: dict[str, Any]) -> str:
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
    lines.append("")
    lines.append("## Whole process, start to exit (what the user waits for); seconds, medians")
    lines.append("")
    lines.append(
        "Timed from outside each worker: interpreter start, imports, model set-up, the first training "
        "step, exit. Floors: Dynamo only (`backend=\"eager\"`), and Dynamo plus importing Inductor's "
        "compiler (`torch._inductor.compile_fx`)."
    )
    lines.append("")
    lines.append(
        "| model | floor | floor + Inductor import | warm upstream | warm ours "
        "| above floor: upstream / ours | ours/upstream | cold: off / upstream / ours "
        "| import (s): floor / upstream / ours |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for model, m in data["models"].items():
        p = m.get("process")
        if not p:
            continue
        imp = p.get("import_s", {})
        lines.append(
            f"| {model} | {_s(p['floor_s'])} | {_s(p['floor_inductor_s'])} | {_s(p['warm_upstream_s'])} "
            f"| {_s(p['warm_ours_s'])} | {_s(p['above_floor_upstream_s'])} / {_s(p['above_floor_ours_s'])} "
            f"| {_s(p['ratio'], 2)} | {_s(p['cold_off_s'])} / {_s(p['cold_upstream_s'])} / {_s(p['cold_ours_s'])} "
            f"| {_s(imp.get('floor'))} / {_s(imp.get('upstream'))} / {_s(imp.get('ours'))} |"
        )
    lines.append("")
    lines.append(
        "The same after the imports (wall time minus interpreter start and imports, per process; "
        "the imports are the same work in every mode, and their noise on a small VM can exceed "
        "the differences measured):"
    )
    lines.append("")
    lines.append("| model | floor | warm upstream | warm ours | above floor: upstream / ours | ours/upstream |")
    lines.append("|---|---|---|---|---|---|")
    for model, m in data["models"].items():
        past = (m.get("process") or {}).get("past_imports")
        if not past:
            continue
        lines.append(
            f"| {model} | {_s(past.get('floor'))} | {_s(past.get('upstream'))} | {_s(past.get('ours'))} "
            f"| {_s(past.get('above_floor_upstream_s'))} / {_s(past.get('above_floor_ours_s'))} "
            f"| {_s(past.get('ratio'), 2)} |"
        )
    lines.append("")
    lines.append("### Where a warm process goes (s, medians): startup / imports / set-up / first step / after it")
    lines.append("")
    lines.append(
        "Startup: interpreter start to the worker's first line; imports: torch (and torch_aotcache, or "
        "Inductor's compiler for the second floor); set-up: model build and `torch.compile`; after: "
        "the rest of the worker and interpreter exit."
    )
    lines.append("")
    lines.append("| model | floor | floor + Inductor import | warm upstream | warm ours |")
    lines.append("|---|---|---|---|---|")

    def parts_cell(parts: dict[str, Any] | None) -> str:
        if not parts:
            return "n/a"
        return " / ".join(_s(parts.get(f)) for f in ("startup_s", "import_s", "setup_s", "step_s", "after_step_s"))

    for model, m in data["models"].items():
        parts = (m.get("process") or {}).get("parts")
        if not parts:
            continue
        lines.append(
            f"| {model} | {parts_cell(parts.get('floor'))} | {parts_cell(parts.get('floor_inductor'))} "
            f"| {parts_cell(parts.get('upstream'))} | {parts_cell(parts.get('ours'))} |"
        )
    lines.append("")
    lines.append("## First step (forward + backward), seconds; medians of fresh processes")
    lines.append("")
    lines.append(
        "| model | cold (off) | cold (upstream miss) | cold (ours miss) | warm upstream | warm ours "
        "| Dynamo-only floor | overhead above floor: upstream / ours | ours/upstream overhead "
        "| miss cost vs off: upstream / ours | other load on the machine (cores, median / max) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
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
    lines.append("")
    lines.append(f"## The same, quiet runs only (other load < {QUIET_LOAD_CORES:g} cores); medians, s (runs)")
    lines.append("")
    lines.append(
        "| model | cold (off) | cold (upstream miss) | cold (ours miss) | warm upstream | warm ours | floor "
        "| overhead above floor: upstream / ours | ours/upstream overhead | miss cost vs off: upstream / ours |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")

    def qv(q: dict[str, Any], name: str, digits: int) -> str:
        return f"{_s(q.get(name + '_s'), digits)} ({q.get(name + '_n', 0)})"

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
    lines.append("")
    lines.append("## Warm start in CPU seconds (this process and the subprocesses it waited for; medians)")
    lines.append("")
    lines.append(
        "CPU time would be immune to other load on dedicated cores; on a shared VM it inflates with it "
        "(vCPU contention), so read it as a cross-check, not a cure."
    )
    lines.append("")
    lines.append(
        "| model | warm upstream (min wall) | warm ours (min wall) | floor | overhead above floor: upstream / ours "
        "| ours/upstream overhead |"
    )
    lines.append("|---|---|---|---|---|---|")
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
    lines.append("")
    lines.append("## What a miss costs in cache code (cold processes; medians, ms)")
    lines.append("")
    lines.append(
        "Timed inside the cold process: the key, the failed lookup, `make_entry` and `save`. "
        "This is what the cache itself adds to a compile; the wall-time difference to `off` above also "
        "holds Inductor's own FX-graph cache and the run-to-run noise of a 10-40 s compile."
    )
    lines.append("")
    lines.append("| model | upstream: key / save / all cache code | % of cold (off) | ours: key / save / all cache code | % of cold (off) |")
    lines.append("|---|---|---|---|---|")
    for model, m in data["models"].items():
        if m.get("upstream_cold_cache_code_s") is None and m.get("ours_cold_cache_code_s") is None:
            continue
        lines.append(
            f"| {model} | {_ms(m['upstream_cold_key_s'])} / {_ms(m['upstream_cold_save_s'])} / "
            f"{_ms(m['upstream_cold_cache_code_s'])} | {_s(m['upstream_cold_cache_code_pct'], 2)}% "
            f"| {_ms(m['ours_cold_key_s'])} / {_ms(m['ours_cold_save_s'])} / {_ms(m['ours_cold_cache_code_s'])} "
            f"| {_s(m['ours_cold_cache_code_pct'], 2)}% |"
        )
    lines.append("")
    lines.append("## Where a warm start goes (medians, ms)")
    lines.append("")
    lines.append(
        "| model | mode | first step | key | rest of try_load | other above floor | floor "
        "| hits per warm process | imports before the step | whole warm process |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
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
    keys = data.get("keys")
    if keys:
        lines.append("")
        lines.append("## Key computation (ms; medians)")
        lines.append("")
        lines.append("| graph | upstream | ours | ours/upstream | µs per node: upstream / ours |")
        lines.append("|---|---|---|---|---|")
        lines.append(
            f"| first key of a process (tiny graph, cache dir seen before) | {_ms(keys['upstream_first_key_s'])} "
            f"| {_ms(keys['ours_first_key_s'])} | {_s(keys['first_key_ratio'], 3)} | |"
        )
        lines.append(
            f"| first key, first process ever in an empty cache dir | {_ms(keys['upstream_first_key_empty_dir_s'])} "
            f"| {_ms(keys['ours_first_key_empty_dir_s'])} "
            f"| {_s(_ratio(keys['ours_first_key_empty_dir_s'], keys['upstream_first_key_empty_dir_s']), 3)} | |"
        )
        for n, e in keys["by_size"].items():
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
    lookup = data.get("lookup")
    if lookup:
        lines.append("")
        lines.append("## Lookup scaling (`find_entry` of a key with a real entry)")
        lines.append("")
        lines.append("| entries in the store | first lookup (ms) | median lookup (ms) |")
        lines.append("|---|---|---|")
        for n, e in sorted(lookup["by_entries"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {n} | {e['first_ms']:.3f} | {e['median_ms']:.3f} |")
    remote = data.get("remote")
    if remote:
        lines.append("")
        lines.append("## Remote (Redis) warm start (first step, s; medians)")
        lines.append("")
        lines.append(
            "Cold `ours` process with a loopback Redis, a signing key and synchronous writes; then warm "
            "processes, each with a new empty cache dir (no local entry, no Inductor artifact) and the same "
            "Redis. Compared with the local-hit warm `ours` step of the same run."
        )
        lines.append("")
        lines.append(
            f"| model | warm local hit (s) | warm remote hit from an empty cache dir (s) | difference (ms) "
            f"| within {TARGET_REMOTE_MS:g} ms of a local hit | remote hits per process "
            "| entry bytes local / remote | compression ratio |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for model, r in remote.items():
            met = r.get("target_met")
            lb, rb = r.get("local_entry_bytes"), r.get("remote_value_bytes")
            diff = r.get("diff_s")
            lines.append(
                f"| {model} | {_s(r['warm_local_hit_s'], 3)} | {_s(r['warm_remote_hit_s'], 3)} "
                f"| {'n/a' if diff is None else f'{diff * 1e3:+.1f}'} "
                f"| {'n/a' if met is None else ('met' if met else 'missed')} | {r['remote_hits_per_process']} "
                f"| {'n/a' if lb is None else lb} / {'n/a' if rb is None else rb} "
                f"| {_s(r['compression_ratio'], 2)} |"
            )
            if r.get("error"):
                lines.append("")
                lines.append(f"Remote run of {model} failed: {r['error']}")
    lines.append("")
    lines.append("## Targets")
    lines.append("")
    lines.append("| target | limit | measured (all runs) | met | measured (quiet runs only) | met |")
    lines.append("|---|---|---|---|---|---|")

    def verdict(v: bool | None) -> str:
        return "n/a" if v is None else ("met" if v else "missed")

    for t in data["targets"]:
        limit = t["limit"]
        limit_text = f"{'<' if 'lookup' in t['target'] else '≤'} {limit:g}{' ms' if ('lookup' in t['target'] or 'remote' in t['target']) else ('%' if 'miss' in t['target'] else '')}"
        quiet_text = t.get("quiet_text", "n/a")
        quiet_met = verdict(t.get("quiet_met")) if "quiet_met" in t and quiet_text != "n/a" else ""
        lines.append(f"| {t['target']} | {limit_text} | {t['text']} | {verdict(t['met'])} | {quiet_text} | {quiet_met} |")
    if data.get("failures"):
        lines.append("")
        lines.append(f"**{data['failures']} worker process(es) failed; see logs/ under the output folder.**")
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only backend, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def render_png(data: dict[str, Any], path: str) -> str | None:
    """A stacked horizontal bar per model and mode; returns why it was skipped, or None."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is not importable; warmstart.png skipped (pip install -e '.[bench]')"
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
    if not labels:
        return "no complete warm measurements; warmstart.png skipped"
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(labels) + 1.6))
    left = [0.0] * len(labels)
    colors = ["#9e9e9e", "#d62728", "#ff7f0e", "#1f77b4"]
    ys = list(range(len(labels)))[::-1]
    for (name, values), color in zip(segments.items(), colors):
        ax.barh(ys, values, left=left, label=name, color=color)
        left = [a + b for a, b in zip(left, values)]
    for y, total in zip(ys, left):
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
PROCESS_MODES = (("floor", "Dynamo-only floor"), ("floor_inductor", "floor + Inductor import"),
                 ("upstream", "upstream's cache"), ("ours", "torch_aotcache"))


def render_process_png(data: dict[str, Any], path: str) -> str | None:
    """The whole warm process, start to exit: a stacked bar per model and
    mode (the parts of Note [Where a whole process goes]); returns why it
    was skipped, or None."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is not importable; process.png skipped (pip install -e '.[bench]')"
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
    if not labels:
        return "no complete whole-process measurements; process.png skipped"
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(labels) + 1.8))
    ys = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    colors = ["#bdbdbd", "#7f7f7f", "#2ca02c", "#1f77b4", "#ff7f0e"]
    for i, ((_, part_name), color) in enumerate(zip(PROCESS_PARTS, colors)):
        values = [r[i] for r in rows]
        ax.barh(ys, values, left=left, label=part_name, color=color)
        left = [a + b for a, b in zip(left, values)]
    for y, total in zip(ys, left):
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


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_description() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "git_commit": (_git("rev-parse", "--short", "HEAD") or "?"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", "torch_aotcache")),
        "loadavg_start": _loadavg(),
    }


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
    ), notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true",
                        help="only redo results.md and warmstart.png from --out's results.json")
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, args.result)
    if args.render:
        out_dir = os.path.abspath(args.out)
        with open(os.path.join(out_dir, "results.json"), encoding="utf-8") as f:
            write_outputs(json.load(f), out_dir)
        return 0

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


def write_outputs(data: dict[str, Any], out_dir: str) -> None:
    """Summaries from the raw records in ``data``, then results.json/.md and the PNG."""
    settings = data["settings"]
    notes = [n for n in data["notes"] if "warmstart.png" not in n and "process.png" not in n]
    data["notes"] = notes
    data["models"] = summarize_models(data["runs"], settings["models"])
    data["keys"] = summarize_keys(data["key_runs"], settings["node_counts"])
    data["lookup"] = (data.get("lookup_run") or {}).get("result")
    data["remote"] = summarize_remote(data["runs"], data.get("remote_runs", []), data["models"])
    data["targets"] = evaluate_targets(data["models"], data["keys"], data["lookup"], data["remote"])
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


if __name__ == "__main__":
    sys.exit(main())
