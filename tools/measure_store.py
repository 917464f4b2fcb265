"""
Figures for the store's housekeeping and command line (docs/PERFORMANCE.md,
"Keeping the store"): whole-process times of the reading commands on an
empty store and on 10,000 entries, and the cost of the bound per save.

    python tools/measure_store.py [--entries 10000] [--repeat 5]

Entries are synthetic (valid headers and checksums, a 1 KiB payload), written
straight into the store's layout; no torch is imported by the commands timed.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "test"))
sys.path.insert(0, REPO_ROOT)

COMMANDS = (["stats"], ["ls"], ["verify"], ["explain"], ["prune", "--dry-run"])


def time_command(argv: list[str], root: str, repeat: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run) of a whole ``python -m torch_aotcache`` process."""
    env = dict(os.environ, TORCH_AOTCACHE_DIR=root, PYTHONPATH=REPO_ROOT)
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "torch_aotcache", *argv], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, (wall, cpu))
    return best


def time_saves(root: str, n: int, bound: int | None) -> list[float]:
    """Seconds of each of 20 ``LocalStore.put`` (eviction included) into a store of ``n`` entries."""
    from fake_entries import fake_entry
    from torch_aotcache.store import layout
    from torch_aotcache.store.local import LocalStore

    os.environ["TORCH_AOTCACHE_DIR"] = root
    os.environ["TORCH_AOTCACHE_MAX_SIZE"] = str(bound or 0)
    assert "torch" not in sys.modules and layout.max_size() == bound
    store = LocalStore()
    entries = [fake_entry(f"save-{i}", size=1024) for i in range(20)]
    times = []
    for key, eid, data in entries:
        start = time.perf_counter()
        store.put(key, eid, data)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from fake_entries import write_many_raw

    with tempfile.TemporaryDirectory() as tmp:
        empty, full = os.path.join(tmp, "empty"), os.path.join(tmp, "full")
        write_many_raw(full, args.entries, size=1024)
        # One recorded miss, so that ``explain`` reads every header.
        os.environ["TORCH_AOTCACHE_DIR"] = full
        from torch_aotcache.store import explain

        explain.remember_miss(explain.Miss("tacmissed", time.time_ns(), {"graph": "x"}, {}))
        print(f"{'command':<18} {'empty: wall':>12} {'cpu':>6} {args.entries:>7} entries: wall {'cpu':>6}")
        for argv in COMMANDS:
            w0, c0 = time_command(argv, empty, args.repeat)
            w1, c1 = time_command(argv, full, args.repeat)
            print(f"{' '.join(argv):<18} {w0:>11.3f}s {c0:>5.3f}s {w1:>20.3f}s {c1:>5.3f}s")
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(full) for f in fs)
        under = sorted(time_saves(full, args.entries, bound=size * 4))
        print(f"save into {args.entries} entries, under the bound: median {under[10] * 1000:.1f} ms")
        over = time_saves(full, args.entries, bound=size - 1)
        rest = sorted(over[1:])
        print(f"save that brings {args.entries} entries back under the bound (removes 10%): "
              f"{over[0] * 1000:.0f} ms; the saves after it: median {rest[len(rest) // 2] * 1000:.1f} ms")
        print(f"unbounded save (TORCH_AOTCACHE_MAX_SIZE=0): median "
              f"{sorted(time_saves(full, args.entries, bound=None))[10] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
