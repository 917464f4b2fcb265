"""Helpers shared by torch_aotcache's tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch._dynamo
import torch._inductor.codecache
from torch._dynamo.utils import counters


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def clear_in_memory_state() -> None:
    """Forget everything this process compiled, keep what is on disk."""
    torch._dynamo.reset()
    torch._inductor.codecache.PyCodeCache.cache_clear(purge=True)
    counters.clear()


@contextmanager
def cache_enabled(bundled: bool = False) -> Iterator[None]:
    with (
        torch._functorch.config.patch(
            enable_autograd_cache=True, bundled_autograd_cache=bundled
        ),
        torch._inductor.config.patch(fx_graph_cache=True, fx_graph_remote_cache=False),
        torch.compiler.config.patch(force_disable_caches=False),
    ):
        yield


def aot_counts() -> dict[str, int]:
    return {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")}


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the repo importable."""
    full_env = dict(os.environ)
    full_env.pop("TORCH_AOTCACHE_DISABLE", None)
    full_env["PYTHONPATH"] = REPO_ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=(env or {}).get("_CWD", REPO_ROOT),
    )
