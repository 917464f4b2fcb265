"""
Why did it miss?  Recent misses, the nearest entry in the store for each, and
by name what differed.

Note [Explaining misses]
~~~~~~~~~~~~~~~~~~~~~~~~
A key is a digest over named components, and every entry records its
components in its header (Note [What goes into a key] in autograd_cache.py).
At each miss the compiling process appends one JSON line to
``<store>/explain/misses.jsonl``: the key, its components, and a few readable
facts behind the components that users change most (``detail``):

``runtime``    the runtime component's ``name=value`` lines (grad mode, autocast...)
``tag``        ``torch.compiler.config.cache_key_tag``
``inductor``   Inductor options whose values differ from their defaults, each
``functorch``  with a short digest of its value (functorch's likewise)
``inputs``     the inputs component's lines (dtype, shape, stride, device per input)
``ops``        per registered operator the graph calls, a short digest of each
               facet (schema, fake, autograd, ...), so a miss names it:
               ``differs: op ns::acc schema``
``torch``      ``torch.__version__``

The entry saved after that miss carries the same ``detail`` in its header
(``extra["explain"]``), so two keys can be compared option by option.  The
file is bounded: past ``MAX_BYTES`` it is rewritten with its last ``KEEP``
lines (atomically; a concurrent append may be lost, never the file).

``python -m torch_aotcache explain`` reads the recent misses and the store's
headers (never a payload) and prints, for each miss, the nearest entry (one
with the same graph if there is one, else the one with most components
equal, newest first) and the components that differ, refined by ``detail``
where both sides have it: ``runtime: grad True -> False``,
``inductor: max_autotune``, ``tag: 'a' -> 'b'``.  The same text is logged at
the miss under the logger ``torch_aotcache.store.explain`` at INFO
(``TORCH_LOGS="torch_aotcache.store.explain"``, or Python's logging); the store is
only searched when that logger is on.

This module does not import torch (the command line uses it); the compiling
side (autograd_cache.py) computes ``detail``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from . import layout, stats
from .. import schemas
from ..entry import framing


log = logging.getLogger(__name__)

MAX_BYTES = 256 * 1024
KEEP = 64
# Keys and mode of Dynamo's frames (dynamo/frames.py, which imports torch).
FRAME_KEY_PREFIX = layout.FRAME_KEY_PREFIX
FRAME_MODE = schemas.MODE_FRAME
# The log line at a miss searches at most this many of the newest entries.
LOG_SEARCH_LIMIT = 2000


@dataclasses.dataclass
class Miss:
    key: str
    time_ns: int
    components: dict[str, str]
    detail: dict[str, Any]


def misses_path() -> str:
    return layout.misses_path()


def remember_miss(miss: Miss) -> None:
    """Append ``miss`` to the bounded misses file; never raises."""
    try:
        path = misses_path()
        line = (json.dumps(dataclasses.asdict(miss), sort_keys=True, separators=(",", ":")) + "\n").encode()
        size = stats.append_line(path, line)
        if size > MAX_BYTES:
            _trim(path)
    except Exception as e:  # noqa: BLE001 - explaining never fails a compile
        log.debug("torch_aotcache: cannot remember a miss: %s", e)


def _trim(path: str) -> None:
    from .records import write_atomically

    with open(path, "rb") as f:
        lines = f.readlines()
    write_atomically(path, b"".join(lines[-KEEP:]), mode=0o666)


def recent_misses(limit: int | None = None) -> list[Miss]:
    """The recorded misses, oldest first (the last ``limit`` only)."""
    try:
        with open(misses_path(), "rb") as f:
            raw = f.readlines()
    except OSError:
        return []
    found = []
    for line in raw:
        try:
            obj = json.loads(line)
            found.append(Miss(str(obj["key"]), int(obj["time_ns"]), dict(obj["components"]), dict(obj["detail"])))
        except (ValueError, KeyError, TypeError):
            continue  # torn or foreign line
    # The same key missed again (e.g. in several processes) is explained once.
    latest: dict[str, Miss] = {}
    for m in found:
        latest.pop(m.key, None)
        latest[m.key] = m
    result = list(latest.values())
    return result[-limit:] if limit else result


# --------------------------------------------------------------------------
# Comparing


def _lines_to_dict(text: Any) -> dict[str, str]:
    if isinstance(text, list):
        return {str(i): str(v) for i, v in enumerate(text)}
    result = {}
    for line in str(text).splitlines():
        name, _, value = line.partition("=")
        result[name] = value
    return result


def _options(name: str, mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    a, b = mine.get(name), theirs.get(name)
    if not isinstance(a, dict) or not isinstance(b, dict):
        return name
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return f"{name}: " + ", ".join(changed) if changed else name


def differences(
    components: dict[str, str], detail: dict[str, Any], header: schemas.EntryHeader
) -> list[str]:
    """What differs between a key (``components``, ``detail``) and an entry,
    by component name, refined by the details both sides recorded."""
    theirs = header.extra.get(schemas.EXTRA_EXPLAIN)
    theirs = theirs if isinstance(theirs, dict) else {}
    out = []
    for name in list(components) + [n for n in header.components if n not in components]:
        if components.get(name) == header.components.get(name):
            continue
        if name in ("inductor", "functorch"):
            out.append(_options(name, detail, theirs))
        elif name == "runtime" and "runtime" in detail and "runtime" in theirs:
            a, b = _lines_to_dict(detail["runtime"]), _lines_to_dict(theirs["runtime"])
            fields = [f"{k} {b.get(k)} -> {a.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            out.append("runtime: " + "; ".join(fields) if fields else "runtime")
        elif name == "inputs" and "inputs" in detail and "inputs" in theirs:
            a, b = _lines_to_dict(detail["inputs"]), _lines_to_dict(theirs["inputs"])
            fields = [
                f"input {k}: {b.get(k, '(none)')} -> {a.get(k, '(none)')}"
                for k in sorted(set(a) | set(b), key=lambda s: (len(s), s))
                if a.get(k) != b.get(k)
            ]
            out.append("inputs: " + "; ".join(fields) if fields else "inputs")
        elif name == "ops" and isinstance(detail.get("ops"), dict) and isinstance(theirs.get("ops"), dict):
            out.extend(_op_differences(detail["ops"], theirs["ops"]) or ["ops"])
        elif name == "tag" and "tag" in detail and "tag" in theirs:
            out.append(f"tag: {theirs['tag']!r} -> {detail['tag']!r}")
        elif name in ("system", "torch_src") and detail.get("torch") and theirs.get("torch", header.torch_version):
            before = theirs.get("torch", header.torch_version)
            if before != detail["torch"]:
                out.append(f"{name}: torch {before} -> {detail['torch']}")
            else:
                out.append(f"{name}: same torch version, another build or machine")
        else:
            out.append(name)
    return out


def _op_differences(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """``op ns::acc schema``: each registered operator's facets that differ
    (Note [Registered operators in the key] in key/registered_ops.py)."""
    out = []
    for op in sorted(set(mine) | set(theirs)):
        a, b = mine.get(op), theirs.get(op)
        if not isinstance(a, dict) or not isinstance(b, dict):
            out.append(f"op {op} {'registered' if a is not None else 'gone'}")
            continue
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if changed:
            out.append(f"op {op} " + ", ".join(changed))
    return out


def nearest(components: dict[str, str], headers: Iterable[schemas.EntryHeader]) -> schemas.EntryHeader | None:
    """The entry most like a key: same graph first, then most equal components, then newest."""
    best = None
    best_rank: tuple[int, int, int] | None = None
    for h in headers:
        same = sum(1 for k, v in components.items() if h.components.get(k) == v)
        rank = (int(h.components.get("graph") == components.get("graph")), same, h.created_ns)
        if best_rank is None or rank > best_rank:
            best, best_rank = h, rank
    return best


def store_headers(limit: int | None = None) -> list[schemas.EntryHeader]:
    """Headers of the store's entries (the ``limit`` newest by file time)."""
    from . import housekeeping

    entries, _ = housekeeping.scan(layout.store_root())
    if limit is not None and len(entries) > limit:
        entries = sorted(entries, key=lambda f: f.mtime_ns, reverse=True)[:limit]
    headers = []
    for f in entries:
        try:
            headers.append(framing.read_header(f.path))
        except (OSError, schemas.EntryFormatError):
            continue
    return headers


