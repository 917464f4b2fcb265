"""
torch_aotcache's AOTAutograd cache: the key, the cacheability checks, lookup,
save and clear.  Takes the role of upstream's
``torch/_functorch/_aot_autograd/autograd_cache.py``; ``installer/patching.py`` installs
these functions in its place.

Note [What goes into a key]
~~~~~~~~~~~~~~~~~~~~~~~~~~~
A key is a digest over named *components*, each a digest of its own.  Keeping
the components apart costs nothing and lets a tool say which one changed when a
compile missed; every entry stores them in its header (schemas.py).  The
components, in order:

``format``      our entry format version, so a format change never hits old entries
``graph``       the Dynamo graph, canonically (Note [Canonical graph encoding])
``ops``         what the program registered for the operators the graph calls,
                and for torch's own, by content (Note [Registered operators in
                the key] in key/registered_ops.py)
``inputs``      each example input's dtype, shape, stride, device, requires_grad,
                subclass metadata, and which inputs alias one storage
``aot_config``  the AOTConfig fields that change the compiled result
``fx_config``   cudagraphs and the forward device
``runtime``     grad mode, autocast per device, deterministic algorithms,
                default dtype, matmul precision and TF32 flags
``functorch``   every functorch config value (custom estimators by uuid)
``inductor``    every Inductor config value except logging and cache locations
                (custom passes by uuid; a pass without one is a bypass)
``system``      torch, CUDA/HIP, Python and Triton versions, machine
``hardware``    properties of every GPU an input lives on; CPU features when
                an input lives on the CPU
``torch_src``   content fingerprint of torch's sources (Note [Torch install fingerprint])
``triton_src``  sources of the user Triton kernels the graph calls
``tag``         ``torch.compiler.config.cache_key_tag``

When in doubt a factor goes in: a miss costs seconds, a false hit a wrong result.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._dynamo.utils import counters
from torch._functorch import config as functorch_config
from torch._functorch._aot_autograd import autograd_cache as upstream
from torch._inductor.remote_cache import cache_stats

from . import _compat, _once, config, schemas
from .counters import count
from .entry import framing, signing
from .inductor import artifacts, digests as inductor_digests
from .key import fingerprint, registered_ops
from .key.graph_hashing import digest, encode_inputs, encode_value, GraphEncoder, Unkeyable
from . import runtime_wrappers
from .store import layout, stats
from .tiers import lookup, ranks


log = logging.getLogger(__name__)

# Upstream's exception types, by identity: code and tests that catch them keep working.
BypassAOTAutogradCache = upstream.BypassAOTAutogradCache
FXGraphCacheMiss = upstream.FXGraphCacheMiss

KEY_PREFIX = layout.GRAPH_KEY_PREFIX


# ---------------------------------------------------------------------------
# Cacheability checks
# ---------------------------------------------------------------------------

_SAFE_TORCH_MODULES = ("torch.functional", "torch.nn.functional")
_SAFE_TORCH_FUNCTIONS = frozenset(
    {
        "torch.Size",
        "torch.Tensor",
        "torch.sym_int",
        "torch._sym_sqrt",
        "torch.sym_float",
        "torch.sym_sum",
        "torch.sym_max",
        "torch.sym_min",
        "torch.sym_not",
        "torch.autograd.grad",
        "torch.distributed.tensor._api.from_local",
        # An sdpa_kernel block: its backend list is in the graph by value, and
        # the enabled backends around it are keyed (Note [Canonical graph
        # encoding]).
        "torch.nn.attention._backend_from_string",
        "torch.nn.attention._sdpa_kernel",
    }
)
_SAFE_OTHER_FUNCTIONS = frozenset({"einops.einops.rearrange", "einops.einops.repeat"})


def _in_graph_torch_functions() -> frozenset[str]:
    """Names of the pure-Python torch functions Dynamo puts in graphs (fixed per release)."""
    global _IN_GRAPH
    if _IN_GRAPH is None:
        from torch._dynamo.trace_rules import torch_non_c_binding_in_graph_functions

        _IN_GRAPH = frozenset(torch_non_c_binding_in_graph_functions)
    return _IN_GRAPH


_IN_GRAPH: frozenset[str] | None = None


def _wrap_with_autocast() -> Any:
    from torch._higher_order_ops.wrap import wrap_with_autocast

    return wrap_with_autocast


# Note [Custom autograd.Function]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Dynamo traces a custom ``torch.autograd.Function`` into the graph as one
# ``autograd_function_apply(fwd_body, bwd_body, *args, non_differentiable_idx,
# saved_for_backward_idx[, dirty_idx])`` node.  ``fwd_body`` and ``bwd_body``
# are sub-graphs that Dynamo traced from the user's ``forward`` and
# ``backward`` (``setup_context`` included) with everything they read: a
# closure cell, a global, a default, a non-tensor ctx attribute is a constant
# in them, and a tensor is an input.  ``mark_non_differentiable`` and
# ``mark_dirty`` become the index lists; which tensors are saved is the
# forward body's second output and ``saved_for_backward_idx``.  The
# operator's implementation is torch's and reads nothing else: it runs the two
# bodies under a template Function of its own, never the user's class.  So
# the graph encoding (sub-graphs recursively, every node checked, constants by
# value) fixes what is compiled, and what Dynamo could not put in a body
# (a graph break, an opaque or ``allow_in_graph`` callable, a
# ``torch._dynamo.disable``d call) either keeps the Function out of the graph
# altogether, where it runs eagerly and no key sees it, or shows up as a
# call_function target that check_node_safe refuses.  Dynamo's guards, not the
# key, decide when the user's Python changed enough to retrace; after a
# retrace the new bodies give a new key.
#
# Upstream bypasses these graphs unless
# ``torch._functorch.config.autograd_cache_allow_custom_autograd_functions``
# is True.  We cache them by default; the knob set explicitly still decides
# (False: bypass, True: cache).  torch's ``config.patch`` restores a value by
# assigning it, so once a patch of the knob is undone it reads as set to False
# (a bypass, never a false hit) until the process ends.  A Function marked
# ``allow_in_graph`` reaches the graph as Dynamo's ``trampoline_autograd_apply``,
# which calls the user's Python: a bypass, its reason after upstream's words
# (Note [Bypass messages are a contract]).
# test/test_newly_cached.py changes a backward's constant, code, closure,
# global, default, ctx attribute and saved tensor in a second process and
# checks results and gradients against eager.


def custom_autograd_functions_allowed() -> bool:
    """Whether graphs holding a custom autograd.Function may be cached; see
    Note [Custom autograd.Function]."""
    name = "autograd_cache_allow_custom_autograd_functions"
    if _compat.config_is_set(functorch_config, name):
        return bool(getattr(functorch_config, name))
    return True


def _is_autograd_function_apply(target: Any) -> bool:
    from torch._functorch.autograd_function import AutogradFunctionApply

    return isinstance(target, AutogradFunctionApply)


def _function_is_cache_safe(target: Any) -> bool:
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return True
    if isinstance(target, torch._ops.HigherOrderOperator):
        if _is_autograd_function_apply(target):
            return custom_autograd_functions_allowed()
        if target is _wrap_with_autocast():
            return True  # its region's state is keyed: Note [Autocast regions] in key/graph_hashing.py
        cacheable = getattr(target, "cacheable", None)
        return bool(cacheable()) if callable(cacheable) else False
    if target is torch.amp.autocast_mode._enter_autocast or target is torch.amp.autocast_mode._exit_autocast:
        return True  # See Note [Autocast regions] in key/graph_hashing.py
    if type(target).__name__ == "builtin_function_or_method":
        return True
    try:
        from torch._dynamo.utils import is_safe_numpy_wrapper

        if is_safe_numpy_wrapper(target):
            return True
    except ImportError:
        pass
    module = getattr(target, "__module__", None)
    name = getattr(target, "__name__", "")
    if module in _SAFE_TORCH_MODULES and not name.startswith("_"):
        return True
    full = f"{module}.{name}"
    if full == "torch.autograd.function.FunctionCtx":
        return custom_autograd_functions_allowed()
    if (
        full in _SAFE_TORCH_FUNCTIONS
        or full in _SAFE_OTHER_FUNCTIONS
        or full in _in_graph_torch_functions()
        or full in torch._inductor.config.unsafe_marked_cacheable_functions
    ):
        return True
    return False


def _trampoline_function_name(target: Any) -> str:
    """The Function class Dynamo's ``trampoline_autograd_apply`` calls (its closure)."""
    for cell in getattr(target, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, type):
            return value.__qualname__
    return "?"


