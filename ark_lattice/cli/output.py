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

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

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
# The one timestamp format of JSON output.
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def listing(name: str, items: Iterable[Any], **extra: Any) -> dict[str, Any]:
    """The JSON of a listing: a schema name and version, then the items (and ``extra`` keys)."""
    return {"schema": f"{SCHEMA_PREFIX}{name}/{SCHEMA_VERSION}", "items": list(items), **extra}


def rfc3339(seconds: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC with milliseconds and ``Z``; None stays None (JSON null)."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


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


def local_time(value: float | str | None) -> str:
    """A time for people: local ISO 8601 to the second, from Unix seconds or an RFC 3339 string."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        moment = datetime.fromtimestamp(value, tz=UTC)
    return moment.astimezone().isoformat(timespec="seconds")


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
    """A rich table for an 80-column pipe: light rules, the ``key`` column (the one that identifies
    a row, such as an id prefix) never wrapped or cut, long free text folded onto more lines."""
    from rich import box
    from rich.table import Table

    out = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    cells = [[text(v) for v in row] for row in rows]
    for index, name in enumerate(columns):
        if index == key:
            widest = max((len(r[index]) for r in cells), default=0)
            out.add_column(name, no_wrap=True, min_width=max(widest, len(name)))
        else:
            out.add_column(name, overflow="fold")
    for row in cells:
        out.add_row(*row)
    return out
