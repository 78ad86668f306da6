"""What this node has heard on the LAN, and which announcements may reach the federation.

Pure and sans-I/O: the carriers (mdns.py, beacon.py) hand over what arrived with the time it
arrived; :meth:`Sightings.hear` answers with a :class:`Heard` whose ``outcome`` says what to do.
Everything is checked here, in this order, before anything is dialled:

1. per-sender and overall rate limits (a flood costs no signature checks);
2. parsing (:class:`Malformed`), the signature (:class:`BadSignature`), expiry (:class:`Expired`);
3. our own announcements, heard back through multicast loopback, are ignored;
4. an announcement older than one already held from the same node (a replay) is ignored.

Only ``NEW``, ``CHANGED`` and ``REFRESHED`` outcomes are passed on to
``Federation.discovered``; a node that repeats itself is passed on again only every
``REPORT_INTERVAL`` seconds (so a peer the operator removed comes back, but the store is not
written at every beacon). Rejections are kept, bounded, so ``federation discover`` can show them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ark_lattice.discovery.announcement import Announcement, SignedAnnouncement
from ark_lattice.errors import VerificationError
from ark_lattice.identity import NodeId
from ark_lattice.policy.ratelimit import TokenBuckets

__all__ = ["Sightings", "Heard", "Outcome", "REPORT_INTERVAL", "MAX_NODES", "MAX_REJECTIONS"]

REPORT_INTERVAL = 300.0
MAX_NODES = 256
MAX_REJECTIONS = 64
SENDER_RATE, SENDER_BURST = 2.0, 8.0  # announcements per second from one sender
TOTAL_RATE, TOTAL_BURST = 100.0, 200.0  # from everyone together: bounds the cost of spoofed senders
# Nodes never heard before, passed on to the store: anyone can make keys, so a stranger flooding
# fresh node IDs must not fill the peer table faster than this. A node held back is not recorded
# and counts as new again when it next announces (a beacon every 30 s; an mDNS record when it is
# re-signed, at half its lifetime).
NEW_RATE, NEW_BURST = 1.0, 64.0
_ALL = "*"


class Outcome(enum.Enum):
    NEW = "new"  # first verified announcement from this node
    CHANGED = "changed"  # newer, with other endpoints or name
    REFRESHED = "refreshed"  # the same again, REPORT_INTERVAL after it was last passed on
    REPEATED = "repeated"  # the same again; nothing to do
    OUTDATED = "outdated"  # older than one held: a replay, or a stale cache
    OURS = "ours"  # our own, heard back
    REJECTED = "rejected"  # malformed, badly signed or expired
    THROTTLED = "throttled"  # over the rate limit; not even parsed

    @property
    def passes(self) -> bool:
        return self in (Outcome.NEW, Outcome.CHANGED, Outcome.REFRESHED)


@dataclass(frozen=True)
class Heard:
    outcome: Outcome
    announcement: Announcement | None = None
    reason: str = ""
    times: int = 1  # for a rejection: how often this sender has sent this one


@dataclass
class _Via:
    sender: str
    first_seen: float
    last_seen: float
    present: bool = True


@dataclass
class _Node:
    announcement: Announcement
    reported_at: float
    via: dict[str, _Via] = field(default_factory=dict)  # source -> how we heard it


@dataclass
class _Rejection:
    source: str
    sender: str
    claimed: str | None
    reason: str
    first_seen: float
    last_seen: float
    count: int = 1


class Sightings:
    """The table of verified announcements and recent rejections, keyed by node ID."""

    def __init__(self, local: NodeId | None) -> None:
        self.local = local
        self._nodes: dict[str, _Node] = {}  # least recently heard first
        # (source, sender, claimed node ID, reason) -> rejection
        self._rejections: dict[tuple[str, str, str | None, str], _Rejection] = {}
        self._limits = TokenBuckets(SENDER_RATE, SENDER_BURST, max_keys=4096)
        self._total = TokenBuckets(TOTAL_RATE, TOTAL_BURST, max_keys=1)
        self._new = TokenBuckets(NEW_RATE, NEW_BURST, max_keys=1)

    def hear(self, source: str, sender: str, raw: bytes | Mapping[Any, Any], now: float) -> Heard:
        """One announcement as it arrived: datagram bytes, or mDNS TXT properties."""
        if not self._total.take(_ALL, now) or not self._limits.take((source, sender), now):
            return Heard(Outcome.THROTTLED, reason="over the rate limit")
        claimed: str | None = None
        try:
            signed = (
                SignedAnnouncement.from_datagram(raw)
                if isinstance(raw, bytes)
                else SignedAnnouncement.from_txt(raw)
            )
            claimed = str(signed.announcement.node_id)
            a = signed.verify(now)
        except VerificationError as exc:
            times = self._reject(source, sender, claimed or _claimed_id(raw), str(exc), now)
            return Heard(Outcome.REJECTED, reason=str(exc), times=times)
        if self.local is not None and a.node_id == self.local:
            return Heard(Outcome.OURS, a)
        return self._record(source, sender, a, now)

    def gone(self, source: str, sender: str) -> None:
        """The carrier says ``sender`` withdrew (an mDNS goodbye); keep the row, mark it absent."""
        for node in self._nodes.values():
            via = node.via.get(source)
            if via is not None and via.sender == sender:
                via.present = False

    def rows(self, now: float) -> list[dict[str, Any]]:
        """What ``federation discover`` lists: verified sightings first, then rejections."""
        self._expire(now)
        rows: list[dict[str, Any]] = []
        for node_id, node in self._nodes.items():
            a = node.announcement
            for source, via in sorted(node.via.items()):
                rows.append(
                    {
                        "node_id": node_id,
                        "name": a.name,
                        "endpoints": list(a.endpoints),
                        "source": source,
                        "sender": via.sender,
                        "verified": True,
                        "reason": None,
                        "present": via.present,
                        "first_seen": via.first_seen,
                        "last_seen": via.last_seen,
                        "expires_at": a.expires_at,
                        "count": None,
                    }
                )
        for r in self._rejections.values():
            rows.append(
                {
                    "node_id": r.claimed,
                    "name": None,
                    "endpoints": [],
                    "source": r.source,
                    "sender": r.sender,
                    "verified": False,
                    "reason": r.reason,
                    "present": None,
                    "first_seen": r.first_seen,
                    "last_seen": r.last_seen,
                    "expires_at": None,
                    "count": r.count,
                }
            )
        return rows

    def verified(self, now: float) -> dict[str, Announcement]:
        self._expire(now)
        return {node_id: node.announcement for node_id, node in self._nodes.items()}

    # -- private ----------------------------------------------------------------------------

    def _record(self, source: str, sender: str, a: Announcement, now: float) -> Heard:
        node_id = str(a.node_id)
        node = self._nodes.pop(node_id, None)
        if node is None:
            if not self._new.take(_ALL, now):
                return Heard(Outcome.THROTTLED, a, "too many new nodes at once")
            node = _Node(a, reported_at=now)
            outcome = Outcome.NEW
        elif a.issued_at < node.announcement.issued_at:
            self._nodes[node_id] = node
            return Heard(Outcome.OUTDATED, a, "older than the announcement held")
        elif (a.endpoints, a.name) != (node.announcement.endpoints, node.announcement.name):
            outcome = Outcome.CHANGED
        elif now - node.reported_at >= REPORT_INTERVAL:
            outcome = Outcome.REFRESHED
        else:
            outcome = Outcome.REPEATED
        node.announcement = a
        if outcome.passes:
            node.reported_at = now
        via = node.via.get(source)
        if via is None:
            node.via[source] = _Via(sender, now, now)
        else:
            via.sender, via.last_seen, via.present = sender, now, True
        self._nodes[node_id] = node  # most recently heard last
        while len(self._nodes) > MAX_NODES:
            del self._nodes[next(iter(self._nodes))]
        return Heard(outcome, a)

    def _reject(self, source: str, sender: str, claimed: str | None, reason: str, now: float) -> int:
        key = (source, sender, claimed, reason)
        r = self._rejections.pop(key, None)
        if r is None:
            r = _Rejection(source, sender, claimed, reason, now, now)
        else:
            r.count += 1
            r.last_seen = now
        self._rejections[key] = r
        while len(self._rejections) > MAX_REJECTIONS:
            del self._rejections[next(iter(self._rejections))]
        return r.count

    def _expire(self, now: float) -> None:
        for node_id in [n for n, node in self._nodes.items() if now >= node.announcement.expires_at]:
            del self._nodes[node_id]


def _claimed_id(raw: object) -> str | None:
    """The node ID a rejected TXT record claims, for the operator's eyes only (never trusted)."""
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            if key in (b"id", "id") and isinstance(value, (bytes, str)):
                text = value.decode(errors="replace") if isinstance(value, bytes) else value
                return text[:64]
    return None
