"""
Everything that differs between the torch releases torch_aotcache supports.

Supported: the releases in ``SUPPORTED_RELEASES``.  The differences that
reach us between 2.11 and 2.13 (later releases add their own blocks below):

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
Code that only some releases need sits between ``# [release X.Y ...]``
(one release or several) and ``# [end release]``; ``tools/upstream_patch.py`` drops the blocks of the other
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

# The one owner of the supported releases: setup.py's torch range, the
# README's table, .ci/run's matrix and the GPU workflow are checked against
# it (test/test_releases.py).
SUPPORTED_RELEASES = ("2.11", "2.13", "2.14", "2.15")
# Kept for the GPU machines, whose image has it; not installable on the CPU
# machines CI runs on, so not in .ci/run's matrix.
GPU_ONLY_RELEASES = ("2.11",)


def ci_releases() -> tuple[str, ...]:
    """The releases .ci/run tests, newest first."""
    return tuple(r for r in reversed(SUPPORTED_RELEASES) if r not in GPU_ONLY_RELEASES)


def torch_requirement(releases: tuple[str, ...] = SUPPORTED_RELEASES) -> str:
    """setup.py's requirement: the supported releases, the minors between
    them excluded, up to the next minor after the newest."""
    parsed = [tuple(int(p) for p in r.split(".")) for r in releases]
    lo, hi = parsed[0], parsed[-1]
    gaps = [
        f"!={major}.{minor}.*"
        for major, minor in ((lo[0], m) for m in range(lo[1], hi[1] + 1))
        if (major, minor) not in parsed
    ] if lo[0] == hi[0] else []
    return ",".join([f"torch>={lo[0]}.{lo[1]}", *gaps, f"<{hi[0]}.{hi[1] + 1}"])


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
# inductor/front_door.py, Note [Light runtime imports] in inductor/light_runtime.py); on the
# others every compile takes the normal path.
FRONT_DOOR_RELEASES = frozenset({"2.13", "2.14", "2.15"})
# Releases whose Dynamo packages the frame cache builds on and was checked
# against (Note [Caching Dynamo's frames] in dynamo/__init__.py).
FRAME_RELEASES = frozenset({"2.15"})


# Per release, the digest of each upstream function a part of ours mirrors,
# as read when the part was written for it (Note [Drift fails safe] in
# installer/drift.py; ``tools/port_check.py`` prints them for an installed torch).
MIRROR_DIGESTS: dict[str, dict[str, str]] = {}
# [release 2.13]
MIRROR_DIGESTS["2.13"] = {
    "torch._dynamo.backends.common:AotAutograd.__call__": "b4a39705e30550d3",
    "torch._functorch.aot_autograd:aot_module_simplified": "c02ef800a3a5815b",
    "torch._functorch.aot_autograd:prepare_aot_module_simplified": "31fe365fbe77b763",
    "torch._inductor.codecache:FxGraphCache.cache_hit_post_compile": "84d43aed318630b8",
    "torch._inductor.codegen.wrapper:PythonWrapperCodegen.write_header": "8a3abb8dafc56ff8",
    "torch._inductor.compile_fx:_compile_fx_main": "b4fa77aa9793ed86",
    "torch._inductor.compile_fx:compile_fx": "29b10cb1db9ebebb",
    "torch._inductor.compile_fx:get_patched_config_dict": "0249b2161da59775",
    "torch._inductor.select_algorithm:ExternKernelChoice.__init__": "14cc7545c605ecca",
    "torch:_TorchCompileInductorWrapper.__call__": "f27af67da65d091d",
    "torch:_TorchCompileInductorWrapper.get_compiler_config": "61e4b5746273d0a8",
}
# [end release]
# [release 2.14]
MIRROR_DIGESTS["2.14"] = {
    "torch._dynamo.backends.common:AotAutograd.__call__": "54e041cd1c76d70b",
    "torch._functorch.aot_autograd:aot_module_simplified": "9d8acb8d7e072d6d",
    "torch._functorch.aot_autograd:prepare_aot_module_simplified": "dfa444cff270ef24",
    "torch._inductor.codecache:FxGraphCache.cache_hit_post_compile": "84d43aed318630b8",
    "torch._inductor.codegen.wrapper:PythonWrapperCodegen.write_header": "bb52931cb3ebb376",
    "torch._inductor.compile_fx:_compile_fx_main": "5ae7e26d29d2ee36",
    "torch._inductor.compile_fx:compile_fx": "936424ffc30d171a",
    "torch._inductor.compile_fx:get_patched_config_dict": "0249b2161da59775",
    "torch._inductor.select_algorithm:ExternKernelChoice.__init__": "182d5e3545def1e8",
    "torch:_TorchCompileInductorWrapper.__call__": "364bb370269c1c44",
    "torch:_TorchCompileInductorWrapper.get_compiler_config": "7e4f13662a08293b",
}
# [end release]
# [release 2.15]
MIRROR_DIGESTS["2.15"] = {
    "torch._dynamo.backends.common:AotAutograd.__call__": "54e041cd1c76d70b",
    "torch._dynamo.eval_frame:_TorchDynamoContext.__call__": "b0f2789d57a7ee7a",
    "torch._dynamo.package:CompilePackage.initialize": "9388b823fa08d247",
    "torch._dynamo.package:CompilePackage.install": "46aa43df9a1e157f",
    "torch._dynamo.package:CompilePackage.uninstall": "a6ee2f1c0d56a180",
    "torch._functorch.aot_autograd:aot_module_simplified": "9d8acb8d7e072d6d",
    "torch._functorch.aot_autograd:prepare_aot_module_simplified": "dfa444cff270ef24",
    "torch._inductor.codecache:FxGraphCache.cache_hit_post_compile": "84d43aed318630b8",
    "torch._inductor.codegen.wrapper:PythonWrapperCodegen.write_header": "bb52931cb3ebb376",
    "torch._inductor.compile_fx:_compile_fx_main": "f530c5e4708b62b9",
    "torch._inductor.compile_fx:compile_fx": "2a3f037e86746234",
    "torch._inductor.compile_fx:get_patched_config_dict": "f6da153903107a1f",
    "torch._inductor.select_algorithm:ExternKernelChoice.__init__": "182d5e3545def1e8",
    "torch:_TorchCompileInductorWrapper.__call__": "364bb370269c1c44",
    "torch:_TorchCompileInductorWrapper.get_compiler_config": "7e4f13662a08293b",
}
# [end release]


def front_door_release() -> bool:
    return torch_release() in FRONT_DOOR_RELEASES


def torch_release() -> str | None:
    """The supported release this torch belongs to, or None."""
    rel = release_of(torch.__version__)
    return rel if rel in SUPPORTED_RELEASES else None


def unwrap_gm(mod: Any) -> Any:
    """The graph module inside Dynamo's ``GmWrapper`` (a release that boxes
    its inputs hands the cache the wrapper), or ``mod`` itself."""
    # [release 2.11]
    if torch_release() == "2.11":
        gm_wrapper = getattr(torch._dynamo.utils, "GmWrapper", None)
        return mod.gm if gm_wrapper is not None and isinstance(mod, gm_wrapper) else mod
    # [end release]
    return mod.gm if isinstance(mod, torch._dynamo.utils.GmWrapper) else mod


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
# [release 2.14 2.15]
for _release in ("2.14", "2.15"):
    UPSTREAM_PARAMS["autograd_cache_key"][_release] = (
        "mod", "example_inputs", "config", "compiler_config_extra", "act_input_paths"
    )
    UPSTREAM_PARAMS["try_load"][_release] = (
        "mod", "args", "aot_config", "compiler_config_extra", "local", "remote", "act_input_paths",
        "compile_region_name",
    )
    UPSTREAM_PARAMS["load_async"][_release] = (
        "main_code", "device_type", "submit_fn", "extra_flags", "optimized_code", "needs_vec_isa",
        "kernel_needs_vec_isa",
    )
    UPSTREAM_PARAMS["inductor_call"][_release] = ("self", "model_", "inputs_", "config_patches")
# [end release]


# ---------------------------------------------------------------------------
# fx_config: what Inductor's post-compile of a loaded graph needs
# ---------------------------------------------------------------------------


# The field of Inductor's ``CompilerConfigExtra`` that boxes the forward's
# device index (renamed in 2.15).
_FORWARD_DEVICE_FIELD: dict[str, str] = {}
# [release 2.13 2.14]
_FORWARD_DEVICE_FIELD["2.13"] = _FORWARD_DEVICE_FIELD["2.14"] = "forward_device"
# [end release]
# [release 2.15]
_FORWARD_DEVICE_FIELD["2.15"] = "forward_device_index"
# [end release]


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
        "boxed_forward_device_index": getattr(key_arg, _FORWARD_DEVICE_FIELD.get(torch_release() or "", ""), None),
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
    args, aot_config, fx_config, local, remote, key_args)``, where
    ``key_args`` are the arguments this release's ``try_load`` hands the key
    function after ``(mod, args, aot_config)``."""
    adapters: dict[str, Callable[..., Any]] = {}

    # [release 2.14 2.15]
    def try_load_v2_15(
        mod: Any,
        args: list[Any],
        aot_config: Any,
        compiler_config_extra: Any,
        local: bool,
        remote: bool,
        act_input_paths: Any = (),
        compile_region_name: str | None = None,
    ) -> tuple[Any, Any]:
        fx_config = fx_config_from(compiler_config_extra)
        fx_config["compile_region_name"] = compile_region_name
        compiled_fn, miss_key, symints = impl(
            mod, args, aot_config, fx_config, local, remote, (compiler_config_extra, act_input_paths)
        )
        if miss_key is not None:
            aot_config = dataclasses.replace(aot_config, cache_info=_cache_info(miss_key, symints))
        return compiled_fn, aot_config

    adapters["2.14"] = adapters["2.15"] = try_load_v2_15
    # [end release]

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
            mod, args, aot_config, fx_config, local, remote, (compiler_config_extra,)
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
        compiled_fn, miss_key, symints = impl(mod, args, aot_config, fx_config, local, remote, (fx_config,))
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
# [end release]
# [release 2.14 2.15]
MAKE_ENTRY_PARAMS["2.14"] = MAKE_ENTRY_PARAMS["2.15"] = _MAKE_ENTRY_PARAMS_2_11 + ("min_cut_info_str",)
# [end release]

