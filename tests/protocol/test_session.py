"""Two Sessions joined over an in-memory link: sync, trust tiers, hostile peers, timers, frames.

Each side is an in-memory :class:`Node` that answers the session's events exactly as the runtime
does (``runtime/peering.py: Federation._on_event``): admit with the tier from its table, start a
sync over everything shareable if it sends to the peer (else over what that peer sent it), send
the wanted packets it holds outside quarantine, store received packets dependencies first, answer
queries (external peers only on ``public/`` topics). :class:`Pair` carries each side's messages to
the other, in order, until both are quiet, like h11's ``ConnectionPair``; time is a float the test
advances. Every frame a side seals is recorded, so tests assert on what crossed the wire.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ark_lattice.errors import ErrorCode, LocalProtocolError, RemoteProtocolError, UsageError
from ark_lattice.hlc import pack
from ark_lattice.identity import Identity, NodeId
from ark_lattice.manifest import PeerManifest, SignedManifest
from ark_lattice.packet import Packet
from ark_lattice.protocol import frames as f
from ark_lattice.protocol.channel import MAX_FRAME
from ark_lattice.protocol.coordinator import keep_existing_session
from ark_lattice.protocol.events import (
    Closed,
    Event,
    Misbehaviour,
    PacketsReceived,
    PacketsWanted,
    PeerAuthenticated,
    PeerIdentified,
    PeerReportedError,
    QueryAnswered,
    QueryReceived,
    SyncCompleted,
    SyncReady,
)
from ark_lattice.protocol.intake import Intake
from ark_lattice.protocol.reconcile import ItemSet
from ark_lattice.protocol.session import (
    TRANSITIONS,
    Role,
    Session,
    SessionConfig,
    State,
    Transition,
)
from ark_lattice.terms import terms_for
from ark_lattice.tiers import TrustTier

CORE, SANDBOX, EXTERNAL, UNKNOWN, BLOCKED = (
    TrustTier.CORE,
    TrustTier.SANDBOX,
    TrustTier.EXTERNAL,
    TrustTier.UNKNOWN,
    TrustTier.BLOCKED,
)
ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)
CAROL = Identity.from_seed(bytes([3]) * 32)
FEDERATION = bytes([7]) * 32
T0 = 1_700_000_000.0
T0_MS = int(T0 * 1000)
CONFIG = SessionConfig()

# DESIGN §5, written out independently of terms.terms_for so the two are checked against each other.
WE_SEND = {CORE}
WE_ACCEPT = {CORE, SANDBOX}
WE_ANSWER = {CORE, EXTERNAL}


def make_manifest(
    identity: Identity, seq: int = 1, *, issued: float = T0 - 60, lifetime: int = 86_400
) -> SignedManifest:
    return PeerManifest(
        identity.node_id, "test", seq, int(issued), int(issued) + lifetime, ("ws://x:1",), ("sync/1",)
    ).sign(identity)


def make_packet(
    author: Identity,
    n: int,
    *,
    at_ms: int | None = None,
    topic: str = "lab/notes",
    depends: tuple[bytes, ...] = (),
) -> Packet:
    return Packet.create(
        author,
        topic=topic,
        kind="note",
        body=f"{author.node_id.short}-{n}".encode(),
        created_at=pack(T0_MS - 3_600_000 + n * 1000 if at_ms is None else at_ms, 0),
        depends=depends,
    )


# -- the in-memory node and link ----------------------------------------------------------------


@dataclass
class Stored:
    packet: Packet
    source: str  # "local" or the sending peer's id
    quarantined: bool


class Node:
    """What the runtime does for each session event, with dicts instead of the SQLite store."""

    def __init__(
        self,
        identity: Identity,
        tiers: dict[NodeId, TrustTier] | None = None,
        packets: Iterable[Packet] = (),
        *,
        manifest: SignedManifest | None = None,
    ) -> None:
        self.identity = identity
        self.id = identity.node_id
        self.tiers = dict(tiers or {})
        self.held_seq: dict[NodeId, int] = {}
        self.manifest = manifest or make_manifest(identity)
        self.store: dict[bytes, Stored] = {p.id: Stored(p, "local", False) for p in packets}
        self.intake = Intake()
        self.answers: list[QueryAnswered] = []

    def ids(self, *, quarantined: bool | None = None) -> set[bytes]:
        return {i for i, s in self.store.items() if quarantined is None or s.quarantined is quarantined}

    def on_event(self, session: Session, event: Event, now: float) -> None:
        peer = session.peer
        if isinstance(event, PeerAuthenticated):
            session.admit(self.tiers.get(event.peer, UNKNOWN), now, held_seq=self.held_seq.get(event.peer))
        elif isinstance(event, PeerIdentified):
            self.held_seq[event.peer] = event.manifest.manifest.seq
        elif isinstance(event, SyncReady):
            if event.send:
                keys = [(s.packet.header.created_at, i) for i, s in self.store.items() if not s.quarantined]
            else:
                keys = [
                    (s.packet.header.created_at, i) for i, s in self.store.items() if s.source == str(peer)
                ]
            session.start_sync(ItemSet(keys), now)
        elif isinstance(event, PacketsWanted):
            held = [self.store[i] for i in event.ids if i in self.store]
            session.send_packets([s.packet for s in held if not s.quarantined], now)
        elif isinstance(event, PacketsReceived):
            deps = Intake.dependencies(event.packets)
            wanted = deps | {p.id for p in event.packets}
            have = {i for i in wanted if i in self.store} if deps else set()
            admission = self.intake.admit(event.packets, have)
            ready = admission.ready
            while ready:
                for p in ready:
                    self.store.setdefault(p.id, Stored(p, str(peer), event.quarantine))
                ready = self.intake.stored(p.id for p in ready)
            if admission.missing:
                session.want(admission.missing, now, first=True)
        elif isinstance(event, QueryReceived):
            found = sorted(
                (
                    s.packet
                    for s in self.store.values()
                    if s.packet.header.topic == event.topic and not s.quarantined
                ),
                key=lambda p: (p.header.created_at, p.id),
            )
            session.answer_query(event.query_id, found[: event.limit], now)
        elif isinstance(event, QueryAnswered):
            self.answers.append(event)


class End:
    """One side of a :class:`Pair`: its node, its session, what it saw and what it sent."""

    def __init__(self, name: str, node: Node, session: Session, pair: Pair) -> None:
        self.name = name
        self.node = node
        self.session = session
        self.pair = pair
        self.events: list[Event] = []
        self.sent: list[f.Frame] = []  # every frame this side sealed, in order
        self.received: list[f.Frame] = []  # frames delivered to this side, in order
        self.raw: list[bytes] = []  # every message this side put on the wire
        self.outbox: deque[tuple[bytes, f.Frame | None]] = deque()
        self._sealing: list[f.Frame | None] = [None]
        self._tags: deque[f.Frame | None] = deque()
        for data in session.data_to_send():  # msg1, sent by the initiator's constructor
            self.outbox.append((data, None))
            self.raw.append(data)
        send, send_raw = session._send, session._send_raw

        def recording_send(frame: f.Frame, now: float) -> None:
            self._sealing.append(frame)
            try:
                send(frame, now)
            finally:
                self._sealing.pop()

        def recording_send_raw(data: bytes, now: float) -> None:
            frame = self._sealing[-1]
            if frame is not None:
                self.sent.append(frame)
                pair.timeline.append(("send", self.name, frame))
            self._tags.append(frame)
            send_raw(data, now)

        session._send = recording_send  # type: ignore[method-assign]
        session._send_raw = recording_send_raw  # type: ignore[method-assign]

    def collect(self) -> None:
        for data in self.session.data_to_send():
            self.outbox.append((data, self._tags.popleft()))
            self.raw.append(data)

    def drain_events(self) -> None:
        while events := self.session.events():
            for event in events:
                self.events.append(event)
                self.node.on_event(self.session, event, self.pair.now)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def codes(self) -> list[str]:
        return [e.code for e in self.of(Misbehaviour)]

    def sent_of(self, kind: type) -> list[Any]:
        return [fr for fr in self.sent if type(fr) is kind]

    def inject(self, frame: f.Frame) -> None:
        """Send a frame whatever the rules say (a peer that ignores them)."""
        self.session._send(frame, self.pair.now)
        self.pair.settle()

    def inject_plaintext(self, plaintext: bytes) -> None:
        """Seal bytes that are not a valid frame into the channel, in order with the rest."""
        self.collect()
        assert self.session._channel is not None
        self.outbox.append((self.session._channel.seal(plaintext), None))
        self.pair.settle()


class Pair:
    """Two sessions over an in-memory link; ``a`` dials unless ``a_dials`` is false."""

    def __init__(
        self,
        a: Node,
        b: Node,
        *,
        config: SessionConfig = CONFIG,
        a_dials: bool = True,
        a_cls: type[Session] = Session,
        b_cls: type[Session] = Session,
        seed: int = 0,
        expected_peer: NodeId | None = None,
    ) -> None:
        self.now = T0
        self.timeline: list[tuple[str, str, f.Frame]] = []
        self.muted: set[str] = set()  # names of ends whose messages are lost on the way

        def start(node: Node, cls: type[Session], role: Role, n: int) -> Session:
            return cls(
                node.identity,
                FEDERATION,
                role,
                node.manifest,
                now=self.now,
                config=config,
                expected_peer=expected_peer if role is Role.INITIATOR else None,
                random_bytes=random.Random(seed * 2 + n).randbytes,
            )

        a_role, b_role = (Role.INITIATOR, Role.RESPONDER) if a_dials else (Role.RESPONDER, Role.INITIATOR)
        self.a = End("a", a, start(a, a_cls, a_role, 0), self)
        self.b = End("b", b, start(b, b_cls, b_role, 1), self)

    def settle(self) -> Pair:
        for _ in range(1_000_000):
            moved = False
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                src.drain_events()
                src.collect()
                while src.outbox:
                    data, frame = src.outbox.popleft()
                    if src.name in self.muted or dst.session.state is State.CLOSED:
                        continue
                    moved = True
                    if frame is not None:
                        dst.received.append(frame)
                        self.timeline.append(("recv", dst.name, frame))
                    dst.session.receive_data(data, self.now)
                    dst.drain_events()
                    dst.collect()
            if not moved:
                break
        else:  # pragma: no cover
            raise AssertionError("the sessions never went quiet")
        # The runtime closes the WebSocket once a session is closed; the other side sees it drop.
        for x, y in ((self.a, self.b), (self.b, self.a)):
            if x.session.state is State.CLOSED and y.session.state is not State.CLOSED:
                y.session.connection_lost(self.now)
                y.drain_events()
        return self

    def advance(self, seconds: float, step: float = 1.0) -> Pair:
        """Let time pass, ticking both sessions every ``step`` seconds as the runtime does."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + step)
            for side in (self.a, self.b):
                side.session.tick(self.now)
            self.settle()
        return self


