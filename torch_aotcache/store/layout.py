"""
Where the store is, and the settings a reader of the store needs, without
importing torch.

Note [Reading the store without torch]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
The command line (``ls``, ``stats``, ``verify``, ``explain``, ``prune``,
``export``/``import``) only reads JSON headers and moves files; importing
torch to do that costs seconds.  So this module resolves the store root
exactly as the cache does, in two ways:

* when torch is already imported in the process (a compiling process, a
  test), it asks the live sources: our ``config`` module (so
  ``config.patch(store_dir=...)`` takes effect) and Inductor's
  ``cache_dir()`` (so ``fresh_cache()`` does);
* otherwise it reads the same environment variables the config would have
  read (``TORCH_AOTCACHE_DIR``, ``TORCH_AOTCACHE_MAX_SIZE``, the signing
  keys) and computes Inductor's cache dir as
  ``torch/_inductor/runtime/cache_dir_utils.py`` does:
  ``TORCHINDUCTOR_CACHE_DIR`` if set, else ``<tmp>/torchinductor_<user>``
  with the characters ``\\/:*?"<>|`` of the user name replaced by ``_``.

The torch version entries are checked against is read from the installed
``torch/version.py`` (the text that becomes ``torch.__version__``), found
with ``importlib.util.find_spec``, which does not run torch's ``__init__``.

This module imports nothing of the package (but ``knobs`` and ``_once``,
leaves) and nothing outside the standard library at import time; tests check that the command line leaves ``torch``
out of ``sys.modules``.
"""

from __future__ import annotations

import functools
import getpass
import importlib.util
import logging
import os
import re
import sys
import tempfile
from types import ModuleType
from typing import Any

from ..knobs import KNOBS, from_environment

log = logging.getLogger(__name__)

# Note [What the store holds]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Every folder and file under the store root, named here and nowhere else:
#
#   entries/<key[3:5]>/<key>/<entry_id>.entry   entries (Note [Store layout]
#                                                in store/local.py)
#   entries/.../.tmp-*                          a write in progress (records.py)
#   quarantine/<time_ns>-<key>-<entry_id>.entry  entries that failed verification
#   locks/<key>.lock                            single flight's local locks
#   stats/<day>.jsonl                           statistics (store/stats.py)
#   meta/<kind>-<ident>.json                    work kept between processes:
#                                                the torch fingerprint, Inductor's
#                                                torch_key, ISA probes, precompiled
#                                                headers, drift digests (records.py)
#   explain/misses.jsonl                        recent misses (store/explain.py)
#
# Keys begin with a prefix of KEY_PREFIX_LEN characters that says what they
# key (a graph of AOTAutograd's, a Dynamo frame); the entry folders fan out
# on the two characters after it.
ENTRIES = "entries"
QUARANTINE = "quarantine"
LOCKS = "locks"
STATS = "stats"
META = "meta"
ENTRY_SUFFIX = ".entry"
LOCK_SUFFIX = ".lock"
TEMP_PREFIX = ".tmp-"
EXPLAIN = "explain"
MISSES = "misses.jsonl"
GRAPH_KEY_PREFIX = "tac"
FRAME_KEY_PREFIX = "tdf"
KEY_PREFIX_LEN = 3

# The knobs a reader of the store needs, with the environment variable each
# is read from when torch is not imported (knobs.py declares them all).
_READER_KNOBS = (
    "subdir", "store_dir", "max_size", "max_entries_per_key",
    "signing_key", "signing_key_file", "verify_key_files", "record_stats",
)
ENV_NAMES: dict[str, str] = {n: env for n in _READER_KNOBS if (env := KNOBS[n].env) is not None}
DEFAULTS: dict[str, Any] = {n: KNOBS[n].default for n in _READER_KNOBS}


def torch_imported() -> bool:
    return "torch" in sys.modules


def live_config() -> ModuleType | None:
    """Our config module when torch is imported (importing it is then cheap), else None."""
    if not torch_imported():
        return None
    from .. import config

    return config


def setting(name: str) -> Any:
    """The value of config knob ``name``: the live config's when torch is
    imported, else its environment variable or default."""
    cfg = live_config()
    if cfg is not None:
        return getattr(cfg, name)
    return from_environment(name)


