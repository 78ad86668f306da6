"""The alert flood across many coordinators (DESIGN §10), on a virtual network and clock.

:class:`Mesh` plays the driver for up to a dozen coordinators, each with a core link to each of its
neighbours in a graph. It carries out their actions as the node runtime would (runtime/effects.py):
a ``SendAlert`` on one node becomes, after a random delay, an ``AlertReceived`` session event on the
matching link of the neighbour; ``SendAlertIds`` becomes ``AlertIdsReceived``; a ``Want`` becomes
the peer's ``PacketsWanted``, whose ``LoadWanted`` is answered from the peer's store and whose
``SendPackets`` arrive as ``PacketsReceived``; an ``Ingest`` is stored (each node's store is a dict)
and reported with ``ingested``; ``RaiseAlert`` is signed and stored, then ``alert_raised``; ``Close``
ends the link on both sides; ``WakeAt`` is honoured from a heap of timers. A session delivers in
order (duplicates allowed) until its connection is cut: then what was on its way is lost and the two
nodes connect again with a new session. Messages on different links overtake each other.
Reconciliation (``RequestSync``) is not carried out, so whatever is repaired is repaired by the
flood's own backstop.

The properties (the issue's "how it is judged"): every node connected to the author through core
links, not counting the accused, stores the alert once the backstop has run; none forwards an id
twice with the same hop count on a link, back to a peer that flooded it that id, to the author or to
the accused; no other node ever gets it. Hand-driven tests at the end pin down single decisions.
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

from ark_lattice.alerts import Alert, alert_packet
from ark_lattice.hlc import pack
from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest, SignedManifest
from ark_lattice.packet import Packet
from ark_lattice.policy import Policy
from ark_lattice.policy.gate import PolicyGate
from ark_lattice.protocol.actions import (
    Action,
    Admit,
    Audit,
    Close,
    Ingest,
    Isolate,
    LinkId,
    LoadWanted,
    RaiseAlert,
    ReadDialTargets,
    Reconcile,
    RecordManifest,
    RecordPeer,
    RecordQuarantine,
    RequestSync,
    SendAlert,
    SendAlertIds,
    SendPackets,
    SetTier,
    Strike,
    WakeAt,
    Want,
)
from ark_lattice.protocol.coordinator import ALERT_DIGEST_SECONDS, ALERT_HOPS, Coordinator
from ark_lattice.protocol.events import (
    AlertIdsReceived,
    AlertReceived,
    Closed,
    Event,
    PacketsReceived,
    PacketsWanted,
    PeerAuthenticated,
    PeerIdentified,
    SyncReady,
)
from ark_lattice.protocol.gossip import RECENT_SECONDS
from ark_lattice.protocol.session import Role
from ark_lattice.protocol.witnessing import RequestCosignature
from ark_lattice.store.store import StoredPacket
from ark_lattice.terms import terms_for
from ark_lattice.tiers import TrustTier

CORE, SANDBOX = TrustTier.CORE, TrustTier.SANDBOX
FEDERATION = bytes(32)
T0 = 1_700_000_000.0
MAX_NODES = 12
IDENTITIES = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(MAX_NODES)]
DELAY = (0.001, 0.05)  # seconds a message spends on a link
DEFAULT_POLICY = Policy.default()


def make_manifest(identity: Identity) -> SignedManifest:
    return PeerManifest(
        identity.node_id, "flood", 1, int(T0) - 60, int(T0) + 86_400, ("ws://x:1",), ("sync/1",)
    ).sign(identity)


MANIFESTS = [make_manifest(identity) for identity in IDENTITIES]


def pid(index: int) -> str:
    return str(IDENTITIES[index].node_id)


# -- the harness ---------------------------------------------------------------------------------


@dataclass
class Node:
    index: int
    core: Coordinator
    link_to: dict[int, LinkId] = field(default_factory=dict)  # neighbour -> our link to it
    peer_of: dict[LinkId, int] = field(default_factory=dict)
    live: set[LinkId] = field(default_factory=set)  # links whose session has not closed
    stored: dict[bytes, Packet] = field(default_factory=dict)  # the store
    stored_at: dict[bytes, float] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)  # peers an Isolate set to blocked in the store
    flooded_from: dict[bytes, set[int]] = field(default_factory=dict)  # id -> who flooded us a copy
    flooded_hops: dict[tuple[bytes, int], int] = field(default_factory=dict)  # (id, peer) -> most hops
    sent: dict[tuple[bytes, int], list[int]] = field(default_factory=dict)  # (id, to) -> hops
    wants: list[tuple[float, int, tuple[bytes, ...]]] = field(default_factory=list)
    digests: list[float] = field(default_factory=list)  # when we sent a digest
    listed: dict[tuple[int, int, bytes], int] = field(default_factory=dict)  # (to, session, id) -> times
    strikes: list[Strike] = field(default_factory=list)
    quarantines: list[RecordQuarantine] = field(default_factory=list)
    audits: list[Any] = field(default_factory=list)  # policy decisions, for the ledger
    wake_at: float | None = None
    clock: int = 0  # the logical part of the HLC times of our alerts


class Mesh:
    """Coordinators on the nodes of a graph, every link core, driven on a virtual clock.

    A session is a reliable, ordered stream (a WebSocket over TCP): what one side sends on it
    arrives in order, once (twice with probability ``duplicate``), unless the connection dies.
    ``cut`` is the probability that a connection dies as a message is sent on it: that message
    and all still on their way are lost, both sides see the link end, and the two nodes connect
    again after a moment with a new session. Messages on different links overtake each other.
    """

    def __init__(
        self,
        nodes: int,
        edges: Iterable[tuple[int, int]],
        *,
        seed: int = 0,
        cut: float = 0.0,
        duplicate: float = 0.0,
        hops: int = ALERT_HOPS,
        gates: bool = False,
        delays: dict[tuple[int, int], float] | None = None,
    ) -> None:
        """``delays``: fixed seconds per (from, to), 0.01 for the rest, instead of random ones."""
        assert 1 <= nodes <= MAX_NODES
        self.now = T0
        self.rng = random.Random(seed)
        self.cut, self.duplicate, self.hops, self.delays = cut, duplicate, hops, delays
        self.edges = sorted({(min(u, v), max(u, v)) for u, v in edges if u != v})
        self.session: dict[tuple[int, int], int] = {}  # the number of the edge's current session
        self.down: set[tuple[int, int]] = set()  # cut, to be connected again
        self.closed: set[tuple[int, int]] = set()  # closed for good (a quarantine)
        self.cuts = 0
        self.authored: dict[bytes, tuple[int, Alert]] = {}  # alert id -> (author, alert)
        self.messages = 0  # SendAlert actions, all nodes
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._last: dict[tuple[int, int], float] = {}  # (from, to) -> arrival of the last message
        self.nodes = [
            Node(
                i,
                Coordinator(
                    IDENTITIES[i], FEDERATION, MANIFESTS[i], random.Random(seed * 1000 + i),
                    gate=PolicyGate(DEFAULT_POLICY, pid(i)) if gates else None, alert_hops=hops,
                ),
            )
            for i in range(nodes)
        ]
        for node in self.nodes:
            self.run(node, node.core.start(self.now))
        for u, v in self.edges:
            self._connect(u, v)

    # -- the network ----------------------------------------------------------------------------

    def _connect(self, u: int, v: int) -> None:
        """A session between u (initiator) and v, authenticated, admitted as core and identified."""
        edge = self._edge(u, v)
        self.session[edge] = self.session.get(edge, 0) + 1
        for me, other, role in ((u, v, Role.INITIATOR), (v, u, Role.RESPONDER)):
            node = self.nodes[me]
            link, _session = node.core.open_link(role, f"10.0.0.{other}:4000", self.now)
            node.link_to[other], node.peer_of[link] = link, other
            node.live.add(link)
            peer = IDENTITIES[other].node_id
            self.run(node, node.core.session_events(link, [PeerAuthenticated(peer)], self.now))
            self.run(node, node.core.session_events(link, [PeerIdentified(peer, MANIFESTS[other])], self.now))
            # Both sides' terms are in: packets and alerts may flow (the session says SyncReady).
            self.run(node, node.core.session_events(link, [SyncReady(True, True)], self.now))

    def _edge(self, u: int, v: int) -> tuple[int, int]:
        return (min(u, v), max(u, v))

    def _transmit(self, node: Node, link: LinkId, event: Event) -> None:
        """Send on the link's session what becomes ``event`` on the other side: in order after the
        earlier ones, unless the connection dies now."""
        to = node.peer_of[link]
        edge = self._edge(node.index, to)
        if link not in node.live or node.link_to[to] != link or edge in self.down or edge in self.closed:
            return  # the session is gone: the driver has nowhere to write
        if self.rng.random() < self.cut:
            self._cut(edge)
            return
        session = self.session[edge]
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            if self.delays is None:
                delay = self.rng.uniform(*DELAY)
            else:
                delay = self.delays.get((node.index, to), 0.01)
            at = self._last[(node.index, to)] = max(self.now + delay, self._last.get((node.index, to), T0))
            self._at(at, functools.partial(self._arrive, node.index, to, session, event))

    def _arrive(self, frm: int, to: int, session: int, event: Event) -> None:
        edge = self._edge(frm, to)
        if self.session[edge] != session or edge in self.down or edge in self.closed:
            return  # the connection ended while it was on its way
        node = self.nodes[to]
        if isinstance(event, AlertReceived):
            assert to != self.authored[event.packet.id][0], "an alert came back to its author"
            node.flooded_from.setdefault(event.packet.id, set()).add(frm)
            key = (event.packet.id, frm)
            node.flooded_hops[key] = max(event.hops, node.flooded_hops.get(key, -1))
        self.run(node, node.core.session_events(node.link_to[frm], [event], self.now))

    def _cut(self, edge: tuple[int, int]) -> None:
        """The connection dies: both sides lose the link now, and dial again in a moment."""
        self.down.add(edge)
        self.cuts += 1
        u, v = edge
        for me, other in ((u, v), (v, u)):
            self._at(self.now, functools.partial(self._lost, self.nodes[me], self.nodes[me].link_to[other]))
        self._at(self.now + self.rng.uniform(0.2, 2.0), functools.partial(self._redial, edge))

    def _lost(self, node: Node, link: LinkId) -> None:
        if link in node.live:
            node.live.discard(link)
            self.run(node, node.core.link_ended(link, self.now))

    def _redial(self, edge: tuple[int, int]) -> None:
        u, v = edge
        if edge in self.closed or u in self.nodes[v].blocked or v in self.nodes[u].blocked:
            return
        self.down.discard(edge)
        self._connect(u, v)

    def _at(self, at: float, fire: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), fire))

    def _wake(self, node: Node, at: float) -> None:
        node.wake_at = at  # a later WakeAt replaces the earlier one
        self._at(at, functools.partial(self._fire_wake, node, at))

    def _fire_wake(self, node: Node, at: float) -> None:
        if node.wake_at != at:
            return
        node.wake_at = None
        self.run(node, node.core.wake(self.now))

    def _end(self, node: Node, link: LinkId, event: Closed) -> list[Action]:
        if link not in node.live:
            return []
        node.live.discard(link)
        return node.core.session_events(link, [event], self.now) + node.core.link_ended(link, self.now)

    def run_until(self, end: float, done: Callable[[], bool] | None = None) -> None:
        """Deliver messages and fire timers in time order up to ``end``, or until ``done()``."""
        while self._queue and self._queue[0][0] <= end:
            at, _seq, fire = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            fire()
            if done is not None and done():
                return
        self.now = max(self.now, end)

    # -- the driver -----------------------------------------------------------------------------

    def tier_table(self, node: Node) -> list[tuple[str, TrustTier, Sequence[str]]]:
        """What the store answers ReadDialTargets with: every other node is core (no URLs to dial)."""
        return [
            (pid(i), TrustTier.BLOCKED if i in node.blocked else CORE, ())
            for i in range(len(self.nodes)) if i != node.index
        ]

    def run(self, node: Node, actions: Iterable[Action]) -> None:
        """Carry out one node's actions in order, and the actions their answers bring."""
        core, now = node.core, self.now
        pending: deque[Action] = deque(actions)
        while pending:
            action = pending.popleft()
            if isinstance(action, WakeAt):
                self._wake(node, action.at)
            elif isinstance(action, ReadDialTargets):
                pending.extend(core.dial_targets_read([], self.tier_table(node), now))
            elif isinstance(action, RecordPeer):
                pending.extend(core.peer_recorded(action.link, CORE, None, 0, now))
            elif isinstance(action, SendAlert):
                self._flood(node, action)
            elif isinstance(action, SendAlertIds):
                node.digests.append(now)
                to = node.peer_of[action.link]
                session = self.session[self._edge(node.index, to)]
                for alert_id in action.ids:
                    key = (to, session, alert_id)
                    node.listed[key] = node.listed.get(key, 0) + 1
                self._transmit(node, action.link, AlertIdsReceived(action.ids))
            elif isinstance(action, Want):
                node.wants.append((now, node.peer_of[action.link], action.ids))
                self._transmit(node, action.link, PacketsWanted(action.ids))
            elif isinstance(action, LoadWanted):
                held = [StoredPacket(node.stored[i], "peer", int(now * 1000), False)
                        for i in action.ids if i in node.stored]
                pending.extend(core.wanted_loaded(action.link, held))
            elif isinstance(action, SendPackets):
                if action.packets:
                    self._transmit(node, action.link, PacketsReceived(action.packets, False, live=False))
            elif isinstance(action, Ingest):
                new = [p for p in action.packets if p.id not in node.stored]
                for packet in new:
                    node.stored[packet.id], node.stored_at[packet.id] = packet, now
                pending.extend(core.ingested(action.link, new, action.quarantine, set(), now))
            elif isinstance(action, RaiseAlert):
                node.clock += 1
                created_at = pack(int(now * 1000), node.clock)
                packet = alert_packet(core.identity, action.alert, created_at=created_at, topic=action.topic)
                node.stored[packet.id], node.stored_at[packet.id] = packet, now
                self.authored[packet.id] = (node.index, action.alert)
                pending.extend(core.alert_raised(packet, now))
            elif isinstance(action, Close):
                other = node.peer_of[action.link]
                edge = self._edge(node.index, other)
                self.closed.add(edge)  # a quarantine: neither side dials the other again here
                pending.extend(self._end(node, action.link, Closed(action.code, action.reason, False)))
                far = self.nodes[other]
                closed = Closed(action.code, action.reason, True)
                far_end = functools.partial(self._far_end, far, far.link_to[node.index], closed)
                self._at(now + DELAY[1], far_end)
            elif isinstance(action, Strike):
                node.strikes.append(action)
            elif isinstance(action, RecordQuarantine):
                node.quarantines.append(action)
            elif isinstance(action, Isolate):
                node.blocked.add(next(i for i in range(len(self.nodes)) if pid(i) == action.peer))
            elif isinstance(action, Audit):
                node.audits.extend(action.records)
            elif isinstance(
                action, Admit | RecordManifest | SetTier | RequestSync | Reconcile | RequestCosignature
            ):
                pass  # the session's business, the ledger's, reconciliation or witnessing (not modelled)
            else:
                raise AssertionError(f"node {node.index}: unexpected action {action!r}")

    def _far_end(self, node: Node, link: LinkId, event: Closed) -> None:
        self.run(node, self._end(node, link, event))

    def _flood(self, node: Node, action: SendAlert) -> None:
        """A SendAlert, checked against the flood's rules before it goes."""
        to = node.peer_of[action.link]
        alert_id = action.packet.id
        author, alert = self.authored[alert_id]
        previous = node.sent.setdefault((alert_id, to), [])
        where = f"node {node.index} -> {to}, hops {action.hops}, before {previous}"
        assert action.hops not in previous, f"the same id twice with the same hop count: {where}"
        assert all(action.hops > h for h in previous), f"a copy with no more hops than before: {where}"
        # Back to a peer that sent us a copy only if ours lets it forward further than its own did:
        # a peer re-forwards only a copy with more hops left than it forwarded with.
        theirs = node.flooded_hops.get((alert_id, to))
        assert theirs is None or action.hops - 1 > theirs, f"back to a peer that sent as good a copy: {where}"
        assert to != author, f"back to the author: {where}"
        assert alert.about is None or pid(to) != alert.about, f"to the accused: {where}"
        assert 0 <= action.hops <= self.hops, where
        previous.append(action.hops)
        self.messages += 1
        self._transmit(node, action.link, AlertReceived(action.packet, action.hops, quarantine=False))

    # -- the operator ---------------------------------------------------------------------------

    def raise_alert(
        self, author: int, severity: str = "warning", message: str = "trouble", *,
        about: int | None = None, evidence: bytes | None = None,
    ) -> bytes:
        node = self.nodes[author]
        before = set(self.authored)
        accused = pid(about) if about is not None else None
        actions = node.core.raise_alert(severity, message, about=accused, evidence=evidence, now=self.now)
        self.run(node, actions)
        (alert_id,) = set(self.authored) - before
        return alert_id

    def holders(self, alert_id: bytes) -> set[int]:
        return {node.index for node in self.nodes if alert_id in node.stored}


