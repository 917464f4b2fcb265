"""
A hit without Inductor's compiler.

Note [Front door]
~~~~~~~~~~~~~~~~~
``torch.compile(model)`` hands each Dynamo graph to
``torch._TorchCompileInductorWrapper.__call__``, which imports
``torch._inductor.compile_fx`` and calls it; ``compile_fx`` patches
Inductor's config with the compile's options, sets up the fake mode and
tracing context, and calls AOTAutograd's ``aot_module_simplified``, which
prepares the inputs and the ``AOTConfig`` and looks the graph up in the
cache.  Importing ``compile_fx`` imports the lowering, the scheduler, the
kernel templates and the autotuner: on the CPU machine more than a warm
process spends on anything else above Dynamo's own tracing, all for a hit
that runs none of it.

So we replace that ``__call__`` (a patch site like the others) with a front
door that does, for the common case, what ``compile_fx`` and
``aot_module_simplified`` do before and after the lookup, with the same
upstream functions, under the same config patches and contexts:

1. Patch Inductor's config with the compile's options, as ``compile_fx``.
2. Give way (call upstream's ``__call__``) unless the graph is one the
   front door knows the path of: a ``GraphModule`` returning a tuple, flat
   inputs, every tensor on the CPU, no C++ or FX wrapper, no freezing, no CUDA
   graphs, no AOT compilation or precompile, no bisection, no compile
   debug or provenance tracking, pre-grad passes running after the lookup,
   the local cache on.
3. Under ``compile_fx``'s contexts (lazy graph modules, the Python
   dispatcher, node meta, the fake mode, the tracing context, compiled
   autograd off, ``functorch.config`` patched as ``compile_fx`` patches it),
   call AOTAutograd's own ``prepare_aot_module_simplified``: the same fake
   inputs and ``AOTConfig`` as the normal path (no decomposition table: a
   hit never traces, and the table is not a key component).
4. Compute the key with the same key function and look in the local store,
   then in the remote tier when it is on (:func:`load_if_stored`; Note [The
   front door asks the remote tier first] in tiers/remote.py).  A verified entry is loaded as the
   normal path loads it and counted as a hit; anything else (no entry, a
   bypass, an entry that does not load, an error of ours) records nothing
   and gives way, and the normal path then looks up again, records what it
   finds and compiles.  The key is computed by the same function from
   inputs prepared by the same functions, so it is the normal path's key
   (test/test_front_door.py: every graph a cold process saved hits through
   the front door in the next process, and equals eager there).
5. Wrap the compiled function as ``aot_module_simplified`` and Dynamo's
   ``aot_autograd`` backend do (parameters and buffers first, the counters
   ``total`` and ``ok``, ``torch._dynamo.disable``).

Giving way leaves no trace: the ``AOTConfig`` id taken from
``AOT_COUNTER`` is handed back, so graph names in logs are the same with or
without the front door.  The generated module of a hit imports Inductor's
runtime only (Note [Light runtime imports] in inductor/light_runtime.py); an entry
whose module calls an operator that is not registered in this process (one
that Inductor's compiler registers when imported) does not load through the
front door and gives way.

Two more sites keep Inductor's compiler out of a warm process.
``torch.compile`` itself calls the wrapper's ``get_compiler_config``, which
upstream answers by importing ``compile_fx`` for a two-line function; ours
computes the same dict from Inductor's config module.  Inductor's
``FxGraphCache.cache_hit_post_compile`` imports ``GraphLowering`` only to
call a hook tests set on it; ours takes the same steps without that import
while nobody can have set the hook.  A compiled graph reads three switches
of ``torch._inductor.debug`` at every call; until that module is imported
(it imports Inductor's IR and scheduler), ``torch._inductor.debug`` is a
stand-in that gives their starting values and imports the real module for
anything else (Note [Light runtime imports]).

A miss pays for the front door with a second key computation and a second
look at the store (milliseconds; the fake inputs are memoized by the fake
mode).  A store fault or a bad entry met by the front door gives way before
it is counted or quarantined, so the normal path counts it once.

Rejected: a key of our own over Dynamo's graph and real inputs, computed
before AOTAutograd's preparation (a second key scheme, which would have to
be proved equivalent to the first); handing the front door's key to the
normal path (the normal path's own lookup is what checks that the front
door mirrors it).

Only for the releases whose ``compile_fx`` was read for this
(``_compat.FRONT_DOOR_RELEASES``); ``TORCH_AOTCACHE_FRONT_DOOR=0`` turns it
off.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .. import _compat, config
from ..installer import drift
from . import light_runtime
from ..tiers import ranks
from ..counters import count


log = logging.getLogger(__name__)


def inductor_call(original: Callable[..., Any], self: Any, model_: Any, inputs_: Any,
                  *args: Any, **kwargs: Any) -> Any:
    """Installed as ``torch._TorchCompileInductorWrapper.__call__`` around
    upstream's ``original`` (patching.PATCH_SITES)."""
    if config.front_door and not args and set(kwargs) <= {"config_patches"}:
        patches = {**(getattr(self, "config", None) or {}), **(kwargs.get("config_patches") or {})}
        compiled = None
        try:
            compiled = through_front_door(model_, inputs_, patches, getattr(self, "name", None))
        except Exception:  # noqa: BLE001 - the normal path compiles
            log.debug("torch_aotcache: front door failed, taking the normal path", exc_info=True)
            count("front_door_errors")
        if compiled is not None:
            return compiled
    return original(self, model_, inputs_, *args, **kwargs)


