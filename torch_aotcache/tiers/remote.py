"""
The remote tier: entries shared through Redis across machines.

Note [Remote tier]
~~~~~~~~~~~~~~~~~~
A local miss asks Redis.  A remote entry is the local entry's bytes (same
header, same checksum and signature), compressed with zstd; a remote hit is
verified exactly like a local one, written to the local store, then loaded.
Entries written while the remote tier is on are *bundled* (the compiled code
is inside the entry), so a machine with an empty cache dir can load one
without compiling.

Layout: one Redis hash per key, ``torch_aotcache:v<format>:<tag>:<key>``,
field = entry id (one per guard), value = ``TACZ`` + zstd(entry).  Namespacing
by format version and cache key tag keeps incompatible writers apart.

Nothing the remote does may hurt a compile:

* every operation has a timeout (reads 50 ms by default);
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
from collections.abc import Iterator
import torch

from .. import _once, config, schemas
from ..entry import signing
from ..counters import count


log = logging.getLogger(__name__)

COMPRESSED_MAGIC = b"TACZ"


def configured_url(remote_requested: bool) -> str | None:
    """The Redis URL to use, or None when the remote tier is off."""
    if torch.compiler.config.force_disable_caches:
        return None
    flag = torch._functorch.config.enable_remote_autograd_cache
    if flag is False:
        return None
    url = config.redis_url or os.environ.get("TORCHINDUCTOR_REDIS_URL")
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


class RedisTier:
    """One Redis server (or cluster endpoint) holding entries."""

    def __init__(self, url: str) -> None:
        import redis
        import zstandard

        self.url = url
        self._zstd_c = zstandard.ZstdCompressor(level=3)
        self._zstd_d = zstandard.ZstdDecompressor()
        self._read = redis.Redis.from_url(
            url,
            socket_timeout=config.remote_read_timeout_s,
            socket_connect_timeout=config.remote_read_timeout_s,
            retry_on_timeout=False,
        )
        self._write = redis.Redis.from_url(
            url,
            socket_timeout=config.remote_write_timeout_s,
            socket_connect_timeout=config.remote_write_timeout_s,
            retry_on_timeout=False,
        )
        self.breaker = CircuitBreaker(config.remote_failure_threshold, config.remote_cooldown_s)
        self._queue: queue.Queue[tuple[str, str, bytes] | None] = queue.Queue(
            maxsize=config.remote_queue_size
        )
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    # -- naming -------------------------------------------------------------

    @staticmethod
    def redis_key(key: str) -> str:
        tag = torch.compiler.config.cache_key_tag or "-"
        return f"torch_aotcache:v{schemas.FORMAT_VERSION}:{tag}:{key}"

    # -- failures -----------------------------------------------------------

    def _failed(self, op: str, e: BaseException) -> None:
        import redis

        timeout = isinstance(e, (redis.exceptions.TimeoutError, TimeoutError))
        count("remote_timeout" if timeout else "remote_error")
        opened = self.breaker.failure()
        if _once.first_time(f"remote-failed:{self.url}:{op}:{type(e).__name__}"):
            log.warning("torch_aotcache: remote cache %s failed (%s): %s", op, self.url, e)
        if opened:
            log.warning(
                "torch_aotcache: remote cache %s unavailable; not asking it for %.0f s",
                self.url,
                self.breaker.cooldown_s,
            )

    # -- reads --------------------------------------------------------------

    def get(self, key: str) -> list[tuple[str, bytes]]:
        """(entry id, entry) pairs stored under ``key``, decompressed and
        unverified; [] on any failure."""
        if not self.breaker.allow():
            count("remote_skipped")
            return []
        try:
            values = self._read.hgetall(self.redis_key(key))
        except Exception as e:  # noqa: BLE001 - any failure is a miss
            self._failed("read", e)
            return []
        self.breaker.success()
        out = []
        if not isinstance(values, dict):
            count("remote_error")
            return []
        for field, value in values.items():
            if not isinstance(value, bytes) or not isinstance(field, bytes):
                count("remote_garbage")
                continue
            count("remote_bytes_read", len(value))
            data = self.decode(value)
            if data is None:
                count("remote_garbage")
                continue
            out.append((field.decode("ascii", "replace"), data))
        count("remote_hit" if out else "remote_miss")
        return out

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
            name = self.redis_key(key)
            pipe = self._write.pipeline(transaction=True)
            pipe.hset(name, entry_id, value)
            ttl = _ttl_seconds()
            if ttl:
                pipe.expire(name, ttl)
            pipe.execute()
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

    def close(self) -> None:
        for client in (self._read, self._write):
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


# ---------------------------------------------------------------------------
# The process's tier
# ---------------------------------------------------------------------------

_tiers: dict[str, RedisTier] = {}
_tiers_lock = threading.Lock()


def tier(remote_requested: bool) -> RedisTier | None:
    """The remote tier to use now, or None."""
    url = configured_url(remote_requested)
    if url is None:
        return None
    try:
        signed = signing.enabled()
    except signing.SigningKeyError as e:
        if _once.first_time("remote-url:" + url):
            log.warning("torch_aotcache: remote cache %s not used: %s", url, e)
        return None
    if not signed:
        if not config.trust_unsigned_remote:
            if _once.first_time("remote-unsigned-refused"):
                log.warning(
                    "torch_aotcache: remote cache %s is configured but no signing key is; "
                    "remote entries are not used. Configure TORCH_AOTCACHE_SIGNING_KEY(_FILE), "
                    "or set TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE=1 to trust unsigned remote data",
                    url,
                )
            return None
        if _once.first_time("remote-unsigned-trusted"):
            log.warning(
                "torch_aotcache: trusting UNSIGNED entries from remote cache %s "
                "(TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE is set)",
                url,
            )
    with _tiers_lock:
        t = _tiers.get(url)
        if t is None:
            try:
                t = RedisTier(url)
            except Exception as e:  # noqa: BLE001 - e.g. redis-py missing, bad URL
                if _once.first_time("remote-url:" + url):
                    log.warning("torch_aotcache: cannot use remote cache %s: %s", url, e)
                return None
            _tiers[url] = t
        return t




def active_tiers() -> Iterator[RedisTier]:
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
    _once.reset("remote-")


@atexit.register
def _flush_at_exit() -> None:
    try:
        if not flush_all():
            log.warning("torch_aotcache: some remote cache writes were not flushed at exit")
    except Exception:  # noqa: BLE001 - never fail interpreter shutdown
        pass


def remote_entries(key: str, remote_requested: bool) -> list[tuple[str, bytes]]:
    t = tier(remote_requested)
    return t.get(key) if t is not None else []

