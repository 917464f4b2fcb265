"""
The hit path: turning a loaded entry back into the callable AOTAutograd
returns.  Takes the role of upstream's ``runtime_wrappers.py`` for cached
results: the wrappers themselves are AOTAutograd's (the entry's
``wrap_post_compile`` re-applies them), and this module adds what a cache hit
needs around them.

Note [Serializing a cache hit]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Precompile and ``torch.compiler`` artifact tools ask a compiled function to
serialize itself.  A hit returns AOTAutograd's ``SerializableCompiledFunction``
whose ``serialize()`` re-reads the *verified* payload of the entry it came
from, so the artifact is the entry as it was before post-compile mutated it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch._dynamo.utils import counters
from torch._functorch._aot_autograd.runtime_wrappers import SerializableCompiledFunction

from . import schemas
from .inductor import artifacts, light_runtime
from .counters import count


def load_result(entry: schemas.VerifiedEntry) -> Any:
    """AOTAutograd's result, unpickled from a verified entry's payload (the
    only payload ever unpickled).  See Note [Light runtime imports] in
    inductor/light_runtime.py for the stand-ins it may load."""
    return light_runtime.loads(entry.payload)


def wrap_cached_result(
    result: Any,
    entry: schemas.VerifiedEntry,
    args: list[Any],
    aot_config: Any,
    fx_config: dict[str, Any],
) -> Callable[..., Any]:
    """Re-apply AOTAutograd's post-compile wrappers to ``result``, loaded
    from ``entry``: the generated code and the kernels it carries load from
    the entry alone (Note [Self-contained entries] in inductor/artifacts.py).
    """
    start = time.perf_counter_ns()
    with artifacts.sealed_load(entry.kernels()):
        compiled_fn = result.wrap_post_compile(args, aot_config, fx_config)
    count("post_compile_ns", time.perf_counter_ns() - start)
    header = entry.header
    upstream_mode = header.extra.get(schemas.EXTRA_UPSTREAM_MODE)
    if header.mode == schemas.MODE_BUNDLED and upstream_mode == schemas.MODE_FXGRAPHCACHE:
        # Upstream would have loaded each graph from Inductor's FX graph
        # cache: count it as such.  See Note [Entries that stand for
        # Inductor's FX graph cache] in autograd_cache.py.
        graphs = sum(
            getattr(result, part, None) is not None for part in ("compiled_fw", "compiled_bw")
        )
        counters["inductor"]["fxgraph_cache_hit"] += graphs
        counters["inductor"]["fxgraph_lookup_write_file"] += graphs

    def serialize() -> Any:
        return load_result(entry)

    return SerializableCompiledFunction(compiled_fn, serialize)
