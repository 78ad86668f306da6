"""The running node: a WebSocket listener, the control socket and signal handling around a LocalNode.

This is a pump: it owns sockets, tasks and timers, and hands bytes and events to the protocol core.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from ark_lattice import __version__, tail
from ark_lattice.alertlog import stored_alerts
from ark_lattice.discovery import DiscoveryConfig
from ark_lattice.node import LocalNode
from ark_lattice.protocol.handshake import MSG1_SIZE
from ark_lattice.runtime.control import ControlServer
from ark_lattice.runtime.sdnotify import Notifier

__all__ = ["NodeRuntime"]

log = logging.getLogger("ark_lattice.node")

RECENT_ALERTS = 5  # alerts `federation status` shows, newest first


class NodeRuntime:
    def __init__(
        self,
        node: LocalNode,
        *,
        bind: str,
        port: int,
        anchor_interval: float = 300.0,
        sync_interval: float = 60.0,
        auto_sync: bool = True,
        discovery: DiscoveryConfig | None = None,
        idle_timeout: float | None = None,
        metrics: tuple[str, int] | None = None,
    ) -> None:
        from ark_lattice.policy.gate import PolicyGate
        from ark_lattice.protocol.session import SessionConfig
        from ark_lattice.runtime.peering import Federation

        self.node = node
        self.bind = bind
        self.port = port
        self.anchor_interval = anchor_interval
        self.federation = Federation(
            node.store,
            node.identity,
            node.federation_key(),
            name=node.config.name,
            sync_interval=sync_interval,
            auto_sync=auto_sync,
            gate=PolicyGate(node.load_policy(), node.config.node_id),
            config=SessionConfig().with_idle_timeout(idle_timeout) if idle_timeout else SessionConfig(),
        )
        from ark_lattice.runtime.joining import JoinService

        self.joins = JoinService(node, lambda: self.federation.federation_key, on_joined=self._joined)
        self.federation.policy_sink = self._adopt_policy  # an adopted policy proposal (governance)
        self.discovery_config = discovery if discovery is not None else DiscoveryConfig()
        self.discovery: Any = None  # discovery/lan.py, once started
        self._tasks: list[asyncio.Task[None]] = []
        self._denials = tail.RecentDenials()  # for `federation status`
        self.started_at = 0.0
        self._stopping = asyncio.Event()
        # The control socket serves before the federation starts (it is what refuses a second
        # node on this home); a status asked in between waits the moment until it is up.
        self._federation_started = asyncio.Event()
        self._server: Any = None
        self._systemd = Notifier()  # READY=1, WATCHDOG=1, STOPPING=1 under systemd; else no-ops
        self.metrics_server: Any = None  # runtime/exposition.py, with `start --metrics HOST:PORT`
        from ark_lattice.runtime.publishing import Publisher

        self.publisher = Publisher(node, self.federation)  # `packets publish` through the node
        if metrics is not None:
            from ark_lattice.runtime.exposition import MetricsServer

            self.metrics_server = MetricsServer(*metrics, self.federation.metric_families)
        self._control = ControlServer(
            node.home.control_path,
            {
                "status": self._status,
                "packets_changed": self._packets_changed,
                "peers_changed": self._peers_changed,
                "stop": self._stop_command,
                "add_peer": self._add_peer,
                "auto_sync": self._auto_sync,
                "sync_now": self._sync_now,
                "query": self._query,
                "policy_reload": self._policy_reload,
                "discovered": self._discovered,
                "raise_alert": self._raise_alert,
                "lift_quarantine": self._lift_quarantine,
                "metrics": self._metrics,
                "invite": self._invite,
                "join": self._join,
                "endpoints": self._endpoints,
                "federation_key_changed": self._federation_key_changed,
                "invites": self._invites,
                "revoke_invite": self._revoke_invite,
                "checkpoint_made": self._checkpoint_made,
                "publish_governance": self._publish_governance,
                "publish": self.publisher.publish,
                "sign_bundle": self.publisher.sign_bundle,
            },
        )

    @property
    def listen_url(self) -> str:
        host = self.bind if ":" not in self.bind else f"[{self.bind}]"
        return f"ws://{host}:{self.port}"

    async def run(self) -> None:
        """Serve until SIGINT/SIGTERM (or a `stop` control command), then shut down cleanly."""
        from ark_lattice.runtime.allocator import keep_large_buffers
        from ark_lattice.runtime.collector import collect_rarely

        # A serving node moves megabyte frames: reuse them, and give back what a sync freed.
        tuned = keep_large_buffers()
        await self.start()
        collect_rarely()  # after start-up: what it made is frozen out of every collection
        if tuned:
            self._tasks.append(asyncio.create_task(self._give_back_memory(), name="allocator"))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()

    async def start(self) -> None:
        from websockets.asyncio.server import serve

        from ark_lattice.errors import UsageError

        if self.metrics_server is not None:
            await self.metrics_server.start()  # first: an address it cannot bind stops us before peers see us

        from ark_lattice.runtime.guard import install_exception_handler, raise_open_file_limit

        install_exception_handler(asyncio.get_running_loop(), time.monotonic)
        if (raised := raise_open_file_limit()) is not None:
            log.info("open file limit raised from %d to %d", *raised)
        try:
            self._server = await serve(
                self._accept,
                self.bind,
                self.port,
                # msg1 until the session says more (Session.receive_limit); then one encrypted
                # frame (MAX_FRAME). websockets closes with 1009 past it, unread.
                max_size=MSG1_SIZE,
                ping_interval=None,  # heartbeats are the session's own (protocol/session.py)
                compression=None,  # frames are ciphertext: nothing to gain
                # Strangers' caps, bounded write buffers, pipelined requests (runtime/guard.py).
                create_connection=self.federation.server_connection_class(),
            )
        except OSError as exc:
            raise UsageError(f"cannot listen on {self.bind}:{self.port}: {exc.strerror}") from None
        self.port = self._server.sockets[0].getsockname()[1]  # the real one when asked for port 0
        try:
            # Last, so a client that finds the control socket finds the node fully up.
            await self._control.start()
        except BaseException:
            self._server.close()
            await self._server.wait_closed()
            raise
        self.started_at = time.monotonic()
        await self.federation.start(self._advertised_endpoints())
        self._federation_started.set()
        await self._start_discovery()
        self._tasks.append(asyncio.create_task(self._anchor_periodically(), name="anchor"))
        log.info("node %s listening on %s", self.node.node_id.short, self.listen_url)
        self._tasks.append(asyncio.create_task(self._systemd.keep_alive(), name="watchdog"))
        self._systemd.ready(f"listening on {self.listen_url}")

    async def stop(self) -> None:
        log.info("stopping")
        self._systemd.stopping()
        if self._server is not None:
            self._server.close(close_connections=False)  # no new connections from here on
        if self.discovery is not None:
            await self.discovery.stop()  # goodbyes go out while the node still answers
        await self.federation.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.metrics_server is not None:
            await self.metrics_server.close()
        await self._control.close()
        log.info("stopped")

    async def _give_back_memory(self) -> None:
        """Hand the heaps' free pages back to the kernel when the node goes quiet (runtime/allocator.py)."""
        from ark_lattice.runtime.allocator import GIVE_BACK_INTERVAL, GiveBackSchedule, give_back

        schedule = GiveBackSchedule()
        cpu = time.process_time()  # every thread of the process: the verifiers and the writer too
        while True:
            await asyncio.sleep(GIVE_BACK_INTERVAL)
            now = time.process_time()
            used, cpu = now - cpu, now
            if schedule.after(used):
                await asyncio.to_thread(give_back)  # it holds each heap's lock a moment: not the loop

    async def _anchor_periodically(self) -> None:
        """Sign a checkpoint whenever the ledger has grown, every ``anchor_interval`` seconds."""
        from ark_lattice import ledger
        from ark_lattice.errors import ArkLatticeError

        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.anchor_interval)
                return
            except TimeoutError:
                pass
            try:
                checkpoint, new = await ledger.anchor(self.node.store, self.node.identity)
            except ArkLatticeError as exc:
                log.warning("could not anchor the ledger: %s", exc)
                continue
            if new:
                log.info("anchored the ledger at %d events", checkpoint.size)
                await self.federation.checkpoint_made()  # our core peers cosign it

    async def _start_discovery(self) -> None:
        """LAN discovery (DESIGN §7); a failure leaves a node that still serves its known peers."""
        from ark_lattice.discovery.lan import Discovery

        self.discovery = Discovery(
            config=self.discovery_config,
            bind=self.bind,
            port=self.port,
            identity=self.node.identity,
            name=self.node.config.name,
            on_peer=self._peer_discovered,
        )
        try:
            await self.discovery.start()
        except Exception as exc:
            log.warning("LAN discovery could not start: %s", exc)
            await self.discovery.stop()

    async def _peer_discovered(self, peer_id: str, endpoints: list[str], source: str) -> None:
        await self.federation.discovered(peer_id, endpoints, source=source)

    def _advertised_endpoints(self) -> list[str]:
        # A wildcard bind is reachable at each LAN address; these are what discovery announces.
        if self.bind in ("0.0.0.0", "::", ""):
            from ark_lattice.discovery.lan import endpoints_for, lan_addresses

            return endpoints_for(lan_addresses(self.bind)[0], self.port)
        return [self.listen_url]

    async def _accept(self, ws: Any) -> None:
        """An inbound WebSocket: a join on the /join path (runtime/joining.py), else a session."""
        from ark_lattice.protocol.invites import JOIN_PATH

        request = getattr(ws, "request", None)
        if request is not None and request.path.split("?")[0] == JOIN_PATH:
            await self.joins.serve(ws)
            return
        await self.federation.accept(ws)

    async def _discovered(self, _args: dict[str, Any]) -> dict[str, Any]:
        from ark_lattice.membership import classify_sightings

        if self.discovery is None:
            return {"running": True, "mdns": "off", "beacon": "off", "seen": []}
        doc: dict[str, Any] = self.discovery.snapshot()
        members = {p.id for p in await self.node.store.list_peers() if p.last_seen is not None}
        targets = self.federation.dial_targets()
        doc["seen"] = classify_sightings(
            doc.get("seen", []),
            members=members,
            foreign_urls={t["url"] for t in targets if t["foreign"]},
            foreign_hosts={c["address"] for c in self._core_foreign()},
        )
        return doc

    def _core_foreign(self) -> list[dict[str, Any]]:
        core = self.federation.core
        return core.foreign_callers() if core is not None else []

    async def _invite(self, args: dict[str, Any]) -> dict[str, Any]:
        from ark_lattice.tiers import TrustTier

        endpoints = list(args.get("endpoints") or []) or self._advertised_endpoints()
        invite = await self.joins.issue(
            endpoints, expires_in=float(args["expires_in"]), uses=int(args["uses"]),
            tier=TrustTier.parse(str(args["tier"])),
        )
        return {"invite": invite.to_text(), "id": invite.hex_id, "expires_at": invite.expires_at,
                "endpoints": list(invite.endpoints)}

    async def _join(self, args: dict[str, Any]) -> dict[str, Any]:
        from ark_lattice.protocol.invites import Invite
        from ark_lattice.runtime.joining import apply_welcome, join
        from ark_lattice.tiers import TrustTier

        invite = Invite.parse(str(args["invite"]))
        tier = TrustTier.parse(str(args.get("tier") or "core"))
        welcome = await join(self.node.identity, invite)
        result = await apply_welcome(self.node, invite, welcome, tier=tier)
        log.info("joined the federation of %s (%s) with invite %s", welcome.inviter.short, welcome.name,
                 invite.hex_id[:8])
        await self.federation.rekey(welcome.federation_key)  # and dial the inviter at once
        return result

    async def _invites(self, _args: dict[str, Any]) -> list[dict[str, Any]]:
        return self.joins.listing()

    async def _revoke_invite(self, args: dict[str, Any]) -> str:
        return await self.joins.revoke(str(args["id"]))

    async def _federation_key_changed(self, _args: dict[str, Any]) -> None:
        await self.federation.rekey(self.node.federation_key())

    async def _joined(self, _joiner: str) -> None:
        await self.federation.tiers_changed()

    async def _endpoints(self, _args: dict[str, Any]) -> list[dict[str, Any]]:
        from ark_lattice.membership import endpoint_listing

        store = self.node.store
        return endpoint_listing(
            await store.endpoint_rows(), await store.list_peers(),
            targets=self.federation.dial_targets(), connections=self.federation.connections(),
        )

    async def _status(self, _args: dict[str, Any]) -> dict[str, Any]:
        await self._federation_started.wait()
        store = self.node.store
        connections = self.federation.connections()
        # Authenticated peers only: a stranger's failures are summarised per address, and a
        # crowd of strangers must not cost a query each.
        errors = await tail.last_errors(store, (c["peer"] for c in connections if c["peer"]))
        for conn in connections:
            last = errors.get(conn["peer"] or conn["remote"], {})
            conn["last_error"], conn["last_error_at"] = last.get("error"), last.get("at")
        # Asked every second or two (`status --watch`, scripts polling a node that syncs), so
        # every part is an index search or a kept count, never a scan: the counts are kept by the
        # store, the alerts come from the (kind, created_at, id) index, denials are read
        # incrementally (tail.py).
        ledger = await tail.summary(store)
        return {
            "now": time.time(),
            "node_id": self.node.config.node_id,
            "name": self.node.config.name,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "listen": self.listen_url,
            "packets": await store.packet_count(),
            "quarantined": await store.packet_count(quarantined=True),
            "peers": await store.peer_count(),
            "events": ledger["events"],
            "connections": connections,
            "strangers": self.federation.strangers.connected,  # unauthenticated connections now
            "auto_sync": self.federation.auto_sync,
            "sync_interval": self.federation.sync_interval,
            "isolated": self.federation.isolated,
            "quarantines": self.federation.quarantined(),
            "dialling": self.federation.dial_targets(),
            "pending": len(await store.pending_peers()),
            "foreign": self._core_foreign(),
            "denials": await self._denials.read(store),
            "alerts": [view.to_json() for view in await stored_alerts(store, limit=RECENT_ALERTS)],
            "ledger": ledger,
            "store_access": store.access.to_json(),  # lock retries so far (store/access.py)
            "policy": self.federation.gate.policy.digest if self.federation.gate is not None else None,
            "published": self.publisher.count,
            "control": str(self._control.path),
        }

    async def _packets_changed(self, _args: dict[str, Any]) -> None:
        await self.federation.local_packets_changed()

    async def _peers_changed(self, _args: dict[str, Any]) -> None:
        await self.federation.tiers_changed()

    async def _add_peer(self, args: dict[str, Any]) -> None:
        await self.federation.add_peer(str(args["url"]))

    async def _auto_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        interval = args.get("interval")
        await self.federation.set_auto_sync(bool(args["enabled"]), float(interval) if interval else None)
        return {"auto_sync": self.federation.auto_sync, "interval": self.federation.sync_interval}

    async def _sync_now(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {"started": await self.federation.sync_now()}

    async def _policy_reload(self, _args: dict[str, Any]) -> dict[str, Any]:
        policy = self.node.load_policy()  # a bad file raises here and the old policy stays
        self.federation.replace_policy(policy)
        log.info("policy reloaded (%s)", policy.digest[:16])
        return {"digest": policy.digest}

    async def _query(self, args: dict[str, Any]) -> dict[str, Any]:
        packets, more = await self.federation.query(str(args["peer"]), str(args["topic"]), int(args["limit"]))
        if args.get("save"):
            peer_id = await self.node.store.resolve_peer(str(args["peer"]))
            await self.node.store.put_packets(packets, source=peer_id)
        return {
            "packets": [
                {
                    "id": p.hex_id,
                    "topic": p.header.topic,
                    "kind": p.header.kind,
                    "author": str(p.header.author),
                    "created_at": p.header.created_at,
                    "size": p.header.body_size,
                    "body": p.body.decode("utf-8", errors="replace"),
                }
                for p in packets
            ],
            "more": more,
            "saved": bool(args.get("save")),
        }

    async def _metrics(self, _args: dict[str, Any]) -> dict[str, Any]:
        """The metric set `start --metrics` serves (runtime/metrics.py), for `federation metrics`."""
        families = await self.federation.metric_families()
        endpoint = self.metrics_server.url if self.metrics_server is not None else None
        return {"endpoint": endpoint, "metrics": [family.to_json() for family in families]}

    async def _raise_alert(self, args: dict[str, Any]) -> dict[str, Any]:
        from ark_lattice.alerts import DEFAULT_TOPIC
        from ark_lattice.errors import UsageError

        evidence = args.get("evidence")
        try:
            raw = bytes.fromhex(str(evidence)) if evidence else None
        except ValueError:
            raise UsageError("the evidence must be hex") from None
        about = args.get("about")
        alert_id = await self.federation.raise_alert(
            str(args["severity"]), str(args["message"]), about=str(about) if about else None,
            topic=str(args.get("topic") or DEFAULT_TOPIC), evidence=raw,
        )
        return {"id": alert_id}

    async def _publish_governance(self, args: dict[str, Any]) -> dict[str, Any]:
        """A governance packet of ours the CLI signed (`governance propose|approve`): stored and
        flooded in one step by the node's own writer."""
        from ark_lattice.governance.documents import GOVERNANCE_KINDS, packet_from_bytes

        packet = packet_from_bytes(bytes.fromhex(str(args["packet"])))  # verified: Malformed if not
        if packet.header.kind not in GOVERNANCE_KINDS or packet.header.author != self.node.node_id:
            from ark_lattice.errors import UsageError

            raise UsageError("only this node's own governance packets are published this way")
        await self.node.store.put_packets([packet])
        await self.federation.local_packets_changed()
        return {"id": packet.hex_id}

    async def _adopt_policy(self, text: str, source: str) -> None:
        """A policy the federation adopted: the same path as `policy set`, then in force at once."""
        policy = await self.node.set_policy(text, source)
        self.federation.replace_policy(policy)
        log.info("policy %s adopted by %s", policy.digest[:16], source)

    async def _lift_quarantine(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"peer": await self.federation.lift_quarantine(str(args["peer"]))}

    async def _checkpoint_made(self, _args: dict[str, Any]) -> None:
        """`ledger anchor` signed a checkpoint: our core peers are asked to cosign it."""
        await self.federation.checkpoint_made()

    async def _stop_command(self, _args: dict[str, Any]) -> None:
        self._stopping.set()
