"""
Activation: install, uninstall, import order, the disable variable and
unsupported releases.  Each import-order case runs in its own interpreter.
"""

from __future__ import annotations

import inspect
import json
import re
import unittest
import unittest.mock

import torch
import torch._functorch._aot_autograd.autograd_cache as upstream_cache
import torch._functorch._aot_autograd.graph_compile as graph_compile
import torch._functorch.aot_autograd as aot_autograd_module

import torch_aotcache
from torch_aotcache import _compat
from torch_aotcache.installer import patching

from common import run_python, slow


def _raw_attrs() -> dict[str, object]:
    out = {}
    for site in patching.sites():
        owner = patching._owner_object(site)
        out[site.name] = patching._raw(owner, site.attr)
    return out


class TestInstall(unittest.TestCase):
    def tearDown(self) -> None:
        torch_aotcache.install()
        self.assertTrue(torch_aotcache.is_installed())

    def test_installed_by_import(self) -> None:
        self.assertTrue(torch_aotcache.is_installed())
        from torch_aotcache import autograd_cache as ours

        self.assertIs(upstream_cache.autograd_cache_key, ours.autograd_cache_key)

    def test_install_twice_changes_nothing(self) -> None:
        before = _raw_attrs()
        saved = dict(patching._saved)
        self.assertTrue(torch_aotcache.install())
        self.assertEqual(_raw_attrs(), before)
        self.assertEqual(patching._saved, saved)
        for k, original in saved.items():
            self.assertIs(patching._saved[k], original)

    def test_uninstall_restores_identical_objects(self) -> None:
        originals = dict(patching._saved)
        self.assertEqual(len(originals), len(patching.sites()))
        torch_aotcache.uninstall()
        self.assertFalse(torch_aotcache.is_installed())
        now = _raw_attrs()
        for site in patching.sites():
            self.assertIs(now[site.name], originals[(site.module, site.owner, site.attr)], site.name)
        # Uninstalling twice is harmless, and install brings ours back.
        torch_aotcache.uninstall()
        self.assertTrue(torch_aotcache.install())
        self.assertIsNot(upstream_cache.AOTAutogradCache.__dict__["try_load"], originals[
            (patching._OWNER_MODULE, "AOTAutogradCache", "try_load")
        ])

    def test_get_original(self) -> None:
        original = patching.get_original(upstream_cache.AOTAutogradCache, "clear")
        self.assertEqual(original.__module__, upstream_cache.__name__)


class TestPatchTable(unittest.TestCase):
    """The table of patch sites is complete and each target has the expected signature."""

    def tearDown(self) -> None:
        torch_aotcache.install()
        self.assertTrue(torch_aotcache.is_installed())

    def test_every_call_site_is_covered(self) -> None:
        called = set()
        for module in (aot_autograd_module, graph_compile):
            called |= set(re.findall(r"AOTAutogradCache\.(\w+)\(", inspect.getsource(module)))
        from torch._inductor import standalone_compile

        called |= set(re.findall(r"AOTAutogradCache\.(\w+)\(", inspect.getsource(standalone_compile)))
        from torch._functorch._aot_autograd import aot_autograd_result

        called |= set(re.findall(r"AOTAutogradCache\.(\w+)\(", inspect.getsource(aot_autograd_result)))
        from torch.compiler import _cache  # noqa: F401 - Mega-Cache populates through the class

        called.add("_write_to_local_cache")
        patched = {s.attr for s in patching.PATCH_SITES if s.owner == "AOTAutogradCache"}
        self.assertTrue(called, "found no call sites: the scan is broken")
        missing = called - patched - patching.UNPATCHED_BY_DESIGN
        self.assertEqual(missing, set(), "call sites reach upstream code we do not replace")
        self.assertIn("try_load", called)

    def test_key_function_is_reached_as_module_global(self) -> None:
        src = inspect.getsource(upstream_cache.AOTAutogradCache.__dict__["try_load"].__func__
                                if not torch_aotcache.is_installed()
                                else patching._saved[(patching._OWNER_MODULE, "AOTAutogradCache", "try_load")].__func__)
        self.assertIn("autograd_cache_key(", src)

    def _checked_sites(self) -> list[patching.PatchSite]:
        """The sites of this release: the cache's, and the frame cache's where it was checked against it."""
        release = _compat.torch_release()
        return [s for s in patching.PATCH_SITES if s.group == "cache" or release in s.params]

    def test_signatures_match_this_release(self) -> None:
        release = _compat.torch_release()
        self.assertIsNotNone(release)
        checked = self._checked_sites()
        self.assertEqual(release in _compat.FRAME_RELEASES, any(s.group == "frames" for s in checked))
        for site in checked:
            self.assertIsNone(patching.expected_signature_problem(site, release), site.name)
        self.assertEqual(patching.group_problems("frames") == [], release in _compat.FRAME_RELEASES)

    def test_every_site_is_in_a_known_group(self) -> None:
        self.assertEqual({s.group for s in patching.PATCH_SITES}, {"cache", "frames"})
        for site in patching.sites("frames"):
            self.assertTrue(site.wraps, site.name)
            self.assertFalse(site.optional, site.name)  # the frame cache installs all of them or none
            self.assertLessEqual(set(site.params), set(_compat.FRAME_RELEASES), site.name)

    def test_replacements_accept_upstream_arguments(self) -> None:
        release = _compat.torch_release()
        for site in self._checked_sites():
            params = list(inspect.signature(site.replacement_for(release)).parameters.values())
            if site.kind == "classmethod":
                params = params[1:]
            if any(p.kind is p.VAR_POSITIONAL for p in params):
                continue
            # Upstream's arguments fit; parameters a later release adds
            # (2.14's act_input_paths) have defaults.
            upstream_count = len(site.params[release])
            self.assertGreaterEqual(len(params), upstream_count, site.name)
            extra = params[upstream_count:]
            self.assertTrue(all(p.default is not p.empty for p in extra), site.name)

    def test_signature_mismatch_leaves_torch_untouched(self) -> None:
        torch_aotcache.uninstall()
        before = _raw_attrs()
        cache = patching.sites()
        bad = cache[2]
        fake = patching.PatchSite(bad.owner, bad.attr, bad.kind, bad.replacement, {r: ("nope",) for r in _compat.SUPPORTED_RELEASES})
        sites = (cache[0], fake) + cache[2:]
        with unittest.mock.patch.object(patching, "PATCH_SITES", sites):
            with self.assertWarnsRegex(RuntimeWarning, "left torch untouched"):
                self.assertFalse(patching.install())
        self.assertEqual(_raw_attrs(), before)
        self.assertFalse(torch_aotcache.is_installed())

    def test_optional_site_mismatch_is_skipped(self) -> None:
        torch_aotcache.uninstall()
        cache = patching.sites()
        opt = cache[-2]
        self.assertTrue(opt.optional)
        fake = patching.PatchSite(
            opt.owner, opt.attr, opt.kind, opt.replacement,
            {r: ("nope",) for r in _compat.SUPPORTED_RELEASES}, module=opt.module, optional=True,
        )
        with unittest.mock.patch.object(patching, "PATCH_SITES", cache[:-2] + (fake,) + cache[-1:]):
            self.assertTrue(patching.install())
            self.assertFalse(patching.is_patched(fake))
        self.assertTrue(torch_aotcache.is_installed())
        torch_aotcache.uninstall()


