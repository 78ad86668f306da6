"""The node coordinator driven by hand: method calls, explicit ``now``, a seeded generator.

Each test plays the driver (runtime/effects.py ``Driver``): it opens links, hands the coordinator
session events and store answers, and asserts on the actions that come back. No asyncio, no store,
no sockets. The blocked-peer scenario of issue 9 runs twice on a virtual clock: once with the
session events written out, once with two coordinators driving real sessions over an in-memory
network. The property tests at the end feed random sequences of events over a few links and check
the two rules that must hold whatever the order: a quarantined packet never leaves, and a packet is
pushed only to an open link whose tier lets us send, never back to where it came from.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ark_lattice.errors import ErrorCode, LocalProtocolError
from ark_lattice.hlc import pack
from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest, SignedManifest
from ark_lattice.packet import Packet
from ark_lattice.policy import DEFAULT_POLICY_TEXT, Policy
from ark_lattice.policy.gate import PolicyGate
from ark_lattice.protocol.actions import (
    Action,
    Admit,
    AnswerQuery,
    Audit,
    AuditStrangers,
    Close,
    Dial,
    Ingest,
    Isolate,
    LinkId,
    LoadQuery,
    LoadWanted,
    Push,
    Query,
    QueryResult,
    RaiseAlert,
    ReadDialTargets,
    ReadTiers,
    Reconcile,
    RecordEndpoints,
    RecordManifest,
    RecordPeer,
    RequestSync,
    SendPackets,
    SetTier,
    Strike,
    SyncSet,
    WakeAt,
    Want,
)
from ark_lattice.protocol.coordinator import (
    DIAL_PACE,
    DIALS_PER_WAKE,
    REFRESH_SECONDS,
    STRIKES_TO_BLOCK,
    Coordinator,
    DialPolicy,
    keep_existing_session,
)
from ark_lattice.protocol.events import (
    Audited,
    Closed,
    Event,
    Misbehaviour,
    PacketsReceived,
    PacketsWanted,
    PeerAuthenticated,
    PeerIdentified,
    QueryAnswered,
    QueryReceived,
    SyncReady,
)
from ark_lattice.protocol.reconcile import ItemSet
from ark_lattice.protocol.session import Role, Session, State
from ark_lattice.protocol.witnessing import RequestCosignature
from ark_lattice.runtime.effects import LINK_ACTIONS, apply_to_session
from ark_lattice.store.store import StoredPacket
from ark_lattice.tiers import TrustTier

CORE, SANDBOX, EXTERNAL, UNKNOWN, BLOCKED = (
    TrustTier.CORE,
    TrustTier.SANDBOX,
    TrustTier.EXTERNAL,
    TrustTier.UNKNOWN,
    TrustTier.BLOCKED,
)
INITIATOR, RESPONDER = Role.INITIATOR, Role.RESPONDER
ME = Identity.from_seed(bytes([1]) * 32)
PEERS = [Identity.from_seed(bytes([i]) * 32) for i in range(2, 14)]
FEDERATION = bytes(32)
T0 = 1_700_000_000.0
T0_MS = int(T0 * 1000)

# DESIGN §5, written out here so the coordinator is checked against the table, not against itself.
WE_SEND = {CORE}
WORTH_DIALLING = {CORE, SANDBOX, EXTERNAL}
FLOWS = {CORE, SANDBOX}  # something moves in a reconciliation: we send, or we accept


def make_manifest(
    identity: Identity, seq: int = 1, *, issued: float = T0 - 60, lifetime: int = 86_400
) -> SignedManifest:
    return PeerManifest(
        identity.node_id, "test", seq, int(issued), int(issued) + lifetime, ("ws://x:1",), ("sync/1",)
    ).sign(identity)


def make_packet(author: Identity, n: int, *, depends: tuple[bytes, ...] = ()) -> Packet:
    return Packet.create(
        author,
        topic="lab/notes",
        kind="note",
        body=f"{author.node_id.short}-{n}".encode(),
        created_at=pack(T0_MS - 3_600_000 + n * 1000, 0),
        depends=depends,
    )


def stored(packet: Packet, *, quarantined: bool, source: str = "local") -> StoredPacket:
    return StoredPacket(packet, source, T0_MS, quarantined)


def coordinator(identity: Identity = ME, seed: int = 0, **kw: Any) -> Coordinator:
    return Coordinator(identity, FEDERATION, make_manifest(identity), random.Random(seed), **kw)


def of(actions: Iterable[Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def pid(identity: Identity) -> str:
    return str(identity.node_id)


def authenticate(
    core: Coordinator, peer: Identity, role: Role = INITIATOR, *, url: str | None = None, now: float = T0
) -> tuple[LinkId, list[Action]]:
    link, _session = core.open_link(role, f"10.0.0.{PEERS.index(peer) + 2}:4000", now, url=url)
    return link, core.session_events(link, [PeerAuthenticated(peer.node_id)], now)


def session_with(
    core: Coordinator,
    peer: Identity,
    tier: TrustTier,
    role: Role = INITIATOR,
    *,
    url: str | None = None,
    now: float = T0,
    identify: bool = True,
) -> LinkId:
    """A link through authentication, the store's answer with ``tier`` and (if ``identify``) the
    peer's manifest: the session is open."""
    link, actions = authenticate(core, peer, role, url=url, now=now)
    assert actions == [RecordPeer(link, pid(peer), url)]
    assert core.peer_recorded(link, tier, None, 0, now) == [Admit(link, tier, None, 0)]
    if identify:
        manifest = make_manifest(peer)
        # A core peer is asked to cosign our newest checkpoint (witnessing.py).
        cosign = [RequestCosignature(link, pid(peer))] if tier is TrustTier.CORE else []
        assert core.session_events(link, [PeerIdentified(peer.node_id, manifest)], now) == [
            RecordManifest(pid(peer), manifest), *cosign
        ]
    return link


def answer_reads(
    core: Coordinator,
    actions: Iterable[Action],
    now: float,
    *,
    endpoints: Sequence[tuple[str, str | None]] = (),
    peers: Sequence[tuple[str, TrustTier, Sequence[str]]] = (),
) -> list[Action]:
    """Carry out ReadDialTargets with this store content, as the driver would; the rest passes."""
    out: list[Action] = []
    pending = deque(actions)
    while pending:
        action = pending.popleft()
        if isinstance(action, ReadDialTargets):
            pending.extend(core.dial_targets_read(endpoints, peers, now))
        else:
            out.append(action)
    return out


def dialled(actions: Iterable[Action]) -> list[str]:
    return [a.url for a in of(actions, Dial)]


def target(core: Coordinator, url: str) -> dict[str, Any]:
    (found,) = [t for t in core.dial_targets() if t["url"] == url]
    return found


# -- 1. which set a session reconciles over -------------------------------------------------------


@pytest.mark.parametrize("receive", [True, False])
def test_a_session_that_sends_reconciles_over_everything_shareable(receive: bool) -> None:
    core = coordinator()
    link = session_with(core, PEERS[0], CORE)
    actions = core.session_events(link, [SyncReady(send=True, receive=receive)], T0)
    assert actions == [Reconcile(link, SyncSet.SHAREABLE, pid(PEERS[0]))]


def test_a_session_that_only_receives_reconciles_over_what_that_peer_sent() -> None:
    core = coordinator()
    a = session_with(core, PEERS[0], SANDBOX)
    b = session_with(core, PEERS[1], SANDBOX)
    assert core.session_events(b, [SyncReady(send=False, receive=True)], T0) == [
        Reconcile(b, SyncSet.FROM_PEER, pid(PEERS[1]))
    ]
    assert core.session_events(a, [SyncReady(send=False, receive=True)], T0) == [
        Reconcile(a, SyncSet.FROM_PEER, pid(PEERS[0]))
    ]


# -- 2. quarantine ---------------------------------------------------------------------------------


def test_wanted_packets_are_sent_without_the_quarantined_ones() -> None:
    core = coordinator()
    link = session_with(core, PEERS[0], CORE)
    p = [make_packet(PEERS[1], n) for n in range(4)]
    assert core.session_events(link, [PacketsWanted((p[0].id, p[1].id))], T0) == [
        LoadWanted(link, (p[0].id, p[1].id))
    ]
    answer = [
        stored(p[0], quarantined=False),
        stored(p[1], quarantined=True, source=pid(PEERS[1])),
        stored(p[2], quarantined=False, source=pid(PEERS[2])),
        stored(p[3], quarantined=True),
    ]
    assert core.wanted_loaded(link, answer) == [SendPackets(link, (p[0], p[2]))]
    # Nothing shareable still answers the want (with nothing), so the peer's window moves on.
    assert core.wanted_loaded(link, answer[1::2]) == [SendPackets(link, ())]


def test_query_answers_never_include_quarantined_packets() -> None:
    core = coordinator()
    link = session_with(core, PEERS[0], EXTERNAL, RESPONDER)
    assert core.session_events(link, [QueryReceived(7, "public/x", 10)], T0) == [
        LoadQuery(link, 7, "public/x", 10)
    ]
    p = [make_packet(PEERS[1], n) for n in range(3)]
    answer = [stored(p[0], quarantined=True), stored(p[1], quarantined=False), stored(p[2], quarantined=True)]
    assert core.query_loaded(link, 7, answer) == [AnswerQuery(link, 7, (p[1],))]