# Note [Bypass messages are a contract]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Upstream's tests and users match the text of a bypass (strict mode raises it,
# the log shows it): "Unsupported call_function target <target>" above all.
# Where upstream refuses the same thing, our message begins with upstream's
# words and our explanation follows; stats.bypass_category reads ours.
# test/test_upstream_contract.py triggers each such bypass in strict mode.


def _unsupported_target(target: Any, why: str) -> str:
    return f"Unsupported call_function target {target}: {why}"


def check_node_safe(node: torch.fx.Node) -> None:
    """Raise BypassAOTAutogradCache unless the key fully determines what ``node`` does."""
    op = node.op
    if op == "call_function":
        target = node.target
        if node.meta.get("is_wrapped") and node.meta.get("user_cache_hash"):
            return
        if _is_autograd_function_apply(target) and not custom_autograd_functions_allowed():
            raise BypassAOTAutogradCache(_unsupported_target(
                target,
                "custom autograd.Function: "
                "torch._functorch.config.autograd_cache_allow_custom_autograd_functions "
                "is set to False",
            ))
        if getattr(target, "__name__", None) == "trampoline_autograd_apply":
            raise BypassAOTAutogradCache(_unsupported_target(
                target,
                "custom autograd.Function %s is allow_in_graph: the compiled code "
                "calls its Python, which the graph does not show"
                % _trampoline_function_name(target),
            ))
        if not _function_is_cache_safe(target):
            raise BypassAOTAutogradCache(_unsupported_target(
                target,
                "%s (module %s) is not fixed by the torch version"
                % (getattr(target, "__qualname__", target), getattr(target, "__module__", None)),
            ))
    elif op == "call_method":
        receiver = node.args[0] if node.args else None
        if not isinstance(receiver, torch.fx.Node) or "example_value" not in receiver.meta:
            raise BypassAOTAutogradCache(
                f"Unsupported call_method target {receiver}: method {node.target} "
                "on a non-tensor receiver"
            )
        if not isinstance(node.target, str):
            raise BypassAOTAutogradCache(
                f"Unsupported call_method method {node.target}: {node.target!r} is not a method name"
            )
    elif op not in ("placeholder", "get_attr", "call_module", "output"):
        raise BypassAOTAutogradCache(f"Unsupported node op {op}")


def check_cacheable(gm: torch.fx.GraphModule) -> None:
    """Raise BypassAOTAutogradCache with a readable reason if ``gm`` may not be cached."""
    if torch._inductor.config.freezing:
        raise BypassAOTAutogradCache("Cannot cache a graph with freezing enabled")
    from torch._inductor.utils import should_use_remote_fx_graph_cache

    if not (torch._inductor.config.fx_graph_cache or should_use_remote_fx_graph_cache()):
        raise BypassAOTAutogradCache("FX graph cache is not enabled")
    ctx = torch._guards.TracingContext.try_get()
    if ctx is not None and getattr(ctx, "fakify_first_call", False):
        raise BypassAOTAutogradCache("Won't cache a graph with fakify_first_call enabled")
    if not hasattr(gm, "graph"):
        raise BypassAOTAutogradCache(f"{type(gm).__name__} has no FX graph")
    check_cacheable_subgraph(gm)
    for name in ("saved_tensors_hooks_pack_0", "saved_tensors_hooks_unpack_0"):
        sub = getattr(gm, name, None)
        if isinstance(sub, torch.fx.GraphModule):
            check_cacheable_subgraph(sub)
    if ranks.lone_hit_would_hang(gm):
        raise BypassAOTAutogradCache(
            f"Won't cache a graph that holds collectives in a job of {_compat.process_group_size()} ranks "
            f"on torch {_compat.torch_release()} with torch._functorch.config._sync_decision_cross_ranks on: "
            "a rank that hit would leave a compiling peer waiting in the partitioner's collective"
        )


