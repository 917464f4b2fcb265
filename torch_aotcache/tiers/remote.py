"""
The remote tier: entries shared across machines through a remote store
(Redis, an object store, or a backend of the user's; Note [Remote backends]
in tiers/backend.py).

Note [Remote tier]
~~~~~~~~~~~~~~~~~~
A local miss asks the remote store.  A remote entry is the local entry's
bytes (same header, same checksum and signature), compressed with zstd
(``TACZ`` + zstd(entry)); a remote hit is verified exactly like a local one,
written to the local store, then loaded.  Entries written while the remote
tier is on are *bundled* (the compiled code is inside the entry), so a machine
with an empty cache dir can load one without compiling.  Each backend's
layout (tiers/redis_backend.py, tiers/object_store.py) is namespaced by
format version and cache key tag, which keeps incompatible writers apart.

The store is named by ``TORCH_AOTCACHE_REMOTE_URL`` (any scheme), else by
``TORCH_AOTCACHE_REDIS_URL`` or upstream's ``TORCHINDUCTOR_REDIS_URL`` /
``_HOST`` / ``_PORT`` with ``enable_remote_autograd_cache``.  With
``remote_read_only`` a process reads the store and writes nothing to it
(neither entries nor leases).

Nothing the remote does may hurt a compile:

* every operation has a timeout (Redis reads 50 ms by default, object-store
  requests ``remote_object_read_timeout_s``);
* after ``remote_failure_threshold`` consecutive failures a circuit breaker
  stops asking for ``remote_cooldown_s`` and then lets one request through
  (upstream turns its remote tier off for the rest of the process);
* writes go through a bounded queue to a background thread (a full queue
  drops the write and counts it), flushed at exit within a time limit;
  ``remote_sync_writes`` writes inline instead, for tests and short jobs.

Trust: by default a remote entry is loaded only if its signature verifies
(see Note [Signed entries]); without a signing key the tier stays off unless
``TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE=1`` says to trust unsigned remote
data, which is logged once.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator

from .. import _once, config
from ..entry import signing
from ..counters import count
from .backend import redact, RemoteBackend


log = logging.getLogger(__name__)

COMPRESSED_MAGIC = b"TACZ"


def configured_url(remote_requested: bool) -> str | None:
    """The remote store's URL, or None when the remote tier is off."""
    import torch._functorch.config  # not imported yet in a process that has compiled nothing (the CLI)

    if torch.compiler.config.force_disable_caches:
        return None
    flag = torch._functorch.config.enable_remote_autograd_cache
    if flag is False:
        return None
    url = config.remote_url or config.redis_url or os.environ.get("TORCHINDUCTOR_REDIS_URL")
    if url:
        return url
    if remote_requested or flag:
        host = os.environ.get("TORCHINDUCTOR_REDIS_HOST", "localhost")
        port = os.environ.get("TORCHINDUCTOR_REDIS_PORT", "6379")
        return f"redis://{host}:{port}"
    return None


def _ttl_seconds() -> int:
    raw = config.remote_ttl_s
    try:
        return max(0, int(float(raw))) if raw not in (None, "") else 0
    except (TypeError, ValueError):
        log.warning("torch_aotcache: ignoring TORCH_AOTCACHE_REMOTE_TTL=%r (not a number)", raw)
        return 0



ENTRY_POINT_GROUP = "torch_aotcache.remote_backends"

BackendFactory = Callable[[str], RemoteBackend]

_registered: dict[str, BackendFactory] = {}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Use ``factory(url)`` for remote URLs of ``scheme`` (``scheme://...``)."""
    _registered[scheme.lower()] = factory


def unregister_backend(scheme: str) -> None:
    _registered.pop(scheme.lower(), None)


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _builtin(scheme: str) -> BackendFactory | None:
    if scheme in ("redis", "rediss", "unix"):
        from .redis_backend import RedisBackend

        return RedisBackend
    if scheme in ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "file"):
        from .object_store import ObjectStoreBackend

        return ObjectStoreBackend
    return None


def _from_entry_points(scheme: str) -> BackendFactory | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name.lower() == scheme:
            factory: BackendFactory = ep.load()
            return factory
    return None


def create_backend(url: str) -> RemoteBackend:
    """The backend for ``url``; raises ValueError for a scheme nobody serves
    (and whatever the backend raises for a URL it cannot use)."""
    scheme = scheme_of(url)
    factory = _registered.get(scheme) or _builtin(scheme) or _from_entry_points(scheme)
    if factory is None:
        raise ValueError(f"no remote cache backend for {scheme or 'a URL without a scheme'!r} ({url})")
    return factory(url)


class CircuitBreaker:
    """Closed until ``threshold`` consecutive failures; then open for ``cooldown_s``."""

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            if self.opened_at is None:
                return True
            if time.monotonic() - self.opened_at >= self.cooldown_s:
                # Half open: let this request through; a failure re-opens.
                self.opened_at = None
                self.failures = self.threshold - 1
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None

    def failure(self) -> bool:
        """Record a failure; returns True when this one opened the breaker."""
        with self._lock:
            self.failures += 1
            if self.failures >= self.threshold and self.opened_at is None:
                self.opened_at = time.monotonic()
                return True
            return False