def compiler_config(original: Callable[..., Any], self: Any) -> Any:
    """Installed as ``torch._TorchCompileInductorWrapper.get_compiler_config``
    (which ``torch.compile`` calls at once): Inductor's config with the
    compile's options, as upstream computes it, without importing
    ``compile_fx`` for it."""
    patches = getattr(self, "config", None) or {}
    if not (
        _compat.front_door_release()
        and _compat.compile_options_are_core(patches)
        and drift.intact("compiler_config")
    ):
        return original(self)
    from torch._inductor import config as inductor_config

    with inductor_config.patch(patches):
        return inductor_config.get_config_copy()


def through_front_door(gm: Any, example_inputs: Sequence[Any], patches: dict[str, Any],
                       region_name: str | None) -> Callable[..., Any] | None:
    """The compiled function of a hit, or None to give way (Note [Front door])."""
    if not (_compat.front_door_release() and isinstance(gm, torch.fx.GraphModule) and drift.intact("front_door")):
        return None
    from torch._inductor import config as inductor_config

    if not _compat.compile_options_are_core(patches):
        return None  # options for a device's config module: upstream routes them
    with inductor_config.patch(patches) if patches else contextlib.nullcontext():
        reason = why_not(gm, example_inputs)
        if reason is not None:
            log.debug("torch_aotcache: front door gives way: %s", reason)
            return None
        return _load(gm, example_inputs, region_name)