def reachable(
    nodes: int, edges: Iterable[tuple[int, int]], start: int, *, without: int | None = None
) -> set[int]:
    """The nodes connected to ``start`` in the graph, ``without`` one node (and its links)."""
    neighbours: dict[int, set[int]] = {i: set() for i in range(nodes)}
    for u, v in edges:
        if u != v and without not in (u, v):
            neighbours[u].add(v)
            neighbours[v].add(u)
    seen, todo = {start}, [start]
    while todo:
        for nxt in neighbours[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def distances(nodes: int, edges: Iterable[tuple[int, int]], start: int) -> dict[int, int]:
    neighbours: dict[int, set[int]] = {i: set() for i in range(nodes)}
    for u, v in edges:
        neighbours[u].add(v)
        neighbours[v].add(u)
    dist, frontier = {start: 0}, [start]
    while frontier:
        nxt = []
        for u in frontier:
            for v in sorted(neighbours[u]):
                if v not in dist:
                    dist[v] = dist[u] + 1
                    nxt.append(v)
        frontier = nxt
    return dist


def diameter(nodes: int, edges: Sequence[tuple[int, int]]) -> int:
    return max(max(distances(nodes, edges, s).values()) for s in range(nodes))


def line(n: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(n - 1)]


def ring(n: int) -> list[tuple[int, int]]:
    return [*line(n), (n - 1, 0)]


# -- graphs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    nodes: int
    edges: tuple[tuple[int, int], ...]
    authors: tuple[int, ...]  # one alert each, raised a little apart
    accused: int | None  # only with a single alert: whom it accuses
    cut: float  # the chance a message's connection dies as it is sent
    duplicate: float
    gates: bool
    seed: int


@st.composite
def graphs(draw: st.DrawFn, *, connected: bool | None = None) -> tuple[int, list[tuple[int, int]]]:
    nodes = draw(st.integers(2, MAX_NODES))
    if connected is None:
        connected = draw(st.booleans())
    edges: set[tuple[int, int]] = set()
    if connected:  # a random spanning tree first
        for i in range(1, nodes):
            edges.add((draw(st.integers(0, i - 1)), i))
    pairs = [(a, b) for a in range(nodes) for b in range(a + 1, nodes)]
    edges.update(draw(st.lists(st.sampled_from(pairs), max_size=2 * nodes)))
    return nodes, sorted(edges)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    nodes, edges = draw(graphs())
    authors = tuple(draw(st.lists(st.integers(0, nodes - 1), min_size=1, max_size=3)))
    accused = None
    if len(authors) == 1 and draw(st.booleans()):
        accused = (authors[0] + draw(st.integers(1, nodes - 1))) % nodes
    return Scenario(
        nodes,
        tuple(edges),
        authors,
        accused,
        cut=draw(st.sampled_from([0.0, 0.02, 0.1])),
        duplicate=draw(st.sampled_from([0.0, 0.2])),
        gates=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


# How long the backstop is given: each node lists an alert for RECENT_SECONDS after it first had it,
# so a repair that goes on hop by hop finishes within the window of the node before (about a
# second a hop: a node lists what its sessions did not carry a second after it had it).
BACKSTOP = 2 * RECENT_SECONDS

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the properties ------------------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_every_node_connected_to_the_author_gets_the_alert_and_no_copy_goes_twice(s: Scenario) -> None:
    """(a) every node connected to the author through core links (the accused and its links left
    out) stores the alert within the backstop's window; (b) the flood's rules hold for every
    SendAlert (checked as each one is sent, see Mesh._flood); (c) no other node ever gets it."""
    mesh = Mesh(s.nodes, s.edges, seed=s.seed, cut=s.cut, duplicate=s.duplicate, gates=s.gates)
    mesh.run_until(T0 + 1)
    ids: dict[bytes, int] = {}
    for i, author in enumerate(s.authors):
        mesh.run_until(T0 + 1 + 0.02 * i)
        severity = "critical" if s.accused is not None else ("info", "warning", "critical")[i % 3]
        ids[mesh.raise_alert(author, severity, f"alert {i}", about=s.accused)] = author
    expected = {
        alert_id: reachable(s.nodes, s.edges, author, without=s.accused) for alert_id, author in ids.items()
    }

    def everywhere() -> bool:
        return all(expected[a] <= mesh.holders(a) for a in ids)

    raised = mesh.now
    mesh.run_until(raised + BACKSTOP, everywhere)
    mesh.run_until(mesh.now + 5)  # what was still on its way lands
    for alert_id, author in ids.items():
        holders = mesh.holders(alert_id)
        assert holders == expected[alert_id], (
            f"alert of {author}: missing at {sorted(expected[alert_id] - holders)}, "
            f"leaked to {sorted(holders - expected[alert_id])}"
        )
    for node in mesh.nodes:
        assert node.strikes == []  # honest nodes, valid alerts, under the rate limit
    if s.accused is not None:
        accusers = expected[next(iter(ids))]
        for node in mesh.nodes:
            held = {q.peer for q in node.quarantines}
            assert held == ({pid(s.accused)} if node.index in accusers else set())


@PROPERTY
@given(graphs(connected=True), st.data())
def test_without_loss_a_hop_limit_of_the_diameter_lets_the_flood_alone_reach_everyone(
    graph: tuple[int, list[tuple[int, int]]], data: st.DataObject
) -> None:
    """No message lost, any order, duplicates: the flood reaches every node before the first
    digest, and no node ever has to want the alert."""
    nodes, edges = graph
    author = data.draw(st.integers(0, nodes - 1), label="author")
    hops = max(1, diameter(nodes, edges))
    duplicate = data.draw(st.sampled_from([0.0, 0.3]), label="duplicate")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    mesh = Mesh(nodes, edges, seed=seed, duplicate=duplicate, hops=hops)
    mesh.run_until(T0 + 1)
    alert_id = mesh.raise_alert(author)
    raised = mesh.now
    mesh.run_until(raised + 0.9)  # before any digest could be due (ALERT_DIGEST_SECONDS after)
    assert mesh.holders(alert_id) == set(range(nodes))
    assert all(node.wants == [] and node.digests == [] for node in mesh.nodes)
    mesh.run_until(raised + 40)  # digests run now; nobody misses anything
    assert all(node.wants == [] for node in mesh.nodes)


def test_without_loss_the_flood_reaches_exactly_the_hop_limit_plus_one() -> None:
    """Hop counts as the flood spends them: the author's copies carry the limit, each node sends
    one fewer than it got, a copy that arrives with none left stops there."""
    mesh = Mesh(7, line(7), hops=3)
    mesh.run_until(T0 + 1)
    alert_id = mesh.raise_alert(0)
    mesh.run_until(mesh.now + 0.9)
    assert mesh.holders(alert_id) == {0, 1, 2, 3, 4}
    assert [mesh.nodes[i].sent.get((alert_id, i + 1)) for i in range(6)] == [[3], [2], [1], [0], None, None]


@pytest.mark.parametrize("nodes", [8, 12])
def test_a_line_longer_than_the_hop_limit_is_completed_by_the_backstop(nodes: int) -> None:
    mesh = Mesh(nodes, line(nodes), hops=3)
    mesh.run_until(T0 + 1)
    alert_id = mesh.raise_alert(0)
    raised = mesh.now
    mesh.run_until(raised + 0.9)
    assert mesh.holders(alert_id) == {0, 1, 2, 3, 4}  # the flood: 3 hops left, then 2, 1, 0
    mesh.run_until(raised + BACKSTOP, lambda: len(mesh.holders(alert_id)) == nodes)
    assert mesh.holders(alert_id) == set(range(nodes))
    for i in range(1, nodes):
        node = mesh.nodes[i]
        by_flood = i <= 4
        assert bool(node.flooded_from.get(alert_id)) is by_flood
        assert [(peer, ids) for _at, peer, ids in node.wants] == ([] if by_flood else [(i - 1, (alert_id,))])
        if not by_flood:  # each one stored what it wanted from the node before it
            assert node.stored_at[alert_id] > mesh.nodes[i - 1].stored_at[alert_id]
    assert mesh.messages == 4  # the backstop repairs; it never floods


@pytest.mark.parametrize("cut", [0.05, 0.1])
def test_a_ring_of_failing_links_with_real_policy_gets_every_alert_judged_once_per_node(cut: float) -> None:
    """Five alerts from five authors on a ring of ten nodes, each node with the default policy
    (its alert-author limit of 5 a minute, burst 10, is never reached)."""
    mesh = Mesh(10, ring(10), seed=7, cut=cut, duplicate=0.1, gates=True)
    mesh.run_until(T0 + 1)
    ids = [mesh.raise_alert(author, "info", f"note {author}") for author in (0, 2, 4, 6, 8)]
    mesh.run_until(mesh.now + BACKSTOP, lambda: all(len(mesh.holders(a)) == 10 for a in ids))
    assert [len(mesh.holders(a)) for a in ids] == [10] * 5
    for node in mesh.nodes:
        assert node.strikes == []
        judged = sorted(r["subject"] for r in node.audits if r["hook"] == "alert")
        assert judged == sorted(a.hex() for a in ids)  # one policy decision per alert, not per copy
        assert set(node.listed.values()) <= {1}  # a session is told of an alert once at most
    assert mesh.cuts > 0


def test_an_accused_peer_is_never_sent_the_alert_and_is_cut_off_by_each_node_that_gets_it() -> None:
    """A star around node 0 plus a chord: 1 accuses 0 (critical, no proof). Node 0 is the hub, so
    everyone else hears of it only through the chord 1 - 2 - 3 ... and through the backstop."""
    edges = [(0, i) for i in range(1, 6)] + [(1, 2), (2, 3), (3, 4)]
    mesh = Mesh(6, edges, seed=3)
    mesh.run_until(T0 + 1)
    alert_id = mesh.raise_alert(1, "critical", "it equivocates", about=0)
    mesh.run_until(mesh.now + BACKSTOP)
    assert mesh.holders(alert_id) == {1, 2, 3, 4}  # 5 hangs off the accused only
    for i in (1, 2, 3, 4):
        assert [q.peer for q in mesh.nodes[i].quarantines] == [pid(0)]
        assert mesh.nodes[i].link_to[0] not in mesh.nodes[i].live
    assert mesh.nodes[5].quarantines == [] and mesh.nodes[5].link_to[0] in mesh.nodes[5].live


# Node 4 is 4 hops from the author 0 (0-1-2-3-4), within reach of a hop limit of 3. The side path
# 0-5-6-2 brings node 2 a copy with 1 hop left; node 2 floods it on with 0 to 1 and 3.
STARVED = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 2)]


