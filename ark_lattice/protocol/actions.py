"""What the node coordinator asks its driver to do: frozen dataclasses, carried out in order.

The coordinator (coordinator.py) returns lists of these; a driver (runtime/peering.py over
WebSockets and SQLite, sim/mesh.py over a virtual network) carries them out and decides nothing.
An action that reads the store names the coordinator method that takes the answer, so the rule
that uses the answer stays in the coordinator (docs/architecture.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ark_lattice.alerts import Alert
from ark_lattice.errors import ErrorCode
from ark_lattice.manifest import SignedManifest
from ark_lattice.packet import Packet
from ark_lattice.protocol.governance import Adopted

# Witnessing's actions live beside their rules (protocol/witnessing.py).
from ark_lattice.protocol.witnessing import (
    RecordCosignature,
    RequestCosignature,
    SendWitnessReply,
    SendWitnessRequest,
    Witness,
)
from ark_lattice.tiers import TrustTier

__all__ = [
    "RequestCosignature",
    "SendWitnessRequest",
    "Witness",
    "SendWitnessReply",
    "RecordCosignature",
    "LinkId",
    "Action",
    "SyncSet",
    "Dial",
    "WakeAt",
    "ReadDialTargets",
    "ReadTiers",
    "RecordPeer",
    "RecordManifest",
    "RecordEndpoints",
    "Admit",
    "Reconcile",
    "LoadWanted",
    "LoadQuery",
    "SendPackets",
    "AnswerQuery",
    "Ingest",
    "Push",
    "Want",
    "RequestSync",
    "SetTier",
    "Close",
    "Strike",
    "Isolate",
    "Audit",
    "Query",
    "QueryResult",
    "SendAlert",
    "SendAlertIds",
    "RaiseAlert",
    "RecordQuarantine",
    "LoadGovernance",
    "Adopt",
    "AuditStrangers",
]

LinkId = int  # the coordinator's name for one connection, never reused


class SyncSet(enum.Enum):
    """The packet set one reconciliation runs over (docs/protocol.md, "Sets")."""

    SHAREABLE = "shareable"  # everything we hold and may share: not quarantined
    FROM_PEER = "from_peer"  # only what this peer itself sent us (we send it nothing)


@dataclass(frozen=True)
class Dial:
    """Open a connection to ``url``; report ``link_opened`` on success, ``dial_failed`` if not."""

    url: str


@dataclass(frozen=True)
class WakeAt:
    """Call :meth:`Coordinator.wake` at ``at`` (or earlier; a later WakeAt replaces it)."""

    at: float


@dataclass(frozen=True)
class ReadDialTargets:
    """Read remembered endpoints and peers; answer with :meth:`Coordinator.dial_targets_read`."""


@dataclass(frozen=True)
class ReadTiers:
    """Read the tiers of these peers; answer with :meth:`Coordinator.tiers_read`."""

    peers: tuple[str, ...]


@dataclass(frozen=True)
class RecordPeer:
    """Remember an authenticated peer (and the URL we reached it at), then answer with
    :meth:`Coordinator.peer_recorded` and its record."""

    link: LinkId
    peer: str
    url: str | None


@dataclass(frozen=True)
class RecordManifest:
    peer: str
    manifest: SignedManifest


@dataclass(frozen=True)
class RecordEndpoints:
    """Remember endpoints (``peer`` None: an operator's URL, not yet identified)."""

    urls: tuple[str, ...]
    source: str
    peer: str | None = None


@dataclass(frozen=True)
class Admit:
    link: LinkId
    tier: TrustTier
    held_seq: int | None
    strikes: int


@dataclass(frozen=True)
class Reconcile:
    """Load the ``over`` set (with ``peer`` for FROM_PEER) and start the link's reconciliation.

    ``also``: ``(created_at, id)`` items to add to a FROM_PEER set — packets the peer sent us that
    we already held (protocol/echoes.py)."""

    link: LinkId
    over: SyncSet
    peer: str
    also: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True)
class LoadWanted:
    """Load these packets; answer with :meth:`Coordinator.wanted_loaded`."""

    link: LinkId
    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class LoadQuery:
    """Load packets of ``topic``; answer with :meth:`Coordinator.query_loaded`."""

    link: LinkId
    query_id: int
    topic: str
    limit: int


