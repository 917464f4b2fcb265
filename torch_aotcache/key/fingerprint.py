"""
Fingerprints of what a compiled artifact depends on outside the graph: the
torch install's source code, the toolchain versions and the hardware.

Note [Torch install fingerprint]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A key must change when torch's Python sources change (a patched install, an
editable checkout), because AOTAutograd and Inductor are Python.  Hashing the
content of every ``.py`` file under ``torch/`` costs about a second, and
upstream pays it in every process.  We split it in two:

* a *stat signature*: relative path, size and mtime of every source file, which
  a directory walk gives without reading any file;
* a *content digest*: SHA-256 over the relative paths and contents.

The content digest goes into the key, so two machines with the same torch get
the same key whatever their mtimes.  On a wheel install it is computed from
the installer's ``RECORD`` (the SHA-256 of every file, as installed) while no
source file is newer than that record or of another size, which gives the
same digest without reading the sources (:func:`record_digest`).  It is kept on disk next to the stat
signature it was computed under (``<store>/meta/torch-<...>.json``), and
reused only while the stat signature still matches; any added, removed,
resized or touched file recomputes it.  The walk is started in a background
thread when torch_aotcache is installed, so it overlaps the user's model set-up
and Dynamo's tracing instead of delaying the first key.

Rejected: keying on ``torch.__version__`` alone (an edited install would hit
stale entries), and on directory mtimes alone (an in-place edit does not change
its folder's mtime).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import logging
import os
import platform
import sys
import threading
from typing import Any

import torch

from ..store import layout, records


log = logging.getLogger(__name__)

_SOURCE_SUFFIXES = (".py", ".pyi")
_BINARY_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)
# Extra non-Python files Inductor's generated code depends on.
_EXTRA_FILES = (
    os.path.join("_inductor", "codegen", "aoti_runtime", "interface.cpp"),
    os.path.join("_inductor", "script.ld"),
)


def _torch_root() -> str:
    return os.path.dirname(os.path.abspath(torch.__file__))


def _walk_sources(root: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every source file under ``root``, sorted."""
    return _walk(root)[0]


def _walk(root: str) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """:func:`_walk_sources`, and the same for every extension module and
    shared library under ``root`` (see Note [Keeping torch_key between
    processes] in inductor/digests.py)."""
    out: list[tuple[str, int, int]] = []
    binaries: list[tuple[str, int, int]] = []
    stack = [root]
    prefix = len(root) + 1
    while stack:
        folder = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError:
            continue
        with it:
            for e in it:
                name = e.name
                if name.endswith(_SOURCE_SUFFIXES):
                    try:
                        st = e.stat()
                    except OSError:
                        continue
                    out.append((e.path[prefix:], st.st_size, st.st_mtime_ns))
                elif name.endswith(_BINARY_SUFFIXES):
                    try:
                        st = e.stat()
                    except OSError:
                        continue
                    binaries.append((e.path[prefix:], st.st_size, st.st_mtime_ns))
                elif name != "__pycache__" and e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    for rel in _EXTRA_FILES:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError:
            continue
        out.append((rel, st.st_size, st.st_mtime_ns))
    out.sort()
    binaries.sort()
    return out, binaries


def stat_signature(files: list[tuple[str, int, int]]) -> str:
    h = hashlib.sha256()
    for rel, size, mtime in files:
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def content_digest(root: str, files: list[tuple[str, int, int]]) -> str:
    h = hashlib.sha256()
    h.update(torch.__version__.encode())
    for rel, _size, _mtime in files:
        try:
            with open(os.path.join(root, rel), "rb") as f:
                data = f.read()
        except OSError:
            data = b"<unreadable>"
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def _installer_record(root: str) -> str | None:
    site = os.path.dirname(root)
    try:
        names = [n for n in os.listdir(site) if n.startswith("torch-") and n.endswith(".dist-info")]
    except OSError:
        return None
    if len(names) != 1:
        return None
    return os.path.join(site, names[0], "RECORD")


def record_digest(root: str, files: list[tuple[str, int, int]]) -> str | None:
    """:func:`content_digest`, from the installer's ``RECORD`` instead of the files.

    A wheel install lists every file with the SHA-256 of its content and its
    size in ``torch-<version>.dist-info/RECORD``, written after the files.
    While every source file has the recorded size and is not newer than
    RECORD (an edit in place makes it newer), the recorded digests are the
    files' digests, so this returns exactly what :func:`content_digest`
    would, without reading a single source file.  None when that cannot be
    established (no RECORD, an editable or patched install, a file added,
    missing, resized or touched): the caller reads the files.
    """
    import base64

    path = _installer_record(root)
    if path is None:
        return None
    try:
        record_mtime = os.stat(path).st_mtime_ns
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    prefix = os.path.basename(root) + "/"
    recorded: dict[str, tuple[str, str]] = {}
    for line in lines:
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[0].startswith(prefix):
            recorded[parts[0][len(prefix):]] = (parts[1], parts[2])
    h = hashlib.sha256()
    h.update(torch.__version__.encode())
    for rel, size, mtime in files:
        entry = recorded.get(rel.replace(os.sep, "/"))
        if entry is None or mtime > record_mtime or entry[1] != str(size):
            return None
        algo, _, b64 = entry[0].partition("=")
        if algo != "sha256":
            return None
        try:
            digest = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except ValueError:
            return None
        if len(digest) != 32:
            return None
        h.update(rel.encode() + b"\0")
        h.update(digest)
    return h.hexdigest()


