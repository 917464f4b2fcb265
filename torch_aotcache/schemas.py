"""
The data a torch_aotcache entry holds.

Upstream's ``schemas.py`` holds the metadata AOTAutograd carries between its
stages; ours holds the metadata an *entry* carries between processes: its
header (:class:`EntryHeader`), and what verification hands the hit path
(:class:`VerifiedEntry`).  The payload is one of AOTAutograd's own result
classes (``AOTAutogradResult`` / ``BundledAOTAutogradResult``), pickled;
everything a reader needs in order to decide whether to trust that pickle sits
in front of it, in the header, which is parsed without unpickling anything.
How an entry is laid out in bytes, and how it is checked, is
``entry/framing.py`` (Note [Entry layout]).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
from collections.abc import Sequence
from typing import Any


FORMAT_VERSION = 2
MAGIC = b"TORCH-AOTCACHE" + bytes([0, FORMAT_VERSION])
assert len(MAGIC) == 16
# The header's length, after MAGIC (Note [Entry layout] in entry/framing.py).
HEADER_LENGTH = struct.Struct(">I")


class EntryFormatError(Exception):
    """An entry that cannot be trusted: it is a miss, and is never unpickled."""


class EntrySignatureError(EntryFormatError):
    """An entry without a valid signature while signing is on (Note [Signed entries])."""


# The modes of an entry (``EntryHeader.mode``).
MODE_BUNDLED = "bundled"
MODE_FXGRAPHCACHE = "fxgraphcache"
MODE_FRAME = "dynamo-frame"
ENTRY_MODES = (MODE_BUNDLED, MODE_FXGRAPHCACHE, MODE_FRAME)

# The fields of a header's ``extra``: the only names written or read there
# (test/test_owners.py checks every use in the package against this table).
EXTRA_UPSTREAM_MODE = "upstream_mode"  # the mode upstream's cache would have stored; see
# Note [Entries that stand for Inductor's FX graph cache] in autograd_cache.py
EXTRA_EXPLAIN = "explain"  # facts for explain (Note [Explaining misses] in store/explain.py)
# A Dynamo frame's (dynamo/frames.py):
EXTRA_FUNCTION = "function"  # the compiled function, module and qualified name
EXTRA_REPLACEMENTS = "replacements"  # replaced identity guards, by guard-set digest
EXTRA_GLOBALS = "globals"  # per-process globals the bytecode reads, named by reference
EXTRA_CODES = "codes"  # counts: code objects, guarded codes, codes not packaged
EXTRA_GUARDED_CODES = "guarded_codes"
EXTRA_NOT_PACKAGED_CODES = "not_packaged_codes"
EXTRA_OPS = "ops"  # Note [Registered operators in stored frames] in dynamo/frames.py
EXTRA_CONFIGS = "configs"  # per guard set: Note [Configs of a compile] in dynamo/frames.py
EXTRA_FIELDS = frozenset({
    EXTRA_UPSTREAM_MODE, EXTRA_EXPLAIN, EXTRA_FUNCTION, EXTRA_REPLACEMENTS, EXTRA_GLOBALS,
    EXTRA_CODES, EXTRA_GUARDED_CODES, EXTRA_NOT_PACKAGED_CODES, EXTRA_OPS, EXTRA_CONFIGS,
})


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
    # MODE_BUNDLED (compiled code inside the payload), MODE_FXGRAPHCACHE
    # (payload refers to Inductor's FX graph cache by key) or MODE_FRAME (a
    # Dynamo frame package, dynamo/frames.py).
    mode: str
    # Per-component digests of the key, for ``explain``.
    components: dict[str, str]
    # Optional facts, by the names in EXTRA_FIELDS (the only keys written or read).
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


@dataclasses.dataclass(frozen=True)
class VerifiedEntry:
    """An entry that passed every check of ``framing.verify_entry``: the only
    form in which an entry reaches its guards, the unpickler and the hit path.

    ``data`` is the entry as read (a remote hit writes it to the local store
    unchanged); ``body`` views the payload and the compiled kernels after it,
    whose sizes and checksums the header lists."""

    header: EntryHeader
    data: bytes
    body: memoryview

    @property
    def payload(self) -> memoryview:
        return self.body[: self.header.payload_size]

    def kernels(self) -> dict[str, memoryview]:
        """Source digest -> bytes of each compiled kernel carried after the payload."""
        found = {}
        offset = self.header.payload_size
        for item in self.header.artifacts:
            found[item["digest"]] = self.body[offset : offset + item["size"]]
            offset += item["size"]
        return found
