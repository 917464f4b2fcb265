"""Inductor's torch_key kept between processes, and handed back only while valid.

See Note [Keeping torch_key between processes] in inductor/digests.py.
"""

from __future__ import annotations

import json
import os
import tempfile
import unittest

import torch._inductor.codecache as codecache
from torch._inductor.utils import fresh_cache

from torch_aotcache.key import fingerprint
from torch_aotcache.inductor import digests as inductor_digests

from common import run_python, slow


settable = unittest.skipUnless(
    callable(getattr(codecache.torch_key, "set", None)), "this release's torch_key cannot be set"
)


@settable
class TestTorchKeyRecord(unittest.TestCase):
    def setUp(self) -> None:
        self._fresh = fresh_cache()
        self._fresh.__enter__()
        codecache.torch_key.clear()
        self.addCleanup(codecache.torch_key.clear)

    def tearDown(self) -> None:
        self._fresh.__exit__(None, None, None)

    def record(self) -> dict:
        with open(inductor_digests._record_path()) as f:
            return json.load(f)

    def write_record(self, obj: object) -> None:
        path = inductor_digests._record_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj))

    def test_remembered_value_is_inductors(self) -> None:
        inductor_digests.remember_torch_key()
        real = codecache.torch_key()
        rec = self.record()
        self.assertEqual(bytes.fromhex(rec["torch_key"]), real)
        self.assertEqual(rec["signatures"]["sources"], fingerprint.torch_fingerprint.get())
        codecache.torch_key.clear()
        self.assertTrue(inductor_digests.prime_torch_key())
        self.assertEqual(codecache.torch_key(), real)

    def test_changed_signatures_are_not_handed_over(self) -> None:
        inductor_digests.remember_torch_key()
        real = codecache.torch_key()
        for part in ("sources", "binaries", "torch_version"):
            rec = self.record()
            rec["signatures"][part] = "something else"
            rec["torch_key"] = "00" * 32
            self.write_record(rec)
            codecache.torch_key.clear()
            self.assertFalse(inductor_digests.prime_torch_key(), part)
            self.assertEqual(codecache.torch_key(), real, part)

    def test_bad_records_are_ignored(self) -> None:
        for bad in ("{not json", "[]", json.dumps({"signatures": None}),
                    json.dumps({"signatures": inductor_digests._signatures(), "torch_key": "zz"})):
            self.write_record(bad)
            codecache.torch_key.clear()
            self.assertFalse(inductor_digests.prime_torch_key(), bad)

    def test_value_computed_already_is_kept(self) -> None:
        real = codecache.torch_key()
        self.write_record({"signatures": inductor_digests._signatures(), "torch_key": "00" * 32})
        self.assertFalse(inductor_digests.prime_torch_key())
        self.assertEqual(codecache.torch_key(), real)


@slow
@settable
class TestAcrossProcesses(unittest.TestCase):
    def test_warm_process_does_not_hash_torch(self) -> None:
        code = """
            import json
            import torch, torch_aotcache
            import torch._inductor.codecache as cc
            calls = []
            orig = cc.build_code_hash
            def counting(*a, **k):
                calls.append(1)
                return orig(*a, **k)
            cc.build_code_hash = counting
            m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
            torch.compile(m)(torch.randn(4, 8)).sum().backward()
            from torch._dynamo.utils import counters
            value = cc.torch_key()
            cc.build_code_hash = orig
            cc.torch_key.clear()
            print(json.dumps({"hit": counters["aot_autograd"]["autograd_cache_hit"],
                              "hashed": len(calls), "same": value == cc.torch_key()}))
        """
        env = {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp()}
        runs = []
        for _ in range(2):
            proc = run_python(code, env=env)
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        cold, warm = runs
        self.assertEqual(cold["hit"], 0)
        self.assertGreater(cold["hashed"], 0)
        self.assertEqual(warm, {"hit": 1, "hashed": 0, "same": True})


if __name__ == "__main__":
    unittest.main()
