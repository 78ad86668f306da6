"""The pump between peer sessions (protocol/session.py), WebSocket connections and the store.

For each connection: feed every message to the session, carry out what its events ask (store
reads and writes, audits, strikes), write what it wants sent. Decisions about what may flow live
in the session; this module only performs I/O and keeps the list of live links. It also dials:
remembered endpoints are retried with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ark_lattice import __version__
from ark_lattice.errors import ArkLatticeError, NotFound, UsageError
from ark_lattice.identity import Identity, NodeId
from ark_lattice.manifest import DEFAULT_LIFETIME, PeerManifest, SignedManifest
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store
from ark_lattice.packet import Packet
from ark_lattice.protocol import session as s
from ark_lattice.protocol.channel import MAX_FRAME
from ark_lattice.protocol.frames import ErrorCode
from ark_lattice.protocol.intake import Intake
from ark_lattice.protocol.reconcile import ItemSet
from ark_lattice.tiers import TrustTier

__all__ = ["Federation", "Link"]

log = logging.getLogger("ark_lattice.peering")

STRIKES_TO_BLOCK = 5
TICK_SECONDS = 1.0
QUERY_TIMEOUT = 30.0
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0
CLOSE_CODE_BASE = 4000
OFFLOAD_BYTES = 64 * 1024
AUDIT_CHUNK = 1000  # decisions per ledger event
AUDIT_FLUSH_SECONDS = 0.25
DIALS_PER_TICK = 8
REFRESH_SECONDS = 30.0  # WebSocket private-use close codes carry our error codes


@dataclass
class Link:
    """One live connection and its session."""

    session: s.Session
    ws: Any
    remote: str
    dialled_url: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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
            "packets_in": sess.packets_in,
            "packets_out": sess.packets_out,
            "bytes_in": sess.bytes_in,
            "bytes_out": sess.bytes_out,
            "last_sync": sess.last_sync,
        }


@dataclass
class _Target:
    url: str
    failures: int = 0
    next_attempt: float = 0.0
    connected: bool = False


class Federation:
    """All peer sessions of one node.

    Everything outside the process comes in as an argument — the clock, the random source and
    the ``connect`` function that dials a URL — so the simulator can run the very same object
    over in-memory links and a virtual clock (``offload`` off: no worker threads there).
    """

    def __init__(
        self,
        store: Store,
        identity: Identity,
        federation_key: bytes,
        *,
        name: str,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        config: s.SessionConfig = s.SessionConfig(),
        sync_interval: float = 60.0,
        auto_sync: bool = True,
        connect: Callable[[str], Any] | None = None,
        offload: bool = True,
        gate: Any = None,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        self.node_id = identity.node_id
        self.name = name
        self.clock = clock
        self.rng = rng or random.Random()
        self.config = config
        self.sync_interval = sync_interval
        self.auto_sync = auto_sync
        self._connect = connect or _websocket_connect
        self._offload = offload
        self._random_bytes = random_bytes  # handshake ephemeral keys; None: os.urandom
        self.gate = gate  # policy/gate.py; None: the tier table alone decides
        self._decisions: list[dict[str, Any]] = []  # decisions not yet in the ledger
        self.links: list[Link] = []
        self.intake = Intake()
        self.isolated: list[dict[str, Any]] = []  # peers blocked by us while running, newest last
        self._federation_key = federation_key
        self._manifest: SignedManifest | None = None
        self._endpoints: list[str] = []
        self._targets: dict[str, _Target] = {}
        self._queries: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self._pushed_seq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        # Which endpoints to dial is re-read from the store only after something changed it (a
        # new endpoint, a tier, a session ending), or every REFRESH_SECONDS as a safety net.
        self._targets_stale = True
        self._targets_read_at = 0.0
        self._last_sync = 0.0
        self._closing = False
        self._maintainer: asyncio.Task[Any] | None = None
        # Received packets are stored by one writer task, so verifying the next frame overlaps
        # with writing the last one, and batches from all links share transactions. Bounded:
        # a full queue stops the links from reading, which is the back-pressure to the peers.
        self._ingest: asyncio.Queue[tuple[Link, s.PacketsReceived]] = asyncio.Queue(maxsize=8)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, endpoints: list[str]) -> None:
        self._endpoints = endpoints
        seq = await self.store.next_counter("manifest_seq")
        now = int(self.clock())
        self._manifest = PeerManifest(
            self.node_id,
            self.name[:64],
            seq,
            now,
            now + DEFAULT_LIFETIME,
            tuple(endpoints),
            ("sync/1", "query/1"),
            __version__,
        ).sign(self.identity)
        self._pushed_seq = await self.store.event_count()
        for url, _peer in await self.store.endpoints():
            self._targets.setdefault(url, _Target(url))
        self._maintainer = self._spawn(self._maintain(), "federation-maintain")
        self._spawn(self._write_received(), "ingest")
        self._spawn(self._write_audit_periodically(), "audit")

    async def stop(self) -> None:
        """Stop dialling and accepting, tell every peer we are leaving, then end all tasks."""
        self._closing = True
        if self._maintainer is not None:
            self._maintainer.cancel()
        for link in list(self.links):
            async with link.lock:
                link.session.close(ErrorCode.SHUTDOWN, "node shutting down", self.clock())
                await self._flush(link)
            await link.ws.close(code=1001, reason="shutdown")
        await self._ingest.join()  # what was received before the stop is stored
        await self._write_audit()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- entry points -----------------------------------------------------------------------

    async def accept(self, ws: Any) -> None:
        """Serve one inbound WebSocket connection (we are the responder)."""
        if self._closing:
            await ws.close(code=1001, reason="shutdown")
            return
        remote = _address(getattr(ws, "remote_address", None))
        await self._run(ws, s.Role.RESPONDER, remote, None, None)

    async def add_peer(self, url: str, *, source: str = "operator") -> None:
        """Remember ``url`` and dial it now."""
        await self.store.add_endpoint(url, source=source)
        target = self._targets.setdefault(url, _Target(url))
        target.next_attempt = 0.0
        self._targets_changed()

    async def discovered(self, peer_id: str, endpoints: list[str], *, source: str) -> None:
        """A verified announcement (mDNS, beacon) named a peer: record it, dial it if useful.

        First sight makes it an ``unknown`` peer with its endpoints (DESIGN §7); whether it is
        dialled is then up to its tier, like any remembered endpoint.
        """
        if peer_id == str(self.node_id) or not endpoints:
            return
        await self.store.add_peer(peer_id, endpoints=endpoints)
        for url in endpoints:
            await self.store.add_endpoint(url, source=source, peer_id=peer_id)
        self._targets_changed()

    def connections(self) -> list[dict[str, Any]]:
        return [link.to_json() for link in self.links]

    async def local_packets_changed(self) -> None:
        """Push packets stored since the last push (e.g. by `packets publish`) to our peers."""
        while True:
            stored, seq = await self.store.stored_since(self._pushed_seq)
            if seq == self._pushed_seq:
                return
            self._pushed_seq = seq
            fresh = [sp.packet for sp in stored if not sp.quarantined and sp.source == "local"]
            await self._push(fresh, source=None)

    async def tiers_changed(self) -> None:
        """Re-read the tiers of connected peers and apply them to the live sessions."""
        now = self.clock()
        for link in list(self.links):
            if link.session.peer is None:
                continue
            peer = await self.store.find_peer(str(link.session.peer))
            tier = peer.tier if peer else TrustTier.UNKNOWN
            if tier != link.session.tier:
                async with link.lock:
                    link.session.set_tier(tier, now)
                    await self._settle(link)
        self._targets_changed()

    def set_auto_sync(self, enabled: bool, interval: float | None) -> None:
        self.auto_sync = enabled
        if interval is not None:
            self.sync_interval = interval
        self._wake.set()

    async def query(self, peer_prefix: str, topic: str, limit: int) -> tuple[list[Packet], bool]:
        peer_id = await self.store.resolve_peer(peer_prefix)
        link = self._link_for(peer_id)
        if link is None:
            raise UsageError(f"no open session with peer {peer_id[:16]}")
        async with link.lock:
            qid = link.session.query(topic, limit, self.clock())
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queries[(peer_id, qid)] = future
            await self._flush(link)
        try:
            return await asyncio.wait_for(future, QUERY_TIMEOUT)
        except asyncio.TimeoutError:
            raise UsageError(f"peer {peer_id[:16]} did not answer within {QUERY_TIMEOUT:g} s") from None
        finally:
            self._queries.pop((peer_id, qid), None)

    async def sync_now(self) -> int:
        """Start a reconciliation on every session we initiated; returns how many started."""
        started = 0
        for link in list(self.links):
            async with link.lock:
                if link.session.request_sync():
                    started += 1
                    await self._settle(link)
        return started

    # -- the pump ---------------------------------------------------------------------------

    async def _run(self, ws: Any, role: s.Role, remote: str, url: str | None, expected: NodeId | None) -> s.Session:
        assert self._manifest is not None
        session = s.Session(
            self.identity,
            self._federation_key,
            role,
            self._manifest,
            now=self.clock(),
            config=self.config,
            expected_peer=expected,
            gate=self.gate,
            random_bytes=self._random_bytes,
        )
        link = Link(session, ws, remote, url)
        self.links.append(link)
        ticker = asyncio.create_task(self._tick(link))
        close_code = 1000
        try:
            async with link.lock:
                await self._flush(link)
            async for message in ws:
                async with link.lock:
                    if isinstance(message, str):
                        session.refuse(ErrorCode.MALFORMED, "text frames are not part of the protocol", self.clock(), fatal=True)
                    elif self._offload and len(message) >= OFFLOAD_BYTES:
                        # A big frame means hundreds of signatures to check: do it on a worker
                        # thread (libsodium releases the GIL) so this loop keeps reading sockets
                        # and finishing store writes meanwhile. The link lock keeps the session
                        # single-threaded.
                        await asyncio.to_thread(session.receive_data, message, self.clock())
                    else:
                        session.receive_data(message, self.clock())
                    await self._settle(link)
                if session.state is s.State.CLOSED:
                    break
        except Exception as exc:  # connection errors end this session only
            from websockets.exceptions import ConnectionClosed

            if not isinstance(exc, ConnectionClosed):
                log.exception("session with %s failed", remote)
            elif exc.sent is not None and exc.sent.code == 1009:  # websockets enforced max_size
                await self._audit(link, ErrorCode.TOO_LARGE, "message over the size limit", True)
        finally:
            ticker.cancel()
            async with link.lock:
                session.connection_lost(self.clock())
                try:
                    await self._handle_events(link)
                except Exception:
                    log.exception("cleaning up the session with %s", remote)
            if link in self.links:
                self.links.remove(link)
            if session.close_code and session.close_code != "connection_lost":
                close_code = CLOSE_CODE_BASE
            try:
                await ws.close(code=close_code, reason=(session.close_code or "")[:100])
            except Exception:
                pass
            self._targets_changed()
        return session

    async def _tick(self, link: Link) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            async with link.lock:
                link.session.tick(self.clock())
                await self._settle(link)
            if link.session.state is s.State.CLOSED:
                await link.ws.close(code=CLOSE_CODE_BASE, reason=(link.session.close_code or "")[:100])
                return

    async def _settle(self, link: Link) -> None:
        """Carry out the session's events until it has nothing more to say, then send."""
        await self._handle_events(link)
        await self._flush(link)

    async def _flush(self, link: Link) -> None:
        for data in link.session.data_to_send():
            try:
                await link.ws.send(data)
            except Exception:
                return  # the connection is gone; the receive loop sees it and cleans up

    async def _handle_events(self, link: Link) -> None:
        session = link.session
        while events := session.events():
            for event in events:
                await self._on_event(link, event)

    async def _on_event(self, link: Link, event: s.Event) -> None:
        session = link.session
        now = self.clock()
        if isinstance(event, s.PeerAuthenticated):
            await self._on_authenticated(link, event.peer, now)
        elif isinstance(event, s.PeerIdentified):
            m = event.manifest.manifest
            await self.store.record_manifest(
                str(event.peer), event.manifest.to_bytes(), m.seq, m.name, list(m.endpoints)
            )
            log.info("session with %s (%s) open as %s", event.peer.short, m.name, session.tier)
        elif isinstance(event, s.SyncReady):
            peer = str(session.peer)
            keys = await (self.store.shareable_keys() if event.send else self.store.keys_from(peer))
            session.start_sync(ItemSet(keys), now)
        elif isinstance(event, s.PacketsWanted):
            stored = await self.store.get_packets(list(event.ids))
            session.send_packets([sp.packet for sp in stored if not sp.quarantined], now)
        elif isinstance(event, s.PacketsReceived):
            await self._ingest.put((link, event))
        elif isinstance(event, s.QueryReceived):
            await self._answer_query(link, event)
        elif isinstance(event, s.QueryAnswered):
            future = self._queries.get((str(session.peer), event.query_id))
            if future is not None and not future.done():
                future.set_result((list(event.packets), event.more))
        elif isinstance(event, s.Audited):
            self._decisions.extend(event.records)
        elif isinstance(event, s.Misbehaviour):
            await self._audit(link, event.code, event.reason, event.fatal)
        elif isinstance(event, s.PeerReportedError):
            log.warning("peer %s reported %s: %s", link.peer_id and link.peer_id[:8], event.code, event.reason)
        elif isinstance(event, s.SyncCompleted):
            log.info("synced with %s: offered %d, wanted %d", link.peer_id and link.peer_id[:8], event.offered, event.wanted)
        elif isinstance(event, s.Closed):
            if link.dialled_url and link.dialled_url in self._targets:
                self._targets[link.dialled_url].connected = False
            log.info("session with %s closed: %s (%s)", link.peer_id and link.peer_id[:8] or link.remote, event.code, event.reason)

    async def _on_authenticated(self, link: Link, peer: NodeId, now: float) -> None:
        session = link.session
        peer_id = str(peer)
        for other in self.links:
            if other is link or other.session.peer != peer or other.session.state is s.State.CLOSED:
                continue
            if s.keep_existing_session(self.node_id, peer, other.session.role, session.role):
                session.close(ErrorCode.DUPLICATE_SESSION, "a session with this peer is already open", now)
                return
            # Never take another link's lock while holding ours (two links could wait on each
            # other): act on it from its own task.
            self._spawn(
                self._close_link(other, ErrorCode.DUPLICATE_SESSION, "replaced by a newer session"),
                "close duplicate",
            )
        endpoints = [link.dialled_url] if link.dialled_url else []
        await self.store.add_peer(peer_id, endpoints=endpoints)
        if link.dialled_url:
            await self.store.bind_endpoint(link.dialled_url, peer_id)
            target = self._targets.get(link.dialled_url)
            if target is not None:
                target.failures = 0
        record = await self.store.get_peer(peer_id)
        session.admit(record.tier, now, held_seq=record.manifest_seq, strikes=record.strikes)

    async def _write_received(self) -> None:
        """The ingest writer: store received packets, dependencies first, then pass them on."""
        while True:
            batch = [await self._ingest.get()]
            while not self._ingest.empty() and len(batch) < 16:
                batch.append(self._ingest.get_nowait())
            try:
                await self._store_batch(batch)
            except Exception:
                log.exception("storing received packets failed; they will come again at the next sync")
            finally:
                for _ in batch:
                    self._ingest.task_done()

    async def _store_batch(self, batch: list[tuple[Link, s.PacketsReceived]]) -> None:
        stored: list[tuple[Link, bool, list[Packet]]] = []
        missing: list[tuple[Link, set[bytes]]] = []
        async with self.store.transaction():  # one commit for everything in the queue
            await self._write_audit()  # the decisions that let these packets in, atomically with them
            for link, event in batch:
                peer_id = str(link.session.peer)
                deps = Intake.dependencies(event.packets)
                held = await self.store.held_ids(list(deps)) if deps else set()
                admission = self.intake.admit(event.packets, held)
                ready, new = admission.ready, []
                while ready:
                    new += await self.store.put_packets(ready, source=peer_id, quarantined=event.quarantine)
                    ready = self.intake.stored(p.id for p in ready)
                stored.append((link, event.quarantine, new))
                if admission.missing:
                    missing.append((link, admission.missing))
        for link, ids in missing:
            self._spawn(self._want_from(link, ids), "want dependencies")
        for link, quarantined, new in stored:
            if new and not quarantined:
                # Sandbox packets are never re-shared; everything else flows on to our other peers.
                await self._push(new, source=link.peer_id)

    async def _want_from(self, link: Link, ids: set[bytes]) -> None:
        async with link.lock:
            link.session.want(sorted(ids), self.clock(), first=True)  # sorted: no hash-seed order
            await self._flush(link)

    async def _push(self, packets: list[Packet], *, source: str | None) -> None:
        if not packets:
            return
        for other in list(self.links):
            if other.peer_id is None or other.peer_id == source or other.session.state is not s.State.OPEN:
                continue
            if other.session.flows[0]:
                # From the other link's own task, for the same reason as in _on_authenticated.
                self._spawn(self._push_to(other, packets), "push")

    async def _push_to(self, link: Link, packets: list[Packet]) -> None:
        async with link.lock:
            link.session.push(packets, self.clock())
            await self._flush(link)

    async def _close_link(self, link: Link, code: str, reason: str) -> None:
        async with link.lock:
            link.session.close(code, reason, self.clock())
            await self._settle(link)
        await link.ws.close(code=CLOSE_CODE_BASE, reason=code)

    async def _answer_query(self, link: Link, event: s.QueryReceived) -> None:
        stored = await self.store.list_packets(topic=event.topic, limit=event.limit)
        link.session.answer_query(
            event.query_id, [sp.packet for sp in stored if not sp.quarantined], self.clock()
        )

    async def _write_audit(self) -> None:
        """Write pending policy decisions as ledger events (many decisions per event)."""
        while self._decisions:
            chunk, self._decisions = self._decisions[:AUDIT_CHUNK], self._decisions[AUDIT_CHUNK:]
            await self.store.append_event(EventKind.POLICY_DECISION, "", {"decisions": chunk})

    async def _write_audit_periodically(self) -> None:
        while True:
            await asyncio.sleep(AUDIT_FLUSH_SECONDS)
            try:
                await self._write_audit()
            except ArkLatticeError as exc:
                log.warning("could not write the audit trail: %s", exc)

    def replace_policy(self, policy: Any) -> None:
        """A new policy takes effect on the next packet of every session."""
        if self.gate is not None:
            self.gate.replace(policy)

    @property
    def strikes_to_block(self) -> int:
        return self.gate.strikes_to_block if self.gate is not None else STRIKES_TO_BLOCK

    async def _audit(self, link: Link, code: str, reason: str, fatal: bool) -> None:
        """Record misbehaviour; a known peer gets a strike and is isolated past the threshold."""
        peer_id = link.peer_id
        subject = peer_id or link.remote
        log.warning("peer %s misbehaved: %s: %s", subject[:16], code, reason)
        await self.store.audit_protocol_error(subject, code, reason, fatal)
        if peer_id is None:
            return
        try:
            strikes = await self.store.add_strike(peer_id, code, reason)
        except NotFound:
            return
        if self.strikes_to_block and strikes >= self.strikes_to_block:
            if self.gate is not None:
                record = await self.store.get_peer(peer_id)
                decision, audit = self.gate.tier_change(
                    peer_id=peer_id, old_tier=record.tier.value, new_tier="blocked", actor="policy",
                    strikes=strikes, now=self.clock(),
                )
                self._decisions.append(audit)
                if not decision.allowed:
                    return
            old = await self.store.set_tier(
                peer_id, TrustTier.BLOCKED, reason=f"isolated after {strikes} strikes; last: {code}: {reason}"
            )
            if old is not TrustTier.BLOCKED:
                self.isolated.append({"peer": peer_id, "strikes": strikes, "last": code, "at": self.clock()})
                log.warning("isolated peer %s after %d strikes", peer_id[:16], strikes)
            link.session.set_tier(TrustTier.BLOCKED, self.clock())

    # -- dialling ---------------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Dial remembered endpoints with backoff; start periodic reconciliations."""
        while True:
            now = self.clock()
            if self._targets_stale or now - self._targets_read_at >= REFRESH_SECONDS:
                self._targets_stale, self._targets_read_at = False, now
                await self._refresh_targets()
            dials = 0
            for target in self._targets.values():
                if dials == DIALS_PER_TICK:
                    break  # rate limit: a flood of announcements cannot make us dial a crowd
                if not target.connected and now >= target.next_attempt and not self._closing:
                    target.connected = True
                    dials += 1
                    self._spawn(self._dial(target), f"dial {target.url}")
            if self.auto_sync and self.clock() - self._last_sync >= self.sync_interval:
                self._last_sync = self.clock()
                await self.sync_now()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=TICK_SECONDS)
            except asyncio.TimeoutError:
                pass

    def _targets_changed(self) -> None:
        self._targets_stale = True
        self._wake.set()

    async def _refresh_targets(self) -> None:
        """Dial endpoints never identified yet, and those of peers whose tier gives a session work."""
        wanted = {url for url, peer_id in await self.store.endpoints() if peer_id is None}
        for peer in await self.store.list_peers():
            if s.worth_a_session(peer.tier):
                if self._link_for(peer.id) is None:
                    wanted.update(peer.endpoints)
        for url in sorted(wanted):  # dial order must not depend on the hash seed (simulator)
            self._targets.setdefault(url, _Target(url))
        for url in list(self._targets):
            if url not in wanted and not self._targets[url].connected:
                del self._targets[url]

    async def _dial(self, target: _Target) -> None:
        reached_open = False
        try:
            async with self._connect(target.url) as ws:
                session = await self._run(ws, s.Role.INITIATOR, target.url, target.url, None)
                reached_open = session.peer_manifest is not None
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("could not reach %s: %s", target.url, exc)
        except Exception as exc:
            log.info("connection to %s failed: %s", target.url, exc)
        finally:
            target.connected = False
            target.failures = 0 if reached_open else target.failures + 1
            delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(target.failures, 10))
            target.next_attempt = self.clock() + delay * self.rng.uniform(0.5, 1.5)
            self._targets_changed()

    # -- helpers ----------------------------------------------------------------------------

    def _link_for(self, peer_id: str) -> Link | None:
        for link in self.links:
            if link.peer_id == peer_id and link.session.state is s.State.OPEN:
                return link
        return None

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _websocket_connect(url: str) -> Any:
    from websockets.asyncio.client import connect

    return connect(url, max_size=MAX_FRAME, open_timeout=10, ping_interval=None, compression=None)


def _address(remote: Any) -> str:
    if isinstance(remote, tuple) and len(remote) >= 2:
        return f"{remote[0]}:{remote[1]}"
    return str(remote)
