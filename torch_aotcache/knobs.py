"""
Every knob of torch_aotcache: its name, default, type and environment
variable, in one table.

``config.py`` turns the table into a torch config module (``config.patch``,
environment variables as torch reads them); ``store/layout.py`` reads the same
table when torch is not imported (Note [Reading the store without torch]);
``tools/upstream_patch.py`` writes it into ``torch._functorch.config`` as
``aotcache_<name>``.  Upstream's knobs for the AOTAutograd cache
(``torch._functorch.config.enable_autograd_cache`` and friends) keep their
meaning and are read where upstream reads them; this table holds only what
torch_aotcache adds.

It also reads them from the environment (:func:`from_environment`, one parser
for every boolean, number and string).  This module imports nothing but the
standard library.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, NamedTuple


class Knob(NamedTuple):
    default: Any
    # The annotation, as written in a config module ("Optional[str]").
    type: str
    # Read from this environment variable when set (as torch's config reads it).
    env: str | None = None


KNOBS: dict[str, Knob] = {
    # Name of the folder under Inductor's ``cache_dir()`` that holds our store.
    # Stock torch uses ``aotautograd/``; keeping apart means neither reads the
    # other's entries (see Note [Sharing a cache dir with stock torch] in store/local.py).
    "subdir": Knob("torch_aotcache", "str"),
    # Put the store somewhere else than under Inductor's cache dir: e.g. a shared
    # folder of signed entries while Inductor's own cache dir stays private (see
    # SECURITY.md).
    "store_dir": Knob(None, "Optional[str]", "TORCH_AOTCACHE_DIR"),

    # Keep the content fingerprint of the torch install between processes, keyed
    # by a stat signature of its source files.  See Note [Torch install fingerprint].
    "persist_torch_fingerprint": Knob(True, "bool", "TORCH_AOTCACHE_PERSIST_FINGERPRINT"),

    # Upper bound on the number of guarded entries kept under one key; a save past
    # it drops the oldest entry of that key.
    "max_entries_per_key": Knob(64, "int"),

    # Bound on the bytes of the local store: after each save the entries worth
    # least are removed until the store fits (Note [Bounded store] in
    # store/housekeeping.py).  Bytes, or a number with a K, M, G or T suffix
    # (binary units); "0" or "none": unbounded.  Read without torch by the command line
    # (store/layout.py reads this table).
    "max_size": Knob("10G", "str", "TORCH_AOTCACHE_MAX_SIZE"),
    # Hits, misses, bypasses and evictions are appended to small per-day files
    # under <store>/stats/ for ``python -m torch_aotcache stats``.
    "record_stats": Knob(True, "bool", "TORCH_AOTCACHE_RECORD_STATS"),

    # Signed entries; see Note [Signed entries] in entry/signing.py and SECURITY.md.
    # The secret used to sign every entry written (and to verify), given directly
    # or as a path to a file holding it.
    "signing_key": Knob(None, "Optional[str]", "TORCH_AOTCACHE_SIGNING_KEY"),
    "signing_key_file": Knob(None, "Optional[str]", "TORCH_AOTCACHE_SIGNING_KEY_FILE"),
    # Further secrets accepted when verifying (key rotation): paths to files, one
    # secret each, separated by os.pathsep.
    "verify_key_files": Knob(None, "Optional[str]", "TORCH_AOTCACHE_VERIFY_KEY_FILES"),

    # Move entries that fail verification to <store>/quarantine/ (instead of
    # leaving them where every lookup would read them again).
    "quarantine_bad_entries": Knob(True, "bool"),

    # The remote tier; see Note [Remote tier] in tiers/remote.py.  Upstream's
    # TORCHINDUCTOR_REDIS_URL / _HOST / _PORT and enable_remote_autograd_cache
    # work too.
    "redis_url": Knob(None, "Optional[str]", "TORCH_AOTCACHE_REDIS_URL"),
    # Any remote store by URL (Note [Remote backends] in tiers/backend.py):
    # redis://..., s3://bucket/prefix, gs://..., az://..., file:///dir.  Wins
    # over redis_url.
    "remote_url": Knob(None, "Optional[str]", "TORCH_AOTCACHE_REMOTE_URL"),
    # Read the remote tier, never write it (entries, leases): for jobs that
    # consume what a build job populated.
    "remote_read_only": Knob(False, "bool", "TORCH_AOTCACHE_REMOTE_READ_ONLY"),
    # Load remote entries without a signature.  Off by default: remote data is
    # only trusted when signed.
    "trust_unsigned_remote": Knob(False, "bool", "TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE"),
    "remote_read_timeout_s": Knob(0.05, "float"),
    "remote_write_timeout_s": Knob(1.0, "float"),
    "remote_failure_threshold": Knob(3, "int"),
    "remote_cooldown_s": Knob(30.0, "float"),
    "remote_queue_size": Knob(64, "int"),
    "remote_sync_writes": Knob(False, "bool", "TORCH_AOTCACHE_REMOTE_SYNC"),
    # Expiry of remote entries in seconds (None or "0": none).
    "remote_ttl_s": Knob(None, "Optional[str]", "TORCH_AOTCACHE_REMOTE_TTL"),
    "remote_flush_timeout_s": Knob(5.0, "float"),
    "remote_max_entry_bytes": Knob(1 << 30, "int"),
    # Per-request limits of an object store (one request of a lookup reads a
    # whole entry, so they are longer than Redis's).
    "remote_object_read_timeout_s": Knob(2.0, "float"),
    "remote_object_write_timeout_s": Knob(30.0, "float"),
    # Self-contained entries: each holds its compiled graph and C++ kernels, so a
    # hit reads nothing from Inductor's cache dir (faster, and safe from what
    # others write there; see Note [Self-contained entries] in inductor/artifacts.py).
    # Off: entries refer to Inductor's FX graph cache by key as upstream's do
    # (smaller), except where a self-contained entry is needed: with a remote
    # tier (bundle_for_remote), with signing or a store set apart (store_dir)
    # (bundle_when_signing), or with upstream's bundled_autograd_cache.
    "self_contained": Knob(True, "bool", "TORCH_AOTCACHE_SELF_CONTAINED"),
    "bundle_for_remote": Knob(True, "bool"),
    "bundle_when_signing": Knob(True, "bool"),

    # Carry the compiled C++ kernels of a bundled entry inside it, and load a hit's
    # generated module and kernels from a private folder of the process; see
    # Note [Self-contained entries] in inductor/artifacts.py.
    "carry_kernels": Knob(True, "bool", "TORCH_AOTCACHE_CARRY_KERNELS"),
    "max_kernel_bytes": Knob(256 << 20, "int"),
    # Parent of that private folder (default: the system temp dir).
    "private_dir": Knob(None, "Optional[str]", "TORCH_AOTCACHE_PRIVATE_DIR"),

    # A hit on the CPU skips importing Inductor's compiler: see Note [Front door]
    # in inductor/front_door.py.
    "front_door": Knob(True, "bool", "TORCH_AOTCACHE_FRONT_DOOR"),

    # Single-flight compiles; see Note [Single flight] in tiers/single_flight.py.
    "single_flight": Knob(True, "bool", "TORCH_AOTCACHE_SINGLE_FLIGHT"),
    "single_flight_wait_s": Knob(300.0, "float"),
    "single_flight_poll_s": Knob(0.05, "float"),
    "single_flight_remote_ttl_s": Knob(60.0, "float"),
    "single_flight_max_hold_s": Knob(3600.0, "float"),

    # Cache Dynamo's compiled frames too (torch 2.15 and later): a warm process
    # runs a compiled function without tracing it.  See Note [Caching Dynamo's
    # frames] in dynamo/__init__.py; off by default (README says why).
    "dynamo": Knob(False, "bool", "TORCH_AOTCACHE_DYNAMO"),
}


# ---------------------------------------------------------------------------
# Reading a knob from the environment: one parser, for config.py and for the
# torch-free reader (store/layout.py), and for TORCH_AOTCACHE_DISABLE.
# ---------------------------------------------------------------------------

# Turns the package off at import (not a config knob: read before anything).
DISABLE_ENV = "TORCH_AOTCACHE_DISABLE"

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class KnobError(ValueError):
    """A value that does not say what a knob should be; names the knob."""


def parse_bool(variable: str, text: str) -> bool:
    """``1/0``, ``true/false``, ``yes/no``, ``on/off``, any case, spaces
    around; anything else is a :class:`KnobError` naming ``variable``."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise KnobError(
        f"{variable}={text!r} is not a boolean: write 1/0, true/false, yes/no or on/off"
    )