def check_cacheable_subgraph(gm: torch.fx.GraphModule) -> None:
    """Check every node of ``gm`` and of the sub-graphs it refers to."""
    for node in gm.graph.nodes:
        check_node_safe(node)
        if node.op == "get_attr":
            sub = getattr(gm, str(node.target), None)
            if isinstance(sub, torch.fx.GraphModule):
                check_cacheable_subgraph(sub)


def _check_triton_version() -> None:
    version = fingerprint.triton_version()
    if version is not None and _compat.version_tuple(version) < (3, 2):
        raise BypassAOTAutogradCache("AOTAutogradCache requires triton 3.2.0")


# ---------------------------------------------------------------------------
# The key
# ---------------------------------------------------------------------------

# Inductor config entries that do not change what is compiled.
_INDUCTOR_IGNORED_PREFIXES = (
    "trace.",
    "_cache_config",
    "_save_config_ignore",
    "fx_graph_cache",
    "fx_graph_remote_cache",
    "autotune_local_cache",
    "autotune_remote_cache",
    "compile_threads",
    "worker_start_method",
    "cuda.cutlass_dir",
    "cutlass.cutlass_dir",
    "xpu.cutlass_dir",
    "_profile_var",
    "_raise_error_for_testing",
)
# Callables held by configs; keyed by uuid(), a bypass without one.
_INDUCTOR_CALLABLE_KEYS = (
    "joint_custom_pre_pass",
    "joint_custom_post_pass",
    "pre_grad_custom_pass",
    "post_grad_custom_pre_pass",
    "post_grad_custom_post_pass",
    "_pre_fusion_custom_pass",
    "_post_fusion_custom_pass",
    "_fuse_ddp_communication_passes",
    "custom_partitioner_fn",
    "cudagraph_policy",
)


