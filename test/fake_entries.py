"""
Synthetic entries for tests of the store's housekeeping and command line:
well-formed, verifiable entries (header, checksums, optional padding as the
payload) written through the store's own API, without torch or a compile.
"""

from __future__ import annotations

import hashlib
import os
import time

from torch_aotcache.store import layout
from torch_aotcache import schemas
from torch_aotcache.entry import framing


def fake_key(name: str) -> str:
    return "tac" + hashlib.sha256(name.encode()).hexdigest()[:40]


def fake_entry(
    name: str,
    *,
    size: int = 0,
    cost_ns: int = 1_000_000_000,
    components: dict[str, str] | None = None,
    torch_version: str | None = None,
    created_ns: int | None = None,
) -> tuple[str, str, bytes]:
    """(key, entry id, bytes) of an entry named ``name`` whose payload is
    ``size`` bytes of padding (never unpickled by these tests)."""
    key = fake_key(name)
    payload = hashlib.sha256(name.encode()).digest() * (size // 32 + 1)
    payload = payload[:size]
    header = schemas.make_header(
        key=key,
        payload=payload,
        torch_version=torch_version or layout.torch_version() or "?",
        created_ns=created_ns if created_ns is not None else time.time_ns(),
        forward_cost_ns=cost_ns // 2,
        backward_cost_ns=cost_ns - cost_ns // 2,
        guards_expr=None,
        mode="bundled",
        components=components or {"graph": name},
    )
    return key, header.entry_id, framing.encode_entry(header, payload)


def write_fake_entry(name: str, **kw: object) -> str:
    """Write through ``LocalStore.put`` (eviction included); returns the path."""
    from torch_aotcache.store.local import LocalStore

    key, entry_id, data = fake_entry(name, **kw)  # type: ignore[arg-type]
    return LocalStore().put(key, entry_id, data)


def write_many_raw(root: str, n: int, size: int = 0) -> None:
    """``n`` entries written straight into the layout (no eviction; fast)."""
    for i in range(n):
        key, entry_id, data = fake_entry(f"bulk-{i}", size=size)
        folder = os.path.join(root, "entries", key[3:5], key)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, entry_id + layout.ENTRY_SUFFIX), "wb") as f:
            f.write(data)
