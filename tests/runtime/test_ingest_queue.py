"""The ingest queue's back-pressure (runtime/peering.py ``Federation.ingest``): the links stop
reading while INGEST_QUEUE frames or INGEST_QUEUED_PACKETS packets wait for the writer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nacl.utils

from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.protocol import actions as act
from ark_lattice.runtime import peering
from ark_lattice.runtime.peering import Federation
from ark_lattice.store.store import Store

PEER = Identity.generate()
NOTE = Packet.create(PEER, topic="t", kind="note", body=b"x", created_at=1 << 16)


def _frame(packets: int) -> act.Ingest:
    return act.Ingest(link=1, peer=str(PEER.node_id), packets=(NOTE,) * packets, quarantine=False)


async def _admitted(federation: Federation, frames: list[act.Ingest]) -> int:
    """How many of ``frames`` the queue takes, one after the other, while no writer runs."""
    for taken, frame in enumerate(frames):
        put = asyncio.ensure_future(federation.ingest(frame))
        for _ in range(10):  # nothing else runs: a put that can go through has gone through
            await asyncio.sleep(0)
        if not put.done():
            put.cancel()
            return taken
    return len(frames)


async def test_frames_of_small_packets_queue_a_transactions_worth(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "ledger.db")
    try:
        federation = Federation(store, Identity.generate(), nacl.utils.random(32), name="n", auto_sync=False)
        # A catch-up frame answers a want of 512 ids: four of them, as the queue of four frames held.
        assert await _admitted(federation, [_frame(512)] * 8) == peering.INGEST_QUEUED_PACKETS // 512 == 4
    finally:
        await store.close()


async def test_frames_of_one_large_packet_queue_up_to_the_frame_limit(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "ledger.db")
    try:
        federation = Federation(store, Identity.generate(), nacl.utils.random(32), name="n", auto_sync=False)
        assert await _admitted(federation, [_frame(1)] * 20) == peering.INGEST_QUEUE == 16
    finally:
        await store.close()