def test_the_flood_reaches_the_hop_limit_plus_one_when_the_short_path_is_fast() -> None:
    fast = Mesh(7, STARVED, hops=3)
    fast.run_until(T0 + 1)
    alert_id = fast.raise_alert(0)
    fast.run_until(fast.now + 0.9)
    assert fast.holders(alert_id) == set(range(7))
    assert fast.nodes[4].flooded_from[alert_id] == {3}


def test_the_flood_reaches_the_hop_limit_plus_one_whatever_the_order_of_the_copies() -> None:
    slow = Mesh(7, STARVED, hops=3, delays={(0, 1): 0.05})  # 0-5-6-2-1 is faster than 0-1
    slow.run_until(T0 + 1)
    alert_id = slow.raise_alert(0)
    slow.run_until(slow.now + 0.9)
    assert slow.nodes[1].flooded_from[alert_id] == {0, 2}  # the weak copy came first
    assert slow.holders(alert_id) == set(range(7))


# -- the backstop's timing -----------------------------------------------------------------------


def lone_alert(path: str) -> tuple[Coordinator, list[Action], float]:
    """Node 1 of a line 0 - 1 - 2, with nothing recent and its next wake-up far off, gets its first
    alert from node 0 by ``path`` in a way that leaves its link to node 2 without it: a flooded
    copy with no hops left, or the backstop's answer to node 0's digest. Returns node 1's
    coordinator, the actions of that moment, and the moment."""
    mesh = Mesh(3, line(3))
    mesh.run_until(T0 + 1)
    node = mesh.nodes[1]
    assert node.wake_at is not None and node.wake_at - mesh.now > 2 * ALERT_DIGEST_SECONDS
    now, core, link = mesh.now, node.core, node.link_to[0]
    alert = Alert("warning", "trouble", None, bytes(16), None)
    packet = alert_packet(IDENTITIES[0], alert, created_at=pack(int(now * 1000), 1))
    if path == "flooded at the limit":
        actions = core.session_events(link, [AlertReceived(packet, 0, quarantine=False)], now)
        assert not any(isinstance(a, SendAlert) for a in actions)
    else:
        assert path == "backstop"
        actions = core.session_events(link, [AlertIdsReceived((packet.id,))], now)
        assert actions == [Want(link, (packet.id,))]
        actions = []
    return core, actions + core.ingested(link, [packet], False, set(), now), now


