"""
Finding an entry: one loop over the tiers, waiting for another process's
compile, and recording what a lookup found.

Note [One loop over the tiers]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A lookup asks each tier in turn (the local store, then the remote tier when
it is on) for the entries stored under a key.  Both answer with
:class:`Candidate`s: an entry's bytes and the name it is stored under (a
local file is named after the hash of its guard expression, and so is a
remote hash field).  Every candidate is verified
(``entry/framing.verify_entry``) before anything in it is used; a candidate
that fails is rejected in one place (:func:`reject`: counted, logged once,
set aside where the tier can set it aside), and the lookup goes on.  Only
then are the guards evaluated, and only a candidate whose guards pass is
unpickled.  A hit from a tier after the first is kept in the local store.

Upstream's lookup (``AOTAutogradCache._lookup``) is the same loop over
``GuardedCache``'s local and remote backends.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch
from torch._dynamo.utils import counters
from torch._functorch import config as functorch_config
from torch._functorch._aot_autograd import autograd_cache as upstream
from torch._inductor.remote_cache import cache_stats

from .. import _compat, _once, config, schemas
from ..counters import count
from ..entry import framing
from ..runtime_wrappers import load_result
from ..store import explain, stats
from ..store.local import LocalStore


# What a lookup found (hit, miss, bypass, a refused entry) is logged on the
# cache's own logger, as upstream logs it from its autograd_cache module:
# users and tests follow ``torch_aotcache.autograd_cache``.
log = logging.getLogger(__name__.rpartition(".tiers.")[0] + ".autograd_cache")

# The name upstream's cache statistics are kept under.
STATS_NAME = "LocalAOTAutogradCache"

local_store = LocalStore()


def _warn_once(tag: str, msg: str, *args: Any) -> None:
    if _once.first_time(tag):
        log.warning(msg, *args)


# ---------------------------------------------------------------------------
# The tiers
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An entry as a tier stores it, not yet verified."""

    data: bytes
    # The name it is stored under: the hash of its guard expression.
    entry_id: str
    # The local file (None for a remote candidate).
    path: str | None = None


class Tier(Protocol):
    name: str

    def candidates(self, key: str) -> Iterable[Candidate]: ...

    def describe(self, key: str, candidate: Candidate) -> str: ...

    def set_aside(self, candidate: Candidate) -> str | None:
        """Move a rejected candidate where no lookup reads it again; where it went."""
        ...


class LocalTier:
    name = "local"

    def candidates(self, key: str) -> Iterable[Candidate]:
        for stored in local_store.candidates(key):
            yield Candidate(stored.data, stored.entry_id, stored.path)

    def describe(self, key: str, candidate: Candidate) -> str:
        return f"cache entry {candidate.path}"

    def set_aside(self, candidate: Candidate) -> str | None:
        if candidate.path is None or not config.quarantine_bad_entries:
            return None
        moved = local_store.quarantine(candidate.path)
        if moved is not None:
            count("quarantined")
        return moved


class RemoteTier:
    name = "remote"

    def __init__(self, ahead: bool = False) -> None:
        # The front door's lookup (Note [The front door asks the remote tier first]).
        self.ahead = ahead

    def candidates(self, key: str) -> Iterable[Candidate]:
        from . import remote

        for field, data in remote.remote_entries(key, True, ahead=self.ahead):
            yield Candidate(data, field)

    def describe(self, key: str, candidate: Candidate) -> str:
        return f"remote entry for {key}"

    def set_aside(self, candidate: Candidate) -> str | None:
        return None  # other machines may hold a good copy; the local store never keeps it


class ArtifactSource:
    """Entries handed over by torch's artifact loading (Mega-Cache), before
    they reach the local store."""

    name = "artifact"

    def candidates(self, key: str) -> Iterable[Candidate]:
        return ()

    def describe(self, key: str, candidate: Candidate) -> str:
        return f"cache artifact for key {key}"

    def set_aside(self, candidate: Candidate) -> str | None:
        return None


def tiers(local: bool, remote: bool, ahead: bool = False) -> list[Tier]:
    found: list[Tier] = []
    if local:
        found.append(LocalTier())
    if remote:
        found.append(RemoteTier(ahead))
    return found


def reject(tier: Tier, key: str, candidate: Candidate, error: schemas.EntryFormatError) -> None:
    """A candidate that failed verification: counted, logged once, set aside."""
    count("remote_rejected" if tier.name == "remote" else "entry_rejected")
    if isinstance(error, schemas.EntrySignatureError):
        count("signature_rejected")
    moved = tier.set_aside(candidate)
    what = tier.describe(key, candidate)
    _warn_once(
        f"rejected:{what}",
        "torch_aotcache: refused %s (%s)%s",
        what,
        error,
        f"; moved to {moved}" if moved else "",
    )


