"""Governance in one node's ledger: found a federation's membership, propose, approve, and read
the state back — by replaying the governance packets held through the same pure rule the running
coordinator applies (``protocol/governance.py``), so the CLI and the node never disagree.

``found``, ``propose`` and ``approve`` check and sign; :func:`deliver` then hands the packet to the
running node, which stores and floods it in one step (control command ``publish_governance``), or,
with no node running, stores it here to spread at the next sync.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ark_lattice.errors import Malformed, NotFound, UsageError
from ark_lattice.governance.documents import (
    GOVERNANCE_KINDS,
    PROPOSAL_KINDS,
    TOPIC,
    Membership,
    Proposal,
    approval_packet,
    default_threshold,
    members_payload,
    membership_packet,
    packet_bytes,
    proposal_packet,
    round_payload,
    tier_payload,
)
from ark_lattice.identity import NodeId
from ark_lattice.protocol.governance import Governance, ProposalState
from ark_lattice.store.events import EventKind
from ark_lattice.tiers import TrustTier

if TYPE_CHECKING:
    from ark_lattice.node import LocalNode
    from ark_lattice.packet import Packet
    from ark_lattice.store.store import Store

__all__ = [
    "load",
    "found",
    "propose",
    "approve",
    "find_proposal",
    "deliver",
    "payload_from_file",
    "parse_duration",
    "describe",
]

_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90``, ``30s``, ``10m``, ``2h``, ``7d`` → seconds (at least one)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise UsageError(f"bad duration {text!r}: a whole number with s, m, h or d, such as 10m")
    return int(match.group(1)) * _UNIT[match.group(2)]


async def held_packets(store: Store) -> list[Packet]:
    """The governance packets this ledger holds, oldest first (quarantined ones do not count)."""
    return [
        sp.packet for sp in reversed(await store.list_packets(topic=TOPIC))
        if not sp.quarantined and sp.packet.header.kind in GOVERNANCE_KINDS
    ]


async def load(store: Store) -> Governance:
    state = Governance()
    state.add_all(await held_packets(store))
    return state


async def found(node: LocalNode, members: list[str], threshold: int | None) -> Packet:
    """The genesis membership (version 1), signed: this node and ``members``; refused if one is held."""
    state = await load(node.store)
    if state.membership is not None:
        raise UsageError(
            f"this federation already has a membership (version {state.membership.version}); "
            "change it with `governance propose --kind members`"
        )
    keys = {node.node_id.key} | {_node_key(m) for m in members}
    k = threshold if threshold is not None else default_threshold(len(keys))
    created_at = await node.store.next_timestamp(node.store.now_ms())
    try:
        return membership_packet(node.identity, k, list(keys), created_at=created_at)
    except Malformed as exc:
        raise UsageError(str(exc)) from None


def payload_from_file(kind: str, text: str, membership: Membership | None, threshold: int | None) -> bytes:
    """The payload of a ``kind`` proposal from the operator's FILE: a policy's TOML text; for
    ``tier`` JSON ``{"peer": ID, "tier": T}``; for ``members`` JSON ``{"members": [ID…],
    "threshold": K}`` (K defaults to ⌊2n/3⌋+1); for ``round`` a JSON object with ``model`` and
    ``round``."""
    if kind not in PROPOSAL_KINDS:
        raise UsageError(f"unknown proposal kind {kind!r}: one of {', '.join(PROPOSAL_KINDS)}")
    try:
        if kind == "policy":
            from ark_lattice.policy import Policy

            Policy.load(text, "proposal")  # a bad policy is refused before anyone signs it
            return text.encode("utf-8")
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise UsageError(f"a {kind} proposal file is a JSON object")
        if kind == "tier":
            return tier_payload(NodeId.parse(str(doc.get("peer", ""))), TrustTier.parse(str(doc.get("tier"))))
        if kind == "members":
            names = doc.get("members")
            if not isinstance(names, list) or not names:
                raise UsageError('a members proposal lists "members": [node IDs]')
            keys = sorted({_node_key(str(m)) for m in names})
            k = doc.get("threshold", threshold)
            return members_payload(default_threshold(len(keys)) if k is None else k, keys)
        return round_payload(doc)
    except ValueError as exc:  # JSON, a node id, a tier
        raise UsageError(f"not a valid {kind} proposal: {exc}") from None
    except Malformed as exc:
        raise UsageError(f"not a valid {kind} proposal: {exc}") from None


async def propose(
    node: LocalNode, kind: str, payload: bytes, *, expires_in: int, not_before_in: int = 0
) -> Packet:
    """A proposal against the membership and version in force here, signed."""
    state = await load(node.store)
    if state.membership is None:
        raise UsageError("no membership yet: the founder creates it with `governance found`")
    if node.node_id.key not in state.membership.members:
        raise UsageError("this node is not a member of the federation's governance")
    if kind in state.halted or "*" in state.halted:
        raise UsageError(f"governance of {kind} is halted: {state.halted.get(kind) or state.halted['*']}")
    now = node.store.now_ms() // 1000
    created_at = await node.store.next_timestamp(node.store.now_ms())
    try:
        return proposal_packet(
            node.identity, kind=kind, base=state.versions[kind], membership=state.membership,
            payload=payload, created=now, not_before=now + not_before_in, expires=now + expires_in,
            created_at=created_at,
        )
    except Malformed as exc:
        raise UsageError(str(exc)) from None


async def find_proposal(store: Store, state: Governance, prefix: str) -> ProposalState:
    try:
        packet_id = await store.resolve_packet(prefix)
    except NotFound:
        raise NotFound(f"no proposal {prefix!r} in this ledger") from None
    for s in state.proposals():
        if s.proposal.id == packet_id:
            return s
    raise NotFound(f"{prefix!r} is not a valid proposal this ledger holds")


async def approve(node: LocalNode, prefix: str) -> Packet:
    """This node's approval, signed; refused if it would not count, or would equivocate."""
    state = await load(node.store)
    held = await find_proposal(node.store, state, prefix)
    p = held.proposal
    if held.status != "pending":
        raise UsageError(f"proposal {p.id.hex()[:16]} is {held.status}; nothing to approve")
    now = node.store.now_ms() / 1000
    if now > p.expires:
        raise UsageError(f"proposal {p.id.hex()[:16]} expired {int(now - p.expires)} s ago")
    if now < p.not_before:
        raise UsageError(f"proposal {p.id.hex()[:16]} may be approved from {p.not_before}, not yet")
    me = node.node_id.key
    assert state.membership is not None
    if me not in state.membership.members:
        raise UsageError("this node is not a member of the federation's governance")
    for other in state.proposals():
        q = other.proposal
        if q.id != p.id and (q.kind, q.base) == (p.kind, p.base) and now <= q.expires \
                and me in _approvers(state, q.id):
            # An honest member approves at most one open proposal per (kind, base): a second
            # would be proof of equivocation against ourselves (documents.Approval.conflicts).
            raise UsageError(
                f"this node already approved {q.id.hex()[:16]} for {p.kind} base {p.base}, open until "
                f"{q.expires}; approving another would be equivocation"
            )
    if me in _approvers(state, p.id):
        raise UsageError(f"this node already approved {p.id.hex()[:16]}")
    created_at = await node.store.next_timestamp(node.store.now_ms())
    return approval_packet(node.identity, p, created_at=created_at)