# graph_compile._cache_autograd_info (Note [Releasing a flight the compile
# does not save] in tiers/single_flight.py); 2.13 added min_cut_info_str, as to
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
# [end release]
# [release 2.13 2.14 2.15]
for _release in ("2.13", "2.14", "2.15"):
    CACHE_AUTOGRAD_INFO_PARAMS[_release] = _CACHE_AUTOGRAD_INFO_PARAMS_2_11 + ("min_cut_info_str",)
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

    # [release 2.11]
    if torch_release() == "2.11":
        return getattr(symbolic_shapes, "guarding_hint_or_throw", None) or getattr(
            symbolic_shapes, "size_hint", None
        )
    # [end release]
    return symbolic_shapes.guarding_hint_or_throw


def pre_grad_passes_run_before_lookup() -> bool:
    """Whether custom pre-grad passes run before the cache lookup, on the
    graph that is keyed (2.13's ``pre_grad_pass_timing`` resolving to
    "early").  2.11 has no such setting: its passes are keyed by uuid."""
    from torch._inductor import codecache

    # [release 2.11]
    if torch_release() == "2.11":
        return False
    # [end release]
    try:
        return codecache.resolve_pre_grad_pass_timing() == "early"
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
        # [release 2.11]
        if torch_release() == "2.11":
            _cache.CacheArtifactManager.record_artifact(_artifact_type(), key, content)
            return
        # [end release]
        _cache.CacheArtifactRecorder(_artifact_type(), key).record(content)
    except Exception as e:  # noqa: BLE001 - recording is best effort
        log.debug("torch_aotcache: cannot record cache artifact: %s", e)