def open_pair(
    a_gives_b: TrustTier = CORE,
    b_gives_a: TrustTier = CORE,
    a_packets: Iterable[Packet] = (),
    b_packets: Iterable[Packet] = (),
    **kw: Any,
) -> Pair:
    a = Node(ALICE, {BOB.node_id: a_gives_b}, a_packets)
    b = Node(BOB, {ALICE.node_id: b_gives_a}, b_packets)
    return Pair(a, b, **kw).settle()


def lone_session(identity: Identity, role: Role, seed: int = 0, **kw: Any) -> Session:
    return Session(
        identity,
        FEDERATION,
        role,
        make_manifest(identity),
        now=T0,
        random_bytes=random.Random(seed).randbytes,
        **kw,
    )


def handshake_messages(seed: int) -> tuple[bytes, bytes, bytes]:
    """msg1, msg2, msg3 of one ALICE → BOB handshake."""
    a, b = lone_session(ALICE, Role.INITIATOR, seed), lone_session(BOB, Role.RESPONDER, seed + 1)
    (msg1,) = a.data_to_send()
    b.receive_data(msg1, T0)
    (msg2,) = b.data_to_send()
    a.receive_data(msg2, T0)
    (msg3,) = a.data_to_send()
    b.receive_data(msg3, T0)
    assert a.state is b.state is State.AUTHENTICATED
    return msg1, msg2, msg3


def wire(p: Packet) -> f.WirePacket:
    return f.WirePacket(p.header_bytes, p.signature, p.body)


# -- convergence ---------------------------------------------------------------------------------


def sample_sets() -> tuple[list[Packet], list[Packet], list[Packet]]:
    """~200 packets by three authors, 100 held by both; some build on others."""
    shared: list[Packet] = []
    only_a: list[Packet] = []
    only_b: list[Packet] = []
    for n in range(200):
        author = (ALICE, BOB, CAROL)[n % 3]
        dest = shared if n < 100 else only_a if n % 2 else only_b
        pool = shared if dest is shared else shared + dest
        depends = (pool[-1].id,) if n % 7 == 3 and pool else ()  # builds on what its holder has
        dest.append(make_packet(author, n, depends=depends))
    return shared, only_a, only_b


@pytest.mark.parametrize("a_dials", [True, False])
def test_core_peers_converge_both_ways_with_want_flow_control(a_dials: bool) -> None:
    shared, only_a, only_b = sample_sets()
    config = SessionConfig(want_batch=8, max_inflight_wants=2)
    pair = open_pair(CORE, CORE, shared + only_a, shared + only_b, config=config, a_dials=a_dials)

    union = {p.id for p in shared + only_a + only_b}
    assert pair.a.node.ids() == pair.b.node.ids() == union
    assert not pair.a.node.ids(quarantined=True) and not pair.b.node.ids(quarantined=True)
    from_alice = {i for i, s in pair.b.node.store.items() if s.source == str(ALICE.node_id)}
    assert from_alice == {p.id for p in only_a}
    assert {i for i, s in pair.a.node.store.items() if s.source == str(BOB.node_id)} == {p.id for p in only_b}

    dialler, listener = (pair.a, pair.b) if a_dials else (pair.b, pair.a)
    mine = only_a if dialler is pair.a else only_b
    theirs = only_b if dialler is pair.a else only_a
    assert dialler.of(SyncCompleted) == [SyncCompleted(offered=len(mine), wanted=len(theirs))]
    assert listener.of(SyncCompleted) == [SyncCompleted(offered=len(mine), wanted=len(theirs))]

    for side in (pair.a, pair.b):
        assert side.session.state is State.OPEN and not side.session.syncing
        assert not side.of(Misbehaviour) and not side.of(PeerReportedError)
        wants = side.sent_of(f.WantFrame)
        assert len(wants) >= 50 // 8 and all(1 <= len(w.ids) <= 8 for w in wants)
        # Receiver-driven flow control: never more than two want frames unanswered.
        outstanding = peak = 0
        for kind, name, frame in pair.timeline:
            if kind == "send" and name == side.name and isinstance(frame, f.WantFrame):
                outstanding += 1
                peak = max(peak, outstanding)
            elif (
                kind == "recv"
                and name == side.name
                and isinstance(frame, f.PacketsFrame)
                and not frame.live
                and frame.last
            ):
                outstanding -= 1
        assert peak == 2 and outstanding == 0
        # Dependencies first: nothing was stored before what it builds on.
        order = {pid: n for n, pid in enumerate(side.node.store)}
        received = [(pid, s.packet) for pid, s in side.node.store.items() if s.source != "local"]
        assert sum(1 for _, p in received if p.header.depends) >= 5
        for pid, packet in received:
            assert all(order[d] < order[pid] for d in packet.header.depends)


def test_a_dependant_that_sorts_before_its_dependency_waits_for_it() -> None:
    # The dependant is stamped earlier (its author's clock is behind), so it is sent first.
    dependency = make_packet(CAROL, 1, at_ms=T0_MS - 1000)
    dependant = make_packet(BOB, 2, at_ms=T0_MS - 5000, depends=(dependency.id,))
    config = SessionConfig(want_batch=1, max_inflight_wants=1)
    pair = open_pair(CORE, CORE, [], [dependency, dependant], config=config)
    received = [p.id for e in pair.a.of(PacketsReceived) for p in e.packets]
    assert received == [dependant.id, dependency.id]
    assert list(pair.a.node.store) == [dependency.id, dependant.id]


def test_live_push_fetches_a_missing_dependency_first() -> None:
    pair = open_pair(CORE, CORE)
    base = make_packet(ALICE, 1, at_ms=T0_MS)
    reply = make_packet(ALICE, 2, at_ms=T0_MS + 1, depends=(base.id,))
    orphan = make_packet(ALICE, 3, at_ms=T0_MS + 2, depends=(bytes(32),))  # nobody holds its dependency
    for p in (base, reply, orphan):
        pair.a.node.store[p.id] = Stored(p, "local", False)
    assert pair.a.session.push([reply, orphan], pair.now) == 2
    pair.settle()
    assert [(e.live, [p.id for p in e.packets]) for e in pair.b.of(PacketsReceived)] == [
        (True, [reply.id, orphan.id]),
        (False, [base.id]),
    ]
    assert list(pair.b.node.store) == [base.id, reply.id]  # the orphan waits, unstored
    wants = [set(w.ids) for w in pair.b.sent_of(f.WantFrame)]
    assert wants[0] == {bytes(32), base.id}
    assert all(w == {bytes(32)} for w in wants[1:])  # asked again while the orphan waits; A has none
    assert not pair.a.of(Misbehaviour) and not pair.b.of(Misbehaviour)


