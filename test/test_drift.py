"""
Note [Drift fails safe] (installer/drift.py): a part that mirrors upstream code runs
only while the upstream functions it mirrors are the ones it was written for.

In a copied torch tree whose ``compile_fx._compile_fx_main`` was edited, a
warm process takes upstream's path (no front-door hit, ``drift_front_door``
counted and warned once), still hits our store, and equals eager; the
unedited tree takes the front door.  In-process: the digest ignores comments
and layout, follows code, and a part whose recorded digest differs is off.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import unittest
import warnings
from typing import Any

import torch

from common import child_env, REPO_ROOT, run_child, slow
from torch_aotcache import _compat
from torch_aotcache.installer import drift


SITE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
EDITED = os.path.join("torch", "_inductor", "compile_fx.py")

WORKER = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import torch
    import torch_aotcache
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    x = torch.randn(5, 8)
    ref = model(x)
    ref.sum().backward()
    ref_grad = model[0].weight.grad.clone()
    model.zero_grad()
    out = torch.compile(model)(x)
    out.sum().backward()
print(json.dumps({
    "torch_file": torch.__file__,
    "aot": {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")},
    "ours": dict(counters["torch_aotcache"]),
    "equal": bool(torch.allclose(out, ref, atol=1e-6) and torch.allclose(model[0].weight.grad, ref_grad, atol=1e-6)),
    "drift_warnings": [str(w.message) for w in caught if "stays off" in str(w.message)],
}))
"""


