"""
One rank of a two-rank gloo job, run by test/test_ranks.py:

    python rank_job.py RANK WORLD_SIZE PORT CACHE_DIR KNOBS

A small compiled model wrapped in DDP takes one training step; the same
model wrapped in DDP without compiling takes the same step.  Prints one JSON
line: whether outputs and gradients are equal, and the cache's counters.
KNOBS: "on" turns on torch's cross-rank decisions (2.15's
``_sync_cache_decision_cross_ranks``, and ``_sync_decision_cross_ranks``
where the release has them), "off" leaves them at their defaults.

Note [Tearing down a gloo job]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
On torch 2.13 a rank can hang at exit, with or without torch_aotcache and
whatever the knobs: when the last reference to the gloo process group is
DDP's ``Reducer``, freeing the module destroys the group with the GIL held,
and the group's destructor joins its worker threads.  A worker may still be
freeing a finished collective (the barrier's work holds the earlier
all-reduces, DDP's among them) whose thread-local snapshot holds a Python
object (the backward stashes a context there while it runs;
``torch._inductor.cudagraph_trees`` stashes two objects for good when
imported): that needs the GIL, and neither thread moves again.  Stack of a
hung rank: ``pybind11_object_dealloc`` -> ``Reducer::~Reducer`` ->
``ProcessGroupGloo::~ProcessGroupGloo`` -> ``std::thread::join``; its worker:
``ProcessGroupGloo::runLoop`` -> ``AsyncBarrierWork`` ->
``AsyncAllreduceWork`` -> ``ThreadLocalState::~ThreadLocalState`` ->
``gil_scoped_acquire``.  So the DDP modules are freed first, while the
process group is still registered; ``destroy_process_group`` then releases
it through a binding that lets go of the GIL before destroying it.  (Not
seen on torch 2.15.)
"""

from __future__ import annotations

import gc
import json
import os
import sys
import weakref


def main() -> None:
    rank, world, port, cache_dir, knobs = (
        int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5],
    )
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE=str(world),
        TORCHINDUCTOR_CACHE_DIR=cache_dir,
    )
    import torch_aotcache  # noqa: F401

    import torch
    import torch.distributed as dist
    from torch._dynamo.utils import counters
    from torch.nn.parallel import DistributedDataParallel as DDP

    set_knobs = []
    if knobs == "on":
        for name in ("_sync_cache_decision_cross_ranks", "_sync_decision_cross_ranks"):
            if name in torch._functorch.config._config:
                setattr(torch._functorch.config, name, True)
                set_knobs.append(name)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result, modules = train_step(rank, DDP, counters)
        result["knobs"] = set_knobs
        # See Note [Tearing down a gloo job].
        gc.collect()
        result["ddp_freed"] = all(m() is None for m in modules)
        print(json.dumps(result), flush=True)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def train_step(rank: int, DDP: type, counters: dict) -> tuple[dict, list]:
    """One step of eager DDP and of DDP around a compiled module: what the
    job prints, and weak references to the DDP modules (freed on return)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)
    )
    eager = DDP(model)
    compiled_model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)
    )
    compiled_model.load_state_dict(model.state_dict())
    # DDP around a compiled module (torch.compile(DDP(...)) would have
    # Dynamo break the graph at DDP's forward on some releases).
    compiled = DDP(torch.compile(compiled_model))
    torch.manual_seed(100 + rank)  # each rank its own batch
    x = torch.randn(4, 16)
    ref = eager(x)
    ref.pow(2).sum().backward()
    out = compiled(x)
    out.pow(2).sum().backward()
    grads_equal = all(
        torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4)
        for a, b in zip(model.parameters(), compiled_model.parameters(), strict=True)
    )
    result = {
        "rank": rank,
        "outputs_equal": bool(torch.allclose(ref, out, atol=1e-5, rtol=1e-4)),
        "grads_equal": bool(grads_equal),
        "aot": dict(counters["aot_autograd"]),
        "ours": dict(counters["torch_aotcache"]),
    }
    return result, [weakref.ref(eager), weakref.ref(compiled)]


if __name__ == "__main__":
    main()