def _inductor_key_settings() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The Inductor options left out of the key, and those keyed by uuid().

    Custom pre-grad passes that run before the lookup (torch 2.13's
    ``pre_grad_pass_timing`` resolving to "early", as it does for a pass
    without a uuid) have already changed the graph being keyed: the graph
    stands for them, as upstream's key has it, and a hit runs them again
    before the lookup.  Otherwise they run after it and are keyed by uuid.
    """
    if _compat.pre_grad_passes_run_before_lookup():
        return (
            _INDUCTOR_IGNORED_PREFIXES + ("pre_grad_custom_pass",),
            tuple(k for k in _INDUCTOR_CALLABLE_KEYS if k != "pre_grad_custom_pass"),
        )
    return _INDUCTOR_IGNORED_PREFIXES, _INDUCTOR_CALLABLE_KEYS


# "aotcache_": torch_aotcache's own knobs, where tools/upstream_patch.py moves
# them into torch._functorch.config (they decide where and how entries are
# kept, never what is compiled).
_FUNCTORCH_IGNORED_PREFIXES = ("_save_config_ignore", "_cache_config", "aotcache_")
_FUNCTORCH_CALLABLE_KEYS = (
    "joint_custom_pass",
    "activation_memory_budget_runtime_estimator",
    "activation_memory_budget_solver",
)


# Upstream's words for a config callable it cannot key (Note [Bypass
# messages are a contract]); ours follow them.
_UPSTREAM_CALLABLE_WORDS = {
    "pre_grad_custom_pass": "Unsupported pre grad custom pass",
    "post_grad_custom_pre_pass": "Unsupported post grad custom pass",
    "post_grad_custom_post_pass": "Unsupported post grad custom pass",
    "joint_custom_pre_pass": "Unsupported joint custom pass",
    "joint_custom_post_pass": "Unsupported joint custom pass",
    "_pre_fusion_custom_pass": "Unsupported _pre_fusion_custom_pass",
    "_post_fusion_custom_pass": "Unsupported _post_fusion_custom_pass",
    "_fuse_ddp_communication_passes": "Unsupported _fuse_ddp_communication_pass",
    "activation_memory_budget_runtime_estimator": (
        "activation_memory_budget_runtime_estimator is a raw callable without uuid() method"
    ),
    "activation_memory_budget_solver": "activation_memory_budget_solver is a raw callable without uuid() method",
}

_UPSTREAM_UUID_CLASSES = {
    "activation_memory_budget_runtime_estimator": "CustomRuntimeEstimator",
    "activation_memory_budget_solver": "CustomKnapsackSolver",
}


def _upstream_callable_words(name: str, value: Any) -> str | None:
    if name in _UPSTREAM_UUID_CLASSES and callable(getattr(value, "uuid", None)):
        return f"{_UPSTREAM_UUID_CLASSES[name]}.uuid() returned None"
    return _UPSTREAM_CALLABLE_WORDS.get(name)


def _config_component(module: Any, ignored: tuple[str, ...], callables: tuple[str, ...]) -> str:
    values = module._config
    lines = []
    for name in sorted(values):
        if name.startswith(ignored) or name in callables:
            continue
        value = _compat.read_config(module, name)
        try:
            lines.append(f"{name}={encode_value(value)}")
        except Unkeyable as e:
            raise BypassAOTAutogradCache(f"config {module.__name__}.{name}: {e}") from None
    for name in callables:
        if name not in values:
            continue
        value = _compat.read_config(module, name)
        if value is None or value == [] or value == "":
            continue
        try:
            lines.append(f"{name}={encode_value(value)}")
        except Unkeyable as e:
            words = _upstream_callable_words(name, value)
            raise BypassAOTAutogradCache(
                (f"{words}: " if words else "")
                + f"config {module.__name__}.{name} holds {value!r}, which cannot be "
                f"keyed ({e}); give it a uuid() (e.g. a CustomGraphPass) to make it cacheable"
            ) from None
    return "\n".join(lines)


class _ConfigMemo:
    """The digest of a config module, recomputed only when a value changed.

    Every read of a config value resolves to its entry's ``user_override``
    (set by assignment and ``config.patch``), or to a default fixed at import
    (environment defaults included); defaults of reference type are copied
    into ``user_override`` on first read.  So after one full read, the tuple
    of ``user_override`` objects identifies the values exactly, except for a
    list or dict mutated in place: those are compared by value against a copy.
    Entries whose value comes from elsewhere (aliases) are read every time.
    """

    def __init__(self) -> None:
        self._memo: dict[
            tuple[str, tuple[str, ...], tuple[str, ...]], tuple[list[Any], list[tuple[int, Any]], str]
        ] = {}

    @staticmethod
    def _snapshot(module: Any) -> list[Any]:
        snap = []
        for name, entry in module._config.items():
            if getattr(entry, "alias", None) is not None:
                snap.append(_compat.read_config(module, name))
            else:
                snap.append(_compat.config_entry_value(entry))
        return snap

    def digest(self, module: Any, ignored: tuple[str, ...], callables: tuple[str, ...]) -> str:
        name = (module.__name__, ignored, callables)
        snap = self._snapshot(module)
        memo = self._memo.get(name)
        if (
            memo is not None
            and len(memo[0]) == len(snap)
            and all(a is b for a, b in zip(memo[0], snap, strict=True))
            and all(snap[i] == copy_ for i, copy_ in memo[1])
        ):
            return memo[2]
        value = digest(_config_component(module, ignored, callables))
        snap = self._snapshot(module)  # after the full read, defaults are materialized
        mutable = []
        for i, v in enumerate(snap):
            if isinstance(v, (list, dict, set)):
                try:
                    mutable.append((i, copy.deepcopy(v)))
                except Exception:  # noqa: BLE001 - uncopyable: never reuse this memo
                    return value
        self._memo[name] = (snap, mutable, value)
        return value


_config_memo = _ConfigMemo()


def _config_digest(module: Any, ignored: tuple[str, ...], callables: tuple[str, ...]) -> str:
    return _config_memo.digest(module, ignored, callables)


def _runtime_component() -> str:
    autocast = []
    for dev in torch._C._autocast_supported_devices():
        if torch.is_autocast_enabled(dev):
            autocast.append(f"{dev}:{torch.get_autocast_dtype(dev)}")
    parts = [
        f"grad={torch.is_grad_enabled()}",
        f"inference_mode={torch.is_inference_mode_enabled()}",
        "autocast=" + ",".join(autocast),
        f"autocast_cache={torch.is_autocast_cache_enabled()}",
        f"deterministic={torch.are_deterministic_algorithms_enabled()}",
        f"deterministic_warn_only={torch.is_deterministic_algorithms_warn_only_enabled()}",
        f"default_dtype={torch.get_default_dtype()}",
        f"matmul_precision={torch.get_float32_matmul_precision()}",
        f"cuda_tf32={torch.backends.cuda.matmul.allow_tf32}",
        f"cuda_fp16_reduced={torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction}",
        f"cuda_bf16_reduced={torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction}",
        f"cudnn_tf32={torch.backends.cudnn.allow_tf32}",
        f"cudnn_deterministic={torch.backends.cudnn.deterministic}",
        f"cudnn_benchmark={torch.backends.cudnn.benchmark}",
    ]
    return "\n".join(parts)


_AOT_CONFIG_FIELDS = (
    "num_params_buffers",
    "keep_inference_input_mutations",
    "is_export",
    "no_tangents",
    "dynamic_shapes",
    "aot_autograd_arg_pos_to_source",
    "static_input_indices",
    "enable_log",
    "pre_dispatch",
    "precompile_backend_id",
)


def _source_name(source: Any) -> str | None:
    if source is None:
        return None
    name = getattr(source, "name", None)
    if callable(name):
        name = name()
    return str(name) if name is not None else str(source)


def _aot_config_component(aot_config: Any) -> str:
    lines = []
    for name in _AOT_CONFIG_FIELDS:
        value = getattr(aot_config, name, None)
        if name == "aot_autograd_arg_pos_to_source" and value is not None:
            value = [_source_name(s) for s in value]
        if name == "precompile_backend_id" and value is not None:
            # The name Dynamo gives the compiled graph in the frame's globals
            # (``__compiled_fn_<n>_<uuid>``): new in every process, and not
            # part of what is compiled (a saved entry clears it; a hit gets the
            # new name).  Upstream keys on it, so with caching_precompile its
            # cache never hits across processes; ours keys on its presence.
            value = "<named>"
        try:
            lines.append(f"{name}={encode_value(value)}")
        except Unkeyable:
            lines.append(f"{name}={value!s}")
    return "\n".join(lines)


def _hardware_component(example_inputs: Sequence[Any]) -> str:
    devices: set[tuple[str, int]] = set()
    for x in example_inputs:
        if isinstance(x, torch.Tensor):
            d = x.device
            if d.type == "meta":
                continue
            devices.add((d.type, d.index if d.index is not None else -1))
    lines = []
    for dev_type, index in sorted(devices):
        if dev_type == "cpu":
            lines.append("cpu " + fingerprint.cpu_features())
        else:
            if index < 0:
                index = torch.cuda.current_device() if dev_type == "cuda" else 0
            lines.append(f"{dev_type}:{index} " + fingerprint.gpu_properties(dev_type, index))
    return "\n".join(lines)


@dataclasses.dataclass
class KeyComputation:
    key: str
    components: dict[str, str]
    detail: dict[str, str]
    # Per registered operator, its facets' short digests (for ``explain``).
    ops: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def debug_lines(self) -> list[str]:
        return [f"[{name}] {value}" for name, value in self.components.items()]

    def subkey(self, names: Sequence[str]) -> str:
        """A digest over some components only (e.g. those that do not depend on the machine)."""
        return digest("\n".join(f"{k}={self.components[k]}" for k in names), 20)


# Components that depend only on the graph, its inputs and the user's settings,
# not on the torch build or the machine: the same on every machine and release.
PORTABLE_COMPONENTS = ("format", "graph", "ops", "inputs", "aot_config", "fx_config", "runtime", "triton_src", "tag")


def compute_key(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    aot_config: Any,
    fx_config: dict[str, Any],
    *,
    keep_detail: bool = False,
    act_input_paths: Sequence[Any] = (),
) -> KeyComputation:
    """Compute the key of a graph; raises BypassAOTAutogradCache if it may not be cached.

    Never modifies ``gm``.
    """
    check_cacheable(gm)
    _check_triton_version()
    detail: dict[str, str] = {}

    def add(name: str, text: str) -> None:
        components[name] = digest(text)
        if keep_detail:
            detail[name] = text

    components: dict[str, str] = {}
    try:
        add("format", str(schemas.FORMAT_VERSION))
        encoder = GraphEncoder(gm)
        add("graph", "\n".join(encoder.lines()))
        ops_text, ops_record = registered_ops.ops_record(encoder.ops)
        add("ops", ops_text)
        ops_detail = registered_ops.short_facets(ops_record)
        backend_id = getattr(aot_config, "precompile_backend_id", None)
        if backend_id:
            # Note [Registered operators in stored frames] in dynamo/frames.py.
            registered_ops.remember_for_backend(str(backend_id), ops_record)
        input_lines = encode_inputs(example_inputs)
        if act_input_paths:
            # torch 2.14+: inputs that were AsyncCollectiveTensors (waited on
            # inside the compiled code); the compile depends on where they are.
            input_lines.append("act_input_paths " + encode_value(tuple(act_input_paths)))
        add("inputs", "\n".join(input_lines))
        add("aot_config", _aot_config_component(aot_config))
        add(
            "fx_config",
            "cudagraphs=%s\nforward_device=%s"
            % (
                bool(_compat.unbox(fx_config.get("cudagraphs"))),
                _compat.unbox(fx_config.get("boxed_forward_device_index")),
            ),
        )
        add("runtime", _runtime_component())
    except Unkeyable as e:
        raise BypassAOTAutogradCache(str(e)) from None
    components["functorch"] = _config_digest(
        functorch_config, _FUNCTORCH_IGNORED_PREFIXES, _FUNCTORCH_CALLABLE_KEYS
    )
    inductor_ignored, inductor_callables = _inductor_key_settings()
    components["inductor"] = _config_digest(
        torch._inductor.config, inductor_ignored, inductor_callables
    )
    if keep_detail:
        detail["functorch"] = _config_component(
            functorch_config, _FUNCTORCH_IGNORED_PREFIXES, _FUNCTORCH_CALLABLE_KEYS
        )
        detail["inductor"] = _config_component(
            torch._inductor.config, inductor_ignored, inductor_callables
        )
    add("system", json.dumps(fingerprint.system_description(), sort_keys=True))
    add("hardware", _hardware_component(example_inputs))
    components["torch_src"] = fingerprint.torch_fingerprint.get()
    if keep_detail:
        detail["torch_src"] = components["torch_src"]
    add("triton_src", "\n".join(encoder.triton_sources))
    add("tag", str(torch.compiler.config.cache_key_tag))
    whole = "\n".join(f"{k}={v}" for k, v in components.items())
    return KeyComputation(KEY_PREFIX + digest(whole, 20), components, detail, ops_detail)


def autograd_cache_key(
    mod: Any,
    example_inputs: Sequence[Any],
    config: Any,
    compiler_config_extra: Any = None,
    act_input_paths: Sequence[Any] = (),
) -> tuple[str, list[str]]:
    """The key of a Dynamo graph and its inputs, with its component listing.

    Installed as ``torch._functorch._aot_autograd.autograd_cache.autograd_cache_key``;
    the pipeline and the public key API reach it there.  The fourth argument
    is 2.13+'s ``CompilerConfigExtra`` or 2.11's fx_config dict; the fifth,
    2.14+'s paths of the inputs that were AsyncCollectiveTensors.
    """
    gm = _compat.unwrap_gm(mod)
    fx_config = _compat.fx_config_from(compiler_config_extra)
    result = compute_key(gm, example_inputs, config, fx_config, act_input_paths=act_input_paths)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("torch_aotcache key %s components:\n%s", result.key, "\n".join(result.debug_lines()))
    key = CacheKey(result.key, result.components)
    key.ops = result.ops
    return key, result.debug_lines()


def describe_key(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    aot_config: Any,
    fx_config: dict[str, Any] | None = None,
) -> KeyComputation:
    """The key with the readable text of every component (for tools and tests)."""
    return compute_key(
        _compat.unwrap_gm(gm), example_inputs, aot_config, fx_config or {}, keep_detail=True
    )


class CacheKey(str):
    """A key that carries the per-component digests it was computed from.

    It travels with the compile as upstream passes the key along (a miss's
    ``AOTAutogradCacheInfo.cache_key``, handed to ``save``), so the entry
    being saved records the components of its own key in its header, with
    no table of recent keys.  It pickles as a plain ``str``.
    """

    components: dict[str, str]
    # Set at a miss: see Note [Explaining misses] in store/explain.py.
    explain_detail: dict[str, Any] | None = None
    # Per registered operator, its facets' short digests.
    ops: dict[str, dict[str, str]] | None = None

    def __new__(cls, key: str, components: dict[str, str]) -> CacheKey:
        obj = super().__new__(cls, key)
        obj.components = components
        return obj

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (str, (str(self),))


# The readable facts behind a key, which ``explain`` compares.
# ---------------------------------------------------------------------------


def _changed_options(module: Any, ignored: tuple[str, ...]) -> dict[str, str]:
    """Short digests of the options of a config module whose values are not
    their defaults (set in code, by config.patch or from the environment)."""
    changed = {}
    for name, entry in module._config.items():
        if name.startswith(ignored) or getattr(entry, "alias", None) is not None:
            continue
        value = _compat.read_config(module, name)
        try:
            if value == entry.default:
                continue
            changed[name] = digest(encode_value(value), 12)
        except Exception:  # noqa: BLE001 - unkeyable or uncomparable: named all the same
            changed[name] = "?"
    return changed


def explain_detail(args: Sequence[Any], key: Any = None) -> dict[str, Any]:
    """The readable facts behind a key that ``explain`` compares; see
    Note [Explaining misses] in store/explain.py."""
    inputs = list(encode_inputs(args))
    return {
        "ops": dict(getattr(key, "ops", None) or {}),
        "runtime": _runtime_component(),
        "tag": str(torch.compiler.config.cache_key_tag),
        "inductor": _changed_options(torch._inductor.config, _inductor_key_settings()[0]),
        "functorch": _changed_options(functorch_config, _FUNCTORCH_IGNORED_PREFIXES),
        "inputs": [line[:200] for line in inputs[:64]],
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------------
# try_load: the entry point from aot_module_simplified
# ---------------------------------------------------------------------------


def _load(
    hit: lookup.CacheHit, cache_key: str, args: list[Any], aot_config: Any, fx_config: dict[str, Any]
) -> Callable[..., Any] | None:
    """The compiled function of a hit, or None: a verified entry that does
    not load (e.g. it refers to code that changed) is a miss, and the
    compile saves a replacement."""
    try:
        return runtime_wrappers.wrap_cached_result(hit.result, hit.entry, args, aot_config, fx_config)
    except FXGraphCacheMiss:
        raise
    except Exception as e:
        if functorch_config.strict_autograd_cache:
            raise
        log.warning("torch_aotcache: cannot load entry for key %s, compiling: %s", cache_key, e)
        count("load_failed")
        return None


def _bypass_info(error: BaseException) -> dict[str, Any]:
    return {
        "cache_bypass_reason": str(error),
        "cache_bypass_exception_type": type(error).__name__,
        "cache_bypass_traceback": traceback.format_exc().split("\n"),
        "cache_bypass_hard_exception": not isinstance(error, BypassAOTAutogradCache),
    }


def try_load_impl(
    mod: Any,
    args: list[Any],
    aot_config: Any,
    fx_config: dict[str, Any],
    local: bool,
    remote: bool,
    key_args: tuple[Any, ...] = (None,),
) -> tuple[Callable[..., Any] | None, str | None, list[Any]]:
    """The body of ``AOTAutogradCache.try_load`` (each release's signature is
    an adapter in _compat.py): the compiled function of a hit or None, the
    key of a miss (None after a hit or a bypass), and the backed symints of
    the inputs for the miss's cache info."""
    compiled_fn = None
    cache_key: str | None = None
    cache_info: dict[str, Any] = {}
    debug_lines: list[str] = []
    cache_state = "miss"
    remote = lookup.remote_tier_requested(remote)
    # See Note [Ranks decide together] in tiers/ranks.py.
    decision = ranks.Decision()
    try:
        # Look the key function up at call time, as upstream does: tests and
        # tools may patch it.
        cache_key, debug_lines = upstream.autograd_cache_key(mod, args, aot_config, *key_args)
        # See Note [Keeping torch_key between processes].
        inductor_digests.prime_torch_key()
        hit = lookup.lookup_hit(cache_key, local, remote, args, cache_info, aot_config)
        if hit is None and not ranks.must_agree():
            hit = lookup.wait_for_other_compile(cache_key, local, remote, args, cache_info)
        if decision.after_lookup(hit is not None) and hit is not None:
            compiled_fn = _load(hit, cache_key, args, aot_config, fx_config)
            if not decision.after_load(compiled_fn is not None):
                compiled_fn = None
        if compiled_fn is not None:
            assert hit is not None
            lookup.account_hit(hit, cache_key, cache_info)
            cache_state = "hit"
        else:
            lookup.account_miss(cache_key, lambda: explain_detail(args, cache_key))
    except FXGraphCacheMiss as e:
        # The entry refers to Inductor graphs that are gone: a miss, and the
        # compile's save replaces the entry.
        decision.give_up()
        counters["aot_autograd"]["autograd_cache_miss"] += 1
        if functorch_config.strict_autograd_cache or _compat.strict_precompile():
            raise e
    except Exception as e:
        decision.give_up()
        if cache_key is not None:
            # A lock taken on the miss, before this failed: nothing will save.
            from .tiers import single_flight

            single_flight.release_unsaved(cache_key)
        cache_key = None
        cache_state = "bypass"
        lookup.account_bypass(e)
        cache_info.update(_bypass_info(e))
        if functorch_config.strict_autograd_cache or _compat.strict_precompile():
            raise e
    event_time = time.time_ns()
    symints = [] if compiled_fn is not None else upstream.AOTAutogradCache._filter_backed_symints(args)
    lookup.log_outcome(cache_state, cache_key, cache_info, debug_lines, event_time, local, remote)
    return compiled_fn, cache_key if compiled_fn is None else None, symints