def test_a_second_reconciliation_picks_up_what_appeared_since() -> None:
    pair = open_pair(CORE, CORE, [make_packet(ALICE, 1)], [make_packet(BOB, 2)])
    later_a, later_b = make_packet(ALICE, 3), make_packet(BOB, 4)
    pair.a.node.store[later_a.id] = Stored(later_a, "local", False)
    pair.b.node.store[later_b.id] = Stored(later_b, "local", False)
    assert pair.b.session.request_sync() is False  # only the dialler drives reconciliation
    assert pair.a.session.request_sync() is True
    pair.settle()
    assert pair.a.node.ids() == pair.b.node.ids() and len(pair.a.node.ids()) == 4
    assert pair.a.of(SyncCompleted)[-1] == SyncCompleted(offered=1, wanted=1)
    assert pair.b.of(SyncCompleted)[-1] == SyncCompleted(offered=1, wanted=1)
    assert not pair.a.session.syncing


# -- trust tiers (DESIGN §5), both directions ----------------------------------------------------


@pytest.mark.parametrize("a_dials", [True, False], ids=["a-dials", "b-dials"])
@pytest.mark.parametrize("b_gives_a", list(TrustTier))
@pytest.mark.parametrize("a_gives_b", list(TrustTier))
def test_tier_table_decides_what_flows(a_gives_b: TrustTier, b_gives_a: TrustTier, a_dials: bool) -> None:
    a_packets = [make_packet(ALICE, n) for n in range(3)]
    b_packets = [make_packet(BOB, n) for n in range(3)]
    pair = open_pair(a_gives_b, b_gives_a, a_packets, b_packets, a_dials=a_dials)
    a, b = pair.a, pair.b

    if BLOCKED in (a_gives_b, b_gives_a):
        for blocker, tier in ((a, a_gives_b), (b, b_gives_a)):
            if tier is BLOCKED:
                # Closed right after identification: not one frame, so never our manifest.
                assert blocker.sent == []
                assert blocker.of(Closed)[0].code == "blocked"
                assert blocker.of(PeerAuthenticated) and not blocker.of(PeerIdentified)
        assert a.session.state is b.session.state is State.CLOSED
        assert not a.of(PeerIdentified) and not b.of(PeerIdentified)
        assert len(a.node.store) == len(b.node.store) == 3
        return

    a_to_b = a_gives_b in WE_SEND and b_gives_a in WE_ACCEPT
    b_to_a = b_gives_a in WE_SEND and a_gives_b in WE_ACCEPT
    assert a.session.flows == (a_to_b, b_to_a) and b.session.flows == (b_to_a, a_to_b)
    assert a.session.our_terms == b.session.their_terms == terms_for(a_gives_b)
    assert b.session.our_terms == a.session.their_terms == terms_for(b_gives_a)
    assert [type(fr) for fr in a.sent[:2]] == [f.ManifestFrame, f.TermsFrame]
    assert a.of(PeerIdentified) and b.of(PeerIdentified)

    for src, dst, flows, dst_tier in ((a, b, a_to_b, b_gives_a), (b, a, b_to_a, a_gives_b)):
        src_ids = {i for i, s in src.node.store.items() if s.source == "local"}
        got = dst.node.ids() - {i for i, s in dst.node.store.items() if s.source == "local"}
        assert got == (src_ids if flows else set())
        assert dst.node.ids(quarantined=True) == (src_ids if flows and dst_tier is SANDBOX else set())
        sent_packets = [p for fr in src.sent_of(f.PacketsFrame) for p in fr.packets]
        assert len(sent_packets) == (3 if flows else 0)
    if not (a_to_b or b_to_a):
        assert not a.of(SyncReady) and not b.of(SyncReady)
        kinds = {type(fr) for fr in a.sent + b.sent}
        assert kinds <= {f.ManifestFrame, f.TermsFrame}
    # Honest peers never break each other's rules.
    assert not a.of(Misbehaviour) and not b.of(Misbehaviour)
    assert a.session.state is b.session.state is State.OPEN


@pytest.mark.parametrize("b_gives_a", [CORE, SANDBOX, EXTERNAL, UNKNOWN])
def test_tier_table_decides_who_answers_queries(b_gives_a: TrustTier) -> None:
    b_packets = [make_packet(BOB, 1, topic="public/news"), make_packet(BOB, 2, topic="lab/notes")]
    pair = open_pair(EXTERNAL, b_gives_a, [], b_packets)
    a, b = pair.a, pair.b
    if b_gives_a not in WE_ANSWER:
        with pytest.raises(LocalProtocolError):
            a.session.query("public/news", 10, pair.now)
        assert not a.sent_of(f.QueryFrame)
        return
    q1 = a.session.query("public/news", 10, pair.now)
    q2 = a.session.query("lab/notes", 10, pair.now)
    pair.settle()
    answers = {e.query_id: [p.id for p in e.packets] for e in a.node.answers}
    assert answers[q1] == [b_packets[0].id]
    if b_gives_a is CORE:
        assert answers[q2] == [b_packets[1].id] and not b.of(Misbehaviour)
    else:  # external: only topics policy marks public; a refusal by choice, not a strike
        assert answers[q2] == []
        assert not b.of(Misbehaviour)
        assert [e.code for e in a.of(PeerReportedError)] == ["policy_denied"]
    assert not a.node.ids()  # answers are not stored (nothing flows to an external peer)
    assert a.session.state is State.OPEN


@pytest.mark.parametrize("a_dials", [True, False])
def test_sandbox_peer_never_gets_ours_and_its_packets_stay_quarantined(a_dials: bool) -> None:
    ours = [make_packet(ALICE, n) for n in range(5)]
    relayed = make_packet(CAROL, 9)  # came from a third node: must not leak to the sandbox peer
    theirs = [make_packet(BOB, n) for n in range(5)]
    pair = open_pair(SANDBOX, CORE, ours + [relayed], theirs, a_dials=a_dials)
    a, b = pair.a, pair.b
    assert a.node.ids(quarantined=True) == {p.id for p in theirs}
    assert b.node.ids() == {p.id for p in theirs}  # nothing of ours
    assert not a.sent_of(f.OfferFrame) and not [p for fr in a.sent_of(f.PacketsFrame) for p in fr.packets]
    # The sandbox side refuses to send ours even when its node asks.
    assert a.session.push(ours, pair.now) == 0
    pair.settle()
    assert b.node.ids() == {p.id for p in theirs}
    # A second reconciliation moves nothing: our set for them holds only what they sent us.
    (a if a_dials else b).session.request_sync()
    pair.settle()
    last_a, last_b = a.of(SyncCompleted)[-1], b.of(SyncCompleted)[-1]
    assert last_a == last_b == SyncCompleted(offered=0, wanted=0)
    assert len(a.of(SyncCompleted)) == 2 and not a.of(Misbehaviour) and not b.of(Misbehaviour)


@pytest.mark.parametrize("a_dials", [True, False])
def test_blocked_peer_is_closed_before_our_manifest(a_dials: bool) -> None:
    pair = open_pair(BLOCKED, CORE, [make_packet(ALICE, 1)], [make_packet(BOB, 1)], a_dials=a_dials)
    a, b = pair.a, pair.b
    assert [type(e) for e in a.events] == [PeerAuthenticated, Closed]
    assert a.session.close_code == "blocked" and a.sent == []
    assert len(a.raw) == (2 if a_dials else 1)  # handshake messages only: msg1 and msg3, or msg2
    assert not b.received and not b.of(PeerIdentified)
    assert b.of(Closed)[-1].code == "connection_lost"


def test_unknown_peer_gets_handshake_and_manifest_only() -> None:
    pair = open_pair(UNKNOWN, UNKNOWN, [make_packet(ALICE, 1)], [make_packet(BOB, 1)])
    a, b = pair.a, pair.b
    assert a.of(PeerIdentified)[0].manifest == b.node.manifest
    assert b.of(PeerIdentified)[0].manifest == a.node.manifest
    assert [type(fr) for fr in a.sent] == [type(fr) for fr in b.sent] == [f.ManifestFrame, f.TermsFrame]
    assert a.sent[1] == f.TermsFrame(accepts=False, sends=False, answers_queries=False)
    assert a.session.flows == (False, False) and a.session.request_sync() is False
    with pytest.raises(LocalProtocolError):
        a.session.query("lab/notes", 1, pair.now)
    assert a.session.state is b.session.state is State.OPEN


