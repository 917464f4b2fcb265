"""
Multi-rank jobs (Note [Ranks decide together] in tiers/ranks.py): two real ranks of
a gloo job, DDP around a compiled module, one cache dir; cold, then warm, with
and without torch's cross-rank knobs.  No rank hangs, gradients equal eager
DDP's, every rank hits warm.  On torch 2.15, with the knob on, a rank whose
peer has nothing cached drops its own hit (upstream's count).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import unittest.mock
from typing import Any

import torch
from torch._functorch import config as functorch_config
from torch._functorch._aot_autograd.autograd_cache import BypassAOTAutogradCache

from torch_aotcache import _compat, autograd_cache as ours
from torch_aotcache.tiers import ranks

from common import cache_enabled, child_env, slow, spawn_child


JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rank_job.py")
WORLD = 2
# A rank that waited for a peer forever would show as this time-out.
TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_job(cache_dirs: list[str], knobs: str) -> list[dict]:
    """Run the two ranks (rank i with cache_dirs[i]); their JSON lines."""
    port = str(_free_port())
    env = child_env({"OMP_NUM_THREADS": "1"})
    # Output goes to files: a rank blocked on a full pipe while its peer
    # waits for it in a collective would look like a hang of the job.
    outs = [tempfile.TemporaryFile("w+") for _ in range(WORLD)]
    errs = [tempfile.TemporaryFile("w+") for _ in range(WORLD)]
    procs = [
        spawn_child([JOB, str(rank), str(WORLD), port, cache_dirs[rank], knobs], env,
                    stdout=outs[rank], stderr=errs[rank])
        for rank in range(WORLD)
    ]
    deadline = time.monotonic() + TIMEOUT_S
    results = []
    try:
        for rank, proc in enumerate(procs):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"rank {rank} still running after {TIMEOUT_S} s:\n{_tail(errs[rank])}"
                ) from None
            if proc.returncode != 0:
                raise AssertionError(f"rank {rank} exited {proc.returncode}:\n{_tail(errs[rank])}")
            outs[rank].seek(0)
            results.append(json.loads(outs[rank].read().strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in outs + errs:
            f.close()
    return sorted(results, key=lambda r: r["rank"])


def _tail(f: Any) -> str:
    f.seek(0)
    return f.read()[-4000:]


HAS_CROSS_RANK_KNOB = "_sync_cache_decision_cross_ranks" in torch._functorch.config._config


@slow
class TestTwoRanks(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="aotcache-ranks-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def _cold_then_warm(self, knobs: str) -> None:
        cache = os.path.join(self.tmp, "cache")
        for phase in ("cold", "warm"):
            results = run_job([cache, cache], knobs)
            for r in results:
                # See Note [Tearing down a gloo job] in rank_job.py.
                self.assertTrue(r["ddp_freed"], (phase, r))
                self.assertTrue(r["outputs_equal"], (phase, r))
                self.assertTrue(r["grads_equal"], (phase, r))
                self.assertEqual(r["aot"].get("autograd_cache_cross_rank_miss", 0), 0, (phase, r))
                if phase == "cold":
                    # Single flight is off across ranks: no rank waits for
                    # another's compile (a rank that looks up after its peer
                    # saved may hit, unless the ranks must agree).
                    self.assertGreaterEqual(r["aot"].get("autograd_cache_miss", 0), 1 - r["aot"].get(
                        "autograd_cache_hit", 0), r)
                    self.assertEqual(r["ours"].get("single_flight_waited", 0), 0, r)
                else:
                    self.assertGreaterEqual(r["aot"].get("autograd_cache_hit", 0), 1, r)
                    self.assertEqual(r["aot"].get("autograd_cache_miss", 0), 0, r)
                    if _compat.front_door_release() and not r["ours"].get("drift_front_door"):
                        # The front door gives way only where the ranks meet
                        # in the lookup (Note [Ranks decide together]).
                        meet = knobs == "on" and HAS_CROSS_RANK_KNOB
                        self.assertEqual(r["ours"].get("front_door_hits", 0) > 0, not meet, r)
            if knobs == "on" and HAS_CROSS_RANK_KNOB:
                self.assertIn("_sync_cache_decision_cross_ranks", results[0]["knobs"])
                # Every rank hits or none does.
                self.assertEqual(len({r["aot"].get("autograd_cache_hit", 0) for r in results}), 1, results)

    def test_cold_then_warm_knobs_off(self) -> None:
        self._cold_then_warm("off")

    def test_cold_then_warm_knobs_on(self) -> None:
        self._cold_then_warm("on")

    @unittest.skipUnless(HAS_CROSS_RANK_KNOB, "this torch has no cross-rank cache decision")
    def test_lone_hit_is_dropped(self) -> None:
        # Rank 0's cache dir holds the entry, rank 1's is empty: with the knob
        # on, rank 0 drops its hit and both compile; nobody waits forever.
        warm_dir = os.path.join(self.tmp, "warm")
        # (The knobs are functorch options, so keyed: prime with them on.)
        run_job([warm_dir, os.path.join(self.tmp, "prime")], "on")
        results = run_job([warm_dir, os.path.join(self.tmp, "empty")], "on")
        for r in results:
            self.assertTrue(r["outputs_equal"], r)
            self.assertTrue(r["grads_equal"], r)
            self.assertEqual(r["aot"].get("autograd_cache_hit", 0), 0, r)
        self.assertGreaterEqual(results[0]["aot"].get("autograd_cache_cross_rank_miss", 0), 1, results[0])



@unittest.skipUnless(torch.distributed.is_available(), "torch.distributed is not available")
class TestLoneHitWouldHang(unittest.TestCase):
    """2.13/2.14 (Note [Ranks decide together]): a graph that holds collectives
    is bypassed in a job of 2+ ranks when the partitioner syncs across ranks
    and the lookup is no meeting point; nothing else is."""

    @staticmethod
    def graph(collective: bool) -> torch.fx.GraphModule:
        g = torch.fx.Graph()
        y = g.call_function(torch.ops.aten.mul.Tensor, (g.placeholder("x"), 2))
        if collective:
            y = g.call_function(torch.ops._c10d_functional.all_reduce.default, (y, "sum", "0"))
        g.output(y)
        return torch.fx.GraphModule(torch.nn.Module(), g)

    def situation(self, world: int, meet: bool, sync: bool) -> Any:
        stack = contextlib.ExitStack()
        stack.enter_context(unittest.mock.patch.object(_compat, "process_group_size", return_value=world))
        stack.enter_context(unittest.mock.patch.object(_compat, "ranks_meet_in_lookup", return_value=meet))
        stack.enter_context(functorch_config.patch(_sync_decision_cross_ranks=sync))
        stack.enter_context(cache_enabled())
        return stack

    def test_bypassed_where_a_lone_hit_could_hang(self) -> None:
        with self.situation(world=2, meet=False, sync=True):
            self.assertTrue(ranks.lone_hit_would_hang(self.graph(True)))
            with self.assertRaisesRegex(BypassAOTAutogradCache, "holds collectives in a job of 2 ranks"):
                ours.check_cacheable(self.graph(True))
            self.assertFalse(ranks.lone_hit_would_hang(self.graph(False)))
            ours.check_cacheable(self.graph(False))

    def test_cached_everywhere_else(self) -> None:
        for world, meet, sync in ((1, False, True), (2, True, True), (2, False, False)):
            with self.subTest(world=world, meet=meet, sync=sync), self.situation(world, meet, sync):
                self.assertFalse(ranks.lone_hit_would_hang(self.graph(True)))
                ours.check_cacheable(self.graph(True))

    def test_collectives_found_in_sub_graphs(self) -> None:
        outer = torch.fx.Graph()
        x = outer.placeholder("x")
        outer.get_attr("inner")
        outer.output(x)
        root = torch.nn.Module()
        root.inner = self.graph(True)
        self.assertTrue(ranks.holds_collectives(torch.fx.GraphModule(root, outer)))
        root.inner = self.graph(False)
        self.assertFalse(ranks.holds_collectives(torch.fx.GraphModule(root, outer)))


if __name__ == "__main__":
    unittest.main()
