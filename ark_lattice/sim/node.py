"""One simulated node: the node's own coordinator, sessions and store, driven in virtual time.

:class:`SimNode` is the node's driver for the simulator, as runtime/peering.py is for asyncio: it
carries out the coordinator's actions through the same :class:`~ark_lattice.runtime.effects.Driver`
loop and :class:`~ark_lattice.runtime.effects.Effects`, feeds each session what its socket
delivers (network.py), ticks it at its next deadline on the scheduler (clock.py) and sends what
it says. It decides nothing. A node made to misbehave also forges packets through its own
sessions (the `misbehave` fault). The mesh around the nodes is mesh.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ark_lattice.encoding import decode
from ark_lattice.errors import ErrorCode
from ark_lattice.hlc import pack
from ark_lattice.home import Config, Home
from ark_lattice.identity import Identity
from ark_lattice.node import LocalNode
from ark_lattice.packet import Packet
from ark_lattice.protocol.actions import Action, LinkId, Reconcile, SendAlert, SendAlertIds
from ark_lattice.protocol.coordinator import Coordinator
from ark_lattice.protocol.events import SyncCompleted
from ark_lattice.protocol.session import Role, Session, State
from ark_lattice.runtime.effects import Driver, Effects, apply_to_session, our_manifest
from ark_lattice.runtime.peering import AUDIT_FLUSH_SECONDS, CLOSE_CODE_BASE
from ark_lattice.sim.clock import Timer
from ark_lattice.sim.network import Host, Socket
from ark_lattice.store import inline
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store

if TYPE_CHECKING:
    from ark_lattice.sim.mesh import Simulation

__all__ = ["SimNode", "BAD_TOPIC"]

BAD_TOPIC = "sim/misbehave"  # the topic of the packets a misbehaving node forges


@dataclass(eq=False)
class _SimLink:
    id: LinkId
    session: Session
    socket: Socket
    timer: Timer | None = None


class SimNode(Driver):
    """One simulated node: its identity, its in-memory ledger and, while up, its coordinator.

    This is the node's driver for virtual time, as runtime/peering.py is for asyncio: it carries
    out the coordinator's actions (through the same :class:`Driver` loop and :class:`Effects`),
    feeds each session what its socket delivers, ticks it at its next deadline and sends what it
    says. It decides nothing.
    """

    def __init__(self, sim: Simulation, index: int, name: str, group: str, identity: Identity) -> None:
        self.sim = sim
        self.index = index
        self.name = name
        self.group = group
        self.identity = identity
        self.node_id = str(identity.node_id)
        self.url = f"sim://{name}"
        self.host = Host(name, group, self.url, self._accept)
        self.state = "new"  # new, up, down (crashed, may restart), dropped (left for good)
        self.store: Store | None = None
        self.core: Coordinator | None = None
        self.links: dict[LinkId, _SimLink] = {}
        self.clock = sim.clock
        self.rng = sim.rng("backoff", index)
        self._keys = sim.rng("ephemeral-keys", index)
        self._wake: Timer | None = None
        self._audit: Timer | None = None
        self._pushed_seq = 0
        self._incarnation = 0  # callbacks of an earlier life (before a crash) are ignored
        # what the ledger holds (bitsets over the simulation's packet index), read from its events
        self.held = 0
        self.shared = 0
        self._cursor = 0
        # a `misbehave` fault: the node also forges packets every `misbehave_every` seconds
        self.misbehave_every: float | None = None
        self.misbehaving_since: float | None = None  # virtual time of its first forged packet sent
        self.bad_packets = 0  # forged packets sent, one per open link per round
        self._forger = sim.rng("misbehave", index)
        self.equivocating = False  # an `equivocate` fault: it approved two open proposals on one base

    # -- lifecycle --------------------------------------------------------------------------

    def open_store(self) -> Store:
        self.store = inline.run(Store.open(Path(":memory:"), clock=self.sim.clock, connect=inline.connect))
        self.store.set_signer(self.identity)  # every write ends with a signed head (store/head.py)
        return self.store

    def start(self) -> None:
        assert self.store is not None
        sim = self.sim
        gate = None
        if sim.policy is not None:
            from ark_lattice.policy.gate import PolicyGate

            gate = PolicyGate(sim.policy, self.node_id)
        manifest = inline.run(our_manifest(self.store, self.identity, self.name, [self.url], self.clock()))
        self.core = Coordinator(
            self.identity, sim.federation_key, manifest, self.rng,
            gate=gate, random_bytes=self._keys.randbytes,
            sync_interval=sim.scenario.sync_interval_s, auto_sync=True,
        )
        self.effects = Effects(self.store, self.core)
        self._pushed_seq = inline.run(self.store.event_count())
        self.state = "up"
        self.host.up = True
        self._run(self.core.start(self.clock()))
        self._run(self.core.load_governance())

    def crash(self, *, final: str = "down") -> None:
        """Stop abruptly: connections reset, timers forgotten; the ledger survives (what an
        acknowledged write put there), and so does nothing else."""
        self.host.up = False
        self.state = final
        self._incarnation += 1
        self.sim.network.sever(self.host)
        for link in self.links.values():
            if link.timer is not None:
                link.timer.cancel()
        for timer in (self._wake, self._audit):
            if timer is not None:
                timer.cancel()
        self.links.clear()
        self._wake = self._audit = None
        self.core = None

    def timestamp(self) -> int:
        """The next hybrid logical timestamp of this node's ledger (what a packet of ours gets)."""
        assert self.store is not None
        return inline.run(self.store.next_timestamp(self.store.now_ms()))

    def store_packet(self, packet: Packet) -> None:
        """Store a packet of ours signed elsewhere (a governance document), then push it as
        `packets_changed` makes a running node do; before the start, only store it."""
        assert self.store is not None
        inline.run(self.store.put_packets([packet]))
        if self.core is None:
            return
        while True:
            stored, seq = inline.run(self.store.stored_since(self._pushed_seq))
            if seq == self._pushed_seq:
                return
            self._pushed_seq = seq
            self._run(self.core.local_packets(stored, self.clock()))

    def publish(self, topic: str, body: bytes) -> Packet:
        """What `packets publish` does on a running node: the node's own publish, then a push."""
        assert self.store is not None and self.core is not None
        config = Config(node_id=self.node_id, name=self.name, created_at=int(self.sim.clock()))
        local = LocalNode(Home(f"/nonexistent/simulated/{self.name}"), config, self.store, self.identity)
        packet = inline.run(local.publish(topic=topic, kind="note", body=body))
        while True:
            stored, seq = inline.run(self.store.stored_since(self._pushed_seq))
            if seq == self._pushed_seq:
                return packet
            self._pushed_seq = seq
            self._run(self.core.local_packets(stored, self.clock()))

    @property
    def misbehaving(self) -> bool:
        return self.misbehave_every is not None

    @property
    def honest(self) -> bool:
        """Not dropped and not misbehaving: the nodes convergence and the quorum count."""
        return self.state != "dropped" and self.misbehave_every is None and not self.equivocating

    def misbehave(self, every: float) -> None:
        """From now on, besides everything the node does, send each open link a packet with a
        corrupted signature every ``every`` seconds (while the node is up; across restarts)."""
        if self.misbehave_every is None:
            self.misbehave_every = every
            self._forge()

    def _forge(self) -> None:
        if self.state == "dropped" or self.misbehave_every is None:
            return
        if self.state == "up" and self.store is not None:
            now = self.clock()
            good = Packet.create(
                self.identity, topic=BAD_TOPIC, kind="note", body=self._forger.randbytes(32),
                created_at=pack(int(now * 1000), 0),
            )
            bad = replace(good, signature=good.signature[:-1] + bytes([good.signature[-1] ^ 0x01]))
            for link in list(self.links.values()):
                if self.links.get(link.id) is not link or link.session.state is not State.OPEN:
                    continue
                # the session's own live push: the peer's session verifies and refuses it
                sent = link.session.push([bad], now)
                if sent:
                    self.bad_packets += sent
                    if self.misbehaving_since is None:
                        self.misbehaving_since = self.sim.scheduler.time()
                self._run(self._after(link))
        self.sim.scheduler.call_later(self.misbehave_every, self._forge)

    def read_ledger(self) -> None:
        """Fold packets stored since the last look into ``held`` / ``shared``; alerts raised by
        the nodes join the simulation's packets as they are first seen."""
        assert self.store is not None
        sql = (
            "SELECT seq, subject, data FROM events "
            f"WHERE kind = '{EventKind.PACKET_STORED}' AND seq > {int(self._cursor)} ORDER BY seq"
        )
        index_of = self.sim.packet_index
        for seq, subject, data in inline.rows(self.store, sql):
            self._cursor = seq
            i = index_of.get(subject)
            if i is None:
                i = self.sim.alert_seen(subject, self.store)
            if i is None:
                raise RuntimeError(f"{self.name} stored a packet the simulation never published: {subject}")
            bit = 1 << i
            self.held |= bit
            if not decode(data, max_size=1 << 16, what="ledger event").get("quarantined"):
                self.shared |= bit

    # -- Driver -----------------------------------------------------------------------------

    def on_link(self, action: Any) -> list[Action]:
        link = self.links.get(action.link)
        if link is None:
            return []
        items = inline.run(self.effects.sync_set(action)) if isinstance(action, Reconcile) else None
        sent = link.session.bytes_out
        apply_to_session(link.session, action, self.clock(), items)
        if link.session.bytes_out > sent:  # the alert traffic: frames the session actually sent
            if isinstance(action, SendAlert):
                self.sim.network.traffic.alert_frames += 1
            elif isinstance(action, SendAlertIds):
                self.sim.network.traffic.alert_id_frames += 1
        return self._after(link)

    def dial(self, url: str) -> None:
        life = self._incarnation
        self.sim.network.dial(
            self.host, url,
            lambda sock: self._connected(life, url, sock),
            lambda reason: self._dial_failed(life, url, reason),
        )

    def _dial_failed(self, life: int, url: str, reason: str) -> None:
        if self._alive(life):
            self._run(self._core.dial_failed(url, reason, self.clock()))

    def wake_at(self, at: float) -> None:
        if self._wake is not None:
            self._wake.cancel()
        self._wake = self.sim.scheduler.call_at(at - self.sim.start_time, self._woken)

    def audit_queued(self) -> None:
        if self._audit is None:
            self._audit = self.sim.scheduler.call_later(AUDIT_FLUSH_SECONDS, self._write_audit)

    # -- plumbing ---------------------------------------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        inline.run(self.carry_out(actions))

    @property
    def _core(self) -> Coordinator:
        assert self.core is not None
        return self.core

    def _alive(self, life: int) -> bool:
        return life == self._incarnation and self.state == "up"

    def _woken(self) -> None:
        self._wake = None
        self._run(self._core.wake(self.clock()))

    def _write_audit(self) -> None:
        self._audit = None
        inline.run(self.effects.write_audit())

    def _accept(self, sock: Socket) -> None:
        if self.core is None or self.state != "up":
            sock.abort()
            return
        self._open(sock, Role.RESPONDER, f"{sock.remote_address[0]}:{sock.remote_address[1]}", None)

    def _connected(self, life: int, url: str, sock: Socket) -> None:
        if not self._alive(life):
            sock.abort()
            return
        self._open(sock, Role.INITIATOR, url, url)

    def _open(self, sock: Socket, role: Role, remote: str, url: str | None) -> None:
        link_id, session = self._core.open_link(role, remote, self.clock(), url=url)
        link = _SimLink(link_id, session, sock)
        self.links[link_id] = link
        sock.bind(lambda data: self._received(link, data), lambda code, reason: self._lost(link, reason))
        self._run(self._after(link))

    def _received(self, link: _SimLink, data: bytes) -> None:
        if self.links.get(link.id) is link:
            link.session.receive_data(data, self.clock())
            self._run(self._after(link))

    def _lost(self, link: _SimLink, reason: str) -> None:
        if self.links.get(link.id) is link:
            link.session.connection_lost(self.clock(), peer_code=reason or None)
            self._run(self._after(link))

    def _tick(self, link: _SimLink) -> None:
        link.timer = None
        if self.links.get(link.id) is not link:
            return
        deadline = link.session.next_deadline()
        if deadline is not None and deadline > self.clock():
            link.timer = self.sim.scheduler.call_at(deadline - self.sim.start_time, self._tick, link)
            return
        link.session.tick(self.clock())
        self._run(self._after(link))

    def _after(self, link: _SimLink) -> list[Action]:
        """What a session said after it was fed: its events to the coordinator, its bytes to the
        wire, and, once it closed, the end of the link."""
        session, now = link.session, self.clock()
        actions: list[Action] = []
        events = session.events()
        if events:
            for event in events:
                if isinstance(event, SyncCompleted) and session.role is Role.INITIATOR:
                    self.sim.network.traffic.reconciliations += 1  # once per run, by its driver
            actions += self._core.session_events(link.id, events, now)
        for data in session.data_to_send():
            link.socket.send(data)
        if session.state is State.CLOSED:
            if self.links.pop(link.id, None) is not None:
                if link.timer is not None:
                    link.timer.cancel()
                code = session.close_code
                if code and code != ErrorCode.CONNECTION_LOST:
                    link.socket.close(CLOSE_CODE_BASE, code)
                else:
                    link.socket.close(1000)
                actions += self._core.link_ended(link.id, now)
            return actions
        deadline = session.next_deadline()
        if deadline is not None:
            at = deadline - self.sim.start_time
            # One timer per link, moved on lazily: most traffic only pushes the deadline later.
            if link.timer is None or at < link.timer.at:
                if link.timer is not None:
                    link.timer.cancel()
                link.timer = self.sim.scheduler.call_at(at, self._tick, link)
        return actions