def test_an_answer_nobody_asked_for_is_refused() -> None:
    pair = open_pair(EXTERNAL, EXTERNAL, [], [make_packet(BOB, 1, topic="public/x")])
    q = pair.a.session.query("public/x", 5, pair.now)
    pair.settle()
    assert [e.query_id for e in pair.a.node.answers] == [q]
    for query_id in (q, q + 7):  # answered already; never asked
        pair.b.inject(f.AnswerFrame(query_id, (wire(make_packet(BOB, 1, topic="public/x")),)))
    assert pair.a.codes() == ["unsolicited", "unsolicited"]
    assert [e.query_id for e in pair.a.node.answers] == [q]
    assert [e.code for e in pair.b.of(PeerReportedError)] == ["unsolicited", "unsolicited"]
    assert not pair.a.node.ids() and pair.a.session.state is State.OPEN


# -- peers that ignore the rules -----------------------------------------------------------------


class Liar(Session):
    """Claims it sends, accepts and answers everything, and ignores the terms its peer sent."""

    def _send_terms(self, now: float) -> None:
        self.our_terms = f.TermsFrame(accepts=True, sends=True, answers_queries=True)
        self._send(self.our_terms, now)
        self._maybe_ready()

    def _on_terms(self, frame: f.TermsFrame, now: float) -> None:
        super()._on_terms(f.TermsFrame(accepts=True, sends=True, answers_queries=True), now)


def liar_pair(honest_gives_liar: TrustTier, liar_dials: bool) -> Pair:
    liar = Node(ALICE, {BOB.node_id: CORE}, [make_packet(ALICE, n) for n in range(3)])
    honest = Node(BOB, {ALICE.node_id: honest_gives_liar}, [make_packet(BOB, n) for n in range(3)])
    return Pair(liar, honest, a_cls=Liar, a_dials=liar_dials).settle()


def assert_forbidden(honest: End, liar: End, count: int) -> None:
    assert honest.codes() == ["forbidden"] * count
    assert all(not e.fatal for e in honest.of(Misbehaviour))
    assert [e.code for e in liar.of(PeerReportedError)] == ["forbidden"] * count
    assert honest.session.state is State.OPEN


@pytest.mark.parametrize("liar_dials", [True, False])
@pytest.mark.parametrize("tier", [EXTERNAL, UNKNOWN])
def test_packets_pushed_against_our_terms_are_refused(tier: TrustTier, liar_dials: bool) -> None:
    pair = liar_pair(tier, liar_dials)
    liar, honest = pair.a, pair.b
    # A dialling liar also opened a reconciliation nobody may run: refused as well.
    expected = 1 if liar_dials else 0
    assert_forbidden(honest, liar, expected)
    assert liar.session.push([s.packet for s in liar.node.store.values()], pair.now) == 3
    pair.settle()
    assert_forbidden(honest, liar, expected + 1)
    assert {i for i, s in honest.node.store.items() if s.source != "local"} == set()
    assert not honest.of(PacketsReceived) and honest.session.packets_in == 0


@pytest.mark.parametrize("tier", [SANDBOX, EXTERNAL, UNKNOWN])
def test_wants_offers_and_queries_against_our_terms_are_refused(tier: TrustTier) -> None:
    pair = liar_pair(tier, liar_dials=False)
    liar, honest = pair.a, pair.b
    assert not honest.codes()  # honest terms were kept so far
    theirs = [i for i, s in honest.node.store.items() if s.source == "local"]
    liar.session.want(theirs, pair.now)  # the honest side sends nothing to any of these tiers
    pair.settle()
    assert not honest.of(PacketsWanted)
    # empty, final: the liar's window frees
    assert [len(fr.packets) for fr in honest.sent_of(f.PacketsFrame)] == [0]
    local = {i for i, s in liar.node.store.items() if s.source == "local"}
    assert not liar.session.syncing and not liar.node.ids() - local
    expected = 1
    if tier is not SANDBOX:  # a sandbox peer may offer us packets; the others may not
        liar.inject(f.OfferFrame(tuple(liar.node.ids())))
        assert not honest.sent_of(f.WantFrame)
        expected += 1
    if tier is not EXTERNAL:  # only core and external peers get answers
        liar.session.query("lab/notes", 10, pair.now)
        pair.settle()
        assert not honest.of(QueryReceived)
        assert [len(e.packets) for e in liar.node.answers] == [0]
        expected += 1
    assert_forbidden(honest, liar, expected)


def test_reconciliation_where_nothing_may_flow_is_refused() -> None:
    pair = liar_pair(UNKNOWN, liar_dials=True)
    liar, honest = pair.a, pair.b
    assert liar.sent_of(f.ReconFrame) and not honest.sent_of(f.ReconFrame)
    assert_forbidden(honest, liar, 1)
    assert not honest.of(SyncReady)


def test_liar_claiming_to_accept_does_not_make_us_send() -> None:
    pair = liar_pair(SANDBOX, liar_dials=True)
    liar, honest = pair.a, pair.b
    assert honest.session.flows == (False, True)
    # Its packets arrive, quarantined, as a sandbox peer's may; ours never leave.
    assert honest.node.ids(quarantined=True) == {i for i, s in liar.node.store.items() if s.source == "local"}
    assert not [p for fr in honest.sent_of(f.PacketsFrame) for p in fr.packets]
    assert honest.session.push([s.packet for s in honest.node.store.values()], pair.now) == 0
    assert not honest.of(Misbehaviour)


# -- hostile input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role, garbage, code",
    [
        (Role.RESPONDER, b"GET / HTTP/1.1\r\n\r\n", "malformed"),
        # msg1's size, but no federation key behind it: to the responder, another federation's node
        (Role.RESPONDER, bytes(48), "foreign_federation"),
        (Role.INITIATOR, bytes(5000), "malformed"),
        (Role.INITIATOR, random.Random(1).randbytes(197), "handshake_failed"),  # msg2's size
    ],
)
def test_garbage_before_the_handshake_closes_silently(role: Role, garbage: bytes, code: str) -> None:
    session = lone_session(BOB, role)
    session.data_to_send()
    session.receive_data(garbage, T0)
    misbehaviour, closed = session.events()
    assert isinstance(misbehaviour, Misbehaviour) and isinstance(closed, Closed)
    assert misbehaviour.code == closed.code == code
    assert misbehaviour.fatal and not closed.by_peer
    assert session.state is State.CLOSED and session.close_code == code and session.peer is None
    assert session.data_to_send() == []  # no channel yet, so nothing to say
    session.receive_data(b"more", T0)
    assert session.events() == [] and session.data_to_send() == []


def test_replayed_handshake_messages_from_another_session_fail() -> None:
    old1, old2, old3 = handshake_messages(seed=10)
    # msg3 of the old session after a fresh msg1/msg2 exchange
    a, b = lone_session(ALICE, Role.INITIATOR, 20), lone_session(BOB, Role.RESPONDER, 21)
    b.receive_data(a.data_to_send()[0], T0)
    b.data_to_send()
    b.receive_data(old3, T0)
    assert [type(e) for e in b.events()] == [Misbehaviour, Closed] and b.close_code == "handshake_failed"
    # msg2 of the old session to a fresh initiator
    a2 = lone_session(ALICE, Role.INITIATOR, 30)
    a2.data_to_send()
    a2.receive_data(old2, T0)
    assert a2.close_code == "handshake_failed" and a2.data_to_send() == []
    assert a2.state is State.CLOSED and a2.peer is None
    # the whole recorded initiator side replayed: msg1 gets an answer, msg3 does not fit it
    b3 = lone_session(BOB, Role.RESPONDER, 40)
    b3.receive_data(old1, T0)
    assert len(b3.data_to_send()) == 1
    b3.receive_data(old3, T0)
    assert b3.close_code == "handshake_failed"
    assert not [e for e in b3.events() if isinstance(e, PeerAuthenticated)]


def test_dialling_someone_else_than_expected_fails_before_our_identity_leaves() -> None:
    a, b = Node(ALICE, {BOB.node_id: CORE}), Node(BOB, {ALICE.node_id: CORE})
    pair = Pair(a, b, expected_peer=CAROL.node_id).settle()
    assert pair.a.session.close_code == "handshake_failed"
    assert len(pair.a.raw) == 1  # msg1 only: msg3 (our identity) never sent
    assert pair.b.session.state is State.CLOSED


def test_connecting_to_ourselves_is_refused() -> None:
    a, b = Node(ALICE, {ALICE.node_id: CORE}), Node(ALICE, {ALICE.node_id: CORE})
    pair = Pair(a, b).settle()
    assert pair.a.session.close_code == "duplicate_session"
    assert not pair.a.of(PeerAuthenticated)