class RemoteTier:
    """A remote store (any backend, Note [Remote backends]) with what every
    store needs around it: breaker, compression, queue, read-only mode."""

    def __init__(self, backend: RemoteBackend) -> None:
        import zstandard

        self.backend = backend
        self.url = backend.url
        self.shown_url = redact(backend.url)
        self._zstd_c = zstandard.ZstdCompressor(level=3)
        self._zstd_d = zstandard.ZstdDecompressor()
        self.breaker = CircuitBreaker(config.remote_failure_threshold, config.remote_cooldown_s)
        self._queue: queue.Queue[tuple[str, str, bytes] | None] = queue.Queue(
            maxsize=config.remote_queue_size
        )
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    # -- failures -----------------------------------------------------------

    def _failed(self, op: str, e: BaseException) -> None:
        try:
            timeout = self.backend.is_timeout(e)
        except Exception:  # noqa: BLE001 - a backend's own bug is an error
            timeout = False
        count("remote_timeout" if timeout else "remote_error")
        opened = self.breaker.failure()
        if _once.first_time(f"remote-failed:{self.url}:{op}:{type(e).__name__}"):
            log.warning("torch_aotcache: remote cache %s failed (%s): %s", op, self.shown_url, _first_line(e))
        if opened:
            log.warning(
                "torch_aotcache: remote cache %s unavailable; not asking it for %.0f s",
                self.shown_url,
                self.breaker.cooldown_s,
            )

    # -- reads --------------------------------------------------------------

    def get(self, key: str) -> list[tuple[str, bytes]]:
        """(entry id, entry) pairs stored under ``key``, decompressed and
        unverified; [] on any failure."""
        out, raw = self.read_quietly(key)
        count_answer(out, raw)
        return out

    def read_quietly(self, key: str) -> tuple[list[tuple[str, bytes]], int]:
        """``get`` without counting the hit or miss: the pairs and the bytes
        read (failures and garbage are counted)."""
        if not self.breaker.allow():
            count("remote_skipped")
            return [], 0
        try:
            values = self.backend.read(key)
            if not isinstance(values, dict):
                raise TypeError(f"read answered {type(values).__name__}")
        except Exception as e:  # noqa: BLE001 - any failure is a miss
            self._failed("read", e)
            return [], 0
        self.breaker.success()
        out, raw = [], 0
        for field, value in values.items():
            if not isinstance(value, bytes) or not isinstance(field, str):
                count("remote_garbage")
                continue
            raw += len(value)
            data = self.decode(value)
            if data is None:
                count("remote_garbage")
                continue
            out.append((field, data))
        return out, raw

    def decode(self, value: bytes) -> bytes | None:
        if not value.startswith(COMPRESSED_MAGIC):
            return None
        try:
            return self._zstd_d.decompress(
                value[len(COMPRESSED_MAGIC) :], max_output_size=config.remote_max_entry_bytes
            )
        except Exception:  # noqa: BLE001 - garbage is a miss
            return None

    def encode(self, data: bytes) -> bytes:
        return COMPRESSED_MAGIC + self._zstd_c.compress(data)

    # -- writes -------------------------------------------------------------

    def put(self, key: str, entry_id: str, data: bytes) -> None:
        if config.remote_read_only:
            count("remote_read_only_skipped")
            return
        value = self.encode(data)
        if config.remote_sync_writes:
            self._put_now(key, entry_id, value)
            return
        self._ensure_writer()
        try:
            self._queue.put_nowait((key, entry_id, value))
        except queue.Full:
            count("remote_dropped")

    def _put_now(self, key: str, entry_id: str, value: bytes) -> None:
        if not self.breaker.allow():
            count("remote_skipped")
            return
        try:
            self.backend.write(key, entry_id, value, _ttl_seconds())
        except Exception as e:  # noqa: BLE001
            self._failed("write", e)
            return
        self.breaker.success()
        count("remote_put")
        count("remote_bytes_written", len(value))

    def _ensure_writer(self) -> None:
        with self._writer_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._drain, name="torch_aotcache-remote-writer", daemon=True
                )
                self._writer.start()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._put_now(*item)
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for queued writes; returns whether all were written."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    # -- leases (Note [Single flight]) ----------------------------------------

    def take_lease(self, key: str, token: str, ttl_s: float) -> bool | None:
        """True: ``token`` holds ``key``'s lease now; False: another holds it;
        None: no lease to be had (read-only, breaker open, a failure), so the
        caller coordinates locally only."""
        if config.remote_read_only or not self.breaker.allow():
            return None
        try:
            return bool(self.backend.create_lease(key, token, ttl_s))
        except Exception as e:  # noqa: BLE001 - a dead remote never blocks a compile
            self._failed("lock", e)
            return None

    def refresh_lease(self, key: str, token: str, ttl_s: float) -> bool:
        try:
            return bool(self.backend.refresh_lease(key, token, ttl_s))
        except Exception:  # noqa: BLE001 - the lease expires by itself
            return False

    def release_lease(self, key: str, token: str) -> None:
        try:
            self.backend.release_lease(key, token)
        except Exception:  # noqa: BLE001 - it expires by itself
            pass

    def close(self) -> None:
        try:
            self.backend.close()
        except Exception:  # noqa: BLE001
            pass