def explain_lines(miss: Miss, headers: list[schemas.EntryHeader]) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(miss.time_ns / 1e9))
    lines = [f"miss {miss.key} at {when}"]
    # Only what was stored before the miss can explain it (the compile that
    # followed saved an entry under the missed key itself).
    # A frame's miss is compared with frames, a graph's with graphs.
    frame = miss.key.startswith(FRAME_KEY_PREFIX)
    before = [h for h in headers if h.created_ns < miss.time_ns and (h.mode == FRAME_MODE) == frame]
    if any(h.key == miss.key for h in before):
        if frame:
            lines.append(f"  the store held this key; its frame was not used: {miss.detail.get('reason', '?')}")
        else:
            lines.append("  the store held this key: its entries' shape guards failed for these inputs")
        return lines
    entry = nearest(miss.components, (h for h in before if h.key != miss.key))
    if entry is None:
        lines.append("  nearest entry: none (the store holds no other entry)")
        return lines
    equal = sum(1 for k, v in miss.components.items() if entry.components.get(k) == v)
    lines.append(f"  nearest entry: {entry.key} ({equal} of {len(miss.components)} components equal)")
    diffs = differences(miss.components, miss.detail, entry)
    if diffs:
        lines.extend(f"  differs: {d}" for d in diffs)
    else:
        lines.append("  differs: nothing recorded (the key's digest itself)")
    return lines


def log_miss(miss: Miss) -> None:
    """The explanation of ``miss`` as one INFO line, when the logger is on; never raises."""
    try:
        if not log.isEnabledFor(logging.INFO):
            return
        log.info("torch_aotcache: %s", "\n".join(explain_lines(miss, store_headers(LOG_SEARCH_LIMIT))))
    except Exception as e:  # noqa: BLE001 - explaining never fails a compile
        log.debug("torch_aotcache: cannot explain a miss: %s", e)
