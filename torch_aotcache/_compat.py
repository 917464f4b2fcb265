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
config overrides                  a plain attribute              a ``ContextVar`` per entry
custom pre-grad passes            keyed by uuid (no timing       ``pre_grad_pass_timing``: "early"
                                  setting)                       (before the lookup, the graph
                                                                 stands for them) or "late" (keyed
                                                                 by uuid)
================================  =============================  ==================================

Nothing outside this module tests the torch version, and this module
imports nothing of torch_aotcache: it is the leaf every other module may use.
Code that only one release needs sits between ``# [release X.Y]`` and
``# [end release]``; ``tools/upstream_patch.py`` drops the blocks of the other
releases (and narrows ``SUPPORTED_RELEASES``) when it carries the cache into
a torch tree.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch


log = logging.getLogger(__name__)

SUPPORTED_RELEASES = ("2.11", "2.13")


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


# Releases whose compile_fx, aot_module_simplified and generated-module
# imports the front door was written against (Note [Front door] in
# front_door.py, Note [Light runtime imports] in light_runtime.py); on the
# others every compile takes the normal path.
FRONT_DOOR_RELEASES = frozenset({"2.13"})


def front_door_release() -> bool:
    return torch_release() in FRONT_DOOR_RELEASES


def torch_release() -> str | None:
    """The supported release this torch belongs to, or None."""
    rel = release_of(torch.__version__)
    return rel if rel in SUPPORTED_RELEASES else None


def unwrap_gm(mod: Any) -> Any:
    """The graph module inside Dynamo's ``GmWrapper`` (a release that boxes
    its inputs hands the cache the wrapper), or ``mod`` itself."""
    gm_wrapper = getattr(torch._dynamo.utils, "GmWrapper", None)
    if gm_wrapper is not None and isinstance(mod, gm_wrapper):
        return mod.gm
    return mod


def unbox(value: Any) -> Any:
    """Value of a BoxedBool / BoxedDeviceIndex (or the value itself)."""
    return getattr(value, "value", value)


# ---------------------------------------------------------------------------
# Upstream's parameters, per release, of the functions whose signatures
# differ (patching.PATCH_SITES checks each original against them)
# ---------------------------------------------------------------------------

UPSTREAM_PARAMS: dict[str, dict[str, tuple[str, ...]]] = {
    "autograd_cache_key": {},
    "try_load": {},
    "load_async": {},
    "inductor_call": {},
}
# [release 2.11]
UPSTREAM_PARAMS["autograd_cache_key"]["2.11"] = ("gm", "example_inputs", "config", "fx_config")
UPSTREAM_PARAMS["try_load"]["2.11"] = (
    "mod", "args", "aot_config", "cudagraphs", "boxed_forward_device_index", "local", "remote"
)
UPSTREAM_PARAMS["load_async"]["2.11"] = ("main_code", "device_type", "submit_fn", "extra_flags", "optimized_code")
UPSTREAM_PARAMS["inductor_call"]["2.11"] = ("self", "model_", "inputs_")
# [end release]
# [release 2.13]
UPSTREAM_PARAMS["autograd_cache_key"]["2.13"] = ("mod", "example_inputs", "config", "compiler_config_extra")
UPSTREAM_PARAMS["try_load"]["2.13"] = (
    "mod", "args", "aot_config", "compiler_config_extra", "local", "remote", "compile_region_name"
)
UPSTREAM_PARAMS["load_async"]["2.13"] = (
    "main_code", "device_type", "submit_fn", "extra_flags", "optimized_code", "needs_vec_isa",
    "kernel_needs_vec_isa",
)
UPSTREAM_PARAMS["inductor_call"]["2.13"] = ("self", "model_", "inputs_", "config_patches")
# [end release]


# ---------------------------------------------------------------------------
# fx_config: what Inductor's post-compile of a loaded graph needs
# ---------------------------------------------------------------------------


def fx_config_from(key_arg: Any) -> dict[str, Any]:
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
# try_load: one adapter per release around the release-independent body
# ---------------------------------------------------------------------------

# What the body returns: (compiled fn or None, key of a miss or None, the
# backed symints of the inputs for the miss's cache_info).
TryLoadImpl = Callable[..., tuple[Any, "str | None", list[Any]]]


def _cache_info(key: str, symints: list[Any]) -> Any:
    from torch._functorch._aot_autograd.schemas import AOTAutogradCacheInfo

    return AOTAutogradCacheInfo(key, time.time_ns(), forward_symints=symints)