class RedisTier(RemoteTier):
    """The remote tier on Redis (its names are part of the tests' view)."""

    @staticmethod
    def redis_key(key: str) -> str:
        from .redis_backend import redis_key

        return redis_key(key)


def _first_line(e: BaseException) -> str:
    """An exception's message without a client's multi-line debug dump."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---------------------------------------------------------------------------
# The process's tier
# ---------------------------------------------------------------------------

_tiers: dict[str, RemoteTier] = {}
_tiers_lock = threading.Lock()


def tier(remote_requested: bool) -> RemoteTier | None:
    """The remote tier to use now, or None."""
    url = configured_url(remote_requested)
    if url is None:
        return None
    try:
        signed = signing.enabled()
    except signing.SigningKeyError as e:
        if _once.first_time("remote-url:" + url):
            log.warning("torch_aotcache: remote cache %s not used: %s", redact(url), e)
        return None
    if not signed:
        if not config.trust_unsigned_remote:
            if _once.first_time("remote-unsigned-refused"):
                log.warning(
                    "torch_aotcache: remote cache %s is configured but no signing key is; "
                    "remote entries are not used. Configure TORCH_AOTCACHE_SIGNING_KEY(_FILE), "
                    "or set TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE=1 to trust unsigned remote data",
                    redact(url),
                )
            return None
        if _once.first_time("remote-unsigned-trusted"):
            log.warning(
                "torch_aotcache: trusting UNSIGNED entries from remote cache %s "
                "(TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE is set)",
                redact(url),
            )
    with _tiers_lock:
        t = _tiers.get(url)
        if t is None:
            try:
                t = open_tier(url)
            except Exception as e:  # noqa: BLE001 - e.g. a client missing, bad URL
                if _once.first_time("remote-url:" + url):
                    log.warning("torch_aotcache: cannot use remote cache %s: %s", redact(url), _first_line(e))
                return None
            _tiers[url] = t
        return t


def open_tier(url: str) -> RemoteTier:
    """A tier on the backend ``url`` names (raises where it cannot be made)."""
    b = create_backend(url)
    from .redis_backend import RedisBackend

    return RedisTier(b) if isinstance(b, RedisBackend) else RemoteTier(b)




def active_tiers() -> Iterator[RemoteTier]:
    with _tiers_lock:
        yield from list(_tiers.values())


def flush_all(timeout_s: float | None = None) -> bool:
    ok = True
    for t in active_tiers():
        ok = t.flush(config.remote_flush_timeout_s if timeout_s is None else timeout_s) and ok
    return ok


def reset() -> None:
    """Forget every tier (tests): flushes, closes connections."""
    flush_all(1.0)
    with _tiers_lock:
        for t in _tiers.values():
            t.close()
        _tiers.clear()
    with _ahead_lock:
        _ahead.clear()
    _once.reset("remote-")


@atexit.register
def _flush_at_exit() -> None:
    try:
        if not flush_all():
            log.warning("torch_aotcache: some remote cache writes were not flushed at exit")
    except Exception:  # noqa: BLE001 - never fail interpreter shutdown
        pass


# Note [The front door asks the remote tier first]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# A machine with an empty local store hits from the remote tier; if only the
# normal path asked it, every such hit would import Inductor's compiler first
# (Note [Front door] in inductor/front_door.py).  So the front door asks too
# (``ahead``), counting nothing.  Its answer is kept for a few seconds: when
# the front door gives way (a miss, an entry it cannot load), the normal
# path's lookup of the same key takes the kept answer instead of asking the
# store again (one request per lookup, one failure counted, one timeout paid)
# and counts the hit or miss then; a hit through the front door counts it
# with :func:`count_ahead_hit`.
_AHEAD_KEEP_S = 5.0
_ahead: dict[str, tuple[float, list[tuple[str, bytes]], int]] = {}
_ahead_lock = threading.Lock()


def remote_entries(key: str, remote_requested: bool, ahead: bool = False) -> list[tuple[str, bytes]]:
    if not ahead:
        with _ahead_lock:
            kept = _ahead.pop(key, None)
        if kept is not None and time.monotonic() - kept[0] < _AHEAD_KEEP_S:
            count_answer(kept[1], kept[2])
            return kept[1]
    t = tier(remote_requested)
    if t is None:
        return []
    if not ahead:
        return t.get(key)
    got, raw = t.read_quietly(key)
    with _ahead_lock:
        _ahead[key] = (time.monotonic(), got, raw)
    return got


def count_answer(entries: list[tuple[str, bytes]], raw_bytes: int) -> None:
    count("remote_hit" if entries else "remote_miss")
    if raw_bytes:
        count("remote_bytes_read", raw_bytes)


def count_ahead_hit(key: str) -> None:
    """The front door loaded an entry it read ahead: count it as the normal path would."""
    with _ahead_lock:
        kept = _ahead.pop(key, None)
    if kept is not None:
        count_answer(kept[1], kept[2])
