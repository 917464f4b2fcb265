"""
Compiled kernels carried inside entries, and loading a hit from nothing else.

Note [Self-contained entries]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A bundled entry holds Inductor's ``CompiledFxGraph``: the generated Python
module's source, and for CUDA the Triton kernels.  It does not hold the C++
kernels that module loads on the CPU (shared libraries Inductor builds into
its own cache dir).  Upstream's hit path therefore (a) writes the module's
source to ``<inductor cache dir>/<xx>/<key>.py`` *only if no file is there*
and imports whatever file is there, and (b) loads ``<hash>.so`` kernels from
the same dir if present, else runs the C++ compiler.  So a hit on a new
machine (empty cache dir, e.g. from the Redis tier) spends seconds compiling
C++, and anyone who can write to the cache dir decides what a hit runs,
signature or not.

We close both:

* Saving: every C++ kernel Inductor loads goes through
  ``CppCodeCache.load_async``; our wrapper remembers which binary came from
  which source (the *source digest*: source text, flags, device, builder
  class).  When a bundled entry is saved, the binaries of the kernels its
  generated modules hold are appended to the entry as raw bytes (never
  pickled), listed in the header by digest, size and SHA-256 and so covered
  by the checksum and the signature (Note [Entry layout] in entry/framing.py).
* Loading a hit: inside :func:`sealed_load`, the module source is written from
  the verified entry into a private folder of this process (``mkdtemp``,
  owner-only) and imported from there, and each kernel whose digest the entry
  carries is written there and loaded from there.  Nothing is read from
  Inductor's cache dir for the module or those kernels.  A kernel the entry
  lacks (or one that fails to load from the private folder, e.g. a ``noexec``
  temp dir) is built from its source as upstream does.

The binaries are only valid for the machine kind that built them; the key
already separates those (CPU features, compiler-relevant versions and torch
build are key components), and a binary that fails to load is rebuilt.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

from .. import _compat, _once, config
from ..installer import drift
from . import light_runtime
from ..counters import count
from ..store.records import write_atomically


log = logging.getLogger(__name__)

# Realpath of every C++ binary this process loaded -> its source digest, and
# the bytes of the most recent ones by digest (read when loaded: a later
# fresh_cache() may delete the file while the module object lives on, and
# torch 2.11 hands that module out again for the same source).
_built: dict[str, str] = {}
_binary_bytes: OrderedDict[str, bytes] = OrderedDict()
_binary_total = 0
_built_lock = threading.Lock()

_local = threading.local()
_private_dir: str | None = None
_private_lock = threading.Lock()
_SAFE_NAME = re.compile(r"[0-9A-Za-z_]+")


def source_digest(cls: type, main_code: str, device_type: Any, extra_flags: Any,
                  optimized_code: Any, extra: dict[str, Any]) -> str:
    """Digest of everything a C++ kernel binary is built from, given the machine."""
    h = hashlib.sha256()
    for part in (
        f"{cls.__module__}.{cls.__qualname__}",
        str(device_type),
        repr(tuple(extra_flags or ())),
        repr(sorted((k, repr(v)) for k, v in extra.items())),
        main_code,
        optimized_code if optimized_code is not None else "\0none",
    ):
        b = part.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()


def _library_path(lib: Any) -> str | None:
    path = getattr(lib, "__file__", None) if isinstance(lib, ModuleType) else getattr(lib, "_name", None)
    return path if isinstance(path, str) else None


def note_loaded(lib: Any, digest: str, data: bytes | memoryview | None = None) -> None:
    """Remember that ``lib`` was built from ``digest`` (and its bytes, read now
    unless given)."""
    global _binary_total
    path = _library_path(lib)
    if not path:
        return
    with _built_lock:
        _built[os.path.realpath(path)] = digest
        if digest in _binary_bytes:
            _binary_bytes.move_to_end(digest)
            return
    if data is None:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            return
    with _built_lock:
        if digest not in _binary_bytes:
            _binary_bytes[digest] = bytes(data)
            _binary_total += len(data)
        while _binary_total > config.max_kernel_bytes and len(_binary_bytes) > 1:
            _, old = _binary_bytes.popitem(last=False)
            _binary_total -= len(old)


# ---------------------------------------------------------------------------
# Saving: the binaries of a compiled graph
# ---------------------------------------------------------------------------


def _generated_module(output_code: Any) -> ModuleType | None:
    key = getattr(output_code, "cache_key", None)
    if not key:
        return None
    mod = sys.modules.get(f"torch._inductor.runtime.compile_tasks.{key}")
    if mod is not None:
        return mod
    from torch._inductor.codecache import PyCodeCache

    for mod in reversed(PyCodeCache.modules):
        if getattr(mod, "key", None) == key:
            return mod
    return None


def _binaries_of(module: ModuleType) -> Iterator[str]:
    """Paths of the C++ kernels ``module``'s globals hold."""
    for value in list(vars(module).values()):
        owner = getattr(value, "__self__", None)
        if isinstance(owner, ModuleType):
            path = getattr(owner, "__file__", None)
            if isinstance(path, str) and path.endswith(".so"):
                yield path


