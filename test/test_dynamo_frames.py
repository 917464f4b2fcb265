"""
The cache of Dynamo's frames (Note [Caching Dynamo's frames] in
torch_aotcache/dynamo/__init__.py): naming objects across processes, the
frame key, the knob, and in fresh processes a warm hit without tracing, the
replaced guards, verification before unpickling, signing, export/import, the
remote tier, and the adversarial set of ``tools/dynamo_soundness.py`` with
Hypothesis over edits.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import textwrap
import types
import unittest
import warnings

import torch
import torch.nn.functional as F
from hypothesis import given, HealthCheck, settings, strategies as st

import torch_aotcache
from torch_aotcache import config as tac_config
from torch_aotcache.dynamo import frames, guards, identity
from torch_aotcache.dynamo import install as frames_install

from common import child_env, probed_vec_isa_env, REPO_ROOT, run_child, slow, TOOLS


SUPPORTED = frames_install.supported()
needs_frames = unittest.skipUnless(SUPPORTED, "Dynamo's frame packages need torch 2.15 or later")


def _local_helper(x: torch.Tensor) -> torch.Tensor:
    return x + 1


class TestIdentity(unittest.TestCase):
    """identity.py: objects named by reference, found again, or refused."""

    def test_named_objects_resolve_to_themselves(self) -> None:
        import torch.nn.modules.linear as linear_module

        for value in (torch.sin, F.relu, F.linear, iter, torch.nn.Linear, linear_module, os.path.join):
            d = identity.describe(value)
            self.assertIsNotNone(d, value)
            self.assertEqual(json.loads(json.dumps(d)), d)
            self.assertIs(identity.resolve(d), value)

    def test_unnamed_objects_are_refused(self) -> None:
        def local(x: int) -> int:
            return x

        for value in (lambda x: x, local, torch.nn.Linear(2, 2), object(), [torch.sin], types.ModuleType("ghost")):
            self.assertIsNone(identity.describe(value), value)

    def test_a_python_function_carries_its_code(self) -> None:
        d = identity.describe(_local_helper)
        assert d is not None
        self.assertEqual(d["code"], identity.code_digest(_local_helper.__code__))
        changed = dict(d, code="0" * 64)
        with self.assertRaisesRegex(identity.Unresolved, "changed"):
            identity.resolve(changed)

    def test_resolving_what_is_gone(self) -> None:
        with self.assertRaises(identity.Unresolved):
            identity.resolve({"kind": "object", "module": "torch", "qualname": "no_such_function"})
        with self.assertRaises(identity.Unresolved):
            identity.resolve({"kind": "module", "module": "no_such_module_anywhere"})
        with self.assertRaises(identity.Unresolved):
            identity.resolve({"kind": "object", "module": 3})
        with self.assertRaises(identity.Unresolved):
            identity.resolve({"kind": "surprise"})

    def test_code_digest_follows_what_code_does(self) -> None:
        def compile_fn(src: str, name: str = "f") -> types.CodeType:
            ns: dict[str, object] = {}
            exec(compile(src, "<x>", "exec"), ns)
            return ns[name].__code__  # type: ignore[attr-defined]

        a = compile_fn("def f(x):\n    return x + 1\n")
        moved = compile_fn("\n\n\ndef f(x):\n    return x + 1\n")
        other_const = compile_fn("def f(x):\n    return x + 2\n")
        other_float = compile_fn("def f(x):\n    return x + 1.0\n")
        nested = compile_fn("def f(x):\n    def g():\n        return 1\n    return g\n")
        nested2 = compile_fn("def f(x):\n    def g():\n        return 2\n    return g\n")
        self.assertEqual(identity.code_digest(a), identity.code_digest(moved))
        self.assertNotEqual(identity.code_digest(a), identity.code_digest(other_const))
        self.assertNotEqual(identity.code_digest(a), identity.code_digest(other_float))
        self.assertNotEqual(identity.code_digest(nested), identity.code_digest(nested2))


class TestCollector(unittest.TestCase):
    """guards.Collector: which identity guards are replaced, which kept."""

    @staticmethod
    def entry(guard_type: str, name: str, value: object, derived: tuple[str, ...] = ()) -> types.SimpleNamespace:
        return types.SimpleNamespace(guard_type=guard_type, derived_guard_types=derived, name=name,
                                     value=value, has_value=True)

    def test_named_objects_are_replaced_and_unnamed_kept(self) -> None:
        entries = [
            self.entry("BUILTIN_MATCH", "G['act']", torch.sin, ("ID_MATCH",)),
            self.entry("CLOSURE_MATCH", "G['F'].relu", F.relu),
            self.entry("MODULE_MATCH", "G['F']", F, ("ID_MATCH",)),
            self.entry("ID_MATCH", "L['fn']", lambda x: x),
            self.entry("DICT_VERSION", "G['d']", {}),
            self.entry("TENSOR_MATCH", "L['x']", torch.ones(1)),
            self.entry("ID_MATCH", "___weird", torch.sin),
            self.entry("ID_MATCH", "___odict_getitem(L['self']._modules, 'a')", torch.sin),
        ]
        for e in entries:
            e.orig_guard = object()
        c = guards.Collector(None)
        keep = c(entries)
        # Every guard is built as Dynamo builds it in this process; the
        # replaced ones are left out of the serialized guard set.
        self.assertEqual(keep, [True] * len(entries))
        self.assertEqual([r["source"] for r in c.replacements], ["G['act']", "G['F'].relu", "G['F']"])
        self.assertEqual(c.replaced_guards, {id(entries[i].orig_guard) for i in range(3)})
        self.assertEqual(len(c.kept), 4)
        serialized: list[object] = []
        manager = types.SimpleNamespace()
        manager.__dict__[guards.COLLECTOR_ATTR] = c
        guards.serialize_guards(lambda m, b, gs, og: serialized.extend(gs) or b"",  # type: ignore[func-returns-value]
                                manager, None, [e.orig_guard for e in entries], None)
        self.assertEqual(serialized, [e.orig_guard for e in entries[3:]])
        resolved = guards.resolve_all(json.loads(json.dumps(c.replacements)))
        self.assertIs(resolved[0], torch.sin)
        self.assertIs(resolved[2], F)
        # CLOSURE_MATCH checks the function's code, not the function.
        self.assertEqual(c.replacements[1]["object"]["kind"], "code")
        self.assertTrue(resolved[1].matches(F.relu))
        self.assertFalse(resolved[1].matches(F.gelu))
        self.assertFalse(resolved[1].matches(torch.relu))

    def test_closures_made_anew_match_by_code(self) -> None:
        def make(k: float) -> types.FunctionType:
            def inner(x: torch.Tensor) -> torch.Tensor:
                return x * k
            return inner  # type: ignore[return-value]

        def other(x: torch.Tensor) -> torch.Tensor:
            return x + 1

        c = guards.Collector(None)
        self.assertEqual(c([self.entry("CLOSURE_MATCH", "L['fn']", make(1.0))]), [True])
        self.assertEqual(len(c.replacements), 1)
        (same,) = guards.resolve_all(json.loads(json.dumps(c.replacements)))
        self.assertTrue(same.matches(make(2.0)))
        self.assertFalse(same.matches(other))
        # An ID_MATCH on the same local function has no name: kept.
        self.assertEqual(c([self.entry("ID_MATCH", "L['fn']", make(1.0))]), [True])
        self.assertEqual((c.replacements, len(c.kept)), ([], 1))

    def test_the_programs_filter_comes_first(self) -> None:
        entries = [self.entry("BUILTIN_MATCH", "G['act']", torch.sin), self.entry("TENSOR_MATCH", "L['x']", 1)]
        c = guards.Collector(lambda es: [False, True])
        self.assertEqual(c(entries), [False, True])
        self.assertEqual(c.replacements, [])

    def test_malformed_replacements_are_refused(self) -> None:
        for bad in ("x", [3], [{"source": "G['a']"}], [{"source": "os.system('x')", "object": {}}],
                    [{"source": "G[__import__('os').system('true')]", "object": {"kind": "module", "module": "os"}}],
                    [{"source": "G['a'].f(1)", "object": {"kind": "module", "module": "os"}}]):
            with self.assertRaises(identity.Unresolved):
                guards.resolve_all(bad)  # type: ignore[arg-type]


@needs_frames
class TestFrameKey(unittest.TestCase):
    def settings(self, **arguments: object) -> frames.Settings:
        base: dict[str, object] = {"backend": torch._TorchCompileInductorWrapper(None, None, None),
                                   "nopython": False, "dynamic": None}
        base.update(arguments)
        return frames.settings_for(base)

    def test_settings_that_change_the_program_change_the_key(self) -> None:
        fn = _local_helper
        base = frames.key_for(fn, self.settings())[0]
        self.assertEqual(base, frames.key_for(fn, self.settings())[0])
        self.assertTrue(base.startswith(frames.KEY_PREFIX))
        others = [
            self.settings(nopython=True),
            self.settings(dynamic=True),
            self.settings(backend="eager"),
            self.settings(backend=torch._TorchCompileInductorWrapper("max-autotune-no-cudagraphs", None, None)),
            self.settings(backend=torch._TorchCompileInductorWrapper(None, {"epilogue_fusion": False}, None)),
        ]
        with torch._inductor.config.patch(fallback_random=True):
            others.append(self.settings())
        with torch._dynamo.config.patch(capture_scalar_outputs=True):
            others.append(self.settings())
        with torch._functorch.config.patch(activation_memory_budget=0.5):
            others.append(self.settings())
        keys = {frames.key_for(fn, s)[0] for s in others}
        self.assertEqual(len(keys), len(others))
        self.assertNotIn(base, keys)

    def test_settings_torch_ignores_for_compiling_leave_the_key(self) -> None:
        # debug_dir_root follows the working directory; it is compile_ignored.
        base = frames.key_for(_local_helper, self.settings())[0]
        with torch._dynamo.config.patch(debug_dir_root="/somewhere/else"):
            self.assertEqual(frames.key_for(_local_helper, self.settings())[0], base)

    def test_the_functions_code_is_in_the_key(self) -> None:
        def f(x: torch.Tensor) -> torch.Tensor:
            return x + 1

        def g(x: torch.Tensor) -> torch.Tensor:
            return x + 2

        g.__qualname__ = f.__qualname__
        s = self.settings()
        self.assertNotEqual(frames.key_for(f, s)[0], frames.key_for(g, s)[0])

    def test_unnamed_settings_are_unkeyable(self) -> None:
        with self.assertRaises(frames.Unkeyable):
            self.settings(backend=lambda gm, inputs: gm)
        with self.assertRaises(frames.Unkeyable):
            self.settings(guard_filter_fn=lambda entries: [True] * len(entries))


class TestKnob(unittest.TestCase):
    def test_off_by_default_and_torch_untouched(self) -> None:
        self.assertFalse(tac_config.dynamo)
        before = torch._dynamo.config.caching_precompile
        torch.compile(lambda x: x + 1)
        self.assertFalse(frames_install.is_enabled())
        self.assertEqual(torch._dynamo.config.caching_precompile, before)

    @needs_frames
    def test_on_and_off_restore_every_object(self) -> None:
        from torch_aotcache.installer import patching

        frame_sites = patching.sites("frames")
        self.assertTrue(frame_sites)

        def raw() -> list[object]:
            return [patching._raw(patching._owner_object(s), s.attr) for s in frame_sites]

        before = raw() + [torch._dynamo.config.caching_precompile]
        try:
            with tac_config.patch(dynamo=True):
                torch.compile(lambda x: x + 1)
                self.assertTrue(frames_install.is_enabled())
                self.assertTrue(torch._dynamo.config.caching_precompile)
                for site, old, new in zip(frame_sites, before, raw(), strict=False):
                    self.assertIsNot(old, new, site.name)
                    self.assertIs(getattr(new, "__original__", None), old, site.name)
            torch.compile(lambda x: x + 1)
            self.assertFalse(frames_install.is_enabled())
        finally:
            frames_install.disable()
        after = raw() + [torch._dynamo.config.caching_precompile]
        for a, b in zip(before, after, strict=True):
            self.assertIs(a, b)

    @needs_frames
    def test_uninstall_takes_the_frame_sites_off_too(self) -> None:
        from torch_aotcache.installer import patching

        try:
            self.assertTrue(frames_install.enable())
            self.assertTrue(patching.group_installed("frames"))
            patching.uninstall()
            self.assertFalse(frames_install.is_enabled())
            for site in patching.sites("frames"):
                raw = patching._raw(patching._owner_object(site), site.attr)
                self.assertFalse(hasattr(raw, "__original__"), site.name)
        finally:
            frames_install.disable()
            torch_aotcache.install()

    @needs_frames
    def test_clear_and_fresh_cache_forget_the_records(self) -> None:
        from torch._inductor.utils import fresh_cache

        from torch_aotcache.dynamo import guards as frame_guards

        def records() -> list[int]:
            return [len(frames._saved), len(frame_guards._by_state), len(frame_guards._configs_by_state),
                    len(frame_guards._resolved)]

        def plant() -> None:
            frames._saved[("root", "key")] = "digest"
            frame_guards.remember("d", [], {"c": "1"})
            frame_guards.expect_loaded("e", frame_guards.Loaded([], [], [], {}))

        try:
            self.assertTrue(frames_install.enable())
            plant()
            with fresh_cache():  # also: clear() below empties a store of its own
                self.assertEqual(records(), [0, 0, 0, 0])
                plant()
                self.assertEqual(records(), [1, 2, 2, 1])
                torch._functorch._aot_autograd.autograd_cache.AOTAutogradCache.clear()
                self.assertEqual(records(), [0, 0, 0, 0])
        finally:
            frames.forget()
            frames_install.disable()

    @needs_frames
    def test_a_loaded_guard_set_carries_its_record_explicitly(self) -> None:
        # load_guards_state hands what the package's load resolved to the
        # load_guard_manager call on the state object itself; once the
        # package is installed nothing of it stays behind.
        from torch_aotcache.dynamo import guards as frame_guards

        class State:
            pass

        loaded = frame_guards.Loaded([], [], [], {})
        frame_guards.expect_loaded(frame_guards.state_digest(b"state"), loaded)
        try:
            state = frame_guards.load_guards_state(lambda data: State(), b"state")
            self.assertIs(getattr(state, frame_guards.LOADED_ATTR), loaded)
            other = frame_guards.load_guards_state(lambda data: State(), b"other")
            self.assertFalse(hasattr(other, frame_guards.LOADED_ATTR))
            frame_guards.forget_loaded([frame_guards.state_digest(b"state")])
            self.assertEqual(frame_guards._resolved, {})
        finally:
            frame_guards.forget()

    def test_uninstall_puts_torch_compile_back(self) -> None:
        wrapped = torch.compile
        self.assertTrue(hasattr(wrapped, "__original__"))
        torch_aotcache.uninstall()
        try:
            self.assertIs(torch.compile, wrapped.__original__)  # type: ignore[attr-defined]
        finally:
            torch_aotcache.install()
        self.assertTrue(hasattr(torch.compile, "__original__"))

    @unittest.skipIf(SUPPORTED, "this torch has Dynamo's frame packages")
    def test_older_release_warns_and_changes_nothing(self) -> None:
        from torch_aotcache import _once

        _once.reset()
        with tac_config.patch(dynamo=True), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compiled = torch.compile(lambda x: x * 2)
            self.assertEqual(compiled(torch.ones(2)).tolist(), [2.0, 2.0])
        self.assertFalse(frames_install.is_enabled())
        self.assertTrue(any("needs torch 2.15" in str(w.message) for w in caught))


# A program for the process tests: a small training model built in a module
# of its own (so its source can be edited), compiled, one step; prints the
# counters and whether the result equals eager.
PROGRAM = '''
import json, sys
import torch
import torch_aotcache
import model
if "fail_install" in sys.argv:
    import torch._C._dynamo.eval_frame as native

    def refuse(*args):
        raise RuntimeError("injected install failure")

    native._load_precompile_entry = refuse
torch.manual_seed(0)
m = model.build()
x = torch.randn(8, 16)
compiled = torch.compile(m)
out = compiled(x)
out.sum().backward()
grads = [p.grad.clone() for p in m.parameters()]
for p in m.parameters():
    p.grad = None
ref = m(x)
ref.sum().backward()
same = bool(torch.allclose(out, ref, atol=1e-5)) and all(
    torch.allclose(g, p.grad, atol=1e-5) for g, p in zip(grads, m.parameters(), strict=True))
extra = {}
if len(sys.argv) > 1 and sys.argv[1] == "rebind":
    model.act = torch.tanh
    out2 = compiled(x)
    extra["rebound_equal"] = bool(torch.allclose(out2, m(x), atol=1e-5))
from torch._dynamo.utils import counters
print("RESULT " + json.dumps({"equal": same, "traced": int(counters["stats"].get("unique_graphs", 0)),
    "ours": dict(counters["torch_aotcache"]), "aot": dict(counters["aot_autograd"]), **extra}))
'''

MODEL = '''
import torch
import torch.nn.functional as F
act = torch.sin
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(16, 32)
        self.b = torch.nn.Linear(32, 4)
    def forward(self, x):
        return self.b(F.relu(act(self.a(x))))
def build():
    return M()
'''


@needs_frames
@slow
class TestFramesAcrossProcesses(unittest.TestCase):
    """Fresh processes against one cache dir, the frame cache on.  Every test
    works in the same folder (emptied first), so that the cold run of the
    plain program can run once and be restored from a copy (:meth:`run_cold`)."""

    root: str
    cold_result: dict[str, object] | None

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.root = tempfile.mkdtemp(prefix="frames-")
        cls.cold_result = None

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.root, True)
        super().tearDownClass()

    def setUp(self) -> None:
        self.dir = os.path.join(self.root, "work")
        shutil.rmtree(self.dir, True)
        os.makedirs(self.dir)
        self.cache = os.path.join(self.dir, "cache")
        self.write(MODEL)
        with open(os.path.join(self.dir, "prog.py"), "w") as f:
            f.write(PROGRAM)

    def write(self, model: str) -> None:
        with open(os.path.join(self.dir, "model.py"), "w") as f:
            f.write(model)

    def run_program(self, *args: str, cwd: str | None = None, **env: str) -> dict[str, object]:
        e = child_env({"TORCHINDUCTOR_CACHE_DIR": self.cache, "TORCH_AOTCACHE_DYNAMO": "1",
                       "PYTHONDONTWRITEBYTECODE": "1", **env}, path=(REPO_ROOT, self.dir))
        proc = run_child([os.path.join(self.dir, "prog.py"), *args], e, cwd=cwd or self.dir)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, object] = json.loads(line[len("RESULT "):])
                return result
        self.fail(f"program failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")

    def run_cold(self) -> dict[str, object]:
        """The plain program's cold run on an empty cache dir: run by the
        first test that needs it, then restored from a copy of the folder
        (the same path: nothing compiled or stored differs)."""
        cls = type(self)
        snapshot = os.path.join(self.root, "cold")
        if cls.cold_result is None:
            result = self.run_program()
            shutil.rmtree(snapshot, True)
            shutil.copytree(self.dir, snapshot)
            cls.cold_result = result
            return result
        shutil.rmtree(self.dir)
        shutil.copytree(snapshot, self.dir)
        return cls.cold_result

    def frame_entries(self) -> list[str]:
        found = []
        for dirpath, _dirs, files in os.walk(os.path.join(self.cache, "torch_aotcache", "entries")):
            found += [os.path.join(dirpath, n) for n in files
                      if n.endswith(".entry") and os.path.basename(dirpath).startswith(frames.KEY_PREFIX)]
        return found

    def test_warm_process_runs_the_stored_frame_without_tracing(self) -> None:
        cold = self.run_cold()
        self.assertTrue(cold["equal"])
        self.assertGreater(cold["traced"], 0)
        self.assertEqual(cold["ours"].get("frame_saved"), 1, cold)  # type: ignore[union-attr]
        self.assertGreaterEqual(cold["ours"].get("frame_guard_replaced", 0), 1, cold)  # type: ignore[union-attr]
        self.assertEqual(len(self.frame_entries()), 1)
        warm = self.run_program()
        self.assertTrue(warm["equal"])
        self.assertEqual(warm["traced"], 0, warm)
        self.assertEqual(warm["ours"].get("frame_hit"), 1, warm)  # type: ignore[union-attr]
        # The command line reads the frame's header like any other entry.
        ls = run_child(["-m", "torch_aotcache", "ls"], child_env({"TORCHINDUCTOR_CACHE_DIR": self.cache}))
        self.assertEqual(ls.returncode, 0, ls.stderr)
        self.assertIn(frames.MODE, ls.stdout)
        st = run_child(["-m", "torch_aotcache", "stats"], child_env({"TORCHINDUCTOR_CACHE_DIR": self.cache}))
        self.assertEqual(st.returncode, 0, st.stderr)
        row = next(line for line in st.stdout.splitlines() if line.startswith("frame hits"))
        self.assertEqual(row.split()[2:], ["1", "1", "1"])

    def test_another_working_directory_still_hits(self) -> None:
        self.run_cold()
        elsewhere = os.path.join(self.dir, "elsewhere")
        os.makedirs(elsewhere)
        warm = self.run_program(cwd=elsewhere)
        self.assertTrue(warm["equal"])
        self.assertEqual(warm["ours"].get("frame_hit"), 1, warm)  # type: ignore[union-attr]
        self.assertEqual(warm["traced"], 0, warm)

    def test_a_rebound_global_retraces_in_a_later_process_and_in_the_same(self) -> None:
        self.run_cold()
        self.write(MODEL.replace("act = torch.sin", "act = torch.cos"))
        warm = self.run_program()
        self.assertTrue(warm["equal"], warm)
        self.assertGreater(warm["traced"], 0, warm)
        # Unchanged again: the stored frame now holds both variants.
        self.write(MODEL)
        again = self.run_program("rebind")
        self.assertTrue(again["equal"], again)
        self.assertEqual(again["ours"].get("frame_hit"), 1, again)  # type: ignore[union-attr]
        self.assertTrue(again["rebound_equal"], again)
        self.assertGreater(again["traced"], 0, again)  # the rebinding after the load retraced

    def test_an_edited_inlined_function_is_not_reused(self) -> None:
        self.run_cold()
        self.write(MODEL.replace("return self.b(F.relu(act(self.a(x))))", "return self.b(F.relu(act(self.a(x)))) * 2"))
        warm = self.run_program()
        self.assertTrue(warm["equal"], warm)
        self.assertGreater(warm["traced"], 0, warm)
        # explain names what changed: the compiled function's bytecode.
        explained = run_child(["-m", "torch_aotcache", "explain"], child_env({"TORCHINDUCTOR_CACHE_DIR": self.cache}))
        self.assertEqual(explained.returncode, 0, explained.stderr)
        self.assertIn(frames.KEY_PREFIX, explained.stdout)
        self.assertIn("differs: code", explained.stdout)

    def test_graph_breaks_and_resume_functions(self) -> None:
        self.write(textwrap.dedent("""
            import torch
            act = torch.sin
            class M(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a = torch.nn.Linear(16, 4)
                def forward(self, x):
                    h = act(self.a(x))
                    torch._dynamo.graph_break()
                    if h.sum() > 0:  # data-dependent: another break
                        h = h * 2
                    return h.tanh()
            def build():
                return M()
        """))
        cold = self.run_program()
        self.assertTrue(cold["equal"], cold)
        self.assertGreaterEqual(cold["traced"], 2, cold)
        warm = self.run_program()
        self.assertTrue(warm["equal"], warm)
        self.assertEqual(warm["traced"], 0, warm)
        self.assertEqual(warm["ours"].get("frame_hit"), 1, warm)  # type: ignore[union-attr]

    def test_a_decorated_forward_reads_the_decorators_globals(self) -> None:
        # functools.wraps gives the wrapper the model's __module__; its
        # globals are the decorator's module's.  Both modules define SCALE:
        # a guard read in the wrong one would pass when the right one changed.
        deco = textwrap.dedent("""
            import functools
            SCALE = 2.0
            def scaled(func):
                @functools.wraps(func)
                def wrapper(self, *args, **kwargs):
                    return func(self, *args, **kwargs) * SCALE
                return wrapper
        """)
        with open(os.path.join(self.dir, "deco.py"), "w") as f:
            f.write(deco)
        self.write(textwrap.dedent("""
            import torch
            import deco
            SCALE = 2.0
            class M(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a = torch.nn.Linear(16, 4)
                @deco.scaled
                def forward(self, x):
                    return torch.sin(self.a(x))
            def build():
                return M()
        """))
        self.run_program()
        warm = self.run_program()
        self.assertTrue(warm["equal"], warm)
        self.assertEqual(warm["ours"].get("frame_hit"), 1, warm)  # type: ignore[union-attr]
        self.assertEqual(warm["traced"], 0, warm)
        with open(os.path.join(self.dir, "deco.py"), "w") as f:
            f.write(deco.replace("SCALE = 2.0", "SCALE = 3.0"))
        changed = self.run_program()
        self.assertTrue(changed["equal"], changed)
        self.assertGreater(changed["traced"], 0, changed)

    def test_a_changed_custom_op_backward_is_not_reused(self) -> None:
        """Note [Registered operators in stored frames]: the stored frame's graph
        calls a custom op whose registered backward then changes; the warm process
        does not run the stored frame, and explain names the op's facet."""
        op_model = textwrap.dedent("""
            import torch
            FACTOR = 2.0

            @torch.library.custom_op("tac_frames::scaled", mutates_args=())
            def scaled(x: torch.Tensor) -> torch.Tensor:
                return x.sin()

            @scaled.register_fake
            def _(x):
                return torch.empty_like(x)

            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return g * x.cos() * FACTOR

            def setup_context(ctx, inputs, output):
                ctx.save_for_backward(inputs[0])

            scaled.register_autograd(backward, setup_context=setup_context)

            class M(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a = torch.nn.Linear(16, 4)
                def forward(self, x):
                    return torch.ops.tac_frames.scaled.default(self.a(x))

            def build():
                return M()
        """)
        self.write(op_model)
        cold = self.run_program()
        self.assertTrue(cold["equal"], cold)
        self.assertEqual(cold["ours"].get("frame_saved"), 1, cold)  # type: ignore[union-attr]
        self.write(op_model.replace("FACTOR = 2.0", "FACTOR = 3.0"))
        warm = self.run_program()
        self.assertTrue(warm["equal"], warm)
        self.assertEqual(warm["ours"].get("frame_miss_ops_changed"), 1, warm)  # type: ignore[union-attr]
        self.assertNotIn("frame_hit", warm["ours"], warm)  # type: ignore[operator]
        self.assertGreater(warm["traced"], 0, warm)
        explained = run_child(["-m", "torch_aotcache", "explain"], child_env({"TORCHINDUCTOR_CACHE_DIR": self.cache}))
        self.assertEqual(explained.returncode, 0, explained.stderr)
        self.assertIn("differs: op tac_frames::scaled autograd", explained.stdout)
        # The same registrations again: the frame saved by the second process runs.
        again = self.run_program()
        self.assertTrue(again["equal"], again)
        self.assertEqual(again["ours"].get("frame_hit"), 1, again)  # type: ignore[union-attr]
        self.assertEqual(again["traced"], 0, again)

    def test_a_frame_that_fails_to_install_is_traced_instead(self) -> None:
        self.run_cold()
        warm = self.run_program("fail_install")
        self.assertTrue(warm["equal"], warm)
        self.assertEqual(warm["ours"].get("frame_install_failed"), 1, warm)  # type: ignore[union-attr]
        self.assertGreater(warm["traced"], 0, warm)

    def test_a_corrupt_frame_entry_is_refused_before_unpickling(self) -> None:
        self.run_cold()
        (path,) = self.frame_entries()
        with open(path, "r+b") as f:
            f.seek(-100, os.SEEK_END)
            byte = f.read(1)
            f.seek(-100, os.SEEK_END)
            f.write(bytes([byte[0] ^ 0xFF]))
        warm = self.run_program()
        self.assertTrue(warm["equal"])
        self.assertGreater(warm["traced"], 0)
        self.assertGreaterEqual(warm["ours"].get("entry_rejected", 0), 1, warm)  # type: ignore[union-attr]
        self.assertNotIn("frame_hit", warm["ours"])  # type: ignore[operator]

    def test_signed_frames_need_the_key(self) -> None:
        self.run_program(TORCH_AOTCACHE_SIGNING_KEY="one-secret")
        other = self.run_program(TORCH_AOTCACHE_SIGNING_KEY="another-secret")
        self.assertTrue(other["equal"])
        self.assertNotIn("frame_hit", other["ours"])  # type: ignore[operator]
        self.assertGreaterEqual(other["ours"].get("signature_rejected", 0), 1, other)  # type: ignore[union-attr]
        # The refused entries were moved aside; the signed process saves anew.
        same = self.run_program(TORCH_AOTCACHE_SIGNING_KEY="another-secret")
        self.assertEqual(same["ours"].get("frame_hit"), 1, same)  # type: ignore[union-attr]

    def test_export_then_import_into_an_empty_cache_dir(self) -> None:
        self.run_cold()
        archive = os.path.join(self.dir, "store.tar")
        env = child_env({"TORCHINDUCTOR_CACHE_DIR": self.cache})
        self.assertEqual(run_child(["-m", "torch_aotcache", "export", archive], env).returncode, 0)
        self.cache = os.path.join(self.dir, "cache2")
        env = child_env({"TORCHINDUCTOR_CACHE_DIR": self.cache})
        imported = run_child(["-m", "torch_aotcache", "import", archive], env)
        self.assertEqual(imported.returncode, 0, imported.stderr)
        warm = self.run_program()
        self.assertTrue(warm["equal"])
        self.assertEqual(warm["ours"].get("frame_hit"), 1, warm)  # type: ignore[union-attr]
        self.assertEqual(warm["traced"], 0)

    def test_the_remote_tier_carries_frames(self) -> None:
        from redis_server import redis_missing, RedisServer

        missing = redis_missing()
        if missing:
            self.skipTest(missing)
        server = RedisServer().start()
        self.addCleanup(server.close)
        remote = {"TORCH_AOTCACHE_REDIS_URL": server.url, "TORCH_AOTCACHE_SIGNING_KEY": "fleet",
                  "TORCH_AOTCACHE_REMOTE_SYNC": "1"}
        self.run_program(**remote)
        self.cache = os.path.join(self.dir, "other-machine")
        warm = self.run_program(**remote)
        self.assertTrue(warm["equal"])
        self.assertEqual(warm["ours"].get("frame_hit"), 1, warm)  # type: ignore[union-attr]
        self.assertEqual(warm["traced"], 0)

    def test_frames_compiled_apart_through_a_property_or_without_a_name(self) -> None:
        """Note [Codes a package cannot name]: a graph break inside a
        property's getter, or inside a function upstream cannot name, makes
        Dynamo compile that function as a frame of its own; upstream's package
        raised PackageError there and the compile failed, in every process
        (transformers' GPT-2 ``loss_function``)."""
        self.write(textwrap.dedent("""
            import torch
            def _shift(t):
                t = t.cos()
                torch._dynamo.graph_break()
                return t + 1
            HELPERS = {"shift": _shift}
            del _shift  # reachable only through the dict: no name leads to it
            class M(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a = torch.nn.Linear(16, 32)
                    self.b = torch.nn.Linear(32, 4)
                @property
                def scale(self):
                    s = self.b.bias.sum() * 0 + 2.0
                    torch._dynamo.graph_break()
                    return s
                def forward(self, x):
                    h = HELPERS["shift"](self.a(x))
                    return self.b(torch.sin(h)) * self.scale
            def build():
                return M()
        """))
        cold = self.run_program()
        self.assertTrue(cold["equal"], cold)
        self.assertEqual(cold["ours"].get("frame_saved"), 1, cold)  # type: ignore[union-attr]
        self.assertEqual(cold["ours"].get("frame_code_not_packaged"), 1, cold)  # type: ignore[union-attr]
        warm = self.run_program()
        self.assertTrue(warm["equal"], warm)
        self.assertEqual(warm["ours"].get("frame_hit"), 1, warm)  # type: ignore[union-attr]
        # The property's getter came from the store; the unnamed helper (and
        # its resume function) were traced again.
        self.assertEqual(warm["ours"].get("frame_code_not_packaged"), 1, warm)  # type: ignore[union-attr]
        self.assertEqual(warm["ours"].get("frame_retraced"), 2, warm)  # type: ignore[union-attr]

    def test_a_failed_replaced_guard_with_recompile_logging(self) -> None:
        """Dynamo evaluates a failed guard set's parts to give the reason of
        a recompile: ours must be Python (a SyntaxError there crashed
        transformers' Llama with activation checkpointing)."""
        logs = {"TORCH_LOGS": "recompiles,guards"}
        cold = self.run_program("rebind", **logs)
        self.assertTrue(cold["equal"], cold)
        self.assertTrue(cold["rebound_equal"], cold)
        warm = self.run_program("rebind", **logs)
        self.assertTrue(warm["equal"], warm)
        self.assertTrue(warm["rebound_equal"], warm)
        self.assertEqual(warm["ours"].get("frame_hit"), 1, warm)  # type: ignore[union-attr]

    def run_config_program(self, *args: str, program: str | None = None) -> dict[str, object]:
        with open(os.path.join(self.dir, "configs.py"), "w") as f:
            f.write(CONFIG_PROGRAM if program is None else program)
        e = child_env({"TORCHINDUCTOR_CACHE_DIR": self.cache, "TORCH_AOTCACHE_DYNAMO": "1"}, path=(REPO_ROOT,))
        proc = run_child([os.path.join(self.dir, "configs.py"), *args], e, cwd=self.dir)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, object] = json.loads(line[len("RESULT "):])
                return result
        self.fail(f"program failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")

    def test_a_config_set_between_compile_and_the_first_call(self) -> None:
        """Note [Configs of a compile]: Inductor's ``fallback_random`` set after
        ``torch.compile`` and before the first call changes what is compiled
        (dropout then draws eager's mask).  A stored frame compiled under other
        configs must not run; one compiled under the same ones hits."""
        plain = self.run_config_program()
        self.assertFalse(plain["equal"], plain)  # Inductor's own random numbers
        # Compiled without the config; the next process sets it after torch.compile.
        later = self.run_config_program("fallback")
        self.assertTrue(later["equal"], later)
        self.assertEqual(later["ours"].get("frame_loaded"), 1, later)  # type: ignore[union-attr]
        self.assertNotIn("frame_hit", later["ours"], later)  # type: ignore[operator]
        self.assertEqual(later["ours"].get("frame_retraced"), 1, later)  # type: ignore[union-attr]
        # The other order: the stored frame now also holds the fallback variant.
        again = self.run_config_program("fallback")
        self.assertTrue(again["equal"], again)
        self.assertEqual(again["ours"].get("frame_hit"), 1, again)  # type: ignore[union-attr]
        self.assertEqual(again["traced"], 0, again)
        unset = self.run_config_program()
        self.assertEqual(unset["ours"].get("frame_hit"), 1, unset)  # type: ignore[union-attr]
        self.assertEqual(unset["traced"], 0, unset)
        self.assertEqual(unset["out_digest"], plain["out_digest"], unset)


    def test_entry_points_and_two_instances_of_one_class(self) -> None:
        """``torch._dynamo.optimize`` used alone (it switches the frame cache
        on), ``torch.compile`` as a decorator with options, and two instances
        of one module class that compile different variants of one code
        (Note [Packages of one key] in frames.py): a warm process runs all of
        them from the store."""
        cold = self.run_config_program(program=ENTRY_PROGRAM)
        self.assertTrue(cold["equal"], cold)
        self.assertEqual(cold["traced"], 4, cold)
        self.assertEqual(cold["entries"], 3, cold)  # one key for both instances
        warm = self.run_config_program(program=ENTRY_PROGRAM)
        self.assertTrue(warm["equal"], warm)
        self.assertEqual(warm["traced"], 0, warm)
        self.assertEqual(warm["ours"].get("frame_loaded"), 4, warm)  # type: ignore[union-attr]
        self.assertNotIn("frame_retraced", warm["ours"], warm)  # type: ignore[operator]
        self.assertNotIn("frame_miss", warm["ours"], warm)  # type: ignore[operator]


# Dropout under a config set after torch.compile (Note [Configs of a compile]).
CONFIG_PROGRAM = '''
import hashlib, json, sys
import torch
import torch_aotcache
def f(x):
    return torch.nn.functional.dropout(x, 0.5, training=True) * 3
compiled = torch.compile(f)
if "fallback" in sys.argv:
    torch._inductor.config.fallback_random = True
x = torch.ones(64, 64)
torch.manual_seed(0)
out = compiled(x)
torch.manual_seed(0)
ref = f(x)
from torch._dynamo.utils import counters
print("RESULT " + json.dumps({"equal": bool(torch.equal(out, ref)),
    "out_digest": hashlib.sha256(out.numpy().tobytes()).hexdigest(),
    "traced": int(counters["stats"].get("unique_graphs", 0)), "ours": dict(counters["torch_aotcache"])}))
'''


# The ways into Dynamo besides ``torch.compile(module)``, and two instances of
# one class whose ``forward`` compiles to two variants.
ENTRY_PROGRAM = '''
import json, os
import torch
import torch_aotcache
import torch._dynamo
def by_optimize(x):
    return torch.cos(x) * 2
opt = torch._dynamo.optimize("inductor")(by_optimize)
@torch.compile(dynamic=False)
def decorated(x):
    return torch.sin(x) + 1
class M(torch.nn.Module):
    def __init__(self, k):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.k = k
    def forward(self, x):
        return self.lin(x) * self.k
torch.manual_seed(0)
m1, m2 = M(2), M(3)
c1, c2 = torch.compile(m1), torch.compile(m2)
x = torch.randn(4, 8, requires_grad=True)
equal = True
for _ in range(2):
    for fn, ref in ((opt, by_optimize), (decorated, decorated._torchdynamo_orig_callable), (c1, m1), (c2, m2)):
        out = fn(x)
        out.sum().backward()
        equal &= bool(torch.allclose(out, ref(x), atol=1e-5))
from torch._dynamo.utils import counters
root = os.path.join(os.environ["TORCHINDUCTOR_CACHE_DIR"], "torch_aotcache", "entries")
entries = sum(len(files) for d, _, files in os.walk(root) if os.path.basename(d).startswith("tdf"))
print("RESULT " + json.dumps({"equal": equal, "traced": int(counters["stats"].get("unique_graphs", 0)),
    "entries": entries, "ours": dict(counters["torch_aotcache"])}))
'''


def _soundness_tool() -> types.ModuleType:
    sys.path.insert(0, TOOLS)
    try:
        import dynamo_soundness
    finally:
        sys.path.remove(TOOLS)
    return dynamo_soundness


@needs_frames
@slow
class TestAdversarialSet(unittest.TestCase):
    """tools/dynamo_soundness.py with the frame cache on: every change between
    two processes retraces and equals eager; nothing changed reuses the frame."""

    def test_every_case(self) -> None:
        out = os.path.join(tempfile.mkdtemp(prefix="soundness-"), "ours.json")
        proc = run_child([os.path.join(TOOLS, "dynamo_soundness.py"), "--mode", "ours", "--json", out], timeout=3600)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr[-3000:])
        with open(out) as f:
            results = {r["case"]: r["verdict"] for r in json.load(f)["results"]}
        self.assertEqual(results.pop("unchanged"), "reused")
        self.assertGreaterEqual(len(results), 17)
        self.assertNotIn("WRONG", results.values())
        self.assertNotIn("ERROR", results.values())

    # Hypothesis over edits: a program made of a few independent choices,
    # one of which changes between the two processes.
    CHOICES = {
        "op": ("torch.sin", "torch.cos", "torch.tanh"),
        "scale": ("2.0", "3.0"),
        "shape": ("(4, 6)", "(5, 6)"),
        "dtype": ("torch.float32", "torch.float64"),
        "cell": ("1.0", "-1.0"),
    }

    @staticmethod
    def program(c: dict[str, str]) -> str:
        return textwrap.dedent(f"""
            act = {c['op']}
            SCALE = {c['scale']}
            def make(k):
                def fn(x):
                    return act(x) * SCALE + k
                return fn
            fn = make({c['cell']})
            x = torch.randn{c['shape']}.to({c['dtype']})
            args = (x,)
        """)

    @settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.fixed_dictionaries({k: st.sampled_from(v) for k, v in CHOICES.items()}),
           st.sampled_from(sorted(CHOICES)), st.data())
    def test_hypothesis_edits(self, before: dict[str, str], changed: str, data: st.DataObject) -> None:
        tool = _soundness_tool()
        after = dict(before)
        after[changed] = data.draw(st.sampled_from([v for v in self.CHOICES[changed] if v != before[changed]]))
        case = tool.Case("edit", f"{changed}: {before[changed]} -> {after[changed]}",
                         self.program(before), self.program(after))
        root = tempfile.mkdtemp(prefix="soundness-edit-")
        try:
            result = tool.run_case(case, "ours", root, extra_env=probed_vec_isa_env())
        finally:
            shutil.rmtree(root, ignore_errors=True)
        self.assertIn(result["verdict"], ("retraced",), result)


if __name__ == "__main__":
    unittest.main()
