"""
Everything that differs between the torch releases torch_aotcache supports.

Supported: 2.11.x and 2.13.x.  The differences that reach us:

================================  =============================  ==================================
                                  2.11                           2.13
================================  =============================  ==================================
``try_load`` arguments            ``cudagraphs,                  ``compiler_config_extra, local,
                                  boxed_forward_device_index,    remote, compile_region_name=None``
                                  local, remote``
``try_load`` returns              compiled fn or None; a miss    ``(compiled fn or None, aot_config)``;
                                  sets ``aot_config.cache_info`` a miss returns a replaced config
                                  in place                       (AOTConfig is frozen)
key function's 4th argument       fx_config dict                 ``CompilerConfigExtra`` or None
``make_entry``                    no ``min_cut_info_str``        ``min_cut_info_str``
artifact recording                ``CacheArtifactManager``       ``CacheArtifactRecorder``
guard hints                       ``size_hint``                  ``guarding_hint_or_throw``
custom pre-grad passes            keyed by uuid (no timing       ``pre_grad_pass_timing``: "early"
                                  setting)                       (before the lookup, the graph
                                                                 stands for them) or "late" (keyed
                                                                 by uuid)
================================  =============================  ==================================

Nothing outside this module tests the torch version.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from typing import Any

import torch


log = logging.getLogger(__name__)

SUPPORTED_RELEASES = ("2.11", "2.13")
UNSET = object()


def version_tuple(version: str) -> tuple[int, ...]:
    nums = []
    for part in re.split(r"[.+]", version):
        m = re.match(r"\d+", part)
        if not m:
            break
        nums.append(int(m.group()))
    return tuple(nums)


def release_of(version: str) -> str:
    v = version_tuple(version)
    return "%d.%d" % v[:2] if len(v) >= 2 else version


def torch_release() -> str | None:
    """The supported release this torch belongs to, or None."""
    rel = release_of(torch.__version__)
    return rel if rel in SUPPORTED_RELEASES else None


def unbox(value: Any) -> Any:
    """Value of a BoxedBool / BoxedDeviceIndex (or the value itself)."""
    return getattr(value, "value", value)


# ---------------------------------------------------------------------------
# fx_config: what Inductor's post-compile of a loaded graph needs
# ---------------------------------------------------------------------------


def fx_config_from(key_arg: Any, *rest: Any) -> dict[str, Any]:
    """Normalize the key function's 4th argument to an fx_config dict."""
    from torch._inductor.utils import BoxedBool

    if isinstance(key_arg, dict):
        return key_arg
    if key_arg is None:
        return {
            "cudagraphs": BoxedBool(torch._inductor.config.triton.cudagraphs),
            "boxed_forward_device_index": None,
        }
    return {
        "cudagraphs": key_arg.cudagraphs,
        "boxed_forward_device_index": getattr(key_arg, "forward_device", None),
    }


# ---------------------------------------------------------------------------
# try_load adapters (one per release); the body is autograd_cache.try_load_impl
# ---------------------------------------------------------------------------


def _cache_info(key: str, symints: list[Any]) -> Any:
    from torch._functorch._aot_autograd.schemas import AOTAutogradCacheInfo

    return AOTAutogradCacheInfo(key, time.time_ns(), forward_symints=symints)


def try_load_v2_13(
    mod: Any,
    args: list[Any],
    aot_config: Any,
    compiler_config_extra: Any,
    local: bool,
    remote: bool,
    compile_region_name: str | None = None,
) -> tuple[Any, Any]:
    from .autograd_cache import try_load_impl

    fx_config = fx_config_from(compiler_config_extra)
    fx_config["compile_region_name"] = compile_region_name
    outcome = try_load_impl(
        mod, args, aot_config, fx_config, local, remote, key_arg=compiler_config_extra
    )
    if outcome.compiled_fn is None and outcome.cache_key is not None:
        aot_config = dataclasses.replace(
            aot_config, cache_info=_cache_info(outcome.cache_key, outcome.symints)
        )
    return outcome.compiled_fn, aot_config


def try_load_v2_11(
    mod: Any,
    args: list[Any],
    aot_config: Any,
    cudagraphs: Any,
    boxed_forward_device_index: Any,
    local: bool,
    remote: bool,
) -> Any:
    from .autograd_cache import try_load_impl

    fx_config = {
        "cudagraphs": cudagraphs,
        "boxed_forward_device_index": boxed_forward_device_index,
    }
    outcome = try_load_impl(mod, args, aot_config, fx_config, local, remote, key_arg=fx_config)
    if outcome.compiled_fn is None and outcome.cache_key is not None:
        aot_config.cache_info = _cache_info(outcome.cache_key, outcome.symints)
    return outcome.compiled_fn


