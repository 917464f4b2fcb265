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
``<store>/meta/isa-probe-<digest>.json`` (store/records.py), and reuse it in
later processes.
Any change to any input (another compiler, a rebuilt ``libtorch_cpu``, a copy
of the cache dir on another CPU) gives another digest, and Inductor probes
again.  Only answers that Inductor itself computed are recorded.

This replaces ``VecISA.check_build`` through the patch table
(patching.PATCH_SITES), so ``uninstall()`` restores it; with torch_aotcache
disabled, Inductor probes as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from ..key import fingerprint
from ..store import layout, records


log = logging.getLogger(__name__)

# The kinds of record kept under <store>/meta/ (Note [Work kept between processes]).
PROBE_RECORD = "isa-probe"
HEADER_RECORD = "pch"


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
    # See Note [Work kept between processes] in store/records.py.
    return layout.meta_path(PROBE_RECORD, digest)


def _read(digest: str) -> bool | None:
    obj = records.read_record(_record_path(digest))
    if obj is not None and obj.get("digest") == digest and isinstance(obj.get("ok"), bool):
        return obj["ok"]
    return None


def _write(digest: str, ok: bool, isa: str) -> None:
    records.write_record(_record_path(digest), {"digest": digest, "ok": ok, "isa": isa})


def check_build(original: Callable[[Any, str], bool], self: Any, code: str) -> bool:
    """Installed as ``torch._inductor.cpu_vec_isa.VecISA.check_build``
    around upstream's ``original``."""
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


# Note [Persisting Inductor's precompiled-header lookup]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# To find (or build) the precompiled header its C++ kernels are compiled with,
# Inductor runs the preprocessor over the header in every process and hashes
# the output (about 0.4 s), because the header's path is part of every
# compiled library's cache key.  The preprocessed output depends on the header,
# the command line, the compiler and torch's own headers; we record the path
# Inductor returned under a digest of exactly those, and reuse it while the
# header and its compiled form still exist.  A system header that changes
# without any of these changing is caught by the compiler itself, which
# ignores a precompiled header that no longer matches.


def _torch_include_signature() -> str:
    include = os.path.join(os.path.dirname(torch.__file__), "include")
    try:
        st = os.stat(os.path.join(include, "torch", "csrc", "inductor", "cpp_prefix.h"))
        sig = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        sig = "-"
    return f"{include}|{sig}|{torch.__version__}|{_libtorch_signature()}"


def _stable_repr(value: Any) -> str:
    """A repr that is the same in every process, or ValueError."""
    from torch._inductor.cpu_vec_isa import VecISA

    if isinstance(value, VecISA):
        return f"{type(value).__name__}:{value}:{value.build_arch_flags()}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_stable_repr(v) for v in value) + ")"
    text = repr(value)
    if " at 0x" in text:
        raise ValueError(f"no stable repr for {type(value).__name__}")
    return text


def precompile_header(
    original: Callable[..., str], header: str, hashable_cmd_line: str, **compile_command: Any
) -> str:
    """Installed as ``torch._inductor.codecache._precompile_header`` around
    upstream's ``original``."""
    try:
        from torch._inductor.cpp_builder import get_compiler_version_info, get_cpp_compiler

        raw = "\n".join(
            (
                header,
                hashable_cmd_line,
                ";".join(f"{k}={_stable_repr(v)}" for k, v in sorted(compile_command.items())),
                get_compiler_version_info(get_cpp_compiler()),
                _torch_include_signature(),
                sys.executable,
                fingerprint.cpu_features(),
            )
        )
        digest = hashlib.sha256(raw.encode()).hexdigest()[:32]
    except Exception as e:  # noqa: BLE001
        log.debug("torch_aotcache: cannot digest precompiled-header inputs: %s", e)
        return original(header, hashable_cmd_line, **compile_command)
    path = layout.meta_path(HEADER_RECORD, digest)
    known = (records.read_record(path) or {}).get("path")
    if isinstance(known, str) and os.path.isfile(known) and os.path.exists(known + ".gch"):
        return known
    result = original(header, hashable_cmd_line, **compile_command)
    if isinstance(result, str):
        records.write_record(path, {"path": result})
    return result