def test_only_what_the_operator_published_outside_quarantine_is_pushed_as_local() -> None:
    core = coordinator()
    link = session_with(core, PEERS[0], CORE)
    p = [make_packet(ME, n) for n in range(4)]
    fresh = [
        stored(p[0], quarantined=False),
        stored(p[1], quarantined=True),
        stored(p[2], quarantined=False, source=pid(PEERS[3])),  # relayed on ingest, not here
        stored(p[3], quarantined=False),
    ]
    assert core.local_packets(fresh, T0) == [Push(link, (p[0], p[3]))]
    assert core.local_packets(fresh[1:3], T0) == []


@pytest.mark.parametrize("quarantine", [True, False])
def test_received_packets_are_ingested_quarantined_exactly_as_the_session_says(quarantine: bool) -> None:
    core = coordinator()
    link = session_with(core, PEERS[0], SANDBOX if quarantine else CORE)
    p = (make_packet(PEERS[0], 1), make_packet(PEERS[0], 2))
    actions = core.session_events(link, [PacketsReceived(p, quarantine, live=True)], T0)
    assert actions == [Ingest(link, pid(PEERS[0]), p, quarantine)]


def test_quarantined_packets_are_stored_but_never_relayed() -> None:
    core = coordinator()
    source = session_with(core, PEERS[0], SANDBOX)
    others = [session_with(core, peer, CORE) for peer in PEERS[1:4]]
    p = [make_packet(PEERS[0], n) for n in range(3)]
    assert core.ingested(source, p, True, set(), T0) == []
    # The dependency loop still runs for quarantined packets; only the relay is withheld.
    missing = {bytes([9]) * 32}
    assert core.ingested(source, p, True, missing, T0) == [Want(source, (bytes([9]) * 32,))]
    # The same packets, not quarantined, do flow on: the test above can fail.
    assert {a.link for a in of(core.ingested(source, p, False, set(), T0), Push)} == set(others)


# -- 3. relay fan-out ------------------------------------------------------------------------------


def test_a_stored_packet_is_pushed_to_every_other_open_core_link_and_nowhere_else() -> None:
    core = coordinator()
    source = session_with(core, PEERS[0], CORE)
    core_out = session_with(core, PEERS[1], CORE)
    core_in = session_with(core, PEERS[2], CORE, RESPONDER)  # who dialled does not matter
    for peer, tier in zip(PEERS[3:7], (SANDBOX, EXTERNAL, UNKNOWN, BLOCKED), strict=True):
        session_with(core, peer, tier)
    not_open = session_with(core, PEERS[7], CORE, identify=False)  # admitted, no manifest yet
    unrecorded, _ = authenticate(core, PEERS[8])  # the store has not answered yet
    closed = session_with(core, PEERS[9], CORE)
    assert core.session_events(closed, [Closed(ErrorCode.TIMEOUT, "stale", False)], T0) == []
    ended = session_with(core, PEERS[10], CORE)
    core.link_ended(ended, T0)
    bare, _session = core.open_link(RESPONDER, "10.0.0.99:1", T0)  # not even authenticated

    p = (make_packet(PEERS[0], 1), make_packet(PEERS[0], 2))
    actions = core.ingested(source, p, False, set(), T0)
    assert sorted(of(actions, Push), key=lambda a: a.link) == [Push(core_out, p), Push(core_in, p)]
    assert len(actions) == 2
    assert not {not_open, unrecorded, closed, ended, bare} & {a.link for a in of(actions, Push)}
    # The operator's own packets go to the same links, the first one included.
    mine = (make_packet(ME, 1),)
    pushed = {a.link for a in of(core.local_packets([stored(mine[0], quarantined=False)], T0), Push)}
    assert pushed == {source, core_out, core_in}


def test_nothing_new_means_nothing_pushed() -> None:
    core = coordinator()
    source = session_with(core, PEERS[0], CORE)
    session_with(core, PEERS[1], CORE)
    assert core.ingested(source, [], False, set(), T0) == []
    assert core.local_packets([], T0) == []


def test_a_tier_change_moves_links_in_and_out_of_the_fan_out() -> None:
    core = coordinator()
    source = session_with(core, PEERS[0], CORE)
    b = session_with(core, PEERS[1], CORE)
    c = session_with(core, PEERS[2], SANDBOX)
    p = (make_packet(PEERS[0], 1),)
    assert core.ingested(source, p, False, set(), T0) == [Push(b, p)]
    tiers = {pid(PEERS[0]): CORE, pid(PEERS[1]): EXTERNAL, pid(PEERS[2]): CORE}
    assert of(core.tiers_read(tiers, T0), SetTier) == [SetTier(b, EXTERNAL), SetTier(c, CORE)]
    assert core.ingested(source, p, False, set(), T0) == [Push(c, p)]
    # A peer that is isolated leaves the fan-out at once.
    core.struck(c, pid(PEERS[2]), STRIKES_TO_BLOCK, CORE, ErrorCode.BAD_SIGNATURE, "bad", T0)
    assert core.ingested(source, p, False, set(), T0) == []


def test_packets_stored_after_their_link_ended_are_not_pushed_back_to_their_source() -> None:
    core = coordinator()
    first = session_with(core, PEERS[0], CORE, RESPONDER)
    p = (make_packet(PEERS[0], 1),)
    (ingest,) = core.session_events(first, [PacketsReceived(p, False, live=True)], T0)
    assert isinstance(ingest, Ingest)
    # The runtime queues the Ingest for its writer task; meanwhile the link drops and P redials.
    core.session_events(first, [Closed(ErrorCode.CONNECTION_LOST, "dropped", True)], T0)
    core.link_ended(first, T0)
    session_with(core, PEERS[0], CORE, RESPONDER, now=T0 + 0.1)
    other = session_with(core, PEERS[1], CORE, now=T0 + 0.1)
    actions = core.ingested(ingest.link, list(ingest.packets), ingest.quarantine, set(), T0 + 0.2)
    assert [a.link for a in of(actions, Push)] == [other]


# -- 4. dependencies -------------------------------------------------------------------------------


def test_missing_dependencies_are_wanted_from_the_sender_in_a_stable_order() -> None:
    core = coordinator()
    source = session_with(core, PEERS[0], CORE)
    missing = {bytes([i]) * 32 for i in (200, 3, 77, 1, 150, 42, 9, 120)}
    assert core.ingested(source, [], False, missing, T0) == [Want(source, tuple(sorted(missing)))]
    # A link that closed meanwhile is asked for nothing.
    core.session_events(source, [Closed(ErrorCode.TIMEOUT, "stale", False)], T0)
    assert core.ingested(source, [], False, missing, T0) == []


def test_wants_come_before_the_relay_of_what_was_stored() -> None:
    core = coordinator()
    source = session_with(core, PEERS[0], CORE)
    other = session_with(core, PEERS[1], CORE)
    p = (make_packet(PEERS[0], 1),)
    need = bytes([5]) * 32
    assert core.ingested(source, p, False, {need}, T0) == [Want(source, (need,)), Push(other, p)]


def test_a_dependant_waits_in_the_intake_until_its_dependency_is_stored() -> None:
    core = coordinator()
    a = make_packet(PEERS[0], 2)
    b = make_packet(PEERS[0], 1, depends=(a.id,))  # sorts before what it builds on
    c = make_packet(PEERS[0], 3, depends=(b.id,))
    admission = core.admit_packets([c, b], set())
    assert admission.ready == [] and admission.missing == {a.id}
    assert core.admit_packets([b], set()).missing == set()  # asked for once
    assert core.packets_stored([bytes(32)]) == []
    assert core.packets_stored([a.id]) == [b, c]
    # In one batch, dependencies come first whatever the order received.
    fresh = coordinator()
    assert fresh.admit_packets([c, b, a], set()).ready == [a, b, c]
    held = fresh.admit_packets([make_packet(PEERS[0], 9, depends=(a.id,))], {a.id})
    assert len(held.ready) == 1 and held.missing == set()


# -- 5. strikes and isolation ----------------------------------------------------------------------


def test_misbehaviour_is_a_strike_against_a_peer_and_a_summary_about_a_stranger() -> None:
    core = coordinator()
    interval = core.strangers.budget.summary_interval
    early, _session = core.open_link(RESPONDER, "10.9.9.9:5000", T0)
    bad = Misbehaviour(ErrorCode.MALFORMED, "garbage", fatal=True)
    (first,) = of(core.session_events(early, [bad], T0), AuditStrangers)
    assert [(r["subject"], r["count"], r["code"]) for r in first.records] == [("10.9.9.9", 1, "malformed")]
    # More from the same address within the interval: counted, not written, until the interval ends.
    for n in range(50):
        again, _ = core.open_link(RESPONDER, f"10.9.9.9:{5001 + n}", T0 + 1)
        actions = core.session_events(again, [Misbehaviour(ErrorCode.TOO_LARGE, f"big {n}", True)], T0 + 1)
        assert of(actions, AuditStrangers) == [] and of(actions, Strike) == []
        assert of(actions, WakeAt) == [WakeAt(T0 + interval)]
    (later,) = of(core.wake(T0 + interval), AuditStrangers)
    (record,) = later.records
    assert record["subject"] == "10.9.9.9" and record["count"] == 50
    assert record["codes"] == {"too_large": 50}
    assert record["first"]["reason"] == "big 0" and record["last"]["reason"] == "big 49"
    assert record["reason"] == "50 failures before the handshake; last: big 49"
    # A setup that timed out is a stranger's failure too; a stop writes what is pending.
    slow, _ = core.open_link(RESPONDER, "10.9.9.9:6000", T0 + interval + 1)
    core.session_events(slow, [Closed(ErrorCode.TIMEOUT, "session setup took too long", False)], T0 + 61)
    (final,) = of(core.stop(T0 + interval + 2), AuditStrangers)
    assert [r["codes"] for r in final.records] == [{"timeout": 1}]
    # A node we dialled that fails before the handshake is audited as before, one event a dial.
    dialled, _session = core.open_link(INITIATOR, "ws://10.9.9.8:4000", T0 + interval + 3, url="ws://10.9.9.8:4000")
    assert core.session_events(dialled, [bad], T0 + interval + 3) == [
        Strike(dialled, None, "ws://10.9.9.8:4000", ErrorCode.MALFORMED, "garbage", True)
    ]
    link = session_with(core, PEERS[0], CORE)
    forged = Misbehaviour(ErrorCode.BAD_SIGNATURE, "packet 1", fatal=False)
    assert core.session_events(link, [forged], T0) == [
        Strike(link, pid(PEERS[0]), pid(PEERS[0]), ErrorCode.BAD_SIGNATURE, "packet 1", False)
    ]