TRY_LOAD = {"2.11": try_load_v2_11, "2.13": try_load_v2_13}


# ---------------------------------------------------------------------------
# make_entry: build AOTAutograd's own result classes
# ---------------------------------------------------------------------------

_MAKE_ENTRY_PARAMS_2_11 = (
    "compiled_fw_func",
    "compiled_bw_func",
    "aot_joint_graph_str",
    "aot_forward_graph_str",
    "aot_backward_graph_str",
    "runtime_metadata",
    "dispatch_wrappers",
    "maybe_subclass_meta",
    "num_fw_outs_saved_for_bw",
    "indices_of_inps_to_detach",
    "forward_time_taken_ns",
    "backward_time_taken_ns",
    "sanitized_aot_config",
    "guards_expr",
    "backward_state_indices",
    "num_symints_saved_for_bw",
    "serialized_bw_module",
)
MAKE_ENTRY_PARAMS = {
    "2.11": _MAKE_ENTRY_PARAMS_2_11,
    "2.13": _MAKE_ENTRY_PARAMS_2_11 + ("min_cut_info_str",),
}


def _bind(params: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if len(args) > len(params):
        raise TypeError(f"make_entry takes at most {len(params)} positional arguments")
    bound = dict(zip(params, args))
    for k, v in kwargs.items():
        if k in bound:
            raise TypeError(f"make_entry got multiple values for {k}")
        bound[k] = v
    for name in params:
        bound.setdefault(name, None)
    return bound


def _construct(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _unwrap_output_code(obj: Any) -> Any:
    from torch._inductor.output_code import OutputCode

    while hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    if not isinstance(obj, OutputCode):
        raise AssertionError(f"expected OutputCode, got {type(obj)}")
    return obj


def _fx_loadable(cls: type, func: Any, extra: dict[str, Any]) -> Any:
    key = getattr(func, "_fx_graph_cache_key", None)
    if key is None:
        raise AssertionError("compiled function has no FX graph cache key")
    lines = getattr(func, "_fx_graph_cache_debug_lines", [])
    values = dict(extra)
    values["fx_graph_cache_info"] = (key, lines)
    values["fx_graph_cache_key"] = key
    values["fx_graph_guard_expr"] = getattr(func, "guards_expr", None)
    return _construct(cls, values)


def make_entry(*args: Any, **kwargs: Any) -> Any:
    from torch._functorch._aot_autograd import aot_autograd_result as results
    from torch._functorch._aot_autograd.autograd_cache import should_bundle_autograd_cache

    release = torch_release() or SUPPORTED_RELEASES[-1]
    v = _bind(MAKE_ENTRY_PARAMS[release], args, kwargs)
    fw, bw = v.pop("compiled_fw_func"), v.pop("compiled_bw_func")
    bsi, nsym = v.pop("backward_state_indices"), v.pop("num_symints_saved_for_bw")
    if bw is not None and (bsi is None or nsym is None):
        raise AssertionError("a backward needs backward_state_indices and num_symints_saved_for_bw")
    if _self_contained_wanted() or should_bundle_autograd_cache() or _bundle_for_remote():
        v["compiled_fw"] = results.BundledCompiledForward(_unwrap_output_code(fw))
        v["compiled_bw"] = (
            None
            if bw is None
            else results.BundledCompiledBackward(_unwrap_output_code(bw), bsi, nsym)
        )
        return _construct(results.BundledAOTAutogradResult, v)
    v["compiled_fw"] = _fx_loadable(results.CompiledForward, fw, {})
    v["compiled_bw"] = (
        None
        if bw is None
        else _fx_loadable(
            results.CompiledBackward,
            bw,
            {"backward_state_indices": bsi, "num_symints_saved_for_bw_": nsym},
        )
    )
    return _construct(results.AOTAutogradResult, v)


def _bundle_for_remote() -> bool:
    """Remote entries must be self-sufficient: see Note [Remote tier]."""
    from . import config
    from .autograd_cache import remote_tier_requested
    from torch._functorch._aot_autograd.autograd_cache import should_use_remote_autograd_cache

    return config.bundle_for_remote and remote_tier_requested(should_use_remote_autograd_cache())


def _self_contained_wanted() -> bool:
    """Entries hold their compiled graphs by default (config.self_contained),
    and also when that is off while signing is on (a non-bundled
    entry would have a hit unpickle Inductor's FX graph cache files, which
    nothing signs) and while the store lives apart from Inductor's cache dir
    (it is then meant to be loaded from without that dir)."""
    from . import config, signing

    if config.self_contained:
        return True
    if not config.bundle_when_signing:
        return False
    if config.store_dir:
        return True
    try:
        return signing.enabled()
    except signing.SigningKeyError:
        return True  # a key is configured but unreadable: the save reports it


def is_bundled_result(entry: Any) -> bool:
    from torch._functorch._aot_autograd import aot_autograd_result as results

    return isinstance(entry, results.BundledAOTAutogradResult)


# ---------------------------------------------------------------------------
# Small version-dependent hooks
# ---------------------------------------------------------------------------


@functools.cache
def _hint_fn() -> Any:
    from torch.fx.experimental import symbolic_shapes

    fn = getattr(symbolic_shapes, "guarding_hint_or_throw", None)
    if fn is None:
        fn = getattr(symbolic_shapes, "size_hint", None)
    return fn


def pre_grad_passes_run_before_lookup() -> bool:
    """Whether custom pre-grad passes run before the cache lookup, on the
    graph that is keyed (2.13's ``pre_grad_pass_timing`` resolving to
    "early").  2.11 has no such setting: its passes are keyed by uuid."""
    from torch._inductor import codecache

    resolve = getattr(codecache, "resolve_pre_grad_pass_timing", None)
    if resolve is None:
        return False
    try:
        return resolve() == "early"
    except RuntimeError:
        # "late" with a pass that has no uuid: aot_module_simplified raises
        # before any lookup; the key keeps the pass (and bypasses).
        return False


def guard_hint(s: Any) -> Any:
    fn = _hint_fn()
    if fn is not None:
        return fn(s)
    return s.node.require_hint()


def _artifact_type() -> str:
    from torch._functorch._aot_autograd.autograd_cache import AOTAutogradCacheArtifact

    return AOTAutogradCacheArtifact.type()


def record_artifact(key: str, content: bytes) -> None:
    """Record an entry for Mega-Cache (``torch.compiler.save_cache_artifacts``)."""
    from torch.compiler import _cache

    try:
        recorder = getattr(_cache, "CacheArtifactRecorder", None)
        if recorder is not None:
            recorder(_artifact_type(), key).record(content)
        else:
            _cache.CacheArtifactManager.record_artifact(_artifact_type(), key, content)
    except Exception as e:  # noqa: BLE001 - recording is best effort
        log.debug("torch_aotcache: cannot record cache artifact: %s", e)


def record_artifact_if_present(key: str, content: bytes | None) -> None:
    if content is not None:
        record_artifact(key, content)


def record_precompile_artifact(backend_id: Any, entry: Any) -> None:
    try:
        from torch._dynamo.precompile_context import PrecompileContext
        from torch._functorch._aot_autograd.aot_autograd_result import (
            BundledAOTAutogradCacheArtifact,
        )

        PrecompileContext.record_artifact(BundledAOTAutogradCacheArtifact(backend_id, entry))
    except Exception as e:  # noqa: BLE001
        log.debug("torch_aotcache: cannot record precompile artifact: %s", e)


def strict_precompile() -> bool:
    return bool(getattr(torch._dynamo.config, "strict_precompile", False))


def increment_compile_event(name: str) -> None:
    try:
        from torch._dynamo.utils import CompileEventLogger

        CompileEventLogger.try_(CompileEventLogger.increment_toplevel, name)
    except Exception:  # noqa: BLE001 - metrics are best effort
        pass


def log_cache_event(
    state: str, info: dict[str, Any], event_time: int, local: bool, remote: bool
) -> None:
    try:
        from torch._dynamo.utils import chromium_event_log_active, CompileEventLogger

        if not chromium_event_log_active():
            return
        CompileEventLogger.instant(f"autograd_cache_{state}", metadata=info, time_ns=event_time)
        CompileEventLogger.try_add_pt2_compile(
            "backend_compile",
            cache_state=state,
            cache_event_time=event_time,
            key=info.get("key"),
            components=info.get("components"),
            cache_bypass_reason=info.get("cache_bypass_reason"),
            remote_cache_enabled=remote,
            local_cache_enabled=local,
        )
    except Exception:  # noqa: BLE001
        pass
