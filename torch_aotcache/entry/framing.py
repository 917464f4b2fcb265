"""
An entry as bytes: writing one, and checking one before anything in it is used.

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
import hmac
import os
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from ..schemas import (
    EntryFormatError,
    EntryHeader,
    EntrySignatureError,
    FORMAT_VERSION,
    HEADER_LENGTH as _LEN,
    MAGIC,
    payload_digest,
    VerifiedEntry,
)
from . import signing


# A header beyond this size is taken as corruption rather than read.
MAX_HEADER_BYTES = 1 << 20


def encode_entry(header: EntryHeader, payload: bytes, artifacts: Sequence[bytes] = ()) -> bytes:
    """Serialize an entry, signed when a signing key is configured.

    ``header``'s sizes and checksums must describe ``payload`` and
    ``artifacts`` (see ``schemas.make_header``).
    """
    signer, _ = signing.keys()
    if signer is not None:
        header = dataclasses.replace(header, key_id=signing.key_id(signer), signature="")
        header = dataclasses.replace(header, signature=signing.sign(header.signing_message(), signer))
    raw = header.to_json()
    return b"".join((MAGIC, _LEN.pack(len(raw)), raw, payload, *artifacts))


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


def verify_entry(data: bytes, *, key: str | None, torch_version: str) -> VerifiedEntry:
    """Parse and fully verify an entry (format, key, torch version, size,
    checksum, and signature when signing is on); only what this returns may
    have its guards evaluated and its payload unpickled."""
    header, body = decode_header(data)
    if key is not None and header.key != key:
        raise EntryFormatError(f"entry is for key {header.key}, not {key}")
    if header.torch_version != torch_version:
        raise EntryFormatError(
            f"entry was written by torch {header.torch_version}, this is {torch_version}"
        )
    expected = header.payload_size + header.artifacts_size
    if len(body) != expected:
        raise EntryFormatError(f"entry body has {len(body)} bytes, header says {expected}")
    if not hmac.compare_digest(payload_digest(body[: header.payload_size]), header.payload_sha256):
        raise EntryFormatError("payload checksum does not match")
    for item, blob in _artifact_views(header, body):
        if not hmac.compare_digest(payload_digest(blob), item["sha256"]):
            raise EntryFormatError(f"artifact {item['digest'][:16]} checksum does not match")
    check_signature(header)
    return VerifiedEntry(header, data, body)


def _artifact_views(header: EntryHeader, body: memoryview) -> Iterator[tuple[dict[str, Any], memoryview]]:
    offset = header.payload_size
    for item in header.artifacts:
        yield item, body[offset : offset + item["size"]]
        offset += item["size"]


def check_signature(header: EntryHeader) -> None:
    """Raise EntrySignatureError unless signing is off or ``header`` is validly signed."""
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