def try_load_adapters(impl: TryLoadImpl) -> dict[str, Callable[..., Any]]:
    """``AOTAutogradCache.try_load`` for each release, around ``impl(mod,
    args, aot_config, fx_config, local, remote, key_arg)``."""
    adapters: dict[str, Callable[..., Any]] = {}

    # [release 2.13]
    def try_load_v2_13(
        mod: Any,
        args: list[Any],
        aot_config: Any,
        compiler_config_extra: Any,
        local: bool,
        remote: bool,
        compile_region_name: str | None = None,
    ) -> tuple[Any, Any]:
        fx_config = fx_config_from(compiler_config_extra)
        fx_config["compile_region_name"] = compile_region_name
        compiled_fn, miss_key, symints = impl(
            mod, args, aot_config, fx_config, local, remote, compiler_config_extra
        )
        if miss_key is not None:
            # AOTConfig is frozen in 2.13: a miss hands back a new one.
            aot_config = dataclasses.replace(aot_config, cache_info=_cache_info(miss_key, symints))
        return compiled_fn, aot_config

    adapters["2.13"] = try_load_v2_13
    # [end release]

    # [release 2.11]
    def try_load_v2_11(
        mod: Any,
        args: list[Any],
        aot_config: Any,
        cudagraphs: Any,
        boxed_forward_device_index: Any,
        local: bool,
        remote: bool,
    ) -> Any:
        fx_config = {
            "cudagraphs": cudagraphs,
            "boxed_forward_device_index": boxed_forward_device_index,
        }
        compiled_fn, miss_key, symints = impl(mod, args, aot_config, fx_config, local, remote, fx_config)
        if miss_key is not None:
            aot_config.cache_info = _cache_info(miss_key, symints)
        return compiled_fn

    adapters["2.11"] = try_load_v2_11
    # [end release]

    return adapters


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
MAKE_ENTRY_PARAMS: dict[str, tuple[str, ...]] = {}
# [release 2.11]
MAKE_ENTRY_PARAMS["2.11"] = _MAKE_ENTRY_PARAMS_2_11
# [end release]
# [release 2.13]
MAKE_ENTRY_PARAMS["2.13"] = _MAKE_ENTRY_PARAMS_2_11 + ("min_cut_info_str",)

# graph_compile._cache_autograd_info (Note [Releasing a flight the compile
# does not save] in single_flight.py); 2.13 added min_cut_info_str, as to
# make_entry.
CACHE_AUTOGRAD_INFO_PARAMS: dict[str, tuple[str, ...]] = {}
_CACHE_AUTOGRAD_INFO_PARAMS_2_11 = (
    "aot_config",
    "flat_args",
    "compiled_fw_func",
    "compiled_bw_func",
    "fw_module_str",
    "bw_module_str",
    "joint_graph_str",
    "wrappers",
    "maybe_subclass_meta",
    "fw_metadata",
    "num_fw_outs_saved_for_bw",
    "_indices_of_inps_to_detach",
    "num_symints_saved_for_bw",
    "bw_module",
)
# [release 2.11]
CACHE_AUTOGRAD_INFO_PARAMS["2.11"] = _CACHE_AUTOGRAD_INFO_PARAMS_2_11
# [release 2.13]
CACHE_AUTOGRAD_INFO_PARAMS["2.13"] = _CACHE_AUTOGRAD_INFO_PARAMS_2_11 + ("min_cut_info_str",)
# [end release]


def _bind(params: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if len(args) > len(params):
        raise TypeError(f"make_entry takes at most {len(params)} positional arguments")
    bound = dict(zip(params, args, strict=False))
    for k, v in kwargs.items():
        if k in bound:
            raise TypeError(f"make_entry got multiple values for {k}")
        bound[k] = v
    for name in params:
        bound.setdefault(name, None)
    return bound


def bind_make_entry(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``make_entry``'s arguments by name, as this release passes them (the
    names missing from a release are None)."""
    release = torch_release() or SUPPORTED_RELEASES[-1]
    return _bind(MAKE_ENTRY_PARAMS[release], args, kwargs)


def construct(cls: type, values: dict[str, Any]) -> Any:
    """``cls`` built from the values its release's fields take (2.11's result
    classes lack some of 2.13's fields)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


# ---------------------------------------------------------------------------
# Small version-dependent hooks
# ---------------------------------------------------------------------------


# What torch's config entries hold while a value is not overridden.
_CONFIG_UNSET = getattr(torch.utils._config_module, "_UNSET_SENTINEL", object())


def config_entry_value(entry: Any) -> Any:
    """What a config entry's override holds now: 2.13 keeps overrides per
    context in a ``ContextVar`` (whose unset value is itself a sentinel),
    2.11 in a plain attribute and returns defaults by reference, so an entry
    that is not overridden gives its default object, which stands for the
    value (a list or dict mutated in place is compared by value by the
    caller)."""
    override = entry.user_override
    if isinstance(override, ContextVar):
        return override.get()
    if override is _CONFIG_UNSET:
        return entry.default
    return override


def config_is_set(module: Any, name: str) -> bool:
    """Whether the user set config ``name`` of ``module`` (by assignment,
    ``config.patch`` or the entry's forcing environment variable), as opposed
    to leaving it at its default."""
    entry = module._config.get(name)
    if entry is None:
        return False
    override = entry.user_override
    if isinstance(override, ContextVar):
        override = override.get()
    if override is not _CONFIG_UNSET:
        return True
    return getattr(entry, "env_value_force", _CONFIG_UNSET) is not _CONFIG_UNSET


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
