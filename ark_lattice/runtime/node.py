"""The running node: a WebSocket listener, the control socket and signal handling around a LocalNode.

This is a pump: it owns sockets, tasks and timers, and hands bytes and events to the protocol core.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from ark_lattice import __version__
from ark_lattice.node import LocalNode
from ark_lattice.runtime.control import ControlServer

__all__ = ["NodeRuntime"]

log = logging.getLogger("ark_lattice.node")


class NodeRuntime:
    def __init__(
        self, node: LocalNode, *, bind: str, port: int, anchor_interval: float = 300.0
    ) -> None:
        self.node = node
        self.bind = bind
        self.port = port
        self.anchor_interval = anchor_interval
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = 0.0
        self._stopping = asyncio.Event()
        self._server: Any = None
        self._control = ControlServer(
            node.home.control_path,
            {
                "status": self._status,
                "packets_changed": self._packets_changed,
                "peers_changed": self._peers_changed,
                "stop": self._stop_command,
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

        try:
            self._server = await serve(self._accept, self.bind, self.port, max_size=None)
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
        self._tasks.append(asyncio.create_task(self._anchor_periodically(), name="anchor"))
        log.info("node %s listening on %s", self.node.node_id.short, self.listen_url)

    async def stop(self) -> None:
        log.info("stopping")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
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
            except asyncio.TimeoutError:
                pass
            try:
                checkpoint, new = await ledger.anchor(self.node.store, self.node.identity)
            except ArkLatticeError as exc:
                log.warning("could not anchor the ledger: %s", exc)
                continue
            if new:
                log.info("anchored the ledger at %d events", checkpoint.size)

    async def _accept(self, connection: Any) -> None:
        # Sessions arrive with the sync protocol; until then, refuse politely.
        await connection.close(code=1013, reason="sync not available yet")

    async def _status(self, _args: dict[str, Any]) -> dict[str, Any]:
        store = self.node.store
        return {
            "node_id": self.node.config.node_id,
            "name": self.node.config.name,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "listen": self.listen_url,
            "packets": await store.packet_count(),
            "quarantined": await store.packet_count(quarantined=True),
            "peers": await store.peer_count(),
            "events": await store.event_count(),
            "connections": [],
        }

    async def _packets_changed(self, _args: dict[str, Any]) -> None:
        return None

    async def _peers_changed(self, _args: dict[str, Any]) -> None:
        return None

    async def _stop_command(self, _args: dict[str, Any]) -> None:
        self._stopping.set()