def _edit_compile_fx_main(source: str) -> str:
    """``_compile_fx_main`` with one statement added at the top of its body
    (same behaviour, other code)."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "_compile_fx_main":
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
                first = node.body[1]  # after the docstring
            lines = source.splitlines(keepends=True)
            indent = lines[first.lineno - 1][: first.col_offset]
            lines.insert(first.lineno - 1, f"{indent}_edited_locally = True\n")
            return "".join(lines)
    raise AssertionError("_compile_fx_main not found")


@slow
@unittest.skipUnless(_compat.front_door_release(), "no mirrored parts run on this torch release")
class TestEditedTorchTree(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="tac-drift-")
        cls.root = os.path.join(cls.tmp, "tree")
        os.makedirs(cls.root)
        linked = subprocess.run(["cp", "-al", os.path.join(SITE_ROOT, "torch"), cls.root], capture_output=True)
        if linked.returncode != 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise unittest.SkipTest("cannot hard-link the torch tree here")
        path = os.path.join(cls.root, EDITED)
        with open(path, encoding="utf-8") as f:
            edited = _edit_compile_fx_main(f.read())
        os.unlink(path)  # a new file: never write through the link
        with open(path, "w", encoding="utf-8") as f:
            f.write(edited)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_worker(self, tree: str | None, cache_dir: str) -> dict[str, Any]:
        env = child_env(
            {"TORCHINDUCTOR_CACHE_DIR": cache_dir}, path=[p for p in (tree, REPO_ROOT) if p], clean=True
        )
        proc = run_child(["-c", textwrap.dedent(WORKER)], env, cwd=self.tmp, timeout=900)
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if tree is not None:
            self.assertTrue(result["torch_file"].startswith(tree), result["torch_file"])
        return result

    def test_edited_mirror_falls_back_to_upstreams_path(self) -> None:
        cache_dir = tempfile.mkdtemp(dir=self.tmp)
        cold = self.run_worker(self.root, cache_dir)
        self.assertTrue(cold["equal"], cold)
        self.assertEqual(cold["aot"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        warm = self.run_worker(self.root, cache_dir)
        self.assertTrue(warm["equal"], warm)
        self.assertEqual(warm["aot"], {"autograd_cache_hit": 1})
        # Our store still hits, through compile_fx: the front door stayed off.
        self.assertEqual(warm["ours"].get("front_door_hits", 0), 0, warm)
        self.assertEqual(warm["ours"].get("drift_front_door"), 1, warm)
        self.assertNotIn("drift_light_post_compile", warm["ours"])
        self.assertEqual(len([w for w in warm["drift_warnings"] if "front door" in w]), 1, warm)
        self.assertIn("_compile_fx_main", " ".join(warm["drift_warnings"]))

    def test_unedited_install_takes_the_front_door(self) -> None:
        cache_dir = tempfile.mkdtemp(dir=self.tmp)
        self.run_worker(None, cache_dir)
        warm = self.run_worker(None, cache_dir)
        self.assertTrue(warm["equal"], warm)
        self.assertEqual(warm["aot"], {"autograd_cache_hit": 1})
        self.assertEqual(warm["ours"].get("front_door_hits"), 1, warm)
        self.assertFalse([k for k in warm["ours"] if k.startswith("drift_")], warm)
        self.assertEqual(warm["drift_warnings"], [])


class TestDigests(unittest.TestCase):
    SOURCE = '''
class C:
    def f(self, x):
        return x + 1

def g(a, b=2):
    """Doc."""
    return a * b
'''

    def digest(self, source: str, qualname: str) -> str | None:
        return drift.function_digest(ast.parse(source), qualname)

    def test_layout_and_comments_do_not_count(self) -> None:
        relaid = self.SOURCE.replace("    return a * b", "    # a comment\n\n    return a  *  b")
        self.assertEqual(self.digest(self.SOURCE, "g"), self.digest(relaid, "g"))
        self.assertEqual(self.digest(self.SOURCE, "C.f"), self.digest("\n\n" + self.SOURCE, "C.f"))

    def test_code_counts(self) -> None:
        self.assertNotEqual(self.digest(self.SOURCE, "g"), self.digest(self.SOURCE.replace("a * b", "a + b"), "g"))
        self.assertNotEqual(self.digest(self.SOURCE, "g"), self.digest(self.SOURCE.replace("b=2", "b=3"), "g"))
        self.assertNotEqual(self.digest(self.SOURCE, "g"), self.digest(self.SOURCE.replace("Doc.", "Other."), "g"))
        self.assertIsNone(self.digest(self.SOURCE, "h"))
        self.assertIsNone(self.digest(self.SOURCE, "C"))

    def test_recorded_digests_match_the_installed_torch(self) -> None:
        release = _compat.torch_release()
        if release not in _compat.FRONT_DOOR_RELEASES:
            self.skipTest("no mirrored parts on this release")
        current, _ = drift.current_digests(drift.names_for(release))
        self.assertEqual(current, _compat.MIRROR_DIGESTS[release])

    def test_a_part_written_for_fewer_releases_is_off_elsewhere_without_a_warning(self) -> None:
        release = _compat.torch_release()
        drift.reset()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                self.assertEqual(drift.intact("frames"), release in _compat.FRAME_RELEASES)
            self.assertEqual("frames" in drift.parts_for(release), release in _compat.FRAME_RELEASES)
        finally:
            drift.reset()

    def test_a_changed_digest_turns_its_part_off(self) -> None:
        release = _compat.torch_release()
        if release not in _compat.FRONT_DOOR_RELEASES:
            self.skipTest("no mirrored parts on this release")
        name = drift.MIRRORS["light_post_compile"][0]
        recorded = dict(_compat.MIRROR_DIGESTS[release])
        changed = dict(recorded, **{name: "0" * 16})
        drift.reset()
        try:
            _compat.MIRROR_DIGESTS[release] = changed
            with self.assertWarnsRegex(RuntimeWarning, "light post compile stays off"):
                self.assertFalse(drift.intact("light_post_compile"))
            self.assertTrue(drift.intact("front_door"))
        finally:
            _compat.MIRROR_DIGESTS[release] = recorded
            drift.reset()
        self.assertTrue(drift.intact("light_post_compile"))


if __name__ == "__main__":
    unittest.main()
