"""Inductor's ISA probe answers are reused between processes only while their inputs match."""

from __future__ import annotations

import os
import unittest
import unittest.mock

from torch._inductor.cpu_vec_isa import VecAVX2, VecISA
from torch._inductor.utils import fresh_cache

import torch_aotcache
from torch_aotcache.key import fingerprint
from torch_aotcache.inductor import isa_probes as inductor_probes
from torch_aotcache.installer import patching


class TestIsaProbeMemo(unittest.TestCase):
    # The replacement takes upstream's function first (Note [Replacements
    # receive their original]): a stand-in counts the real probes.
    def setUp(self) -> None:
        self._fresh = fresh_cache()
        self._fresh.__enter__()
        self.assertTrue(torch_aotcache.is_installed())
        self.calls = []

    def tearDown(self) -> None:
        self._fresh.__exit__(None, None, None)

    def fake_original(self, isa, code):
        self.calls.append((str(isa), code))
        return True

    def check(self, isa, code, original=None):
        return inductor_probes.check_build(original or self.fake_original, isa, code)

    def test_patched_and_restored(self) -> None:
        installed = VecISA.__dict__["check_build"]
        self.assertEqual(installed.__module__, inductor_probes.__name__)
        key = ("torch._inductor.cpu_vec_isa", "VecISA", "check_build")
        self.assertIs(installed.__original__, patching._saved[key])

    def test_second_probe_is_remembered(self) -> None:
        isa = VecAVX2()
        self.assertTrue(self.check(isa, "int x;"))
        self.assertTrue(self.check(isa, "int x;"))
        self.assertEqual(len(self.calls), 1)

    def test_other_code_or_cpu_probes_again(self) -> None:
        isa = VecAVX2()
        self.check(isa, "int x;")
        self.check(isa, "int y;")
        self.assertEqual(len(self.calls), 2)
        with unittest.mock.patch.object(fingerprint, "cpu_features", return_value="another-cpu"):
            self.check(isa, "int x;")
        self.assertEqual(len(self.calls), 3)

    def test_compiler_change_probes_again(self) -> None:
        isa = VecAVX2()
        self.check(isa, "int x;")
        with unittest.mock.patch(
            "torch._inductor.cpu_vec_isa._get_isa_dry_compile_fingerprint",
            return_value="another compiler",
        ):
            self.check(isa, "int x;")
        self.assertEqual(len(self.calls), 2)

    def test_negative_answers_are_remembered_too(self) -> None:
        def refuse(isa, code):
            self.calls.append(1)
            return False

        self.assertFalse(self.check(VecAVX2(), "int z;", refuse))
        self.assertFalse(self.check(VecAVX2(), "int z;", refuse))
        self.assertEqual(len(self.calls), 1)

    def test_corrupt_record_probes_again(self) -> None:
        isa = VecAVX2()
        self.check(isa, "int q;")
        path = inductor_probes._record_path(inductor_probes.probe_digest(isa, "int q;"))
        with open(path, "w") as f:
            f.write("garbage")
        self.check(isa, "int q;")
        self.assertEqual(len(self.calls), 2)


class TestPrecompiledHeaderMemo(unittest.TestCase):
    KEY = ("torch._inductor.codecache", None, "_precompile_header")

    def setUp(self) -> None:
        import tempfile

        self._fresh = fresh_cache()
        self._fresh.__enter__()
        self.assertIn(self.KEY, patching._saved)
        self.dir = tempfile.mkdtemp()
        self.calls = []

    def tearDown(self) -> None:
        self._fresh.__exit__(None, None, None)

    def fake_original(self, header, cmd, **kw):
        self.calls.append((header, cmd))
        path = os.path.join(self.dir, f"h{len(self.calls)}.h")
        open(path, "w").close()
        open(path + ".gch", "w").close()
        return path

    def call(self, **kw):
        return inductor_probes.precompile_header(
            self.fake_original, "torch/csrc/inductor/cpp_prefix.h", "g++ -O3", vec_isa=VecAVX2(), **kw
        )

    def test_remembered_while_header_exists(self) -> None:
        first = self.call(shared=True)
        self.assertEqual(self.call(shared=True), first)
        self.assertEqual(len(self.calls), 1)
        self.call(shared=False)
        self.assertEqual(len(self.calls), 2)

    def test_missing_compiled_header_rebuilds(self) -> None:
        first = self.call(shared=True)
        os.unlink(first + ".gch")
        second = self.call(shared=True)
        self.assertEqual(len(self.calls), 2)
        self.assertNotEqual(first, second)

    def test_unstable_argument_is_not_memoized(self) -> None:
        class Opaque:
            pass

        self.call(extra=Opaque())
        self.call(extra=Opaque())
        self.assertEqual(len(self.calls), 2)


if __name__ == "__main__":
    unittest.main()