def test_tampered_ciphertext_is_fatal() -> None:
    pair = open_pair(CORE, CORE)
    p = make_packet(ALICE, 1)
    pair.a.session.push([p], pair.now)
    pair.a.collect()
    data, frame = pair.a.outbox.pop()
    pair.a.outbox.append((data[:-1] + bytes([data[-1] ^ 1]), frame))
    pair.settle()
    b = pair.b
    assert [(e.code, e.fatal) for e in b.of(Misbehaviour)] == [("decrypt_failed", True)]
    assert b.session.state is State.CLOSED and b.session.close_code == "decrypt_failed"
    last = b.sent[-1]
    assert isinstance(last, f.ErrorFrame) and last.code == "decrypt_failed" and last.fatal
    assert not b.of(PacketsReceived) and not b.node.ids()
    assert pair.a.of(PeerReportedError)[-1].fatal
    assert pair.a.of(Closed)[-1].code == "decrypt_failed" and pair.a.of(Closed)[-1].by_peer


@pytest.mark.parametrize("attack", ["replay", "reorder", "truncate", "oversize"])
def test_replayed_reordered_or_oversized_frames_are_fatal(attack: str) -> None:
    pair = open_pair(CORE, CORE)
    p1, p2 = make_packet(ALICE, 1), make_packet(ALICE, 2)
    pair.a.session.push([p1], pair.now)
    pair.a.session.push([p2], pair.now)
    pair.a.collect()
    first, second = pair.a.outbox.popleft(), pair.a.outbox.popleft()
    attacks: dict[str, list[tuple[bytes, f.Frame | None]]] = {
        "replay": [first, first],
        "reorder": [second, first],
        "truncate": [(first[0][:10], None)],
        "oversize": [(bytes(MAX_FRAME + 1), None)],
    }
    pair.a.outbox.extend(attacks[attack])
    pair.settle()
    code = {
        "replay": "decrypt_failed",
        "reorder": "decrypt_failed",
        "truncate": "malformed",
        "oversize": "too_large",
    }[attack]
    assert pair.b.session.close_code == code and pair.b.of(Misbehaviour)[-1].fatal
    stored = [p.id for e in pair.b.of(PacketsReceived) for p in e.packets]
    assert stored == ([p1.id] if attack == "replay" else [])


def test_a_bad_signature_costs_only_that_packet() -> None:
    pair = open_pair(CORE, CORE)
    good1, forged, good2 = make_packet(ALICE, 1), make_packet(ALICE, 2), make_packet(ALICE, 3)
    bad = f.WirePacket(forged.header_bytes, bytes(64), forged.body)
    broken = f.WirePacket(forged.header_bytes, forged.signature, forged.body + b"!")
    pair.a.inject(f.PacketsFrame((wire(good1), bad, broken, wire(good2)), live=True))
    b = pair.b
    assert b.codes() == ["bad_signature", "bad_packet"]
    assert not any(e.fatal for e in b.of(Misbehaviour))
    assert b.node.ids() == {good1.id, good2.id}
    assert [e.code for e in pair.a.of(PeerReportedError)] == ["bad_signature", "bad_packet"]
    assert b.session.state is State.OPEN


def test_packets_nobody_wanted_are_refused() -> None:
    pair = open_pair(CORE, CORE)
    p = make_packet(ALICE, 1)
    pair.a.inject(f.PacketsFrame((wire(p),), live=False, last=True))  # not live, no want open
    assert pair.b.codes() == ["unsolicited"] and not pair.b.node.ids()


@pytest.mark.parametrize(
    "plaintext, code",
    [
        (cbor2.dumps([1, "gossip", 1, 2]), "unknown_frame"),
        (cbor2.dumps([2, "ping", 1]), "unsupported_version"),
        (cbor2.dumps([1, "want", "not a list"]), "malformed"),
        (cbor2.dumps([1, "want", [b"short"]]), "malformed"),
        (cbor2.dumps([1, "ping"]), "malformed"),
        (cbor2.dumps({"type": "ping"}), "malformed"),
        (b"\xff\xfe not cbor", "malformed"),
        (cbor2.dumps([1, "manifest", b"x"]), "out_of_order"),  # manifest after identification
        (cbor2.dumps([1, "synced", 0, 0]), "out_of_order"),  # only the dialler ends a reconciliation
    ],
)
def test_unknown_or_malformed_frames_get_an_error_frame_and_the_session_goes_on(
    plaintext: bytes, code: str
) -> None:
    pair = open_pair(CORE, CORE)
    pair.b.inject_plaintext(plaintext)  # b is the listener
    assert [(e.code, e.fatal) for e in pair.a.of(Misbehaviour)] == [(code, False)]
    assert [e.code for e in pair.b.of(PeerReportedError)] == [code]
    assert pair.a.session.state is State.OPEN
    p = make_packet(BOB, 1)
    pair.b.session.push([p], pair.now)
    pair.settle()
    assert pair.a.node.ids() == {p.id}


def test_packets_stamped_too_far_in_the_future_are_refused() -> None:
    pair = open_pair(CORE, CORE)
    soon = make_packet(ALICE, 1, at_ms=T0_MS + 4 * 60_000)  # within the five minutes allowed
    later = make_packet(ALICE, 2, at_ms=T0_MS + 6 * 60_000)
    pair.a.inject(f.PacketsFrame((wire(later), wire(soon)), live=True))
    assert pair.b.codes() == ["future_timestamp"]
    assert pair.b.node.ids() == {soon.id}
    pair.now += 120  # time caught up: the same packet is now fine
    pair.a.inject(f.PacketsFrame((wire(later),), live=True))
    assert pair.b.node.ids() == {soon.id, later.id}


class Garbled:
    """Stands in for our manifest so the session sends bytes that are no signed manifest."""

    def to_bytes(self) -> bytes:
        return b"\x82\x41x"


@pytest.mark.parametrize("problem", ["another_node", "expired", "rollback", "forged", "garbled"])
def test_bad_manifest_is_fatal(problem: str) -> None:
    real = make_manifest(ALICE, seq=4)
    manifest = {
        "another_node": make_manifest(CAROL),
        "expired": make_manifest(ALICE, issued=T0 - 7200, lifetime=3600),
        "rollback": real,
        "forged": SignedManifest(real.manifest, real.payload, bytes(64)),
        "garbled": Garbled(),
    }[problem]
    a = Node(ALICE, {BOB.node_id: CORE}, [make_packet(ALICE, 1)], manifest=manifest)  # type: ignore[arg-type]
    b = Node(BOB, {ALICE.node_id: CORE})
    b.held_seq[ALICE.node_id] = 5  # we already accepted seq 5 from this node
    pair = Pair(a, b).settle()
    assert [(e.code, e.fatal) for e in pair.b.of(Misbehaviour)] == [("bad_manifest", True)]
    assert pair.b.session.close_code == "bad_manifest" and not pair.b.of(PeerIdentified)
    last = pair.b.sent[-1]
    assert isinstance(last, f.ErrorFrame) and last.code == "bad_manifest" and last.fatal
    assert pair.a.of(Closed)[-1].by_peer and pair.a.of(Closed)[-1].code == "bad_manifest"
    assert b.held_seq[ALICE.node_id] == 5 and not b.ids()


def test_a_newer_manifest_is_accepted_and_remembered() -> None:
    a = Node(ALICE, {BOB.node_id: CORE}, manifest=make_manifest(ALICE, seq=6))
    b = Node(BOB, {ALICE.node_id: CORE})
    b.held_seq[ALICE.node_id] = 5
    pair = Pair(a, b).settle()
    assert pair.b.session.state is State.OPEN and b.held_seq[ALICE.node_id] == 6


# -- timers --------------------------------------------------------------------------------------


def test_idle_sessions_ping_and_stay_open() -> None:
    pair = open_pair(CORE, CORE)
    pair.advance(14)
    assert not pair.a.sent_of(f.PingFrame) and not pair.b.sent_of(f.PingFrame)
    pair.advance(1)
    for side, other in ((pair.a, pair.b), (pair.b, pair.a)):
        pings = side.sent_of(f.PingFrame)
        assert len(pings) == 1 and other.sent_of(f.PongFrame) == [f.PongFrame(pings[0].nonce)]
    pair.advance(300)
    assert pair.a.session.state is pair.b.session.state is State.OPEN
    for side, other in ((pair.a, pair.b), (pair.b, pair.a)):
        nonces = [p.nonce for p in side.sent_of(f.PingFrame)]
        assert len(nonces) == 21 and nonces == list(range(1, 22))  # one every 15 s
        assert [p.nonce for p in other.sent_of(f.PongFrame)] == nonces


