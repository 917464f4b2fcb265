"""
Warm-start benchmark: torch_aotcache against torch's own AOTAutograd cache.

Usage::

    python tools/bench_warmstart.py [--quick] [--models mlp,encoder,conv,bert,gpt2]
        [--repeats N] [--cold-repeats N] [--settle S] [--out DIR] [--device cpu|cuda]
        [--no-remote] [--only-remote] [--remote-object-store]
    python tools/bench_warmstart.py --render --out DIR   # redo the report from DIR/results.json

Every measurement runs in a fresh interpreter (``python tools/bench_warmstart.py
--worker SPEC``), so nothing in memory is shared between runs; only the
Inductor cache dir (``TORCHINDUCTOR_CACHE_DIR``) carries state from a cold
process to the warm ones after it.  The modes:

``off``       caches off (``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``): the cold compile.
``upstream``  torch's own cache; torch_aotcache is not imported
              (``TORCH_AOTCACHE_DISABLE=1`` as well, for safety).
``ours``      ``import torch_aotcache``.
``floor``     ``torch.compile(model, backend="eager")``: Dynamo's tracing and eager
              execution, what a perfect cache would leave (a warm step can dip a
              little below it: compiled kernels run faster than eager ones).
``floor_inductor``  the same, after ``import torch._inductor.compile_fx``: the
              floor of a hit that goes through Inductor's compile_fx.
``eager``     the same program without ``torch.compile``: the eager floor, all
              that a cache could remove, Dynamo's tracing included.

The headline is the whole process, start to exit, timed from outside the
worker (``process_wall_s``): what the user waits for, import and exit
included.  The first step, timed inside, follows it.

For ``upstream`` and ``ours`` a cold process fills an empty cache dir (its
first step is the cost of a miss), then ``--repeats`` warm processes share that
dir; the warm first step is reported as a median.  The "first step" is the
first compiled forward plus ``loss.backward()`` in training mode, timed inside
the worker after the model and its (seeded) inputs exist.  Inside each worker
the key function (the module global
``torch._functorch._aot_autograd.autograd_cache.autograd_cache_key``, looked up
by ``try_load`` at call time) and ``AOTAutogradCache.try_load`` are wrapped
with timers, so a hit splits into key computation and the rest of the hit path.

Remote (Redis) warm start (``--remote``, on by default when ``redis-server``
is on PATH; ``--no-remote`` skips it): per model, a throwaway loopback
redis-server, one cold ``ours`` process with ``TORCH_AOTCACHE_REDIS_URL``, a
signing key and ``TORCH_AOTCACHE_REMOTE_SYNC=1`` filling Redis, then
``--repeats`` warm processes, each with a new *empty* cache dir (no local
entry, no Inductor artifact) and the same Redis and key: their first step is
compared with the local-hit warm ``ours`` step of the same run.  The report
also gives the remote counters of each warm process and the compression
ratio (local ``.entry`` bytes written by the cold process / Redis value bytes).
``--only-remote`` runs just that and the local ``ours`` cold/warm it is
compared with (no off/upstream/floor, no key or lookup micro-benchmarks).
``--remote-object-store`` does the same through an object store (moto's S3
API server on loopback, ``TORCH_AOTCACHE_REMOTE_URL=s3://...``), reported
beside the Redis rows with whole-process times as well.

Two micro-benchmarks complete the picture: key computation on synthetic FX
graphs of growing size (upstream's key function and ours, each in its own
process, with a real ``AOTConfig`` captured from a real compile), and a lookup
in a store of 10,000 entries.

Outputs, under ``--out`` (default ``bench_out/``): ``results.json`` (every
raw number and the machine), ``results.md`` (the tables, printed at the end)
and ``warmstart.png`` (where a warm start spends its time; needs matplotlib).
No timing is ever asserted: the numbers are reported, not judged, except in
the "targets" table, which only says met or missed.

The code is the package ``tools/bench/`` (its ``__init__`` lists the
modules): this file only makes that package importable, from any working
directory, and runs its command line.

Note [Noise from other load]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~
On a small shared machine another process can double a wall time.  For every
worker the driver reads ``/proc/stat`` before and after and subtracts the
worker's own CPU time (``RUSAGE_CHILDREN``): what is left is how many cores
other processes kept busy meanwhile (``other_load_cores``).  The report gives
medians of all runs (what the targets are judged on) and, beside them, medians
of the quiet runs only (other load under ``QUIET_LOAD_CORES``).  ``--settle S``
waits up to S seconds before each worker for the machine to go quiet.  CPU
time is recorded too, but on a VM it inflates under contention as wall time
does.
"""

from __future__ import annotations

import os
import sys


# tools/, where the package ``bench`` lives; put first so that nothing else
# named ``bench`` is found instead.
_TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
if sys.path[:1] != [_TOOLS_DIR]:
    sys.path.insert(0, _TOOLS_DIR)

from bench.cli import main  # noqa: E402


if __name__ == "__main__":
    sys.exit(main())