def record_precompile_artifact(backend_id: Any, entry: Any) -> bool:
    """Hand a compiled graph to Dynamo's precompile context; whether it was recorded."""
    try:
        from torch._dynamo.precompile_context import PrecompileContext
        from torch._functorch._aot_autograd.aot_autograd_result import (
            BundledAOTAutogradCacheArtifact,
        )

        PrecompileContext.record_artifact(BundledAOTAutogradCacheArtifact(backend_id, entry))
    except Exception as e:  # noqa: BLE001
        log.debug("torch_aotcache: cannot record precompile artifact: %s", e)
        return False
    return True


def strict_precompile() -> bool:
    # [release 2.11]
    if torch_release() == "2.11":
        return bool(getattr(torch._dynamo.config, "strict_precompile", False))
    # [end release]
    return bool(torch._dynamo.config.strict_precompile)


# ---------------------------------------------------------------------------
# Multi-rank jobs: see Note [Ranks decide together] in tiers/ranks.py
# ---------------------------------------------------------------------------


def process_group_size() -> int:
    """Ranks in this process's default process group (1 outside a job)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return 1


_SYNC_DECISION: dict[str, Callable[[bool], bool]] = {}
# [release 2.15]


def _sync_decision_v2_15(local_hit: bool) -> bool:
    # Upstream's all-reduce (when _sync_cache_decision_cross_ranks is on and
    # the job has 2+ ranks): it counts autograd_cache_cross_rank_miss and logs
    # a dropped hit itself.
    from torch._functorch._aot_autograd.autograd_cache import sync_cache_decision_cross_ranks

    return bool(sync_cache_decision_cross_ranks(local_hit))


_SYNC_DECISION["2.15"] = _sync_decision_v2_15
# [end release]


def sync_cache_decision(local_hit: bool) -> bool:
    """Whether every rank hit, where this release makes ranks agree (2.15);
    elsewhere this rank's own decision."""
    sync = _SYNC_DECISION.get(torch_release() or "")
    return local_hit if sync is None else sync(local_hit)


