"""Long listings: streamed row by row, and paged on a terminal (``packets list``).

A listing of a million packets must show its first row at once and hold one page in memory, not
the whole ledger, whatever it is written to:

- :func:`pager_command` decides whether a pager reads the output, as git does: only when stdout is
  a terminal, never with ``--no-pager``; ``$PAGER`` names it (``less`` by default, run with
  ``LESS=FRX`` unless ``$LESS`` says otherwise, so a short listing prints and exits as if there
  were no pager); an empty ``$PAGER`` or ``cat`` means none.
- :func:`paged` gives the text stream to write to (the pager's input, or stdout) and ends quietly
  when the reader goes away (``q`` in the pager, or ``… | head``).
- :func:`write_listing` writes the JSON of :func:`cli.output.listing` item by item, byte for byte
  what ``print_json(listing(…))`` writes for the whole list.
- :class:`StreamedTable` writes the table of :func:`cli.output.table` row by row: the column widths
  are chosen from the first page of rows, under the same rules (fits the console, an 80-column
  pipe included; the key column never wrapped or cut; short values on one line; long free text
  folded; a small block of ``column: value`` lines per row where even that cannot fit).
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
from collections.abc import AsyncIterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO, cast

from ark_lattice.cli.output import SHORT, listing, text

__all__ = ["pager_command", "paged", "write_listing", "StreamedTable", "FIRST_PAGE"]

FIRST_PAGE = 100  # rows read before the table's layout is chosen: the store's first page (iter_packets)
MIN_FOLD = 12  # as cli/output.py's table: a folded column narrower than this is unreadable
DEFAULT_PAGER = "less"


def pager_command(*, stdout_tty: bool, no_pager: bool, environ: Mapping[str, str]) -> list[str] | None:
    """The pager to run, or None for plain stdout: a pager only for a person at a terminal."""
    if no_pager or not stdout_tty:
        return None
    command = environ.get("PAGER", DEFAULT_PAGER)
    try:
        argv = shlex.split(command)
    except ValueError:
        return None  # an unbalanced quote: print as if there were no pager, never fail a listing
    if not argv or argv == ["cat"]:
        return None
    return argv


@contextmanager
def paged(no_pager: bool) -> Iterator[TextIO]:
    """The stream a listing writes to; the command waits for the pager to exit before it does."""
    argv = pager_command(stdout_tty=_stdout_tty(), no_pager=no_pager, environ=os.environ)
    pager = None
    if argv is not None:
        env = {**os.environ}
        env.setdefault("LESS", "FRX")  # as git: quit if one screen, raw colours, keep the screen
        env.setdefault("LV", "-c")
        try:
            pager = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env, text=True, encoding="utf-8")
        except OSError:
            pager = None  # no such program: print to stdout instead
    out = cast(TextIO, pager.stdin) if pager is not None and pager.stdin is not None else sys.stdout
    try:
        yield out
        out.flush()
    except BrokenPipeError:
        if pager is None:  # `… | head`: stdout is gone; point it at /dev/null for the last flush
            _silence_stdout()
    except KeyboardInterrupt:
        if pager is None:
            raise
    finally:
        if pager is not None:
            try:
                out.close()
            except BrokenPipeError:
                pass  # the operator quit the pager before the end: that is how paging ends
            pager.wait()


def _stdout_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


_ITEMS = "\x00items\x00"  # stands in for the items while the document around them is laid out


async def write_listing(out: TextIO, name: str, items: AsyncIterable[Any], **extra: Any) -> int:
    """Write ``{"schema": …, "items": […]}`` as ``Application.print_json(listing(…))`` would,
    one item at a time; returns how many items were written."""
    count = 0
    head, tail, indent = _frame(name, extra)
    async for item in items:
        out.write((head if count == 0 else ",\n" + indent) + _dumps(item).replace("\n", "\n" + indent))
        count += 1
    if count == 0:
        out.write(_dumps(listing(name, [], **extra)) + "\n")
    else:
        out.write(tail + "\n")
    return count


def _frame(name: str, extra: dict[str, Any]) -> tuple[str, str, str]:
    """The text before the first item (its indent included), after the last, and the indent."""
    whole = _dumps(listing(name, [_ITEMS], **extra))
    before, after = whole.split(json.dumps(_ITEMS), 1)
    indent = before[before.rindex("\n") + 1 :]
    return before, after, indent


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


class StreamedTable:
    """A table written row by row; its layout is chosen from the first :data:`FIRST_PAGE` rows
    (a later, longer value in a short column widens its line rather than being cut)."""

    def __init__(self, out: TextIO, columns: Sequence[str], *, width: int, key: int = 0) -> None:
        self.out = out
        self.columns = list(columns)
        self.width = width
        self.key = key
        self.count = 0
        self._pending: list[list[str]] = []
        self._widths: list[int] | None = None  # None: not chosen yet; [] the block form

    def add(self, row: Sequence[Any]) -> None:
        self._pending.append([text(v) for v in row])
        self.count += 1
        if self._widths is None and len(self._pending) < FIRST_PAGE:
            return
        self.flush()

    def flush(self) -> None:
        """Write the rows held so far (the first call chooses the layout and writes the header)."""
        if self._widths is None:
            self._widths = self._layout(self._pending)
            if self._widths and self._pending:
                self._write_header()
        lines: list[str] = []
        for row in self._pending:
            lines.extend(self._row_lines(row))
        if lines:
            self.out.write("\n".join(lines) + "\n")
        self._pending.clear()

    def close(self, title: str) -> None:
        """Write what is held and the closing line (``N packet(s)``)."""
        self.flush()
        self.out.write(title + "\n")

    def _layout(self, rows: list[list[str]]) -> list[int]:
        from rich.cells import cell_len

        widest = [max([cell_len(r[i]) for r in rows] + [cell_len(c)]) for i, c in enumerate(self.columns)]
        folding = [i for i, w in enumerate(widest) if i != self.key and w > SHORT]
        gaps = 2 * (len(widest) - 1)
        needed = sum(min(w, MIN_FOLD) if i in folding else w for i, w in enumerate(widest)) + gaps
        if needed > self.width:
            return []  # the block form: nothing is ever cut
        widths = list(widest)
        while sum(widths) + gaps > self.width:  # fold the widest folding column a column at a time
            i = max(folding, key=lambda j: widths[j])
            widths[i] -= 1
        return widths

    def _write_header(self) -> None:
        assert self._widths
        names = "  ".join(name.ljust(w) for name, w in zip(self.columns, self._widths, strict=True))
        self.out.write(names.rstrip() + "\n" + "─" * (sum(self._widths) + 2 * (len(self._widths) - 1)) + "\n")

    def _row_lines(self, row: list[str]) -> list[str]:
        if not self._widths:
            label = max(map(len, self.columns)) + 2
            return [row[self.key]] + [
                f"  {name + ':':<{label}}{row[i]}".rstrip()
                for i, name in enumerate(self.columns)
                if i != self.key
            ]
        cells = [self._fold(cell, w, i) for i, (cell, w) in enumerate(zip(row, self._widths, strict=True))]
        height = max(map(len, cells))
        lines = []
        for n in range(height):
            parts = [
                _pad(cell[n] if n < len(cell) else "", w) for cell, w in zip(cells, self._widths, strict=True)
            ]
            lines.append("  ".join(parts).rstrip())
        return lines

    def _fold(self, cell: str, width: int, index: int) -> list[str]:
        from rich.cells import cell_len

        if index == self.key or cell_len(cell) <= width or cell_len(cell) <= SHORT:
            return [cell]
        from rich.text import Text

        return [line.plain.rstrip() for line in Text(cell).wrap(_folder(), width, overflow="fold")]


@functools.cache
def _folder() -> Any:
    """The console rich needs to wrap text; only cells too long for their column get here."""
    from rich.console import Console

    return Console()


def _pad(cell: str, width: int) -> str:
    from rich.cells import cell_len

    return cell + " " * max(0, width - cell_len(cell))