def test_a_silent_peer_is_closed_as_stale() -> None:
    pair = open_pair(CORE, CORE)
    pair.muted.add("b")  # b's messages no longer arrive (a half-dead link)
    pair.advance(45)
    assert pair.a.session.state is State.OPEN
    assert len(pair.a.sent_of(f.PingFrame)) == 3  # at 15, 30 and 45 s, unanswered
    pair.advance(1)
    assert pair.a.session.state is State.CLOSED and pair.a.session.close_code == "timeout"
    assert pair.a.of(Closed)[-1].by_peer is False
    assert pair.b.of(Closed)[-1].code == "connection_lost"


@pytest.mark.parametrize("mute", ["a", "b"])
def test_handshake_timeout(mute: str) -> None:
    pair = Pair(Node(ALICE, {BOB.node_id: CORE}), Node(BOB, {ALICE.node_id: CORE}))
    pair.muted.add(mute)
    pair.settle().advance(10)
    assert pair.a.session.state is not State.CLOSED and pair.b.session.state is not State.CLOSED
    pair.advance(1)
    assert pair.a.session.close_code == "timeout" or pair.b.session.close_code == "timeout"
    assert pair.a.session.state is pair.b.session.state is State.CLOSED
    assert not pair.a.of(PeerIdentified) and not pair.b.of(PeerIdentified)


def test_a_node_that_never_admits_times_out_the_setup() -> None:
    a = Node(ALICE, {BOB.node_id: CORE})
    b = Node(BOB, {ALICE.node_id: CORE})
    b.on_event = lambda session, event, now: None  # type: ignore[method-assign]
    pair = Pair(a, b).settle()
    assert pair.b.session.state is State.AUTHENTICATED
    # The dialler's manifest waited for admit() rather than being refused.
    assert not pair.b.of(Misbehaviour)
    pair.advance(11)
    assert pair.b.session.close_code == "timeout"


def test_a_late_admit_uses_the_manifest_that_arrived_meanwhile() -> None:
    a = Node(ALICE, {BOB.node_id: CORE}, [make_packet(ALICE, 1)])
    b = Node(BOB, {ALICE.node_id: CORE})
    held: list[tuple[Session, Event]] = []
    real = b.on_event
    b.on_event = lambda session, event, now: (  # type: ignore[method-assign]
        held.append((session, event)) if isinstance(event, PeerAuthenticated) else real(session, event, now)
    )
    pair = Pair(a, b).settle()
    assert pair.b.session.state is State.AUTHENTICATED and pair.b.received == [pair.a.sent[0]]
    session, event = held[0]
    real(session, event, pair.now)
    pair.settle()
    assert pair.b.session.state is State.OPEN and b.ids() == a.ids()


# -- deadlines: tick exactly when something is due ------------------------------------------------


def _quiet_before_and_busy_at(session: Session, deadline: float) -> bool:
    """``tick`` just before ``deadline`` does nothing; returns whether ``tick`` at it did something."""
    before = (session.state, session.bytes_out)
    session.tick(math.nextafter(deadline, -math.inf))
    assert (session.state, session.bytes_out) == before, "tick() acted before next_deadline()"
    session.tick(deadline)
    return (session.state, session.bytes_out) != before


def advance_by_deadlines(pair: Pair, seconds: float) -> list[float]:
    """Let time pass as the runtime and the simulator do: tick each session only at its
    ``next_deadline()``, checking on the way that it is exact. Returns the times ticked."""
    end = pair.now + seconds
    ticked: list[float] = []
    while True:
        due = {side.name: side.session.next_deadline() for side in (pair.a, pair.b)}
        pending = [d for d in due.values() if d is not None]
        if not pending or min(pending) > end:
            pair.now = end
            return ticked
        at = min(pending)
        assert at > pair.now  # never overdue once settled
        pair.now = at
        for side in (pair.a, pair.b):
            if due[side.name] == at:
                assert _quiet_before_and_busy_at(side.session, at)
            else:
                before = (side.session.state, side.session.bytes_out)
                side.session.tick(at)
                assert (side.session.state, side.session.bytes_out) == before
        ticked.append(at)
        pair.settle()


def test_ticking_at_deadlines_pings_as_ticking_every_second_does() -> None:
    pair = open_pair(CORE, CORE)
    ticked = advance_by_deadlines(pair, 315)
    assert ticked == [T0 + 15 * n for n in range(1, 22)]  # one heartbeat every 15 s, nothing else
    for side, other in ((pair.a, pair.b), (pair.b, pair.a)):
        nonces = [p.nonce for p in side.sent_of(f.PingFrame)]
        assert nonces == list(range(1, 22))
        assert [p.nonce for p in other.sent_of(f.PongFrame)] == nonces
    assert pair.a.session.state is pair.b.session.state is State.OPEN


def test_a_silent_peer_is_closed_at_the_first_instant_past_the_idle_timeout() -> None:
    pair = open_pair(CORE, CORE)
    pair.muted.add("b")
    ticked = advance_by_deadlines(pair, 100)
    stale = math.nextafter(T0 + 45, math.inf)
    assert ticked[:4] == [T0 + 15, T0 + 30, T0 + 45, stale]
    assert len(pair.a.sent_of(f.PingFrame)) == 3
    assert pair.a.session.close_code == "timeout" and pair.a.session.next_deadline() is None
    assert pair.b.of(Closed)[-1].code == "connection_lost"


@pytest.mark.parametrize("mute", ["a", "b", "nobody-admits"])
def test_the_setup_deadline_is_exact(mute: str) -> None:
    a, b = Node(ALICE, {BOB.node_id: CORE}), Node(BOB, {ALICE.node_id: CORE})
    if mute == "nobody-admits":
        b.on_event = lambda session, event, now: None  # type: ignore[method-assign]
    pair = Pair(a, b)
    if mute != "nobody-admits":
        pair.muted.add(mute)
    pair.settle()
    ticked = advance_by_deadlines(pair, 60)
    assert ticked[0] == math.nextafter(T0 + 10, math.inf)
    assert "timeout" in (pair.a.session.close_code, pair.b.session.close_code)
    assert pair.a.session.next_deadline() is pair.b.session.next_deadline() is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    idle=st.floats(3, 120),
    heartbeat=st.floats(0.5, 150),
    setup=st.floats(0.5, 30),
    mute_after=st.one_of(st.none(), st.floats(0, 200)),
    mute=st.sampled_from(["a", "b"]),
    a_dials=st.booleans(),
)
def test_next_deadline_is_exact_whatever_the_timers(
    idle: float, heartbeat: float, setup: float, mute_after: float | None, mute: str, a_dials: bool
) -> None:
    config = SessionConfig(heartbeat_interval=heartbeat, idle_timeout=idle, handshake_timeout=setup)
    pair = open_pair(CORE, CORE, config=config, a_dials=a_dials)
    if mute_after is None:
        advance_by_deadlines(pair, 400)
    else:
        advance_by_deadlines(pair, mute_after)
        pair.muted.add(mute)
        advance_by_deadlines(pair, 400)
        assert pair.a.session.state is pair.b.session.state is State.CLOSED
    if heartbeat < idle and mute_after is None:
        assert pair.a.session.state is pair.b.session.state is State.OPEN


def test_with_idle_timeout_sets_heartbeats_to_a_third() -> None:
    config = SessionConfig(want_batch=7).with_idle_timeout(30)
    assert (config.idle_timeout, config.heartbeat_interval, config.want_batch) == (30, 10, 7)
    assert SessionConfig().with_idle_timeout(45) == SessionConfig()  # the defaults follow the rule
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(UsageError):
            SessionConfig().with_idle_timeout(bad)
    # Three pings go out before a silent peer is stale, the last at the limit itself: two may be
    # lost and the answer to the third still keeps the session.
    pair = open_pair(CORE, CORE, config=SessionConfig().with_idle_timeout(6))
    pair.muted.add("b")
    assert advance_by_deadlines(pair, 10) == [T0 + 2, T0 + 4, T0 + 6, math.nextafter(T0 + 6, math.inf)]
    assert len(pair.a.sent_of(f.PingFrame)) == 3 and pair.a.session.close_code == "timeout"


# -- the transport ends -------------------------------------------------------------------------


