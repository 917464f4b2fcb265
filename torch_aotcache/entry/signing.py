"""
Signed entries.

Note [Signed entries]
~~~~~~~~~~~~~~~~~~~~~
Without a key, an entry is checked for integrity (its payload against the
SHA-256 in its header) and trusted as upstream trusts its cache directory: a
writer who can put files there can make a process load code.  With a key
(``TORCH_AOTCACHE_SIGNING_KEY`` or ``TORCH_AOTCACHE_SIGNING_KEY_FILE``), every
entry written carries ``HMAC-SHA256(key, header)``, computed over the header's
canonical JSON with the signature field empty.  The header holds the payload's
size and SHA-256, so the signature covers the payload too.  A reader with any
key configured accepts only entries whose signature verifies under one of its
keys (the signing key, plus ``TORCH_AOTCACHE_VERIFY_KEY_FILES`` during a key
rotation); anything else is refused before its guards are evaluated or its
payload unpickled.  ``signature`` names the key it was made with by a short
digest of the key (``key_id``), never the key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os

from ..store import layout


log = logging.getLogger(__name__)


class SigningKeyError(Exception):
    """A configured key cannot be read."""


def _read_secret_file(path: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            secret = f.read().strip()
    except OSError as e:
        raise SigningKeyError(f"cannot read signing key file {path}: {e}") from None
    if not secret:
        raise SigningKeyError(f"signing key file {path} is empty")
    return secret


@functools.lru_cache(maxsize=8)
def _keys_for(
    signing_key: str | None, signing_key_file: str | None, verify_files: str | None
) -> tuple[bytes | None, tuple[bytes, ...]]:
    signer: bytes | None = None
    if signing_key:
        signer = signing_key.encode()
    elif signing_key_file:
        signer = _read_secret_file(signing_key_file)
    accepted = [signer] if signer else []
    for path in (verify_files or "").split(os.pathsep):
        if path.strip():
            accepted.append(_read_secret_file(path.strip()))
    return signer, tuple(accepted)


def keys() -> tuple[bytes | None, tuple[bytes, ...]]:
    """(the signing key or None, every key accepted when verifying)."""
    return _keys_for(
        layout.setting("signing_key"), layout.setting("signing_key_file"), layout.setting("verify_key_files")
    )


def enabled() -> bool:
    return bool(keys()[1])


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"torch_aotcache key id\0" + key).hexdigest()[:16]


def sign(message: bytes, key: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(message: bytes, signature: str, signer_id: str) -> bool:
    for key in keys()[1]:
        if key_id(key) == signer_id and hmac.compare_digest(sign(message, key), signature):
            return True
    return False