def test_strikes_below_the_threshold_change_nothing() -> None:
    core = coordinator()
    link = session_with(core, PEERS[0], CORE)
    for strikes in range(STRIKES_TO_BLOCK):
        assert core.struck(link, pid(PEERS[0]), strikes, CORE, ErrorCode.MALFORMED, "x", T0) == []
    assert core.isolations() == []


def test_at_the_threshold_the_peer_is_isolated_and_blocked_on_its_live_link_once() -> None:
    core = coordinator()
    other = session_with(core, PEERS[1], CORE)
    old = session_with(core, PEERS[0], CORE)
    core.session_events(old, [Closed(ErrorCode.CONNECTION_LOST, "dropped", True)], T0)
    link = session_with(core, PEERS[0], CORE, RESPONDER)
    peer = pid(PEERS[0])
    actions = core.struck(link, peer, STRIKES_TO_BLOCK, CORE, ErrorCode.BAD_SIGNATURE, "forged", T0 + 5)
    reason = f"isolated after {STRIKES_TO_BLOCK} strikes; last: bad_signature: forged"
    isolate, alarm, block = actions
    assert (isolate, block) == (Isolate(peer, reason), SetTier(link, BLOCKED))
    # Defence first: the isolation is raised as a critical alert about the peer, for our core peers.
    assert isinstance(alarm, RaiseAlert)
    assert (alarm.alert.severity, alarm.alert.about, alarm.alert.message) == ("critical", peer, reason)
    assert core.isolations() == [
        {"peer": peer, "strikes": STRIKES_TO_BLOCK, "last": "bad_signature", "at": T0 + 5}
    ]
    # More strikes (the store says blocked now) keep the peer blocked but list it once.
    again = core.struck(link, peer, STRIKES_TO_BLOCK + 1, BLOCKED, ErrorCode.MALFORMED, "more", T0 + 6)
    assert of(again, Isolate) and len(core.isolations()) == 1
    assert core.struck(link, peer, STRIKES_TO_BLOCK + 2, CORE, ErrorCode.MALFORMED, "m", T0 + 7)
    assert len(core.isolations()) == 1
    # The other peer's session kept its tier: it still gets pushes.
    p = (make_packet(ME, 1),)
    assert core.local_packets([stored(p[0], quarantined=False)], T0) == [Push(other, p)]


def test_the_built_in_threshold_is_the_default_policys() -> None:
    assert STRIKES_TO_BLOCK == Policy.default().limits.strikes_to_block


def small_policy(strikes_to_block: int, *, deny_automatic_blocks: bool = False) -> Policy:
    text = DEFAULT_POLICY_TEXT.replace("strikes_to_block = 5", f"strikes_to_block = {strikes_to_block}")
    assert f"strikes_to_block = {strikes_to_block}" in text
    if deny_automatic_blocks:
        text += (
            '\n[[rule]]\nid = "operators-decide"\neffect = "deny"\nhooks = ["tier_change"]\n'
            "description = \"Only an operator moves a peer.\"\ncondition = 'actor == \"policy\"'\n"
        )
    return Policy.load(text)


def test_with_a_policy_gate_its_threshold_applies_and_the_decision_is_audited() -> None:
    gate = PolicyGate(small_policy(3), pid(ME))
    core = coordinator(gate=gate)
    assert core.strikes_to_block == 3
    link = session_with(core, PEERS[0], CORE)
    peer = pid(PEERS[0])
    assert core.struck(link, peer, 2, CORE, ErrorCode.RATE_LIMITED, "flood", T0) == []
    audit, isolate, alarm, set_tier = core.struck(link, peer, 3, CORE, ErrorCode.RATE_LIMITED, "flood", T0)
    assert isinstance(alarm, RaiseAlert) and alarm.alert.about == peer
    assert isinstance(audit, Audit) and len(audit.records) == 1
    record = audit.records[0]
    assert record["hook"] == "tier_change" and record["peer"] == peer and record["subject"] == "blocked"
    assert record["allowed"] is True
    assert isolate == Isolate(peer, "isolated after 3 strikes; last: rate_limited: flood")
    assert set_tier == SetTier(link, BLOCKED)
    assert [i["peer"] for i in core.isolations()] == [peer]


def test_a_policy_that_refuses_the_tier_change_keeps_the_peer_and_audits_the_refusal() -> None:
    gate = PolicyGate(small_policy(2, deny_automatic_blocks=True), pid(ME))
    core = coordinator(gate=gate)
    link = session_with(core, PEERS[0], CORE)
    other = session_with(core, PEERS[1], CORE)
    (audit,) = core.struck(link, pid(PEERS[0]), 4, CORE, ErrorCode.BAD_PACKET, "x", T0)
    assert isinstance(audit, Audit) and audit.records[0]["allowed"] is False
    assert "operators-decide" in audit.records[0]["rules"]
    assert core.isolations() == []
    p = (make_packet(PEERS[1], 1),)
    assert core.ingested(other, p, False, set(), T0) == [Push(link, p)]  # still core


@dataclass
class StubGate:
    strikes_to_block: int
    allowed: bool = True
    asked: list[dict[str, Any]] = field(default_factory=list)

    def tier_change(self, **kw: Any) -> tuple[Any, dict[str, Any]]:
        self.asked.append(kw)
        return type("Decision", (), {"allowed": self.allowed})(), {"stub": len(self.asked)}


def test_the_gate_is_asked_with_the_peer_its_tier_and_the_strike_count() -> None:
    gate = StubGate(4)
    core = coordinator(gate=gate)
    link = session_with(core, PEERS[0], SANDBOX)
    assert core.struck(link, pid(PEERS[0]), 3, SANDBOX, ErrorCode.MALFORMED, "x", T0) == []
    assert gate.asked == []
    actions = core.struck(link, pid(PEERS[0]), 4, SANDBOX, ErrorCode.MALFORMED, "x", T0 + 1)
    assert gate.asked == [
        {"peer_id": pid(PEERS[0]), "old_tier": "sandbox", "new_tier": "blocked", "actor": "policy",
         "strikes": 4, "now": T0 + 1}
    ]
    assert actions[0] == Audit(({"stub": 1},)) and of(actions, Isolate)
    gate.allowed = False
    refused = core.struck(link, pid(PEERS[0]), 5, SANDBOX, ErrorCode.MALFORMED, "x", T0 + 2)
    assert refused == [Audit(({"stub": 2},))]


def test_a_policy_threshold_of_zero_turns_automatic_isolation_off() -> None:
    gate = StubGate(0)
    core = coordinator(gate=gate)
    link = session_with(core, PEERS[0], CORE)
    assert core.struck(link, pid(PEERS[0]), 1000, CORE, ErrorCode.MALFORMED, "x", T0) == []
    assert gate.asked == [] and core.isolations() == []


# -- 6. duplicate sessions -------------------------------------------------------------------------


def test_keep_existing_session_in_the_same_role_keeps_only_an_open_one() -> None:
    x, y = ME.node_id, PEERS[0].node_id
    for role in Role:
        assert keep_existing_session(x, y, role, role, existing_open=True)
        assert not keep_existing_session(x, y, role, role, existing_open=False)
        assert keep_existing_session(x, y, role, role)  # open unless told otherwise


@pytest.mark.parametrize("seeds", [(1, 2), (2, 1), (5, 9), (9, 5), (200, 17)])
def test_keep_existing_session_across_roles_keeps_what_the_smaller_id_initiated(
    seeds: tuple[int, int],
) -> None:
    x, y = (Identity.from_seed(bytes([s]) * 32).node_id for s in seeds)
    smaller_is_x = x.key < y.key
    for existing_open in (True, False):
        # x's session it initiated is kept iff x is the smaller; mirrored, y decides the same.
        x_keeps_its_dial = keep_existing_session(x, y, INITIATOR, RESPONDER, existing_open=existing_open)
        assert x_keeps_its_dial is smaller_is_x
        x_keeps_ys_dial = keep_existing_session(x, y, RESPONDER, INITIATOR, existing_open=existing_open)
        assert x_keeps_ys_dial is not smaller_is_x
        y_keeps_xs_dial = keep_existing_session(y, x, RESPONDER, INITIATOR, existing_open=existing_open)
        assert y_keeps_xs_dial is smaller_is_x


