"""The coordinator's governance hook: governance packets ride the alert flood, decide once stored,
and an adoption or an equivocation becomes actions (sans-I/O, no driver)."""

from __future__ import annotations

from ark_lattice.alerts import Alert
from ark_lattice.governance.documents import (
    Proposal,
    approval_packet,
    membership_packet,
    proposal_packet,
    round_payload,
)
from ark_lattice.hlc import pack
from ark_lattice.packet import Packet
from ark_lattice.protocol.actions import Adopt, Ingest, RaiseAlert, SendAlert
from ark_lattice.protocol.coordinator import Coordinator
from ark_lattice.protocol.events import AlertReceived, SyncReady

from test_coordinator import CORE, ME, PEERS, T0, T0_MS, coordinator, of, session_with

MEMBERS = [ME, *PEERS[:3]]  # four members, k = 3


def linked() -> tuple[Coordinator, list[int]]:
    core = coordinator()
    links = [session_with(core, peer, CORE) for peer in PEERS[:3]]
    for link in links:
        core.session_events(link, [SyncReady(send=True, receive=True)], T0)
    return core, links


def documents(n: int = 0) -> tuple[Packet, Packet]:
    keys = [m.node_id.key for m in MEMBERS]
    genesis = membership_packet(PEERS[0], 3, keys, created_at=pack(T0_MS - 9000, 0))
    from ark_lattice.protocol.governance import Governance

    g = Governance()
    g.add(genesis)
    assert g.membership is not None
    proposal = proposal_packet(
        PEERS[0], kind="round", base=0, membership=g.membership,
        payload=round_payload({"model": "m", "round": n}), created=int(T0) - 5, not_before=int(T0) - 5,
        expires=int(T0) + 600, created_at=pack(T0_MS - 5000, n),
    )
    return genesis, proposal


def approval(who, proposal: Packet, n: int = 0) -> Packet:
    return approval_packet(who, Proposal.from_packet(proposal), created_at=pack(T0_MS - 1000, n))


def test_a_flooded_governance_packet_is_stored_and_sent_on_to_the_other_core_peers() -> None:
    core, links = linked()
    genesis, _ = documents()
    actions = core.session_events(links[0], [AlertReceived(genesis, 3, False)], T0)
    assert of(actions, Ingest) == [Ingest(links[0], str(PEERS[0].node_id), (genesis,), False)]
    sent = of(actions, SendAlert)
    assert {a.link for a in sent} == set(links[1:]) and {a.hops for a in sent} == {2}
    # A second copy adds nothing.
    assert not of(core.session_events(links[1], [AlertReceived(genesis, 3, False)], T0), Ingest)


def test_the_kth_distinct_approval_adopts_once_stored() -> None:
    core, links = linked()
    genesis, proposal = documents()
    assert not of(core.ingested(links[0], [genesis, proposal], False, set(), T0), Adopt)
    twice = [approval(PEERS[0], proposal), approval(PEERS[0], proposal, 1)]  # one key, two packets
    assert not of(core.ingested(links[0], twice, False, set(), T0), Adopt)
    second = core.ingested(links[1], [approval(PEERS[1], proposal)], False, set(), T0)
    assert not of(second, Adopt)  # two distinct keys of three
    third = core.ingested(links[2], [approval(PEERS[2], proposal)], False, set(), T0)
    (adopt,) = of(third, Adopt)
    assert adopt.adopted.proposal.id == proposal.id and adopt.apply
    assert len({a.header.author for a in adopt.adopted.approvals}) == 3
    # Our own approval afterwards: flooded to every core peer, decides nothing more.
    ours = approval(ME, proposal)
    from ark_lattice.store.store import StoredPacket

    actions = core.local_packets([StoredPacket(ours, "local", T0_MS, False)], T0)
    assert {a.link for a in of(actions, SendAlert)} == set(links) and not of(actions, Adopt)


def test_an_equivocation_raises_a_self_proving_critical_alert() -> None:
    core, links = linked()
    genesis, p1 = documents(1)
    _, p2 = documents(2)
    core.ingested(links[0], [genesis, p1, p2], False, set(), T0)
    core.ingested(links[1], [approval(PEERS[1], p1)], False, set(), T0)
    actions = core.ingested(links[1], [approval(PEERS[1], p2)], False, set(), T0)
    (raised,) = of(actions, RaiseAlert)
    alert: Alert = raised.alert
    assert alert.severity == "critical" and alert.about == str(PEERS[1].node_id) and alert.self_proving()
    assert PEERS[1].node_id.key in core.governance.equivocators


def test_a_non_member_catches_an_equivocation_but_leaves_the_alert_to_the_members() -> None:
    core = coordinator(PEERS[5])  # not a member
    link = session_with(core, PEERS[0], CORE)
    genesis, p1 = documents(1)
    _, p2 = documents(2)
    core.ingested(link, [genesis, p1, p2, approval(PEERS[1], p1)], False, set(), T0)
    actions = core.ingested(link, [approval(PEERS[1], p2)], False, set(), T0)
    assert not of(actions, RaiseAlert) and PEERS[1].node_id.key in core.governance.equivocators
