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
        self.discovery_config = discovery if discovery is not None else DiscoveryConfig()
        self.discovery: Any = None  # discovery/lan.py, once started
        self._tasks: list[asyncio.Task[None]] = []
        self._denials = tail.RecentDenials()  # for `federation status`
        self.started_at = 0.0
        self._stopping = asyncio.Event()
        self._server: Any = None
        self.metrics_server: Any = None  # runtime/exposition.py, with `start --metrics HOST:PORT`
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
            },
        )

    @property
    def listen_url(self) -> str:
        host = self.bind if ":" not in self.bind else f"[{self.bind}]"
        return f"ws://{host}:{self.port}"

    async def run(self) -> None:
        """Serve until SIGINT/SIGTERM (or a `stop` control command), then shut down cleanly."""
        await self.start()
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
                self.federation.accept,
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
        await self._start_discovery()
        self._tasks.append(asyncio.create_task(self._anchor_periodically(), name="anchor"))
        log.info("node %s listening on %s", self.node.node_id.short, self.listen_url)

    async def stop(self) -> None:
        log.info("stopping")
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

    async def _discovered(self, _args: dict[str, Any]) -> dict[str, Any]:
        if self.discovery is None:
            return {"running": True, "mdns": "off", "beacon": "off", "seen": []}
        return self.discovery.snapshot()

    async def _status(self, _args: dict[str, Any]) -> dict[str, Any]:
        store = self.node.store
        connections = self.federation.connections()
        # Authenticated peers only: a stranger's failures are summarised per address, and a
        # crowd of strangers must not cost a query each.
        errors = await tail.last_errors(store, (c["peer"] for c in connections if c["peer"]))
        for conn in connections:
            last = errors.get(conn["peer"] or conn["remote"], {})
            conn["last_error"], conn["last_error_at"] = last.get("error"), last.get("at")
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
            "events": await store.event_count(),
            "connections": connections,
            "strangers": self.federation.strangers.connected,  # unauthenticated connections now
            "auto_sync": self.federation.auto_sync,
            "sync_interval": self.federation.sync_interval,
            "isolated": self.federation.isolated,
            "quarantines": self.federation.quarantined(),
            "dialling": self.federation.dial_targets(),
            "denials": await self._denials.read(store),
            "alerts": [view.to_json() for view in await stored_alerts(store, limit=RECENT_ALERTS)],
            "ledger": await tail.summary(store),
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

    async def _lift_quarantine(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"peer": await self.federation.lift_quarantine(str(args["peer"]))}

    async def _stop_command(self, _args: dict[str, Any]) -> None:
        self._stopping.set()
