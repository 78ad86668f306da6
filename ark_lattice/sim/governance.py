"""Real governance in the simulator: the validators are the membership, and each epoch they adopt
a ``round`` proposal k-of-n through the nodes' own coordinators (protocol/governance.py).

The first validator founds the membership (every validator, k = the scenario's ``quorum``) before
the run. A quarter into each epoch the first validator that is up proposes the epoch's round —
or, if an earlier proposal is still open and not adopted, keeps it — and a second later every
validator that is up, holds it and may approve it honestly (at most one open proposal per base)
approves it. Each approval is signed and stored at its validator's node and flooded by its
coordinator, exactly as ``governance approve`` on a running node. The epoch's quorum is *met* when
every honest node that is up has adopted that proposal.

An ``equivocate`` fault makes a validator sign a rival proposal for the same base and approve both:
every node that holds the two approvals must catch it (self-proving evidence) and block it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ark_lattice.errors import ConfigError, Malformed
from ark_lattice.governance.documents import (
    Proposal,
    approval_packet,
    check_threshold,
    membership_packet,
    proposal_packet,
    round_payload,
)
from ark_lattice.hlc import pack
from ark_lattice.identity import NodeId

if TYPE_CHECKING:
    from ark_lattice.protocol.governance import Governance
    from ark_lattice.sim.mesh import Simulation
    from ark_lattice.sim.node import SimNode

__all__ = ["SimGovernance", "PROPOSE_AT", "APPROVE_AFTER_S"]

PROPOSE_AT = 0.25  # of the epoch
APPROVE_AFTER_S = 1.0
OPEN_EPOCHS = 2  # a proposal stays open this many epochs


class SimGovernance:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        groups = {g.name for g in sim.scenario.groups if g.validators}
        self.validators = [n for n in sim.nodes if n.group in groups]
        self.k = sim.scenario.quorum
        self.active = bool(self.k and self.validators)
        self.current: dict[int, bytes] = {}  # epoch -> the proposal its validators approve
        self.equivocators: list[SimNode] = []
        if self.active:
            try:
                check_threshold(self.k, len(self.validators))
            except Malformed:
                n = len(self.validators)
                raise ConfigError(
                    f"{sim.scenario.source}: quorum: {self.k} of {n} validators: it must be more than "
                    "half of them (k ≤ n/2 is refused) and at most all"
                ) from None

    # -- the run --------------------------------------------------------------------------

    def found(self) -> None:
        """The genesis membership, in the first validator's ledger before the run."""
        if not self.active:
            return
        founder = self.validators[0]
        keys = [n.identity.node_id.key for n in self.validators]
        created_at = pack(int(self.sim.start_time * 1000), 0)
        packet = membership_packet(founder.identity, self.k, keys, created_at=created_at)
        self.sim.publish_packet(founder, packet)

    def propose(self, epoch: int) -> None:
        proposer = next((n for n in self.validators if n.state == "up" and n.honest), None)
        if proposer is None:
            return
        state = self._state(proposer)
        now = proposer.clock()
        open_ = [s for s in state.proposals() if s.status == "pending" and s.proposal.kind == "round"
                 and s.proposal.expires >= now]
        if open_:
            self.current[epoch] = open_[0].proposal.id
        else:
            created = int(now)
            expires = created + int(OPEN_EPOCHS * self.sim.scenario.epoch_seconds)
            assert state.membership is not None
            packet = proposal_packet(
                proposer.identity, kind="round", base=state.versions["round"], membership=state.membership,
                payload=round_payload({"model": "sim", "round": epoch}), created=created,
                not_before=created, expires=expires, created_at=proposer.timestamp(),
            )
            self.sim.publish_packet(proposer, packet)
            self.current[epoch] = packet.id
        self.sim.scheduler.call_later(APPROVE_AFTER_S, lambda: self.approve(epoch))

    def approve(self, epoch: int) -> None:
        pid = self.current.get(epoch)
        for node in self.validators:
            if node.state != "up" or not node.honest or pid is None:
                continue
            state = self._state(node)
            held = next((s for s in state.proposals() if s.proposal.id == pid), None)
            if held is None or held.status != "pending" or not self._may_approve(node, state, held.proposal):
                continue
            self._approve(node, held.proposal)

    def equivocate(self, node: SimNode) -> None:
        """``node`` signs a rival round proposal for the base in force and approves it and the
        current one: two open approvals for one base, the evidence every node can check."""
        if node.state != "up" or not self.active:
            return
        state = self._state(node)
        if state.membership is None:
            return
        self.equivocators.append(node)
        now = int(node.clock())
        rival = proposal_packet(
            node.identity, kind="round", base=state.versions["round"], membership=state.membership,
            payload=round_payload({"model": "sim", "round": -1, "rival": node.name}), created=now,
            not_before=now, expires=now + int(OPEN_EPOCHS * self.sim.scenario.epoch_seconds),
            created_at=node.timestamp(),
        )
        self.sim.publish_packet(node, rival)
        targets = [Proposal.from_packet(rival)]
        targets += [
            s.proposal for s in state.proposals()
            if s.status == "pending" and s.proposal.id != rival.id and s.proposal.kind == "round"
        ][:1]
        for proposal in targets:
            self._approve(node, proposal)

    # -- observation ----------------------------------------------------------------------

    def observe(self, epoch: int) -> dict[str, Any]:
        """The epoch's quorum, from the nodes' own governance state."""
        honest_validators = [n for n in self.validators if n.state != "dropped" and n.honest]
        pid = self.current.get(epoch)
        up = [n for n in self.sim.nodes if n.state == "up" and n.honest and n.core is not None]
        adopted_on = sum(1 for n in up if pid is not None and pid in self._state(n).adopted)
        counted = [len(s.keys) for n in up for s in self._state(n).proposals() if s.proposal.id == pid]
        return {
            "threshold": self.k,
            "validators": len(honest_validators),
            "ready": max(counted, default=0),  # distinct eligible approvals, as the best-informed sees
            "met": pid is not None and bool(up) and adopted_on == len(up),
            "proposal": pid.hex()[:16] if pid is not None else None,
            "adopted_on": adopted_on,
        }

    def equivocation(self) -> list[dict[str, Any]]:
        """For each equivocating validator: how many honest nodes caught it and block it."""
        out = []
        for bad in self.equivocators:
            honest = [n for n in self.sim.nodes if n.honest and n is not bad and n.store is not None]
            key = bad.identity.node_id.key
            caught = sum(1 for n in honest if n.core is not None and key in self._state(n).equivocators)
            blocked = sum(1 for n in honest if self.sim.tier_of(n, bad.node_id) == "blocked")
            out.append({"node": bad.name, "id": str(NodeId(bad.identity.node_id.key)), "honest": len(honest),
                        "caught_by": caught, "blocked_by": blocked})
        return out

    # -- rules ----------------------------------------------------------------------------

    def _approve(self, node: SimNode, proposal: Proposal) -> None:
        packet = approval_packet(node.identity, proposal, created_at=node.timestamp())
        self.sim.publish_packet(node, packet)

    def _state(self, node: SimNode) -> Governance:
        assert node.core is not None
        return node.core.governance

    def _may_approve(self, node: SimNode, state: Governance, proposal: Proposal) -> bool:
        """An honest validator: not twice, and never a second open proposal on one base."""
        me = node.identity.node_id.key
        now = node.clock()
        for s in state.proposals():
            q = s.proposal
            mine = me in {a.approver for a, _ in state.approvals_of(q.id)}
            if q.id == proposal.id and mine:
                return False
            if q.id != proposal.id and mine and (q.kind, q.base) == (proposal.kind, proposal.base) \
                    and q.expires >= now:
                return False
        return True
