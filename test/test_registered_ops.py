"""
What a program registers for operators, in the key (Note [Registered
operators in the key] in torch_aotcache/key/registered_ops.py), and
``sdpa_kernel`` blocks.

The process tests run ``registered_op_programs.py`` in two fresh processes
sharing one cache dir: the first compiles and saves variant 0 of every case
(one per registration API), the second variant 1, which changes one thing
about a registration.  Variant 1 must never load variant 0's entry: its
compiled results must equal eager's and its lookup must miss.  The same
pair runs on stock torch (torch_aotcache not imported), where each change is
served the stale entry: that shows each check can fail, and it is the
comparison the closing notes report.  The same definitions in a fresh process
(another working directory and hash seed) must hit.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import unittest
import warnings
from typing import Any

import torch
from hypothesis import given, settings, strategies as st
from torch.testing._internal.common_utils import instantiate_parametrized_tests, parametrize

from torch_aotcache.key import registered_ops
from torch_aotcache.store import explain

from common import aot_counts, CacheTestCase, child_env, clear_in_memory_state, run_child, slow


HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(HERE, "registered_op_programs.py")
sys.path.insert(0, HERE)
import registered_op_programs  # noqa: E402

CASES = sorted(set(registered_op_programs.CASES) - registered_op_programs.GLOBAL_CASES)
# Registered through torch.library.custom_op: keyed from the op's definition,
# whenever torch_aotcache was imported.
CUSTOM_OP_CASES = {"mutation", "backward", "setup_context", "unchanged", "fake", "vmap_rule"}


def run_variant(
    variant: int, cases: list[str], outdir: str, cache_dir: str, *flags: str,
    cwd: str | None = None, env: dict[str, str] | None = None,
) -> dict[str, Any]:
    proc = run_child(
        [PROGRAMS, str(variant), outdir, *flags, *cases],
        child_env({"TORCHINDUCTOR_CACHE_DIR": cache_dir, **(env or {})}, path=(os.path.dirname(HERE), HERE)),
        timeout=900, cwd=cwd or outdir,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    # Also run by setUpClass, outside any test method: a plain check.
    if not (proc.returncode == 0 and lines):
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-6000:])
    return json.loads(lines[-1][len("RESULT "):])


def run_pair(cls: Any, cases: list[str], *flags: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    work = cls.enterClassContext(tempfile.TemporaryDirectory())
    cache_dir = os.path.join(work, "cache")
    first = run_variant(0, cases, work, cache_dir, *flags)
    second = run_variant(1, cases, work, cache_dir, *flags)
    return first, second, cache_dir


@slow
@instantiate_parametrized_tests
class TestSecondProcess(unittest.TestCase):
    """Variant 0 of every case saved by one process, variant 1 compiled by a
    second one sharing its cache dir (both run once for the class)."""

    first: dict[str, Any]
    second: dict[str, Any]
    explained: str
    again: dict[str, Any]
    late: dict[str, Any]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.first, cls.second, cache_dir = run_pair(cls, CASES)
        proc = run_child(["-m", "torch_aotcache", "explain"], child_env({"TORCHINDUCTOR_CACHE_DIR": cache_dir}))
        if proc.returncode != 0:
            raise AssertionError(proc.stderr[-3000:])
        cls.explained = proc.stdout
        # The same definitions again, from another working directory and hash
        # seed: every case must hit the first process's entries.
        work = os.path.dirname(cache_dir)
        elsewhere = os.path.join(work, "elsewhere")
        os.makedirs(elsewhere)
        cls.again = run_variant(0, CASES, work, cache_dir, cwd=elsewhere, env={"PYTHONHASHSEED": "2"})
        # Variant 1 with ``import torch_aotcache`` after the registrations.
        cls.late = run_variant(1, CASES, work, cache_dir, "--late", cwd=elsewhere)

    @parametrize("case", CASES)
    def test_a_changed_registration_is_never_a_stale_entry(self, case: str) -> None:
        first, second = self.first[case], self.second[case]
        # Cached, not bypassed, in both processes.
        self.assertEqual(first["counts"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1}, first)
        self.assertTrue(first["equal_to_eager"], first)
        self.assertTrue(second["equal_to_eager"], second)
        if case == "unchanged":
            self.assertEqual(second["counts"], {"autograd_cache_hit": 1}, second)
            return
        # The change matters (a stale entry would have been caught) ...
        self.assertTrue(second["differs_from_variant_0"], second)
        # ... and the key saw it.
        self.assertEqual(second["counts"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1}, second)

    def test_explain_names_the_changed_registration(self) -> None:
        # Each miss's line names the operator and the facets that changed
        # (a case whose eager kernel changed too names that kernel as well).
        for op, facet in (
            ("tac_mutation::acc", "schema"),
            ("tac_backward::scaled", "autograd"),
            ("tac_setup_context::scaled", "autograd"),
            ("tac_fake::cast", "fake"),
            ("tac_composite::mix", "kernel:CompositeImplicitAutograd"),
            ("tac_library_autograd::sq", "kernel:Autograd"),
            ("tac_decomposition::halve", "inductor.decompositions"),
            ("tac_lowering::triple", "inductor.lowerings"),
            ("tac_vmap_rule::twice", "vmap"),
            ("tac_py_kernel::neg3", "py_kernel:CompositeImplicitAutograd"),
        ):
            self.assertRegex(self.explained, rf"differs: op {op} (.*, )?{facet}(,|\n)")

    def test_the_same_definitions_hit_from_elsewhere(self) -> None:
        for case in CASES:
            with self.subTest(case=case):
                self.assertEqual(self.again[case]["counts"], {"autograd_cache_hit": 1}, self.again[case])
                self.assertTrue(self.again[case]["equal_to_eager"], self.again[case])

    def test_registered_before_import(self) -> None:
        """``import torch_aotcache`` after the registrations of variant 1: a
        custom_op is keyed from its definition as with the import first (it hits
        the entry the second process saved, never the first's); a Python kernel
        registered through ``Library.impl`` before the import cannot be read
        back, so its graphs bypass, with the reason; nothing is ever stale."""
        for case in CASES:
            with self.subTest(case=case):
                result = self.late[case]
                self.assertTrue(result["equal_to_eager"], result)
                if case in CUSTOM_OP_CASES:
                    self.assertEqual(result["counts"], {"autograd_cache_hit": 1}, result)
                else:
                    self.assertEqual(result["counts"], {"autograd_cache_bypass": 1}, result)


@slow
@instantiate_parametrized_tests
class TestStockTorch(unittest.TestCase):
    """The same pair with torch's own AOTAutograd cache: every change is served
    the entry of variant 0 (pytorch/pytorch#187319 and #144344 among them),
    on every supported release these tests were run on (2.13 to 2.15; CI runs
    it on 2.15)."""

    first: dict[str, Any]
    second: dict[str, Any]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.first, cls.second, _ = run_pair(cls, CASES, "--stock")

    @parametrize("case", CASES)
    def test_stock_serves_the_stale_entry(self, case: str) -> None:
        second = self.second[case]
        self.assertEqual(second["counts"], {"autograd_cache_hit": 1}, second)
        if case == "unchanged":
            self.assertTrue(second["equal_to_eager"], second)
        else:
            self.assertTrue(second["differs_from_variant_0"], second)
            self.assertFalse(second["equal_to_eager"], second)


@slow
class TestOverridesOfTorchOperators(unittest.TestCase):
    """A program's Python kernel on ``aten::square`` changes what every graph
    that traces into it compiles to."""

    def test_keyed_for_every_graph(self) -> None:
        with tempfile.TemporaryDirectory() as work:
            cache_dir = os.path.join(work, "cache")
            first = run_variant(0, ["torch_op_override"], work, cache_dir)["torch_op_override"]
            second = run_variant(1, ["torch_op_override"], work, cache_dir)["torch_op_override"]
        self.assertEqual(first["counts"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1}, first)
        self.assertTrue(second["differs_from_variant_0"], second)
        self.assertTrue(second["equal_to_eager"], second)
        self.assertEqual(second["counts"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1}, second)

    def test_registered_before_import_bypasses_every_graph(self) -> None:
        with tempfile.TemporaryDirectory() as work:
            cache_dir = os.path.join(work, "cache")
            result = run_variant(0, ["torch_op_override"], work, cache_dir, "--late")["torch_op_override"]
        self.assertEqual(result["counts"], {"autograd_cache_bypass": 1}, result)
        self.assertTrue(result["equal_to_eager"], result)


# ---------------------------------------------------------------------------
# In-process: facets, Hypothesis over edits, sdpa_kernel
# ---------------------------------------------------------------------------

_EDITABLE_OP = """
@torch.library.custom_op("tac_hypothesis::op", mutates_args={mutates})
def op(x: Tensor, buf: Tensor) -> Tensor:
    {mutation}
    return (x * 2).to({dtype})

@op.register_fake
def _(x, buf):
    return torch.empty_like(x, dtype={dtype})

def backward(ctx, g):
    return g * {factor}, None

def setup_context(ctx, inputs, output):
    pass

{register}
"""


def define(mutates: bool, dtype: str, factor: str | None) -> Any:
    """(Re)define ``tac_hypothesis::op`` (custom_op replaces an earlier one of
    the same name) and return its overload."""
    source = _EDITABLE_OP.format(
        mutates="('buf',)" if mutates else "()",
        mutation="buf.add_(1)" if mutates else "pass",
        dtype=dtype,
        factor=factor,
        register="" if factor is None or mutates else "op.register_autograd(backward, setup_context=setup_context)",
    )
    namespace: dict[str, Any] = {"torch": torch, "Tensor": torch.Tensor}
    exec(textwrap.dedent(source), namespace)  # noqa: S102 - test source written here
    return torch.ops.tac_hypothesis.op.default, namespace["op"]


EDITS = st.fixed_dictionaries(
    {
        "mutates": st.booleans(),
        "dtype": st.sampled_from(["torch.float32", "torch.float64"]),
        "factor": st.sampled_from([None, "2.0", "3.0"]),
    }
)


class TestFacets(unittest.TestCase):
    # Kept alive: custom_op holds its definitions weakly.
    _defs: list[Any] = []

    def facets(self, edit: dict[str, Any]) -> dict[str, str]:
        op, opdef = define(**edit)
        self._defs.append(opdef)
        return registered_ops.op_facets(op)

    @settings(max_examples=25)
    @given(EDITS, EDITS)
    def test_hypothesis_combined_edits(self, a: dict[str, Any], b: dict[str, Any]) -> None:
        """Schema, fake kernel and backward edited together: the facets are
        equal exactly when the definitions are, and the same again when
        defined anew."""
        norm = lambda e: {**e, "factor": None if e["mutates"] else e["factor"]}  # noqa: E731
        fa, fb, fa_again = self.facets(a), self.facets(b), self.facets(a)
        self.assertEqual(fa, fa_again)
        self.assertEqual(fa == fb, norm(a) == norm(b), (a, b, fa, fb))

    def test_each_edit_names_its_facet(self) -> None:
        base = self.facets({"mutates": False, "dtype": "torch.float32", "factor": "2.0"})
        for edit, facet in (
            ({"mutates": True, "dtype": "torch.float32", "factor": None}, "schema"),
            ({"mutates": False, "dtype": "torch.float64", "factor": "2.0"}, "fake"),
            ({"mutates": False, "dtype": "torch.float32", "factor": "3.0"}, "autograd"),
        ):
            with self.subTest(facet=facet):
                other = self.facets(edit)
                self.assertNotEqual(base[facet], other.get(facet), (base, other))

    def test_torch_operators_have_no_facets(self) -> None:
        text, detail = registered_ops.ops_component([torch.ops.aten.add.Tensor, torch.ops.aten.mm.default])
        self.assertEqual(detail, {})
        self.assertEqual(text, "")

    def test_an_unencodable_global_is_a_bypass_with_the_operator_named(self) -> None:
        handle = object()
        source = textwrap.dedent("""
            @torch.library.custom_op("tac_unkeyable::op", mutates_args=())
            def op(x: Tensor) -> Tensor:
                return x * 2

            @op.register_fake
            def _(x):
                HANDLE
                return torch.empty_like(x)
        """)
        namespace: dict[str, Any] = {"torch": torch, "Tensor": torch.Tensor, "HANDLE": handle}
        exec(source, namespace)  # noqa: S102 - test source written here
        self._defs.append(namespace["op"])
        with self.assertRaisesRegex(registered_ops.Unkeyable, "operator tac_unkeyable::op: its fake"):
            registered_ops.op_facets(torch.ops.tac_unkeyable.op.default)

    def test_a_kernel_registered_past_the_watch_is_a_bypass(self) -> None:
        """A Python kernel on a torch operator that did not go through the
        watched ``Library.impl`` cannot be read back: every graph bypasses
        until it is gone."""
        registered_ops.overrides_lines()  # nothing unexplained before
        original = vars(torch.library.Library)["impl"].__torch_aotcache_original__
        lib = torch.library.Library("aten", "IMPL")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                original(lib, "square", lambda x: x * x, "CompositeImplicitAutograd")
            with self.assertRaisesRegex(registered_ops.Unkeyable, "aten/square/CompositeImplicitAutograd"):
                registered_ops.overrides_lines()
        finally:
            lib._destroy()
        registered_ops.overrides_lines()

    def test_explain_lists_each_changed_facet(self) -> None:
        mine = {"ns::a": {"schema": "1", "fake": "2"}, "ns::b": {"schema": "3"}}
        theirs = {"ns::a": {"schema": "1", "fake": "9"}, "ns::c": {"schema": "3"}}
        self.assertEqual(
            explain._op_differences(mine, theirs),
            ["op ns::a fake", "op ns::b registered", "op ns::c gone"],
        )


_TRITON_KERNEL = """
import triton
import triton.language as tl

@triton.jit
def add_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask) + {step}, mask=mask)
"""


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@unittest.skipUnless(_has_triton(), "needs triton (installed with torch's CUDA builds)")
class TestTritonOp(unittest.TestCase):
    """``torch.library.triton_op``: its kernels' sources are a facet (the key
    is computed without running the kernel, so no GPU is needed)."""

    def define(self, folder: str, module: str, step: int) -> Any:
        import importlib

        from torch.library import triton_op, wrap_triton

        with open(os.path.join(folder, module + ".py"), "w") as f:
            f.write(_TRITON_KERNEL.format(step=step))
        kernel = importlib.import_module(module).add_kernel

        def body(x: torch.Tensor) -> torch.Tensor:
            y = torch.empty_like(x)
            wrap_triton(kernel)[(1,)](x, y, x.numel(), BLOCK=16)
            return y

        body.__annotations__ = {"x": torch.Tensor, "return": torch.Tensor}
        triton_op(f"tac_{module}::add", mutates_args=())(body)
        return getattr(torch.ops, f"tac_{module}").add.default

    def test_the_kernel_source_is_keyed(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            sys.path.insert(0, folder)
            self.addCleanup(sys.path.remove, folder)
            one = registered_ops.op_facets(self.define(folder, "tacker_one", 1))
            two = registered_ops.op_facets(self.define(folder, "tacker_two", 2))
        self.assertIn("triton", one)
        self.assertNotEqual(one["triton"], two["triton"])


class TestCompiledLibraries(unittest.TestCase):
    def test_a_loaded_library_is_keyed_by_content(self) -> None:
        """An operator defined in C++: the libraries loaded outside torch are
        keyed by identity and content (a rebuilt library of the same size
        and path gives another digest)."""
        from unittest import mock

        with tempfile.TemporaryDirectory() as folder:
            lib = os.path.join(folder, "libext.so")
            with open(lib, "wb") as f:
                f.write(b"\0" * 64)
            with mock.patch.object(registered_ops, "_loaded_libraries", return_value=[lib]):
                before = registered_ops._compiled_library_digest("aten::add.Tensor")
                with open(lib, "r+b") as f:
                    f.write(b"\1")
                os.utime(lib, ns=(1, 1))
                after = registered_ops._compiled_library_digest("aten::add.Tensor")
                self.assertEqual(after, registered_ops._compiled_library_digest("aten::add.Tensor"))
        self.assertNotEqual(before, after)

    def test_torch_and_system_libraries_are_left_out(self) -> None:
        torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
        for path in registered_ops._loaded_libraries():
            self.assertFalse(os.path.abspath(path).startswith(torch_dir + os.sep), path)
            self.assertFalse(path.startswith(("/lib/", "/usr/lib/")), path)


def _attention(x: torch.Tensor) -> torch.Tensor:
    from torch.nn.attention import sdpa_kernel, SDPBackend

    with sdpa_kernel([SDPBackend.MATH]):
        return torch.nn.functional.scaled_dot_product_attention(x, x, x)


def _attention_other(x: torch.Tensor) -> torch.Tensor:
    from torch.nn.attention import sdpa_kernel, SDPBackend

    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        return torch.nn.functional.scaled_dot_product_attention(x, x, x)


class TestSdpaKernel(CacheTestCase):
    """An ``sdpa_kernel`` block is cached (upstream bypasses it,
    pytorch/pytorch#194007): the same block hits, another backend list or
    another enabled set around it misses."""

    def run_compiled(self, fn: Any) -> dict[str, int]:
        clear_in_memory_state()
        x = torch.randn(1, 2, 4, 8, requires_grad=True)
        out = torch.compile(fn)(x)
        out.sum().backward()
        ref_x = x.detach().clone().requires_grad_(True)
        ref = fn(ref_x)
        ref.sum().backward()
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(x.grad, ref_x.grad)
        return aot_counts()

    def test_the_same_block_hits_and_another_misses(self) -> None:
        self.assertEqual(self.run_compiled(_attention), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assertEqual(self.run_compiled(_attention), {"autograd_cache_hit": 1})
        self.assertEqual(self.run_compiled(_attention_other), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        previous = torch.backends.cuda.flash_sdp_enabled()
        torch.backends.cuda.enable_flash_sdp(not previous)
        try:
            self.assertEqual(self.run_compiled(_attention), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        finally:
            torch.backends.cuda.enable_flash_sdp(previous)
        self.assertEqual(self.run_compiled(_attention), {"autograd_cache_hit": 1})


if __name__ == "__main__":
    unittest.main()
