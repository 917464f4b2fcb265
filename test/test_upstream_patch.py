"""
``tools/upstream_patch.py`` carries the cache into torch itself.

The installed torch's tree is copied (hard links; the files the patch changes
are copied for real first, so the installed torch is never written to), the
patch is applied with ``git apply``, and our contract checks run in fresh
processes that import torch from the copy with ``torch_aotcache`` blocked
from import: miss and save, a hit in another process with eager's results,
dynamic-shape guards, a bypass with its reason, counters, the knobs in
``torch._functorch.config``, and ``TORCH_AOTCACHE_DISABLE``.  This runs on
whichever supported release the interpreter has (``_compat.SUPPORTED_RELEASES``).

A tree shaped like PyTorch's main branch (the installed sources beside a
``version.txt`` of ``2.16.0a0``) gets the cut for the newest supported release
and a note on stderr; trees of unsupported releases are refused, and
``--output`` never leaves a partial or stale-temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from typing import Any

import torch

from torch_aotcache import _compat

from common import child_env, run_child, slow, TOOLS

# Every test here starts other processes or compiles many programs (CONTRIBUTING.md, "Tests").
pytestmark = slow

sys.path.insert(0, TOOLS)

import upstream_patch  # noqa: E402


SITE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))

PRELUDE = """
import importlib.abc, json, sys


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch_aotcache" or name.startswith("torch_aotcache."):
            raise ImportError("torch_aotcache is blocked in this process")


sys.meta_path.insert(0, _Block())
import torch
from torch._dynamo.utils import counters
import torch._functorch._aot_autograd.autograd_cache as ac


def report(**extra):
    out = {
        "torch_file": torch.__file__,
        "aot": {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")},
        "ours": dict(counters["torch_aotcache"]),
        "try_load": vars(ac.AOTAutogradCache)["try_load"].__func__.__module__,
        "imported": sorted(m for m in sys.modules if m.startswith("torch_aotcache")),
    }
    out.update(extra)
    print(json.dumps(out))
"""

TRAIN = """
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.GELU(), torch.nn.Linear(12, 3))
ref = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.GELU(), torch.nn.Linear(12, 3))
ref.load_state_dict(model.state_dict())
x = torch.randn(4, 6)
torch.compile(model)(x).square().mean().backward()
ref(x).square().mean().backward()
same = all(torch.allclose(a.grad, b.grad, atol=1e-6) for a, b in zip(model.parameters(), ref.parameters()))
report(grads_match=same)
"""

DYNAMIC = """
def f(x, y):
    return (x * 2 + y).sin().sum(0)
n = int(sys.argv[1])
a, b = torch.randn(n, 3), torch.randn(n, 3)
torch._dynamo.mark_dynamic(a, 0)
torch._dynamo.mark_dynamic(b, 0)
report(close=bool(torch.allclose(torch.compile(f)(a, b), f(a, b), rtol=1e-4, atol=1e-3)))
"""

BYPASS = """
import logging
records = []
class _Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("torch._functorch._aot_autograd.aotcache").addHandler(_Keep())
logging.getLogger("torch._functorch._aot_autograd.aotcache").setLevel(logging.INFO)

@torch._dynamo.allow_in_graph
def opaque(x):
    return x * 5

out = torch.compile(lambda x: opaque(x) + 1)(torch.ones(3))
report(out=out.tolist(), reasons=[m for m in records if "Bypassing" in m])
"""

KNOBS = """
import torch._functorch.config as fc
from torch._functorch._aot_autograd.aotcache import config as view
report(store_dir=fc.aotcache_store_dir, view_store_dir=view.store_dir,
       self_contained=fc.aotcache_self_contained)
