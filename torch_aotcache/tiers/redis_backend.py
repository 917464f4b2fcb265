"""
Redis as a remote backend (Note [Remote backends] in tiers/backend.py).

Layout: one Redis hash per cache key, ``torch_aotcache:<namespace>:<key>``,
field = entry id, value = the tier's encoded entry; an expiry on the hash when
``remote_ttl_s`` is set.  A lease is the string
``torch_aotcache:lock:`` + the hash's name, set with ``NX`` and an expiry,
holding its holder's token; Redis expires it, and scripts refresh and delete
it only for the token that holds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import config
from .backend import namespace, RemoteBackend, RemoteObject


_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
_REFRESH_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


def redis_key(key: str) -> str:
    return f"torch_aotcache:{namespace()}:{key}"


def lock_name(key: str) -> str:
    return "torch_aotcache:lock:" + redis_key(key)


class RedisBackend(RemoteBackend):
    """One Redis server (or cluster endpoint)."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
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

    def read(self, key: str) -> dict[str, Any]:
        # Values are passed on as they came: the tier counts one that is not
        # bytes as garbage.
        values = self._read.hgetall(redis_key(key))
        if not isinstance(values, dict):
            raise TypeError(f"HGETALL answered {type(values).__name__}")
        return {
            (f.decode("ascii", "replace") if isinstance(f, bytes) else f): v for f, v in values.items()
        }

    def write(self, key: str, entry_id: str, value: bytes, ttl_s: int) -> None:
        name = redis_key(key)
        pipe = self._write.pipeline(transaction=True)
        pipe.hset(name, entry_id, value)
        if ttl_s:
            pipe.expire(name, ttl_s)
        pipe.execute()

    def delete(self, key: str, entry_id: str) -> None:
        self._write.hdel(redis_key(key), entry_id)

    def scan(self) -> Iterator[RemoteObject]:
        prefix = f"torch_aotcache:{namespace()}:"
        for name in self._write.scan_iter(match=prefix + "*", count=500):
            name = name.decode() if isinstance(name, bytes) else name
            key = name[len(prefix):]
            for field in self._write.hkeys(name):
                size = self._write.hstrlen(name, field)
                entry_id = field.decode("ascii", "replace") if isinstance(field, bytes) else field
                yield RemoteObject(key, entry_id, int(size), None)

    def create_lease(self, key: str, token: str, ttl_s: float) -> bool:
        return bool(self._write.set(lock_name(key), token, nx=True, px=max(1, int(ttl_s * 1000))))

    def refresh_lease(self, key: str, token: str, ttl_s: float) -> bool:
        return bool(self._write.eval(_REFRESH_SCRIPT, 1, lock_name(key), token, max(1, int(ttl_s * 1000))))

    def release_lease(self, key: str, token: str) -> None:
        self._write.eval(_RELEASE_SCRIPT, 1, lock_name(key), token)

    def is_timeout(self, exc: BaseException) -> bool:
        import redis

        return isinstance(exc, (redis.exceptions.TimeoutError, TimeoutError))

    def close(self) -> None:
        for client in (self._read, self._write):
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    @property
    def client(self) -> Any:
        return self._write