@pytest.mark.parametrize("path", ["flooded at the limit", "backstop"])
def test_a_node_with_a_digest_to_send_asks_to_be_woken_for_it(path: str) -> None:
    core, actions, now = lone_alert(path)
    wakes = [a.at for a in actions if isinstance(a, WakeAt)]
    due = core.wake(now + ALERT_DIGEST_SECONDS)  # the digest is due then: node 2 lacks the alert
    assert [a.ids for a in due if isinstance(a, SendAlertIds)] == [tuple(core.flood.recent(now))]
    assert wakes and min(wakes) <= now + ALERT_DIGEST_SECONDS  # but nobody asked to be woken


def test_the_backstop_repairs_a_line_at_about_a_hop_per_digest_period() -> None:
    mesh = Mesh(8, line(8), hops=0)  # the flood reaches node 1 only; the rest is the backstop's
    mesh.run_until(T0 + 1)
    alert_id = mesh.raise_alert(0)
    raised = mesh.now
    per_hop = ALERT_DIGEST_SECONDS + 3 * DELAY[1]  # a digest period, then ids, want, packet
    mesh.run_until(raised + 7 * per_hop + 1)
    assert mesh.holders(alert_id) == set(range(8))


# -- single decisions, by hand -------------------------------------------------------------------


class Hand:
    """One coordinator (node 0) with core links to nodes 1.. and the driver's answers done by hand."""

    def __init__(
        self, peers: Sequence[int], *, gates: bool = False, tiers: dict[int, TrustTier] | None = None
    ) -> None:
        gate = PolicyGate(DEFAULT_POLICY, pid(0)) if gates else None
        self.core = Coordinator(IDENTITIES[0], FEDERATION, MANIFESTS[0], random.Random(0), gate=gate)
        table = [(pid(i), CORE, ()) for i in range(1, MAX_NODES)]
        self.core.start(T0)
        self.core.dial_targets_read([], table, T0)
        self.links: dict[int, LinkId] = {}
        for peer in peers:
            tier = (tiers or {}).get(peer, CORE)
            link, _session = self.core.open_link(Role.INITIATOR, f"10.0.0.{peer}:4000", T0)
            node_id = IDENTITIES[peer].node_id
            (record,) = self.core.session_events(link, [PeerAuthenticated(node_id)], T0)
            assert isinstance(record, RecordPeer)
            self.core.peer_recorded(link, tier, None, 0, T0)
            self.core.session_events(link, [PeerIdentified(node_id, MANIFESTS[peer])], T0)
            sends = terms_for(tier).sends and tier is not TrustTier.BLOCKED
            if sends or terms_for(tier).accepts:
                self.core.session_events(link, [SyncReady(sends, terms_for(tier).accepts)], T0)
            self.links[peer] = link
        self.peer_of = {link: peer for peer, link in self.links.items()}

    def flooded(
        self, peer: int, packet: Packet, hops: int, now: float, *, quarantine: bool = False
    ) -> list[Action]:
        return self.core.session_events(self.links[peer], [AlertReceived(packet, hops, quarantine)], now)

    def sends(self, actions: Iterable[Action]) -> list[tuple[int, int]]:
        return sorted((self.peer_of[a.link], a.hops) for a in actions if isinstance(a, SendAlert))


