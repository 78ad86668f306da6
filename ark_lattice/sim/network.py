"""The virtual network: WebSocket-like connections between simulated nodes, with latency and loss.

A simulated node dials through :meth:`Network.dial` and is handed inbound connections by its
:class:`Host`; each end is a :class:`Socket` that sends binary messages and reports what arrives to
the callbacks its node binds (``on_message``, ``on_close``), as the node runtime's WebSocket tasks
would. Messages are delivered by the scheduler (clock.py) after the link's latency.

A connection is a reliable ordered stream, as TCP is: a *lost* message is not dropped (that would
desynchronise the AEAD nonces of the session, which no real network does) but retransmitted after
a timeout, delaying it and everything behind it. A *partition* holds every message across the cut
until it heals (TCP keeps retransmitting), so sessions across it go silent and their idle timeout
closes them, and dials across it time out. A crashed host's connections are reset: the peer sees
the close after one latency.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ark_lattice.sim.clock import Scheduler

__all__ = ["Network", "Host", "Socket", "Traffic"]

CONNECT_TIMEOUT = 10.0  # seconds, as the node's websocket dialler (runtime/peering.py)
MIN_RTO = 0.2  # seconds: Linux's minimum TCP retransmission timeout
MAX_RETRANSMITS = 8

@dataclass
class Traffic:
    """Counters since the last :meth:`take`."""

    messages: int = 0
    bytes: int = 0
    retransmissions: int = 0
    connections: int = 0
    failed_dials: int = 0
    reconciliations: int = 0
    alert_frames: int = 0  # alert copies sent (the flood); counted by the node driver
    alert_id_frames: int = 0  # alert-id digests sent (the flood's backstop)

    def take(self) -> dict[str, int]:
        out = dict(vars(self))
        for key in out:
            setattr(self, key, 0)
        return out


@dataclass
class _Close:
    code: int
    reason: str


@dataclass(eq=False)
class _Pipe:
    """One direction of one connection: in-order delivery after ``latency`` seconds."""

    receiver: Socket
    latency: float
    loss: float
    last_at: float = 0.0
    held: list[bytes | _Close] = field(default_factory=list)  # behind a partition
    queue: deque[tuple[float, bytes | _Close]] = field(default_factory=deque)  # on the wire


class Host:
    """A node's attachment to the network: its URL, whether it is up, and its open sockets."""

    def __init__(self, name: str, group: str, url: str, accept: Callable[[Socket], None]) -> None:
        self.name = name
        self.group = group
        self.url = url
        self.up = False
        self.accept = accept  # starts serving an inbound connection
        self.sockets: dict[Socket, None] = {}  # insertion-ordered: severed in a fixed order


class Socket:
    """One end of a connection. Its node binds callbacks for what arrives; until it does, arrivals wait."""

    def __init__(self, network: Network, host: Host, remote: Host, port: int) -> None:
        self._network = network
        self.host = host
        self.remote = remote
        self.remote_address = (remote.name, port)
        self._on_message: Callable[[bytes], None] | None = None
        self._on_close: Callable[[int, str], None] | None = None
        self._early: list[bytes | _Close] = []  # arrived before bind()
        self._closed = False  # we closed, or were reset: nothing more in or out
        self._peer_closed = False  # the peer's close arrived: send nothing more
        self._pipe: _Pipe | None = None  # towards the peer
        host.sockets[self] = None

    def bind(self, on_message: Callable[[bytes], None], on_close: Callable[[int, str], None]) -> None:
        self._on_message, self._on_close = on_message, on_close
        early, self._early = self._early, []
        for item in early:
            self._deliver(item)

    @property
    def open(self) -> bool:
        return not self._closed and not self._peer_closed

    def send(self, data: bytes) -> bool:
        """Send one message; False if the connection is closed (the message is dropped)."""
        if not self.open:
            return False
        traffic = self._network.traffic
        traffic.messages += 1
        traffic.bytes += len(data)
        self._network._transmit(self, data)
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.abort(code, reason)

    def abort(self, code: int = 1006, reason: str = "") -> None:
        """Close now (a reset when the host crashed); the peer learns it after one latency."""
        if self._closed:
            return
        self._finish()
        if not self._peer_closed:
            self._network._transmit(self, _Close(code, reason))

    # -- network side -----------------------------------------------------------------------

    def _finish(self) -> None:
        self._closed = True
        self._early.clear()
        self.host.sockets.pop(self, None)

    def _deliver(self, item: bytes | _Close) -> None:
        if self._closed:
            return  # arrived after we closed: dropped, as a reset connection drops it
        if self._on_message is None or self._on_close is None:
            self._early.append(item)
            return
        if isinstance(item, _Close):
            self._peer_closed = True
            self._finish()
            self._on_close(item.code, item.reason)
        else:
            self._on_message(item)