def parse(name: str, text: str) -> Any:
    """Knob ``name``'s value as written in its environment variable."""
    knob = KNOBS[name]
    variable = knob.env or name
    if knob.type == "bool":
        return parse_bool(variable, text)
    if knob.type in ("int", "float"):
        try:
            return (int if knob.type == "int" else float)(text.strip())
        except ValueError:
            raise KnobError(f"{variable}={text!r} is not a number") from None
    return text


def from_environment(name: str, environ: Any = None) -> Any:
    """Knob ``name`` as the environment sets it, else its default.  A value
    that does not parse warns, naming the variable, and the default holds
    (a typo in the environment never breaks a program)."""
    knob = KNOBS[name]
    env = os.environ if environ is None else environ
    if knob.env is None or not env.get(knob.env):
        return knob.default
    try:
        return parse(name, env[knob.env])
    except KnobError as e:
        warnings.warn(f"torch_aotcache: {e}; using the default, {knob.default!r}", RuntimeWarning, stacklevel=2)
        return knob.default


def disabled(environ: Any = None) -> bool:
    """Whether ``TORCH_AOTCACHE_DISABLE`` turns the package off (unset or
    empty: no; a word that is not a boolean warns and does not)."""
    env = os.environ if environ is None else environ
    text = env.get(DISABLE_ENV, "")
    if not text.strip():
        return False
    try:
        return parse_bool(DISABLE_ENV, text)
    except KnobError as e:
        warnings.warn(f"torch_aotcache: {e}; the package stays on", RuntimeWarning, stacklevel=2)
        return False