def default_inductor_cache_dir() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        getuid = getattr(os, "getuid", None)
        user = f"uid_{getuid()}" if callable(getuid) else "unknown_user"
    return os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))


def inductor_cache_dir() -> str:
    """Inductor's ``cache_dir()``, without creating it (a reader creates nothing)."""
    if torch_imported():
        from torch._inductor.runtime.runtime_utils import cache_dir

        return cache_dir()
    return os.path.abspath(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_inductor_cache_dir())


def store_root(inductor_dir: str | None = None) -> str:
    """See Note [Store layout] in store/local.py.  ``inductor_dir``: the store
    under that Inductor cache dir (tools that start processes with one),
    whatever the environment says."""
    if inductor_dir is not None:
        return os.path.join(inductor_dir, KNOBS["subdir"].default)
    return setting("store_dir") or os.path.join(inductor_cache_dir(), setting("subdir"))


def entries_root(root: str | None = None) -> str:
    return os.path.join(root or store_root(), ENTRIES)


def key_dir(key: str, root: str | None = None) -> str:
    """The folder of ``key``'s entries.  Keys look like "tac<hex>"; the folders
    fan out on the first hex characters."""
    shard = key[KEY_PREFIX_LEN:KEY_PREFIX_LEN + 2] if len(key) > KEY_PREFIX_LEN + 2 else "__"
    return os.path.join(entries_root(root), shard, key)


def misses_path(root: str | None = None) -> str:
    return os.path.join(root or store_root(), EXPLAIN, MISSES)


def entry_path(key: str, entry_id: str, root: str | None = None) -> str:
    return os.path.join(key_dir(key, root), entry_id + ENTRY_SUFFIX)


def quarantine_dir(root: str | None = None) -> str:
    return os.path.join(root or store_root(), QUARANTINE)


def locks_dir(root: str | None = None) -> str:
    return os.path.join(root or store_root(), LOCKS)


def lock_path(key: str, root: str | None = None) -> str:
    return os.path.join(locks_dir(root), key + LOCK_SUFFIX)


def stats_dir(root: str | None = None) -> str:
    return os.path.join(root or store_root(), STATS)


def meta_path(kind: str, ident: str, root: str | None = None) -> str:
    """``<store>/meta/<kind>-<ident>.json``: see store/records.py."""
    return os.path.join(root or store_root(), META, f"{kind}-{ident}.json")


# --------------------------------------------------------------------------
# The torch version, read without importing torch.


@functools.cache
def _installed_torch_version() -> str | None:
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            try:
                with open(os.path.join(folder, "version.py"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            m = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.M)
            if m:
                return m.group(1)
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # noqa: BLE001 - not installed, or unreadable metadata
        return None


def torch_version() -> str | None:
    """``torch.__version__`` as entries record it, or None if torch is not installed."""
    if torch_imported():
        return str(sys.modules["torch"].__version__)
    return _installed_torch_version()


# --------------------------------------------------------------------------
# Sizes.


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(i?[bB])?\s*")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: object) -> int | None:
    """Bytes from ``500M``, ``20G``, ``1.5T``, ``123`` (binary units: ``1K`` is
    1024 bytes); None means unbounded (``None``, ``""``, ``"0"``, ``"none"``).
    Raises ``ValueError`` for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
        return int(value) if value > 0 else None
    text = str(value).strip()
    if text.lower() in ("", "0", "none", "off", "unlimited"):
        return None
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a size: {value!r} (expected bytes, or a number with K, M, G or T)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    return n if n > 0 else None


def max_size() -> int | None:
    """The bound on the store's size in bytes (None: unbounded).  A value
    that does not parse falls back to the default, so a typo never fails a
    compile (the command line reports it)."""
    raw = setting("max_size")
    try:
        return parse_size(raw)
    except ValueError as e:
        from .. import _once

        if _once.first_time("max-size:" + str(raw)):
            log.warning("torch_aotcache: %s; TORCH_AOTCACHE_MAX_SIZE / config.max_size falls back to %s",
                        e, DEFAULTS["max_size"])
        return parse_size(DEFAULTS["max_size"])
