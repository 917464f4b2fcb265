"""
Configuration of torch_aotcache.

Knobs live in torch's config machinery (``torch.utils._config_module``), so they
can be read, patched in tests with ``config.patch(...)`` and set from the
environment like PyTorch's own.  Each knob, its default, type and environment
variable are declared once, in ``knobs.py`` (read there, with their comments);
this module makes a config module of them.
"""

# No ``from __future__ import annotations`` here, and no module global but the
# knobs: install_config_module turns every global of a plain type into a knob.
import sys
import typing

from torch.utils._config_module import Config, install_config_module

from . import knobs as _knobs


def _declare_knobs(namespace: dict[str, typing.Any]) -> None:
    types = {"str": str, "int": int, "float": float, "bool": bool, "Optional[str]": typing.Optional[str]}
    annotations = namespace.setdefault("__annotations__", {})
    for name, knob in _knobs.KNOBS.items():
        annotations[name] = types[knob.type]
        # The environment is read by knobs.py's parser (torch's own takes only
        # "1"/"0" as booleans and leaves "false" a true string).
        namespace[name] = Config(default=_knobs.from_environment(name)) if knob.env else knob.default


_declare_knobs(globals())

if typing.TYPE_CHECKING:
    # For type checkers: the knobs are set above, by name.
    def __getattr__(name: str) -> typing.Any: ...


install_config_module(sys.modules[__name__])
