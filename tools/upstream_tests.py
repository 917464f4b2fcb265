#!/usr/bin/env python3
"""
Run a copy of upstream's test file for this cache against this checkout.

    python tools/upstream_tests.py PATH/test_aot_autograd_cache.py [--modes stock,ours]
        [-k EXPR] [--junit-dir DIR] [--json FILE] [--timeout SECONDS]

Upstream's ``test/dynamo/test_aot_autograd_cache.py`` is public PyTorch code:
it is never committed here (CONTRIBUTING.md says how to get a copy).  The
file is copied, unedited, into a fresh temporary folder beside a
``conftest.py`` that activates one mode:

``ours``   ``import torch_aotcache`` from this checkout (the session fails
           at once if it did not install itself);
``frames`` ``ours`` with the cache of Dynamo's frames on
           (``TORCH_AOTCACHE_DYNAMO=1``; torch 2.15 and later);
``stock``  nothing imported: torch's own cache (the session fails if
           anything imported torch_aotcache).
``patched`` a torch tree patched by ``tools/upstream_patch.py``
           (``--torch-root``): the cache inside torch, ``torch_aotcache``
           blocked from import (the session fails if the tree is not patched).

``--torch-root DIR`` puts ``DIR`` first on the path of every mode's process.

Both modes also provide, as builtins, the few test-helper names that some
commits of the file use without importing (``SITECUSTOMIZE``).  Processes
the file's tests spawn run without the conftest: in the ``ours`` mode they
use torch's own cache (those tests compute keys with upstream's pickler).

The modes run side by side, each in its own process and Inductor cache dir,
and the script prints passed / failed / skipped per test class for each,
then every test that failed.  Exit status: 0 when the ``ours`` (or
``patched``) run, or the only run, has no failure or error, 1 otherwise, 2
when a run could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Names some commits of upstream's file use without importing them (they
# come from torch's test helpers).  Both modes provide them as builtins, in
# every Python process of the run (the file's tests spawn processes that
# import it again): a ``sitecustomize`` on PYTHONPATH defines them, importing
# torch only when a decorator is applied.  A name the file defines itself
# takes precedence over a builtin.
SITECUSTOMIZE = '''
import builtins


def _lazy_decorator(name):
    def decorator(fn):
        import torch.testing._internal.triton_utils as triton_utils

        return getattr(triton_utils, name)(fn)

    decorator.__name__ = name
    return decorator


for _name in ("requires_cuda_and_triton", "requires_gpu_and_triton"):
    if not hasattr(builtins, _name):
        setattr(builtins, _name, _lazy_decorator(_name))
'''

CONFTEST = {
    "ours": f'''
import sys
sys.path.insert(0, {REPO_ROOT!r})
import torch_aotcache
if not torch_aotcache.is_installed():
    raise SystemExit("torch_aotcache did not install itself; nothing to test")
print("upstream_tests: torch_aotcache", torch_aotcache.__file__, file=sys.stderr)
''',
    "frames": f'''
import os, sys
sys.path.insert(0, {REPO_ROOT!r})
import torch_aotcache
if not torch_aotcache.is_installed() or os.environ.get("TORCH_AOTCACHE_DYNAMO") != "1":
    raise SystemExit("torch_aotcache with its frame cache is not in place; nothing to test")
print("upstream_tests: torch_aotcache with its frame cache", torch_aotcache.__file__, file=sys.stderr)
''',
    "stock": '''
import sys

def pytest_sessionfinish(session, exitstatus):
    if "torch_aotcache" in sys.modules:
        raise SystemExit("stock run imported torch_aotcache")
''',
    # A torch tree patched by tools/upstream_patch.py (--torch-root): the
    # cache inside torch, torch_aotcache blocked from import.
    "patched": '''
import importlib.abc
import sys


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch_aotcache" or name.startswith("torch_aotcache."):
            raise ImportError("torch_aotcache is blocked in a patched-torch run")


sys.meta_path.insert(0, _Block())
import torch._functorch._aot_autograd.autograd_cache as _ac

_owner = vars(_ac.AOTAutogradCache)["try_load"].__func__.__module__
if not _owner.startswith("torch._functorch._aot_autograd.aotcache"):
    raise SystemExit(f"this torch ({_ac.__file__}) is not patched: try_load is {_owner}'s")
print("upstream_tests: patched torch", _ac.__file__, file=sys.stderr)
''',
}


@dataclass
class ClassResult:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def cell(self) -> str:
        return f"{self.passed} / {self.failed} / {self.skipped}"


@dataclass
class RunResult:
    mode: str
    returncode: int
    seconds: float
    classes: dict[str, ClassResult] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    log_tail: str = ""

    def totals(self) -> ClassResult:
        t = ClassResult()
        for c in self.classes.values():
            t.passed += c.passed
            t.failed += c.failed
            t.skipped += c.skipped
        return t


def parse_junit(path: str, mode: str, returncode: int, seconds: float) -> RunResult:
    result = RunResult(mode, returncode, seconds)
    classes: dict[str, ClassResult] = defaultdict(ClassResult)
    for case in ET.parse(path).getroot().iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1] or "<module>"
        outcome = classes[cls]
        if case.find("failure") is not None or case.find("error") is not None:
            outcome.failed += 1
            result.failures.append(f"{cls}::{case.get('name')}")
        elif case.find("skipped") is not None:
            outcome.skipped += 1
        else:
            outcome.passed += 1
    result.classes = dict(sorted(classes.items()))
    return result


def start(mode: str, test_file: str, work: str, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str, str]:
    folder = os.path.join(work, mode)
    os.makedirs(folder)
    shutil.copyfile(test_file, os.path.join(folder, os.path.basename(test_file)))
    with open(os.path.join(folder, "conftest.py"), "w") as f:
        f.write(CONFTEST[mode])
    site = os.path.join(work, "site")
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, "sitecustomize.py"), "w") as f:
        f.write(SITECUSTOMIZE)
    junit = os.path.join(args.junit_dir or work, f"{mode}.xml")
    log_path = os.path.join(args.junit_dir or work, f"{mode}.log")
    env = dict(os.environ)
    env.pop("TORCH_AOTCACHE_DISABLE", None)
    env.pop("TORCH_AOTCACHE_DYNAMO", None)
    if mode == "frames":
        env["TORCH_AOTCACHE_DYNAMO"] = "1"
    env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(work, f"inductor-{mode}")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (site, args.torch_root, env.get("PYTHONPATH"))))
    cmd = [
        sys.executable, "-m", "pytest", os.path.basename(test_file), "-q", "-p", "no:cacheprovider",
        "--junitxml", junit, "-o", "junit_family=xunit2",
    ]
    if args.k:
        cmd += ["-k", args.k]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, junit, log_path


def table(results: list[RunResult]) -> list[str]:
    names = sorted({c for r in results for c in r.classes})
    head = ["class"] + [f"{r.mode}: passed / failed / skipped" for r in results]
    rows = [[n] + [r.classes.get(n, ClassResult()).cell() for r in results] for n in names]
    rows.append(["total"] + [r.totals().cell() for r in results])
    widths = [max(len(row[i]) for row in [head] + rows) for i in range(len(head))]
    fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"  # noqa: E731
    return [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("test_file", help="a copy of upstream's test/dynamo/test_aot_autograd_cache.py")
    parser.add_argument(
        "--modes", default="stock,ours", help="comma-separated: stock, ours, frames, patched (default: stock,ours)"
    )
    parser.add_argument(
        "--torch-root", default=None,
        help="import torch from this folder (e.g. a tree patched by tools/upstream_patch.py; needed by 'patched')",
    )
    parser.add_argument("-k", default=None, help="pytest -k expression")
    parser.add_argument("--junit-dir", default=None, help="keep the junit XML and logs here")
    parser.add_argument("--json", default=None, help="write the per-class results here")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run (default 3600)")
    args = parser.parse_args(argv)

    test_file = os.path.abspath(args.test_file)
    if not os.path.isfile(test_file):
        print(f"no such file: {test_file}", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in CONFTEST]
    if unknown or not modes:
        print(f"unknown modes {unknown}; use stock, ours, frames or patched", file=sys.stderr)
        return 2
    if "patched" in modes and not args.torch_root:
        print("the patched mode needs --torch-root", file=sys.stderr)
        return 2
    if args.torch_root:
        args.torch_root = os.path.abspath(args.torch_root)
    if args.junit_dir:
        os.makedirs(args.junit_dir, exist_ok=True)

    work = tempfile.mkdtemp(prefix="tac-upstream-tests-")
    try:
        t0 = time.monotonic()
        runs = {m: start(m, test_file, work, args) for m in modes}
        results = []
        for mode, (proc, junit, log_path) in runs.items():
            try:
                rc = proc.wait(timeout=max(1.0, args.timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
                print(f"{mode}: timed out after {args.timeout:.0f} s", file=sys.stderr)
            seconds = time.monotonic() - t0
            with open(log_path, "rb") as f:
                tail = f.read()[-3000:].decode("utf-8", "replace")
            if not os.path.exists(junit):
                print(f"{mode}: pytest wrote no results (exit {rc}); its output ends:\n{tail}", file=sys.stderr)
                return 2
            result = parse_junit(junit, mode, rc, seconds)
            result.log_tail = tail
            results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import torch

    print(f"upstream's test file: {test_file}")
    print(f"torch {torch.__version__}, Python {sys.version.split()[0]}")
    for line in table(results):
        print(line)
    for r in results:
        print(f"{r.mode}: pytest exit {r.returncode}, {r.seconds:.0f} s")
        for name in r.failures:
            print(f"  FAILED {name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "torch": torch.__version__,
                    "runs": {
                        r.mode: {
                            "returncode": r.returncode,
                            "seconds": round(r.seconds, 1),
                            "classes": {k: vars(v) for k, v in r.classes.items()},
                            "failures": r.failures,
                        }
                        for r in results
                    },
                },
                f,
                indent=2,
            )
    judged = next((r for r in results if r.mode in ("ours", "patched", "frames")), results[-1])
    return 1 if judged.totals().failed else 0


if __name__ == "__main__":
    sys.exit(main())
