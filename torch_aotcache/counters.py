"""
torch_aotcache's own counters.

They sit beside upstream's in ``torch._dynamo.utils.counters``, under
``counters["torch_aotcache"]``; upstream's (``counters["aot_autograd"]``,
``counters["inductor"]``) keep their names and increments.  :data:`COUNTERS`
lists every name we count, with its meaning; a test checks that the package
counts nothing else.
"""

from __future__ import annotations

import sys


GROUP = "torch_aotcache"

COUNTERS: dict[str, str] = {
    # The local store (Note [Disk faults] in store/local.py).
    "store_read_failed": "reads of the local store that failed (each errno warned once)",
    "store_write_failed": "writes to the local store that failed (each errno warned once)",
    "entry_vanished": "entry files removed by another process between listing and reading",
    # Verification (Note [Entry layout] in entry/framing.py).
    "entry_rejected": "entries refused before anything in them was used (corrupt, foreign, unsigned)",
    "signature_rejected": "of those, entries without a valid signature",
    "quarantined": "refused local entries moved to <store>/quarantine/",
    "remote_rejected": "remote entries refused",
    # Loading and saving.
    "load_failed": "verified entries that did not load (compiled instead, and replaced)",
    "post_compile_ns": "nanoseconds spent re-applying AOTAutograd's wrappers on hits",
    "pickle_failed": "compiled results that could not be pickled (not saved)",
    "save_failed": "saves that failed for another reason (not saved; the compile goes on)",
    "save_skipped_no_guards": "entries not saved because their shape guards could not be produced",
    "save_skipped_not_compiled": "bundled entries not saved: Inductor handed back a graph it did not compile",
    # The front door (Note [Front door] in inductor/front_door.py).
    "front_door_hits": "hits loaded without importing Inductor's compiler",
    "front_door_errors": "front door attempts that failed in our code (the normal path compiled)",
    "light_post_compiles": "cached Inductor graphs set up without importing Inductor's GraphLowering",
    # Note [Drift fails safe] in installer/drift.py: a part left off for the process.
    "drift_front_door": "processes whose front door stayed off: upstream's code it mirrors changed",
    "drift_compiler_config": "processes whose compiler-config shortcut stayed off (upstream changed)",
    "drift_light_post_compile": "processes whose light post-compile stayed off (upstream changed)",
    "drift_light_runtime": "processes whose light runtime imports stayed off (upstream changed)",
    # Carried kernels (Note [Self-contained entries] in inductor/artifacts.py).
    "kernels_carried": "compiled C++ kernels written into saved entries",
    "kernels_loaded": "kernels loaded from a hit's entry",
    "kernels_not_carried": "kernels a hit needed that its entry lacks (built from source)",
    "kernels_load_failed": "carried kernels that failed to load (built from source, warned once)",
    "kernels_module_not_found": "compiled graphs whose generated module was not found when saving",
    "kernels_unreadable": "kernels whose bytes were not available when saving",
    "kernels_over_budget": "kernels left out of an entry by config.max_kernel_bytes",
    # The remote tier (Note [Remote tier] in tiers/remote.py).
    "remote_hit": "remote lookups that found entries",
    "remote_miss": "remote lookups that found none",
    "remote_put": "entries written to the remote tier",
    "remote_bytes_read": "bytes read from the remote tier",
    "remote_bytes_written": "bytes written to the remote tier",
    "remote_error": "remote operations that failed",
    "remote_timeout": "remote operations that timed out",
    "remote_skipped": "remote operations skipped while the circuit breaker was open",
    "remote_dropped": "background writes dropped because the queue was full",
    "remote_garbage": "remote values that were not entries",
    "remote_read_only_skipped": "remote writes not made: the tier is read-only",
    # The bounded store (Note [Bounded store] in store/housekeeping.py).
    "evicted": "entries removed to keep the store under config.max_size",
    "evicted_bytes": "bytes of those entries",
    "stale_removed": "stale lock files, quarantined entries and temporary files removed",
    # Bypasses by category of reason (stats.BYPASS_CATEGORIES; Note [Statistics on disk]).
    "bypass_unsupported_op": "bypasses for a graph node whose behaviour the key cannot fix",
    "bypass_setting": "bypasses for a setting that rules caching out (freezing, a config value)",
    "bypass_unkeyable": "bypasses for a value the key cannot encode exactly",
    "bypass_error": "bypasses caused by an unexpected error while keying",
    "bypass_other": "bypasses for any other reason",
    # Single flight (Note [Single flight] in tiers/single_flight.py).
    "single_flight_waited": "compiles that waited for another process's entry and loaded it",
    "single_flight_timeout": "waits that ran out and compiled after all",
    "single_flight_released_unsaved": "single-flight locks released by a compile that did not save",
    # Dynamo's frames (Note [Caching Dynamo's frames] in dynamo/__init__.py).
    "frame_hit": "stored frame packages whose compiled code ran in place of tracing",
    "frame_miss": "torch.compile calls that found no stored frame package",
    "frame_saved": "frame packages written to the store",
    "frame_unkeyable": "torch.compile calls whose settings or configs cannot be named (not cached)",
    "frame_guard_replaced": "identity guards replaced by guards that hold across processes",
    "frame_guard_kept": "identity guards on unnamed objects kept (their compile is not packaged)",
    "frame_not_saved_incomplete": "packages whose compiled graphs never completed (not saved at exit)",
    "frame_not_saved_unknown_guards": "packages holding a guard set not built through us (not saved)",
    "frame_not_saved_empty": "packages without any compiled code (not saved)",
    "frame_not_saved_unnamed_global": "packages whose bytecode reads a per-process global we cannot name",
    "frame_not_saved_unkeyed_ops": "packages with a graph whose registered operators we did not key (not saved)",
    "frame_save_failed": "frame package saves that failed (the compile goes on)",
    "frame_load_failed": "frame lookups that failed in our code (traced as usual)",
    "frame_code_not_packaged": "functions compiled as frames of their own that a package cannot name (traced anew)",
    "frame_loaded": "stored frame packages loaded and installed (a hit once one runs)",
    "frame_retraced": "compiles under a loaded frame package (a guard set failed, or code it does not hold)",
    "frame_install_failed": "loaded frames that failed to install (taken out; traced as usual)",
    "frame_miss_guard_unresolved": "stored frames not used: a replaced guard names nothing, or changed code",
    "frame_miss_source_changed": "stored frames not used: a source they inlined changed",
    "frame_miss_system_changed": "stored frames not used: upstream's system check refused them",
    "frame_miss_incomplete": "stored frames not used: a compiled graph is missing",
    "frame_miss_load_failed": "stored frames not used: the payload does not load here",
    "frame_miss_malformed": "stored frames not used: the entry holds something else",
    "frame_miss_ops_changed": "stored frames not used: a registered operator their graphs call changed",
}


def count(name: str, n: int = 1) -> None:
    """Add ``n`` to our counter ``name`` (one of :data:`COUNTERS`).

    A process that has not imported torch (the command line, see Note
    [Reading the store without torch] in store/layout.py) compiles nothing and
    counts nothing: it is not made to import torch for a counter.
    """
    if "torch" not in sys.modules:
        return
    from torch._dynamo.utils import counters

    counters[GROUP][name] += n
