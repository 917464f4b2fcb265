"""
Events the rest of the package tells the frame cache about, without reaching
for ``dynamo/frames.py`` in ``sys.modules``: frames.py listens while it is
imported.
"""

from __future__ import annotations

from collections.abc import Callable

# Called when a compiled graph is recorded for Dynamo's precompile context
# (the AOTAutograd cache saved or loaded it): a frame package waiting for its
# graphs is then saved (Note [Saving when the graphs are saved] in
# dynamo/frames.py).
_backend_listeners: list[Callable[[], None]] = []


def listen_for_backends(listener: Callable[[], None]) -> None:
    if listener not in _backend_listeners:
        _backend_listeners.append(listener)


def backend_recorded() -> None:
    for listener in list(_backend_listeners):
        listener()
