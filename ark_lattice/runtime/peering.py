"""The node's peer connections over WebSockets: the asyncio driver of the coordinator.

Every decision is the coordinator's (protocol/coordinator.py) or a session's
(protocol/session.py); this module only owns sockets, tasks and timers and carries out actions:

- one task per link owns that link's session, as a ``websockets`` connection owns its protocol:
  it feeds the session what a small reader task received, ticks it at its next deadline, carries
  out the link actions other tasks queue for it, and writes what the session wants sent. No other
  task touches the session, so there are no locks. A frame is taken in three steps
  (protocol/receipt.py): the owner opens it (decrypts and parses, in order; a big one of many
  packets on a worker thread while it waits, one of a few large packets on the loop), a small
  pool of verifier threads checks the packets of several frames at once (libsodium and hashlib
  release the GIL, so this runs on every core while the loop keeps reading and the writer keeps
  writing), and the owner delivers the frames to the session in the order they came;
- one writer task stores received packets in batches (one transaction for many frames);
- one task sleeps until the coordinator's next wake-up (dials, auto-sync), and one flushes the
  audit trail a moment after decisions arrive.

It also counts (runtime/metrics.py): every action on its way through ``carry_out``, dial results,
completed reconciliations and the traffic of links that end — observation only, never a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from ark_lattice.errors import ArkLatticeError, ErrorCode, LocalProtocolError, Malformed, UsageError
from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.protocol import actions as act
from ark_lattice.protocol import events as ev
from ark_lattice.protocol.coordinator import Coordinator
from ark_lattice.protocol.handshake import MSG2_SIZE
from ark_lattice.protocol.receipt import Opened
from ark_lattice.protocol.session import Role, Session, SessionConfig, State
from ark_lattice.protocol.strangers import StrangerBudget, Strangers
from ark_lattice.runtime.effects import Driver, Effects, apply_to_session, our_manifest
from ark_lattice.runtime.metrics import NO_TIER, Counters, Family, LinkView, StoreGauges, Traffic, families
from ark_lattice.store.store import Store

__all__ = ["Federation", "Link", "Transport", "Connect"]

T = TypeVar("T")
log = logging.getLogger("ark_lattice.peering")

QUERY_TIMEOUT = 30.0
CLOSE_CODE_BASE = 4000  # WebSocket private-use close codes carry our error codes
OFFLOAD_BYTES = 64 * 1024  # frames this big are verified on the pool, and opened on a worker thread
READ_AHEAD = 2  # frames a link's reader may hold before its owner takes them: back-pressure
VERIFY_AHEAD = 4  # frames of one link being verified before the oldest is delivered
VERIFY_CHUNK = 128  # packets per verification job, so one big frame spreads over the threads
VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))  # the node's verifier pool
# Big frames are opened and delivered off the loop on one thread for every link, not on the
# loop's default pool: the packets a frame carries are allocated by the thread that parses it,
# and glibc gives each thread its own heap, where 1 KiB bodies freed out of order leave holes that
# only that heap reuses. Spread over two pool threads, a long sync grew two such heaps: with one,
# the receiver's peak RSS at 100k packets went from 101.7-105.0 to 97.6-99.0 MB (bench sync --rss
# 10000, 4 pairs; issue 16), at the same rate within the noise (3 pairs of bench sync: 0.50, 0.61,
# 0.44 against 0.48, 0.56, 0.56 of the bound): this is Python work that holds the GIL, so a second
# thread ran beside the first only while it decrypted. It also keeps the default pool for what may
# block, a lookup or an fsync.
RECEIPT_THREADS = 1
# A big frame of at most this many packets (large ones: a 1 MiB packet comes one to a frame) is
# opened and delivered on the loop, not on a worker thread: each hop to a thread and back cost
# the link's owner about 1 ms on this 2-core machine, against about 0.8 ms to open the frame
# (mostly libsodium, which lets go of the GIL) and 0.1 ms to deliver its packet, and the owner's
# hops were what paced a sync of 1 MiB packets: its next frame waited for them (about 11 ms
# queued) while the writer and the verifiers had room. Issue 16, bench sync --packets 100
# --large-packets 300, 5 pairs alternating with the old code: ingest/bound median 0.425 -> 0.459,
# receiver CPU 4.97 -> 4.37 ms per packet (runs vary by 10-20% on this machine); the link now
# waits for the writer instead. The loop is held that long per frame: other links wait as long.
# A frame is taken so when the link's last big frame was such a frame (its packet count is
# known only once it is open). Frames of hundreds of small packets keep both hops.
FEW_PACKETS = 8
INGEST_QUEUE = 16  # received batches waiting for the writer; a full queue stops the readers. Each
# holds up to a frame of packets, and only a long sync fills them. A catch-up frame of small
# packets holds up to a want's 512, one of 1 MiB packets one: so the readers also stop while a
# transaction's worth of packets (INGEST_QUEUED_PACKETS) waits. Small packets then queue 4 frames,
# as when this queue held 4 (with 8 the receiver's peak RSS grew 23% from a 10k to a 100k sync,
# with 4 17%, at the same rate: bench sync --rss), while 1 MiB packets queue 16 (16 MiB) and the
# writer stores them 16 to a transaction, not 4: the link no longer waits on the writer a third of
# the time (bench sync --large-packets 300: 220/222 -> 241/248 packets/s, receiver CPU 4.0-4.1 ->
# 3.8 ms per packet; issue 16)
INGEST_BATCH = 16  # batches the writer stores in one transaction
# ... and at most about this many packets: a transaction holds the store (a status read waits for
# it), so it stays short enough for the node to answer within a second while it syncs.
INGEST_PACKETS = 2048
INGEST_QUEUED_PACKETS = INGEST_PACKETS
AUDIT_FLUSH_SECONDS = 0.25
AUDIT_RETRY_MAX = 5.0  # seconds between attempts to write a kept audit trail, at most
WAKE_RETRY = 1.0  # seconds before a wake-up the store failed is tried again
STOP_GRACE = 5.0  # seconds the links get to say goodbye at shutdown


class Transport(Protocol):
    """What a link needs of its connection: the part of a ``websockets`` connection we use."""

    @property
    def remote_address(self) -> Any: ...

    async def recv(self) -> bytes | str: ...

    async def send(self, message: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


# Dials a URL: an async context manager that yields the open connection (``websockets.connect``).
Connect = Callable[[str], AbstractAsyncContextManager[Transport]]


@dataclass(frozen=True)
class _End:
    """What the reader hands the owner when the connection ended."""

    peer_code: str | None = None  # the peer's close reason: our error code, if it sent one
    too_large: bool = False  # websockets closed it for a message over the size limit


@dataclass(eq=False)
class Link:
    """One live connection and its session; only the link's owner task touches ``session``."""

    id: act.LinkId
    session: Session
    ws: Transport
    remote: str
    commands: deque[Any] = field(default_factory=deque)
    messages: deque[bytes | str | _End] = field(default_factory=deque)  # str: refused (text frame)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(READ_AHEAD))
    # Opened frames in the order they came, each with its verification (done or running).
    verifying: deque[tuple[Opened, asyncio.Future[Any]]] = field(default_factory=deque)
    limit: int | None = None  # the receive limit the transport holds the peer to now
    few_per_frame: bool = False  # its last big frame held at most FEW_PACKETS packets

    @property
    def peer_id(self) -> str | None:
        return str(self.session.peer) if self.session.peer else None

    def to_json(self) -> dict[str, Any]:
        sess = self.session
        send, receive = sess.flows
        return {
            "peer": self.peer_id,
            "tier": sess.tier.value if sess.tier else None,
            "state": sess.state.value,
            "role": sess.role.value,
            "remote": self.remote,
            "sends": send,
            "receives": receive,
            "syncing": sess.syncing,
            "wanting": sess.wanting,
            "packets_in": sess.packets_in,
            "packets_out": sess.packets_out,
            "bytes_in": sess.bytes_in,
            "bytes_out": sess.bytes_out,
            "last_sync": sess.last_sync,
        }

    def command(self, item: Any) -> None:
        self.commands.append(item)
        self.ready.set()

    @property
    def tier_label(self) -> str:
        return self.session.tier.value if self.session.tier else NO_TIER

    def view(self) -> LinkView:
        return LinkView(self.id, self.tier_label, self.session.state.value, Traffic.of(self.session))