# ---------------------------------------------------------------------------
# The lookup
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CacheHit:
    """A verified entry whose guards passed, and AOTAutograd's result
    unpickled from it."""

    result: Any
    entry: schemas.VerifiedEntry
    # The local file it came from (None for a remote hit).
    path: str | None = None

    @property
    def data(self) -> bytes:
        return self.entry.data

    @property
    def header(self) -> schemas.EntryHeader:
        return self.entry.header


def _verified(key: str, candidate: Candidate) -> schemas.VerifiedEntry:
    # Verify the whole entry before anything in it is used: guard
    # expressions are evaluated by the ShapeEnv, payloads unpickled.
    entry = framing.verify_entry(candidate.data, key=key, torch_version=torch.__version__)
    # Unsigned, nothing else covers the header: a guard that no longer
    # matches the name it is stored under was corrupted, and is never
    # evaluated (it could raise, or pass for shapes the entry is not valid for).
    if candidate.entry_id != entry.header.entry_id:
        raise schemas.EntryFormatError("entry's guard expression does not match its file name")
    return entry


def find_entry(
    key: str,
    local: bool,
    hints: list[Any],
    cache_info: dict[str, Any],
    remote: bool = False,
    record: bool = True,
    give_way: bool = False,
) -> CacheHit | None:
    """The first verified entry under ``key`` whose guards pass, unpickled;
    see Note [One loop over the tiers].  ``give_way`` (the front door's
    lookup): a candidate that fails verification raises instead (the front
    door leaves it to the normal path, which rejects it), and the remote tier
    is asked ahead (Note [The front door asks the remote tier first])."""
    status, guard, found = "full_miss", None, None
    for tier in tiers(local, remote, ahead=give_way):
        for candidate in tier.candidates(key):
            try:
                entry = _verified(key, candidate)
            except schemas.EntryFormatError as e:
                if give_way:
                    raise
                reject(tier, key, candidate, e)
                continue
            if entry.header.guards_expr:
                guard = entry.header.guards_expr
                if not bool(upstream.AOTAutogradCache.evaluate_guards(guard, hints)):
                    status = "guard_miss"
                    continue
            found = CacheHit(load_result(entry), entry, candidate.path)
            if tier.name != "local" and local:
                try:
                    local_store.put(key, entry.header.entry_id, entry.data)
                except OSError as e:
                    local_store.report_fault("write", e)
            break
        if found is not None:
            break
    cache_info["cache_status_detailed"] = "hit" if found is not None else status
    if guard is not None:
        cache_info["cache_status_guard_expr"] = guard
    if record:
        in_local = found is not None and found.path is not None
        record_result(
            local_hit=in_local,
            local_miss=local and not in_local,
            remote_hit=found is not None and not in_local,
            remote_miss=remote and found is None,
        )
    return found


def hints_of(args: list[Any]) -> list[Any]:
    symints = upstream.AOTAutogradCache._filter_backed_symints(args)
    return [_compat.guard_hint(s) for s in symints]


def wait_for_other_compile(
    key: str, local: bool, remote: bool, args: list[Any], cache_info: dict[str, Any]
) -> CacheHit | None:
    """After a miss: take the key's single-flight locks, or wait for the process
    that holds them and return its entry.  See Note [Single flight] in
    tiers/single_flight.py."""
    from . import remote as remote_tier, single_flight

    hints = hints_of(args)

    def again() -> CacheHit | None:
        try:
            return find_entry(key, local, hints, {}, remote=remote, record=False)
        except Exception as e:  # noqa: BLE001 - keep waiting; the bound still holds
            log.debug("torch_aotcache: lookup while waiting failed: %s", e)
            return None

    tier = remote_tier.tier(True) if remote else None
    found = single_flight.coordinate(key, again, tier)
    if found is not None:
        cache_info["cache_status_detailed"] = "hit"
        _compat.record_artifact(key, found.data)
    return found


def record_artifacts(key: str, hit: CacheHit, aot_config: Any) -> None:
    """Hand a hit to torch's artifact recorders (Mega-Cache, precompile)."""
    _compat.record_artifact(key, hit.data)
    if (
        upstream.should_bundle_autograd_cache()
        and aot_config is not None
        and getattr(aot_config, "precompile_backend_id", None) is not None
    ):
        if _compat.record_precompile_artifact(aot_config.precompile_backend_id, hit.result):
            from ..dynamo import events

            events.backend_recorded()


def lookup_hit(
    key: str,
    local: bool,
    remote: bool,
    args: list[Any],
    cache_info: dict[str, Any],
    aot_config: Any,
) -> CacheHit | None:
    """The lookup of ``AOTAutogradCache._lookup`` and ``try_load``: a hit,
    or None (a miss, or a failure that strict mode raises)."""
    try:
        hit = find_entry(key, local, hints_of(args), cache_info, remote=remote)
        if hit is None:
            if cache_info.get("cache_status_detailed") == "guard_miss":
                counters["aot_autograd"]["autograd_cache_guard_miss"] += 1
            return None
        record_artifacts(key, hit, aot_config)
    except Exception as e:
        log.info("torch_aotcache unable to load compiled graph: %s", e)
        if functorch_config.strict_autograd_cache:
            raise
        return None
    return hit