def _kept_connection(
    core: Coordinator, peer: Identity, links: dict[int, LinkId], first: int, open_first: bool
) -> int:
    """Authenticate connection ``first`` then the other on ``core``; the one left open."""
    second = 3 - first
    actions = core.session_events(links[first], [PeerAuthenticated(peer.node_id)], T0)
    assert actions == [RecordPeer(links[first], pid(peer), None)]
    if open_first:
        core.peer_recorded(links[first], CORE, None, 0, T0)
        core.session_events(links[first], [PeerIdentified(peer.node_id, make_manifest(peer))], T0)
    actions = core.session_events(links[second], [PeerAuthenticated(peer.node_id)], T0)
    closes = of(actions, Close)
    assert len(closes) == 1 and closes[0].code == ErrorCode.DUPLICATE_SESSION
    closed = next(n for n, link in links.items() if link == closes[0].link)
    kept = 3 - closed
    # The kept link goes on (recorded, pushed to); the closed one is answered with nothing.
    if kept == second:
        assert of(actions, RecordPeer) == [RecordPeer(links[second], pid(peer), None)]
    else:
        assert of(actions, RecordPeer) == []
    assert core.peer_recorded(links[closed], CORE, None, 0, T0) == []
    return kept


@pytest.mark.parametrize("seeds", [(1, 2), (2, 1), (5, 9), (9, 5), (200, 17)])
@pytest.mark.parametrize("open_first", [False, True])
def test_both_coordinators_keep_the_same_session_when_both_dial(
    seeds: tuple[int, int], open_first: bool
) -> None:
    x, y = (Identity.from_seed(bytes([s]) * 32) for s in seeds)
    for x_first, y_first in itertools.product((1, 2), (1, 2)):
        cx, cy = coordinator(x), coordinator(y)
        # connection 1: x dials y; connection 2: y dials x
        x_links = {1: cx.open_link(INITIATOR, "y", T0)[0], 2: cx.open_link(RESPONDER, "y", T0)[0]}
        y_links = {1: cy.open_link(RESPONDER, "x", T0)[0], 2: cy.open_link(INITIATOR, "x", T0)[0]}
        kept_by_x = _kept_connection(cx, y, x_links, x_first, open_first)
        kept_by_y = _kept_connection(cy, x, y_links, y_first, open_first)
        assert kept_by_x == kept_by_y, (x_first, y_first)
        # ... and it is the one the smaller id initiated.
        assert kept_by_x == (1 if x.node_id.key < y.node_id.key else 2)


@pytest.mark.parametrize("role", list(Role))
def test_a_redial_replaces_a_session_that_never_opened(role: Role) -> None:
    core = coordinator()
    peer = PEERS[0]
    stale, _ = authenticate(core, peer, role)
    core.peer_recorded(stale, CORE, None, 0, T0)  # admitted, but the peer never sent its manifest
    fresh, actions = authenticate(core, peer, role, now=T0 + 30)
    assert actions == [
        Close(stale, ErrorCode.DUPLICATE_SESSION, "replaced by a newer session: this one never opened"),
        RecordPeer(fresh, pid(peer), None),
    ]
    core.peer_recorded(fresh, CORE, None, 0, T0 + 30)
    core.session_events(fresh, [PeerIdentified(peer.node_id, make_manifest(peer))], T0 + 30)
    assert core.query(pid(peer), "t", 1) == [Query(fresh, pid(peer), "t", 1)]
    assert core.tiers_read({pid(peer): SANDBOX}, T0 + 31)[0] == SetTier(fresh, SANDBOX)


def test_keep_existing_session_never_keeps_one_whose_transport_is_gone() -> None:
    x, y = ME.node_id, PEERS[0].node_id
    for existing, new in itertools.product(Role, Role):
        for existing_open in (True, False):
            assert not keep_existing_session(
                x, y, existing, new, existing_open=existing_open, existing_gone=True
            )
            assert not keep_existing_session(
                y, x, existing, new, existing_open=existing_open, existing_gone=True
            )


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("opened", [False, True])
def test_a_session_whose_transport_is_gone_never_blocks_a_redial(role: Role, opened: bool) -> None:
    core = coordinator()
    peer = PEERS[0]
    if opened:
        stale = session_with(core, peer, CORE, role)
    else:
        stale, _ = authenticate(core, peer, role)
        core.peer_recorded(stale, CORE, None, 0, T0)
    core.transport_gone(stale)  # the reader saw the close; the busy owner has not told the session
    fresh, actions = authenticate(core, peer, role, now=T0 + 1)
    reason = "replaced by a newer session: the connection of this one is gone"
    assert actions == [Close(stale, ErrorCode.DUPLICATE_SESSION, reason), RecordPeer(fresh, pid(peer), None)]
    # The stale link's late events change nothing; the fresh one is the peer's session.
    assert core.peer_recorded(stale, CORE, None, 0, T0 + 1) == []
    core.peer_recorded(fresh, CORE, None, 0, T0 + 1)
    core.session_events(fresh, [PeerIdentified(peer.node_id, make_manifest(peer))], T0 + 1)
    assert core.query(pid(peer), "t", 1) == [Query(fresh, pid(peer), "t", 1)]
    core.transport_gone(LinkId(999))  # a link already forgotten: nothing to do


@pytest.mark.parametrize("role", list(Role))
def test_a_redial_over_an_open_session_is_refused(role: Role) -> None:
    core = coordinator()
    peer = PEERS[0]
    live = session_with(core, peer, CORE, role)
    fresh, actions = authenticate(core, peer, role, now=T0 + 30)
    assert actions == [Close(fresh, ErrorCode.DUPLICATE_SESSION, "a session with this peer is already open")]
    assert core.peer_recorded(fresh, CORE, None, 0, T0 + 30) == []
    other = session_with(core, PEERS[1], CORE)
    p = (make_packet(PEERS[1], 1),)
    assert core.ingested(other, p, False, set(), T0 + 31) == [Push(live, p)]


# -- 7. dialling -----------------------------------------------------------------------------------


def test_start_reads_the_dial_targets() -> None:
    assert coordinator().start(T0) == [ReadDialTargets()]


def test_dial_targets_are_unidentified_endpoints_and_peers_worth_a_session() -> None:
    core = coordinator()
    connected = session_with(core, PEERS[6], CORE)
    assert connected
    endpoints = [("ws://new:1", None), ("ws://p2:1", pid(PEERS[0]))]
    tiers = [CORE, SANDBOX, EXTERNAL, UNKNOWN, BLOCKED, CORE]
    peers = [(pid(p), t, [f"ws://{i}:1"]) for i, (p, t) in enumerate(zip(PEERS[:6], tiers, strict=True))]
    peers[0] = (pid(PEERS[0]), CORE, ["ws://p2:1", "ws://p2:2"])
    peers[5] = (pid(PEERS[6]), CORE, ["ws://connected:1"])  # we have an open session with it
    actions = core.dial_targets_read(endpoints, peers, T0)
    expected = {u for u, p in endpoints if p is None} | {
        u for p, tier, urls in peers if tier in WORTH_DIALLING and p != pid(PEERS[6]) for u in urls
    }
    assert expected == {"ws://1:1", "ws://2:1", "ws://new:1", "ws://p2:1", "ws://p2:2"}
    assert dialled(actions) == sorted(expected)  # in an order that does not depend on hashing
    # Nobody is dialled twice while a dial is under way, however often the targets are read.
    assert dialled(core.dial_targets_read(endpoints, peers, T0 + 1)) == []
    assert dialled(answer_reads(core, core.wake(T0 + REFRESH_SECONDS), T0 + REFRESH_SECONDS,
                                endpoints=endpoints, peers=peers)) == []


def test_unknown_and_blocked_peers_are_never_dialled() -> None:
    core = coordinator()
    peers = [(pid(PEERS[0]), UNKNOWN, ["ws://u:1"]), (pid(PEERS[1]), BLOCKED, ["ws://b:1"])]
    now = T0
    actions = answer_reads(core, core.start(now), now, peers=peers)
    for _ in range(50):
        assert dialled(actions) == []
        now = of(actions, WakeAt)[-1].at  # the last WakeAt replaces the earlier ones
        actions = answer_reads(core, core.wake(now), now, peers=peers)
    assert now >= T0 + 50 * DIAL_PACE


def test_at_most_a_few_dials_per_wake_and_the_rest_at_the_next_pace_step() -> None:
    core = coordinator()
    urls = [f"ws://n{i:02}:1" for i in range(2 * DIALS_PER_WAKE + 3)]
    endpoints = [(u, None) for u in urls]
    actions = core.dial_targets_read(endpoints, [], T0)
    first = dialled(actions)
    assert len(first) == DIALS_PER_WAKE
    assert of(actions, WakeAt) == [WakeAt(T0 + DIAL_PACE)]
    second = dialled(core.wake(T0 + DIAL_PACE))
    third = dialled(core.wake(T0 + 2 * DIAL_PACE))
    assert len(second) == DIALS_PER_WAKE and len(third) == 3
    assert sorted(first + second + third) == urls  # each once


def test_an_early_wake_up_does_not_dial_the_next_round_sooner() -> None:
    core = coordinator()
    endpoints = [(f"ws://n{i:02}:1", None) for i in range(2 * DIALS_PER_WAKE)]
    assert len(dialled(core.dial_targets_read(endpoints, [], T0))) == DIALS_PER_WAKE
    assert dialled(core.wake(T0 + DIAL_PACE / 2)) == []  # DIAL_PACE: "seconds between two rounds"