def signed(author: int, n: int, *, about: int | None = None, severity: str = "warning") -> Packet:
    accused = pid(about) if about is not None else None
    alert = Alert(severity, f"alert {n}", accused, n.to_bytes(16, "big"), None)
    return alert_packet(IDENTITIES[author], alert, created_at=pack(int(T0 * 1000) + n, 0))


def test_by_hand_a_first_copy_is_stored_and_forwarded_to_every_other_core_peer_but_the_author() -> None:
    hand = Hand([1, 2, 3, 4])
    packet = signed(1, 1)
    actions = hand.flooded(2, packet, 3, T0 + 1)
    assert [a for a in actions if isinstance(a, Ingest)] == [Ingest(hand.links[2], pid(2), (packet,), False)]
    assert hand.sends(actions) == [(3, 2), (4, 2)]  # not 2 (sent it), not 1 (the author)
    assert hand.sends(hand.flooded(3, packet, 3, T0 + 1)) == []  # as many hops: dropped
    later = hand.flooded(4, packet, 4, T0 + 1)  # more hops left: on again, but not to 2, 3 or 4
    assert hand.sends(later) == []
    assert [a for a in later if isinstance(a, Ingest)] == []


def test_by_hand_a_later_copy_with_more_hops_goes_to_those_that_have_not_sent_one() -> None:
    hand = Hand([1, 2, 3, 4, 5])
    packet = signed(1, 2)
    assert hand.sends(hand.flooded(2, packet, 1, T0 + 1)) == [(3, 0), (4, 0), (5, 0)]
    assert hand.sends(hand.flooded(3, packet, 0, T0 + 1)) == []
    # 2 and 4 sent as good a copy as ours would be, 1 wrote it; 3's had no hops left, ours has one
    # more for it: 3 forwards a copy only with more hops than it forwarded with.
    assert hand.sends(hand.flooded(4, packet, 3, T0 + 1)) == [(3, 2), (5, 2)]


