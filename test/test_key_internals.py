"""Shortcuts taken to compute keys fast must never return a stale answer."""

from __future__ import annotations

import unittest

import torch
import torch._functorch.config as functorch_config
import torch._inductor.config as inductor_config

from torch_aotcache import autograd_cache as ours
from torch_aotcache.key.graph_hashing import GraphEncoder


def inductor_digest() -> str:
    return ours._config_digest(inductor_config, ours._INDUCTOR_IGNORED_PREFIXES, ours._INDUCTOR_CALLABLE_KEYS)


def uncached_inductor_digest() -> str:
    from torch_aotcache.key.graph_hashing import digest

    return digest(ours._config_component(inductor_config, ours._INDUCTOR_IGNORED_PREFIXES, ours._INDUCTOR_CALLABLE_KEYS))


class TestConfigMemo(unittest.TestCase):
    def test_memo_equals_full_computation(self) -> None:
        self.assertEqual(inductor_digest(), uncached_inductor_digest())

    def test_patch_assignment_and_restore(self) -> None:
        base = inductor_digest()
        with inductor_config.patch(max_autotune=not inductor_config.max_autotune):
            patched = inductor_digest()
            self.assertEqual(patched, uncached_inductor_digest())
        self.assertNotEqual(patched, base)
        self.assertEqual(inductor_digest(), base)
        old = inductor_config.max_autotune
        inductor_config.max_autotune = not old
        try:
            self.assertEqual(inductor_digest(), patched)
        finally:
            inductor_config.max_autotune = old
        self.assertEqual(inductor_digest(), base)

    def test_in_place_mutation_of_a_container(self) -> None:
        base = inductor_digest()
        inductor_config.post_grad_fusion_options["torch_aotcache_test"] = {}
        try:
            changed = inductor_digest()
            self.assertNotEqual(changed, base)
            self.assertEqual(changed, uncached_inductor_digest())
        finally:
            del inductor_config.post_grad_fusion_options["torch_aotcache_test"]
        self.assertEqual(inductor_digest(), base)

    def test_functorch_config_too(self) -> None:
        def d() -> str:
            return ours._config_digest(functorch_config, ours._FUNCTORCH_IGNORED_PREFIXES, ours._FUNCTORCH_CALLABLE_KEYS)

        base = d()
        with functorch_config.patch(activation_memory_budget=0.25):
            self.assertNotEqual(d(), base)
        self.assertEqual(d(), base)


class TestTargetNameCache(unittest.TestCase):
    def test_same_lines_with_and_without_cache(self) -> None:
        g = torch.fx.Graph()
        x = g.placeholder("x")
        y = g.call_function(torch.ops.aten.mul.Tensor, (x, 2))
        z = g.call_function(torch.sin, (y,))
        g.output((z,))
        gm = torch.fx.GraphModule(torch.nn.Module(), g)
        first = GraphEncoder(gm).lines()
        from torch_aotcache.key import graph_hashing

        graph_hashing._TARGET_NAMES.clear()
        self.assertEqual(GraphEncoder(gm).lines(), first)
        self.assertIn("aten.mul.Tensor", first[1])


if __name__ == "__main__":
    unittest.main()