@dataclass(frozen=True)
class SendPackets:
    """Answer the link's want with these packets (already filtered: nothing quarantined)."""

    link: LinkId
    packets: tuple[Packet, ...]


@dataclass(frozen=True)
class AnswerQuery:
    link: LinkId
    query_id: int
    packets: tuple[Packet, ...]


@dataclass(frozen=True)
class Ingest:
    """Store received packets through the intake (see :meth:`Coordinator.admit_packets`), then
    report what was stored with :meth:`Coordinator.ingested`."""

    link: LinkId
    peer: str
    packets: tuple[Packet, ...]
    quarantine: bool


@dataclass(frozen=True)
class Push:
    """Live push to a peer we send to (its session still checks both sides' terms)."""

    link: LinkId
    packets: tuple[Packet, ...]


@dataclass(frozen=True)
class Want:
    """Ask the link for these ids ahead of anything else (missing dependencies)."""

    link: LinkId
    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class RequestSync:
    link: LinkId


@dataclass(frozen=True)
class SetTier:
    link: LinkId
    tier: TrustTier


@dataclass(frozen=True)
class Close:
    link: LinkId
    code: ErrorCode
    reason: str


@dataclass(frozen=True)
class Strike:
    """Audit misbehaviour; for a known ``peer`` add a strike and answer with
    :meth:`Coordinator.struck` and the peer's strike count."""

    link: LinkId
    peer: str | None
    subject: str  # the peer id, or the remote address before the handshake
    code: str
    reason: str
    fatal: bool


@dataclass(frozen=True)
class Isolate:
    """Give the peer ``tier`` (blocked) in the store, with the evidence as the reason; a peer we
    never met is recorded first."""

    peer: str
    reason: str
    tier: TrustTier = TrustTier.BLOCKED


@dataclass(frozen=True)
class Audit:
    """Policy decisions for the ledger's audit trail."""

    records: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Query:
    """Send a read-only query on the link (the operator asked); its answer comes as QueryResult."""

    link: LinkId
    peer: str
    topic: str
    limit: int


@dataclass(frozen=True)
class QueryResult:
    peer: str
    query_id: int
    packets: tuple[Packet, ...]
    more: bool


@dataclass(frozen=True)
class SendAlert:
    """Flood an alert on the link with ``hops`` left for the receiver."""

    link: LinkId
    packet: Packet
    hops: int


@dataclass(frozen=True)
class SendAlertIds:
    link: LinkId
    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class RaiseAlert:
    """Sign ``alert`` as a packet of ours on ``topic``, store it, and answer with
    :meth:`Coordinator.alert_raised`."""

    alert: Alert
    topic: str


@dataclass(frozen=True)
class RecordQuarantine:
    """The ledger's record of a quarantine put on (``until`` set) or lifted (``until`` None)."""

    peer: str
    until: float | None
    reason: str


@dataclass(frozen=True)
class LoadGovernance:
    """Read every governance packet held (topic ``governance``, not quarantined) and answer with
    :meth:`Coordinator.governance_loaded`."""


@dataclass(frozen=True)
class Adopt:
    """Record an adopted proposal with its approvals in the ledger (once) and, if ``apply``,
    carry out its effect (governance/effects.py); ``reason`` is the policy's word on it."""

    adopted: Adopted
    apply: bool
    reason: str


@dataclass(frozen=True)
class AuditStrangers:
    """Write these summaries of pre-handshake failures (protocol/strangers.py), one
    ``protocol.error`` event each, about ``record["subject"]`` (an address, or ``*``)."""

    records: tuple[Mapping[str, Any], ...]


Action = (
    Dial
    | WakeAt
    | ReadDialTargets
    | ReadTiers
    | RecordPeer
    | RecordManifest
    | RecordEndpoints
    | Admit
    | Reconcile
    | LoadWanted
    | LoadQuery
    | SendPackets
    | AnswerQuery
    | Ingest
    | Push
    | Want
    | RequestSync
    | SetTier
    | Close
    | Strike
    | Isolate
    | Audit
    | Query
    | QueryResult
    | SendAlert
    | SendAlertIds
    | RaiseAlert
    | RecordQuarantine
    | RequestCosignature
    | SendWitnessRequest
    | Witness
    | SendWitnessReply
    | RecordCosignature
    | LoadGovernance
    | Adopt
    | AuditStrangers
)