def test_a_flood_of_announcements_does_not_make_us_dial_a_crowd_at_once() -> None:
    core = coordinator()
    endpoints: list[tuple[str, str | None]] = []
    dials: list[str] = []
    for i, peer in enumerate(PEERS * 3):
        urls = [f"ws://flood{i}-{j}:1" for j in range(4)]
        actions = core.discovered(pid(peer), urls, "mdns", T0)
        endpoints += [(u, None) for u in urls]
        dials += dialled(answer_reads(core, actions, T0, endpoints=endpoints))
    # The comment on DIALS_PER_WAKE: "a flood of announcements cannot make us dial a crowd at once".
    assert len(dials) <= DIALS_PER_WAKE


def test_the_dial_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = DialPolicy()
    rng = random.Random(3)
    for failures in range(15):
        step = min(policy.maximum, policy.base * 2**failures)
        draws = [policy.delay(failures, 0, rng) for _ in range(200)]
        assert all(0.5 * step <= d < 1.5 * step for d in draws)
        assert max(draws) - min(draws) > 0.8 * step  # the jitter spreads the whole range
    for blocked in range(1, 12):
        step = min(policy.blocked_maximum, policy.blocked_base * 2 ** (blocked - 1))
        assert all(0.5 * step <= policy.delay(0, blocked, rng) < 1.5 * step for _ in range(50))
        assert all(0.5 * step <= policy.delay(7, blocked, rng) < 1.5 * step for _ in range(50))
    assert policy.blocked_base >= 60  # minutes, not seconds


def dial_once(core: Coordinator, url: str, now: float, peer: Identity | None = None) -> None:
    peers = [(pid(peer), CORE, [url])] if peer else []
    endpoints = [(url, pid(peer) if peer else None)]
    actions = answer_reads(core, core.wake(now), now, endpoints=endpoints, peers=peers)
    assert dialled(actions) == [url], actions


def test_repeated_dial_failures_back_off_exponentially() -> None:
    core = coordinator()
    url = "ws://unreachable:1"
    core.start(T0)
    now = T0
    policy = core.dial_policy
    for k in range(1, 9):
        dial_once(core, url, now)
        core.dial_failed(url, "connection refused", now + 0.01)
        delay = target(core, url)["next_attempt"] - (now + 0.01)
        # Whether the k-th failure counts as 2^k or 2^(k-1), the delay must grow with k.
        assert 0.5 * min(policy.maximum, policy.base * 2 ** (k - 1)) <= delay, (k, delay)
        assert delay < 1.5 * min(policy.maximum, policy.base * 2**k), (k, delay)
        assert target(core, url)["last_error"] == "connection refused"
        now = target(core, url)["next_attempt"]


def test_a_failed_dial_is_not_retried_before_its_backoff() -> None:
    core = coordinator()
    url = "ws://unreachable:1"
    core.start(T0)
    dial_once(core, url, T0)
    actions = answer_reads(core, core.dial_failed(url, "refused", T0 + 0.01), T0 + 0.01,
                           endpoints=[(url, None)])
    assert dialled(actions) == []
    entry = target(core, url)
    assert not entry["dialling"] and entry["last_error"] == "refused"
    due = entry["next_attempt"]
    assert T0 + 0.01 + 0.5 <= due < T0 + 0.01 + 1.5 * core.dial_policy.maximum
    assert of(actions, WakeAt) and of(actions, WakeAt)[-1].at <= max(due, T0 + 0.01 + DIAL_PACE)
    assert dialled(core.wake(due - 0.001)) == []
    assert dialled(core.wake(due)) == [url]


def close_before_open(core: Coordinator, url: str, peer: Identity, code: str, now: float) -> None:
    link, _ = authenticate(core, peer, url=url, now=now)
    core.peer_recorded(link, CORE, None, 0, now)
    assert core.session_events(link, [Closed(code, "closed", True)], now) == []
    core.link_ended(link, now)


def test_sessions_closed_before_opening_back_off_exponentially_up_to_the_maximum() -> None:
    core = coordinator(seed=11)
    url, peer = "ws://flaky:1", PEERS[0]
    core.start(T0)
    now, policy = T0, core.dial_policy
    for k in range(1, 11):
        dial_once(core, url, now, peer)
        close_before_open(core, url, peer, ErrorCode.TIMEOUT, now + 0.01)
        entry = target(core, url)
        step = min(policy.maximum, policy.base * 2**k)
        assert 0.5 * step <= entry["next_attempt"] - (now + 0.01) < 1.5 * step, k
        assert entry["failures"] == k and not entry["blocked_by_peer"]
        assert entry["last_error"] == "timeout: closed"
        now = entry["next_attempt"]


def test_a_session_that_opens_resets_the_failure_count() -> None:
    core = coordinator(seed=4)
    url, peer = "ws://peer:1", PEERS[0]
    core.start(T0)
    now = T0
    for _ in range(4):
        dial_once(core, url, now, peer)
        close_before_open(core, url, peer, ErrorCode.HANDSHAKE_FAILED, now + 0.01)
        now = target(core, url)["next_attempt"]
    assert target(core, url)["failures"] == 4
    dial_once(core, url, now, peer)
    link = session_with(core, peer, CORE, url=url, now=now + 0.01)
    entry = target(core, url)
    assert entry["failures"] == 0 and entry["last_error"] is None and entry["dialling"]
    # When that session ends, the endpoint is redialled on the shortest step again.
    core.session_events(link, [Closed(ErrorCode.CONNECTION_LOST, "dropped", True)], now + 100)
    core.link_ended(link, now + 100)
    delay = target(core, url)["next_attempt"] - (now + 100)
    assert 0.5 * core.dial_policy.base <= delay < 1.5 * core.dial_policy.base


def test_a_peer_that_closes_us_as_blocked_gets_a_long_growing_backoff_and_status_says_why() -> None:
    core = coordinator(seed=5)
    url, peer = "ws://b:1", PEERS[0]
    core.start(T0)
    now, policy = T0, core.dial_policy
    for k in range(1, 9):
        dial_once(core, url, now, peer)
        close_before_open(core, url, peer, ErrorCode.BLOCKED, now + 0.01)
        entry = target(core, url)
        step = min(policy.blocked_maximum, policy.blocked_base * 2 ** (k - 1))
        assert 0.5 * step <= entry["next_attempt"] - (now + 0.01) < 1.5 * step, k
        assert entry["blocked_by_peer"] is True and entry["last_error"] == "the peer has us blocked"
        assert entry["failures"] == 0  # authenticating did not reset or count anything else
        now = entry["next_attempt"]


def test_a_peer_of_another_federation_gets_the_long_backoff_and_status_says_so() -> None:
    core = coordinator(seed=7)
    url = "ws://stranger:1"
    core.start(T0)
    now, policy = T0, core.dial_policy
    for k in range(1, 4):
        dial_once(core, url, now)
        # The peer refused our msg1 on its tag: the session never authenticated.
        link, _session = core.open_link(INITIATOR, url, now + 0.01, url=url)
        closed = Closed(ErrorCode.FOREIGN_FEDERATION, "the peer closed the connection", True)
        assert core.session_events(link, [closed], now + 0.01) == []
        core.link_ended(link, now + 0.01)
        entry = target(core, url)
        step = min(policy.blocked_maximum, policy.blocked_base * 2 ** (k - 1))
        assert 0.5 * step <= entry["next_attempt"] - (now + 0.01) < 1.5 * step, k
        assert entry["foreign"] is True and not entry["blocked_by_peer"]
        assert "another federation" in entry["last_error"]
        now = entry["next_attempt"]


def test_we_closing_a_peer_as_blocked_is_not_the_peer_blocking_us() -> None:
    core = coordinator(seed=5)
    url, peer = "ws://b:1", PEERS[0]
    core.start(T0)
    dial_once(core, url, T0, peer)
    link, _ = authenticate(core, peer, url=url, now=T0)
    core.peer_recorded(link, BLOCKED, None, 0, T0)
    core.session_events(link, [Closed(ErrorCode.BLOCKED, "blocked", False)], T0)
    entry = target(core, url)
    assert not entry["blocked_by_peer"] and entry["failures"] == 1


def test_add_peer_dials_now_and_forgets_the_backoff() -> None:
    core = coordinator(seed=6)
    url, peer = "ws://b:1", PEERS[0]
    core.start(T0)
    dial_once(core, url, T0, peer)
    close_before_open(core, url, peer, ErrorCode.BLOCKED, T0 + 0.01)
    assert target(core, url)["next_attempt"] > T0 + 100
    actions = core.add_peer(url, T0 + 10)
    assert actions[0] == RecordEndpoints((url,), "operator")
    endpoints, peers = [(url, pid(peer))], [(pid(peer), CORE, [url])]
    after = answer_reads(core, actions, T0 + 10, endpoints=endpoints, peers=peers)
    assert dialled(after) == [url]
    entry = target(core, url)
    assert entry["failures"] == 0 and not entry["blocked_by_peer"]


def test_a_discovered_peer_is_remembered_and_its_tier_decides() -> None:
    core = coordinator()
    assert core.discovered(pid(ME), ["ws://me:1"], "mdns", T0) == []
    assert core.discovered(pid(PEERS[0]), [], "mdns", T0) == []
    actions = core.discovered(pid(PEERS[0]), ["ws://d:1"], "mdns", T0)
    assert actions[0] == RecordEndpoints(("ws://d:1",), "mdns", pid(PEERS[0]))
    unknown = answer_reads(core, actions, T0, endpoints=[("ws://d:1", pid(PEERS[0]))],
                           peers=[(pid(PEERS[0]), UNKNOWN, ["ws://d:1"])])
    assert dialled(unknown) == []
    trusted = answer_reads(core, core.tiers_changed(), T0)
    assert trusted == [ReadTiers(())]
    trusted = answer_reads(core, core.wake(T0 + 1), T0 + 1, endpoints=[("ws://d:1", pid(PEERS[0]))],
                           peers=[(pid(PEERS[0]), SANDBOX, ["ws://d:1"])])
    assert dialled(trusted) == ["ws://d:1"]


