"""
Tests of the command line (``python -m torch_aotcache``).

The store the commands inspect is made by real compiles inside
``fresh_cache()``, once per test class, and copied into each test's own cache
dir, so a test that corrupts or clears its store leaves the others' alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import unittest
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import expecttest
import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import fresh_cache

import torch_aotcache  # noqa: F401  (installs itself)
from torch_aotcache.cli import commands as cli
from torch_aotcache.entry import framing
from torch_aotcache.store import layout, local as storage

from common import slow


def _compile_two_functions() -> None:
    torch._dynamo.reset()
    counters.clear()

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x.sin() * 2).sum()

    def g(x: torch.Tensor) -> torch.Tensor:
        return (x.cos() + x).sum()

    for fn in (f, g):
        x = torch.randn(8, requires_grad=True)
        torch.compile(fn)(x).backward()
    # Also run by setUpClass, outside any test method: a plain check.
    if counters["aot_autograd"]["autograd_cache_saved"] != 2:
        raise AssertionError(dict(counters["aot_autograd"]))
    torch._dynamo.reset()


@contextlib.contextmanager
def _cache_dir(path: Path) -> Iterator[Path]:
    with mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": str(path)}):
        yield path


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "torch_aotcache" / "entries").rglob("*.entry"))


def _flip_payload_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    _, payload = framing.decode_header(bytes(data))
    offset = len(data) - len(payload) + len(payload) // 2
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(argv)
    return rc, out.getvalue()


def _normalize(text: str, cache: Path) -> str:
    text = text.replace(str(cache), "<cache>")
    text = re.sub(r"tac[0-9a-f]{40}", "<key>", text)
    text = re.sub(r"/entries/[0-9a-f_]{2}/", "/entries/<shard>/", text)
    return re.sub(r"[0-9a-f]{24}\.entry", "<id>.entry", text)


# --------------------------------------------------------------------------


class TestCliParser(unittest.TestCase):
    def test_every_command_is_in_the_parser(self) -> None:
        parser = cli.build_parser()
        positional = {"export": ["a.tar"], "import": ["a.tar"], "remote": ["stats"]}
        for command in cli.COMMANDS:
            rest = positional.get(command.name, [])
            args = parser.parse_args(["--cache-dir", "/x", command.name, *rest])
            self.assertTrue(args.run is command.run and args.cache_dir == "/x")
            # The global option is also accepted after the command name.
            args = parser.parse_args([command.name, *rest, "--cache-dir", "/y"])
            self.assertTrue(args.run is command.run and args.cache_dir == "/y")
        self.assertEqual(len({c.name for c in cli.COMMANDS}), len(cli.COMMANDS))


@slow
class TestCliOnAStore(unittest.TestCase):
    """Each test has its own copy of a store of two entries (made once for the
    class by real compiles); TORCHINDUCTOR_CACHE_DIR points at it."""

    template: Path

    @classmethod
    def setUpClass(cls) -> None:
        """An Inductor cache dir whose store holds two entries, made by real compiles."""
        super().setUpClass()
        cls.template = Path(cls.enterClassContext(tempfile.TemporaryDirectory())) / "template" / "cache"
        with fresh_cache():
            _compile_two_functions()
            n = len(list(storage.LocalStore().iter_paths()))
            if n != 2:
                raise AssertionError(f"{n} entries in the template store, not 2")
            shutil.copytree(layout.store_root(), cls.template / "torch_aotcache")

    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(self.enterContext(tempfile.TemporaryDirectory()))
        self.store = self.tmp / "cache"
        shutil.copytree(self.template, self.store)
        self.enterContext(_cache_dir(self.store))

    def test_ls(self) -> None:
        rc, out = _run(["ls"])
        self.assertEqual(rc, 0)
        lines = out.splitlines()
        self.assertEqual(
            lines[0].split(), ["KEY", "ENTRY", "SIZE", "MODE", "KERNELS", "FWD", "ms", "BWD", "ms", "CREATED"]
        )
        self.assertEqual(len(lines), 3)
        for line, path in zip(lines[1:], _entries(self.store)):
            header, _ = framing.decode_header(path.read_bytes())
            cols = line.split()
            self.assertTrue(cols[0] == header.key == path.parent.name)
            self.assertEqual(cols[1], path.name)
            self.assertIn(header.mode, cols)
            # SIZE is "<n> <unit>", so KERNELS is the sixth field
            self.assertEqual(cols[5], str(len(header.artifacts)))

    def test_ls_shows_an_unreadable_entry(self) -> None:
        junk = _entries(self.store)[0].parent / "junk.entry"
        junk.write_bytes(b"not an entry at all, and long enough")
        rc, out = _run(["ls"])
        self.assertEqual(rc, 0)
        (line,) = [l for l in out.splitlines() if "junk.entry" in l]
        self.assertIn("unreadable: not a torch_aotcache entry", line)

    def test_commands_never_unpickle(self) -> None:
        with mock.patch("pickle.loads", side_effect=AssertionError("unpickled")), \
             mock.patch("pickle.load", side_effect=AssertionError("unpickled")):
            self.assertEqual(_run(["ls"])[0], 0)
            self.assertEqual(_run(["stats"])[0], 0)
            self.assertEqual(_run(["verify"])[0], 0)

    def test_stats(self) -> None:
        rc, out = _run(["stats"])
        self.assertEqual(rc, 0)
        total = sum(p.stat().st_size for p in _entries(self.store))
        self.assertIn("entries:     2\n", out)
        self.assertIn(f"total size:  {total} bytes", out)
        self.assertIn(f"store root:  {self.store / 'torch_aotcache'}\n", out)

    def test_cache_dir_option(self) -> None:
        # main() sets the variable for the rest of the process; patch.dict undoes it.
        self.enterContext(mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": str(self.tmp / "elsewhere")}))
        rc, out = _run(["--cache-dir", str(self.store), "stats"])
        self.assertEqual(rc, 0)
        self.assertIn("entries:     2\n", out)
        rc, out = _run(["stats", "--cache-dir", str(self.tmp / "empty")])
        self.assertEqual(rc, 0)
        self.assertIn("entries:     0\n", out)

    def test_verify_ok(self) -> None:
        rc, out = _run(["verify"])
        self.assertEqual(rc, 0)
        lines = out.splitlines()
        self.assertEqual([l.split()[0] for l in lines[:-1]], ["OK", "OK"])
        self.assertEqual(lines[-1], "2 entries: 2 ok, 0 bad")

    def test_verify_flags_a_corrupted_payload(self) -> None:
        bad, good = _entries(self.store)
        _flip_payload_byte(bad)
        rc, out = _run(["verify"])
        self.assertEqual(rc, 1)
        self.assertIn(f"BAD  {bad}: payload checksum does not match\n", out)
        self.assertIn(f"OK   {good}\n", out)
        self.assertTrue(out.endswith("2 entries: 1 ok, 1 bad\n"), out)

    def test_verify_flags_an_entry_under_the_wrong_key(self) -> None:
        a, b = _entries(self.store)
        shutil.copy(a, b.parent / "moved.entry")
        rc, out = _run(["verify"])
        self.assertEqual(rc, 1)
        self.assertIn("moved.entry: entry is for key", out)

    def test_clear(self) -> None:
        total = sum(p.stat().st_size for p in _entries(self.store))
        rc, out = _run(["clear"])
        self.assertEqual(rc, 0)
        self.assertTrue(out.startswith("removed 2 entries ("), out)
        self.assertIn(str(self.store / "torch_aotcache" / "entries"), out)
        self.assertEqual(_entries(self.store), [])
        self.assertGreater(total, 0)
        rc, out = _run(["stats"])
        self.assertEqual(rc, 0)
        self.assertIn("entries:     0\n", out)


class TestCliText(expecttest.TestCase):
    """Command-line output as a contract (regenerate with EXPECTTEST_ACCEPT=1)."""

    def test_stats_on_an_empty_store(self) -> None:
        with fresh_cache():
            cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
            rc, out = _run(["stats"])
            ls_rc, ls_out = _run(["ls"])
        self.assertEqual((rc, ls_rc), (0, 0))
        self.assertExpectedInline(_normalize(out + ls_out, cache), """\