def collect(entry: Any) -> list[tuple[str, bytes]]:
    """(source digest, binary) of every C++ kernel the entry's graphs load.

    Empty for an entry that does not hold its compiled graphs (not bundled).
    Kernels whose source we did not see built are left out (they are built
    from source on a hit).  Never raises: a kernel we cannot read is left out.
    """
    if not config.carry_kernels:
        return []
    out: dict[str, bytes] = {}
    total = 0
    for part in (getattr(entry, "compiled_fw", None), getattr(entry, "compiled_bw", None)):
        output_code = getattr(part, "result", None)
        if output_code is None:
            continue
        module = _generated_module(output_code)
        if module is None:
            count("kernels_module_not_found")
            continue
        for path in _binaries_of(module):
            with _built_lock:
                digest = _built.get(os.path.realpath(path))
                data = _binary_bytes.get(digest) if digest is not None else None
            if digest is None or digest in out:
                continue
            if data is None:
                count("kernels_unreadable")
                continue
            if total + len(data) > config.max_kernel_bytes:
                count("kernels_over_budget")
                continue
            total += len(data)
            out[digest] = data
    count("kernels_carried", len(out))
    return sorted(out.items())


# ---------------------------------------------------------------------------
# Loading a hit from the entry alone
# ---------------------------------------------------------------------------


def _private_folder() -> str:
    global _private_dir
    with _private_lock:
        if _private_dir is None or not os.path.isdir(_private_dir):
            parent = config.private_dir or None
            if parent:
                os.makedirs(parent, mode=0o700, exist_ok=True)
            _private_dir = tempfile.mkdtemp(prefix="torch_aotcache-", dir=parent)
            atexit.register(shutil.rmtree, _private_dir, True)
        return _private_dir


def _private_file(name: str, data: bytes | memoryview | str) -> str:
    """Write ``data`` to ``name`` in the private folder (once) and return its path."""
    path = os.path.join(_private_folder(), name)
    if not os.path.exists(path):
        write_atomically(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def current() -> dict[str, memoryview] | None:
    """The carried kernels (source digest -> bytes) of the hit being loaded, if any."""
    return getattr(_local, "sealed", None)


@contextlib.contextmanager
def sealed_load(binaries: dict[str, memoryview]) -> Iterator[None]:
    """Within: generated modules and carried kernels load from the private folder."""
    previous = current()
    _local.sealed = binaries
    try:
        yield
    finally:
        _local.sealed = previous


def private_module_path(cache_key: str, source: str) -> str:
    name = cache_key if _SAFE_NAME.fullmatch(cache_key or "") else hashlib.sha256(
        (cache_key or "").encode()
    ).hexdigest()
    # One file per source: two sources under one key never share a file.
    tag = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return _private_file(f"{name}-{tag}.py", source)


def load_carried(cls: type, digest: str) -> Any | None:
    """A loader for the carried kernel ``digest`` (as ``load_async`` returns), or None."""
    sealed = current()
    if sealed is None:
        return None
    data = sealed.get(digest)
    if data is None:
        count("kernels_not_carried")
        return None
    path = "<private folder>"
    try:
        path = _private_file(f"{digest}.so", data)
        lib = cls._load_library(path, digest)  # type: ignore[attr-defined]
    except (OSError, ImportError) as e:
        count("kernels_load_failed")
        if _once.first_time("kernel-load-failed"):
            log.warning(
                "torch_aotcache: cannot load a carried kernel from %s (%s); building it from "
                "source. Further failures are only counted in "
                "counters['torch_aotcache']['kernels_load_failed'].",
                os.path.dirname(path),
                e,
            )
        return None
    note_loaded(lib, digest, data)
    count("kernels_loaded")
    return lambda: lib


# ---------------------------------------------------------------------------
# The patched Inductor methods (see patching.PATCH_SITES)
# ---------------------------------------------------------------------------


def load_async(original: Callable[..., Any], cls: type, main_code: str, device_type: str = "cpu",
               submit_fn: Any = None, extra_flags: Sequence[str] = (),
               optimized_code: str | None = None, *rest: Any, **kwargs: Any) -> Any:
    """Installed as ``CppCodeCache.load_async`` (a classmethod) around
    upstream's ``original``.  Parameters past ``optimized_code`` differ
    between releases and pass through."""
    try:
        digest = source_digest(
            cls, main_code, device_type, extra_flags, optimized_code, {"*": rest, **kwargs}
        )
    except Exception:  # noqa: BLE001 - never in the way of a compile
        digest = None
    if digest is not None:
        carried = load_carried(cls, digest)
        if carried is not None:
            return carried
    get_result = original(
        cls, main_code, device_type, submit_fn, extra_flags, optimized_code, *rest, **kwargs
    )
    if digest is None:
        return get_result

    def load() -> Any:
        lib = get_result()
        note_loaded(lib, digest)
        return lib

    return load


class UnregisteredOperators(RuntimeError):
    """A hit's generated module needs operators that Inductor's compiler registers."""


def write_to_disk(original: Callable[[Any], str], self: Any) -> str:
    """Installed as ``CompiledFxGraph.write_to_disk`` around upstream's
    ``original``: private inside :func:`sealed_load`."""
    if current() is not None and isinstance(getattr(self, "source_code", None), str):
        # See Note [Light runtime imports] in inductor/light_runtime.py.
        source = light_runtime.rewrite_imports(
            self.source_code, _compat.front_door_release() and drift.intact("light_runtime")
        )
        if "torch._inductor.compile_fx" not in sys.modules:
            # Inductor's compiler is not imported (a hit through the front
            # door): every operator the module calls must be registered.
            missing = light_runtime.unregistered_operators(source)
            if missing:
                raise UnregisteredOperators(
                    "generated module calls operators not registered here: " + ", ".join(missing)
                )
        return private_module_path(self.cache_key, source)
    return original(self)