@pytest.mark.parametrize("state", [State.HANDSHAKE, State.AUTHENTICATED, State.OPEN])
@pytest.mark.parametrize(
    ("peer_code", "code"),
    [
        (None, "connection_lost"),
        ("blocked", "blocked"),
        ("shutdown", "shutdown"),
        ("duplicate_session", "duplicate_session"),
        ("connection_lost", "connection_lost"),
        ("", "connection_lost"),
        ("BLOCKED", "connection_lost"),
        ("blocked ", "connection_lost"),
        ("no such code", "connection_lost"),
        ("x" * 10_000, "connection_lost"),
    ],
)
def test_connection_lost_keeps_the_peers_reason_only_if_it_is_an_error_code(
    state: State, peer_code: str | None, code: str
) -> None:
    a, b = Node(ALICE, {BOB.node_id: CORE}), Node(BOB, {ALICE.node_id: CORE})
    if state is State.AUTHENTICATED:
        b.on_event = lambda session, event, now: None  # type: ignore[method-assign]
    pair = Pair(a, b)
    if state is State.HANDSHAKE:
        pair.muted.add("a")
    pair.settle()
    session = pair.b.session
    assert session.state is state
    session.connection_lost(pair.now, peer_code=peer_code)
    (closed,) = [e for e in session.events() if isinstance(e, Closed)]
    assert closed.code == code and type(closed.code) is ErrorCode and closed.by_peer
    assert session.close_code == code and session.state is State.CLOSED
    assert session.data_to_send() == [] and session.next_deadline() is None
    session.connection_lost(pair.now, peer_code="timeout")  # once closed, nothing more happens
    assert session.events() == [] and session.close_code == code


def test_a_peer_that_blocks_us_is_told_apart_from_a_dropped_link() -> None:
    pair = open_pair(CORE, BLOCKED)
    # Pair.settle() saw b close and dropped a's link without a reason; the runtime passes the
    # WebSocket close reason, which for a blocking peer is its close code.
    assert pair.a.of(Closed)[-1] == Closed("connection_lost", "the connection dropped", by_peer=True)
    x = lone_session(ALICE, Role.INITIATOR)
    x.connection_lost(T0, peer_code=pair.b.session.close_code)
    assert x.events() == [Closed("blocked", "the peer closed the connection (blocked)", by_peer=True)]


# -- the state table ------------------------------------------------------------------------------


def test_the_state_table_only_moves_forward_and_closes_from_anywhere() -> None:
    order = list(State)
    for state, moves in TRANSITIONS.items():
        for transition, target in moves.items():
            assert order.index(target) > order.index(state), (state, transition)
        assert (moves.get(Transition.CLOSE) is State.CLOSED) is (state is not State.CLOSED)
    assert set(TRANSITIONS) == set(State) and TRANSITIONS[State.CLOSED] == {}


@pytest.mark.parametrize("state", list(State))
def test_an_illegal_transition_raises(state: State) -> None:
    for transition in set(Transition) - set(TRANSITIONS[state]):
        session = lone_session(ALICE, Role.INITIATOR)
        session.state = state
        message = f"cannot {transition.value} a session in state {state.value}"
        with pytest.raises(LocalProtocolError, match=message):
            session._transition(transition)
        assert session.state is state


def test_misuse_by_the_node_raises_local_protocol_error() -> None:
    pair = open_pair(CORE, CORE)
    session = pair.a.session
    with pytest.raises(LocalProtocolError, match="admit"):
        session.admit(CORE, pair.now)  # already open
    with pytest.raises(LocalProtocolError, match="not an error code"):
        session.close("bye", "made-up code", pair.now)
    with pytest.raises(LocalProtocolError, match="not an error code"):
        session.refuse("nope", "made-up code", pair.now)
    assert session.state is State.OPEN and not pair.a.sent_of(f.ErrorFrame)
    with pytest.raises(LocalProtocolError, match="admit"):
        lone_session(ALICE, Role.INITIATOR).admit(CORE, T0)  # before the handshake
    session.close(ErrorCode.SHUTDOWN, "bye", pair.now)
    with pytest.raises(LocalProtocolError, match="not open"):
        session.query("public/x", 1, pair.now)


def test_every_transition_in_the_table_is_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[tuple[State, Transition]] = set()
    real = Session._transition

    def recording(self: Session, transition: Transition) -> None:
        seen.add((self.state, transition))
        real(self, transition)

    monkeypatch.setattr(Session, "_transition", recording)
    open_pair(CORE, CORE).a.session.close(ErrorCode.SHUTDOWN, "bye", T0)  # the whole way; open → closed
    open_pair(BLOCKED, CORE)  # authenticated → closed
    test_bad_manifest_is_fatal("expired")  # identifying → closed
    test_handshake_timeout("a")  # handshake → closed
    listed = {(state, transition) for state, moves in TRANSITIONS.items() for transition in moves}
    assert seen == listed


# -- peer input that waited for the node ----------------------------------------------------------


def test_a_bad_manifest_held_until_admit_fails_the_session_not_the_node() -> None:
    a = Node(ALICE, {BOB.node_id: CORE}, manifest=make_manifest(ALICE, issued=T0 - 7200, lifetime=3600))
    b = Node(BOB, {ALICE.node_id: CORE})
    held: list[tuple[Session, Event]] = []
    real = b.on_event
    b.on_event = lambda session, event, now: (  # type: ignore[method-assign]
        held.append((session, event)) if isinstance(event, PeerAuthenticated) else real(session, event, now)
    )
    pair = Pair(a, b).settle()
    assert pair.b.session.state is State.AUTHENTICATED  # a's expired manifest is held
    session, event = held[0]
    real(session, event, pair.now)  # admit() replays it: no exception escapes into the node
    pair.settle()
    assert [(e.code, e.fatal) for e in pair.b.of(Misbehaviour)] == [("bad_manifest", True)]
    assert pair.b.session.close_code == "bad_manifest" and not pair.b.of(PeerIdentified)
    assert pair.a.of(Closed)[-1].code == "bad_manifest"


def test_a_malformed_recon_held_until_start_sync_fails_the_frame_not_the_node() -> None:
    a, b = Node(ALICE, {BOB.node_id: CORE}), Node(BOB, {ALICE.node_id: CORE}, [make_packet(BOB, 1)])
    ready: list[SyncReady] = []

    def holding_sync_ready(node: Node) -> None:
        real = node.on_event

        def on_event(session: Session, event: Event, now: float) -> None:
            if isinstance(event, SyncReady):
                ready.append(event)
            else:
                real(session, event, now)

        node.on_event = on_event  # type: ignore[method-assign]

    holding_sync_ready(a)
    holding_sync_ready(b)
    pair = Pair(a, b).settle()
    assert len(ready) == 2  # neither node answered its SyncReady yet
    pair.a.inject(f.ReconFrame(0, bytes([0x61, 0x80])))  # a truncated varint: malformed negentropy
    assert not pair.b.of(Misbehaviour)  # held: b cannot answer before it has its set
    pair.b.session.start_sync(ItemSet([]), pair.now)
    pair.settle()
    assert pair.b.codes() == ["malformed"] and not pair.b.of(Misbehaviour)[0].fatal
    assert [e.code for e in pair.a.of(PeerReportedError)] == ["malformed"]
    assert pair.b.session.state is State.OPEN


def test_terms_changed_mid_run_reconcile_again_once_it_ends() -> None:
    pair = open_pair(CORE, CORE, [make_packet(ALICE, 1)], [make_packet(BOB, 2)])
    later = make_packet(BOB, 3)
    pair.b.node.store[later.id] = Stored(later, "local", False)
    assert pair.a.session.request_sync() is True
    pair.a.drain_events()  # a's node answers with its set: the run starts
    assert pair.a.session.syncing
    pair.a.session.set_tier(CORE, pair.now)  # fresh terms mid-run: no second run alongside
    pair.a.drain_events()
    assert len(pair.a.of(SyncReady)) == 2 and pair.a.session.syncing
    pair.settle()
    assert len(pair.a.of(SyncReady)) == 3 and len(pair.a.of(SyncCompleted)) == 3
    assert pair.a.of(SyncCompleted)[1].wanted == 1
    assert pair.a.node.ids() == pair.b.node.ids() and not pair.a.session.syncing
    assert not pair.a.of(Misbehaviour) and not pair.b.of(Misbehaviour)


# -- simultaneous dials --------------------------------------------------------------------------


@pytest.mark.parametrize("seeds", [(1, 2), (2, 1), (5, 9), (9, 5), (200, 17)])
def test_both_sides_keep_the_same_session_when_both_dial(seeds: tuple[int, int]) -> None:
    x, y = (Identity.from_seed(bytes([s]) * 32) for s in seeds)
    nx, ny = Node(x, {y.node_id: CORE}), Node(y, {x.node_id: CORE})
    x_dials = Pair(nx, ny).settle()  # connection 1
    y_dials = Pair(ny, nx).settle()  # connection 2
    sessions = {  # each node's session on each connection
        (x, 1): x_dials.a.session, (y, 1): x_dials.b.session,
        (x, 2): y_dials.b.session, (y, 2): y_dials.a.session,
    }
    for x_first in (1, 2):
        for y_first in (1, 2):
            kept = []
            for me, peer, first in ((x, y, x_first), (y, x, y_first)):
                second = 3 - first
                keep = keep_existing_session(
                    me.node_id, peer.node_id, sessions[(me, first)].role, sessions[(me, second)].role
                )
                kept.append(first if keep else second)
            assert kept[0] == kept[1], (x_first, y_first)
    # A redial over a live session in the same role keeps the live one.
    assert keep_existing_session(x.node_id, y.node_id, Role.INITIATOR, Role.INITIATOR)


