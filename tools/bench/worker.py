"""The worker side: one measurement in a fresh interpreter (imports torch).

The driver (``measure.py``) runs ``python tools/bench_warmstart.py --worker
SPEC --result PATH``; ``run_worker`` runs the measurement ``SPEC`` names and
writes its result to ``PATH`` as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .machine import _cpu_s, _loadavg
from .programs import _loss, build_chain_graph, build_model


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
            from torch_aotcache.inductor import front_door

            orig_front = front_door.load_if_stored

            def timed_front(*args: Any, **kwargs: Any) -> Any:
                return timed_lookup(orig_front, *args, **kwargs)

            timed_front.__wrapped__ = orig_front  # type: ignore[attr-defined]
            front_door.load_if_stored = timed_front
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

    wanted = ("aot_autograd", "inductor", "torch_aotcache", "graph_break", "stats")
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
    if mode in ("ours", "frames"):
        import torch_aotcache

        info["torch_aotcache_installed"] = torch_aotcache.is_installed()
        # The copy measured: this checkout's (PYTHONPATH), not another editable install.
        info["torch_aotcache_file"] = torch_aotcache.__file__
    info["torch_aotcache_imported"] = "torch_aotcache" in sys.modules
    if mode in ("upstream", "off", "floor", "floor_inductor", "eager") and info["torch_aotcache_imported"]:
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

    # The eager floor imports nothing the program would not: no Dynamo, no
    # cache timers (a plain module never imports torch._dynamo; a program
    # whose own imports do, transformers', pays it in every mode).
    timers = CacheTimers()
    if mode != "eager":
        timers.install()
    info["import_s"] = time.perf_counter() - t_start
    info["started_at"] = started_at
    info["loadavg_before"] = _loadavg()
    t_setup = time.perf_counter()
    model, inputs = build_model(spec["model"], spec["size"], device)
    if mode == "eager":
        # The eager floor: the same program without torch.compile.
        compiled = model
    else:
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
    # Counters live in Dynamo: read where it is imported already (every
    # compiled mode), never imported for them.
    info["dynamo_imported"] = "torch._dynamo" in sys.modules
    info["counters"] = _counters() if info["dynamo_imported"] else {}
    info["device_name"] = _device_name(device)
    info.update(timers.summary())
    return info


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
    import torch._functorch._aot_autograd.autograd_cache as ac
    import torch._functorch.config as functorch_config

    info["import_s"] = time.perf_counter() - t_start
    info["loadavg_before"] = _loadavg()
    key_fn = _key_function(mode, ac)
    captured = _capture_key_arguments(ac, functorch_config, key_fn, device)
    info["first_key_s"] = captured["first_key_s"]
    mod = captured["args"][0]
    info["first_key_graph_nodes"] = len(getattr(mod, "gm", mod).graph.nodes)
    info["by_size"] = _key_times_by_size(spec, key_fn, captured)
    info["loadavg_after"] = _loadavg()
    info["device_name"] = _device_name(device)
    return info


def _key_function(mode: str, ac: Any) -> Callable[..., Any]:
    """The key function the mode measures: upstream's, or torch_aotcache's once installed."""
    if mode == "ours":
        import torch_aotcache
        from torch_aotcache import autograd_cache as ours

        # Installed lazily, at the first compile (Note [Lazy install]); this
        # worker times the key function itself, so it installs now.
        torch_aotcache.install()
        key_fn: Callable[..., Any] = ours.autograd_cache_key
        if ac.autograd_cache_key is not key_fn:
            raise RuntimeError("torch_aotcache's key function is not installed")
        return key_fn
    return ac.autograd_cache_key


def _capture_key_arguments(ac: Any, functorch_config: Any, key_fn: Callable[..., Any],
                           device: str) -> dict[str, Any]:
    """The first key of the process, timed, and its arguments (see ``worker_keys``)."""
    import torch

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
    return captured


def _key_times_by_size(spec: dict[str, Any], key_fn: Callable[..., Any],
                       captured: dict[str, Any]) -> dict[str, Any]:
    """Later keys: synthetic chains of each size in ``spec["node_counts"]``, ``spec["reps"]`` times each."""
    import torch

    _mod, args, aot_config, extra = captured["args"][:4]
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
    return by_size


def worker_lookup(spec: dict[str, Any]) -> dict[str, Any]:
    """``find_entry`` of a key with a real entry, in stores of different sizes."""
    import pickle
    import random

    import torch

    import torch_aotcache  # noqa: F401  (installs itself)
    from torch_aotcache import autograd_cache, schemas
    from torch_aotcache.entry import framing
    from torch_aotcache.key import fingerprint
    from torch_aotcache.store import local as storage
    from torch_aotcache.tiers import lookup

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
            guards_expr=None, mode=schemas.MODE_BUNDLED, components={},
        )
        store.put(real_key, header.entry_id, framing.encode_entry(header, payload))
        populate_s = time.perf_counter() - t
        times = []
        for _ in range(spec["reps"]):
            t = time.perf_counter()
            found = lookup.find_entry(real_key, True, [], {})
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