store root:  <cache>/torch_aotcache
entries:     0
total size:  0 bytes (0 B)
bound:       10.0 GiB (TORCH_AOTCACHE_MAX_SIZE), 0.0% used

            today  7 days  all time
hits            0       0         0
misses          0       0         0
hit rate        -       -         -
bypasses        0       0         0
saves           0       0         0
evictions       0       0         0
time saved  0.0 s   0.0 s     0.0 s
no entries in <cache>/torch_aotcache
""")

    def test_verify_output(self) -> None:
        with fresh_cache():
            cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
            _compile_two_functions()
            _flip_payload_byte(_entries(cache)[0])
            rc, out = _run(["verify"])
        self.assertEqual(rc, 1)
        self.assertExpectedInline(_normalize(out, cache), """\
BAD  <cache>/torch_aotcache/entries/<shard>/<key>/<id>.entry: payload checksum does not match
OK   <cache>/torch_aotcache/entries/<shard>/<key>/<id>.entry
2 entries: 1 ok, 1 bad
""")


# --------------------------------------------------------------------------
# The demo: two fresh processes, ~25 s on a 2-core CPU.


@slow
class TestCliDemo(unittest.TestCase):
    def test_demo_json(self) -> None:
        rc, out = _run(["demo", "--json"])
        self.assertEqual(rc, 0)
        result = json.loads(out)
        self.assertTrue(result["ok"], result["problems"])
        cold, warm = result["cold"], result["warm"]
        self.assertTrue(cold["installed"] and warm["installed"])
        self.assertEqual(cold["counters"], {"hit": 0, "miss": 1, "saved": 1, "bypass": 0})
        self.assertEqual(warm["counters"], {"hit": 1, "miss": 0, "saved": 0, "bypass": 0})
        self.assertTrue(cold["pid"] != warm["pid"] != os.getpid())
        m = result["matches"]
        self.assertEqual(m["outputs_match_eager"], {"cold": True, "warm": True})
        self.assertEqual(m["grads_match_eager"], {"cold": True, "warm": True})
        self.assertTrue(m["cold_warm_close"])
        # The temporary cache dir is gone.
        self.assertFalse(os.path.exists(result["cache_dir"]))
