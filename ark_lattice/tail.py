"""The tail of the ledger: what was appended lately, and what is appended next (DESIGN §8, §9).

Everything here only reads, through the store's reading functions, so it works beside a running
node (SQLite's WAL lets readers go on while the node writes) and without one:

- :func:`events_after`, :func:`follow` and :func:`follow_decisions`: events past a sequence
  number, in chain order — what ``ledger log --follow`` and ``audit --follow`` print as the
  ledger grows;
- :func:`decisions_in` and :class:`DecisionFilter`: the policy decisions one event holds (the
  runtime writes many per event) and which of them an operator asked for;
- :class:`RecentDenials`: the last few deny decisions, kept up to date by reading only the
  decision events appended since the last look (``federation status`` asks every second or two);
- :func:`summary`: the ledger's size on disk and its last checkpoint;
- :func:`last_errors`: the newest protocol error the ledger holds about each live session.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from ark_lattice.store.events import Event, EventKind
from ark_lattice.store.store import Store

__all__ = [
    "DecisionFilter",
    "RecentDenials",
    "events_after",
    "follow",
    "follow_decisions",
    "decisions_in",
    "summary",
    "last_errors",
    "FOLLOW_POLL",
]

FOLLOW_POLL = 0.25  # seconds between looks at the ledger while following
_BATCH = 1000
_COLUMNS = "seq, ts, kind, subject, data, prev, hash"


async def events_after(
    store: Store, seq: int, *, kind: str | None = None, limit: int = _BATCH
) -> list[Event]:
    """Up to ``limit`` events with a sequence number above ``seq``, oldest first; ``kind`` is one
    of :class:`EventKind`'s."""
    # iter_rows takes no parameters: both values are made safe here (an int, a known kind).
    where = f"seq > {int(seq)}"
    if kind is not None:
        if kind not in _KINDS:
            raise ValueError(f"not an event kind: {kind!r}")
        where += f" AND kind = '{kind}'"
    sql = f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY seq LIMIT {int(limit)}"
    return [Event(*row) async for row in store.iter_rows(sql)]


async def follow(
    store: Store, after: int, *, kind: str | None = None, poll: float = FOLLOW_POLL
) -> AsyncIterator[Event]:
    """Every event appended after ``after`` (of ``kind``, any string), as it is appended; never
    ends (cancel it)."""
    while True:
        batch = await events_after(store, after)
        for event in batch:
            if kind is None or event.kind == kind:
                yield event
        if batch:
            after = batch[-1].seq
        if len(batch) < _BATCH:
            await asyncio.sleep(poll)


async def follow_decisions(
    store: Store, after: int, which: DecisionFilter, *, poll: float = FOLLOW_POLL
) -> AsyncIterator[dict[str, Any]]:
    """Every decision ``which`` matches in the events appended after ``after``; never ends."""
    async for event in follow(store, after, kind=EventKind.POLICY_DECISION, poll=poll):
        for record in decisions_in(event):
            if which.matches(record):
                yield record


def decisions_in(event: Event) -> list[dict[str, Any]]:
    """The decisions a ``policy.decision`` event holds, in the order they were taken, each with
    its event's ``seq`` and ``ts`` (the shape ``audit --json`` prints)."""
    if event.kind != EventKind.POLICY_DECISION:
        return []
    records = event.fields.get("decisions") or []
    return [{"seq": event.seq, "ts": event.ts, **r} for r in records if isinstance(r, dict)]


@dataclass(frozen=True)
class DecisionFilter:
    """Which decisions an operator asked for: ``None`` matches anything."""

    peer: str | None = None
    allowed: bool | None = None
    hook: str | None = None
    since_ms: int | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        return (
            (self.peer is None or record.get("peer") == self.peer)
            and (self.allowed is None or record.get("allowed") is self.allowed)
            and (self.hook is None or record.get("hook") == self.hook)
            and (self.since_ms is None or int(record.get("ts", 0)) >= self.since_ms)
        )


class RecentDenials:
    """The newest ``keep`` deny decisions, newest first.

    The first :meth:`read` looks at the newest ``first_look`` decision events; each later one
    reads only the decision events appended since, so asking often stays cheap on a large ledger.
    """

    def __init__(self, keep: int = 10, first_look: int = 50) -> None:
        self.keep = keep
        self.first_look = first_look
        self._rows: deque[dict[str, Any]] = deque(maxlen=keep)
        self._after: int | None = None

    async def read(self, store: Store) -> list[dict[str, Any]]:
        if self._after is None:
            newest = await store.events(kind=EventKind.POLICY_DECISION, limit=self.first_look)
            self._take(reversed(newest))
            self._after = newest[0].seq if newest else 0
        while batch := await events_after(store, self._after, kind=EventKind.POLICY_DECISION):
            self._take(batch)
            self._after = batch[-1].seq
            if len(batch) < _BATCH:
                break
        return list(reversed(self._rows))

    def _take(self, events: Iterable[Event]) -> None:
        for event in events:
            self._rows.extend(r for r in decisions_in(event) if r.get("allowed") is False)


async def summary(store: Store) -> dict[str, Any]:
    """``events``; ``bytes`` of the database with its write-ahead log, ``free_bytes`` of it in
    free pages (what ``ledger compact`` gives back; read from the file's header, no scan); the
    last ``checkpoint`` (its ``size`` in events and the Unix time ``at`` which it was signed), or
    None."""
    size = 0
    for path in (store.path, store.path.with_name(store.path.name + "-wal")):
        try:
            size += path.stat().st_size
        except OSError:
            pass  # no WAL right after a checkpoint, or an in-memory ledger
    checkpoint = None
    if newest := await store.events(kind=EventKind.CHECKPOINT, limit=1):
        event = newest[0]
        checkpoint = {"size": int(event.fields.get("size", 0)), "at": event.ts / 1000}
    free = (await store.pages()).free_bytes
    return {"events": await store.event_count(), "bytes": size, "free_bytes": free, "checkpoint": checkpoint}


async def last_errors(store: Store, subjects: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The newest ``protocol.error`` about each subject (a peer id, or a remote address before the
    handshake): ``{"error": "code: reason", "at": Unix time}``; subjects with none are left out."""
    out: dict[str, dict[str, Any]] = {}
    for subject in dict.fromkeys(subjects):
        newest = await store.events(kind=EventKind.PROTOCOL_ERROR, subject=subject, limit=1)
        if newest:
            fields = newest[0].fields
            out[subject] = {
                "error": f"{fields.get('code', '?')}: {fields.get('reason', '')}",
                "at": newest[0].ts / 1000,
            }
    return out


# -- private ------------------------------------------------------------------------------------

_KINDS = frozenset(v for k, v in vars(EventKind).items() if k.isupper() and isinstance(v, str))