@slow
class TestImportOrder(unittest.TestCase):
    PROBE = """
        import json, sys
        import torch._functorch._aot_autograd.autograd_cache as ac
        import torch_aotcache
        from torch_aotcache import autograd_cache as ours
        print(json.dumps({
            "installed": torch_aotcache.is_installed(),
            "key_is_ours": ac.autograd_cache_key is ours.autograd_cache_key,
            "try_load_ours": ac.AOTAutogradCache.try_load.__module__.startswith("torch_aotcache"),
        }))
    """

    def _probe(self, prelude: str, env: dict[str, str] | None = None) -> dict[str, bool]:
        proc = run_python(prelude + "\n" + self.PROBE.replace("\n        ", "\n"), env=env)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def test_torch_first(self) -> None:
        got = self._probe("import torch\nimport torch._functorch.aot_autograd")
        self.assertEqual(got, {"installed": True, "key_is_ours": True, "try_load_ours": True})

    def test_package_first(self) -> None:
        # The probe's import of upstream's module places trampolines; the
        # key function is ours once torch first calls into the cache.
        got = self._probe(
            "import torch_aotcache\nimport torch\n"
            "import torch._functorch._aot_autograd.autograd_cache as ac\n"
            "from torch_aotcache.installer import patching\n"
            "assert not patching.is_active() and torch_aotcache.is_installed()\n"
            "ac.AOTAutogradCache.generate_guards_expression({})\n"
            "assert patching.is_active()"
        )
        self.assertEqual(got, {"installed": True, "key_is_ours": True, "try_load_ours": True})

    def test_a_module_that_imports_torch_first(self) -> None:
        # ``_compat`` imports torch: its first importer, before torch, runs
        # the watcher while the patch table cannot be read yet.
        proc = run_python(
            "import warnings\nwarnings.simplefilter('error')\n"
            "import torch_aotcache._compat\nimport torch_aotcache, torch\n"
            "import torch._functorch._aot_autograd.autograd_cache as ac\n"
            "from torch_aotcache.installer import patching\n"
            "ac.AOTAutogradCache.generate_guards_expression({})\n"
            "print(patching.is_active())"
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertEqual(proc.stdout.split()[-1:], ["True"])

    def test_import_costs_no_torch(self) -> None:
        # See Note [Lazy install] in installer/lazy.py.
        proc = run_python(
            "import sys, torch_aotcache\n"
            "print(torch_aotcache.is_installed(), 'torch' in sys.modules)"
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertEqual(proc.stdout.split(), ["True", "False"])

    def test_first_compile_installs(self) -> None:
        # Package first, then torch, then a compile: the compile's lookup is
        # ours (our counters move), with no call of install() by the user.
        proc = run_python(
            """
            import json, os, sys, tempfile
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp()
            import torch_aotcache
            import torch
            from torch._dynamo.utils import counters
            from torch_aotcache.installer import patching
            before = patching.is_active()
            torch.compile(lambda x: (x * 2).sin())(torch.ones(3, requires_grad=True)).sum().backward()
            print(json.dumps({
                "before": before, "after": patching.is_active(),
                "saved": counters["aot_autograd"]["autograd_cache_saved"],
                "ours": sum(counters["torch_aotcache"].values()) > 0,
                "skipped_by_dynamo": patching.skipped_by_dynamo(),
            }))
            """
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        self.assertEqual(
            got, {"before": False, "after": True, "saved": 1, "ours": True, "skipped_by_dynamo": True}
        )

    def test_uninstall_before_first_call(self) -> None:
        # Trampolines placed, then uninstall: upstream's objects come back
        # and a later import places nothing.
        proc = run_python(
            """
            import sys, torch_aotcache, torch
            import torch._functorch._aot_autograd.autograd_cache as ac
            from torch_aotcache.installer import lazy as _lazy, patching
            placed = ac.AOTAutogradCache.try_load.__module__
            torch_aotcache.uninstall()
            import torch._inductor.codecache as cc
            print(placed, ac.AOTAutogradCache.try_load.__module__,
                  cc.FxGraphCache.clear.__module__, torch_aotcache.is_installed(),
                  any(isinstance(f, _lazy._Watcher) for f in sys.meta_path))
            """
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(
            proc.stdout.split()[-5:],
            ["torch_aotcache.installer.patching", "torch._functorch._aot_autograd.autograd_cache",
             "torch._inductor.codecache", "False", "False"],
        )

    def test_wrapper_placed_before_first_call_is_kept(self) -> None:
        # A timer or mock put on a trampoline before the first compile stays
        # in place; what it calls is our replacement, also once it is gone.
        proc = run_python(
            """
            import json, os, tempfile
            from unittest import mock
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp()
            import torch_aotcache, torch
            import torch._functorch._aot_autograd.autograd_cache as ac
            keys = []
            inner = ac.autograd_cache_key
            def timed(*args, **kwargs):
                key, lines = inner(*args, **kwargs)
                keys.append(key)
                return key, lines
            with mock.patch.object(ac, "autograd_cache_key", timed):
                torch.compile(lambda x: x.cos() * 3)(torch.ones(3))
                kept = ac.autograd_cache_key is timed
            torch._dynamo.reset()
            torch.compile(lambda x: x.sin() + 1)(torch.ones(3))
            from torch_aotcache import autograd_cache as ours
            with mock.patch.object(ours, "compute_key", wraps=ours.compute_key) as spy:
                torch._dynamo.reset()
                torch.compile(lambda x: x.tan() - 2)(torch.ones(3))
            print(json.dumps({"kept": kept, "ours": [k.startswith("tac") for k in keys],
                              "after": spy.call_count}))
            """
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        # A miss on the CPU computes its key twice: the front door's lookup
        # and the normal path's (Note [Front door]); both go through the
        # wrapper, and both are ours.
        self.assertEqual(got, {"kept": True, "ours": [True, True], "after": 2})

    def test_watched_modules_are_the_patch_sites(self) -> None:
        from torch_aotcache.installer import lazy as _lazy

        self.assertEqual(_lazy.WATCHED, {s.module for s in patching.sites()})

    def test_disable_variable(self) -> None:
        got = self._probe("import torch", env={"TORCH_AOTCACHE_DISABLE": "1"})
        self.assertEqual(got, {"installed": False, "key_is_ours": False, "try_load_ours": False})

    def test_disable_variable_imports_no_torch(self) -> None:
        proc = run_python(
            "import sys, torch_aotcache; print('torch' in sys.modules)",
            env={"TORCH_AOTCACHE_DISABLE": "1"},
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertEqual(proc.stdout.strip(), "False")

    def test_unsupported_release_warns_once_and_touches_nothing(self) -> None:
        code = """
            import warnings, json
            import torch
            torch.__version__ = "2.12.1"
            import torch._functorch._aot_autograd.autograd_cache as ac
            before = {k: v for k, v in vars(ac.AOTAutogradCache).items()}
            key_before = ac.autograd_cache_key
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                import torch_aotcache
                again = torch_aotcache.install()
            after = {k: v for k, v in vars(ac.AOTAutogradCache).items()}
            msgs = [str(x.message) for x in w if "torch_aotcache supports" in str(x.message)]
            print(json.dumps({
                "installed": torch_aotcache.is_installed(), "again": again,
                "untouched": before == after and ac.autograd_cache_key is key_before,
                "warnings": msgs,
            }))
        """
        proc = run_python(code)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        self.assertFalse(got["installed"])
        self.assertFalse(got["again"])
        self.assertTrue(got["untouched"])
        self.assertEqual(len(got["warnings"]), 1)
        self.assertIn("2.11.x, 2.13.x, 2.14.x, 2.15.x", got["warnings"][0])
        self.assertIn("2.12.1", got["warnings"][0])


if __name__ == "__main__":
    unittest.main()