def remote_tier_requested(remote: bool) -> bool:
    """Whether the remote tier is on: upstream's flag, or a Redis URL of ours."""
    from . import remote as remote_tier

    try:
        return remote_tier.configured_url(remote) is not None
    except Exception as e:  # noqa: BLE001 - configuration problems never fail a compile
        _warn_once("remote-config", "torch_aotcache: remote cache configuration: %s", e)
        return False


# ---------------------------------------------------------------------------
# What a lookup found: counters, statistics, compile events, explained misses
# ---------------------------------------------------------------------------


def record_result(local_hit: bool, local_miss: bool, remote_hit: bool, remote_miss: bool) -> None:
    """Upstream's statistics and compile events of one lookup."""
    if local_hit:
        cache_stats.hit(STATS_NAME)
        increment_compile_event("aotautograd_local_cache_hit_count")
    if local_miss:
        cache_stats.miss(STATS_NAME)
        increment_compile_event("aotautograd_local_cache_miss_count")
    if remote_hit:
        increment_compile_event("aotautograd_remote_cache_hit_count")
    if remote_miss:
        increment_compile_event("aotautograd_remote_cache_miss_count")


def account_hit(hit: CacheHit, cache_key: str, cache_info: dict[str, Any]) -> None:
    """Record a hit: its entry's last use (Note [Bounded store]), the
    statistics (Note [Statistics on disk]) and upstream's counters."""
    log.info("AOTAutograd cache hit for key %s", cache_key)
    if hit.path is not None:
        local_store.record_hit(hit.path)
    stats.record("hit", hit.header.compile_cost_ns)
    counters["aot_autograd"]["autograd_cache_hit"] += 1
    fw = hit.result.forward_time_taken_ns // 1_000_000
    bw = hit.result.backward_time_taken_ns // 1_000_000
    cache_info.update(forward_time_saved_ms=fw, backward_time_saved_ms=bw, time_saved_ms=fw + bw)


def account_bypass(error: BaseException) -> None:
    """Upstream's bypass counter, and ours by category of reason; never raises."""
    counters["aot_autograd"]["autograd_cache_bypass"] += 1
    log.info("Bypassing autograd cache due to: %s", error)
    try:
        hard = not isinstance(error, upstream.BypassAOTAutogradCache)
        category = stats.bypass_category(str(error), hard=hard)
        count(f"bypass_{category}")
        stats.record("bypass", category)
    except Exception as e:  # noqa: BLE001 - statistics never fail a compile
        log.debug("torch_aotcache: cannot count a bypass: %s", e)


def account_miss(key: Any, detail: Callable[[], dict[str, Any]]) -> None:
    """Record a miss: upstream's counter, the statistics, and the key's
    components with ``detail()`` for ``explain`` (kept on the key too, so the
    entry saved after the miss records them).  Never raises."""
    log.info("AOTAutograd cache miss for key %s", key)
    counters["aot_autograd"]["autograd_cache_miss"] += 1
    stats.record("miss")
    components = getattr(key, "components", None)
    if not components:
        return
    try:
        key.explain_detail = detail()
        miss = explain.Miss(str(key), time.time_ns(), dict(components), key.explain_detail)
        explain.remember_miss(miss)
        explain.log_miss(miss)
    except Exception as e:  # noqa: BLE001 - explaining never fails a compile
        log.debug("torch_aotcache: cannot record a miss for explain: %s", e)


def explain_extra(key: Any) -> dict[str, Any]:
    """What an entry saved after a miss records for ``explain``."""
    detail = getattr(key, "explain_detail", None)
    return {schemas.EXTRA_EXPLAIN: detail} if detail else {}


def increment_compile_event(name: str) -> None:
    try:
        from torch._dynamo.utils import CompileEventLogger

        CompileEventLogger.try_(CompileEventLogger.increment_toplevel, name)
    except Exception:  # noqa: BLE001 - metrics are best effort
        pass


def log_cache_event(state: str, info: dict[str, Any], event_time: int, local: bool, remote: bool) -> None:
    """The compile event of a lookup (tlparse / chromium traces); best effort."""
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


def log_outcome(
    cache_state: str,
    cache_key: str | None,
    cache_info: dict[str, Any],
    debug_lines: Sequence[str],
    event_time: int,
    local: bool,
    remote: bool,
) -> None:
    cache_info.update(key=cache_key, cache_state=cache_state, components=debug_lines)
    log_cache_event(cache_state, cache_info, event_time, local, remote)
    torch._logging.trace_structured(
        "artifact",
        metadata_fn=lambda: {"name": f"aotautograd_cache_{cache_state}", "encoding": "json"},
        payload_fn=lambda: json.dumps(cache_info, default=str),
    )