"""


def _symlink_tree(src_root: str, dst_root: str, touched: list[str]) -> None:
    """``src_root/torch`` as real folders along the touched paths and
    symbolic links for everything else."""
    real_dirs = {"torch"}
    for rel in touched:
        parts = rel.split("/")[:-1]
        real_dirs |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    for rel_dir in sorted(real_dirs):
        os.makedirs(os.path.join(dst_root, rel_dir), exist_ok=True)
        for name in os.listdir(os.path.join(src_root, rel_dir)):
            rel = f"{rel_dir}/{name}"
            if rel in real_dirs or name == "__pycache__":
                continue
            os.symlink(os.path.join(src_root, rel), os.path.join(dst_root, rel))


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@unittest.skipIf(shutil.which("git") is None, "git is needed to apply the patch")
class TestPatchedTorch(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="tac-patched-torch-")
        cls.root = os.path.join(cls.tmp, "tree")
        os.makedirs(cls.root)
        cls.touched = [upstream_patch.AUTOGRAD_CACHE, upstream_patch.FUNCTORCH_CONFIG, upstream_patch.AOT_AUTOGRAD]
        cls.before = {p: _sha(os.path.join(SITE_ROOT, p)) for p in cls.touched}
        cls.patch = upstream_patch.make_patch(SITE_ROOT)
        # Hard links for the tree (symbolic ones where the temp dir is on
        # another file system); the files the patch changes become copies
        # first, so nothing is written through a link into the real install.
        linked = subprocess.run(
            ["cp", "-al", os.path.join(SITE_ROOT, "torch"), cls.root], capture_output=True
        )
        if linked.returncode != 0 or os.environ.get("TAC_TEST_SYMLINK_TREE"):
            shutil.rmtree(os.path.join(cls.root, "torch"), ignore_errors=True)
            _symlink_tree(SITE_ROOT, cls.root, cls.touched)
        for rel in cls.touched:
            path = os.path.join(cls.root, rel)
            os.unlink(path)
            shutil.copyfile(os.path.join(SITE_ROOT, rel), path)
        patch_file = os.path.join(cls.tmp, "aotcache.patch")
        with open(patch_file, "w", encoding="utf-8") as f:
            f.write(cls.patch)
        subprocess.run(["git", "apply", "--whitespace=nowarn", patch_file], cwd=cls.root, check=True)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_patched(self, body: str, cache_dir: str, *args: str, env: dict[str, str] | None = None,
                    prelude: str = PRELUDE) -> dict[str, Any]:
        full_env = child_env({"TORCHINDUCTOR_CACHE_DIR": cache_dir, **(env or {})}, path=[self.root], clean=True)
        proc = run_child(
            ["-c", textwrap.dedent(prelude) + textwrap.dedent(body), *args],
            full_env,
            cwd=self.tmp,  # not the repo: nothing of torch_aotcache on sys.path
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        self.assertTrue(result["torch_file"].startswith(self.root), result["torch_file"])
        self.assertEqual(result["imported"], [])
        return result

    def new_cache_dir(self) -> str:
        return tempfile.mkdtemp(dir=self.tmp)

    def test_patch_is_git_style(self) -> None:
        self.assertIn(f"diff --git a/{upstream_patch.AUTOGRAD_CACHE} b/{upstream_patch.AUTOGRAD_CACHE}", self.patch)
        self.assertIn(f"+++ b/{upstream_patch.TARGET_PACKAGE}/autograd_cache.py", self.patch)
        self.assertNotIn("torch_aotcache/", "".join(
            line for line in self.patch.splitlines(keepends=True) if line.startswith(("---", "+++"))
        ))

    def test_installed_torch_is_untouched(self) -> None:
        self.assertEqual({p: _sha(os.path.join(SITE_ROOT, p)) for p in self.touched}, self.before)
        self.assertFalse(os.path.exists(os.path.join(SITE_ROOT, upstream_patch.TARGET_PACKAGE)))

    def test_other_releases_are_dropped(self) -> None:
        with open(os.path.join(self.root, upstream_patch.TARGET_PACKAGE, "_compat.py")) as f:
            compat = f.read()
        release = upstream_patch.torch_release(SITE_ROOT)
        self.assertIn(f'SUPPORTED_RELEASES = ("{release}",)', compat)
        self.assertNotRegex(compat, r"(?m)^\s*# \[(end )?release")
        self.assertIn(release, upstream_patch.supported_releases())
        kept = {"2.11": "try_load_v2_11", "2.13": "try_load_v2_13", "2.14": "try_load_v2_15", "2.15": "try_load_v2_15"}
        # One adapter per supported release: a release added to _compat needs its line here.
        self.assertEqual(set(kept), set(_compat.SUPPORTED_RELEASES))
        self.assertIn(kept[release], compat)
        for other in set(kept.values()) - {kept[release]}:
            self.assertNotIn(other, compat)
        # Inside torch the module belongs to the torch around it.
        self.assertIn("    return SUPPORTED_RELEASES[0]\n", compat)
        self.assertNotIn("torch.__version__", compat)

    def test_miss_save_then_hit_in_another_process(self) -> None:
        cache = self.new_cache_dir()
        cold = self.run_patched(TRAIN, cache)
        self.assertEqual(cold["aot"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assertTrue(cold["try_load"].startswith("torch._functorch._aot_autograd.aotcache"))
        self.assertTrue(cold["grads_match"])
        self.assertTrue(os.path.isdir(os.path.join(cache, "torch_aotcache", "entries")))
        warm = self.run_patched(TRAIN, cache)
        self.assertEqual(warm["aot"], {"autograd_cache_hit": 1})
        self.assertTrue(warm["grads_match"])
        self.assertGreater(warm["ours"].get("kernels_loaded", 0), 0)

    def test_aot_autograd_imported_first(self) -> None:
        # aot_autograd.py imports autograd_cache.py before it defines what
        # the cache patches (functorch.compile, Dynamo's debug backends and
        # upstream's cross-process tests import it first): the install waits
        # for the end of aot_autograd.py's import.
        first = PRELUDE.replace("import torch\n", "import torch\nimport functorch.compile  # noqa: F401\n", 1)
        self.assertNotEqual(first, PRELUDE)
        cache = self.new_cache_dir()
        cold = self.run_patched(TRAIN, cache, prelude=first)
        self.assertEqual(cold["aot"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assertTrue(cold["try_load"].startswith("torch._functorch._aot_autograd.aotcache"), cold["try_load"])
        warm = self.run_patched(TRAIN, cache, prelude=first)
        self.assertEqual(warm["aot"], {"autograd_cache_hit": 1})
        self.assertTrue(warm["grads_match"])

    def test_guards(self) -> None:
        cache = self.new_cache_dir()
        self.assertEqual(self.run_patched(DYNAMIC, cache, "5")["aot"],
                         {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        hit = self.run_patched(DYNAMIC, cache, "7")
        self.assertEqual(hit["aot"], {"autograd_cache_hit": 1})
        self.assertTrue(hit["close"])
        outside = self.run_patched(DYNAMIC, cache, "5000")
        self.assertEqual(outside["aot"].get("autograd_cache_guard_miss"), 1)
        self.assertEqual(outside["aot"].get("autograd_cache_saved"), 1)
        self.assertTrue(outside["close"])

    def test_bypass_with_reason(self) -> None:
        result = self.run_patched(BYPASS, self.new_cache_dir())
        self.assertEqual(result["aot"], {"autograd_cache_bypass": 1})
        self.assertEqual(result["out"], [6.0, 6.0, 6.0])
        self.assertTrue(any("opaque" in r for r in result["reasons"]), result["reasons"])

    def test_knobs_live_in_functorch_config(self) -> None:
        store = os.path.join(self.tmp, "store-apart")
        result = self.run_patched(KNOBS, self.new_cache_dir(), env={"TORCH_AOTCACHE_DIR": store})
        self.assertEqual(result["store_dir"], store)
        self.assertEqual(result["view_store_dir"], store)
        self.assertTrue(result["self_contained"])
        cache = self.new_cache_dir()
        self.run_patched(TRAIN, cache, env={"TORCH_AOTCACHE_DIR": store})
        self.assertTrue(os.path.isdir(os.path.join(store, "entries")))
        self.assertFalse(os.path.exists(os.path.join(cache, "torch_aotcache")))

    def test_disable_keeps_upstreams_cache(self) -> None:
        result = self.run_patched(TRAIN, self.new_cache_dir(), env={"TORCH_AOTCACHE_DISABLE": "1"})
        self.assertEqual(result["try_load"], "torch._functorch._aot_autograd.autograd_cache")
        self.assertEqual(result["aot"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1})

    @unittest.skipUnless(
        os.path.isfile(os.environ.get("UPSTREAM_TEST_FILE", "")),
        "set UPSTREAM_TEST_FILE to a copy of upstream's test file (CONTRIBUTING.md)",
    )
    def test_upstream_test_file_on_the_patched_torch(self) -> None:
        out = os.path.join(self.tmp, "upstream.json")
        proc = run_child(
            [os.path.join(TOOLS, "upstream_tests.py"),
             os.environ["UPSTREAM_TEST_FILE"], "--modes", "patched", "--torch-root", self.root, "--json", out],
            timeout=3600,
        )
        print(proc.stdout)
        self.assertEqual(proc.returncode, 0, proc.stdout[-4000:] + proc.stderr[-4000:])
        with open(out) as f:
            self.assertEqual(json.load(f)["runs"]["patched"]["failures"], [])

    def test_refuses_a_patched_tree(self) -> None:
        with self.assertRaisesRegex(upstream_patch.PatchError, "exists already"):
            upstream_patch.make_patch(self.root)


def _run_tool(root: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_child([os.path.join(TOOLS, "upstream_patch.py"), "--root", root, *args], timeout=300)


@unittest.skipIf(shutil.which("git") is None, "git is needed to check the patch")
class TestCheckoutTree(unittest.TestCase):
    """A tree shaped like PyTorch's main branch: the installed torch's
    sources (hard links) beside a ``version.txt`` of a pre-release newer than
    every supported release, and no ``torch/version.py`` (a checkout that was
    never built)."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="tac-checkout-")
        cls.root = os.path.join(cls.tmp, "pytorch")
        os.makedirs(cls.root)
        linked = subprocess.run(["cp", "-al", os.path.join(SITE_ROOT, "torch"), cls.root], capture_output=True)
        if linked.returncode != 0:
            shutil.rmtree(os.path.join(cls.root, "torch"), ignore_errors=True)
            _symlink_tree(SITE_ROOT, cls.root, ["torch/version.py"])
        os.unlink(os.path.join(cls.root, "torch", "version.py"))  # the link only: the install keeps its file
        with open(os.path.join(cls.root, "version.txt"), "w") as f:
            f.write("2.16.0a0\n")
        cls.newest = max(upstream_patch.supported_releases(), key=upstream_patch.version_key)
        cls.out = os.path.join(cls.tmp, "out", "aotcache.patch")
        os.makedirs(os.path.dirname(cls.out))
        cls.proc = _run_tool(cls.root, "--output", cls.out)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_install_keeps_its_version_file(self) -> None:
        self.assertTrue(os.path.isfile(os.path.join(SITE_ROOT, "torch", "version.py")))

    def test_cut_for_the_newest_supported_release(self) -> None:
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr)
        self.assertEqual(self.proc.stdout, "")
        lines = self.proc.stderr.splitlines()
        self.assertEqual(len(lines), 1, self.proc.stderr)
        self.assertIn("2.16.0a0", lines[0])
        self.assertIn(os.path.join(self.root, "version.txt"), lines[0])
        self.assertIn(f"cutting the patch for {self.newest}", lines[0])
        with open(self.out, encoding="utf-8") as f:
            patch = f.read()
        self.assertIn(f'+SUPPORTED_RELEASES = ("{self.newest}",)', patch)
        self.assertEqual(os.listdir(os.path.dirname(self.out)), ["aotcache.patch"])

    def test_patch_applies(self) -> None:
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr)
        check = subprocess.run(
            ["git", "apply", "--check", "--whitespace=nowarn", self.out], cwd=self.root, capture_output=True, text=True
        )
        self.assertEqual(check.returncode, 0, check.stderr)

    def test_unsupported_trees_are_refused(self) -> None:
        supported = upstream_patch.supported_releases()
        for version, where in [("2.12.0", "version.txt"), ("3.0.0", "version.txt"), ("2.10.0a0", "version.txt"),
                               ("2.16.0", "version.txt"), ("2.16.0a0+cpu", "torch/version.py")]:
            with self.subTest(version=version, where=where):
                root = tempfile.mkdtemp(dir=self.tmp)
                os.makedirs(os.path.join(root, os.path.dirname(upstream_patch.AUTOGRAD_CACHE)))
                with open(os.path.join(root, upstream_patch.AUTOGRAD_CACHE), "w") as f:
                    f.write("# upstream\n")
                with open(os.path.join(root, where), "w") as f:
                    f.write(version + "\n" if where == "version.txt" else f"__version__ = '{version}'\n")
                out_dir = tempfile.mkdtemp(dir=self.tmp)
                out = os.path.join(out_dir, "aotcache.patch")
                proc = _run_tool(root, "--output", out)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn(f"torch {version} (read from {os.path.join(root, where)})", proc.stderr)
                self.assertIn(", ".join(supported), proc.stderr)
                self.assertEqual(os.listdir(out_dir), [])  # no patch, no temporary file

    def test_failure_keeps_an_earlier_patch(self) -> None:
        out_dir = tempfile.mkdtemp(dir=self.tmp)
        out = os.path.join(out_dir, "aotcache.patch")
        with open(out, "w") as f:
            f.write("earlier\n")
        proc = _run_tool(os.path.join(self.tmp, "nowhere"), "--output", out)
        self.assertEqual(proc.returncode, 2)
        with open(out) as f:
            self.assertEqual(f.read(), "earlier\n")
        self.assertEqual(os.listdir(out_dir), ["aotcache.patch"])

    def test_output_equals_stdout(self) -> None:
        proc = _run_tool(self.root)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(self.out, encoding="utf-8") as f:
            self.assertEqual(f.read(), proc.stdout)


if __name__ == "__main__":
    unittest.main()
