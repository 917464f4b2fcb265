"""Helpers shared by torch_aotcache's tests.

- ``CacheTestCase``: the base of every test that compiles in this process (a
  fresh cache dir, the caches on, in-memory and warn-once state cleared before
  and after).
- ``child_env`` / ``run_child`` / ``spawn_child`` / ``run_python``: the one
  way a test starts another Python process.
- ``tools/fault_injection.py`` (shared with ``tools/soak.py``): disk faults
  and the spy on unverified unpickling.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import textwrap
import unittest
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch._dynamo
import torch._inductor.codecache
from torch._dynamo.utils import counters
from torch._inductor.utils import fresh_cache


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO_ROOT, "tools")

# Tags a test (or a whole TestCase class) for the full suite only: it starts
# other processes or compiles many programs.  `pytest -m "not slow"` is the
# fast tier (CONTRIBUTING.md).
slow = pytest.mark.slow

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


@functools.cache
def probed_vec_isa_env() -> dict[str, str]:
    """``TORCHINDUCTOR_VEC_ISA_OK=1`` where this machine's compiler builds and
    loads every vector ISA the CPU reports, else nothing.

    Inductor probes the ISAs (a compile and a ``dlopen`` child per ISA, about
    10 s here) once per cache dir, so every child process of a test, each in
    a fresh cache dir, would pay it again.  The parent probes once (in its
    own cache dir) and, where every ISA passed, tells the children the answer
    they would find; elsewhere (another architecture, a failed ISA, an
    internal that moved) the children probe as usual.  A value the caller
    set is inherited unchanged.
    """
    if "TORCHINDUCTOR_VEC_ISA_OK" in os.environ or platform.machine() not in ("x86_64", "AMD64"):
        return {}
    try:
        from torch._inductor import cpu_vec_isa

        reported = cpu_vec_isa.x86_isa_checker()
        wanted = [isa for isa in cpu_vec_isa.supported_vec_isa_list
                  if all(flag in reported for flag in str(isa).split())]
        valid = cpu_vec_isa.valid_vec_isa_list()
    except (ImportError, AttributeError, TypeError, OSError):  # an internal that moved: probe as usual
        return {}
    return {"TORCHINDUCTOR_VEC_ISA_OK": "1"} if wanted and [str(i) for i in valid] == [str(i) for i in wanted] else {}


def child_env(
    extra: Mapping[str, str] | None = None, *, path: Sequence[str] = (REPO_ROOT,), clean: bool = False,
    probed_isa: bool = True,
) -> dict[str, str]:
    """The environment of a child Python process.

    ``path`` goes first on ``PYTHONPATH`` (by default this checkout, so the
    child imports the package under test whichever copy pip installed; a
    patched torch tree or a copied one goes there too).  The child runs with
    the cache on: ``TORCH_AOTCACHE_DISABLE`` is dropped.  With ``clean``,
    nothing of the parent's set-up leaks in: every ``TORCH_AOTCACHE_*``
    variable is dropped and ``PYTHONPATH`` is ``path`` alone.  The vector ISA
    probe's answer is passed on (``probed_vec_isa_env``) unless
    ``probed_isa`` is false: it sets an Inductor config, which is part of a
    cache key, so a child whose keys are compared with this process's must
    probe for itself.  ``extra`` is applied last.
    """
    env = {
        k: v for k, v in os.environ.items()
        if not (k == "TORCH_AOTCACHE_DISABLE" or (clean and k.startswith("TORCH_AOTCACHE")))
    }
    if probed_isa:
        env.update(probed_vec_isa_env())
    inherited = "" if clean else env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*path, inherited) if p)
    env.update(extra or {})
    return env


def run_child(
    argv: Sequence[str], env: Mapping[str, str] | None = None, *, timeout: float = 600,
    cwd: str | os.PathLike[str] = REPO_ROOT, **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``python *argv`` to the end, output captured as text, in ``env``
    (``child_env()`` unless given)."""
    return subprocess.run(
        [sys.executable, *argv], env=child_env() if env is None else dict(env), cwd=cwd,
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def spawn_child(
    argv: Sequence[str], env: Mapping[str, str] | None = None, *, cwd: str | os.PathLike[str] = REPO_ROOT,
    **kwargs: Any,
) -> subprocess.Popen[str]:
    """Start ``python *argv`` and return at once; output piped as text unless
    ``stdout``/``stderr`` say otherwise.  ``env`` as for ``run_child``."""
    full = child_env() if env is None else dict(env)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, *argv], env=full, cwd=cwd, text=True, **kwargs)


def read_settings(names: Sequence[str], env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Knobs ``names`` as two fresh processes with ``env`` read them: one
    with torch (``torch_aotcache.config``), one without (the torch-free
    reader, ``store/layout.py``)."""
    import json

    script = (
        "import json, sys\n"
        "if sys.argv[1] == 'torch':\n"
        "    import torch\n"
        "    from torch_aotcache import config\n"
        "    read = lambda n: getattr(config, n)\n"
        "else:\n"
        "    from torch_aotcache.store import layout\n"
        "    read = layout.setting\n"
        f"print(json.dumps({{n: read(n) for n in {list(names)!r}}}))\n"
    )
    found = {}
    for how in ("torch", "reader"):
        proc = run_child(["-c", script, how], env)
        if proc.returncode != 0:
            raise AssertionError(proc.stderr[-2000:])
        found[how] = json.loads(proc.stdout.splitlines()[-1])
    return found


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the repo importable."""
    extra = dict(env or {})
    cwd = extra.pop("_CWD", REPO_ROOT)
    return run_child(["-c", textwrap.dedent(code)], child_env(extra), timeout=timeout, cwd=cwd)


class CacheTestCase(unittest.TestCase):
    """A test that compiles in this process: a fresh Inductor/torch_aotcache
    cache dir, the AOTAutograd and FX graph caches on, and this process's
    in-memory state (Dynamo, loaded code, counters, warn-once) cleared before
    and after, so each test starts as a new process would.  Subclasses add
    their own contexts with ``self.enterContext``."""

    def setUp(self) -> None:
        super().setUp()
        import torch_aotcache
        from torch_aotcache import _once

        self.assertTrue(torch_aotcache.is_installed())
        self.addCleanup(clear_in_memory_state)
        self.enterContext(fresh_cache())
        self.enterContext(cache_enabled())
        _once.reset()
        clear_in_memory_state()

    def entry_files(self) -> list[str]:
        from torch_aotcache.store.local import LocalStore

        return list(LocalStore().iter_paths())