class Federation(Driver):
    """All peer sessions of one node, driven by its coordinator.

    The clock, the random source and the ``connect`` function that dials a URL are inputs, so
    tests can replace them.
    """

    metrics: Counters

    def __init__(
        self,
        store: Store,
        identity: Identity,
        federation_key: bytes,
        *,
        name: str,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        config: SessionConfig | None = None,
        sync_interval: float = 60.0,
        auto_sync: bool = True,
        connect: Connect | None = None,
        gate: Any = None,
        stranger_budget: StrangerBudget | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        self.name = name
        self.clock = clock
        self._rng = rng or random.Random()
        self._config = config or SessionConfig()
        self._sync = (sync_interval, auto_sync)
        self._connect = connect or _websocket_connect
        self._federation_key = federation_key
        self.gate = gate  # policy/gate.py; None: the tier table alone decides
        self.policy_sink: Any = None  # governance/effects.PolicySink, set by the node runtime
        # Counted from the TCP accept, before the coordinator exists (runtime/guard.py).
        self.strangers = Strangers(stranger_budget)
        self.core: Coordinator | None = None
        self.links: dict[act.LinkId, Link] = {}
        self._owners: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queries: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self._pushed_seq = 0
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._audit_pending = asyncio.Event()
        self._closing = False
        self.metrics = Counters()
        # Bounded: a full queue stops the links from reading, which is the back-pressure to peers.
        self._ingest: asyncio.Queue[act.Ingest] = asyncio.Queue(maxsize=INGEST_QUEUE)
        self._queued_packets = 0  # in the batches of _ingest, bounded by INGEST_QUEUED_PACKETS
        self._ingest_room = asyncio.Condition()
        self._verifier = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="verify")
        self._receipt = ThreadPoolExecutor(RECEIPT_THREADS, thread_name_prefix="receipt")
        self._writing = False  # the ingest writer is storing a batch (and the audit with it)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, endpoints: list[str]) -> None:
        manifest = await our_manifest(self.store, self.identity, self.name, endpoints, self.clock())
        interval, auto = self._sync
        self.core = Coordinator(
            self.identity, self._federation_key, manifest, self._rng,
            config=self._config, gate=self.gate, sync_interval=interval, auto_sync=auto,
            strangers=self.strangers,
        )
        self.effects = Effects(self.store, self.core)
        self.effects.policy_sink = self.policy_sink
        self.effects.metrics = self.metrics
        self.effects.on_kept = self._audit_kept
        self._pushed_seq = await self.store.event_count()
        self._spawn(self._maintain(), "federation-wake")
        self._spawn(self._write_received(), "ingest")
        self._spawn(self._write_audit_soon(), "audit")
        await self.carry_out(self.core.start(self.clock()))
        await self.carry_out(self.core.load_governance())

    async def stop(self) -> None:
        """Stop dialling and accepting, tell every peer we are leaving, then end all tasks."""
        self._closing = True
        if self.core is not None:
            await self.carry_out(self.core.stop(self.clock()))
        if self._owners:
            await asyncio.wait(list(self._owners), timeout=STOP_GRACE)
        await self._ingest.join()  # what was received before the stop is stored
        if self.core is not None:
            try:
                await self.effects.write_audit(final=True)
            except ArkLatticeError as exc:
                log.warning("%d audit event(s) could not be written at shutdown: %s",
                            len(self.effects.kept) + len(self.effects.decisions), exc)
        for task in list(self._tasks | self._owners):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._owners, return_exceptions=True)
        self._verifier.shutdown(wait=False, cancel_futures=True)
        self._receipt.shutdown(wait=False, cancel_futures=True)

    # -- entry points -----------------------------------------------------------------------

    async def accept(self, ws: Transport) -> None:
        """Serve one inbound WebSocket connection (we are the responder)."""
        if self._closing or self.core is None:
            await ws.close(code=1001, reason="shutdown")
            return
        await self._own(ws, Role.RESPONDER, _address(getattr(ws, "remote_address", None)), None)

    def server_connection_class(self) -> Any:
        """The ``create_connection`` of our WebSocket server (runtime/guard.py)."""
        from ark_lattice.runtime.guard import server_connection_class

        return server_connection_class(self.strangers, self.clock)

    async def add_peer(self, url: str) -> None:
        """Remember ``url`` and dial it now."""
        await self.carry_out(self._core.add_peer(url, self.clock()))

    async def discovered(self, peer_id: str, endpoints: list[str], *, source: str) -> None:
        """A verified announcement (mDNS, beacon) named a peer."""
        await self.carry_out(self._core.discovered(peer_id, endpoints, source, self.clock()))

    def connections(self) -> list[dict[str, Any]]:
        return [link.to_json() for link in self.links.values()]

    @property
    def isolated(self) -> list[dict[str, Any]]:
        return self._core.isolations()

    def quarantined(self) -> list[dict[str, Any]]:
        return self._core.quarantined()

    def dial_targets(self) -> list[dict[str, Any]]:
        return self._core.dial_targets()

    @property
    def auto_sync(self) -> bool:
        return self._core.auto_sync

    @property
    def sync_interval(self) -> float:
        return self._core.sync_interval

    async def local_packets_changed(self) -> None:
        """Push packets stored since the last push (e.g. by `packets publish`) to our peers."""
        while True:
            stored, seq = await self.store.stored_since(self._pushed_seq)
            if seq == self._pushed_seq:
                return
            self._pushed_seq = seq
            await self.carry_out(self._core.local_packets(stored, self.clock()))

    async def checkpoint_made(self) -> None:
        """We signed a new checkpoint: ask our open core peers to cosign it (witness.py)."""
        await self.carry_out(self._core.checkpoint_made(self.clock()))

    async def tiers_changed(self) -> None:
        """Re-read the tiers of connected peers and apply them to the live sessions."""
        await self.carry_out(self._core.tiers_changed())

    async def set_auto_sync(self, enabled: bool, interval: float | None) -> None:
        await self.carry_out(self._core.set_auto_sync(enabled, interval, self.clock()))

    async def sync_now(self) -> int:
        """Start a reconciliation on every session we initiated; returns how many were asked."""
        actions = self._core.sync_now(self.clock())
        await self.carry_out(actions)
        return len(actions)

    async def query(self, peer_prefix: str, topic: str, limit: int) -> tuple[list[Packet], bool]:
        peer_id = await self.store.resolve_peer(peer_prefix)
        try:
            (action,) = self._core.query(peer_id, topic, limit)
        except LocalProtocolError as exc:
            raise UsageError(str(exc)) from None
        assert isinstance(action, act.Query)
        link = self.links.get(action.link)
        if link is None:  # it ended between the coordinator's answer and now
            raise UsageError(f"no open session with peer {peer_id[:16]}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        link.command((action, future))
        try:
            return await asyncio.wait_for(future, QUERY_TIMEOUT)
        except TimeoutError:
            raise UsageError(f"peer {peer_id[:16]} did not answer within {QUERY_TIMEOUT:g} s") from None

    async def metric_families(self) -> list[Family]:
        """The node's metric set now (runtime/metrics.py): counters, live links, store gauges."""
        links = [link.view() for link in self.links.values()]
        gauges = await StoreGauges.read(self.store)
        return families(self.metrics, links, gauges, now=self.clock())

    async def raise_alert(
        self, severity: str, message: str, *, about: str | None, topic: str, evidence: bytes | None
    ) -> str:
        """Raise, sign, store and flood an alert of ours; returns its id (hex)."""
        try:
            (action,) = self._core.raise_alert(
                severity, message, about=about, topic=topic, evidence=evidence, now=self.clock()
            )
        except Malformed as exc:
            raise UsageError(f"not a valid alert: {exc}") from None
        assert isinstance(action, act.RaiseAlert)
        packet, follow = await self.effects.raise_alert(action, self.clock())
        await self.carry_out(follow)
        return packet.hex_id

    async def lift_quarantine(self, peer_prefix: str) -> str:
        peer_id = await self.store.resolve_peer(peer_prefix)
        try:
            actions = self._core.lift_quarantine(peer_id, self.clock())
        except LocalProtocolError as exc:
            raise UsageError(str(exc)) from None
        await self.carry_out(actions)
        return peer_id

    @property
    def federation_key(self) -> bytes:
        return self._federation_key

    async def rekey(self, federation_key: bytes) -> None:
        """We joined another federation (an invite): new sessions use its key; re-read targets."""
        self._federation_key = federation_key
        self._core.federation_key = federation_key
        await self.carry_out(self._core.tiers_changed())

    def replace_policy(self, policy: Any) -> None:
        """A new policy takes effect on the next packet of every session."""
        if self.gate is not None:
            self.gate.replace(policy)

    # -- Driver -----------------------------------------------------------------------------

    def on_link(self, action: Any) -> list[act.Action]:
        link = self.links.get(action.link)
        if link is not None:
            link.command(action)  # its owner task carries it out, and feeds back the events
        return []

    def dial(self, url: str) -> None:
        self._spawn(self._dial(url), f"dial {url}")

    def wake_at(self, at: float) -> None:
        self._wake_at = at
        self._wake.set()

    async def ingest(self, action: act.Ingest) -> list[act.Action]:
        async with self._ingest_room:
            await self._ingest_room.wait_for(lambda: self._queued_packets < INGEST_QUEUED_PACKETS)
            self._queued_packets += len(action.packets)
        await self._ingest.put(action)
        return []

    def query_answered(self, result: act.QueryResult) -> None:
        future = self._queries.pop((result.peer, result.query_id), None)
        if future is not None and not future.done():
            future.set_result((list(result.packets), result.more))

    def audit_queued(self) -> None:
        self._audit_pending.set()

    # -- links ------------------------------------------------------------------------------

    async def _dial(self, url: str) -> None:
        connected = False
        try:
            async with self._connect(url) as ws:
                connected = True
                self.metrics.dialled(connected=True)
                await self._own(ws, Role.INITIATOR, url, url)
        except Exception as exc:  # OSError, timeouts, refused WebSocket upgrades, bad URLs
            if connected:
                log.info("connection to %s ended: %s", url, exc)
                return
            log.info("could not reach %s: %s", url, exc)
            self.metrics.dialled(connected=False)
            await self.carry_out(self._core.dial_failed(url, str(exc) or type(exc).__name__, self.clock()))

    async def _own(self, ws: Transport, role: Role, remote: str, url: str | None) -> None:
        """The owner task of one link, from the connection's first byte to its close."""
        link_id, session = self._core.open_link(role, remote, self.clock(), url=url)
        link = Link(link_id, session, ws, remote)
        self.links[link_id] = link
        task = asyncio.current_task()
        assert task is not None
        self._owners.add(task)
        reader = asyncio.create_task(self._read(link), name=f"read {remote}")
        # The coordinator learns at once when the connection is gone, even while this task is busy:
        # such a session never blocks the peer's next one (keep_existing_session).
        closed: asyncio.Future[Any] | None = None
        if hasattr(ws, "wait_closed"):
            closed = asyncio.ensure_future(ws.wait_closed())
            closed.add_done_callback(lambda _: self._core.transport_gone(link_id))
        try:
            await self._settle(link)  # the initiator's first handshake message
            while session.state is not State.CLOSED:
                await self._step(link)
                await self._settle(link)
        except ArkLatticeError as exc:  # the store failed this session's step; others go on
            log.warning("session with %s ended: %s", remote, exc)
            session.connection_lost(self.clock())
            await self._settle_quietly(link)
        except Exception:
            log.exception("session with %s failed", remote)
            session.connection_lost(self.clock())
            await self._settle_quietly(link)
        finally:
            reader.cancel()
            if closed is not None:
                closed.cancel()
            self.links.pop(link_id, None)
            # In the same step as the pop: a snapshot sees the link's traffic live or folded, never neither.
            self.metrics.link_ended(link_id, link.tier_label, Traffic.of(session))
            self._owners.discard(task)
            code = session.close_code
            if code == ErrorCode.SHUTDOWN:
                close_code = 1001
            elif code and code != ErrorCode.CONNECTION_LOST:
                close_code = CLOSE_CODE_BASE
            else:
                close_code = 1000
            with contextlib.suppress(Exception):
                await ws.close(code=close_code, reason=(code or "")[:100])
            try:
                await self.carry_out(self._core.link_ended(link_id, self.clock()))
            except ArkLatticeError as exc:
                log.warning("after the session with %s: %s", remote, exc)

    async def _step(self, link: Link) -> None:
        """One thing for the owner to do: a queued command, a received message, or a tick."""
        session = link.session
        link.ready.clear()
        if link.commands:
            await self._apply(link, link.commands.popleft())
        elif link.verifying and link.verifying[0][1].done():
            opened, job = link.verifying.popleft()
            job.result()  # a verification never raises (receipt.py); if it did, that is our bug
            if opened.size <= FEW_PACKETS:
                session.deliver(opened, self.clock())
            else:
                # Hundreds of policy decisions: on a worker thread too, the owner waiting, so the
                # loop keeps serving the writer's store calls and the other links meanwhile.
                await self._off_loop(session.deliver, opened, self.clock())
        elif link.messages and len(link.verifying) < VERIFY_AHEAD and (
            isinstance(link.messages[0], bytes) or not link.verifying  # an end waits its turn
        ):
            message = link.messages.popleft()
            link.room.release()
            now = self.clock()
            if isinstance(message, _End):
                if message.too_large:
                    session.refuse(ErrorCode.TOO_LARGE, "message over the size limit", now, fatal=True)
                session.connection_lost(now, peer_code=message.peer_code)
            elif isinstance(message, str):
                reason = "text frames are not part of the protocol"
                session.refuse(ErrorCode.MALFORMED, reason, now, fatal=True)
            else:
                # A big frame of many packets is opened on a worker thread, the owner waiting: only
                # this task touches the session, and the loop serves the other links meanwhile. One
                # of a few large packets is opened here (FEW_PACKETS), as the link's last one was.
                big = len(message) >= OFFLOAD_BYTES
                if big and not link.few_per_frame:
                    frame = await self._off_loop(session.open, message, now)
                else:
                    frame = session.open(message, now)
                if big and frame is not None:
                    link.few_per_frame = frame.size <= FEW_PACKETS
                if frame is None:
                    pass  # a handshake message, or a frame that failed (the session said so)
                elif big or link.verifying:  # hundreds of signatures, or behind frames that have them
                    link.verifying.append((frame, self._verify(link, frame)))
                else:
                    session.deliver(frame, now)
        else:
            deadline = session.next_deadline()
            try:
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - self.clock())):
                    await link.ready.wait()
            except TimeoutError:
                session.tick(self.clock())

    def _off_loop(self, work: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``work(*args)`` on the receipt thread (RECEIPT_THREADS), for the owner to wait on."""
        return asyncio.get_running_loop().run_in_executor(self._receipt, work, *args)

    def _verify(self, link: Link, opened: Opened) -> asyncio.Future[Any]:
        """Check the frame's packets on the verifier pool, in chunks; wakes the owner when done."""
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(self._verifier, opened.verify, start, start + VERIFY_CHUNK)
            for start in range(0, opened.size, VERIFY_CHUNK)
        ]
        done: asyncio.Future[Any] = asyncio.gather(*jobs)
        done.add_done_callback(lambda _: link.ready.set())
        return done

    async def _apply(self, link: Link, item: Any) -> None:
        session, now = link.session, self.clock()
        future = None
        if isinstance(item, tuple):
            item, future = item
        try:
            if isinstance(item, act.Reconcile):
                apply_to_session(session, item, now, await self.effects.sync_set(item))
                return
            if isinstance(item, act.Admit | act.SetTier):
                before, traffic = link.tier_label, Traffic.of(session)
                apply_to_session(session, item, now)
                if link.tier_label != before:  # what the link carried so far stays with the old tier
                    self.metrics.retiered(link.id, before, link.tier_label, traffic)
                return
            query_id = apply_to_session(session, item, now)
        except LocalProtocolError as exc:
            if future is not None and not future.done():
                future.set_exception(UsageError(str(exc)))
            else:  # the session moved on (closed, say) before the command reached it
                log.debug("link %s: %s", link.remote, exc)
            return
        if future is not None and query_id is not None and isinstance(item, act.Query):
            self._queries[(item.peer, query_id)] = future

    async def _read(self, link: Link) -> None:
        """Hand received messages to the owner, at most READ_AHEAD ahead of it."""
        from websockets.exceptions import ConnectionClosed

        end = _End()
        try:
            while True:
                message = await link.ws.recv()
                await link.room.acquire()
                link.messages.append(message)
                link.ready.set()
        except ConnectionClosed as exc:
            if getattr(link.ws, "failure_counted", False):
                pass  # runtime/guard.py dropped it and counted why: a plain end here
            elif exc.sent is not None and exc.sent.code == 1009:  # websockets enforced max_size
                end = _End(too_large=True)
            elif exc.rcvd is not None:
                end = _End(peer_code=exc.rcvd.reason)
        except Exception as exc:
            log.info("connection with %s failed: %s", link.remote, exc)
        link.messages.append(end)
        link.ready.set()

    async def _settle_quietly(self, link: Link) -> None:
        """Settle a session that is ending; a store error now only adds a log line."""
        try:
            await self._settle(link)
        except ArkLatticeError as exc:
            log.warning("closing the session with %s: %s", link.remote, exc)

    async def _settle(self, link: Link) -> None:
        """Carry out the session's events until it has nothing more to say, then send."""
        session = link.session
        self._fit_limits(link)  # before anything goes out: the peer's answer may come at once
        while events := session.events():
            for event in events:
                if isinstance(event, ev.SyncCompleted):
                    self.metrics.synced(session.role.value)
            await self.carry_out(self._core.session_events(link.id, events, self.clock()))
        for data in session.data_to_send():
            try:
                await link.ws.send(data)
            except Exception:
                return  # the connection is gone; the reader sees it and the owner cleans up

    def _fit_limits(self, link: Link) -> None:
        """Hold the transport to the size the session accepts next (handshake messages at their
        real size until the peer is known), and stop counting the link as a stranger's then."""
        from ark_lattice.runtime.guard import set_receive_limit

        limit = link.session.receive_limit
        if limit != link.limit:
            link.limit = limit
            set_receive_limit(link.ws, limit)
        if link.session.state is not State.HANDSHAKE:
            self.strangers.known(cast(Hashable, link.ws))

    # -- background tasks -------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Call the coordinator's wake-up when it asked for one."""
        while True:
            self._wake.clear()
            at = self._wake_at
            if at is not None and at <= self.clock():
                self._wake_at = None
                try:
                    await self.carry_out(self._core.wake(self.clock()))
                except ArkLatticeError as exc:  # the store failed; dialling and syncing go on
                    log.warning("wake-up failed (%s); trying again in %g s", exc, WAKE_RETRY)
                    self._wake_at = min(self._wake_at or float("inf"), self.clock() + WAKE_RETRY)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if at is None else at - self.clock()):
                    await self._wake.wait()

    async def _write_received(self) -> None:
        """The ingest writer: store received packets in batches, then carry out what follows."""
        while True:
            batch = [await self._ingest.get()]
            while (
                not self._ingest.empty() and len(batch) < INGEST_BATCH
                and sum(len(item.packets) for item in batch) < INGEST_PACKETS
            ):
                batch.append(self._ingest.get_nowait())
            async with self._ingest_room:
                self._queued_packets -= sum(len(item.packets) for item in batch)
                self._ingest_room.notify_all()
            self._writing = True
            try:
                follow = await self.effects.ingest(batch, self.clock())
                await self.carry_out(follow)
            except ArkLatticeError as exc:
                log.warning("storing received packets failed (%s); they come again at the next sync", exc)
            except Exception:
                log.exception("storing received packets failed; they will come again at the next sync")
            finally:
                self._writing = False
                for _ in batch:
                    self._ingest.task_done()

    async def _write_audit_soon(self) -> None:
        """Policy decisions reach the ledger a moment after they are taken, many per event.

        A write the ledger refuses keeps its events (effects.kept) and is tried again, the
        pause doubling up to AUDIT_RETRY_MAX, with one log line per failed attempt.
        """
        pause = AUDIT_FLUSH_SECONDS
        while True:
            await self._audit_pending.wait()
            await asyncio.sleep(pause)
            self._audit_pending.clear()
            if self._writing or not self._ingest.empty():
                # The ingest writer's next transaction writes them, with the packets they let
                # in: a transaction (and an fsync) of their own would only hold the writer up.
                self._audit_pending.set()
                continue
            try:
                await self.effects.write_audit()
            except ArkLatticeError as exc:
                pause = min(pause * 2, AUDIT_RETRY_MAX)
                log.warning("could not write the audit trail (%s); %d event(s) kept, retrying in %g s",
                            exc, len(self.effects.kept), pause)
                self._audit_pending.set()
            else:
                pause = AUDIT_FLUSH_SECONDS

    def _audit_kept(self, error: ArkLatticeError) -> None:
        """An audit event the ledger refused waits in effects.kept; the audit task writes it."""
        log.warning("audit event kept for a retry: %s", error)
        self._audit_pending.set()

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _core(self) -> Coordinator:
        if self.core is None:
            raise LocalProtocolError("the federation has not started")
        return self.core

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _websocket_connect(url: str) -> AbstractAsyncContextManager[Transport]:
    from websockets.asyncio.client import connect

    from ark_lattice.runtime.guard import client_connection_class

    # Until the responder is authenticated we accept msg2 only (Session.receive_limit).
    return connect(
        url, max_size=MSG2_SIZE, open_timeout=10, ping_interval=None, compression=None,
        create_connection=client_connection_class(),
    )


def _address(remote: Any) -> str:
    if isinstance(remote, tuple) and len(remote) >= 2:
        return f"{remote[0]}:{remote[1]}"
    return str(remote)
