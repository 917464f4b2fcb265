"""
A hit across processes: another PYTHONHASHSEED, working directory and cache
directory path (the store is copied elsewhere), and the same results; and a
store set apart (TORCH_AOTCACHE_DIR) hit from an empty Inductor cache dir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import unittest

from common import run_python, slow

# Every test here starts other processes or compiles many programs (CONTRIBUTING.md, "Tests").
pytestmark = slow


WORKER = """
import json, os, sys
import torch
import torch_aotcache
from torch._dynamo.utils import counters

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
x = torch.randn(5, 8)
out = torch.compile(model)(x)
out.sum().backward()
print(json.dumps({
    "counts": {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")},
    "kernels": {k: v for k, v in counters["torch_aotcache"].items() if k.startswith("kernels")},
    "out": out.detach().tolist(),
    "grad": model[0].weight.grad.tolist(),
}))
"""


class TestCrossProcess(unittest.TestCase):
    def test_hit_in_another_process_with_moved_cache_dir(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            first_dir = os.path.join(tmp, "first-cache")
            second_dir = os.path.join(tmp, "somewhere", "else", "cache")
            cwd_a = os.path.join(tmp, "a")
            cwd_b = os.path.join(tmp, "b")
            os.makedirs(cwd_a)
            os.makedirs(cwd_b)
            cold = run_python(
                WORKER,
                env={"TORCHINDUCTOR_CACHE_DIR": first_dir, "PYTHONHASHSEED": "1", "_CWD": cwd_a},
            )
            self.assertEqual(cold.returncode, 0, cold.stderr[-3000:])
            cold_res = json.loads(cold.stdout.strip().splitlines()[-1])
            self.assertEqual(cold_res["counts"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1})

            shutil.copytree(first_dir, second_dir)
            shutil.rmtree(first_dir)
            warm = run_python(
                WORKER,
                env={"TORCHINDUCTOR_CACHE_DIR": second_dir, "PYTHONHASHSEED": "987", "_CWD": cwd_b},
            )
            self.assertEqual(warm.returncode, 0, warm.stderr[-3000:])
            warm_res = json.loads(warm.stdout.strip().splitlines()[-1])
            self.assertEqual(warm_res["counts"], {"autograd_cache_hit": 1})
            self.assertEqual(warm_res["out"], cold_res["out"])
            self.assertEqual(warm_res["grad"], cold_res["grad"])

    def test_store_apart_hits_with_an_empty_inductor_cache_dir(self) -> None:
        # TORCH_AOTCACHE_DIR: a shared store of self-contained entries; the
        # second process's Inductor cache dir is new and stays free of kernels.
        with tempfile.TemporaryDirectory() as tmp:
            store = os.path.join(tmp, "shared-store")
            cold = run_python(
                WORKER,
                env={"TORCHINDUCTOR_CACHE_DIR": os.path.join(tmp, "a"), "TORCH_AOTCACHE_DIR": store},
            )
            self.assertEqual(cold.returncode, 0, cold.stderr[-3000:])
            cold_res = json.loads(cold.stdout.strip().splitlines()[-1])
            self.assertEqual(cold_res["counts"], {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertGreater(cold_res["kernels"].get("kernels_carried", 0), 0)
            self.assertTrue(os.path.isdir(os.path.join(store, "entries")))

            second = os.path.join(tmp, "b")
            warm = run_python(
                WORKER,
                env={"TORCHINDUCTOR_CACHE_DIR": second, "TORCH_AOTCACHE_DIR": store},
            )
            self.assertEqual(warm.returncode, 0, warm.stderr[-3000:])
            warm_res = json.loads(warm.stdout.strip().splitlines()[-1])
            self.assertEqual(warm_res["counts"], {"autograd_cache_hit": 1})
            self.assertEqual(warm_res["kernels"].get("kernels_loaded"), cold_res["kernels"]["kernels_carried"])
            built = [f for _, _, fs in os.walk(second) for f in fs if f.endswith((".so", ".cpp"))]
            self.assertEqual(built, [])
            self.assertEqual(warm_res["out"], cold_res["out"])
            self.assertEqual(warm_res["grad"], cold_res["grad"])


if __name__ == "__main__":
    unittest.main()
