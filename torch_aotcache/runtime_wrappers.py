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

from .inductor import artifacts
from . import schemas
from .counters import count


def wrap_cached_result(
    entry: Any,
    entry_bytes: bytes,
    header: schemas.EntryHeader,
    args: list[Any],
    aot_config: Any,
    fx_config: dict[str, Any],
) -> Callable[..., Any]:
    """Re-apply AOTAutograd's post-compile wrappers to a loaded entry.

    ``entry_bytes`` is the verified entry ``entry`` was unpickled from, and
    ``header`` its header; the generated code and the kernels it carries load
    from it alone (Note [Self-contained entries] in inductor/artifacts.py).
    """
    start = time.perf_counter_ns()
    body = schemas.entry_body(entry_bytes)
    with artifacts.sealed_load(schemas.split_artifacts(header, body)):
        compiled_fn = entry.wrap_post_compile(args, aot_config, fx_config)
    count("post_compile_ns", time.perf_counter_ns() - start)
    if header.mode == "bundled" and header.extra.get("upstream_mode") == "fxgraphcache":
        # Upstream would have loaded each graph from Inductor's FX graph
        # cache: count it as such.  See Note [Entries that stand for
        # Inductor's FX graph cache] in autograd_cache.py.
        graphs = sum(
            getattr(entry, part, None) is not None for part in ("compiled_fw", "compiled_bw")
        )
        counters["inductor"]["fxgraph_cache_hit"] += graphs
        counters["inductor"]["fxgraph_lookup_write_file"] += graphs

    def serialize() -> Any:
        return schemas.load_payload(schemas.entry_body(entry_bytes)[: header.payload_size])

    return SerializableCompiledFunction(compiled_fn, serialize)
