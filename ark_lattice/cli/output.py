"""How commands print: prose and tables for people, data for machines (docs/operator.md, "Output").

- **JSON** is data. A listing is ``{"schema": "ark-lattice.<listing>/1", "items": [...]}``
  (:func:`listing`); a timestamp is a string in RFC 3339, UTC, with milliseconds and ``Z``
  (``2026-12-01T13:15:22.123Z``, :func:`rfc3339`), and where the hybrid logical clock matters (a
  packet's ``created_at``) the raw 64-bit HLC rides beside it as ``<name>_hlc`` (:func:`stamp`).
- **Human output** never shows a Python repr: no ``None``, ``True`` or dicts (:func:`text`); times
  are local ISO times (:func:`local_time`); tables fit an 80-column pipe and never cut the column
  that identifies a row (:func:`table`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ark_lattice.timestamps import RFC3339, rfc3339

__all__ = [
    "SCHEMA_PREFIX",
    "listing",
    "rfc3339",
    "stamp",
    "local_time",
    "text",
    "record_lines",
    "table",
    "RFC3339",
]

SCHEMA_PREFIX = "ark-lattice."
SCHEMA_VERSION = 1
SHORT = 19  # a table cell this long or shorter is never wrapped (a local time without offset)


def listing(name: str, items: Iterable[Any], **extra: Any) -> dict[str, Any]:
    """The JSON of a listing: a schema name and version, then the items (and ``extra`` keys)."""
    return {"schema": f"{SCHEMA_PREFIX}{name}/{SCHEMA_VERSION}", "items": list(items), **extra}


def stamp(
    doc: dict[str, Any],
    *,
    seconds: Sequence[str] = (),
    ms: Sequence[str] = (),
    hlc: Sequence[str] = (),
) -> dict[str, Any]:
    """Rewrite the named timestamp fields of ``doc`` in place as RFC 3339, from Unix seconds,
    Unix milliseconds or a packed HLC; an HLC field keeps its raw value as ``<name>_hlc``."""
    from ark_lattice.hlc import unpack

    for key in seconds:
        if key in doc:
            doc[key] = rfc3339(doc[key]) if doc[key] is not None else None
    for key in ms:
        if key in doc:
            doc[key] = rfc3339(doc[key] / 1000) if doc[key] is not None else None
    for key in hlc:
        if key in doc and doc[key] is not None:
            raw = int(doc[key])
            doc[f"{key}_hlc"] = raw
            doc[key] = rfc3339(unpack(raw)[0] / 1000)
    return doc


def local_time(value: float | str | None, *, offset: bool = True) -> str:
    """A time for people: local ISO 8601 to the second, from Unix seconds or an RFC 3339 string;
    without the UTC offset (``offset=False``) where a table is short of room."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        moment = datetime.fromtimestamp(value, tz=UTC)
    local = moment.astimezone()
    return local.isoformat(timespec="seconds") if offset else local.strftime("%Y-%m-%dT%H:%M:%S")


def text(value: Any) -> str:
    """Any JSON value as words: never a Python repr."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return local_time(value) if RFC3339.match(value) else value
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(text(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def record_lines(doc: Mapping[str, Any]) -> list[str]:
    """One object as aligned ``key  value`` lines; raw ``*_hlc`` twins are left to the JSON."""
    keys = [k for k in doc if not k.endswith("_hlc")]
    width = max(map(len, keys), default=0) + 2
    return [f"{key:<{width}}{text(doc[key])}" for key in keys]


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    key: int = 0,
    title: str | None = None,
) -> Any:
    """A table that fits the console (an 80-column pipe included): light rules, the ``key``
    column (the one that identifies a row, such as an id prefix) never wrapped or cut, short values
    (times, tiers, sizes) on one line, long free text folded. Where even that cannot fit, each row
    becomes a small block of ``column: value`` lines instead, so nothing is ever cut."""
    return _FittedTable(list(columns), [[text(v) for v in row] for row in rows], key, title)


class _FittedTable:
    MIN_FOLD = 12  # a folded column narrower than this is no longer readable

    def __init__(self, columns: list[str], cells: list[list[str]], key: int, title: str | None) -> None:
        self.columns, self.cells, self.key, self.title = columns, cells, key, title

    def _widest(self, index: int) -> int:
        return max([len(r[index]) for r in self.cells] + [len(self.columns[index])])

    def _needed(self) -> int:
        widths = [
            w if i == self.key or w <= SHORT else min(w, self.MIN_FOLD)
            for i, w in enumerate(map(self._widest, range(len(self.columns))))
        ]
        return sum(widths) + 2 * (len(widths) - 1)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        if self._needed() <= options.max_width:
            yield self._table()
            return
        if self.title:
            yield Text(self.title)
        label = max(map(len, self.columns)) + 2
        for row in self.cells:
            yield Text(row[self.key])
            for index, name in enumerate(self.columns):
                if index != self.key:
                    yield Text(f"  {name + ':':<{label}}{row[index]}")

    def _table(self) -> Any:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        out = Table(
            title=self.title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
            collapse_padding=True,
            pad_edge=False,
            show_edge=False,
        )
        for index, name in enumerate(self.columns):
            widest = self._widest(index)
            if index == self.key:
                out.add_column(name, no_wrap=True, min_width=widest)
            elif widest <= SHORT:
                out.add_column(name, no_wrap=True, min_width=widest)
            else:
                out.add_column(name, overflow="fold", min_width=self.MIN_FOLD)
        for row in self.cells:
            out.add_row(*(Text(cell) for cell in row))  # data, never console markup
        return out


def status_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``federation status --json``: the node's live snapshot with every time in RFC 3339.

    The control socket answers in Unix seconds (the renderers do arithmetic on them); this is the
    one place they become the documented JSON format, on a copy.
    """
    import copy

    out: dict[str, Any] = copy.deepcopy(dict(doc))
    stamp(out, seconds=["now"])
    for conn in out.get("connections") or []:
        stamp(conn, seconds=["last_sync", "last_error_at"])
    for target in out.get("dialling") or []:
        stamp(target, seconds=["next_attempt"])
    for row in out.get("isolated") or []:
        stamp(row, seconds=["at"])
    for row in out.get("quarantines") or []:
        stamp(row, seconds=["until"])
    for row in out.get("denials") or []:
        stamp(row, ms=["ts"])
    for row in out.get("alerts") or []:
        stamp(row, hlc=["created_at"], ms=["received_at"])
        if "created_at" in row:
            row["time"] = row["created_at"]
    checkpoint = (out.get("ledger") or {}).get("checkpoint")
    if isinstance(checkpoint, dict):
        stamp(checkpoint, seconds=["at"])
    return out
