"""
What the cache did, over time: hits, misses, bypasses (by reason), saves and
evictions, kept on disk for ``python -m torch_aotcache stats``.

Note [Statistics on disk]
~~~~~~~~~~~~~~~~~~~~~~~~~
Each event is one short line appended to ``<store>/stats/<YYYY-MM-DD>.log``
(UTC day): ``hit <ns saved>``, ``miss``, ``bypass <category>``,
``frame_hit <ns saved>``, ``frame_miss`` (Dynamo's frames),
``save <bytes>``, ``evict <entries>:<bytes>`` (one line per eviction).  One ``open(O_APPEND)``, one ``write``
and one ``close``: a few microseconds, no read-modify-write, no lock.  Appends
of a line this short from many processes do not interleave on a local file
system, and a torn or unknown line (a full disk, an NFS quirk) is skipped by
the reader, never an error.  Recording never raises: a store that cannot be
written is counted by its writes of entries already (Note [Disk faults] in
store/local.py); the statistics just go without.

Rejected: a counters file per day rewritten atomically on each event (a read,
a write and a rename per hit, plus a lock so that concurrent processes do not
lose increments), and a file per process (a file per process start, which is
what cluster users' inode quotas cannot afford).

Bypass reasons are free text; :data:`BYPASS_CATEGORIES` groups them into a
few categories, and each category is also a counter
``bypass_<category>`` in ``counters["torch_aotcache"]`` (counters.py lists
them all).  The day files are removed after :data:`KEEP_DAYS` days by the
store's housekeeping (store/housekeeping.py).

This module is a leaf (layout only) and imports nothing outside the standard
library: the command line reads these files without torch.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from collections.abc import Iterable

from . import layout


log = logging.getLogger(__name__)

KEEP_DAYS = 90

# (category, substrings of the reason that put a bypass in it), in order;
# the first match wins.  "error" is a bypass caused by an unexpected
# exception rather than by a reason the cache gave.
BYPASS_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unsupported_op", ("Unsupported call_function", "Unsupported call_method", "Unsupported node op",
                        "has no FX graph", "is allow_in_graph")),
    ("setting", ("config ", "freezing", "FX graph cache is not enabled", "fakify_first_call",
                 "requires triton", "is set to False")),
    ("unkeyable", ("cannot key", "has no name", "uuid()", "constant tensor", "get_attr",
                   "used before it is defined", "context_fn", "Triton kernel", "node outside",
                   "autocast region")),
    ("error", ()),
    ("other", ()),
)
CATEGORY_NAMES = tuple(name for name, _ in BYPASS_CATEGORIES)
# Reasons that begin with upstream's words for an unsupported target but are
# due to a setting (Note [Bypass messages are a contract] in autograd_cache.py):
# checked before BYPASS_CATEGORIES.
SETTING_FIRST = ("autograd_cache_allow_custom_autograd_functions is set to False",)


def bypass_category(reason: str, hard: bool = False) -> str:
    """The category of a bypass with message ``reason``; ``hard``: the bypass
    came from an unexpected exception."""
    if any(n in reason for n in SETTING_FIRST):
        return "setting"
    for name, needles in BYPASS_CATEGORIES:
        if any(n in reason for n in needles):
            return name
    return "error" if hard else "other"


def stats_dir() -> str:
    return layout.stats_dir()


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def enabled() -> bool:
    return bool(layout.setting("record_stats"))


def append_line(path: str, line: bytes) -> int:
    """Append ``line`` to ``path`` in one ``O_APPEND`` write (concurrent
    writers never interleave within a line), creating the file and its
    folder if missing; returns the file's size after it.  Raises OSError."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, flags, 0o666)
    try:
        os.write(fd, line)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def record(kind: str, value: int | str = "") -> None:
    """Append one event; never raises.  See Note [Statistics on disk]."""
    try:
        if not enabled():
            return
        append_line(os.path.join(stats_dir(), _day(time.time()) + ".log"), f"{kind} {value}\n".encode())
    except Exception as e:  # noqa: BLE001 - statistics never fail a compile
        log.debug("torch_aotcache: cannot record %s in the statistics: %s", kind, e)


@dataclasses.dataclass
class Totals:
    """Counts over some days."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    saves: int = 0
    saved_bytes: int = 0
    evictions: int = 0
    evicted_bytes: int = 0
    time_saved_ns: int = 0
    # Dynamo's frames (Note [Caching Dynamo's frames] in dynamo/__init__.py).
    frame_hits: int = 0
    frame_misses: int = 0
    bypass_reasons: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def add(self, kind: str, value: str) -> None:
        if kind == "hit":
            self.hits += 1
            self.time_saved_ns += int(value or 0)
        elif kind == "miss":
            self.misses += 1
        elif kind == "frame_hit":
            self.frame_hits += 1
            self.time_saved_ns += int(value or 0)
        elif kind == "frame_miss":
            self.frame_misses += 1
        elif kind == "bypass":
            self.bypasses += 1
            self.bypass_reasons[value or "other"] += 1
        elif kind == "save":
            self.saves += 1
            self.saved_bytes += int(value or 0)
        elif kind == "evict":
            n, _, size = value.partition(":")
            self.evictions += int(n or 0)
            self.evicted_bytes += int(size or 0)

    @property
    def lookups(self) -> int:
        return self.hits + self.misses


def day_files() -> list[tuple[str, str]]:
    """(day, path) of every statistics file, oldest first."""
    folder = stats_dir()
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(
        (n[: -len(".log")], os.path.join(folder, n))
        for n in names
        if n.endswith(".log") and not n.startswith(".")
    )


def _parse(lines: Iterable[bytes], totals: Totals) -> None:
    for raw in lines:
        if not raw.endswith(b"\n"):
            continue  # torn by a writer that died mid-line
        parts = raw.decode("ascii", "replace").split()
        if not parts:
            continue
        try:
            totals.add(parts[0], parts[1] if len(parts) > 1 else "")
        except ValueError:
            continue


def read_days() -> dict[str, Totals]:
    """Totals per day (``YYYY-MM-DD``, UTC), oldest first."""
    result: dict[str, Totals] = {}
    for day, path in day_files():
        totals = Totals()
        try:
            with open(path, "rb") as f:
                _parse(f, totals)
        except OSError:
            continue
        result[day] = totals
    return result


def remove_old_days(now: float | None = None, keep_days: int = KEEP_DAYS) -> int:
    """Remove the day files older than ``keep_days``; returns how many."""
    cutoff = _day((now if now is not None else time.time()) - keep_days * 86400)
    removed = 0
    for day, path in day_files():
        if day < cutoff:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
    return removed
