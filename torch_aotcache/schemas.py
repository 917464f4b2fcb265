"""
The on-disk (and on-the-wire) form of a torch_aotcache entry.

Upstream's ``schemas.py`` holds the metadata AOTAutograd carries between its
stages; ours holds the metadata an *entry* carries between processes.  The
payload is one of AOTAutograd's own result classes
(``AOTAutogradResult`` / ``BundledAOTAutogradResult``), pickled; everything a
reader needs in order to decide whether to trust that pickle sits in front of
it, in a header that is parsed without unpickling anything.

Note [Entry layout]
~~~~~~~~~~~~~~~~~~~
An entry is::

    MAGIC (16 bytes) | header length (4 bytes, big endian) | header (JSON)
        | payload | artifact 0 | artifact 1 | ...

``MAGIC`` carries the format version.  The header is UTF-8 JSON with the
fields of :class:`EntryHeader`.  ``payload_size`` and ``payload_sha256``
describe the payload exactly; a reader checks both before ``pickle.loads``
ever sees a byte of it.  The artifacts are compiled kernels (shared
libraries) the payload's code loads, raw bytes, never unpickled: the header
lists each one's source digest, size and SHA-256, in order (Note
[Self-contained entries] in inductor/artifacts.py), and the signature covers that
list.  A file that fails any check (wrong magic, unknown format version,
another torch version, a header that does not parse, a size or checksum that
does not match) is a miss, never an error, and is never unpickled.  JSON
keeps the header readable by tools that do not import torch
(``python -m torch_aotcache ls``) and makes a corrupted header fail to parse
instead of executing anything.

Rejected: putting the header inside the pickle (a reader would have to
unpickle to learn whether to unpickle), and a fixed binary struct (each new
field would need a new format version).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO


FORMAT_VERSION = 2
MAGIC = b"TORCH-AOTCACHE" + bytes([0, FORMAT_VERSION])
assert len(MAGIC) == 16
_LEN = struct.Struct(">I")
# A header beyond this size is taken as corruption rather than read.
MAX_HEADER_BYTES = 1 << 20


class EntryFormatError(Exception):
    """An entry that cannot be trusted: it is a miss, and is never unpickled."""


class EntrySignatureError(EntryFormatError):
    """An entry without a valid signature while signing is on (Note [Signed entries])."""


@dataclasses.dataclass
class EntryHeader:
    """Everything known about an entry without unpickling its payload."""

    format_version: int
    key: str
    torch_version: str
    created_ns: int
    forward_cost_ns: int
    backward_cost_ns: int
    payload_size: int
    payload_sha256: str
    # ShapeEnv guard expression the entry is valid under ("" when unguarded).
    guards_expr: str
    # "bundled" (compiled code inside the payload) or "fxgraphcache" (payload
    # refers to Inductor's FX graph cache by key).
    mode: str
    # Per-component digests of the key, for ``explain``.
    components: dict[str, str]
    # Optional facts: "upstream_mode" is the layout upstream's cache would
    # have stored under the same settings ("fxgraphcache" or "bundled"); see
    # Note [Entries that stand for Inductor's FX graph cache] in autograd_cache.py.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Compiled kernels stored after the payload, in order: each a dict with
    # "digest" (of the source it was built from), "size" and "sha256".
    artifacts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # HMAC of the header (this field empty) and the id of the key that made
    # it; empty when unsigned.  See Note [Signed entries] in entry/signing.py.
    key_id: str = ""
    signature: str = ""

    @property
    def compile_cost_ns(self) -> int:
        return self.forward_cost_ns + self.backward_cost_ns

    @property
    def artifacts_size(self) -> int:
        return sum(a["size"] for a in self.artifacts)

    @property
    def entry_id(self) -> str:
        """Name of the entry under its key: one entry per key and guard."""
        return hashlib.sha256(self.guards_expr.encode()).hexdigest()[:24]

    def to_json(self) -> bytes:
        return json.dumps(
            dataclasses.asdict(self), sort_keys=True, separators=(",", ":")
        ).encode()

    def signing_message(self) -> bytes:
        return MAGIC + dataclasses.replace(self, signature="").to_json()

    @classmethod
    def from_json(cls, raw: bytes) -> EntryHeader:
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise EntryFormatError(f"header does not parse: {e}") from None
        if not isinstance(obj, dict):
            raise EntryFormatError("header is not an object")
        missing = _REQUIRED_FIELDS - obj.keys()
        if missing:
            raise EntryFormatError(f"header lacks {sorted(missing)}")
        header = cls(**{k: v for k, v in obj.items() if k in _FIELD_NAMES})
        _check_types(header)
        return header


# Computed once: reading 10,000 headers (``ls``, ``explain``, eviction) is
# dominated by per-header work.
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(EntryHeader))
_REQUIRED_FIELDS = frozenset(
    f.name
    for f in dataclasses.fields(EntryHeader)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)

_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "key": str,
    "torch_version": str,
    "created_ns": int,
    "forward_cost_ns": int,
    "backward_cost_ns": int,
    "payload_size": int,
    "payload_sha256": str,
    "guards_expr": str,
    "mode": str,
    "components": dict,
    "extra": dict,
    "artifacts": list,
    "key_id": str,
    "signature": str,
}


_HEX = re.compile(r"[0-9a-f]*")
_KEY = re.compile(r"[0-9A-Za-z_.-]+")


def _check_types(header: EntryHeader) -> None:
    for name, typ in _FIELD_TYPES.items():
        value = getattr(header, name)
        if not isinstance(value, typ) or isinstance(value, bool) and typ is int:
            raise EntryFormatError(f"header field {name} has type {type(value)}")
    # Digests are compared with hmac.compare_digest and keys name folders:
    # anything but their expected alphabet is corruption.
    for name in ("payload_sha256", "signature", "key_id"):
        if not _HEX.fullmatch(getattr(header, name)):
            raise EntryFormatError(f"header field {name} is not hexadecimal")
    if len(header.payload_sha256) != 64:
        raise EntryFormatError("header field payload_sha256 has the wrong length")
    if not _KEY.fullmatch(header.key):
        raise EntryFormatError("header field key has unexpected characters")
    try:
        header.guards_expr.encode("utf-8")
    except UnicodeError:
        raise EntryFormatError("header field guards_expr is not valid text") from None
    for item in header.artifacts:
        if not isinstance(item, dict) or set(item) != {"digest", "size", "sha256"}:
            raise EntryFormatError("header field artifacts has a malformed item")
        size = item["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise EntryFormatError("an artifact has an invalid size")
        for name in ("digest", "sha256"):
            if not isinstance(item[name], str) or len(item[name]) != 64 or not _HEX.fullmatch(item[name]):
                raise EntryFormatError(f"an artifact's {name} is not a SHA-256")


def payload_digest(payload: bytes | memoryview) -> str:
    return hashlib.sha256(payload).hexdigest()


def encode_entry(header: EntryHeader, payload: bytes, artifacts: Sequence[bytes] = ()) -> bytes:
    """Serialize an entry, signed when a signing key is configured.

    ``header``'s sizes and checksums must describe ``payload`` and
    ``artifacts`` (see :func:`make_header`).
    """
    from .entry import signing

    signer, _ = signing.keys()
    if signer is not None:
        header = dataclasses.replace(header, key_id=signing.key_id(signer), signature="")
        header = dataclasses.replace(header, signature=signing.sign(header.signing_message(), signer))
    raw = header.to_json()
    return b"".join((MAGIC, _LEN.pack(len(raw)), raw, payload, *artifacts))


def make_header(
    *,
    key: str,
    payload: bytes,
    torch_version: str,
    created_ns: int,
    forward_cost_ns: int,
    backward_cost_ns: int,
    guards_expr: str | None,
    mode: str,
    components: dict[str, str],
    extra: dict[str, Any] | None = None,
    artifacts: Sequence[tuple[str, bytes]] = (),
) -> EntryHeader:
    """The header of ``payload`` followed by ``artifacts``, (source digest, bytes) pairs."""
    return EntryHeader(
        format_version=FORMAT_VERSION,
        key=key,
        torch_version=torch_version,
        created_ns=int(created_ns),
        forward_cost_ns=int(forward_cost_ns),
        backward_cost_ns=int(backward_cost_ns),
        payload_size=len(payload),
        payload_sha256=payload_digest(payload),
        guards_expr=guards_expr or "",
        mode=mode,
        components=dict(components),
        extra=dict(extra or {}),
        artifacts=[
            {"digest": d, "size": len(b), "sha256": payload_digest(b)} for d, b in artifacts
        ],
    )


def decode_header(data: bytes) -> tuple[EntryHeader, memoryview]:
    """Parse an entry's header; returns it with a view of the (unverified)
    payload and artifacts (the payload is the first ``payload_size`` bytes).

    Raises :class:`EntryFormatError` for anything that is not a well-formed
    entry of this format version.  Never unpickles.
    """
    if len(data) < len(MAGIC) + _LEN.size:
        raise EntryFormatError(f"entry is truncated ({len(data)} bytes)")
    if data[: len(MAGIC) - 1] != MAGIC[:-1]:
        raise EntryFormatError("not a torch_aotcache entry")
    if data[len(MAGIC) - 1] != FORMAT_VERSION:
        raise EntryFormatError(
            f"entry has format version {data[len(MAGIC) - 1]}, expected {FORMAT_VERSION}"
        )
    (hlen,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if hlen > MAX_HEADER_BYTES or start + hlen > len(data):
        raise EntryFormatError("header length is out of range")
    header = EntryHeader.from_json(bytes(data[start : start + hlen]))
    if header.format_version != FORMAT_VERSION:
        raise EntryFormatError(f"header has format version {header.format_version}")
    payload = memoryview(data)[start + hlen :]
    return header, payload


def entry_body(data: bytes) -> memoryview:
    """The payload and artifacts of an entry whose header was already
    decoded (the header is skipped, not parsed again)."""
    (hlen,) = _LEN.unpack_from(data, len(MAGIC))
    return memoryview(data)[len(MAGIC) + _LEN.size + hlen :]


def verify_entry(
    data: bytes, *, key: str | None, torch_version: str
) -> tuple[EntryHeader, memoryview]:
    """Parse and fully verify an entry (format, key, torch version, size,
    checksum, and signature when signing is on); only then may its guards be
    evaluated and its payload unpickled."""
    header, payload = decode_header(data)
    if key is not None and header.key != key:
        raise EntryFormatError(f"entry is for key {header.key}, not {key}")
    if header.torch_version != torch_version:
        raise EntryFormatError(
            f"entry was written by torch {header.torch_version}, this is {torch_version}"
        )
    body = payload
    expected = header.payload_size + header.artifacts_size
    if len(body) != expected:
        raise EntryFormatError(f"entry body has {len(body)} bytes, header says {expected}")
    payload = body[: header.payload_size]
    if not hmac.compare_digest(payload_digest(payload), header.payload_sha256):
        raise EntryFormatError("payload checksum does not match")
    for item, blob in _artifact_views(header, body):
        if not hmac.compare_digest(payload_digest(blob), item["sha256"]):
            raise EntryFormatError(f"artifact {item['digest'][:16]} checksum does not match")
    check_signature(header)
    return header, payload


def _artifact_views(header: EntryHeader, body: memoryview) -> Iterator[tuple[dict[str, Any], memoryview]]:
    offset = header.payload_size
    for item in header.artifacts:
        yield item, body[offset : offset + item["size"]]
        offset += item["size"]


def split_artifacts(header: EntryHeader, body: memoryview) -> dict[str, memoryview]:
    """Source digest -> bytes of each artifact, from the ``body`` :func:`decode_header`
    returned for an entry :func:`verify_entry` accepted."""
    return {item["digest"]: blob for item, blob in _artifact_views(header, body)}


def check_signature(header: EntryHeader) -> None:
    """Raise EntrySignatureError unless signing is off or ``header`` is validly signed."""
    from .entry import signing

    if not signing.enabled():
        return
    if not header.signature:
        raise EntrySignatureError("entry is not signed")
    if not signing.verify(header.signing_message(), header.signature, header.key_id):
        raise EntrySignatureError(f"entry signature does not verify (key id {header.key_id or '?'})")


# ``read_header`` reads this much first (headers are a few KiB), then the
# rest of the header if its length says it is longer.
_HEADER_READ_BYTES = 8 * 1024


def open_without_atime(path: str) -> BinaryIO:
    """``open(path, "rb")`` that leaves the file's access time alone where the
    system allows it (``O_NOATIME``: Linux, files we own).  An entry's access
    time records its last hit (Note [Bounded store] in store/housekeeping.py), which
    tools and housekeeping reading headers must not fake."""
    noatime = getattr(os, "O_NOATIME", 0)
    if noatime:
        try:
            return os.fdopen(os.open(path, os.O_RDONLY | noatime | getattr(os, "O_CLOEXEC", 0)), "rb")
        except PermissionError:  # not the file's owner: O_NOATIME is refused
            pass
    return open(path, "rb")


def read_header(path: str) -> EntryHeader:
    """The header of the entry file at ``path``, reading little more than the header.

    Nothing is verified beyond the header's own form (for tools and
    housekeeping, never for using an entry).  Raises ``OSError`` or
    :class:`EntryFormatError`.
    """
    with open_without_atime(path) as f:
        data = f.read(_HEADER_READ_BYTES)
        start = len(MAGIC) + _LEN.size
        if len(data) >= start and data[: len(MAGIC) - 1] == MAGIC[:-1]:
            (hlen,) = _LEN.unpack_from(data, len(MAGIC))
            if start + hlen > len(data) and hlen <= MAX_HEADER_BYTES:
                data += f.read(start + hlen - len(data))
    header, _ = decode_header(data)
    return header


def load_payload(payload: memoryview | bytes) -> Any:
    """Unpickle a payload.  Only call on a payload :func:`verify_entry` accepted.
    (See Note [Light runtime imports] in inductor/light_runtime.py for the stand-ins.)"""
    from .inductor import light_runtime

    return light_runtime.loads(payload)