def _tensors(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Iterator[torch.Tensor]:
    for x in example_inputs:
        if isinstance(x, torch.Tensor):
            yield x
    yield from gm.parameters()
    yield from gm.buffers()


def why_not(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> str | None:
    """Why the front door does not know this compile's path (None: it does)."""
    from torch._functorch._aot_autograd import autograd_cache as upstream
    from torch._inductor import config as inductor_config
    from torch._inductor.compiler_bisector import CompilerBisector
    from torch._inductor.virtualized import V
    from torch.fx.graph import _PyTreeCodeGen

    if not upstream.should_use_local_autograd_cache():
        return "local cache off"
    if ranks.decide_together():
        return "ranks decide together"  # Note [Ranks decide together]
    if os.environ.get("TORCH_COMPILE_DEBUG", "0") == "1":
        return "TORCH_COMPILE_DEBUG"
    if CompilerBisector.bisection_enabled:
        return "bisection"
    for option in ("cpp_wrapper", "fx_wrapper", "freezing"):
        if getattr(inductor_config, option, False):
            return option
    if inductor_config.triton.cudagraphs or gm.meta.get("cudagraph_annotation") is not None:
        return "CUDA graphs"
    if V.aot_compilation:
        return "AOT compilation"
    if _compat.provenance_tracking_level():
        return "provenance tracking"  # compile_fx resets its globals first
    if getattr(gm, "_backend_id", None) is not None:
        return "precompile"  # the normal path records the entry for it
    from torch._inductor.codecache import resolve_pre_grad_pass_timing

    try:
        if resolve_pre_grad_pass_timing() != "late":
            return "pre-grad passes run before the lookup"
    except RuntimeError as e:
        return str(e)
    if isinstance(gm.graph._codegen, _PyTreeCodeGen):
        return "exported graph"
    output = next(iter(reversed(gm.graph.nodes)), None)
    if output is None or output.op != "output" or not isinstance(output.args[0], (list, tuple)):
        return "graph does not return a tuple"
    if any(isinstance(x, (list, tuple, dict)) for x in example_inputs):
        return "nested inputs"
    for t in _tensors(gm, example_inputs):
        if t.device.type != "cpu":
            return f"{t.device.type} tensor"
    return None


class _CompilerConfigExtra:
    """What ``compile_fx``'s ``CompilerConfigExtra`` holds for a compile the
    front door takes (no CUDA graphs); the cache reads ``cudagraphs`` and
    the forward device (field names per release: ``_compat``)."""

    def __init__(self) -> None:
        for name, value in _compat.compiler_config_extra_fields().items():
            setattr(self, name, value)


@contextlib.contextmanager
def _compile_fx_contexts(example_inputs: Sequence[Any]) -> Iterator[None]:
    """The contexts ``compile_fx`` enters before AOTAutograd's lookup."""
    from torch._dispatch.python import enable_python_dispatcher
    from torch._dynamo import compiled_autograd, config as dynamo_config
    from torch._dynamo.utils import detect_fake_mode
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config
    from torch._inductor.virtualized import V
    from torch.fx._lazy_graph_module import _use_lazy_graph_module

    fake_mode = detect_fake_mode(example_inputs) or torch._subclasses.FakeTensorMode(
        allow_non_fake_inputs=True
    )
    tracing_context = torch._guards.TracingContext.try_get() or torch._guards.TracingContext(fake_mode)
    with (
        _use_lazy_graph_module(dynamo_config.use_lazy_graph_module),
        enable_python_dispatcher(),
        torch.fx.traceback.preserve_node_meta(_compat.provenance_tracking_level() == 1),
        V.set_fake_mode(fake_mode),
        torch._guards.tracing(tracing_context),
        compiled_autograd._disable(),
        functorch_config.patch(
            unlift_effect_tokens=True, selective_decompose=inductor_config.selective_decompose
        ),
    ):
        yield


def _load(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
          region_name: str | None) -> Callable[..., Any] | None:
    from torch._functorch import aot_autograd as aot_module, config as functorch_config
    from torch._functorch._aot_autograd import autograd_cache as upstream


    # A compiled graph reads torch._inductor.debug's switches at every call
    # (compile_fx imports that module on the normal path).
    if not light_runtime.place_debug_switches():
        import torch._inductor.debug  # noqa: F401

    counter: Any = aot_module.AOT_COUNTER
    aot_id = next(counter)
    aot_module.AOT_COUNTER = itertools.chain([aot_id], counter)  # type: ignore[assignment]
    compiled_fn = None
    try:
        with _compile_fx_contexts(example_inputs), contextlib.ExitStack():
            prepared = aot_module.prepare_aot_module_simplified(
                gm,
                example_inputs,
                None,
                None,
                True,  # keep_inference_input_mutations, as compile_fx passes it
                False,
                False,
                force_non_lazy_backward_lowering=functorch_config.force_non_lazy_backward_lowering,
                disable_functionalization=False,
            )
            params_buffers_flat, fake_flat_args, aot_config = prepared[1], prepared[4], prepared[6]
            extra = _CompilerConfigExtra()
            fx_config = _compat.fx_config_from(extra)
            fx_config["compile_region_name"] = region_name
            compiled_fn = load_if_stored(
                gm, fake_flat_args, aot_config, fx_config, _compat.front_door_key_args(extra, prepared),
                upstream.should_use_remote_autograd_cache(),
            )
    finally:
        # A hit took aot_id, as the normal path would have; giving way hands
        # it back to the normal path.
        restored: Any = counter if compiled_fn is not None else itertools.chain([aot_id], counter)
        aot_module.AOT_COUNTER = restored
    if compiled_fn is None:
        return None
    count("front_door_hits")
    return _as_backend_result(gm, compiled_fn, params_buffers_flat)


def load_if_stored(
    mod: Any, args: list[Any], aot_config: Any, fx_config: dict[str, Any], key_args: tuple[Any, ...],
    remote: bool,
) -> Callable[..., Any] | None:
    """The lookup of the front door.

    The compiled function of a verified entry (local, or remote when the
    remote tier is on), its hit recorded as ``try_load`` records one; or
    None, recording nothing: the compile then takes the normal path, which
    looks up again and records what it finds (a miss, a bypass, an entry
    that does not load).
    """
    from torch._functorch._aot_autograd import autograd_cache as upstream

    from .. import runtime_wrappers
    from ..store import local as storage
    from ..tiers import lookup
    from .digests import prime_torch_key

    remote = lookup.remote_tier_requested(remote)
    try:
        cache_key, debug_lines = upstream.autograd_cache_key(mod, args, aot_config, *key_args)
        prime_torch_key()
        cache_info: dict[str, Any] = {}
        with storage.faults_give_way():
            hit = lookup.find_entry(cache_key, True, lookup.hints_of(args), cache_info, remote=remote,
                                    record=False, give_way=True)
        if hit is None:
            return None
        compiled_fn = runtime_wrappers.wrap_cached_result(hit.result, hit.entry, args, aot_config, fx_config)
    except Exception as e:  # noqa: BLE001 - the normal path decides what this is
        log.debug("torch_aotcache: front door lookup gave way to the normal path: %s", e)
        return None
    in_local = hit.path is not None
    if not in_local:
        from ..tiers import remote as remote_tier

        remote_tier.count_ahead_hit(cache_key)
    lookup.record_result(local_hit=in_local, local_miss=not in_local, remote_hit=not in_local, remote_miss=False)
    lookup.record_artifacts(cache_key, hit, aot_config)
    lookup.account_hit(hit, cache_key, cache_info)
    lookup.log_outcome("hit", cache_key, cache_info, debug_lines, time.time_ns(), True, remote)
    return compiled_fn


def _as_backend_result(gm: torch.fx.GraphModule, compiled_fn: Callable[..., Any],
                       params_buffers_flat: list[Any]) -> Callable[..., Any]:
    """What ``aot_module_simplified`` and Dynamo's ``aot_autograd`` backend
    make of the compiled function."""
    from torch._dynamo import disable
    from torch._dynamo.utils import counters
    from torch._functorch._aot_autograd.runtime_wrappers import SerializableCompiledFunction
    from torch._functorch.aot_autograd import simple_wraps

    @simple_wraps(compiled_fn)
    def forward(*runtime_args: Any) -> Any:
        full_args = list(params_buffers_flat)
        full_args.extend(runtime_args)
        return compiled_fn(full_args)

    forward.zero_grad = gm.zero_grad  # type: ignore[attr-defined]
    forward.named_parameters = gm.named_parameters  # type: ignore[attr-defined]
    forward.named_buffers = gm.named_buffers  # type: ignore[attr-defined]

    def serialize_fn(fn: Any) -> Any:
        while fn is not None:
            if isinstance(fn, SerializableCompiledFunction):
                return fn.serialize_fn
            fn = getattr(fn, "__wrapped__", None)
        return None

    forward.serialize = serialize_fn(forward)  # type: ignore[attr-defined]
    counters["aot_autograd"]["total"] += 1
    counters["aot_autograd"]["ok"] += 1
    return disable(forward, reason="do not trace AOT-compiled graph")


# ---------------------------------------------------------------------------
# Inductor's steps after loading a cached graph, without GraphLowering
# ---------------------------------------------------------------------------

GRAPH_MODULE = "torch._inductor.graph"


def cache_hit_post_compile(original: Callable[..., Any], graph: Any, cache_info: Any,
                           constants: Any) -> Any:
    """Installed as ``FxGraphCache.cache_hit_post_compile`` around upstream's
    ``original``.

    Upstream's imports ``torch._inductor.graph`` (and with it the lowering)
    only to call ``GraphLowering.save_output_code``, a hook tests set on that
    class.  While ``torch._inductor.graph`` is not imported nobody can have set
    it, so on a checked release, with no structured trace or output-code log
    to write, we take the same steps without that import; otherwise
    upstream's function runs.
    """
    if not _light_post_compile_applies(graph):
        return original(graph, cache_info, constants)
    from torch._dynamo.utils import CompileEventLogger, counters, get_metrics_context
    from torch._inductor import metrics
    from torch._inductor.runtime import autotune_cache
    from torch._inductor.triton_bundler import TritonBundler

    bundle = graph._triton_bundle
    meta = TritonBundler.read_and_emit(bundle) if bundle else None
    if meta is not None:
        cache_info["triton_bundler_meta"] = str(meta)
        for event in ("inductor_compile", "AOTAutogradCache.inductor_load"):
            CompileEventLogger.try_add_pt2_compile(event, cached_kernel_names=meta.cached_kernel_names)
        if meta.cached_kernel_names:
            CompileEventLogger.try_(CompileEventLogger.increment_toplevel, "num_triton_bundles")
    try:
        graph.after_deserialization(constants)
    except OSError:
        return None, cache_info  # as upstream: the module vanished, a miss
    code = graph.source_code
    autotune_cache.AutotuneCacheBundler.begin_compile(
        autotune_cache.inductor_meta_from_config(), code=code
    )
    graph._set_compile_context_for_autotune_cache()
    metrics.CachedMetricsHelper.apply_deltas(graph.metrics_deltas)
    counters["inductor"] += graph.counter_deltas
    traces = graph.inductor_provenance_stack_traces_str
    if traces and get_metrics_context().in_progress():
        get_metrics_context().add_to_set("inductor_provenance", traces)
    count("light_post_compiles")
    return graph, cache_info


def _light_post_compile_applies(graph: Any) -> bool:
    import sys

    from torch._inductor.codecache import output_code_log

    return (
        _compat.front_door_release()
        and GRAPH_MODULE not in sys.modules
        and drift.intact("light_post_compile")
        and _structured_trace_off()
        and not output_code_log.isEnabledFor(logging.DEBUG)
    )


def _structured_trace_off() -> bool:
    """Whether ``trace_structured`` writes nothing: its log has only the
    default lazy handler, with no folder and none it would pick (it picks one
    only on Meta's clusters)."""
    from torch._logging._internal import LazyTraceHandler, trace_log

    return (
        all(
            isinstance(h, LazyTraceHandler) and h.root_dir is None and h.stream is None
            for h in trace_log.handlers
        )
        and hasattr(torch.version, "git_version")
        and os.getenv("MAST_HPC_JOB_NAME") is None
    )
