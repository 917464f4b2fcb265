"""
The remote-tier interface: what a store shared by many machines provides.

Note [Remote backends]
~~~~~~~~~~~~~~~~~~~~~~
The remote tier (Note [Remote tier] in tiers/remote.py) is one class that
does what is the same for every store: the circuit breaker, compression, the
background write queue, read-only mode, counters, the trust rules (signed
entries only, unless trusted explicitly) and, for single flight, the lease
heartbeat.  A backend only stores bytes:

* ``read(key)``: the values stored under a cache key, by entry id;
* ``write(key, entry_id, value, ttl_s)``: store one, replacing that entry id;
* ``delete(key, entry_id)`` and ``scan()``: for the command line (listing,
  pruning, export);
* ``create_lease(key, token, ttl_s)``: an atomic create of the key's lease,
  true when this caller now holds it (a lease past its expiry may be taken
  over); ``refresh_lease`` extends it while its holder compiles (false when
  the token no longer holds it); ``release_lease`` gives it up, never
  deleting a lease another token holds;
* ``is_timeout(exc)``: whether a failure was a timeout (counted apart).

Any method may raise; the tier turns every failure into a miss, a skipped
write or a compile without coordination, and counts it.  Values are opaque
to a backend: ``TACZ`` + zstd of an entry that is verified (and its
signature checked) after it is read, so a backend never needs to be trusted
with anything but availability.  Names are namespaced by entry format version
and ``cache_key_tag`` (``namespace()``), so incompatible writers never meet.

A backend is chosen by the URL's scheme (``TORCH_AOTCACHE_REMOTE_URL``):
``redis://``, ``rediss://`` and ``unix://`` are Redis (tiers/redis_backend.py),
``s3://``, ``gs://``, ``az://``, ``abfs://`` and ``file://`` the object store
(tiers/object_store.py).  A user adds a scheme with ``register_backend``,
or with an entry point in the group ``torch_aotcache.remote_backends`` whose
name is the scheme and whose value is a factory taking the URL (both in
tiers/remote.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .. import schemas


log = logging.getLogger(__name__)

def namespace() -> str:
    """The part of every remote name that keeps incompatible writers apart."""
    tag = torch.compiler.config.cache_key_tag or "-"
    return f"v{schemas.FORMAT_VERSION}:{tag}"


@dataclass(frozen=True)
class RemoteObject:
    """One stored entry, as the command line lists it."""

    key: str
    entry_id: str
    size: int
    # Seconds since the epoch; None where the store does not say.
    modified: float | None


class RemoteBackend:
    """The storage a remote tier needs; see Note [Remote backends]."""

    url: str = ""

    def read(self, key: str) -> dict[str, Any]:
        """Entry id -> stored value (bytes; anything else is counted as garbage)."""
        raise NotImplementedError

    def write(self, key: str, entry_id: str, value: bytes, ttl_s: int) -> None:
        raise NotImplementedError

    def delete(self, key: str, entry_id: str) -> None:
        raise NotImplementedError

    def scan(self) -> Iterator[RemoteObject]:
        raise NotImplementedError

    def create_lease(self, key: str, token: str, ttl_s: float) -> bool:
        raise NotImplementedError

    def refresh_lease(self, key: str, token: str, ttl_s: float) -> bool:
        raise NotImplementedError

    def release_lease(self, key: str, token: str) -> None:
        raise NotImplementedError

    def is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, TimeoutError)

    def close(self) -> None:
        pass


def redact(url: str) -> str:
    """``url`` without a password or user name, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}://{netloc}{slash}{path}"
