"""
Warnings given once per process.

A cache problem that repeats (a full disk, a dead Redis, an unreadable key)
is worth one warning and a counter, not a warning per compile.  Every such
warning in the package goes through :func:`first_time` with a tag naming
what it is about; :func:`reset` makes the process forget them (tests start
each case as a new process would).
"""

from __future__ import annotations

import threading


_seen: set[str] = set()
_lock = threading.Lock()


def first_time(tag: str) -> bool:
    """True the first time ``tag`` is asked about in this process."""
    with _lock:
        if tag in _seen:
            return False
        _seen.add(tag)
        return True


def reset(prefix: str = "") -> None:
    """Forget the tags that start with ``prefix`` (all by default)."""
    with _lock:
        _seen.difference_update([t for t in _seen if t.startswith(prefix)])
