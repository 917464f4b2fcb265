"""
Tests of the command line (``python -m torch_aotcache``).

The store the commands inspect is made by real compiles inside
``fresh_cache()``, once per module, and copied into each test's own cache dir,
so a test that corrupts or clears its store leaves the others' alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import expecttest
import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import fresh_cache

import torch_aotcache  # noqa: F401  (installs itself)
from torch_aotcache.cli import commands as cli
from torch_aotcache.entry import framing
from torch_aotcache.store import layout, local as storage


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
    assert counters["aot_autograd"]["autograd_cache_saved"] == 2, dict(counters["aot_autograd"])
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Inductor cache dir whose store holds two entries, made by real compiles."""
    dest = tmp_path_factory.mktemp("template") / "cache"
    with fresh_cache():
        _compile_two_functions()
        assert len(list(storage.LocalStore().iter_paths())) == 2
        shutil.copytree(layout.store_root(), dest / "torch_aotcache")
    return dest


@contextlib.contextmanager
def _cache_dir(path: Path) -> Iterator[Path]:
    with mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": str(path)}):
        yield path


@pytest.fixture
def store(template_store: Path, tmp_path: Path) -> Iterator[Path]:
    """This test's own copy of the template store; TORCHINDUCTOR_CACHE_DIR points at it."""
    dest = tmp_path / "cache"
    shutil.copytree(template_store, dest)
    with _cache_dir(dest):
        yield dest


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


def test_every_command_is_in_the_parser() -> None:
    parser = cli.build_parser()
    positional = {"export": ["a.tar"], "import": ["a.tar"]}
    for command in cli.COMMANDS:
        rest = positional.get(command.name, [])
        args = parser.parse_args(["--cache-dir", "/x", command.name, *rest])
        assert args.run is command.run and args.cache_dir == "/x"
        # The global option is also accepted after the command name.
        args = parser.parse_args([command.name, *rest, "--cache-dir", "/y"])
        assert args.run is command.run and args.cache_dir == "/y"
    assert len({c.name for c in cli.COMMANDS}) == len(cli.COMMANDS)


def test_ls(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KEY", "ENTRY", "SIZE", "MODE", "KERNELS", "FWD", "ms", "BWD", "ms", "CREATED"]
    assert len(lines) == 3
    for line, path in zip(lines[1:], _entries(store)):
        header, _ = framing.decode_header(path.read_bytes())
        cols = line.split()
        assert cols[0] == header.key == path.parent.name
        assert cols[1] == path.name
        assert header.mode in cols
        # SIZE is "<n> <unit>", so KERNELS is the sixth field
        assert cols[5] == str(len(header.artifacts))


def test_ls_shows_an_unreadable_entry(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = _entries(store)[0].parent / "junk.entry"
    junk.write_bytes(b"not an entry at all, and long enough")
    assert cli.main(["ls"]) == 0
    (line,) = [l for l in capsys.readouterr().out.splitlines() if "junk.entry" in l]
    assert "unreadable: not a torch_aotcache entry" in line


def test_commands_never_unpickle(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with mock.patch("pickle.loads", side_effect=AssertionError("unpickled")), \
         mock.patch("pickle.load", side_effect=AssertionError("unpickled")):
        assert cli.main(["ls"]) == 0
        assert cli.main(["stats"]) == 0
        assert cli.main(["verify"]) == 0


def test_stats(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stats"]) == 0
    out = capsys.readouterr().out
    total = sum(p.stat().st_size for p in _entries(store))
    assert "entries:     2\n" in out
    assert f"total size:  {total} bytes" in out
    assert f"store root:  {store / 'torch_aotcache'}\n" in out


def test_cache_dir_option(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # main() sets the variable for the rest of the process; monkeypatch undoes it.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert cli.main(["--cache-dir", str(store), "stats"]) == 0
    assert "entries:     2\n" in capsys.readouterr().out
    assert cli.main(["stats", "--cache-dir", str(tmp_path / "empty")]) == 0
    assert "entries:     0\n" in capsys.readouterr().out


def test_verify_ok(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [l.split()[0] for l in lines[:-1]] == ["OK", "OK"]
    assert lines[-1] == "2 entries: 2 ok, 0 bad"


def test_verify_flags_a_corrupted_payload(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad, good = _entries(store)
    _flip_payload_byte(bad)
    assert cli.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert f"BAD  {bad}: payload checksum does not match\n" in out
    assert f"OK   {good}\n" in out
    assert out.endswith("2 entries: 1 ok, 1 bad\n")


def test_verify_flags_an_entry_under_the_wrong_key(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _entries(store)
    shutil.copy(a, b.parent / "moved.entry")
    assert cli.main(["verify"]) == 1
    assert "moved.entry: entry is for key" in capsys.readouterr().out


def test_clear(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    total = sum(p.stat().st_size for p in _entries(store))
    assert cli.main(["clear"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("removed 2 entries (")
    assert str(store / "torch_aotcache" / "entries") in out
    assert _entries(store) == []
    assert total > 0
    assert cli.main(["stats"]) == 0
    assert "entries:     0\n" in capsys.readouterr().out


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


def test_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"], result["problems"]
    cold, warm = result["cold"], result["warm"]
    assert cold["installed"] and warm["installed"]
    assert cold["counters"] == {"hit": 0, "miss": 1, "saved": 1, "bypass": 0}
    assert warm["counters"] == {"hit": 1, "miss": 0, "saved": 0, "bypass": 0}
    assert cold["pid"] != warm["pid"] != os.getpid()
    m = result["matches"]
    assert m["outputs_match_eager"] == {"cold": True, "warm": True}
    assert m["grads_match_eager"] == {"cold": True, "warm": True}
    assert m["cold_warm_close"]
    # The temporary cache dir is gone.
    assert not os.path.exists(result["cache_dir"])
