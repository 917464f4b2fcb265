"""
Multi-rank jobs: the hit-or-miss decision that ranks take together.

Note [Ranks decide together]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~
In a job of several ranks (DDP, FSDP, tensor parallel), a compile may issue
collectives that only the compiling ranks join: torch 2.13+'s
``_sync_decision_cross_ranks`` (partitioner decisions), Inductor's collective
reordering.  If one rank hits while another compiles, the compiling rank
waits in a collective its peer never joins.  torch 2.15 makes the decision
unanimous: with ``torch._functorch.config._sync_cache_decision_cross_ranks``
on, every rank all-reduces whether it hit, once after the lookup and once
after the load, and a lone hit is dropped (counted as
``autograd_cache_cross_rank_miss``).  We call upstream's function at the same
two points, so the counting and the logging are upstream's; on a rank whose
key computation bypasses, or whose load fails, the pending points are still
reached (with a miss), so no peer waits for it.

Single flight (Note [Single flight] in tiers/single_flight.py) makes a process wait
for another's compile.  Across ranks that is a hang waiting to happen: rank 0
waits for rank 1's entry while rank 1's compile waits for rank 0 in a
collective.  So in a process group of two or more ranks single flight is
off: each rank that misses compiles, as with stock torch, and the ranks that
share a cache dir still share the entries that result (the first save wins;
later ones write the same bytes).  Where the ranks decide together (2.15,
a knob on), the front door (Note [Front door]) gives way, so that every
rank's lookup reaches the points where the ranks meet.

In 2.13 and 2.14 the lookup has no such point: ``_sync_decision_cross_ranks``
acts in the partitioner only, which no hit reaches on either path.  There the
front door takes its hits as in a job of one rank (giving way would only make
a warm rank import Inductor's compiler for nothing).  One case would hang: with
``_sync_decision_cross_ranks`` on, the partitioner all-gathers across ranks
for a graph that holds collectives, so a rank that hits such a graph while a
peer compiles it leaves the peer waiting in that all-gather, and itself waits
in the graph's first collective for a peer that never gets there.  Stock
torch's cache does that on those releases; ours bypasses such graphs there
(``lone_hit_would_hang``): every rank compiles them, as with the cache off, and
every other graph is cached as usual.  2.15 has the point where ranks meet,
and the cache is used as upstream uses it.
"""

from __future__ import annotations

from typing import Any

from .. import _compat


def must_agree() -> bool:
    """Whether this process is one rank of a job of two or more."""
    return _compat.process_group_size() > 1


# Operator namespaces of the collectives a traced graph holds (functional
# collectives; Dynamo rewrites the in-place c10d calls into them).
COLLECTIVE_NAMESPACES = frozenset({"_c10d_functional", "c10d_functional"})


def holds_collectives(gm: Any) -> bool:
    """Whether ``gm`` (or a sub-graph it refers to) calls a collective."""
    import torch

    for node in gm.graph.nodes:
        if node.op == "call_function":
            target = node.target
            if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
                if target.namespace in COLLECTIVE_NAMESPACES:
                    return True
            elif str(getattr(target, "__module__", "")).startswith("torch.distributed"):
                return True
        elif node.op == "get_attr":
            sub = getattr(gm, str(node.target), None)
            if isinstance(sub, torch.fx.GraphModule) and holds_collectives(sub):
                return True
    return False


def lone_hit_would_hang(gm: Any) -> bool:
    """Whether a hit of ``gm`` on this rank alone could hang the job: a job of
    two or more ranks, on a release whose lookup is no meeting point, with the
    partitioner's cross-rank sync on, and a graph that holds collectives
    (Note [Ranks decide together])."""
    return (
        must_agree()
        and not _compat.ranks_meet_in_lookup()
        and _compat.partitioner_syncs_across_ranks()
        and holds_collectives(gm)
    )


def decide_together() -> bool:
    """Whether this rank's lookup is a point where it meets its peers (a job
    of two or more ranks, a release that has such a point, a knob of torch's
    on): then every lookup goes through ``try_load`` (the front door gives
    way)."""
    return must_agree() and _compat.ranks_meet_in_lookup()


class Decision:
    """The two points at which ranks agree on a hit (after the lookup, after
    the load); :meth:`give_up` reaches those still pending with a miss."""

    def __init__(self) -> None:
        self._after_lookup: bool | None = None
        self._after_load: bool | None = None

    def after_lookup(self, local_hit: bool) -> bool:
        self._after_lookup = _compat.sync_cache_decision(local_hit)
        return self._after_lookup

    def after_load(self, loaded: bool) -> bool:
        self._after_load = _compat.sync_cache_decision(loaded)
        return self._after_load

    def give_up(self) -> None:
        """This rank stops before a pending point (a bypass, a failed load):
        take part with a miss so its peers do not wait for it."""
        if self._after_lookup is None:
            self.after_lookup(False)
        elif self._after_lookup and self._after_load is None:
            self.after_load(False)
