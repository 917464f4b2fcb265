"""
The warm-start benchmark's code; ``tools/bench_warmstart.py`` is its entry
point and says what is measured and how.

Modules, in the order a run uses them:

``cli``       the command line: settings from the arguments, then a run, a
              re-rendering (``--render``) or one worker (``--worker``).
``config``    paths, model sizes, targets and the ``Settings`` of a run.
``machine``   what the driver and the workers read off the machine: load,
              CPU time, the git tree.
``measure``   the driver: one fresh worker process per measurement, in order
              (never imports torch).
``worker``    the worker side: one measurement in a fresh interpreter (imports
              torch).
``programs``  the models and the synthetic FX graphs the workers compile.
``summary``   medians, ratios and targets from the raw records.
``report``    ``results.md`` and the writing of every output file.
``chart``     ``warmstart.png`` and ``process.png``.

Nothing here imports torch or torch_aotcache at import time: a worker imports
what its mode measures, and nothing else.
"""
