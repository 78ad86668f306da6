"""Carrying out an adoption (the coordinator's :class:`~ark_lattice.protocol.actions.Adopt`).

Each adoption is recorded once, as a ``governance.adopted`` ledger event whose subject is the
proposal id and whose data lists the approvals that counted (the packets themselves are in the
ledger: ``governance show ID --json`` prints them for anyone to re-verify offline). Its effect is
carried out in the same step, and only the first time, so replaying the governance packets at every
start changes nothing:

- ``policy``: the payload becomes the node's policy through the path ``policy set`` takes
  (``LocalNode.set_policy``), its ``policy.set`` event naming the proposal; a running node swaps
  it in at once (``policy_sink``);
- ``tier``: the named peer gets the tier in the store (reason: the proposal), and live sessions follow;
- ``members``, ``round``: the record is the effect (``governance members``, :func:`adopted_round`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ark_lattice.governance.documents import decode_round_payload, decode_tier_payload
from ark_lattice.store.events import EventKind

if TYPE_CHECKING:
    from ark_lattice.protocol.actions import Adopt
    from ark_lattice.store.store import Store

__all__ = ["PolicySink", "carry_out", "adopted_round", "source_of"]

#: Make a policy text this node's (``LocalNode.set_policy`` plus the live gate's swap), given its
#: source label; None where there is no home to write it to (the simulator).
PolicySink = Callable[[str, str], Awaitable[Any]]


def source_of(proposal_id: bytes) -> str:
    """The ``policy.set`` source of a policy adopted by governance."""
    return f"governance:{proposal_id.hex()}"


async def carry_out(store: Store, action: Adopt, policy_sink: PolicySink | None) -> bool:
    """Record the adoption and apply its effect; False if it was recorded already (a replay)."""
    adopted = action.adopted
    p = adopted.proposal
    if await store.events(kind=EventKind.GOVERNANCE_ADOPTED, subject=p.id.hex(), limit=1):
        return False
    effect = "not applied: " + action.reason if not action.apply else "applied"
    if action.apply:
        try:
            if p.kind == "policy" and policy_sink is not None:
                await policy_sink(p.payload.decode("utf-8"), source_of(p.id))
            elif p.kind == "policy":
                effect = "recorded only: no running node here to put the policy in force"
            elif p.kind == "tier":
                peer, tier = decode_tier_payload(p.payload)
                await store.add_peer(str(peer))
                await store.set_tier(str(peer), tier, reason=f"governance proposal {p.id.hex()}")
        except Exception as exc:  # a policy that does not compile here: recorded, never a crash
            effect = f"failed: {exc}"
    await store.append_event(
        EventKind.GOVERNANCE_ADOPTED,
        p.id.hex(),
        {
            "kind": p.kind,
            "base": p.base,
            "version": p.new,
            "author": adopted.packet.header.author.key,
            "approvals": [a.id for a in adopted.approvals],
            "approvers": [a.header.author.key for a in adopted.approvals],
            "membership_version": adopted.membership.version,
            "effect": effect,
        },
    )
    return True


async def adopted_round(store: Store, model: str) -> dict[str, Any] | None:
    """The newest adopted ``round`` configuration for ``model``, or None (for the aggregation
    rounds, models.py): replayed from the ledger's governance packets, as every command reads them."""
    from ark_lattice.governance.ledger import load

    state = await load(store)
    for adopted in reversed(list(state.adopted.values())):
        if adopted.proposal.kind == "round":
            config = decode_round_payload(adopted.proposal.payload)
            if config.get("model") == model:
                return config
    return None
