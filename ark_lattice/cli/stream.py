"""Output that goes on as things happen (``--follow``, ``--watch``): line by line, until Ctrl-C.

Each line is written to stdout and flushed at once, so a pipe or a file sees it when it happens.
Ctrl-C is how such a command ends: it exits 0 with nothing on stderr. A reader that goes away
(``… | head``) ends it quietly too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["streaming", "emit"]


@contextmanager
def streaming() -> Iterator[None]:
    """Wrap the loop of a command that runs until Ctrl-C."""
    try:
        yield
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # Nobody reads any more; point stdout at /dev/null so the interpreter's last flush is quiet.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass  # stdout is not a file (a test runner's buffer)


def emit(line: str) -> None:
    """One line to stdout, now (plain text: no markup, no wrapping)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
