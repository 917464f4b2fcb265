"""
Single-flight compiles: when several processes miss the same key at once, one
compiles and the others wait for its entry.

Note [Single flight]
~~~~~~~~~~~~~~~~~~~~
On a miss, before the compile starts, the process takes the key's lock:

* on one machine, an exclusive ``flock`` on ``<store>/locks/<key>.lock``; the
  operating system drops it when the holder exits or dies, so a dead holder
  never blocks anyone;
* across machines (when the remote tier is on and may be written), the key's
  lease in the remote store, created atomically and holding a random token
  (a Redis key set with ``NX`` and an expiry; an object created with a
  conditional create, Note [Object-store layout and leases]); the holder
  refreshes the expiry while it compiles and deletes the lease only if it
  still holds its token.  A holder that dies stops refreshing, and a waiter
  takes over once the lease expires.

A process that cannot take a lock waits, looking the key up again every
``single_flight_poll_s``; when the entry appears it loads it (a hit), when the
lock frees it takes it and compiles.  Waiting is bounded by
``single_flight_wait_s``: past it the process compiles anyway (counted), so a
holder that never lets go costs its waiters at most that long.  The holder
releases its locks when it saves the entry (or fails to), when its compile ends
without a save (Note [Releasing a flight the compile does not save]), and at
exit.

Note [Releasing a flight the compile does not save]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
The locks are taken in ``try_load`` on a miss and released by ``save``; a
compile that never reaches ``save`` must let go too, or a process that lives on
after it (a failed compile caught by the user, a graph found not cacheable
after the lookup, a save skipped) makes every other process compiling the
same graph wait ``single_flight_wait_s`` for nothing.  Two patch sites
(patching.PATCH_SITES) see the compile between the lookup and the save:

* ``create_aot_state``, the first step of the compile after a miss, receives
  ``aot_module_simplified``'s ``ExitStack`` and the ``aot_config`` whose
  ``cache_info`` names the key: :func:`create_aot_state` pushes an exit
  callback on that stack, which runs when the compile ends, however it ends.
  If it raised, the key is released.  If it returned, the save (if any) has
  happened and released it already, unless a backward is compiled lazily:
* ``_cache_autograd_info`` returns the save that a lazily compiled backward
  runs later (None when the save already happened).
  :func:`cache_autograd_info` marks such a key pending, so the exit callback
  keeps its locks for the waiters (they load the whole entry), and wraps the
  later save to release them afterwards, whether it saved, skipped or raised.

A lazy backward that never runs, or whose compile raises before its save,
still holds the locks until exit (waiters are bounded by
``single_flight_wait_s`` as before).  Each release without a save is counted
(``single_flight_released_unsaved``).  The sites are optional: where a torch
release's signatures differ, only ``save`` and exit release, as before.
"""

from __future__ import annotations

import atexit
import errno
import functools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import config
from ..counters import count


log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no local single flight
    fcntl = None  # type: ignore[assignment]

