"""
``python -m torch_aotcache remote <action>``: the remote store from the
command line (Note [Remote backends] in tiers/backend.py).

* ``ls`` and ``stats`` list names, sizes and ages (nothing is downloaded);
* ``prune`` removes entries older than ``--older-than`` days and then the
  oldest ones until the store is within ``--max-size``, at most ``--limit``
  per run; a reader that listed an entry pruned since gets a miss, never an
  error (safe while others read);
* ``push`` verifies the local store's entries (checksums, signature when
  signing is on) and writes them to the remote store;
* ``pull`` reads the remote entries, verifies each as a lookup would (the
  same trust rules: signed, or unsigned trusted explicitly) and writes the
  good ones to the local store.

Unlike the local commands, these import torch: names in the remote store
carry the entry format and ``torch.compiler.config.cache_key_tag``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("ls", "stats", "prune", "push", "pull"))
    parser.add_argument("--url", metavar="URL", default=None,
                        help="the remote store (default: TORCH_AOTCACHE_REMOTE_URL, then the Redis settings)")
    parser.add_argument("--key", action="append", metavar="KEY", help="push/pull only this key (repeatable)")
    parser.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                        help="prune: remove entries last written more than DAYS ago")
    parser.add_argument("--max-size", default=None, metavar="SIZE",
                        help="prune: then remove the oldest entries until the store holds at most SIZE (e.g. 20GB)")
    parser.add_argument("--limit", type=int, default=10000, metavar="N", help="prune: remove at most N entries")
    parser.add_argument("--dry-run", action="store_true", help="prune: list what would be removed")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _open(url: str | None) -> Any:
    from .. import config
    from ..tiers import backend, remote

    url = url or remote.configured_url(False)
    if not url:
        print("no remote store: give --url or set TORCH_AOTCACHE_REMOTE_URL", file=sys.stderr)
        return None
    with config.patch(remote_sync_writes=True):
        try:
            return remote.open_tier(url)
        except Exception as e:  # noqa: BLE001 - a clear message, not a traceback
            print(f"cannot open remote store {backend.redact(url)}: {e}", file=sys.stderr)
            return None


def run(args: argparse.Namespace) -> int:
    tier = _open(args.url)
    if tier is None:
        return 2
    try:
        action = {"ls": _ls, "stats": _stats, "prune": _prune, "push": _push, "pull": _pull}[args.action]
        return action(tier, args)
    except Exception as e:  # noqa: BLE001 - the store failed: say so
        print(f"remote store {tier.shown_url} failed: {str(e).splitlines()[0] if str(e) else e!r}", file=sys.stderr)
        return 2
    finally:
        tier.close()


def _ls(tier: Any, args: argparse.Namespace) -> int:
    objects = sorted(tier.backend.scan(), key=lambda o: (o.key, o.entry_id))
    if not objects:
        print(f"no entries in {tier.shown_url}")
        return 0
    for o in objects:
        when = (datetime.datetime.fromtimestamp(o.modified).strftime("%Y-%m-%d %H:%M:%S")
                if o.modified is not None else "-")
        print(f"{o.key}  {o.entry_id}  {_human(o.size):>10}  {when}")
    return 0


def _stats(tier: Any, args: argparse.Namespace) -> int:
    objects = list(tier.backend.scan())
    print(f"remote store: {tier.shown_url}")
    print(f"entries:      {len(objects)} ({len({o.key for o in objects})} keys)")
    total = sum(o.size for o in objects)
    print(f"total size:   {total} bytes ({_human(total)}, compressed)")
    dated = [o.modified for o in objects if o.modified is not None]
    if dated:
        now = time.time()
        print(f"oldest:       {(now - min(dated)) / 86400:.1f} days ago")
        print(f"newest:       {(now - max(dated)) / 86400:.1f} days ago")
    return 0


def _prune(tier: Any, args: argparse.Namespace) -> int:
    from ..store import layout

    bound = layout.parse_size(args.max_size) if args.max_size else None
    objects = list(tier.backend.scan())
    if args.older_than is not None and any(o.modified is None for o in objects):
        print("this store does not date its entries (use its own expiry, e.g. TORCH_AOTCACHE_REMOTE_TTL for "
              "Redis); --older-than applies to none", file=sys.stderr)
    oldest_first = sorted(objects, key=lambda o: (o.modified is None, o.modified or 0.0))
    chosen = []
    if args.older_than is not None:
        cutoff = time.time() - args.older_than * 86400
        chosen = [o for o in oldest_first if o.modified is not None and o.modified < cutoff]
    if bound is not None:
        left = sum(o.size for o in objects) - sum(o.size for o in chosen)
        for o in oldest_first:
            if left <= bound:
                break
            if o not in chosen:
                chosen.append(o)
                left -= o.size
    chosen = chosen[: max(0, args.limit)]
    verb = "would remove" if args.dry_run else "removed"
    done = freed = 0
    for o in chosen:
        if not args.dry_run:
            try:
                tier.backend.delete(o.key, o.entry_id)
            except FileNotFoundError:
                continue  # another prune was first
        done += 1
        freed += o.size
        print(f"{verb}  {o.key}/{o.entry_id}  ({_human(o.size)})")
    print(f"{verb} {done} entries ({_human(freed)}) from {tier.shown_url}")
    return 0


def _push(tier: Any, args: argparse.Namespace) -> int:
    from ..entry import framing
    from ..schemas import EntryFormatError
    from ..store import layout, local

    torch_version = layout.torch_version() or "<torch not installed>"
    wanted = set(args.key or ())
    pushed = bad = 0
    for path in sorted(local.LocalStore().iter_paths()):
        try:
            with open(path, "rb") as f:
                data = f.read()
            header = framing.verify_entry(data, key=None, torch_version=torch_version).header
        except (OSError, EntryFormatError) as e:
            bad += 1
            print(f"skipped {path}: {e}", file=sys.stderr)
            continue
        if wanted and header.key not in wanted:
            continue
        tier.backend.write(header.key, header.entry_id, tier.encode(data), 0)
        pushed += 1
    print(f"pushed {pushed} entries to {tier.shown_url}" + (f"; skipped {bad}" if bad else ""))
    return 1 if bad else 0


def _pull(tier: Any, args: argparse.Namespace) -> int:
    from .. import config
    from ..entry import framing, signing
    from ..schemas import EntryFormatError
    from ..store import layout, local

    if not signing.enabled() and not config.trust_unsigned_remote:
        print("no signing key is configured: remote entries are not trusted. Configure "
              "TORCH_AOTCACHE_SIGNING_KEY(_FILE), or set TORCH_AOTCACHE_TRUST_UNSIGNED_REMOTE=1", file=sys.stderr)
        return 2
    torch_version = layout.torch_version() or "<torch not installed>"
    wanted = set(args.key or ())
    keys = sorted({o.key for o in tier.backend.scan()} | wanted)
    store = local.LocalStore()
    pulled = bad = 0
    for key in keys:
        if wanted and key not in wanted:
            continue
        for entry_id, value in tier.backend.read(key).items():
            data = tier.decode(value) if isinstance(value, bytes) else None
            try:
                if data is None:
                    raise EntryFormatError("not an entry")
                header = framing.verify_entry(data, key=key, torch_version=torch_version).header
                store.put(key, header.entry_id, data)
            except (EntryFormatError, OSError) as e:
                bad += 1
                print(f"refused {key}/{entry_id}: {e}", file=sys.stderr)
                continue
            pulled += 1
    print(f"pulled {pulled} entries into {layout.store_root()}" + (f"; refused {bad}" if bad else ""))
    return 1 if bad else 0