# Installed as ``AOTAutogradCache.try_load``, one per release (patching.PATCH_SITES).
_try_load_by_release = _compat.try_load_adapters(try_load_impl)


# ---------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------


# Returned by generate_guards_expression when the guards cannot be produced:
# save() refuses such an entry (an entry without its guards could hit falsely).
UNSAVEABLE_GUARDS = "<torch_aotcache: guards unavailable>"


def pickle_entry(entry: Any) -> bytes:
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        return pickle.dumps(entry)


def encode_for_store(
    key: str, entry: Any, payload: bytes, kernels: Sequence[tuple[str, bytes]] = ()
) -> tuple[str, bytes]:
    """(entry id, entry bytes) of a result about to be stored, with ``kernels``
    (source digest, binary) appended (Note [Self-contained entries])."""
    components = getattr(key, "components", {})
    mode = schemas.MODE_BUNDLED if is_bundled_result(entry) else schemas.MODE_FXGRAPHCACHE
    # See Note [Entries that stand for Inductor's FX graph cache].
    upstream_mode = schemas.MODE_BUNDLED if upstream.should_bundle_autograd_cache() else schemas.MODE_FXGRAPHCACHE
    header = schemas.make_header(
        key=key,
        payload=payload,
        torch_version=torch.__version__,
        created_ns=time.time_ns(),
        forward_cost_ns=getattr(entry, "forward_time_taken_ns", 0) or 0,
        backward_cost_ns=getattr(entry, "backward_time_taken_ns", 0) or 0,
        guards_expr=getattr(entry, "guards_expr", None),
        mode=mode,
        components=components,
        extra={schemas.EXTRA_UPSTREAM_MODE: upstream_mode, **lookup.explain_extra(key)},
        artifacts=kernels,
    )
    return header.entry_id, framing.encode_entry(header, payload, [b for _, b in kernels])