def partitioner_syncs_across_ranks() -> bool:
    """Whether the partitioner all-gathers its decision across ranks
    (``torch._functorch.config._sync_decision_cross_ranks``, a knob of every
    supported release that has it) for graphs that hold collectives."""
    from torch._functorch import config as functorch_config

    options: Any = functorch_config
    name = "_sync_decision_cross_ranks"
    return name in options._config and bool(getattr(options, name))


def ranks_meet_in_lookup() -> bool:
    """Whether this release's lookup is a point where ranks meet: 2.15's
    ``sync_cache_decision_cross_ranks`` runs in ``try_load`` on every rank
    when ``_sync_cache_decision_cross_ranks`` (the cache's hit or miss) or
    ``_sync_decision_cross_ranks`` (the partitioner's, whose process group it
    builds there on every rank) is on.  In 2.13 and 2.14
    ``_sync_decision_cross_ranks`` acts in the partitioner only, on the graphs
    that issue collectives: the lookup has no such point."""
    if torch_release() not in _SYNC_DECISION:
        return False
    from torch._functorch import config as functorch_config

    options: Any = functorch_config
    names = ("_sync_cache_decision_cross_ranks", "_sync_decision_cross_ranks")
    return any(name in options._config and getattr(options, name) for name in names)


def read_config(module: Any, name: str) -> Any:
    """``getattr(module, name)`` for a config module, without the deprecation
    warning torch 2.15 gives on reading a deprecated option (the key reads
    every option; the user, who did not, still gets the warning when they
    use it)."""
    entry = module._config.get(name)
    if entry is None or not getattr(entry, "deprecated", False) or entry._deprecation_warned:
        return getattr(module, name)
    entry._deprecation_warned = True
    try:
        return getattr(module, name)
    finally:
        entry._deprecation_warned = False


# ---------------------------------------------------------------------------
# The front door's view of compile_fx, per release (Note [Front door])
# ---------------------------------------------------------------------------


def compiler_config_extra_fields() -> dict[str, Any]:
    """What ``compile_fx``'s ``CompilerConfigExtra`` holds for a compile the
    front door takes (no CUDA graphs), by this release's field names."""
    from torch._inductor.cudagraph_utils import BoxedDeviceIndex
    from torch._inductor.utils import BoxedBool

    fields: dict[str, Any] = {"cudagraphs": BoxedBool(False), "graph_id": None, "cudagraphs_bwd_override": None}
    release = torch_release()
    # [release 2.13 2.14]
    if release in ("2.13", "2.14"):
        fields.update(forward_device=BoxedDeviceIndex(None), forward_is_partitioned=BoxedBool(False))
    # [end release]
    # [release 2.15]
    if release == "2.15":
        fields.update(
            forward_device_index=BoxedDeviceIndex(None), forward_is_cudagraph_partitioned=BoxedBool(False)
        )
    # [end release]
    return fields


def front_door_key_args(extra: Any, prepared: tuple[Any, ...]) -> tuple[Any, ...]:
    """The key function's arguments after ``(mod, args, aot_config)``, as
    ``aot_module_simplified`` passes them, from what
    ``prepare_aot_module_simplified`` returned."""
    # [release 2.14 2.15]
    if torch_release() in ("2.14", "2.15"):
        return (extra, prepared[11])  # act_input_paths
    # [end release]
    return (extra,)


def provenance_tracking_level() -> int:
    """Inductor's provenance tracking level as ``_compile_fx_main`` reads it."""
    from torch._inductor import config as inductor_config

    # [release 2.14 2.15]
    if torch_release() in ("2.14", "2.15"):
        return int(inductor_config.effective_provenance_tracking_level())
    # [end release]
    return int(inductor_config.trace.provenance_tracking_level)


def compile_options_are_core(patches: dict[str, Any]) -> bool:
    """Whether every compile option patches Inductor's own config: 2.15 routes
    options that are not (``"<device>.<key>"``) to a device's config module,
    which the front door and ``compiler_config`` leave to upstream."""
    # [release 2.15]
    if torch_release() == "2.15":
        from torch._inductor import config as inductor_config

        options: Any = inductor_config
        return all(name.replace("-", "_") in options._config for name in patches)
    # [end release]
    return True