async def deliver(
    node: LocalNode, packet: Packet, running: Callable[[str, dict[str, Any]], Any] | None
) -> bool:
    """Hand a governance packet of ours to the running node (``running``: its control call), which
    stores and floods it at once; True if it did. Without one, store it here (False)."""
    from ark_lattice.errors import NodeNotRunning

    if running is not None:
        try:
            running("publish_governance", {"packet": packet_bytes(packet).hex()})
            return True
        except NodeNotRunning:
            pass
    await node.store.put_packets([packet])
    return False


def _approvers(state: Governance, proposal_id: bytes) -> set[bytes]:
    return {a.approver for a, _ in state.approvals_of(proposal_id)}


async def describe(store: Store, state: Governance, held: ProposalState) -> dict[str, Any]:
    """Everything about one proposal, with the packets (hex) anyone can re-verify offline."""
    p = held.proposal
    doc = held.to_json()
    doc["payload"] = _payload_json(p)
    doc["packet"] = packet_bytes(held.packet).hex()
    doc["approval_packets"] = [
        {"id": a.id.hex(), "approver": str(NodeId(a.approver)), "signed_at": a.signed_at,
         "counted": a.approver in held.keys, "packet": packet_bytes(pk).hex()}
        for a, pk in state.approvals_of(p.id)
    ]
    events = await store.events(kind=EventKind.GOVERNANCE_ADOPTED, subject=p.id.hex(), limit=1)
    doc["adopted_here"] = events[0].to_json() if events else None
    return doc


def _payload_json(p: Proposal) -> Any:
    from ark_lattice.governance.documents import (
        decode_members_payload,
        decode_round_payload,
        decode_tier_payload,
    )

    if p.kind == "policy":
        return p.payload.decode("utf-8")
    if p.kind == "tier":
        peer, tier = decode_tier_payload(p.payload)
        return {"peer": str(peer), "tier": tier.value}
    if p.kind == "members":
        k, keys = decode_members_payload(p.payload)
        return {"threshold": k, "members": [str(NodeId(key)) for key in keys]}
    return {str(k): v for k, v in decode_round_payload(p.payload).items()}


def _node_key(text: str) -> bytes:
    try:
        return NodeId.parse(text.replace(" ", "")).key
    except (ValueError, Malformed):
        raise UsageError(f"{text!r} is not a node ID") from None
