"""The alerts a node's ledger holds: read back, filtered, and followed as they are stored.

An alert is a packet of kind ``alert`` (alerts.py); this module reads them from the store for the
CLI (``ark-lattice alerts list|show``) and for the node's status, which shows the recent ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ark_lattice.alerts import Alert
    from ark_lattice.store.store import Store, StoredPacket

__all__ = ["AlertView", "stored_alerts", "follow_alerts", "local_time", "MESSAGE_CUT"]

MESSAGE_CUT = 60  # characters of the message in tables and one-line views
_PACKET_COLUMNS = "id, header, signature, body, source, received_at, quarantined"


@dataclass(frozen=True)
class AlertView:
    """A stored packet of kind ``alert``: the alert it carries, or why it carries none."""

    stored: StoredPacket
    alert: Alert | None  # None when the body is not a valid alert
    error: str | None  # why it is not

    @classmethod
    def of(cls, stored: StoredPacket) -> AlertView:
        from ark_lattice.alerts import Alert
        from ark_lattice.errors import Malformed

        try:
            return cls(stored, Alert.from_packet(stored.packet), None)
        except Malformed as exc:
            return cls(stored, None, str(exc))

    @property
    def hex_id(self) -> str:
        return self.stored.packet.hex_id

    @property
    def author(self) -> str:
        return str(self.stored.packet.header.author)

    @property
    def source(self) -> str:
        return self.stored.source

    @property
    def severity(self) -> str:
        return self.alert.severity if self.alert is not None else "malformed"

    @property
    def about(self) -> str | None:
        return self.alert.about if self.alert is not None else None

    @property
    def message(self) -> str:
        return self.alert.message if self.alert is not None else f"({self.error})"

    @property
    def created_ms(self) -> int:
        from ark_lattice.hlc import unpack

        return unpack(self.stored.packet.header.created_at)[0]

    def local_time(self, sep: str) -> str:
        return local_time(self.created_ms, sep)

    def table_time(self, *, short: bool = False) -> str:
        """Local time without the UTC offset (and without the year if ``short``)."""
        when = datetime.fromtimestamp(self.created_ms / 1000)
        return when.strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S")

    def short_message(self) -> str:
        text = " ".join(self.message.split())
        return text if len(text) <= MESSAGE_CUT else text[: MESSAGE_CUT - 1] + "…"

    def state(self) -> str:
        return "quarantined" if self.stored.quarantined else ""

    def matches(self, severity: str | None, about: str | None) -> bool:
        if severity is None and about is None:
            return True
        if self.alert is None:
            return False
        return (severity is None or self.alert.severity == severity) and (
            about is None or self.alert.about == about
        )

    def line(self) -> str:
        """One line for ``--follow``: time, severity, author, about, message, state."""
        about = self.about[:8] if self.about else "-"
        state = f"  [{self.state()}]" if self.state() else ""
        return (
            f"{self.table_time()}  {self.severity:<8}  {self.author[:8]}  {about:<8}  "
            f"{self.hex_id[:16]}  {self.short_message()}{state}"
        )

    def to_json(self, *, evidence: bool = False) -> dict[str, Any]:
        alert = self.alert
        doc: dict[str, Any] = {
            "id": self.hex_id,
            "time": self.local_time("T"),
            "created_at": self.stored.packet.header.created_at,
            "topic": self.stored.packet.header.topic,
            "author": self.author,
            "severity": self.severity,
            "about": self.about,
            "message": alert.message if alert is not None else None,
            "evidence_size": len(alert.evidence) if alert is not None and alert.evidence else 0,
            "self_proving": bool(alert is not None and alert.self_proving()),
            "source": self.source,
            "received_at": self.stored.received_at,
            "quarantined": self.stored.quarantined,
            "error": self.error,
        }
        if evidence:
            doc["evidence"] = alert.evidence.hex() if alert is not None and alert.evidence else None
        return doc


async def stored_alerts(
    store: Store, *, severity: str | None = None, about: str | None = None, limit: int | None = None
) -> list[AlertView]:
    """The alerts the ledger holds (``about`` a full node id), newest first (HLC order); packets
    of kind ``alert`` whose body is no valid alert are listed too, unless a filter is given."""
    from ark_lattice.packet import Packet
    from ark_lattice.store.store import StoredPacket

    found: list[AlertView] = []
    sql = (
        f"SELECT {_PACKET_COLUMNS} FROM packets WHERE kind = 'alert' "
        "ORDER BY created_at DESC, id DESC"
    )
    # Closed on the way out, also when the limit stops the loop early (iter_rows is a generator).
    found_rows = cast(AsyncGenerator[tuple[Any, ...], None], store.iter_rows(sql, batch=200))
    async with contextlib.aclosing(found_rows) as rows:
        async for pid, header, signature, body, source, received_at, quarantined in rows:
            stored = StoredPacket(
                Packet.from_store(pid, header, signature, store.row_body(pid, body)), source, received_at,
                bool(quarantined),
            )
            view = AlertView.of(stored)
            if view.matches(severity, about):
                found.append(view)
                if limit is not None and len(found) >= limit:
                    break
    return found


async def follow_alerts(
    store: Store, after: int, *, severity: str | None = None, about: str | None = None,
    poll: float | None = None,
) -> AsyncIterator[AlertView]:
    """Every matching alert stored after ledger entry ``after``, as it is stored; never ends."""
    from ark_lattice import tail
    from ark_lattice.store.events import EventKind

    events = tail.follow(store, after, kind=EventKind.PACKET_STORED, poll=poll or tail.FOLLOW_POLL)
    async with contextlib.aclosing(cast(AsyncGenerator[Any, None], events)) as stored_events:
        async for event in stored_events:
            for stored in await store.get_packets([bytes.fromhex(event.subject)]):
                if stored.packet.header.kind != "alert":
                    continue
                view = AlertView.of(stored)
                if view.matches(severity, about):
                    yield view


def local_time(ms: int, sep: str) -> str:
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(sep=sep, timespec="seconds")