def test_after_stop_nothing_is_dialled_and_every_live_session_is_closed() -> None:
    core = coordinator()
    url = "ws://a:1"
    core.start(T0)
    a = session_with(core, PEERS[0], CORE)
    b, _ = authenticate(core, PEERS[1])
    gone = session_with(core, PEERS[2], CORE)
    core.session_events(gone, [Closed(ErrorCode.TIMEOUT, "x", False)], T0)
    assert core.stop(T0 + 1) == [
        Close(a, ErrorCode.SHUTDOWN, "node shutting down"),
        Close(b, ErrorCode.SHUTDOWN, "node shutting down"),
    ]
    many = [(f"ws://{i}:1", None) for i in range(20)] + [(url, None)]
    everything: list[Action] = []
    everything += core.dial_targets_read(many, [], T0 + 2)
    everything += core.wake(T0 + 100)
    everything += answer_reads(core, core.add_peer(url, T0 + 101), T0 + 101, endpoints=many)
    everything += core.dial_failed(url, "x", T0 + 102)
    everything += core.link_ended(a, T0 + 103)
    everything += core.set_auto_sync(True, 1.0, T0 + 104)
    assert of(everything, Dial) == [] and of(everything, RequestSync) == []


# -- 8. the blocked-peer scenario on a virtual clock -----------------------------------------------


class Clock:
    """A heap of timed callbacks; ``run`` stops at ``until``."""

    def __init__(self) -> None:
        self._queue: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()

    def at(self, when: float, fn: Callable[[float], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn))

    def run(
        self,
        until: float,
        wakes: Callable[[], list[tuple[float, Callable[[float], None]]]],
        after: Callable[[float], None] | None = None,
    ) -> None:
        for _ in range(100_000):
            candidates = list(wakes())
            if self._queue:
                candidates.append((self._queue[0][0], self._pop))
            if not candidates:
                return
            when, fn = min(candidates, key=lambda c: c[0])
            if when > until:
                return
            fn(when)
            if after is not None:
                after(when)
        raise AssertionError("the coordinator never let the clock move on")

    def _pop(self, now: float) -> None:
        _, _, fn = heapq.heappop(self._queue)
        fn(now)


def dials_in_a_minute(closing: Closed, seed: int) -> tuple[list[float], Coordinator]:
    """A trusts B (core); each dial of B reaches B, which authenticates and then ends the session
    with ``closing``. Returns when A dialled within 60 s of virtual time."""
    core = coordinator(seed=seed)
    b, url = PEERS[0], "ws://b:9000"
    clock = Clock()
    dials: list[float] = []
    wake_at: list[float | None] = [None]

    def carry_out(actions: Iterable[Action], now: float) -> None:
        pending = deque(actions)
        while pending:
            action = pending.popleft()
            if isinstance(action, Dial):
                assert action.url == url
                dials.append(now)
                clock.at(now + 0.004, connected)
            elif isinstance(action, WakeAt):
                assert action.at > now
                wake_at[0] = action.at
            elif isinstance(action, ReadDialTargets):
                pending.extend(core.dial_targets_read([(url, pid(b))], [(pid(b), CORE, [url])], now))
            elif isinstance(action, RecordPeer):
                pending.extend(core.peer_recorded(action.link, CORE, None, 0, now))

    def connected(now: float) -> None:
        link, _session = core.open_link(INITIATOR, url, now, url=url)
        carry_out(core.session_events(link, [PeerAuthenticated(b.node_id)], now), now)
        clock.at(now + 0.003, lambda t: ended(link, t))

    def ended(link: LinkId, now: float) -> None:
        carry_out(core.session_events(link, [closing], now), now)
        carry_out(core.link_ended(link, now), now)

    def woken(now: float) -> None:
        wake_at[0] = None
        carry_out(core.wake(now), now)

    carry_out(core.start(T0), T0)
    clock.run(T0 + 60, lambda: [] if wake_at[0] is None else [(wake_at[0], woken)])
    return dials, core


@pytest.mark.parametrize("seed", range(5))
def test_a_peer_that_has_us_blocked_is_dialled_once_a_minute_at_most(seed: int) -> None:
    closing = Closed(ErrorCode.BLOCKED, "the peer closed the connection (blocked)", by_peer=True)
    dials, core = dials_in_a_minute(closing, seed)
    assert len(dials) <= 4  # issue 9's acceptance bound
    assert dials == [T0]
    (entry,) = core.dial_targets()
    assert entry["dials"] == 1
    assert entry["blocked_by_peer"] and entry["last_error"] == "the peer has us blocked"
    assert entry["next_attempt"] >= T0 + 0.5 * core.dial_policy.blocked_base


@pytest.mark.parametrize("seed", range(5))
def test_a_peer_that_drops_us_after_the_handshake_is_redialled_on_the_short_backoff(seed: int) -> None:
    dials, core = dials_in_a_minute(Closed(ErrorCode.CONNECTION_LOST, "the connection dropped", True), seed)
    policy = core.dial_policy
    # Not blocked: retried within seconds, yet every gap doubles (no reset by the handshake).
    assert 4 < len(dials) <= 6
    for k, (a, b) in enumerate(itertools.pairwise(dials), start=1):
        step = min(policy.maximum, policy.base * 2**k)
        assert 0.5 * step <= b - a <= 1.5 * step + 0.05, (k, b - a)
    (entry,) = core.dial_targets()
    closed = [d for d in dials if d + 0.007 <= T0 + 60]  # sessions that ended within the minute
    assert not entry["blocked_by_peer"] and entry["failures"] == len(closed)


# The same with real sessions: two coordinators, each session fed the other's bytes.


class Host:
    """A node driven like runtime/effects.py's Driver: store reads answered from dicts."""

    def __init__(
        self, net: Net, identity: Identity, url: str, tiers: dict[str, TrustTier], seed: int
    ) -> None:
        self.net, self.identity, self.url, self.tiers = net, identity, url, tiers
        self.core = coordinator(identity, seed)
        self.sessions: dict[LinkId, Session] = {}
        self.wake_at: float | None = None
        self.dials: list[float] = []
        self.events: list[Event] = []

    def carry_out(self, actions: Iterable[Action], now: float) -> None:
        pending = deque(actions)
        while pending:
            action = pending.popleft()
            if isinstance(action, LINK_ACTIONS):
                session = self.sessions.get(action.link)
                if session is not None:
                    apply_to_session(session, action, now, ItemSet())
                    pending.extend(self.drain(action.link, now))
            elif isinstance(action, Dial):
                self.dials.append(now)
                self.net.clock.at(now + 0.005, functools.partial(self.net.connect, self, action.url))
            elif isinstance(action, WakeAt):
                assert action.at > now
                self.wake_at = action.at
            elif isinstance(action, ReadDialTargets):
                peers = [(p, t, [self.net.url_of[p]]) for p, t in self.tiers.items()]
                pending.extend(self.core.dial_targets_read([], peers, now))
            elif isinstance(action, RecordPeer):
                tier = self.tiers.get(action.peer, UNKNOWN)
                pending.extend(self.core.peer_recorded(action.link, tier, None, 0, now))

    def drain(self, link: LinkId, now: float) -> list[Action]:
        actions: list[Action] = []
        while events := self.sessions[link].events():
            self.events += events
            actions += self.core.session_events(link, events, now)
        return actions

    def woken(self, now: float) -> None:
        self.wake_at = None
        self.carry_out(self.core.wake(now), now)


End = tuple[Host, LinkId, Session]


