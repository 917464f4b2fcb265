"""
An object store (S3 and its API's other servers, GCS, Azure, a shared folder)
as a remote backend; see Note [Remote backends] in tiers/backend.py.

Note [Object-store layout and leases]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
``TORCH_AOTCACHE_REMOTE_URL=s3://bucket/prefix`` (or ``gs://``, ``az://``,
``file:///shared/dir``) names the store; the client is obstore (the Rust
``object_store`` crate), imported only when the tier is used.  Credentials,
region and endpoint come from each cloud's own environment (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_ENDPOINT_URL`` for MinIO, R2 or a local server,
``AWS_ALLOW_HTTP=true`` for a plain-HTTP endpoint); nothing of them is logged.

Objects, under the URL's prefix:

* ``torch_aotcache/<namespace>/entries/<key>/<entry id>``: one entry (the
  tier's encoded bytes), written whole by a single PUT, so a reader sees the
  old object, the new one or none, never half of one;
* ``torch_aotcache/<namespace>/leases/<key>``: a key's single-flight lease,
  JSON ``{"token", "expires"}`` (wall-clock seconds).

A lease is taken by a conditional create (``If-None-Match: *``): of several
machines exactly one succeeds.  The holder rewrites it every third of its
lifetime with a later expiry, conditional on the version it wrote last
(``If-Match`` on the ETag), so it notices when it lost the lease.  A waiter
that finds the lease past its expiry (its holder died) takes it over with the
same conditional rewrite of the version it read: of several waiters one
succeeds.  Stores without conditional rewrites (a local folder) take over by
deleting and creating again, which two waiters can both win in a narrow race:
then two machines compile the same graph, which costs time, never a wrong
result.  Release deletes the lease after reading it back, only while it still
holds the releasing token.  Expiry compares wall clocks of different
machines: they must agree to well within ``single_flight_remote_ttl_s``.

Reads list the key's folder and fetch each object (a key holds one entry per
guard set, usually one): two requests for a hit, one for a miss.  Every
request has the read or write timeout of the settings and no retries (the
tier's circuit breaker decides when to ask again).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

from .. import config
from .backend import namespace, RemoteBackend, RemoteObject


def _timeout(seconds: float) -> str:
    return f"{max(1, int(seconds * 1000))}ms"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class ObjectStoreBackend(RemoteBackend):
    """Entries and leases as objects; see Note [Object-store layout and leases]."""

    def __init__(self, url: str) -> None:
        import os

        import obstore
        import obstore.exceptions
        import obstore.store

        from_url: Any = obstore.store.from_url

        self.url = url
        self._obs = obstore
        self._errors = obstore.exceptions
        kwargs: dict[str, Any] = {}
        if url.lower().startswith("file://"):
            path = url[len("file://"):]
            os.makedirs(path, exist_ok=True)
        else:
            allow_http = _truthy(os.environ.get("AWS_ALLOW_HTTP")) or _truthy(os.environ.get("ALLOW_HTTP"))
            retry = {
                "max_retries": 0,
                "backoff": {
                    "init_backoff": datetime.timedelta(milliseconds=10),
                    "max_backoff": datetime.timedelta(milliseconds=10),
                    "base": 2,
                },
                "retry_timeout": datetime.timedelta(seconds=config.remote_object_write_timeout_s),
            }

            def client(timeout_s: float) -> dict[str, Any]:
                return {"timeout": _timeout(timeout_s), "connect_timeout": _timeout(timeout_s),
                        "allow_http": allow_http}

            kwargs = {"retry_config": retry}
            self._read_store = from_url(url, client_options=client(config.remote_object_read_timeout_s), **kwargs)
            self._write_store = from_url(url, client_options=client(config.remote_object_write_timeout_s), **kwargs)
            return
        self._read_store = self._write_store = from_url(url)

    # -- names ----------------------------------------------------------------

    @staticmethod
    def _root() -> str:
        return "torch_aotcache/" + namespace().replace(":", "/")

    def _entries(self, key: str) -> str:
        return f"{self._root()}/entries/{key}/"

    def _lease(self, key: str) -> str:
        return f"{self._root()}/leases/{key}"

    # -- entries --------------------------------------------------------------

    def read(self, key: str) -> dict[str, bytes]:
        prefix = self._entries(key)
        out = {}
        for meta in self._obs.list(self._read_store, prefix=prefix).collect():
            path = meta["path"]
            try:
                data = bytes(self._obs.get(self._read_store, path).bytes())
            except FileNotFoundError:
                continue  # deleted since the listing (a prune)
            out[path.rsplit("/", 1)[-1]] = data
        return out

    def write(self, key: str, entry_id: str, value: bytes, ttl_s: int) -> None:
        # An object store has no per-object expiry to set here: ``prune``
        # (or the bucket's lifecycle rules) removes old entries.
        self._obs.put(self._write_store, self._entries(key) + entry_id, value)

    def delete(self, key: str, entry_id: str) -> None:
        self._obs.delete(self._write_store, self._entries(key) + entry_id)

    def scan(self) -> Iterator[RemoteObject]:
        root = self._root() + "/entries/"
        for batch in self._obs.list(self._write_store, prefix=root):
            for meta in batch:
                rest = meta["path"][len(root):]
                if "/" not in rest:
                    continue
                key, entry_id = rest.split("/", 1)
                modified = meta.get("last_modified")
                yield RemoteObject(key, entry_id, int(meta.get("size", 0)),
                                   modified.timestamp() if modified is not None else None)

    # -- leases ---------------------------------------------------------------

    def _lease_body(self, token: str, ttl_s: float) -> bytes:
        return json.dumps({"token": token, "expires": time.time() + ttl_s}).encode()

    def _read_lease(self, key: str) -> tuple[dict[str, Any], str | None] | None:
        try:
            got = self._obs.get(self._write_store, self._lease(key))
        except FileNotFoundError:
            return None
        data = bytes(got.bytes())
        try:
            body = json.loads(data)
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            body = {}  # unreadable: treated as expired
        return body, got.meta.get("e_tag")

    def create_lease(self, key: str, token: str, ttl_s: float) -> bool:
        path = self._lease(key)
        try:
            self._obs.put(self._write_store, path, self._lease_body(token, ttl_s), mode="create")
            return True
        except self._errors.AlreadyExistsError:
            pass
        found = self._read_lease(key)
        if found is None:
            return False  # released just now: the next poll creates it
        body, etag = found
        expires = body.get("expires")
        if isinstance(expires, (int, float)) and expires > time.time():
            return False
        # Its holder stopped refreshing it: take it over.
        try:
            if etag is None:
                raise NotImplementedError
            self._obs.put(self._write_store, path, self._lease_body(token, ttl_s), mode={"e_tag": etag})
            return True
        except self._errors.PreconditionError:
            return False  # another waiter took it over first
        except (NotImplementedError, self._errors.NotSupportedError):
            pass
        self._obs.delete(self._write_store, path)
        try:
            self._obs.put(self._write_store, path, self._lease_body(token, ttl_s), mode="create")
            return True
        except self._errors.AlreadyExistsError:
            return False

    def refresh_lease(self, key: str, token: str, ttl_s: float) -> bool:
        found = self._read_lease(key)
        if found is None or found[0].get("token") != token:
            return False
        path = self._lease(key)
        etag = found[1]
        try:
            if etag is None:
                raise NotImplementedError
            self._obs.put(self._write_store, path, self._lease_body(token, ttl_s), mode={"e_tag": etag})
        except self._errors.PreconditionError:
            return False
        except (NotImplementedError, self._errors.NotSupportedError):
            self._obs.put(self._write_store, path, self._lease_body(token, ttl_s))
        return True

    def release_lease(self, key: str, token: str) -> None:
        found = self._read_lease(key)
        if found is not None and found[0].get("token") == token:
            self._obs.delete(self._write_store, self._lease(key))

    def is_timeout(self, exc: BaseException) -> bool:
        # obstore raises its GenericError for a timeout; the client's error
        # chain in the message names it (``kind: Timeout``, ``TimedOut``).
        text = str(exc)
        return isinstance(exc, TimeoutError) or "kind: Timeout" in text or "TimedOut" in text