def _save(key: str, entry: Any, remote: bool) -> None:
    try:
        if entry is None:  # make_entry found nothing to save
            return
        if getattr(entry, "guards_expr", None) == UNSAVEABLE_GUARDS:
            count("save_skipped_no_guards")
            return
        entry.pre_save()
        try:
            payload = pickle_entry(entry)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            log.warning("AOTAutograd cache unable to serialize compiled graph: %s", e)
            count("pickle_failed")
            if functorch_config.strict_autograd_cache:
                raise
            return
        kernels = artifacts.collect(entry) if is_bundled_result(entry) else []
        entry_id, data = encode_for_store(key, entry, payload, kernels)
        _compat.record_artifact(key, data)
        if upstream.should_bundle_autograd_cache():
            cfg = getattr(entry, "sanitized_aot_config", None)
            backend_id = getattr(cfg, "precompile_backend_id", None)
            if cfg is not None and backend_id is not None:
                if _compat.record_precompile_artifact(backend_id, entry):
                    from .dynamo import events

                    events.backend_recorded()
                cfg.precompile_backend_id = None
        path = lookup.local_store.put(key, entry_id, data)
        stats.record("save", len(data))
        inductor_digests.remember_torch_key()
        log.info("Writing AOTAutograd cache entry to %s", path)
        counters["aot_autograd"]["autograd_cache_saved"] += 1
        cache_stats.put(lookup.STATS_NAME)
        if lookup.remote_tier_requested(remote):
            from .tiers import remote as remote_tier

            t = remote_tier.tier(True)
            if t is not None:
                t.put(key, entry_id, data)
    except BypassAOTAutogradCache as e:
        lookup.account_bypass(e)
        if functorch_config.strict_autograd_cache:
            raise
    except signing.SigningKeyError as e:
        count("save_failed")
        if _once.first_time("signing-key"):
            log.warning("torch_aotcache: entries are not saved: %s", e)
        if functorch_config.strict_autograd_cache:
            raise
    except OSError as e:
        # Counted, and warned about once per errno together with read
        # faults: see Note [Disk faults] in store/local.py.
        lookup.local_store.report_fault("write", e)
        if functorch_config.strict_autograd_cache:
            raise
    except Exception as e:
        log.warning("AOTAutograd cache unable to save compiled graph: %s", e)
        count("save_failed")
        if functorch_config.strict_autograd_cache:
            raise


