"""
Configuration of torch_aotcache.

Knobs live in torch's config machinery (``torch.utils._config_module``), so they
can be read, patched in tests with ``config.patch(...)`` and set from the
environment like PyTorch's own.  Upstream's knobs for the AOTAutograd cache
(``torch._functorch.config.enable_autograd_cache`` and friends) keep their
meaning and are read where upstream reads them; this module holds only what
torch_aotcache adds.
"""

# No ``from __future__ import annotations`` here: install_config_module turns
# every module global into a knob.
import sys
from typing import Optional

from torch.utils._config_module import Config, install_config_module

# Name of the folder under Inductor's ``cache_dir()`` that holds our store.
# Stock torch uses ``aotautograd/``; keeping apart means neither reads the
# other's entries (see Note [Sharing a cache dir with stock torch] in storage.py).
subdir: str = "torch_aotcache"
# Put the store somewhere else than under Inductor's cache dir: e.g. a shared
# folder of signed entries while Inductor's own cache dir stays private (see
# SECURITY.md).
store_dir: Optional[str] = Config(env_name_default="TORCH_AOTCACHE_DIR", default=None)

# Keep the content fingerprint of the torch install between processes, keyed
# by a stat signature of its source files.  See Note [Torch install fingerprint].
persist_torch_fingerprint: bool = Config(
    env_name_default="TORCH_AOTCACHE_PERSIST_FINGERPRINT", default=True
)

# Upper bound on the number of guarded entries kept under one key; a save past
# it drops the oldest entry of that key.
max_entries_per_key: int = 64

# Bound on the bytes of the local store: after each save the entries worth
# least are removed until the store fits (Note [Bounded store] in
# housekeeping.py).  Bytes, or a number with a K, M, G or T suffix (binary
# units); "0" or "none": unbounded.  Read without torch by the command line
# (paths.py), so keep the environment name in step with paths.ENV_NAMES.
max_size: str = Config(env_name_default="TORCH_AOTCACHE_MAX_SIZE", default="10G")
# Hits, misses, bypasses and evictions are appended to small per-day files
# under <store>/stats/ for ``python -m torch_aotcache stats``.
record_stats: bool = Config(env_name_default="TORCH_AOTCACHE_RECORD_STATS", default=True)

# Signed entries; see Note [Signed entries] in signing.py and SECURITY.md.
# The secret used to sign every entry written (and to verify), given directly
# or as a path to a file holding it.
signing_key: Optional[str] = Config(env_name_default="TORCH_AOTCACHE_SIGNING_KEY", default=None)
signing_key_file: Optional[str] = Config(
    env_name_default="TORCH_AOTCACHE_SIGNING_KEY_FILE", default=None
)
# Further secrets accepted when verifying (key rotation): paths to files, one
# secret each, separated by os.pathsep.
verify_key_files: Optional[str] = Config(
    env_name_default="TORCH_AOTCACHE_VERIFY_KEY_FILES", default=None
)

# Move entries that fail verification to <store>/quarantine/ (instead of
# leaving them where every lookup would read them again).
quarantine_bad_entries: bool = True

# The remote tier; see Note [Remote tier] in remote.py.  Upstream's
# TORCHINDUCTOR_REDIS_URL / _HOST / _PORT and enable_remote_autograd_cache
# work too.
redis_url: Optional[str] = Config(env_name_default="TORCH_AOTCACHE_REDIS_URL", default=None)
# Load remote entries without a signature.  Off by default: remote data is
# only trusted when signed.
trust_unsigned_remote: bool = Config(
    env_name_default="TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE", default=False
)
remote_read_timeout_s: float = 0.05
remote_write_timeout_s: float = 1.0
remote_failure_threshold: int = 3
remote_cooldown_s: float = 30.0
remote_queue_size: int = 64
remote_sync_writes: bool = Config(env_name_default="TORCH_AOTCACHE_REMOTE_SYNC", default=False)
# Expiry of remote entries in seconds (None or "0": none).
remote_ttl_s: Optional[str] = Config(env_name_default="TORCH_AOTCACHE_REMOTE_TTL", default=None)
remote_flush_timeout_s: float = 5.0
remote_max_entry_bytes: int = 1 << 30
# Self-contained entries: each holds its compiled graph and C++ kernels, so a
# hit reads nothing from Inductor's cache dir (faster, and safe from what
# others write there; see Note [Self-contained entries] in artifacts.py).
# Off: entries refer to Inductor's FX graph cache by key as upstream's do
# (smaller), except where a self-contained entry is needed: with a remote
# tier (bundle_for_remote), with signing or a store set apart (store_dir)
# (bundle_when_signing), or with upstream's bundled_autograd_cache.
self_contained: bool = Config(env_name_default="TORCH_AOTCACHE_SELF_CONTAINED", default=True)
bundle_for_remote: bool = True
bundle_when_signing: bool = True

# Carry the compiled C++ kernels of a bundled entry inside it, and load a hit's
# generated module and kernels from a private folder of the process; see
# Note [Self-contained entries] in artifacts.py.
carry_kernels: bool = Config(env_name_default="TORCH_AOTCACHE_CARRY_KERNELS", default=True)
max_kernel_bytes: int = 256 << 20
# Parent of that private folder (default: the system temp dir).
private_dir: Optional[str] = Config(env_name_default="TORCH_AOTCACHE_PRIVATE_DIR", default=None)

# A hit on the CPU skips importing Inductor's compiler: see Note [Front door]
# in front_door.py.
front_door: bool = Config(env_name_default="TORCH_AOTCACHE_FRONT_DOOR", default=True)

# Single-flight compiles; see Note [Single flight] in single_flight.py.
single_flight: bool = Config(env_name_default="TORCH_AOTCACHE_SINGLE_FLIGHT", default=True)
single_flight_wait_s: float = 300.0
single_flight_poll_s: float = 0.05
single_flight_remote_ttl_s: float = 60.0
single_flight_max_hold_s: float = 3600.0


install_config_module(sys.modules[__name__])
