"""
The digests of the configs a frame is keyed by and compiled under (Note
[Frame keys] and Note [Configs of a compile] in frames.py), and how a value
is named in them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import identity


class Unkeyable(Exception):
    pass


def named(value: Any, what: str) -> Any:
    """A JSON-able stand-in for ``value`` that names it by value or by reference."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [named(v, what) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((named(v, what) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {str(k): named(v, what) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    described = identity.describe(value)
    if described is not None:
        return described
    raise Unkeyable(f"{what} holds {type(value).__name__} {value!r:.60}, which has no name")


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def config_digest(module: Any, what: str) -> str:
    """The digest of a config module's settings, as ``save_config_portable``
    selects them (private settings, ignored prefixes and the settings marked
    ``@compile_ignored`` left out) but with
    every value named by us: upstream's serializer for Inductor imports
    Inductor's lowering (a second) to name its choices class, which ours
    names by reference."""
    try:
        prefixes = ["_", *getattr(module, "_cache_config_ignore_prefix", [])]
        # Settings torch marks ``@compile_ignored`` do not change what is
        # compiled (logging, debug folders under the working directory...).
        ignored = sorted(getattr(module, "_compile_ignored_keys", ()))
        values = module._get_dict(ignored_keys=ignored, ignored_prefixes=prefixes)
    except Exception as e:  # noqa: BLE001
        raise Unkeyable(f"cannot read {what}: {e}") from None
    return digest(named(values, what))


def config_components() -> dict[str, str]:
    """The digests of the configs as they are now (Note [Configs of a compile]); raises Unkeyable."""
    import torch

    return {
        "dynamo_config": config_digest(torch._dynamo.config, "torch._dynamo.config"),
        "inductor_config": config_digest(torch._inductor.config, "torch._inductor.config"),
        "functorch_config": config_digest(torch._functorch.config, "torch._functorch.config"),
    }
