"""
pytest configuration shared by torch_aotcache's tests: the package under test
(this checkout's) and the Hypothesis profiles.

``ci`` (the default) is derandomized and keeps no example database, like
PyTorch's ``pytorch_ci`` profile: every run draws the same examples, so a
failure reproduces from the printed blob and never depends on a previous run.
``dev`` draws ten times more examples and remembers failing ones in
``.hypothesis/``.  Pick one with ``HYPOTHESIS_PROFILE=dev``.

Cache directories are left alone here: a test that compiles derives from
``common.CacheTestCase``, which gives it a fresh one.

The ``slow`` marker (``common.slow``) tags the tests that start other
processes or compile many programs; ``python -m pytest test/ -m "not slow"``
is the fast tier (CONTRIBUTING.md says when to run which).
"""

from __future__ import annotations

import os
import sys

# Test the package in this checkout, whichever copy pip installed.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[:1] != [_REPO_ROOT]:
    sys.path.insert(0, _REPO_ROOT)

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase


_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile(
    "dev",
    max_examples=1000,
    database=DirectoryBasedExampleDatabase(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".hypothesis", "examples")
    ),
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: object) -> None:
    config.addinivalue_line(  # type: ignore[attr-defined]
        "markers",
        "slow: starts other processes or compiles many programs; the fast tier (-m 'not slow') leaves it out",
    )
