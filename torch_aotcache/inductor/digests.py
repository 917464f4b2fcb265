"""
Keeping Inductor's digest of the torch install between processes.

Note [Keeping torch_key between processes]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Inductor's ``torch_key()`` hashes the content of every Python module and
extension module of the torch package (plus two non-Python files its
generated code uses) and is recomputed in every process that needs it.  A
warm hit needs it where compiled code is hashed again on load (Triton
kernels, on the GPU), which costs a few hundred milliseconds of a warm
process.  The value is a pure function of those files, so we keep it on disk
(``<store>/meta/inductor-<ident>.json``) beside what it was computed under:

* the content digest of torch's sources (``.py``/``.pyi`` and the two extra
  files) from Note [Torch install fingerprint] in key/fingerprint.py, which the
  key computation already waits for;
* the stat signature (path, size, mtime) of every extension module and shared
  library under torch's folder, a superset of the extension modules
  ``torch_key()`` reads;
* ``torch.__version__`` and the folder itself (in ``ident``).

Before a lookup we hand a kept value to Inductor (``torch_key.set``) only if
all of these are unchanged; after a save we keep the value Inductor computed,
if it has not been kept under the current signatures.  Anything unexpected (a
release without ``set``, a value already computed, an unreadable file) leaves
Inductor to compute its own: the worst case is upstream's cost, never a
stale digest.

Rejected: keeping it keyed by ``torch.__version__`` alone (an edited or
rebuilt install would keep a stale digest, and Inductor would load code
compiled against other sources), and persisting Triton's own ``triton_key``
(it lives inside Triton, behind a cache that has no way to set it).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..key.fingerprint import torch_fingerprint
from ..store import records


log = logging.getLogger(__name__)

# The record this process handed over / found current (its path): the
# lookups and saves after the first then skip reading it again.
_handed_over: str | None = None
_kept: str | None = None


def _record_path() -> str:
    # See Note [Work kept between processes] in store/records.py.
    return records.install_record_path("inductor")


def _signatures() -> dict[str, str]:
    return {
        "torch_version": torch.__version__,
        "sources": torch_fingerprint.get(),
        "binaries": torch_fingerprint.binaries_signature(),
    }


def _torch_key_fn() -> Any:
    from torch._inductor import codecache

    fn = getattr(codecache, "torch_key", None)
    return fn if callable(getattr(fn, "set", None)) else None


def prime_torch_key() -> bool:
    """Hand Inductor a kept ``torch_key`` when it is still valid; returns
    whether one was handed over."""
    global _handed_over
    try:
        fn = _torch_key_fn()
        if fn is None:
            return False
        path = _record_path()
        if path == _handed_over:
            return False  # handed over already in this process
        record = records.read_record(path)
        if record is None or record.get("signatures") != _signatures():
            return False
        value = bytes.fromhex(record["torch_key"])
        fn.set(value)
        _handed_over = path
    except RuntimeError:
        return False  # computed (or handed over) already in this process
    except Exception as e:  # noqa: BLE001 - only ever a missed speed-up
        log.debug("torch_aotcache: not reusing torch_key: %s", e)
        return False
    return True


def remember_torch_key() -> None:
    """Keep this process's ``torch_key`` unless it is kept already under the
    current signatures (one small read when it is)."""
    global _kept
    try:
        fn = _torch_key_fn()
        if fn is None:
            return
        path = _record_path()
        if path == _kept:
            return
        signatures = _signatures()
        record = records.read_record(path)
        if record is not None and record.get("signatures") == signatures:
            _kept = path
            return
        value = fn()
        if not isinstance(value, bytes):
            return
        if records.write_record(path, {"signatures": signatures, "torch_key": value.hex()}):
            _kept = path
    except Exception as e:  # noqa: BLE001 - only ever a missed speed-up
        log.debug("torch_aotcache: not keeping torch_key: %s", e)
