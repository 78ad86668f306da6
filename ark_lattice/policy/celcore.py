"""The CEL evaluator without its interactive shell.

The ``cel`` package's ``__init__`` imports ``cel.cli`` (a REPL built on prompt_toolkit, pygments and
typer's rich help) before the Rust extension the engine actually uses; on a cold USB stick that
costs seconds at every node start. While ``cel`` is first imported, ``cel.cli`` is answered by an
empty placeholder, which is removed again afterwards so a later ``import cel.cli`` loads the real
shell. Everything the engine uses (``compile``, ``Context``, ``Program``) comes from the extension.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

__all__ = ["cel"]

_CLI = "cel.cli"


def _import_without_cli() -> types.ModuleType:
    if "cel" in sys.modules:
        return sys.modules["cel"]
    placeholder = types.ModuleType(_CLI)
    installed = sys.modules.setdefault(_CLI, placeholder) is placeholder
    try:
        import cel as module
    finally:
        if installed and sys.modules.get(_CLI) is placeholder:
            del sys.modules[_CLI]
    if getattr(module, "cli", None) is placeholder:
        delattr(module, "cli")
    return module


if TYPE_CHECKING:
    import cel as cel
else:
    cel = _import_without_cli()