def test_by_hand_a_better_copy_goes_to_a_peer_that_sent_us_a_weaker_one() -> None:
    hand = Hand([1, 2, 3])
    packet = signed(1, 7)
    assert hand.sends(hand.flooded(2, packet, 0, T0 + 1)) == []  # 2 forwarded it with 0 hops left
    # Ours has 2 left: 2 would forward it once more (1 > 0), so it gets it despite having sent it.
    assert hand.sends(hand.flooded(1, packet, 3, T0 + 1.01)) == [(2, 2), (3, 2)]
    # A copy that would give a sender no more than it had is useless to it: not sent.
    hand2 = Hand([1, 2, 3])
    assert hand2.sends(hand2.flooded(2, packet, 1, T0 + 1)) == [(3, 0)]
    assert hand2.sends(hand2.flooded(1, packet, 3, T0 + 1.01)) == [(3, 2)]


def test_by_hand_a_digest_wants_only_what_we_lack_and_backstop_copies_are_not_flooded() -> None:
    hand = Hand([1, 2, 3])
    known, unknown = signed(1, 3), signed(1, 4)
    hand.flooded(2, known, 3, T0 + 1)
    assert hand.core.session_events(hand.links[3], [AlertIdsReceived((unknown.id, known.id))], T0 + 2) == [
        Want(hand.links[3], (unknown.id,))
    ]
    actions = hand.core.ingested(hand.links[3], [unknown], False, set(), T0 + 2)
    assert hand.sends(actions) == []
    # The backstop tells each core peer, once a session, what the session has not carried either
    # way and it is not known to hold: peer 1 nothing (it wrote both), peer 2 the one it did not
    # flood us, peer 3 nothing (it listed both to us).
    told: dict[int, list[bytes]] = {p: [] for p in (1, 2, 3)}
    for now in (T0 + 40, T0 + 41, T0 + 42):
        for action in hand.core.wake(now):
            if isinstance(action, SendAlertIds):
                told[hand.peer_of[action.link]] += action.ids
    assert told == {1: [], 2: [unknown.id], 3: []}


