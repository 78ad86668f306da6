"""Leaderless k-of-n adoption (DESIGN §10), sans-I/O: every node computes it from the packets it holds.

:class:`Governance` takes governance packets (membership, proposals, approvals; see
``governance/documents.py``) in any order and says what they decide: :class:`Adopted`,
:class:`Equivocated` or :class:`Halted`. Nodes that hold the same packets agree, with no leader
and no clock: whether an approval is in time is judged from its own signed timestamp against the
proposal's ``not_before`` / ``expires``, so a node that catches up later reaches the same result.

The adoption rule, for the proposals of one kind whose base version is ours:

- the proposal froze *our* membership: its signer-set hash and its k are those in force;
- every approval is re-verified here with strict Ed25519 (libsodium: canonical ``S``, no
  small-order points) before it counts — a packet's word that it was verified is not enough;
- what counts is the set of distinct 32-byte public keys of members (never packet ids, key ids or
  signature bytes: python-tuf CVE-2020-6174 and go-tuf GHSA-3633-5h82-39pq counted those), whose
  approval was signed within the proposal's window, and who have not equivocated;
- at least k of them adopt it; its kind's version becomes base + 1; a ``members`` proposal makes
  its payload the membership in force (TUF root rotation: the old set signs the new one in).

One key approving two proposals for one (kind, base) while both are open (the approvals' windows,
from signing to expiry, overlap) is self-contained evidence of equivocation:
its approvals stop counting, everywhere, and :class:`Equivocated` carries both packets. Two
proposals of one kind reaching k at once halt that kind (:class:`Halted`): never a silent
tie-break. Two different genesis documents halt governance altogether.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ark_lattice.errors import VerificationError
from ark_lattice.governance.documents import (
    APPROVAL_KIND,
    GOVERNANCE_KINDS,
    MEMBERSHIP_KIND,
    PROPOSAL_KIND,
    PROPOSAL_KINDS,
    Approval,
    Membership,
    Proposal,
    decode_members_payload,
    decode_tier_payload,
)
from ark_lattice.identity import NodeId
from ark_lattice.packet import Packet

__all__ = [
    "GOVERNANCE_KINDS",
    "Governance",
    "Adopted",
    "Equivocated",
    "Halted",
    "Outcome",
    "ProposalState",
]

ALL_KINDS = "*"  # the halt key when the genesis itself is in dispute


@dataclass(frozen=True)
class Adopted:
    proposal: Proposal
    packet: Packet
    approvals: tuple[Packet, ...]  # the approvals that counted, one per key, sorted by key
    membership: Membership  # the membership that adopted it (not the one it installs)


@dataclass(frozen=True)
class Equivocated:
    key: bytes
    kind: str
    base: int
    first: Packet
    second: Packet

    @property
    def node(self) -> str:
        return str(NodeId(self.key))


@dataclass(frozen=True)
class Halted:
    kind: str  # a proposal kind, or "*" for a disputed genesis
    base: int
    proposals: tuple[bytes, ...]
    reason: str


Outcome = Adopted | Equivocated | Halted


@dataclass
class ProposalState:
    """What ``governance list`` / ``show`` say of one proposal."""

    proposal: Proposal
    packet: Packet
    status: str  # pending, adopted, stale, halted
    keys: tuple[bytes, ...]  # distinct eligible keys whose approvals count now

    def to_json(self) -> dict[str, Any]:
        return {
            **self.proposal.to_json(),
            "status": self.status,
            "approvals": len(self.keys),
            "approvers": [str(NodeId(k)) for k in self.keys],
        }


@dataclass
class _Held:
    proposal: Proposal | None = None
    packet: Packet | None = None
    approvals: dict[bytes, tuple[Approval, Packet]] = field(default_factory=dict)  # by packet id


class Governance:
    """The governance state one node derives from the governance packets it holds."""

    def __init__(self) -> None:
        self.membership: Membership | None = None
        self.versions: dict[str, int] = {kind: 0 for kind in PROPOSAL_KINDS}
        self.halted: dict[str, Halted] = {}
        self.adopted: dict[bytes, Adopted] = {}  # by proposal id, in adoption order
        self.equivocators: dict[bytes, Equivocated] = {}
        self.rejected: dict[bytes, str] = {}  # packet id -> why it cannot count
        self._genesis: dict[bytes, Membership] = {}
        self._held: dict[bytes, _Held] = {}  # by proposal id
        self._at: dict[tuple[str, int], list[_Held]] = {}  # proposals by (kind, base): the candidates
        self._by_key: dict[tuple[bytes, str, int], list[tuple[Approval, Packet]]] = {}
        self._seen: set[bytes] = set()

    # -- input ----------------------------------------------------------------------------

    def add(self, packet: Packet) -> list[Outcome]:
        """Take one governance packet (any other is ignored); returns what it decided."""
        if packet.header.kind not in GOVERNANCE_KINDS or packet.id in self._seen:
            return []
        self._seen.add(packet.id)
        try:
            # Strict verification here, whatever the caller did: only a signature that verifies
            # now, over these bytes, lets a key count.
            Packet.from_parts(packet.header_bytes, packet.signature, packet.body)
            return self._add(packet)
        except VerificationError as exc:
            self.rejected[packet.id] = str(exc)
            return []
        except (ValueError, TypeError, RecursionError) as exc:  # odd CBOR a codec refuses to re-encode
            self.rejected[packet.id] = f"undecodable {packet.header.kind} ({exc.__class__.__name__})"
            return []

    def add_all(self, packets: Iterable[Packet]) -> list[Outcome]:
        out: list[Outcome] = []
        for packet in packets:
            out += self.add(packet)
        return out

    # -- views ----------------------------------------------------------------------------

    def proposals(self) -> list[ProposalState]:
        """Every proposal held, oldest first, with its status and counted approvers."""
        out = []
        for held in self._held.values():
            if held.proposal is None or held.packet is None:
                continue
            p = held.proposal
            if p.id in self.adopted:
                status, keys = "adopted", tuple(a.header.author.key for a in self.adopted[p.id].approvals)
            else:
                keys = self._counted(p, held)
                if p.kind in self.halted or ALL_KINDS in self.halted:
                    status = "halted"
                elif not self._eligible(p):
                    status = "stale"
                else:
                    status = "pending"
            out.append(ProposalState(p, held.packet, status, keys))
        out.sort(key=lambda s: (s.proposal.created, s.proposal.id))
        return out

    def approvals_of(self, proposal_id: bytes) -> list[tuple[Approval, Packet]]:
        held = self._held.get(proposal_id)
        return sorted(held.approvals.values(), key=lambda x: x[0].id) if held is not None else []

    def to_json(self) -> dict[str, Any]:
        return {
            "membership": self.membership.to_json() if self.membership is not None else None,
            "versions": dict(self.versions),
            "halted": {k: {"base": h.base, "reason": h.reason,
                           "proposals": [p.hex() for p in h.proposals]} for k, h in self.halted.items()},
            "equivocators": sorted(e.node for e in self.equivocators.values()),
        }

    # -- rules ----------------------------------------------------------------------------

    def _add(self, packet: Packet) -> list[Outcome]:
        kind = packet.header.kind
        if kind == MEMBERSHIP_KIND:
            return self._add_genesis(packet)
        if kind == PROPOSAL_KIND:
            proposal = Proposal.from_packet(packet)
            held = self._held.setdefault(proposal.id, _Held())
            held.proposal, held.packet = proposal, packet
            self._at.setdefault((proposal.kind, proposal.base), []).append(held)
            return self._evaluate()
        assert kind == APPROVAL_KIND
        approval = Approval.from_packet(packet)
        out: list[Outcome] = []
        given = self._by_key.setdefault((approval.approver, approval.kind, approval.base), [])
        if approval.approver not in self.equivocators:
            for earlier, earlier_packet in given:
                if earlier.conflicts(approval):
                    caught = Equivocated(
                        approval.approver, approval.kind, approval.base, earlier_packet, packet
                    )
                    self.equivocators[approval.approver] = caught
                    out.append(caught)
                    break
        given.append((approval, packet))
        self._held.setdefault(approval.proposal, _Held()).approvals[approval.id] = (approval, packet)
        return out + self._evaluate()

    def _add_genesis(self, packet: Packet) -> list[Outcome]:
        doc = Membership.from_packet(packet)
        self._genesis[doc.established_by] = doc
        if len(self._genesis) > 1:
            if ALL_KINDS in self.halted:
                return []
            halt = Halted(ALL_KINDS, 1, tuple(sorted(self._genesis)),
                          "two different genesis membership documents: governance halted")
            self.halted[ALL_KINDS] = halt
            return [halt]
        if self.membership is None:
            self.membership = doc
            self.versions["members"] = doc.version
            return self._evaluate()
        return []

    def _eligible(self, p: Proposal) -> bool:
        m = self.membership
        return (
            m is not None
            and p.base == self.versions[p.kind]
            and p.signers_hash == m.signers_hash
            and p.k == m.threshold
        )

    def _counted(self, p: Proposal, held: _Held) -> tuple[bytes, ...]:
        """The distinct eligible keys whose approvals of ``p`` count (sorted)."""
        m = self.membership
        if m is None:
            return ()
        members = set(m.members)
        keys = {
            a.approver
            for a, _ in held.approvals.values()
            if a.approver in members
            and a.approver not in self.equivocators
            and (a.kind, a.base, a.expires) == (p.kind, p.base, p.expires)
            and p.not_before <= a.signed_at <= p.expires
        }
        return tuple(sorted(keys))

    def _evaluate(self) -> list[Outcome]:
        """Adopt what has reached k, kind by kind, until nothing more changes."""
        out: list[Outcome] = []
        if ALL_KINDS in self.halted:
            return out
        changed = True
        while changed and self.membership is not None:
            changed = False
            for kind in PROPOSAL_KINDS:
                if kind in self.halted:
                    continue
                reached = [
                    held for held in self._at.get((kind, self.versions[kind]), [])
                    if held.proposal is not None and held.proposal.kind == kind
                    and self._eligible(held.proposal)
                    and len(self._counted(held.proposal, held)) >= held.proposal.k
                ]
                if len(reached) > 1:
                    ids = tuple(sorted(h.proposal.id for h in reached if h.proposal is not None))
                    halt = Halted(kind, self.versions[kind], ids,
                                  f"{len(ids)} conflicting {kind} proposals reached the threshold")
                    self.halted[kind] = halt
                    out.append(halt)
                elif reached:
                    out.append(self._adopt(reached[0]))
                    changed = True
                    break  # a new membership changes every kind's eligibility: start over
        return out

    def _adopt(self, held: _Held) -> Adopted:
        p, packet, m = held.proposal, held.packet, self.membership
        assert p is not None and packet is not None and m is not None
        keys = set(self._counted(p, held))
        chosen: dict[bytes, Packet] = {}
        for a, a_packet in sorted(held.approvals.values(), key=lambda x: x[0].id):
            if a.approver in keys and a.approver not in chosen:
                chosen[a.approver] = a_packet
        approvals = tuple(chosen[k] for k in sorted(chosen))
        adopted = Adopted(p, packet, approvals, m)
        self.adopted[p.id] = adopted
        self.versions[p.kind] = p.new
        if p.kind == "members":
            threshold, members = decode_members_payload(p.payload)
            self.membership = Membership(m.version + 1, threshold, members, p.id)
        return adopted


def adoption_verdict(
    gate: Any, adopted: Adopted, *, author_tier: str, self_id: str, now: float,
    tier_of: Callable[[str], str] = lambda peer: "unknown",
) -> tuple[bool, str, list[dict[str, Any]]]:
    """This node's policy on carrying out an adoption: (apply, reason, audit records).

    Hook ``governance`` always; for a ``tier`` proposal also hook ``tier_change`` with actor
    ``governance``, as for any tier change. The governance state moves on either way — every node
    must agree on versions and membership — but a node's policy may refuse to *apply* what the
    federation adopted (recorded as "not applied")."""
    p = adopted.proposal
    if p.kind == "tier" and str(decode_tier_payload(p.payload)[0]) == self_id:
        return False, "the tier proposal names this node: a node keeps no tier for itself", []
    if gate is None:
        return True, "adopted (no policy gate)", []
    author = str(NodeId(p.author))
    decision = gate.policy.decide(
        "governance",
        {"now": int(now), "self_id": self_id, "peer_id": author, "peer_tier": author_tier,
         "kind": "proposal", "topic": "governance", "proposal_kind": p.kind,
         "approvals": len(adopted.approvals)},
    )
    records = [{"hook": "governance", "peer": author, "subject": p.id.hex(), "allowed": decision.allowed,
                "rules": list(decision.fired), "reason": decision.reason}]
    allowed, reason = bool(decision.allowed), str(decision.reason)
    if allowed and p.kind == "tier":
        peer, tier = decode_tier_payload(p.payload)
        change, record = gate.tier_change(
            peer_id=str(peer), old_tier=tier_of(str(peer)), new_tier=tier.value, actor="governance",
            strikes=0, now=now,
        )
        records.append(record)
        allowed, reason = bool(change.allowed), str(change.reason)
    return allowed, reason, records


def equivocation_message(caught: Equivocated) -> str:
    return (
        f"governance equivocation: {caught.node[:16]} approved two {caught.kind} proposals on base "
        f"{caught.base} ({caught.first.hex_id[:16]}, {caught.second.hex_id[:16]}); its approvals no "
        "longer count"
    )


def halt_message(halt: Halted) -> str:
    ids = ", ".join(p.hex()[:16] for p in halt.proposals)
    return f"governance halted for {halt.kind} at base {halt.base}: {halt.reason} ({ids})"
