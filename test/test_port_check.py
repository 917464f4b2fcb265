"""
``tools/port_check.py``: two synthetic torch trees and a synthetic package
(a function unchanged, one with another body, one with another signature,
one removed, one added; a patched method, a mirrored function, private
imports and attribute chains), then the installed torch against itself, and
``--digests`` against the package's own run-time digests.  The tool runs
with ``torch`` blocked from import.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import tempfile
import textwrap
import unittest

try:
    import torch
except ImportError:
    raise unittest.SkipTest("torch is not installed") from None

from common import child_env, run_child, slow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO_ROOT, "tools", "port_check.py")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # torch cannot be imported in the tool's process.
    code = (
        "import sys; sys.modules['torch'] = None; "
        f"sys.argv = [{TOOL!r}, *sys.argv[1:]]; import runpy; runpy.run_path({TOOL!r}, run_name='__main__')"
    )
    return run_child(["-c", code, *args], child_env(), timeout=600)


def _write(root: str, rel: str, text: str) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))


OLD_CACHE = """
    from torch._x.base import Base


    def same_fn(a, b=1):
        return a + b


    def body_fn(a):
        return a * 2


    def sig_fn(a, *, flag=False):
        return a


    def gone_fn():
        pass


    class Cache(Base):
        def load(self, key):
            return key

        @staticmethod
        def save(key, value):
            return None
"""

NEW_CACHE = """
    from torch._x.base import Base


    def same_fn(a, b=1):
        # a comment changes no digest
        return a + b


    def body_fn(a):
        return a * 3


    def sig_fn(a, *, flag=True):
        return a


    def added_fn():
        pass


    class Cache(Base):
        def load(self, key):
            return key

        @staticmethod
        def save(key, value, extra=None):
            return None
"""

BASE = """
    class Base:
        def shared(self):
            return 1
"""


def _function_digest_source() -> str:
    path = os.path.join(REPO_ROOT, "torch_aotcache", "installer", "drift.py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "function_digest")
    return ast.get_source_segment(source, node) or ""


class TestPortCheckSyntheticTrees(unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = self.enterContext(tempfile.TemporaryDirectory())

    def make_trees(self) -> tuple[str, str, str]:
        old, new, pkg = (os.path.join(self.tmp, name) for name in ("old", "new", "pkg"))
        for root, cache in ((old, OLD_CACHE), (new, NEW_CACHE)):
            _write(root, "torch/__init__.py", "")
            _write(root, "torch/_x/__init__.py", "")
            _write(root, "torch/_x/base.py", BASE)
            _write(root, "torch/_x/cache.py", cache)
            _write(root, "torch/version.py", "__version__ = '9.9.0'\n")
        _write(pkg, "installer/patching.py", """
            _OWNER_MODULE = "torch._x.cache"
            PATCH_SITES = (
                PatchSite("Cache", "save", "staticmethod", "x:save", {}),
                PatchSite(None, "same_fn", "function", "x:same", {}, module="torch._x.cache"),
            )
        """)
        _write(pkg, "installer/drift.py",
               "import ast\nimport hashlib\n\nMIRRORS = {\"part\": (\"torch._x.cache:body_fn\",)}\n\n\n"
               + _function_digest_source() + "\n")
        _write(pkg, "user.py", """
            import torch
            from torch._x.cache import sig_fn, Cache
            from torch._x import cache as xc


            def use():
                torch._x.cache.gone_fn()
                xc.added_fn()
                Cache.shared(None)
                Cache.load(None, 1).upper()
                return sig_fn(1)
        """)
        return old, new, pkg

    def test_synthetic_trees(self) -> None:
        old, new, pkg = self.make_trees()
        proc = _run("--old", old, "--new", new, "--package", pkg, "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        result = json.loads(proc.stdout)
        status = {(r["group"], r["name"]): r["status"] for r in result["rows"]}
        self.assertEqual(status, {
            ("patched", "torch._x.cache:Cache.save"): "signature changed",
            ("patched", "torch._x.cache:same_fn"): "same",
            ("mirrored", "torch._x.cache:body_fn"): "source changed",
            ("called", "torch._x.cache:sig_fn"): "signature changed",
            ("called", "torch._x.cache:Cache"): "source changed",  # same names, another method body
            ("called", "torch._x.cache:Cache.shared"): "same",  # inherited from Base
            ("called", "torch._x.cache:Cache.load"): "same",  # cut where the call begins
            ("called", "torch._x.cache:gone_fn"): "missing in new",
            ("called", "torch._x.cache:added_fn"): "new only",
        })
        self.assertEqual(result["counts"]["called"]["missing in new"], 1)
        table = _run("--old", old, "--new", new, "--package", pkg)
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertIn("patched (2: 1 same, 1 signature changed)", table.stdout)
        self.assertIn("(a, *, flag=False) -> (a, *, flag=True)", table.stdout)

    def test_digests_of_a_synthetic_tree(self) -> None:
        old, new, pkg = self.make_trees()
        proc = _run("--digests", new, "--package", pkg)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue(
            proc.stdout.startswith('MIRROR_DIGESTS["9.9"] = {\n    "torch._x.cache:body_fn": "'), proc.stdout
        )
        literal = ast.literal_eval(proc.stdout.split("=", 1)[1])
        self.assertNotEqual(
            literal, ast.literal_eval(_run("--digests", old, "--package", pkg).stdout.split("=", 1)[1])
        )

    def test_unreadable_table_is_an_error(self) -> None:
        old, new, pkg = self.make_trees()
        _write(pkg, "installer/patching.py", "PATCH_SITES = tuple(make_sites())\n")
        proc = _run("--old", old, "--new", new, "--package", pkg)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("PATCH_SITES is not a tuple literal", proc.stderr)

    def test_not_a_torch_tree(self) -> None:
        proc = _run("--old", self.tmp, "--new", self.tmp)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("no torch/__init__.py", proc.stderr)


SITE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))


@slow
class TestPortCheckInstalledTorch(unittest.TestCase):
    def test_installed_torch_against_itself(self) -> None:
        proc = _run("--old", SITE_ROOT, "--new", SITE_ROOT, "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        result = json.loads(proc.stdout)
        # Names only another release has (used in its release block) are in neither tree.
        self.assertLessEqual({r["status"] for r in result["rows"]}, {"same", "not found"})
        self.assertEqual({r["status"] for r in result["rows"] if r["group"] != "called"}, {"same"})
        groups = {r["group"] for r in result["rows"]}
        self.assertEqual(groups, {"patched", "mirrored", "called"})
        patched = [r["name"] for r in result["rows"] if r["group"] == "patched"]
        self.assertIn("torch._functorch._aot_autograd.autograd_cache:AOTAutogradCache.try_load", patched)

    def test_digests_agree_with_the_package(self) -> None:
        from torch_aotcache.installer import drift

        proc = _run("--digests", SITE_ROOT, "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        printed = json.loads(proc.stdout)["digests"]
        names = sorted({n for ns in drift.MIRRORS.values() for n in ns})
        self.assertEqual(printed, drift.current_digests(names)[0])


if __name__ == "__main__":
    unittest.main()
