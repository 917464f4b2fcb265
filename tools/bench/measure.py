"""The driver: one fresh worker process per measurement, in order (never imports torch).

Every number comes from a worker (``worker.py``) started as ``python
tools/bench_warmstart.py --worker SPEC``; the driver times each process from
outside and notes the load the rest of the machine put on it (Note [Noise from
other load] in tools/bench_warmstart.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from .config import BENCH_SIGNING_KEY, ENTRY_POINT, REPO_ROOT, Settings
from .machine import _children_cpu_s, _git, _machine_busy


REMOTE_ENV = (
    "TORCH_AOTCACHE_REDIS_URL", "TORCHINDUCTOR_REDIS_URL", "TORCH_AOTCACHE_SIGNING_KEY",
    "TORCH_AOTCACHE_SIGNING_KEY_FILE", "TORCH_AOTCACHE_VERIFY_KEY_FILES",
    "TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE", "TORCH_AOTCACHE_REMOTE_SYNC", "TORCH_AOTCACHE_REMOTE_URL",
    "TORCH_AOTCACHE_REMOTE_READ_ONLY",
)


def _env_for(mode: str, cache_dir: str, remote_env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Only the remote runs talk to Redis (and sign): whatever the caller's
    # shell set must not leak into the local measurements.
    for name in ("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "TORCH_AOTCACHE_DISABLE", *REMOTE_ENV):
        env.pop(name, None)
    env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    if remote_env is not None:
        env.update(remote_env)
        env["TORCH_AOTCACHE_SIGNING_KEY"] = BENCH_SIGNING_KEY
        env["TORCH_AOTCACHE_REMOTE_SYNC"] = "1"
    env.pop("TORCH_AOTCACHE_DYNAMO", None)
    if mode not in ("ours", "frames"):
        env["TORCH_AOTCACHE_DISABLE"] = "1"
    if mode == "frames":
        env["TORCH_AOTCACHE_DYNAMO"] = "1"
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
    """Runs the workers of one benchmark run, one after another, and keeps their records."""

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
               remote_env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run one worker process; returns its record (result or error)."""
        self._n += 1
        result_path = os.path.join(self.tmp_root, f"result-{self._n:03d}.json")
        log_path = os.path.join(self.log_dir, f"{self._n:03d}-{label}.log")
        cmd = [sys.executable, ENTRY_POINT, "--worker", json.dumps(spec), "--result", result_path]
        waited = self.settle()
        # Others may commit while a long run goes on: note the tree each worker ran.
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", "torch_aotcache"))
        busy0, kids0 = _machine_busy(), _children_cpu_s()
        spawned_at = time.time()
        t = time.perf_counter()
        rc = _run_logged(cmd, _env_for(mode, cache_dir, remote_env), log_path)
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
            _add_result(record, result_path, spawned_at, exited_at)
        else:
            self.failures += 1
            with open(log_path, encoding="utf-8", errors="replace") as f:
                record["error_tail"] = f.read()[-3000:]
            print(f"  !! {label} failed (rc={rc}); see {log_path}", file=sys.stderr)
        _print_progress(label, record)
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
             remote_env: dict[str, str] | None = None) -> dict[str, Any]:
        s = self.settings
        spec = {"kind": "step", "model": model, "mode": mode, "device": s.device, "size": s.sizes[model]}
        record = self.worker(spec, mode, cache_dir, f"{model}-{mode}-{phase}{index}", remote_env)
        record.update(kind="step", model=model, phase=phase, index=index)
        self.runs.append(record)
        return record

    def run_models(self) -> None:
        s = self.settings
        for model in s.models:
            print(f"[{model}]", file=sys.stderr, flush=True)
            warm_dirs: dict[str, str] = {}
            local_modes: tuple[str, ...] = ("ours",) if s.only_remote else ("upstream", "ours")
            if s.frames and not s.only_remote:
                local_modes += ("frames",)
            for c in range(s.cold_repeats):
                if not s.only_remote:
                    self.step(model, "off", "cold", self.new_cache_dir("off"), c)
                for mode in local_modes:
                    d = self.new_cache_dir(f"{model}-{mode}")
                    warm_dirs.setdefault(mode, d)
                    self.step(model, mode, "cold", d, c)
            warm_modes = ([] if s.only_remote else ["eager", "floor", "floor_inductor"]) + list(local_modes)
            for r in range(s.repeats):
                # Each round starts with another mode, so no mode always runs
                # first (or last) after the machine has settled.
                shift = r % len(warm_modes)
                for mode in warm_modes[shift:] + warm_modes[:shift]:
                    if mode == "eager" or mode.startswith("floor"):
                        self.step(model, mode, "floor", self.new_cache_dir("floor"), r)
                    else:
                        self.step(model, mode, "warm", warm_dirs[mode], r)
            if s.remote:
                self.run_remote(model)
            if s.object_store:
                self.run_object_store(model)

    def run_remote(self, model: str) -> None:
        """Cold ``ours`` filling a throwaway Redis, then warm processes from empty cache dirs."""
        s = self.settings
        sys.path.insert(0, os.path.join(REPO_ROOT, "test"))
        try:
            from redis_server import RedisServer  # type: ignore[import-not-found]
        finally:
            sys.path.pop(0)
        server = RedisServer().start()
        info: dict[str, Any] = {"model": model, "store": "redis", "phase_prefix": "remote"}
        try:
            cold_dir = self.new_cache_dir(f"{model}-remote-cold")
            env = {"TORCH_AOTCACHE_REDIS_URL": server.url}
            self.step(model, "ours", "remote_cold", cold_dir, 0, env)
            local = 0
            from torch_aotcache.store import layout  # torch-free

            for root, _dirs, files in os.walk(layout.entries_root(layout.store_root(cold_dir))):
                local += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(layout.ENTRY_SUFFIX))
            info["local_entry_bytes"] = local
            info.update(_redis_value_bytes(server))
            for r in range(s.repeats):
                self.step(model, "ours", "remote_warm", self.new_cache_dir(f"{model}-remote-warm"), r, env)
            info["redis_version"] = _redis_version(server)
        except Exception as e:  # noqa: BLE001 - a report, never a crash of the whole run
            info["error"] = f"{type(e).__name__}: {e}"
            self.failures += 1
            print(f"  !! remote run of {model} failed: {info['error']}", file=sys.stderr)
        finally:
            server.close()
        self.remote_info.append(info)

    def run_object_store(self, model: str) -> None:
        """The same through an S3 API server (moto's, on loopback): cold ``ours``
        filling a bucket, then warm processes from empty cache dirs."""
        s = self.settings
        sys.path.insert(0, os.path.join(REPO_ROOT, "test"))
        try:
            from s3_server import S3Server, s3_env  # type: ignore[import-not-found]
        finally:
            sys.path.pop(0)
        server = S3Server().start()
        info: dict[str, Any] = {"model": model, "store": "object store (S3 API, loopback)", "phase_prefix": "s3"}
        try:
            server.create_bucket("bench")
            env = {**s3_env(server.endpoint), "TORCH_AOTCACHE_REMOTE_URL": "s3://bench/run"}
            self.step(model, "ours", "s3_cold", self.new_cache_dir(f"{model}-s3-cold"), 0, env)
            info["remote_fields"] = len(server.objects("bench"))
            for r in range(s.repeats):
                self.step(model, "ours", "s3_warm", self.new_cache_dir(f"{model}-s3-warm"), r, env)
        except Exception as e:  # noqa: BLE001 - a report, never a crash of the whole run
            info["error"] = f"{type(e).__name__}: {e}"
            self.failures += 1
            print(f"  !! object-store run of {model} failed: {info['error']}", file=sys.stderr)
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


