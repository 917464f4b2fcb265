"""
The command line: ``python -m torch_aotcache <command>`` (or ``torch-aotcache``).

Each subcommand is one function ``(args) -> exit code`` plus one row of
:data:`COMMANDS`, which says its name, its help and how it adds its own
arguments; :func:`build_parser` makes the parser from the table, so a new
command (prune, export/import, explain) is one function and one row.

Nothing here unpickles a payload: ``ls`` and ``stats`` read headers only, and
``verify`` checks sizes and checksums (see Note [Entry layout] in schemas.py).
The store inspected is the one under Inductor's cache dir, as the cache itself
would use it (see Note [Store layout] in storage.py); ``--cache-dir`` points
``TORCHINDUCTOR_CACHE_DIR`` elsewhere before anything reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import sys
from collections.abc import Callable, Iterator

from . import paths, schemas, storage


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
    # The model names are checked when the demo runs: demo.py imports torch,
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
            h = schemas.read_header(path)
        except (OSError, schemas.EntryFormatError) as e:
            rows.append((_key_of_path(path), name, size_s, "?", "?", "?", "?", f"unreadable: {e}"))
            continue
        rows.append((
            h.key, name, size_s, h.mode, str(len(h.artifacts)),
            _ms(h.forward_cost_ns), _ms(h.backward_cost_ns), _created(h.created_ns),
        ))
    if len(rows) == 1:
        print(f"no entries in {storage.store_root()}")
        return 0
    for line in _table(rows, right={2, 4, 5, 6}):
        print(line)
    return 0


def _store_totals() -> tuple[int, int]:
    paths = _entry_paths()
    return len(paths), sum(_file_size(p) or 0 for p in paths)


def cmd_stats(args: argparse.Namespace) -> int:
    count, total = _store_totals()
    print(f"entries:     {count}")
    print(f"total size:  {total} bytes ({_human_bytes(total)})")
    print(f"store root:  {storage.store_root()}")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    count, total = _store_totals()
    root = storage.entries_root()
    storage.LocalStore().clear()
    left = len(_entry_paths())
    print(f"removed {count - left} entries ({_human_bytes(total)}) from {root}")
    if left:
        print(f"{left} entries could not be removed", file=sys.stderr)
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    torch_version = paths.torch_version() or "<torch not installed>"
    ok = bad = 0
    for path in _entry_paths():
        try:
            with open(path, "rb") as f:
                data = f.read()
            header, _ = schemas.verify_entry(data, key=None, torch_version=torch_version)
            # The folder names the key the cache will look the entry up under.
            if header.key != _key_of_path(path):
                raise schemas.EntryFormatError(
                    f"entry is for key {header.key}, but stored under {_key_of_path(path)}"
                )
            # The file name is the hash of the guard (Note [Store layout]).
            if os.path.basename(path) != header.entry_id + storage.ENTRY_SUFFIX:
                raise schemas.EntryFormatError("entry's guard expression does not match its file name")
        except (OSError, schemas.EntryFormatError) as e:
            bad += 1
            print(f"BAD  {path}: {e}")
            continue
        ok += 1
        print(f"OK   {path}")
    print(f"{ok + bad} entries: {ok} ok, {bad} bad")
    return 1 if bad else 0


# The subcommands, in the order --help lists them.  One row per command.
COMMANDS: tuple[Command, ...] = (
    Command("demo", "compile a training step cold, then warm in a second process, "
            "and compare", cmd_demo, _demo_arguments),
    Command("ls", "list the entries in the local store (headers only)", cmd_ls),
    Command("stats", "count the entries and bytes in the local store", cmd_stats),
    Command("verify", "check every entry's header, size and checksum; "
            "exit 1 if any is bad", cmd_verify),
    Command("clear", "remove every entry from the local store", cmd_clear),
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