# -- properties ----------------------------------------------------------------------------------


def _pool() -> list[Packet]:
    pool: list[Packet] = []
    for n in range(40):
        author = (ALICE, BOB, CAROL)[n % 3]
        depends = (pool[n - 5].id,) if n >= 5 and n % 5 == 0 else ()
        pool.append(make_packet(author, n, at_ms=T0_MS - 10_000 + (n * 7919) % 997, depends=depends))
    return pool


POOL = _pool()
_BY_ID = {p.id: n for n, p in enumerate(POOL)}


def _closed(indexes: Iterable[int]) -> set[int]:
    """Add what the chosen packets depend on, as every honest node holds."""
    todo, out = list(indexes), set()
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(_BY_ID[d] for d in POOL[n].header.depends)
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a_set=st.sets(st.integers(0, len(POOL) - 1)),
    b_set=st.sets(st.integers(0, len(POOL) - 1)),
    batch=st.integers(1, 6),
    inflight=st.integers(1, 3),
    a_dials=st.booleans(),
)
def test_core_peers_end_with_the_union(
    a_set: set[int], b_set: set[int], batch: int, inflight: int, a_dials: bool
) -> None:
    a_set, b_set = _closed(a_set), _closed(b_set)
    config = SessionConfig(want_batch=batch, max_inflight_wants=inflight)
    a_packets, b_packets = [POOL[n] for n in a_set], [POOL[n] for n in b_set]
    pair = open_pair(CORE, CORE, a_packets, b_packets, config=config, a_dials=a_dials)
    union = {POOL[n].id for n in a_set | b_set}
    assert pair.a.node.ids() == pair.b.node.ids() == union
    assert not pair.a.of(Misbehaviour) and not pair.b.of(Misbehaviour)
    assert not pair.a.session.syncing and not pair.b.session.syncing


# -- frames: round trip, limits, fuzz -----------------------------------------------------------

_id = st.binary(min_size=32, max_size=32)
_ids = st.lists(_id, max_size=12).map(tuple)
_wire = st.builds(
    f.WirePacket, st.binary(max_size=64), st.binary(min_size=64, max_size=64), st.binary(max_size=64)
)
_wires = st.lists(_wire, max_size=4).map(tuple)
FRAME_STRATEGIES: dict[type[f.Frame], st.SearchStrategy[f.Frame]] = {
    f.ManifestFrame: st.builds(f.ManifestFrame, st.binary(max_size=300)),
    f.TermsFrame: st.builds(f.TermsFrame, st.booleans(), st.booleans(), st.booleans()),
    f.ReconFrame: st.builds(f.ReconFrame, st.integers(0, 2**32), st.binary(max_size=300)),
    f.OfferFrame: st.builds(f.OfferFrame, _ids),
    f.WantFrame: st.builds(f.WantFrame, _ids),
    f.PacketsFrame: st.builds(f.PacketsFrame, _wires, st.booleans(), st.booleans()),
    f.QueryFrame: st.builds(f.QueryFrame, st.integers(0, 2**32), st.text(max_size=128), st.integers(1, 1000)),
    f.AnswerFrame: st.builds(f.AnswerFrame, st.integers(0, 2**32), _wires, st.booleans()),
    f.PingFrame: st.builds(f.PingFrame, st.integers(0, 2**64 - 1)),
    f.PongFrame: st.builds(f.PongFrame, st.integers(0, 2**64 - 1)),
    f.SyncedFrame: st.builds(f.SyncedFrame, st.integers(0, 2**63), st.integers(0, 2**63)),
    f.ErrorFrame: st.builds(f.ErrorFrame, st.text(max_size=32), st.text(max_size=256), st.booleans()),
    f.AlertFrame: st.builds(f.AlertFrame, _wire, st.integers(0, f.MAX_HOPS)),
    f.AlertIdsFrame: st.builds(f.AlertIdsFrame, st.lists(_id, max_size=20).map(tuple)),
    f.WitnessRequestFrame: st.builds(f.WitnessRequestFrame, st.binary(max_size=300)),
    f.WitnessReplyFrame: st.builds(
        f.WitnessReplyFrame, st.integers(100, 599), st.binary(max_size=300), st.binary(max_size=300)
    ),
}


def test_every_frame_type_has_a_round_trip_strategy() -> None:
    exported = {getattr(f, name) for name in f.__all__}
    frame_types = {t for t in exported if isinstance(t, type) and issubclass(t, f.Frame) and t is not f.Frame}
    assert frame_types == set(FRAME_STRATEGIES)


@settings(max_examples=300, deadline=None)
@given(st.one_of(*FRAME_STRATEGIES.values()))
def test_frames_round_trip(frame: f.Frame) -> None:
    assert f.parse_frame(frame.serialize()) == frame


def test_frame_limits() -> None:
    too_many = f.WantFrame(tuple(bytes([n % 256]) * 32 for n in range(f.MAX_IDS + 1)))
    with pytest.raises(RemoteProtocolError) as info:
        f.parse_frame(too_many.serialize())
    assert info.value.code == "malformed"
    with pytest.raises(RemoteProtocolError) as info:
        f.parse_frame(bytes(f.MAX_FRAME_PAYLOAD + 1))
    assert info.value.code == "too_large"
    with pytest.raises(RemoteProtocolError) as info:
        f.parse_frame(f.QueryFrame(1, "t", f.MAX_QUERY_LIMIT + 1).serialize())
    assert info.value.code == "malformed"
    long = f.ErrorFrame("malformed", "x" * 1000)
    assert f.parse_frame(long.serialize()) == f.ErrorFrame("malformed", "x" * f.MAX_REASON)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_parse_frame_on_arbitrary_bytes_raises_only_remote_protocol_error(data: bytes) -> None:
    try:
        frame = f.parse_frame(data)
    except RemoteProtocolError as exc:
        assert exc.code in set(ErrorCode)
    else:
        assert isinstance(frame, f.Frame)


_cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([5000, -5000]).map(lambda e: (1 if e > 0 else -1) * 10 ** abs(e))  # > 4300 digits
    | st.floats(allow_nan=True)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(
    version=st.one_of(st.just(1), _cbor_values),
    kind=st.one_of(st.sampled_from([t.TYPE for t in FRAME_STRATEGIES]), _cbor_values),
    fields=st.lists(_cbor_values, max_size=4),
)
def test_parse_frame_on_well_formed_cbor_of_any_shape(version: Any, kind: Any, fields: list[Any]) -> None:
    data = cbor2.dumps([version, kind, *fields])
    try:
        frame = f.parse_frame(data)
    except RemoteProtocolError as exc:
        assert exc.code in set(ErrorCode) and len(exc.reason) < 200
    else:
        assert f.parse_frame(frame.serialize()) == frame


class PendingAtEachRound(Session):
    """A session that notes, for each reconciliation message it sends, how many ids it wanted
    that had not arrived yet."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pending_at_recon: list[int] = []

    def _send(self, frame: f.Frame, now: float) -> None:
        if isinstance(frame, f.ReconFrame):
            self.pending_at_recon.append(self._transfer.pending)
        super()._send(frame, now)


def test_reconciliation_rounds_wait_while_many_wanted_ids_are_still_to_arrive(monkeypatch) -> None:
    from ark_lattice.protocol import reconciliation

    monkeypatch.setattr(reconciliation, "RECON_AHEAD", 40)
    theirs = [make_packet((ALICE, BOB, CAROL)[n % 3], n) for n in range(600)]
    # Small frames: each reply lists ~120 ids, so learning them all takes several rounds.
    config = SessionConfig(want_batch=8, max_inflight_wants=2, recon_frame_limit=4096)
    pair = open_pair(CORE, CORE, [], theirs, config=config, a_cls=PendingAtEachRound)
    # Everything arrives, and the run reports the same difference as ever ...
    assert pair.a.node.ids() == {p.id for p in theirs}
    assert pair.a.of(SyncCompleted) == [SyncCompleted(offered=0, wanted=600)]
    assert not pair.a.of(Misbehaviour) and not pair.b.of(Misbehaviour)
    # ... but each round after the first went out only once fewer than RECON_AHEAD were pending.
    session = pair.a.session
    assert isinstance(session, PendingAtEachRound)
    rounds = session.pending_at_recon
    assert len(rounds) > 3 and max(rounds[1:]) < 40
    assert not session._recon.running and session._recon.resume(0) is None
