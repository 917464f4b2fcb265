"""``python -m torch_aotcache``: the command line (see cli/commands.py)."""

from __future__ import annotations

from .cli.commands import main


raise SystemExit(main())