def _run_logged(cmd: list[str], env: dict[str, str], log_path: str) -> int:
    """Run a worker with its output in ``log_path``; its return code (-9 when it timed out)."""
    with open(log_path, "w", encoding="utf-8") as logf:
        try:
            return subprocess.run(
                cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, timeout=1800, cwd=REPO_ROOT,
            ).returncode
        except subprocess.TimeoutExpired:
            return -9


def _add_result(record: dict[str, Any], result_path: str, spawned_at: float, exited_at: float) -> None:
    """A successful worker's result into its record, with the time before and after its first step."""
    with open(result_path, encoding="utf-8") as f:
        record["result"] = json.load(f)
    res = record["result"]
    if "started_at" in res and "step_ended_at" in res:
        # Before the worker's first line (interpreter start, the
        # benchmark's own imports) and after its first step (the rest of
        # the worker, interpreter shutdown, atexit handlers).
        record["startup_s"] = res["started_at"] - spawned_at
        record["after_step_s"] = exited_at - res["step_ended_at"]


def _print_progress(label: str, record: dict[str, Any]) -> None:
    step = record.get("result", {}).get("step_s")
    extra = f" step={step:.3f}s" if isinstance(step, float) else ""
    if "other_load_cores" in record:
        extra += f" (other load {record['other_load_cores']:.2f} cores)"
    print(f"  {label}: {record['process_wall_s']:.1f}s{extra}", file=sys.stderr, flush=True)
