"""A store error in one session never ends another (runtime/peering.py with store/access.py)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import nacl.utils
import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from ark_lattice.identity import Identity
from ark_lattice.protocol.channel import MAX_FRAME
from ark_lattice.protocol.session import State
from ark_lattice.runtime.peering import Federation
from ark_lattice.store.access import RetryPolicy
from ark_lattice.store.store import Store

from test_hostile_peers import RoguePeer


async def test_a_session_whose_store_write_fails_ends_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="ark_lattice")
    key = nacl.utils.random(32)
    store = await Store.open(tmp_path / "ledger.db", retry=RetryPolicy(budget=0.3))
    federation = Federation(store, Identity.generate(), key, name="n", auto_sync=False)
    await federation.start([])
    # As the node serves (runtime/node.py): no compression, so a frame is the size the session allows.
    server = await serve(
        federation.accept, "127.0.0.1", 0, max_size=MAX_FRAME, ping_interval=None, compression=None
    )
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=10, check_same_thread=False)
    try:
        first = await RoguePeer(key).connect(url)

        def open_peers() -> set[str | None]:
            return {c["peer"] for c in federation.connections() if c["state"] == State.OPEN.value}

        await _until(lambda: str(first.identity.node_id) in open_peers())
        # The first session's last write, its peer's manifest, is done before the lock is taken:
        # else that session could be the one that waits past the budget.
        deadline = asyncio.get_running_loop().time() + 10
        while (await store.get_peer(str(first.identity.node_id))).manifest is None:
            assert asyncio.get_running_loop().time() < deadline, "the first manifest was not recorded"
            await asyncio.sleep(0.01)
        # Another process holds the write lock past the budget while a second peer arrives: the
        # node cannot record it, so that session ends (one log line) and the first goes on.
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")  # the loop serves meanwhile
        second = RoguePeer(key)
        with pytest.raises((ConnectionClosed, TimeoutError, AssertionError)):
            await second.connect(url)
            await second.closed_code(timeout=10)
            raise AssertionError("closed")
        await _until(lambda: str(second.identity.node_id) not in open_peers())
        other.execute("ROLLBACK")
        assert str(first.identity.node_id) in open_peers()
        assert first.ws.close_code is None  # the first peer's connection was never touched
        # The node carries on: a third peer is recorded and opens once the lock is free.
        third = await RoguePeer(key).connect(url)
        await _until(lambda: str(third.identity.node_id) in open_peers())
        assert str(first.identity.node_id) in open_peers()
        assert store.access.gave_up >= 1
        ended = [r for r in caplog.records if "stayed locked" in r.getMessage()]
        assert ended and all(r.exc_info is None for r in caplog.records)  # a line, no traceback
        assert all(not t.done() for t in federation._tasks)  # wake-up, ingest and audit tasks live
    finally:
        other.close()
        server.close()
        await federation.stop()
        await server.wait_closed()
        await store.close()


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition did not hold in time"
        await asyncio.sleep(0.01)
