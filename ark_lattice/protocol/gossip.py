"""Alert gossip, sans-I/O: which copies to forward with how many hops, and which peers are held.

Alerts are flooded eagerly (DESIGN §10): the author sends to every core peer at once; a node
forwards the first valid copy to its core peers except those that sent it, under a hop limit, and
forwards again a later copy that arrives with more hops left — otherwise a first copy that came
the long way, at the limit, would starve the nodes behind it. There is no timer on that path; a
digest of recent ids every second (the backstop) repairs what a cut link lost.

:class:`Flood` keeps the bounded seen-set; :class:`Quarantines` the peers held because an alert
accused them: reversibly, until it expires, unless self-proving evidence or enough distinct core
accusers make it permanent. The coordinator (coordinator.py) decides with both.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["Flood", "Quarantine", "Quarantines", "hop_limit", "MAX_SEEN", "RECENT_SECONDS"]

# Alert ids remembered. A copy of a forgotten one is new again (judged and flooded once more; the
# store keeps one copy): that takes more than this many alerts inside the rate limits' reach.
MAX_SEEN = 8192
RECENT_SECONDS = 300.0  # alerts this young are in the digest (the backstop's repair window)
MAX_DIGEST = 512  # ids per digest (frames.MAX_ALERT_IDS)


def hop_limit(nodes: int, degree: int) -> int:
    """The issue's rule of thumb: 3 at up to 10 nodes, else ≥ log(N)/log(degree − 1) + 3."""
    if nodes <= 10 or degree <= 2:
        return 3
    return math.ceil(math.log(nodes) / math.log(degree - 1)) + 3


_REFUSED = 1 << 30  # a forwarded level no copy reaches: the alert goes no further from here


@dataclass
class _Seen:
    at: float  # when we first had it
    forwarded: int = -1  # the most hops left we forwarded it with; -1: never forwarded
    senders: dict[str, int] = field(default_factory=dict)  # peer -> the most hops its copies had
    accused: str | None = None  # never told of it (DESIGN §10)
    author: str | None = None  # holds it: never told of it either


class Flood:
    """The seen-set of one node: bounded, oldest forgotten first."""

    def __init__(self, *, max_seen: int = MAX_SEEN) -> None:
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()
        self._max_seen = max_seen

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def copy_arrived(
        self,
        alert_id: bytes,
        hops: int,
        sender: str | None,
        now: float,
        *,
        author: str | None = None,
        accused: str | None = None,
    ) -> int | None:
        """A copy with ``hops`` left came from ``sender`` (None: we raised it, ``hops`` is our
        limit). Returns the hops to forward it with, or None when it goes no further."""
        entry = self._entry(alert_id, now, author, accused)
        if sender is not None:
            entry.senders[sender] = max(hops, entry.senders.get(sender, -1))
            onward = hops - 1
        else:
            onward = hops
        if onward < 0 or onward <= entry.forwarded:
            return None  # no hops left, or forwarded already with as many or more
        entry.forwarded = onward
        return onward

    def stored(
        self, alert_id: bytes, now: float, *, author: str | None = None, accused: str | None = None
    ) -> bool:
        """An alert reached us outside the flood (reconciliation, the backstop, our own store);
        True if it is new to us. It is not forwarded: its senders' other peers repair it too."""
        if alert_id in self._seen:
            return False
        self._entry(alert_id, now, author, accused)
        return True

    def refuse(self, alert_id: bytes, now: float) -> None:
        """It was over its author's rate limit: no copy of it goes further from here, however
        many come (else the limit would not bound the flood wherever two paths meet)."""
        self._entry(alert_id, now, None, None).forwarded = _REFUSED

    def senders(self, alert_id: bytes) -> set[str]:
        entry = self._seen.get(alert_id)
        return set(entry.senders) if entry is not None else set()

    def served(self, alert_id: bytes, onward: int) -> set[str]:
        """Peers a copy with ``onward`` hops would not help: they sent us one with as many hops
        as ours would give them (a peer re-forwards only a copy with more hops than it had)."""
        entry = self._seen.get(alert_id)
        if entry is None:
            return set()
        return {peer for peer, hops in entry.senders.items() if hops >= onward - 1}

    def first_seen(self, alert_id: bytes) -> float | None:
        entry = self._seen.get(alert_id)
        return entry.at if entry is not None else None

    def accused(self, alert_id: bytes) -> str | None:
        entry = self._seen.get(alert_id)
        return entry.accused if entry is not None else None

    def holds(self, alert_id: bytes, peer: str | None) -> bool:
        """Whether ``peer`` is known to hold the alert: its author, or a peer that sent us a copy."""
        entry = self._seen.get(alert_id)
        return entry is not None and peer is not None and (peer == entry.author or peer in entry.senders)

    def recent(self, now: float) -> list[bytes]:
        """Ids of the alerts we had within the backstop's window, newest first, at most a digest."""
        out: list[bytes] = []
        for alert_id, entry in reversed(self._seen.items()):
            if now - entry.at > RECENT_SECONDS or len(out) == MAX_DIGEST:
                break
            out.append(alert_id)
        return out

    def missing(self, ids: Iterable[bytes]) -> list[bytes]:
        """Which of a peer's recent ids we lack (in its order)."""
        return [i for i in ids if i not in self._seen]

    def _entry(self, alert_id: bytes, now: float, author: str | None, accused: str | None) -> _Seen:
        entry = self._seen.get(alert_id)
        if entry is None:
            entry = self._seen[alert_id] = _Seen(now, accused=accused, author=author)
            while len(self._seen) > self._max_seen:
                self._seen.popitem(last=False)
        return entry


@dataclass
class Quarantine:
    """A peer held because alerts accused it."""

    peer: str
    until: float
    accusers: set[str] = field(default_factory=set)  # distinct core authors
    alerts: list[str] = field(default_factory=list)  # hex ids, oldest first

    def to_json(self) -> dict[str, object]:
        return {
            "peer": self.peer, "until": self.until, "accusers": sorted(self.accusers), "alerts": self.alerts
        }


class Quarantines:
    """Peers held by alerts, each until its quarantine expires."""

    def __init__(self) -> None:
        self._held: dict[str, Quarantine] = {}

    def __contains__(self, peer: object) -> bool:
        return peer in self._held

    def __iter__(self) -> Iterator[Quarantine]:
        return iter(sorted(self._held.values(), key=lambda q: (q.until, q.peer)))

    def accuse(
        self, peer: str, *, alert: str, author: str | None, until: float
    ) -> tuple[Quarantine, bool]:
        """Record an accusation (``author`` given only when it counts: a core author); returns
        the quarantine and whether it is new."""
        held = self._held.get(peer)
        new = held is None
        if held is None:
            held = self._held[peer] = Quarantine(peer, until)
        if author is not None:
            held.accusers.add(author)
        if alert not in held.alerts:
            held.alerts.append(alert)
        return held, new

    def lift(self, peer: str) -> Quarantine | None:
        return self._held.pop(peer, None)

    def expired(self, now: float) -> list[str]:
        return sorted(p for p, q in self._held.items() if q.until <= now)

    def next_expiry(self) -> float | None:
        return min((q.until for q in self._held.values()), default=None)
