"""What a :class:`~ark_lattice.protocol.session.Session` tells the node: frozen dataclasses.

The session hands these out through ``Session.events()``; the node (coordinator, runtime,
simulator, tests) acts on each and answers through the session's methods. Each event that
expects an answer names it. Like h11's ``_events.py``, an event is plain data: it never refers
back to the session and can be compared, logged and replayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ark_lattice.identity import NodeId
from ark_lattice.manifest import SignedManifest
from ark_lattice.packet import Packet

__all__ = [
    "WitnessRequested",
    "WitnessReplied",
    "PeerAuthenticated",
    "PeerIdentified",
    "SyncReady",
    "SyncCompleted",
    "PacketsWanted",
    "PacketsReceived",
    "QueryReceived",
    "QueryAnswered",
    "Misbehaviour",
    "PeerReportedError",
    "Audited",
    "Closed",
    "AlertReceived",
    "AlertIdsReceived",
    "Event",
]


@dataclass(frozen=True)
class PeerAuthenticated:
    """The handshake proved the peer's identity; answer with ``admit(tier, held_seq)``."""

    peer: NodeId


@dataclass(frozen=True)
class PeerIdentified:
    """The peer's manifest verified (signature, identity, expiry, no rollback); record it."""

    peer: NodeId
    manifest: SignedManifest


@dataclass(frozen=True)
class SyncReady:
    """Both sides' terms are known and packets may flow; answer with ``start_sync(items)``.

    ``items`` must be the packets we would share with this peer (see docs/protocol.md "Sets"):
    everything shareable if ``send``, else only what this peer itself sent us.
    """

    send: bool  # packets may flow from us to the peer
    receive: bool  # packets may flow from the peer to us


@dataclass(frozen=True)
class SyncCompleted:
    offered: int
    wanted: int


@dataclass(frozen=True)
class PacketsWanted:
    """The peer asks for these ids; answer with ``send_packets`` (those we hold and may share)."""

    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class PacketsReceived:
    """Verified packets our terms accept; store them, quarantined if ``quarantine``."""

    packets: tuple[Packet, ...]
    quarantine: bool
    live: bool


@dataclass(frozen=True)
class QueryReceived:
    """A read-only query our terms allow; answer with ``answer_query(query_id, packets)``."""

    query_id: int
    topic: str
    limit: int


@dataclass(frozen=True)
class QueryAnswered:
    query_id: int
    packets: tuple[Packet, ...]
    more: bool


@dataclass(frozen=True)
class Misbehaviour:
    """The peer broke a rule; the node audits it and counts a strike."""

    code: str
    reason: str
    fatal: bool


@dataclass(frozen=True)
class PeerReportedError:
    """The peer sent us an error frame (we may have a bug, or it disagrees with our terms).

    ``code`` is the peer's text, unchecked: a peer may send a code this version does not know.
    """

    code: str
    reason: str
    fatal: bool


@dataclass(frozen=True)
class Audited:
    """Policy decisions taken in this session; the node writes every one to the ledger."""

    records: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Closed:
    """The session is over; ``code`` is ours or the peer's reason (an ``ErrorCode`` value)."""

    code: str
    reason: str
    by_peer: bool


@dataclass(frozen=True)
class AlertReceived:
    """A verified packet of kind ``alert`` our terms accept, flooded to us with ``hops`` left;
    the node decides whether to store, forward and act on it (protocol/coordinator.py)."""

    packet: Packet
    hops: int
    quarantine: bool  # from a sandbox peer: kept apart, never forwarded


@dataclass(frozen=True)
class AlertIdsReceived:
    """The peer's recent alert ids (the flood's backstop): want the ones we lack."""

    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class WitnessRequested:
    """The peer asks us to cosign its checkpoint (an add-checkpoint request, witness.py)."""

    request: bytes


@dataclass(frozen=True)
class WitnessReplied:
    """The peer answered our add-checkpoint request (status, body, its last cosigned note)."""

    status: int
    body: bytes
    note: bytes


Event = (
    PeerAuthenticated
    | PeerIdentified
    | SyncReady
    | SyncCompleted
    | PacketsWanted
    | PacketsReceived
    | QueryReceived
    | QueryAnswered
    | Misbehaviour
    | PeerReportedError
    | Audited
    | Closed
    | AlertReceived
    | AlertIdsReceived
    | WitnessRequested
    | WitnessReplied
)