def test_by_hand_an_alert_from_a_sandbox_peer_is_stored_apart_and_goes_nowhere() -> None:
    hand = Hand([1, 2, 3], tiers={2: SANDBOX})
    packet = signed(1, 5)
    actions = hand.flooded(2, packet, 3, T0 + 1, quarantine=True)
    assert [a for a in actions if isinstance(a, Ingest)] == [Ingest(hand.links[2], pid(2), (packet,), True)]
    assert hand.sends(actions) == []
    (audit,) = [a for a in actions if isinstance(a, Audit)]
    assert audit.records[0]["allowed"] is False


def test_by_hand_a_sandbox_peers_copy_first_does_not_stop_a_core_copy_being_acted_on() -> None:
    hand = Hand([1, 2, 3, 4], tiers={2: SANDBOX})
    packet = signed(1, 6, about=4, severity="critical")
    hand.flooded(2, packet, 3, T0 + 1, quarantine=True)  # the sandbox peer got there first
    actions = hand.flooded(1, packet, 3, T0 + 1.01)  # now the author itself, a core peer
    assert hand.sends(actions) == [(3, 2)]  # it is forwarded...
    assert [q["peer"] for q in hand.core.quarantined()] == [pid(4)]  # ...so it should be acted on


def test_by_hand_the_authors_alerts_past_its_rate_limit_are_not_forwarded_and_strike_it() -> None:
    hand = Hand([1, 2, 3], gates=True)
    burst = 10  # the default policy's alert-author burst
    for n in range(burst):
        assert hand.sends(hand.flooded(1, signed(1, 100 + n), 3, T0 + 1)) == [(2, 2), (3, 2)]
    over = signed(1, 200)
    actions = hand.flooded(1, over, 3, T0 + 1)
    assert hand.sends(actions) == []
    assert [a.code for a in actions if isinstance(a, Strike)] == ["rate_limited"]