class Net:
    """Instant in-memory connections; after every clock step, bytes move until all is quiet."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.hosts: dict[str, Host] = {}
        self.url_of: dict[str, str] = {}
        self.connections: list[tuple[End, End]] = []

    def add(self, identity: Identity, tiers: dict[str, TrustTier], seed: int) -> Host:
        url = f"ws://{identity.node_id.short}:9000"
        host = Host(self, identity, url, tiers, seed)
        self.hosts[url], self.url_of[pid(identity)] = host, url
        return host

    def connect(self, dialler: Host, url: str, now: float) -> None:
        listener = self.hosts.get(url)
        if listener is None:
            dialler.carry_out(dialler.core.dial_failed(url, "refused", now), now)
            return
        ends = []
        for host, role, dialled_url in ((dialler, INITIATOR, url), (listener, RESPONDER, None)):
            link, session = host.core.open_link(role, "remote", now, url=dialled_url)
            host.sessions[link] = session
            ends.append((host, link, session))
        self.connections.append((ends[0], ends[1]))

    def settle(self, now: float) -> None:
        for _ in range(10_000):
            moved = False
            for x, y in self.connections:
                for (_, _, session), (other, olink, osession) in ((x, y), (y, x)):
                    for data in session.data_to_send():
                        moved = True
                        if osession.state is not State.CLOSED:
                            osession.receive_data(data, now)
                            other.carry_out(other.drain(olink, now), now)
                    if session.state is State.CLOSED and osession.state is not State.CLOSED:
                        # The transport closes; the runtime passes the WebSocket close reason on.
                        osession.connection_lost(now, peer_code=session.close_code)
                        other.carry_out(other.drain(olink, now), now)
                        moved = True
            for x, y in list(self.connections):
                if x[2].state is State.CLOSED and y[2].state is State.CLOSED:
                    self.connections.remove((x, y))
                    for host, link, _ in (x, y):
                        del host.sessions[link]
                        host.carry_out(host.core.link_ended(link, now), now)
                    moved = True
            if not moved:
                return
        raise AssertionError("the sessions never went quiet")

    def run(self, until: float) -> None:
        for host in self.hosts.values():
            host.carry_out(host.core.start(T0), T0)

        def wakes() -> list[tuple[float, Callable[[float], None]]]:
            return [(h.wake_at, h.woken) for h in self.hosts.values() if h.wake_at is not None]

        self.clock.run(until, wakes, after=self.settle)


@pytest.mark.parametrize("seed", range(3))
def test_over_real_sessions_a_trusts_b_and_b_has_a_blocked_a_dials_b_once_in_a_minute(seed: int) -> None:
    a, b = PEERS[0], PEERS[1]
    net = Net()
    host_a = net.add(a, {pid(b): CORE}, seed)
    host_b = net.add(b, {pid(a): BLOCKED}, seed + 100)
    net.run(T0 + 60)
    assert host_b.dials == []  # B never dials a peer it blocked
    assert len(host_a.dials) <= 4 and host_a.dials == [T0]
    # What A's session told the coordinator: authenticated, never identified, closed as blocked.
    assert [type(e) for e in host_a.events] == [PeerAuthenticated, Closed]
    closed = host_a.events[-1]
    assert isinstance(closed, Closed) and closed.code == ErrorCode.BLOCKED and closed.by_peer
    (entry,) = host_a.core.dial_targets()
    assert entry["blocked_by_peer"] and entry["next_attempt"] > T0 + 60 and entry["dials"] == 1


@pytest.mark.parametrize("b_gives_a", [CORE, SANDBOX, UNKNOWN])
def test_over_real_sessions_a_peer_that_lets_us_in_keeps_one_open_session(b_gives_a: TrustTier) -> None:
    a, b = PEERS[0], PEERS[1]
    net = Net()
    host_a = net.add(a, {pid(b): CORE}, 1)
    host_b = net.add(b, {pid(a): b_gives_a}, 2)
    net.run(T0 + 60)
    assert host_a.dials == [T0]
    assert len(host_a.sessions) == 1 and len(host_b.sessions) == 1
    assert [s.state for s in host_a.sessions.values()] == [State.OPEN]
    assert any(isinstance(e, PeerIdentified) for e in host_a.events)
    # B's endpoint is held by the open session: not dialled again, no failure counted.
    assert [(t["dialling"], t["dials"], t["failures"]) for t in host_a.core.dial_targets()] == [(True, 1, 0)]
    # B dials A back only if A is worth a session to it; either way one session remains.
    assert len(host_b.dials) <= (1 if b_gives_a is not UNKNOWN else 0)


# -- 9. auto-sync ----------------------------------------------------------------------------------


def test_auto_sync_requests_a_reconciliation_on_open_links_we_initiated_where_packets_flow() -> None:
    core = coordinator(sync_interval=60.0)
    core.start(T0)
    wanted = [session_with(core, PEERS[0], CORE), session_with(core, PEERS[1], SANDBOX)]
    session_with(core, PEERS[2], CORE, RESPONDER)  # the peer's reconciliation, not ours
    session_with(core, PEERS[3], EXTERNAL)
    session_with(core, PEERS[4], UNKNOWN)
    session_with(core, PEERS[5], CORE, identify=False)
    assert of(core.wake(T0 + 59.9), RequestSync) == []
    actions = core.wake(T0 + 60)
    assert of(actions, RequestSync) == [RequestSync(link) for link in wanted]
    assert all(tier in FLOWS for tier in (CORE, SANDBOX))
    assert of(actions, WakeAt) == [WakeAt(T0 + 120)]
    assert of(core.wake(T0 + 61), RequestSync) == []  # the interval restarts
    assert len(of(core.wake(T0 + 120), RequestSync)) == 2


def test_no_auto_sync_when_it_is_off_and_a_new_interval_when_it_is_on() -> None:
    core = coordinator(sync_interval=60.0)
    core.start(T0)
    link = session_with(core, PEERS[0], CORE)
    core.set_auto_sync(False, None, T0)
    assert of(core.wake(T0 + 600), RequestSync) == []
    assert core.auto_sync is False
    core.set_auto_sync(True, 5.0, T0 + 600)
    assert core.sync_interval == 5.0
    assert of(core.wake(T0 + 605), RequestSync) == [RequestSync(link)]
    assert of(core.wake(T0 + 607), RequestSync) == []
    assert core.sync_now(T0 + 608) == [RequestSync(link)]


# -- 10. tier changes ------------------------------------------------------------------------------


def test_tiers_read_sets_the_tier_only_where_it_changed_and_unknown_for_forgotten_peers() -> None:
    core = coordinator()
    a = session_with(core, PEERS[0], CORE)
    b = session_with(core, PEERS[1], SANDBOX)
    c = session_with(core, PEERS[2], CORE)
    d = session_with(core, PEERS[3], EXTERNAL)
    gone = session_with(core, PEERS[4], CORE)
    core.session_events(gone, [Closed(ErrorCode.TIMEOUT, "x", False)], T0)
    assert core.tiers_changed() == [ReadTiers(tuple(sorted(pid(p) for p in PEERS[:4])))]
    tiers = {pid(PEERS[0]): CORE, pid(PEERS[1]): CORE, pid(PEERS[3]): BLOCKED, pid(PEERS[4]): SANDBOX}
    actions = core.tiers_read(tiers, T0)
    assert of(actions, SetTier) == [SetTier(b, CORE), SetTier(c, UNKNOWN), SetTier(d, BLOCKED)]
    assert a not in {s.link for s in of(actions, SetTier)}
    assert of(core.tiers_read(tiers, T0), SetTier) == []  # nothing changed since


# -- 11. queries -----------------------------------------------------------------------------------


def test_an_operators_query_goes_to_the_open_session_and_its_answer_comes_back() -> None:
    core = coordinator()
    link = session_with(core, PEERS[0], EXTERNAL)
    assert core.query(pid(PEERS[0]), "public/x", 5) == [Query(link, pid(PEERS[0]), "public/x", 5)]
    p = (make_packet(PEERS[0], 1),)
    answered = core.session_events(link, [QueryAnswered(3, p, True)], T0)
    assert answered == [QueryResult(pid(PEERS[0]), 3, p, True)]
    assert core.session_events(link, [Audited(({"hook": "query"},))], T0) == [Audit(({"hook": "query"},))]


def test_a_query_without_an_open_session_is_a_local_error() -> None:
    core = coordinator()
    with pytest.raises(LocalProtocolError):
        core.query(pid(PEERS[0]), "t", 1)
    session_with(core, PEERS[0], CORE, identify=False)
    with pytest.raises(LocalProtocolError):
        core.query(pid(PEERS[0]), "t", 1)
    link = session_with(core, PEERS[1], CORE)
    core.session_events(link, [Closed(ErrorCode.TIMEOUT, "x", False)], T0)
    with pytest.raises(LocalProtocolError):
        core.query(pid(PEERS[1]), "t", 1)


def test_events_on_a_link_the_coordinator_never_opened_are_ignored() -> None:
    core = coordinator()
    assert core.session_events(99, [PeerAuthenticated(PEERS[0].node_id)], T0) == []
    assert core.peer_recorded(99, CORE, None, 0, T0) == []
    assert core.link_ended(99, T0) == []


# -- 12. properties --------------------------------------------------------------------------------

AUTHOR = PEERS[11]
CLEAN = [make_packet(AUTHOR, n) for n in range(10)]
QUARANTINED = [make_packet(AUTHOR, 100 + n) for n in range(10)]  # only ever given quarantined
Q_IDS = {p.id for p in QUARANTINED}
CAST = PEERS[:4]
TIERS = [CORE, CORE, CORE, *TrustTier]  # core twice as likely as any other: the fan-out gets busy
CLOSE_CODES = [ErrorCode.BLOCKED, ErrorCode.CONNECTION_LOST, ErrorCode.TIMEOUT, ErrorCode.MALFORMED]


@dataclass
class Seen:
    """What the test knows of a link, from what it told the coordinator and what it was told."""

    role: Role
    peer: str | None = None
    recorded: bool = False  # RecordPeer was asked for
    tier: TrustTier | None = None
    open: bool = False
    closed: bool = False
    ended: bool = False


class Model:
    """The driver of the property tests: one random step at a time, each checked as it returns."""

    def __init__(self, core: Coordinator, data: st.DataObject) -> None:
        self.core, self.data = core, data
        self.links: dict[LinkId, Seen] = {}
        self.pending_ingests: list[Ingest] = []
        self.now = T0
        self.pushes = 0  # how often the fan-out was exercised: the properties are not vacuous

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def pick(self, items: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(items))

    def where(self, test: Callable[[Seen], bool]) -> list[LinkId]:
        return [i for i, seen in self.links.items() if not seen.ended and test(seen)]

    def check(self, actions: Sequence[Action], *, source: str | None = None) -> list[Action]:
        for action in actions:
            if isinstance(action, (Push, SendPackets, AnswerQuery)):
                leaked = {p.id for p in action.packets} & Q_IDS
                assert not leaked, f"{type(action).__name__} carries a quarantined packet"
            if isinstance(action, Push):
                seen = self.links[action.link]
                assert not seen.closed and not seen.ended, "push to a closed link"
                assert seen.open, "push to a link that is not open"
                assert seen.tier in WE_SEND, f"push to a {seen.tier} link"
                assert source is None or seen.peer != source, "pushed back to its source"
                self.pushes += 1
            if isinstance(action, SetTier):
                self.links[action.link].tier = action.tier
            if isinstance(action, Close) and action.code == ErrorCode.DUPLICATE_SESSION:
                self.links[action.link].closed = True
                self.links[action.link].open = False
            if isinstance(action, RecordPeer):
                self.links[action.link].recorded = True
        return list(actions)

    # -- steps ----------------------------------------------------------------------------------

    def steps(self) -> list[Callable[[], None]]:
        # Hypothesis favours the first choices: the productive steps come first.
        steps: list[Callable[[], None]] = []
        if self.pending_ingests:
            steps += [self.store, self.store]
        if self.where(lambda s: s.open):
            steps += [self.receive, self.receive, self.want, self.query]
        steps += [self.connect, self.connect, self.open_one, self.local, self.tiers, self.wake]
        if self.where(lambda s: s.peer is None and not s.closed):
            steps.append(self.authenticate)
        if self.where(lambda s: s.recorded and s.tier is None):
            steps.append(self.record)
        if self.where(self._identifiable):
            steps.append(self.identify)
        if self.where(lambda s: not s.closed):
            steps.append(self.close)
        if self.where(lambda s: True):
            steps += [self.end, self.strike]
        return steps

    @staticmethod
    def _identifiable(seen: Seen) -> bool:
        return seen.tier not in (None, BLOCKED) and not seen.closed and not seen.open

    def open_one(self) -> None:
        self.open()

    def open(self) -> LinkId:
        role = self.pick(list(Role))
        link, _session = self.core.open_link(role, "remote", self.now)
        self.links[link] = Seen(role)
        return link

    def connect(self) -> None:
        """Open, authenticate, record and identify a link in one go (most sessions do)."""
        link = self.open()
        self.authenticate(link)
        if self.links[link].recorded:
            self.record(link)
            if not self.links[link].closed and self.links[link].tier is not BLOCKED:
                self.identify(link)

    def authenticate(self, link: LinkId | None = None) -> None:
        if link is None:
            link = self.pick(self.where(lambda s: s.peer is None and not s.closed))
        peer = self.pick(CAST)
        self.links[link].peer = pid(peer)
        self.check(self.core.session_events(link, [PeerAuthenticated(peer.node_id)], self.now))

    def record(self, link: LinkId | None = None) -> None:
        if link is None:
            link = self.pick(self.where(lambda s: s.recorded and s.tier is None))
        tier = self.pick(TIERS)
        actions = self.core.peer_recorded(link, tier, None, 0, self.now)
        if self.links[link].closed:
            assert actions == []
        else:
            assert actions == [Admit(link, tier, None, 0)]
            self.links[link].tier = tier

    def identify(self, link: LinkId | None = None) -> None:
        if link is None:
            link = self.pick(self.where(self._identifiable))
        peer = next(p for p in CAST if pid(p) == self.links[link].peer)
        manifest = make_manifest(peer)
        self.check(self.core.session_events(link, [PeerIdentified(peer.node_id, manifest)], self.now))
        self.links[link].open = True

    def receive(self) -> None:
        link = self.pick(self.where(lambda s: s.open))
        quarantine = self.draw(st.booleans())
        pool = QUARANTINED if quarantine else CLEAN
        packets = tuple(self.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)))
        received = PacketsReceived(packets, quarantine, live=True)
        (ingest,) = self.core.session_events(link, [received], self.now)
        peer = self.links[link].peer
        assert peer is not None and ingest == Ingest(link, peer, packets, quarantine)
        assert isinstance(ingest, Ingest)
        self.pending_ingests.append(ingest)

    def store(self) -> None:
        """The writer stores a queued ingest, perhaps after its link closed."""
        ingest = self.pending_ingests.pop(self.draw(st.integers(0, len(self.pending_ingests) - 1)))
        new = self.draw(st.lists(st.sampled_from(ingest.packets), min_size=1, unique=True))
        missing = set(self.draw(st.lists(st.sampled_from([bytes([i]) * 32 for i in range(4)]), unique=True)))
        actions = self.check(
            self.core.ingested(ingest.link, new, ingest.quarantine, missing, self.now), source=ingest.peer
        )
        wants = of(actions, Want)
        if missing and not self.links[ingest.link].closed:
            assert wants == [Want(ingest.link, tuple(sorted(missing)))]
        else:
            assert wants == []
        if ingest.quarantine:
            assert of(actions, Push) == []
        else:
            # Everyone the table says we send to gets the batch, except its source.
            expected = self.where(lambda s: s.open and s.tier in WE_SEND and s.peer != ingest.peer)
            assert sorted(a.link for a in of(actions, Push)) == sorted(expected)

    def _answer(self) -> tuple[list[Packet], list[StoredPacket]]:
        chosen = self.draw(st.lists(st.sampled_from(CLEAN + QUARANTINED), max_size=5, unique=True))
        sources = [self.pick(["local", "peer"]) for _ in chosen]
        answer = [
            stored(p, quarantined=p.id in Q_IDS, source=src) for p, src in zip(chosen, sources, strict=True)
        ]
        return chosen, answer

    def want(self) -> None:
        link = self.pick(self.where(lambda s: s.open))
        chosen, answer = self._answer()
        (send,) = self.check(self.core.wanted_loaded(link, answer))
        assert send == SendPackets(link, tuple(p for p in chosen if p.id not in Q_IDS))

    def query(self) -> None:
        link = self.pick(self.where(lambda s: s.open))
        chosen, answer = self._answer()
        (reply,) = self.check(self.core.query_loaded(link, 1, answer))
        assert reply == AnswerQuery(link, 1, tuple(p for p in chosen if p.id not in Q_IDS))

    def local(self) -> None:
        _, answer = self._answer()
        self.check(self.core.local_packets(answer, self.now))

    def tiers(self) -> None:
        tiers = {pid(p): self.pick(TIERS) for p in CAST if self.draw(st.booleans())}
        expected = {
            i: tiers.get(s.peer, UNKNOWN)
            for i, s in self.links.items()
            if not s.closed and not s.ended and s.peer is not None and s.tier is not None
            and tiers.get(s.peer, UNKNOWN) != s.tier
        }
        actions = self.check(self.core.tiers_read(tiers, self.now))
        assert {a.link: a.tier for a in of(actions, SetTier)} == expected

    def close(self) -> None:
        link = self.pick(self.where(lambda s: not s.closed))
        event = Closed(self.pick(CLOSE_CODES), "closed", self.draw(st.booleans()))
        actions = self.core.session_events(link, [event], self.now)
        seen = self.links[link]
        if seen.peer is None and seen.role is RESPONDER and event.code == ErrorCode.TIMEOUT:
            # A stranger's setup that timed out: counted, and summarised (strangers.py).
            assert all(isinstance(a, AuditStrangers | WakeAt) for a in actions)
        else:
            assert actions == []
        self.links[link].closed, self.links[link].open = True, False

    def end(self) -> None:
        link = self.pick(self.where(lambda s: True))
        seen = self.links[link]
        seen.closed, seen.open, seen.ended = True, False, True
        self.check(self.core.link_ended(link, self.now))
        # A queued ingest of an ended link is the xfail test above; it is dropped here.
        self.pending_ingests = [i for i in self.pending_ingests if i.link != link]

    def strike(self) -> None:
        link = self.pick(self.where(lambda s: True))
        seen = self.links[link]
        actions = self.core.session_events(link, [Misbehaviour(ErrorCode.MALFORMED, "x", False)], self.now)
        if seen.peer is None and seen.role is RESPONDER:  # a stranger: summarised (strangers.py)
            assert all(isinstance(a, AuditStrangers | WakeAt) for a in actions)
            return
        (strike,) = actions
        assert isinstance(strike, Strike) and strike.peer == seen.peer
        if seen.peer is None or seen.tier is None:
            return
        count = self.draw(st.integers(1, STRIKES_TO_BLOCK + 2))
        actions = self.check(self.core.struck(link, seen.peer, count, seen.tier, strike.code, "x", self.now))
        assert bool(of(actions, Isolate)) is (count >= STRIKES_TO_BLOCK)
        blocked = {a.link for a in of(actions, SetTier)}
        assert all(a.tier is BLOCKED for a in of(actions, SetTier))
        if count >= STRIKES_TO_BLOCK:
            assert blocked == set(self.where(lambda s: s.peer == seen.peer and not s.closed))

    def wake(self) -> None:
        self.check(self.core.wake(self.now))


PUSHES_SEEN: list[int] = []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_whatever_the_order_no_quarantined_packet_leaves_and_pushes_follow_the_tiers(
    data: st.DataObject,
) -> None:
    core = coordinator(seed=data.draw(st.integers(0, 1000)))
    model = Model(core, data)
    core.start(model.now)
    for _ in range(data.draw(st.integers(10, 60))):
        model.now += data.draw(st.sampled_from([0.0, 0.001, 1.0, 61.0]))
        model.pick(model.steps())()
    PUSHES_SEEN.append(model.pushes)


def test_the_property_runs_exercised_the_fan_out() -> None:
    """Run after the property test (same module, file order): its checks were not vacuous."""
    if not PUSHES_SEEN:
        pytest.skip("the property test did not run in this session")
    assert sum(PUSHES_SEEN) > 50  # typically 150-300 pushes over the 200 examples