# Note [Entries that stand for Inductor's FX graph cache]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Without ``bundled_autograd_cache``, upstream's entries refer to compiled
# graphs in Inductor's FX graph cache: a hit loads each graph from there
# (counting ``fxgraph_cache_hit`` and ``fxgraph_lookup_write_file`` in
# ``counters["inductor"]``), and after ``FxGraphCache.clear()`` the next
# lookup misses and compiles.  Our entries carry their graphs (Note
# [Self-contained entries] in inductor/artifacts.py), but users and tools observe the
# FX graph cache, so an entry records the layout upstream would have used
# (``upstream_mode`` in its header) and, when that is "fxgraphcache":
#
# * a hit counts each graph it loads as an FX graph cache hit
#   (runtime_wrappers.wrap_cached_result);
# * ``FxGraphCache.clear()`` removes it from the local store, so the next
#   compile compiles, as upstream's would.  A store set apart from Inductor's
#   cache dir (``TORCH_AOTCACHE_DIR``) is not Inductor's to clear and is left
#   alone, as are entries saved with ``bundled_autograd_cache`` (which
#   upstream keeps hitting after the clear).
#
# Rejected: checking on each hit that the FX graph cache still holds the
# graphs, which would tie every hit to Inductor's cache dir again (an empty
# one, as on a machine fed by the Redis tier, could never hit).


def clear_fx_graph_cache(original: Callable[[], None]) -> None:
    """Installed as ``FxGraphCache.clear``: upstream's ``original``, then
    ours.  See Note [Entries that stand for Inductor's FX graph cache]."""
    original()
    if config.store_dir:
        return
    removed = 0
    for path in lookup.local_store.iter_paths():
        try:
            header = framing.read_header(path)
        except (OSError, schemas.EntryFormatError):
            continue  # not ours to judge here: a lookup verifies and quarantines
        if header.extra.get(schemas.EXTRA_UPSTREAM_MODE) == schemas.MODE_FXGRAPHCACHE:
            lookup.local_store.remove(path)
            removed += 1
    if removed:
        log.debug("torch_aotcache: FxGraphCache.clear() removed %d entries", removed)


# ---------------------------------------------------------------------------
# make_entry: AOTAutograd's own result classes, bundled or not
# ---------------------------------------------------------------------------


class NotOutputCode(AssertionError):
    pass