def test_by_hand_an_alert_past_its_authors_rate_limit_is_not_forwarded_by_a_later_copy() -> None:
    hand = Hand([1, 2, 3, 4], gates=True)
    for n in range(10):  # the default policy's alert-author burst, relayed by 2
        hand.flooded(2, signed(1, 300 + n), 3, T0 + 1)
    over = signed(1, 400)
    assert hand.sends(hand.flooded(2, over, 3, T0 + 1)) == []  # refused: not forwarded
    assert hand.sends(hand.flooded(3, over, 3, T0 + 1.01)) == []  # the same alert, by another path


def test_an_alert_never_reaches_its_accused_by_the_backstop_either() -> None:
    mesh = Mesh(3, line(3), seed=1)
    mesh.run_until(T0 + 1)
    alert_id = mesh.raise_alert(0, "info", "2 looks odd", about=2, evidence=b"a log excerpt")
    mesh.run_until(mesh.now + 2)
    assert mesh.nodes[1].sent.get((alert_id, 2)) is None  # the flood skipped it
    mesh.run_until(mesh.now + 60)
    assert 2 not in mesh.holders(alert_id)


def test_a_new_session_is_told_of_recent_alerts_within_a_digest_period() -> None:
    hand = Hand([1, 2])
    packet = signed(1, 8)
    hand.core.ingested(hand.links[1], [packet], False, set(), T0 + 1)  # by the backstop
    assert any(isinstance(a, SendAlertIds) for a in hand.core.wake(T0 + 31))  # the digest goes
    link, _session = hand.core.open_link(Role.RESPONDER, "10.0.0.3:4000", T0 + 40)  # peer 3 comes
    node_id = IDENTITIES[3].node_id
    hand.core.session_events(link, [PeerAuthenticated(node_id)], T0 + 40)
    hand.core.peer_recorded(link, CORE, None, 0, T0 + 40)
    hand.core.session_events(link, [PeerIdentified(node_id, MANIFESTS[3])], T0 + 40)
    actions = hand.core.session_events(link, [SyncReady(True, True)], T0 + 40)
    wakes = [a.at for a in actions if isinstance(a, WakeAt)]
    assert wakes and min(wakes) <= T0 + 40 + ALERT_DIGEST_SECONDS
