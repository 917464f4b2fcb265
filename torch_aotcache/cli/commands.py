"""
The command line: ``python -m torch_aotcache <command>`` (or ``torch-aotcache``).

Each subcommand is one function ``(args) -> exit code`` plus one row of
:data:`COMMANDS`, which says its name, its help and how it adds its own
arguments; :func:`build_parser` makes the parser from the table, so a new
command is one function and one row.

Nothing here unpickles a payload: ``ls``, ``stats``, ``explain`` and
``prune`` read headers only; ``verify``, ``export`` and ``import`` check
sizes, checksums and signatures (see Note [Entry layout] in entry/framing.py).
Nothing here but ``demo`` and ``remote`` imports torch: the store, the settings and the
torch version are found without it (Note [Reading the store without torch]
in store/layout.py).  The store inspected is the one the cache itself would use
(see Note [Store layout] in store/local.py); ``--cache-dir`` points
``TORCHINDUCTOR_CACHE_DIR`` elsewhere before anything reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..store import explain, housekeeping, layout, records, stats, local as storage
from .. import schemas
from ..entry import framing


log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: a row of :data:`COMMANDS`."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


# --------------------------------------------------------------------------
# Reading the store (headers only; never unpickles).


def _entry_paths() -> list[str]:
    # Sorted, so that output does not depend on the order os.walk lists folders.
    return sorted(storage.LocalStore().iter_paths())


def _file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f}"


def _created(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _key_of_path(path: str) -> str:
    # See Note [Store layout]: entries/<shard>/<key>/<entry_id>.entry
    return os.path.basename(os.path.dirname(path))


def _table(rows: list[tuple[str, ...]], right: set[int]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        ]
        yield "  ".join(cells).rstrip()


# --------------------------------------------------------------------------
# Subcommands.


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    if args.model not in demo.MODELS:
        print(f"unknown model {args.model!r}; choose from {', '.join(sorted(demo.MODELS))}", file=sys.stderr)
        return 2
    return demo.run_demo(model=args.model, keep=args.keep, as_json=args.json)


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    # The model names are checked when the demo runs: cli/demo.py imports torch,
    # which the other commands never do (Note [Reading the store without torch]).
    parser.add_argument("--model", default="mlp",
                        help="model whose training step is compiled (default: mlp)")
    parser.add_argument("--keep", metavar="DIR",
                        help="use DIR (new or empty) as the cache dir and keep it "
                             "afterwards; by default a temporary dir is used and removed")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON instead of a table")


def cmd_ls(args: argparse.Namespace) -> int:
    rows: list[tuple[str, ...]] = [
        ("KEY", "ENTRY", "SIZE", "MODE", "KERNELS", "FWD ms", "BWD ms", "CREATED")
    ]
    for path in _entry_paths():
        size = _file_size(path)
        size_s = _human_bytes(size) if size is not None else "?"
        name = os.path.basename(path)
        try:
            h = framing.read_header(path)
        except (OSError, schemas.EntryFormatError) as e:
            rows.append((_key_of_path(path), name, size_s, "?", "?", "?", "?", f"unreadable: {e}"))
            continue
        rows.append((
            h.key, name, size_s, h.mode, str(len(h.artifacts)),
            _ms(h.forward_cost_ns), _ms(h.backward_cost_ns), _created(h.created_ns),
        ))
    if len(rows) == 1:
        print(f"no entries in {layout.store_root()}")
        return 0
    for line in _table(rows, right={2, 4, 5, 6}):
        print(line)
    return 0


def _store_totals() -> tuple[int, int]:
    entries, _ = housekeeping.scan(layout.store_root())
    return len(entries), sum(f.size for f in entries)


def _bound_line(total: int) -> str:
    raw = layout.setting("max_size")
    try:
        bound = layout.parse_size(raw)
    except ValueError:
        return f"invalid max_size {raw!r} (TORCH_AOTCACHE_MAX_SIZE); the default {layout.DEFAULTS['max_size']} applies"
    if bound is None:
        return "none (TORCH_AOTCACHE_MAX_SIZE)"
    return f"{_human_bytes(bound)} (TORCH_AOTCACHE_MAX_SIZE), {100.0 * total / bound:.1f}% used"


def _seconds(ns: int) -> str:
    s = ns / 1e9
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def cmd_stats(args: argparse.Namespace) -> int:
    count, total = _store_totals()
    print(f"store root:  {layout.store_root()}")
    print(f"entries:     {count}")
    print(f"total size:  {total} bytes ({_human_bytes(total)})")
    print(f"bound:       {_bound_line(total)}")
    days = stats.read_days()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    week = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 6 * 86400))
    columns = {"today": stats.Totals(), "7 days": stats.Totals(), "all time": stats.Totals()}
    for day, totals in days.items():
        chosen = [columns["all time"]]
        if day >= week:
            chosen.append(columns["7 days"])
        if day == today:
            chosen.append(columns["today"])
        for c in chosen:
            for f in dataclasses.fields(stats.Totals):
                if f.name == "bypass_reasons":
                    c.bypass_reasons.update(totals.bypass_reasons)
                else:
                    setattr(c, f.name, getattr(c, f.name) + getattr(totals, f.name))
    cols = list(columns.values())

    def rate(t: stats.Totals) -> str:
        return f"{100.0 * t.hits / t.lookups:.1f}%" if t.lookups else "-"

    rows: list[tuple[str, ...]] = [
        ("", *columns),
        ("hits", *(str(c.hits) for c in cols)),
        ("misses", *(str(c.misses) for c in cols)),
        ("hit rate", *(rate(c) for c in cols)),
        ("bypasses", *(str(c.bypasses) for c in cols)),
        ("saves", *(str(c.saves) for c in cols)),
        ("evictions", *(str(c.evictions) for c in cols)),
        ("time saved", *(_seconds(c.time_saved_ns) for c in cols)),
    ]
    if any(c.frame_hits or c.frame_misses for c in cols):
        rows[-1:-1] = [
            ("frame hits", *(str(c.frame_hits) for c in cols)),
            ("frame misses", *(str(c.frame_misses) for c in cols)),
        ]
    print()
    for line in _table(rows, right={1, 2, 3}):
        print(line)
    reasons = columns["all time"].bypass_reasons
    if reasons:
        print("bypass reasons (all time):")
        width = max(len(r) for r in reasons)
        for reason, n in reasons.most_common():
            print(f"  {reason.ljust(width)}  {n}")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    count, total = _store_totals()
    root = layout.entries_root()
    storage.LocalStore().clear()
    left = len(_entry_paths())
    print(f"removed {count - left} entries ({_human_bytes(total)}) from {root}")
    if left:
        print(f"{left} entries could not be removed", file=sys.stderr)
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    torch_version = layout.torch_version() or "<torch not installed>"
    ok = bad = 0
    for path in _entry_paths():
        try:
            with open(path, "rb") as f:
                data = f.read()
            header = framing.verify_entry(data, key=None, torch_version=torch_version).header
            # The folder names the key the cache will look the entry up under.
            if header.key != _key_of_path(path):
                raise schemas.EntryFormatError(
                    f"entry is for key {header.key}, but stored under {_key_of_path(path)}"
                )
            # The file name is the hash of the guard (Note [Store layout]).
            if os.path.basename(path) != header.entry_id + layout.ENTRY_SUFFIX:
                raise schemas.EntryFormatError("entry's guard expression does not match its file name")
        except (OSError, schemas.EntryFormatError) as e:
            bad += 1
            print(f"BAD  {path}: {e}")
            continue
        ok += 1
        print(f"OK   {path}")
    print(f"{ok + bad} entries: {ok} ok, {bad} bad")
    return 1 if bad else 0


def cmd_prune(args: argparse.Namespace) -> int:
    """See Note [Bounded store] in store/housekeeping.py for what is stale."""
    root = layout.store_root()
    current = layout.torch_version()
    found: list[tuple[str, str, int]] = []
    for f in housekeeping.scan(root)[0]:
        try:
            h = framing.read_header(f.path)
        except OSError:
            continue  # not ours to judge (permissions); verify reports it
        except schemas.EntryFormatError as e:
            reason = "other entry format" if "format version" in str(e) else "unreadable entry"
            found.append((reason, f.path, f.size))
            continue
        if current is not None and h.torch_version != current:
            found.append((f"entry of torch {h.torch_version}", f.path, f.size))
    stale = housekeeping.find_stale(
        root, lock_age_s=0, quarantine_age_s=0, tmp_age_s=args.temporary_age
    )
    found += sorted((f"stale {item.kind}", item.path, item.size) for item in stale)
    old_days = [p for day, p in stats.day_files() if day < time.strftime(
        "%Y-%m-%d", time.gmtime(time.time() - stats.KEEP_DAYS * 86400))]
    found += [("old statistics", p, _file_size(p) or 0) for p in old_days]
    verb = "would remove" if args.dry_run else "removed"
    removed = freed = 0
    for reason, path, size in found:
        if not args.dry_run:
            if reason.startswith("stale lock"):
                ok = housekeeping.remove_stale([housekeeping.Stale("lock", path, size)]) == 1
            elif reason.startswith(("entry of", "other entry", "unreadable")):
                ok = housekeeping.remove_entry(path)
            else:
                try:
                    os.unlink(path)
                    ok = True
                except OSError:
                    ok = False
            if not ok:
                continue
        removed += 1
        freed += size
        print(f"{verb}  {path}  ({reason}, {_human_bytes(size)})")
    print(f"{verb} {removed} files ({_human_bytes(freed)}) from {root}")
    return 0


def _prune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    parser.add_argument("--temporary-age", type=float, default=600.0, metavar="SECONDS",
                        help="remove temporary files of writes older than this (default: 600; "
                             "younger ones may be writes in progress)")


ARCHIVE_MANIFEST = "torch_aotcache-archive.json"
ARCHIVE_FORMAT = 1


def _add_member(tar: Any, name: str, data: bytes, mtime: int) -> None:
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    tar.addfile(info, io.BytesIO(data))


def cmd_export(args: argparse.Namespace) -> int:
    """Write chosen entries (all by default) into one tar file; only entries
    that verify are exported (see Note [Entry layout] in entry/framing.py).  The
    archive is written whole or not at all (store/records.py's ``atomic_output``)."""
    import json
    import tarfile

    torch_version = layout.torch_version() or "<torch not installed>"
    wanted = set(args.key or ())
    exported: list[tuple[str, int]] = []
    bad = 0
    try:
        with records.atomic_output(args.archive, mode=records.SHARED_FILE_MODE) as out, tarfile.open(
            fileobj=out, mode="w"
        ) as tar:
            for path in _entry_paths():
                key = _key_of_path(path)
                if wanted and key not in wanted:
                    continue
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                    header = framing.verify_entry(data, key=key, torch_version=torch_version).header
                except (OSError, schemas.EntryFormatError) as e:
                    bad += 1
                    print(f"skipped {path}: {e}", file=sys.stderr)
                    continue
                name = f"{layout.ENTRIES}/{header.key}/{header.entry_id}{layout.ENTRY_SUFFIX}"
                _add_member(tar, name, data, int(header.created_ns // 1_000_000_000))
                exported.append((header.key, len(data)))
            manifest = {
                "format": ARCHIVE_FORMAT,
                "torch_version": torch_version,
                "entries": [{"key": k, "size": n} for k, n in exported],
            }
            _add_member(tar, ARCHIVE_MANIFEST, json.dumps(manifest, indent=1).encode(), int(time.time()))
    except OSError as e:
        print(f"cannot write archive {args.archive}: {e}", file=sys.stderr)
        return 2
    print(f"exported {len(exported)} entries ({_human_bytes(sum(n for _, n in exported))}) to {args.archive}")
    missing = wanted - {k for k, _ in exported}
    if missing:
        print(f"no entry found for {len(missing)} of the keys given", file=sys.stderr)
    return 1 if bad or missing else 0


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archive", metavar="ARCHIVE", help="the file to write (a tar file)")
    parser.add_argument("--key", action="append", metavar="KEY",
                        help="export only this key's entries (repeatable; default: all)")


# An entry in an archive larger than this is taken as corruption.
MAX_IMPORTED_ENTRY_BYTES = 4 << 30


def cmd_import(args: argparse.Namespace) -> int:
    """Verify each entry of an archive as a lookup would (format, torch
    version, sizes, checksums, signature when signing is on) and store it
    under its own key; nothing is extracted by the archive's names."""
    import tarfile

    torch_version = layout.torch_version() or "<torch not installed>"
    store = storage.LocalStore()
    imported = bad = 0
    try:
        tar = tarfile.open(args.archive, "r:*")
    except (OSError, tarfile.TarError) as e:
        print(f"cannot read archive {args.archive}: {e}", file=sys.stderr)
        return 2
    with tar:
        for member in tar:
            if member.name == ARCHIVE_MANIFEST or not member.name.endswith(layout.ENTRY_SUFFIX):
                continue
            try:
                if not member.isfile() or member.size > MAX_IMPORTED_ENTRY_BYTES:
                    raise schemas.EntryFormatError("not a regular file of a plausible size")
                f = tar.extractfile(member)
                if f is None:
                    raise schemas.EntryFormatError("not a regular file")
                data = f.read()
                header = framing.verify_entry(data, key=None, torch_version=torch_version).header
                store.put(header.key, header.entry_id, data)
            except (schemas.EntryFormatError, tarfile.TarError, OSError) as e:
                bad += 1
                print(f"refused {member.name}: {e}", file=sys.stderr)
                continue
            imported += 1
    print(f"imported {imported} entries into {layout.store_root()}" + (f"; refused {bad}" if bad else ""))
    return 1 if bad else 0


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archive", metavar="ARCHIVE", help="a file written by export")


def cmd_remote(args: argparse.Namespace) -> int:
    from . import remote_commands

    return remote_commands.run(args)


def _remote_arguments(parser: argparse.ArgumentParser) -> None:
    from . import remote_commands

    remote_commands.add_arguments(parser)


def cmd_explain(args: argparse.Namespace) -> int:
    """See Note [Explaining misses] in store/explain.py."""
    misses = explain.recent_misses(args.limit)
    if not misses:
        print(f"no misses recorded in {explain.misses_path()}")
        return 0
    headers = explain.store_headers()
    for i, miss in enumerate(misses):
        if i:
            print()
        for line in explain.explain_lines(miss, headers):
            print(line)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text}")
    return value


def _explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_positive_int, default=10, metavar="N",
                        help="explain the N most recent misses (default: 10)")


# The subcommands, in the order --help lists them.  One row per command.
COMMANDS: tuple[Command, ...] = (
    Command("demo", "compile a training step cold, then warm in a second process, "
            "and compare", cmd_demo, _demo_arguments),
    Command("ls", "list the entries in the local store (headers only)", cmd_ls),
    Command("stats", "entries and bytes against the bound; hits, misses, bypasses "
            "(by reason) and compile time saved, today, this week and overall", cmd_stats),
    Command("explain", "for recent misses, the nearest stored entry and what differed",
            cmd_explain, _explain_arguments),
    Command("verify", "check every entry's header, size and checksum; "
            "exit 1 if any is bad", cmd_verify),
    Command("prune", "remove entries of other torch versions and entry formats, "
            "stale locks, quarantine and temporary files", cmd_prune, _prune_arguments),
    Command("export", "write the store's entries (or chosen keys) to one archive file",
            cmd_export, _export_arguments),
    Command("import", "verify and store the entries of an archive written by export",
            cmd_import, _import_arguments),
    Command("clear", "remove every entry from the local store", cmd_clear),
    Command("remote", "the remote store (TORCH_AOTCACHE_REMOTE_URL or --url): ls, stats, prune (by age and "
            "size), push local entries to it, pull its entries into the local store", cmd_remote,
            _remote_arguments),
)


def _global_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument(
        "--cache-dir", metavar="DIR", default=default,
        help="Inductor cache dir to use (sets TORCHINDUCTOR_CACHE_DIR; "
             "the store is DIR/torch_aotcache)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m torch_aotcache",
        description="Inspect and exercise the torch_aotcache AOTAutograd cache.",
    )
    _global_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        # Global options also after the command name; SUPPRESS keeps a value
        # given before it.
        _global_options(p, default=argparse.SUPPRESS)
        if command.add_arguments is not None:
            command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cache_dir is not None:
        # Read on every call of Inductor's cache_dir(), so this takes effect
        # for everything below.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(args.cache_dir)
    return args.run(args)