class Flight:
    """The locks a compiling process holds for one key."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.fd: int | None = None
        self.remote_tier: Any = None
        self.token: str | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- local ----------------------------------------------------------------

    def try_local(self) -> bool:
        if fcntl is None:
            return True
        from ..store import layout

        path = layout.lock_path(self.key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            log.debug("torch_aotcache: no local lock for %s: %s", self.key, e)
            return True  # no lock to be had: compile without one
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            return True
        self.fd = fd
        return True

    # -- remote ---------------------------------------------------------------

    def try_remote(self, tier: Any) -> bool:
        if tier is None:
            return True
        token = secrets.token_hex(16)
        ttl_s = config.single_flight_remote_ttl_s
        got = tier.take_lease(self.key, token, ttl_s)
        if got is None:
            return True  # remote unavailable or read-only: coordinate locally only
        if not got:
            return False
        self.remote_tier, self.token = tier, token
        self._heartbeat = threading.Thread(
            target=self._refresh, args=(ttl_s,), name="torch_aotcache-lock", daemon=True
        )
        self._heartbeat.start()
        return True

    def _refresh(self, ttl_s: float) -> None:
        deadline = time.monotonic() + config.single_flight_max_hold_s
        while not self._stop.wait(ttl_s / 3.0):
            if time.monotonic() > deadline:
                return
            # A failed refresh: the lease expires by itself and a waiter takes over.
            self.remote_tier.refresh_lease(self.key, self.token, ttl_s)

    # -- release --------------------------------------------------------------

    def release(self) -> None:
        self._stop.set()
        if self.remote_tier is not None:
            self.remote_tier.release_lease(self.key, self.token)
            self.remote_tier = None
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


_held: dict[str, Flight] = {}
_held_lock = threading.Lock()


def holding(key: str) -> bool:
    with _held_lock:
        return key in _held


def release(key: str) -> None:
    with _held_lock:
        _lazy_saves.discard(key)
        flight = _held.pop(key, None)
    if flight is not None:
        flight.release()


def release_unsaved(key: str) -> None:
    """Release ``key``'s locks after a compile that did not save (if they are
    still held); see Note [Releasing a flight the compile does not save]."""
    with _held_lock:
        _lazy_saves.discard(key)
        flight = _held.pop(key, None)
    if flight is not None:
        count("single_flight_released_unsaved")
        log.debug("torch_aotcache: compile of %s ended without a save; lock released", key)
        flight.release()


# Keys whose save waits for a lazily compiled backward.
_lazy_saves: set[str] = set()


def _held_key(aot_config: Any) -> str | None:
    key = getattr(getattr(aot_config, "cache_info", None), "cache_key", None)
    return key if isinstance(key, str) and holding(key) else None


def create_aot_state(
    original: Callable[..., Any],
    stack: Any,
    flat_fn: Any,
    fake_flat_args: Any,
    flat_args_descs: Any,
    aot_config: Any,
    fake_mode: Any,
    shape_env: Any,
) -> Any:
    """Installed over ``torch._functorch.aot_autograd.create_aot_state``:
    upstream's, after tying the key's locks to the end of the compile."""
    key = _held_key(aot_config)
    if key is not None:

        def compile_ended(exc_type: Any, exc: Any, tb: Any) -> bool:
            with _held_lock:
                lazy = key in _lazy_saves
            if exc_type is not None or not lazy:
                release_unsaved(key)
            return False

        stack.push(compile_ended)
    return original(stack, flat_fn, fake_flat_args, flat_args_descs, aot_config, fake_mode, shape_env)


def cache_autograd_info(original: Callable[..., Any], aot_config: Any, *args: Any, **kwargs: Any) -> Any:
    """Installed over ``graph_compile._cache_autograd_info``: upstream's,
    with a lazy backward's save releasing the key's locks when it is done."""
    try_save, entry = original(aot_config, *args, **kwargs)
    key = _held_key(aot_config)
    if try_save is None or key is None:
        return try_save, entry
    with _held_lock:
        _lazy_saves.add(key)

    @functools.wraps(try_save)
    def save_then_release(*a: Any, **k: Any) -> Any:
        try:
            return try_save(*a, **k)
        finally:
            release_unsaved(key)

    return save_then_release, entry


@atexit.register
def release_all() -> None:
    with _held_lock:
        flights = list(_held.values())
        _held.clear()
        _lazy_saves.clear()
    for f in flights:
        f.release()


def coordinate(key: str, lookup_again: Callable[[], Any], tier: Any) -> Any:
    """Take the key's locks, or wait for the holder's entry.

    Returns the result of ``lookup_again()`` if the entry appeared while
    waiting (the caller loads it), else None: the caller compiles, holding the
    locks until :func:`release` (called from save).
    """
    if not config.single_flight or holding(key):
        return None
    flight = Flight(key)
    deadline = time.monotonic() + config.single_flight_wait_s
    waited = False
    have_local = False
    while True:
        if not have_local:
            have_local = flight.try_local()
        if have_local and flight.try_remote(tier):
            if waited:
                # The previous holder may have saved just before letting go.
                found = lookup_again()
                if found is not None:
                    flight.release()
                    count("single_flight_waited")
                    return found
            with _held_lock:
                _held[key] = flight
            return None
        if not waited:
            waited = True
            log.info("torch_aotcache: another process is compiling %s; waiting for it", key)
        time.sleep(config.single_flight_poll_s)
        found = lookup_again()
        if found is not None:
            flight.release()
            count("single_flight_waited")
            return found
        if time.monotonic() > deadline:
            flight.release()
            count("single_flight_timeout")
            log.warning(
                "torch_aotcache: waited %.0f s for another process to compile %s; compiling here",
                config.single_flight_wait_s,
                key,
            )
            return None
