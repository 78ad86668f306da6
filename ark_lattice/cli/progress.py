"""A progress bar on stderr for long commands, drawn only for a person at a terminal.

:func:`progress_bar` draws a rich bar (what is being done, the bar, done/total, time left) on
stderr when stderr is a terminal and ``--json`` was not given. Anywhere else it hands back a bar
that draws nothing, so a pipe, a file or ``--json`` receives byte for byte what it received before
the bar existed. The bar is transient: it is erased when the work ends, before the command prints
its result.

Only a real terminal counts: ``FORCE_COLOR`` or ``TTY_COMPATIBLE`` in the environment make rich
draw into pipes, and a bar is noise in a log file however colourful it is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["ProgressBar", "progress_bar", "stderr_terminal"]

# The bar's own redraws; often enough for a smooth ETA, rare enough to cost nothing next to the work.
REFRESH_PER_SECOND = 5


class ProgressBar:
    """How far one piece of work has got: drawn on a terminal, ignored everywhere else."""

    def __init__(self, progress: Progress | None = None, task: TaskID | None = None) -> None:
        self._progress = progress
        self._task = task

    @property
    def shown(self) -> bool:
        """Whether anything is drawn: work that only feeds the bar (counting rows) can be skipped."""
        return self._progress is not None

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, total=total, description=description)

    def advance(self, units: float = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, units)


@contextmanager
def progress_bar(
    description: str,
    *,
    total: float | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> Iterator[ProgressBar]:
    """A bar for the work inside the ``with`` block; a bar that draws nothing if ``quiet``
    (the command's ``--json``) or if the console, stderr by default, is not a terminal.

    ``total`` may be given later through :meth:`ProgressBar.update` once it is known; until then
    the bar pulses and the count reads ``n/?``.
    """
    target = console if console is not None else stderr_terminal()
    if quiet or target is None or not target.is_terminal or target.is_dumb_terminal:
        yield ProgressBar()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Column

    progress = Progress(
        # markup=False: descriptions carry file names and topics, and "[x]" in them is not a style.
        # The description and the bar share the line; a long description is cut, never the count.
        TextColumn(
            "{task.description}",
            markup=False,
            table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
        ),
        BarColumn(bar_width=None, table_column=Column(ratio=1)),
        MofNCompleteColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=target,
        transient=True,
        refresh_per_second=REFRESH_PER_SECOND,
        expand=True,
        # stdout may be a pipe while stderr is a terminal: what goes to stdout must stay there.
        redirect_stdout=False,
    )
    with progress:
        yield ProgressBar(progress, progress.add_task(description, total=total))


def stderr_terminal() -> Console | None:
    """A console on stderr if stderr is a terminal, else None."""
    try:
        if not sys.stderr.isatty():
            return None
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return None
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False)