def _meta_path(root: str) -> str:
    # See Note [Work kept between processes] in store/records.py.
    return layout.meta_path("torch", records.install_ident(root, torch.__version__))


def _read_persisted(path: str) -> dict[str, Any] | None:
    obj = records.read_record(path)
    return obj if obj is not None and isinstance(obj.get("content"), str) else None


def compute_torch_fingerprint(
    root: str | None = None, persist: bool = True, meta_path: str | None = None
) -> str:
    """Content digest of the torch install, reusing a persisted one when valid.

    ``meta_path`` is where the digest is kept (default: under the current
    store); the background computation fixes it when it starts, so a cache dir
    switched meanwhile never receives it.
    """
    return _fingerprint_and_binaries(root, persist, meta_path)[0]


def _fingerprint_and_binaries(
    root: str | None, persist: bool, meta_path: str | None
) -> tuple[str, str]:
    """The content digest of the sources, and the stat signature of the
    extension modules and shared libraries."""
    root = root or _torch_root()
    files, binaries = _walk(root)
    sig = stat_signature(files)
    binaries_sig = stat_signature(binaries)
    path = (meta_path or _meta_path(root)) if persist else None
    if path is not None:
        old = _read_persisted(path)
        if old is not None and old.get("stat") == sig:
            return old["content"], binaries_sig
    digest = record_digest(root, files) or content_digest(root, files)
    if path is not None:
        records.write_record(path, {"stat": sig, "content": digest, "root": root})
    return digest, binaries_sig


class _Fingerprint:
    """The torch fingerprint of this process: computed once, maybe in the background."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: str | None = None
        self._binaries: str | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _compute(self, meta_path: str | None = None) -> None:
        from .. import config

        try:
            value, binaries = _fingerprint_and_binaries(
                None, config.persist_torch_fingerprint, meta_path
            )
        except BaseException as e:  # noqa: BLE001 - re-raised by get()
            self._error = e
            return
        self._binaries = binaries
        self._value = value

    def prefetch(self) -> None:
        with self._lock:
            if self._value is not None or self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._compute,
                args=(_meta_path(_torch_root()),),
                name="torch_aotcache-fingerprint",
                daemon=True,
            )
            self._thread.start()

    def get(self) -> str:
        if self._value is not None:
            return self._value
        with self._lock:
            thread = self._thread
            if thread is None:
                self._compute()
        if thread is not None:
            thread.join()
        if self._value is None:
            with self._lock:
                self._thread = None
                self._compute()
        if self._value is None:
            raise RuntimeError("cannot fingerprint the torch install") from self._error
        return self._value

    def binaries_signature(self) -> str:
        """Stat signature of torch's extension modules and shared libraries,
        from the same walk as :meth:`get`."""
        self.get()
        assert self._binaries is not None
        return self._binaries

    def reset(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._thread.join()
            self._value = None
            self._binaries = None
            self._thread = None
            self._error = None


torch_fingerprint = _Fingerprint()


_cpu_features: str | None = None


def cpu_features() -> str:
    """A digest of the CPU's instruction-set features (compiled C++ depends on them)."""
    global _cpu_features
    if _cpu_features is None:
        flags = ""
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith(("flags", "Features")):
                        flags = " ".join(sorted(line.split(":", 1)[1].split()))
                        break
        except OSError:
            pass
        raw = f"{platform.machine()}|{sys.byteorder}|{flags}"
        _cpu_features = hashlib.sha256(raw.encode()).hexdigest()[:32]
    return _cpu_features


_triton_version: str | None | bool = False


def triton_version() -> str | None:
    global _triton_version
    if _triton_version is False:
        try:
            from torch.utils._triton import has_triton_package

            if has_triton_package():
                import triton

                _triton_version = str(triton.__version__)
            else:
                _triton_version = None
        except Exception:  # noqa: BLE001 - a broken Triton install: keyed as none
            _triton_version = None
    return _triton_version  # type: ignore[return-value]


_gpu_props: dict[tuple[str, int], str] = {}


def gpu_properties(device_type: str, index: int) -> str:
    """The properties of an accelerator that compiled kernels depend on."""
    k = (device_type, index)
    if k not in _gpu_props:
        desc = f"{device_type}:{index}"
        try:
            if device_type == "cuda":
                p = torch.cuda.get_device_properties(index)
                arch = getattr(p, "gcnArchName", "")
                desc = (
                    f"{p.name}|cc{p.major}.{p.minor}|sm{p.multi_processor_count}"
                    f"|mem{p.total_memory}|{arch}|cuda{torch.version.cuda}"
                    f"|hip{torch.version.hip}"
                )
            elif device_type == "xpu" and hasattr(torch, "xpu"):
                xp = torch.xpu.get_device_properties(index)
                desc = f"{xp.name}|{getattr(xp, 'driver_version', '')}"
        except Exception as e:  # noqa: BLE001 - described, not fatal
            desc += f"|unknown:{type(e).__name__}"
        _gpu_props[k] = desc
    return _gpu_props[k]


def system_description() -> dict[str, Any]:
    """Versions a compiled artifact depends on (cheap: no probes, no subprocess)."""
    return {
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", None),
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "python": "%d.%d" % sys.version_info[:2],
        "triton": triton_version(),
        "machine": platform.machine(),
    }