def _unwrap_output_code(obj: Any) -> Any:
    from torch._inductor.output_code import OutputCode

    while hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    if not isinstance(obj, OutputCode):
        raise NotOutputCode(f"expected a compiled graph (OutputCode), got {type(obj).__name__}")
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
    return _compat.construct(cls, values)


def _bundle_entries() -> bool:
    """Whether entries hold their compiled graphs: by default
    (config.self_contained); with upstream's bundled_autograd_cache; for a
    remote tier (Note [Remote tier]: remote entries must stand alone); and,
    with self_contained off, while signing is on (a non-bundled hit would
    unpickle Inductor's FX graph cache files, which nothing signs) or while
    the store lives apart from Inductor's cache dir (it is then meant to be
    loaded from without that dir)."""
    if config.self_contained or upstream.should_bundle_autograd_cache():
        return True
    if config.bundle_for_remote and lookup.remote_tier_requested(upstream.should_use_remote_autograd_cache()):
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
# AOTAutogradCache: what takes the place of upstream's class's methods
# ---------------------------------------------------------------------------


class AOTAutogradCache:
    """torch_aotcache's AOTAutogradCache.

    Each attribute defined here takes the place of upstream's attribute of
    the same name (``patching.PATCH_SITES`` lists them and checks their
    signatures); upstream's class keeps its identity, so every module that
    imported it by name reaches these.  Upstream's building blocks that we
    reuse (``evaluate_guards``, ``_filter_backed_symints``,
    ``_get_shape_env``, ``get_remote_cache``) stay on upstream's class.
    """

    # Upstream's signature of this release; see _compat.try_load_adapters.
    try_load = staticmethod(_try_load_by_release[_compat.torch_release() or _compat.SUPPORTED_RELEASES[-1]])

    @staticmethod
    def _lookup(
        key: str,
        local: bool,
        remote: bool,
        args: list[Any],
        cache_info: dict[str, Any],
        aot_config: Any,
    ) -> tuple[Any, bytes] | None:
        """Installed as ``AOTAutogradCache._lookup``: (result, entry bytes) or
        None, as upstream's returns (standalone compile calls it)."""
        hit = lookup.lookup_hit(key, local, remote, args, cache_info, aot_config)
        return None if hit is None else (hit.result, hit.data)

    @staticmethod
    def make_entry(*args: Any, **kwargs: Any) -> Any:
        """Installed as ``AOTAutogradCache.make_entry``: the result class to
        save, holding its compiled graphs (bundled) when :func:`_bundle_entries`
        says so, else referring to Inductor's FX graph cache as upstream's
        default does."""
        from torch._functorch._aot_autograd import aot_autograd_result as results

        v = _compat.bind_make_entry(args, kwargs)
        fw, bw = v.pop("compiled_fw_func"), v.pop("compiled_bw_func")
        bsi, nsym = v.pop("backward_state_indices"), v.pop("num_symints_saved_for_bw")
        if bw is not None and (bsi is None or nsym is None):
            raise AssertionError("a backward needs backward_state_indices and num_symints_saved_for_bw")
        if _bundle_entries():
            try:
                forward, backward = _unwrap_output_code(fw), None if bw is None else _unwrap_output_code(bw)
            except NotOutputCode as e:
                # Inductor hands back a graph it did not compile (its module's
                # forward) for some trivial graphs: nothing to bundle.  Upstream
                # fails the compile here; we save nothing (see _save).
                log.info("torch_aotcache: entry not saved: %s", e)
                count("save_skipped_not_compiled")
                if functorch_config.strict_autograd_cache:
                    raise
                return None
            v["compiled_fw"] = results.BundledCompiledForward(forward)
            v["compiled_bw"] = None if backward is None else results.BundledCompiledBackward(backward, bsi, nsym)
            return _compat.construct(results.BundledAOTAutogradResult, v)
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
        return _compat.construct(results.AOTAutogradResult, v)

    @staticmethod
    def save(key: str, entry: Any, remote: bool) -> None:
        """Installed as ``AOTAutogradCache.save``.  Never raises outside strict mode."""
        from .tiers import single_flight

        try:
            _save(key, entry, remote)
        finally:
            single_flight.release(key)

    @classmethod
    def generate_guards_expression(cls: Any, cache_info: Any) -> str | None:
        """Installed as ``AOTAutogradCache.generate_guards_expression`` (a classmethod)."""
        try:
            shape_env = upstream.AOTAutogradCache._get_shape_env()
            if shape_env is None:
                return None
            symints = cache_info.forward_symints
            guards = shape_env.get_pruned_guards(symints)
            return shape_env.produce_guards_expression(placeholders=symints, guards=guards)
        except Exception as e:
            log.warning("torch_aotcache: cannot produce shape guards, entry not saved: %s", e)
            if functorch_config.strict_autograd_cache:
                raise
            return UNSAVEABLE_GUARDS

    @staticmethod
    def clear() -> None:
        """Installed as ``AOTAutogradCache.clear``: removes every local entry."""
        lookup.local_store.clear()
        registered_ops.clear()
        if "torch_aotcache.dynamo.frames" in sys.modules:
            from .dynamo import frames

            frames.forget()

    @staticmethod
    def _write_to_local_cache(original: Callable[[str, bytes], None], key: str, content: bytes) -> None:
        """Installed as ``AOTAutogradCache._write_to_local_cache`` (Mega-Cache
        loading), around upstream's ``original``.

        Content in our format is verified and stored; anything else is an upstream
        entry and goes to upstream's own folder, where we never read it.
        """
        try:
            header = framing.verify_entry(content, key=key, torch_version=torch.__version__).header
        except schemas.EntryFormatError as e:
            if content[: len(schemas.MAGIC) - 2] == schemas.MAGIC[:-2]:
                # Rejected as a lookup rejects, so a forged artifact shows up the same way.
                lookup.reject(lookup.ArtifactSource(), key, lookup.Candidate(content, ""), e)
                return
            original(key, content)
            return
        try:
            lookup.local_store.put(key, header.entry_id, content)
        except OSError as e:
            lookup.local_store.report_fault("write", e)
