"""
Remembering Inductor's CPU ISA probes between processes.

Note [Persisting Inductor's ISA probe]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Before it loads or compiles C++ for the CPU, Inductor checks each SIMD ISA the
CPU claims (AVX512, AVX2, ...) by compiling a small kernel with that ISA's
flags and loading it in a *child* Python process (a crash there must not take
the user's process down).  The answer is cached per process only, so every
process pays for it again: about a second on a 2-core machine, most of the
cost of a warm start on the CPU.

The answer depends only on the compiler (its version), the ISA flags, the
probe source, torch's build (its version and the shared library the kernel
links against), the Python interpreter and the CPU.  We record each answer
under a digest of exactly those inputs, in
``<store>/meta/isa-probes-<digest>.json``, and reuse it in later processes.
Any change to any input (another compiler, a rebuilt ``libtorch_cpu``, a copy
of the cache dir on another CPU) gives another digest, and Inductor probes
again.  Only answers that Inductor itself computed are recorded.

This replaces ``VecISA.check_build`` through the patch table
(patching.PATCH_SITES), so ``uninstall()`` restores it; with torch_aotcache
disabled, Inductor probes as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from typing import Any

import torch

from . import fingerprint


log = logging.getLogger(__name__)


def _libtorch_signature() -> str:
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    parts = [lib_dir]
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        path = os.path.join(lib_dir, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def probe_digest(isa: Any, code: str) -> str:
    from torch._inductor.cpu_vec_isa import _get_isa_dry_compile_fingerprint

    raw = "\n".join(
        (
            _get_isa_dry_compile_fingerprint(isa.build_arch_flags()),
            str(isa),
            hashlib.sha256(code.encode()).hexdigest(),
            _libtorch_signature(),
            sys.executable,
            "%d.%d" % sys.version_info[:2],
            fingerprint.cpu_features(),
            str(torch._inductor.config.cpp.cxx),
        )
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _record_path(digest: str) -> str:
    from .storage import store_root

    return os.path.join(store_root(), "meta", f"isa-probe-{digest}.json")


def _read(digest: str) -> bool | None:
    try:
        with open(_record_path(digest), encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(obj, dict) and obj.get("digest") == digest and isinstance(obj.get("ok"), bool):
        return obj["ok"]
    return None


def _write(digest: str, ok: bool, isa: str) -> None:
    path = _record_path(digest)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"digest": digest, "ok": ok, "isa": isa}, f)
        os.replace(tmp, path)
    except OSError as e:
        log.debug("torch_aotcache: cannot record ISA probe: %s", e)


def check_build(self: Any, code: str) -> bool:
    """Installed as ``torch._inductor.cpu_vec_isa.VecISA.check_build``."""
    from . import patching
    from torch._inductor.cpu_vec_isa import VecISA

    original = patching.get_original(VecISA, "check_build")
    try:
        digest = probe_digest(self, code)
    except Exception as e:  # noqa: BLE001 - no memo, probe as Inductor would
        log.debug("torch_aotcache: cannot digest ISA probe inputs: %s", e)
        return original(self, code)
    known = _read(digest)
    if known is not None:
        return known
    ok = bool(original(self, code))
    _write(digest, ok, str(self))
    return ok