class Network:
    """Every host, the link profiles between them, the current partition and the traffic counters."""

    def __init__(
        self,
        clock: Scheduler,
        rng: random.Random,
        profile_of: Callable[[str, str], tuple[tuple[float, float], float]],
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._profile_of = profile_of  # (group, group) -> ((low ms, high ms), loss)
        self._profiles: dict[tuple[str, str], tuple[float, float]] = {}
        self._held: dict[_Pipe, None] = {}
        self._side: dict[str, int] | None = None  # host name -> side of the partition
        self._ports = 0
        self.hosts: dict[str, Host] = {}  # by URL
        self.traffic = Traffic()

    def add(self, host: Host) -> None:
        self.hosts[host.url] = host

    def dial(
        self,
        src: Host,
        url: str,
        connected: Callable[[Socket], None],
        failed: Callable[[str], None],
    ) -> None:
        """Connect ``src`` to the host at ``url``: ``connected(socket)`` once the answer is back
        (one round trip), or ``failed(reason)`` — unknown host at once, a cut network after the
        dial timeout, a host that is down after one round trip."""
        dst = self.hosts.get(url)
        clock = self._clock
        if dst is None:
            self.traffic.failed_dials += 1
            failed(f"cannot resolve {url}")
            return
        latency, _ = self.profile(src, dst)

        def fail(reason: str) -> None:
            self.traffic.failed_dials += 1
            failed(reason)

        def syn_arrives() -> None:
            if not self.reachable(src, dst):  # cut while the SYN was on its way
                clock.call_later(max(0.0, CONNECT_TIMEOUT - latency), fail, f"timed out connecting to {url}")
            elif not dst.up:
                clock.call_later(latency, fail, f"connection to {url} refused")
            else:
                ours, theirs = self._connect(src, dst)
                dst.accept(theirs)
                clock.call_later(latency, answer_arrives, ours)

        def answer_arrives(ours: Socket) -> None:
            if ours._closed:
                return  # reset meanwhile: the dialler crashed and the socket went with it
            connected(ours)

        if not self.reachable(src, dst):
            clock.call_later(CONNECT_TIMEOUT, fail, f"timed out connecting to {url}")  # the SYN goes nowhere
        else:
            clock.call_later(latency, syn_arrives)

    def profile(self, a: Host, b: Host) -> tuple[float, float]:
        """(one-way latency in seconds, loss) of the path between two hosts; fixed per pair."""
        key = (a.name, b.name) if a.name < b.name else (b.name, a.name)
        found = self._profiles.get(key)
        if found is None:
            (low, high), loss = self._profile_of(a.group, b.group)
            found = (self._rng.uniform(low, high) / 1000.0, loss)
            self._profiles[key] = found
        return found

    # -- faults -----------------------------------------------------------------------------

    def partition(self, side_of: dict[str, int]) -> None:
        """Cut the network into sides (replacing any earlier cut); host name -> side."""
        self._side = dict(side_of)
        self._release()

    def heal(self) -> None:
        self._side = None
        self._release()

    def _release(self) -> None:
        """Deliver what was held on every pipe that is no longer cut (TCP's retransmissions)."""
        for pipe in list(self._held):
            sender = pipe.receiver.remote
            if self._side is not None and not self.reachable(sender, pipe.receiver.host):
                continue
            del self._held[pipe]
            items, pipe.held = pipe.held, []
            for item in items:
                self._schedule(pipe, item)

    def reachable(self, a: Host, b: Host) -> bool:
        return self._side is None or self._side[a.name] == self._side[b.name]

    def sever(self, host: Host) -> None:
        """The host crashed: reset every connection it has."""
        for sock in list(host.sockets):
            sock.abort(1006, "connection reset")

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self, a: Host, b: Host) -> tuple[Socket, Socket]:
        self._ports += 1
        ours, theirs = Socket(self, a, b, self._ports), Socket(self, b, a, self._ports)
        latency, loss = self.profile(a, b)
        ours._pipe = _Pipe(theirs, latency, loss)
        theirs._pipe = _Pipe(ours, latency, loss)
        self.traffic.connections += 1
        return ours, theirs

    def _transmit(self, sock: Socket, item: bytes | _Close) -> None:
        pipe = sock._pipe
        assert pipe is not None
        if pipe.held or not self.reachable(sock.host, sock.remote):
            pipe.held.append(item)  # behind the cut; in order with what is already held
            self._held[pipe] = None
            return
        self._schedule(pipe, item)

    def _schedule(self, pipe: _Pipe, item: bytes | _Close) -> None:
        delay = pipe.latency
        if pipe.loss:
            rto = max(MIN_RTO, 4 * pipe.latency)
            for _ in range(MAX_RETRANSMITS):
                if self._rng.random() >= pipe.loss:
                    break
                delay += rto
                rto *= 2
                self.traffic.retransmissions += 1
        at = max(self._clock.time() + delay, pipe.last_at)  # a stream: never overtakes
        pipe.last_at = at
        # One timer per pipe, for its head: timers due at the same instant may fire in any
        # order, messages of one stream must not.
        pipe.queue.append((at, item))
        if len(pipe.queue) == 1:
            self._clock.call_at(at, self._arrive, pipe)

    def _arrive(self, pipe: _Pipe) -> None:
        now = self._clock.time()
        queue = pipe.queue
        while queue and queue[0][0] <= now:
            pipe.receiver._deliver(queue.popleft()[1])
        if queue:
            self._clock.call_at(queue[0][0], self._arrive, pipe)

    def held_messages(self) -> int:
        return sum(len(p.held) for p in self._held)
