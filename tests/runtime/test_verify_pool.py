"""Two in-process nodes over real WebSockets on 127.0.0.1: big frames are opened by the link's
owner, verified on the verifier pool several at once, and delivered to the session in order
(runtime/peering.py, protocol/receipt.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nacl.utils
from websockets.asyncio.server import serve

from ark_lattice.hlc import pack
from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.policy.engine import Policy
from ark_lattice.policy.gate import PolicyGate
from ark_lattice.protocol.channel import MAX_FRAME
from ark_lattice.protocol.session import Session, SessionConfig
from ark_lattice.protocol.transfer import DEFAULT_INFLIGHT_BYTES, MAX_WIRE_PACKET
from ark_lattice.runtime.peering import FEW_PACKETS, OFFLOAD_BYTES, Federation
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store
from ark_lattice.tiers import TrustTier

T0_MS = int(time.time() * 1000) - 60_000  # a minute ago: the default policy refuses stale packets


def _packets(author: Identity, count: int) -> list[Packet]:
    """1 KiB packets, every fifth building on the one before it."""
    out: list[Packet] = []
    for n in range(count):
        depends = (out[-1].id,) if out and n % 5 == 0 else ()
        out.append(Packet.create(author, topic="lab/bulk", kind="note", body=bytes([n % 251]) * 1024,
                                 created_at=pack(T0_MS, n), depends=depends))
    return out


@contextlib.asynccontextmanager
async def _synced(
    tmp_path: Path, a_id: Identity, sent: list[Packet], config: SessionConfig | None = None
) -> AsyncIterator[Store]:
    """Node A (``a_id``) holding ``sent``, node B dialling it over real WebSockets until it holds
    them all; yields B's store, open while both nodes run."""
    key = nacl.utils.random(32)
    b_id = Identity.generate()
    a_store = await Store.open(tmp_path / "a.db")
    b_store = await Store.open(tmp_path / "b.db")
    await a_store.put_packets(sent)
    for store, other in ((a_store, b_id), (b_store, a_id)):
        await store.add_peer(str(other.node_id))
        await store.set_tier(str(other.node_id), TrustTier.CORE, reason="test")
    a = Federation(a_store, a_id, key, name="a", auto_sync=False, config=config)
    b = Federation(b_store, b_id, key, name="b", auto_sync=False, config=config,
                   gate=PolicyGate(Policy.default(), str(b_id.node_id)))
    await a.start([])
    await b.start([])
    server = await serve(a.accept, "127.0.0.1", 0, max_size=MAX_FRAME, ping_interval=None, compression=None)
    try:
        await b.add_peer(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        deadline = asyncio.get_running_loop().time() + 60
        while await b_store.packet_count() < len(sent):
            assert asyncio.get_running_loop().time() < deadline, "the sync did not finish in time"
            await asyncio.sleep(0.05)
        yield b_store
    finally:
        server.close()
        await b.stop()
        await a.stop()
        await server.wait_closed()
        await b_store.close()
        await a_store.close()


async def test_big_frames_are_verified_on_the_pool_and_stored_in_order(
    tmp_path: Path, monkeypatch: Any
) -> None:
    a_id = Identity.generate()
    sent = _packets(a_id, 600)
    # Wants of 96 ids: answers of ~110 KiB, over OFFLOAD_BYTES, and eight of them in flight.
    config = SessionConfig(want_batch=96, max_inflight_wants=8)
    verified: list[int] = []
    in_flight: list[int] = []
    verify = Federation._verify

    def counting_verify(self: Federation, link: Any, opened: Any) -> Any:
        verified.append(opened.size)
        in_flight.append(len(link.verifying) + 1)
        return verify(self, link, opened)

    # Frames of many packets are opened and delivered on the node's one receipt thread, not on
    # the loop's default pool (peering.RECEIPT_THREADS: their packets live in that thread's heap).
    off_loop: set[str] = set()
    session_open, session_deliver = Session.open, Session.deliver

    def open_(self: Session, data: bytes, now: float) -> Any:
        if self.role.value == "initiator" and len(data) >= OFFLOAD_BYTES:
            off_loop.add(threading.current_thread().name)
        return session_open(self, data, now)

    def deliver(self: Session, opened: Any, now: float) -> None:
        big = sum(len(wire.body) for wire in opened.wires) >= OFFLOAD_BYTES
        if self.role.value == "initiator" and big and opened.size > FEW_PACKETS:
            off_loop.add(threading.current_thread().name)
        session_deliver(self, opened, now)

    monkeypatch.setattr(Federation, "_verify", counting_verify)
    monkeypatch.setattr(Session, "open", open_)
    monkeypatch.setattr(Session, "deliver", deliver)
    async with _synced(tmp_path, a_id, sent, config) as b_store:
        events = [e for e in reversed(await b_store.events()) if e.kind == EventKind.PACKET_STORED]
        order = [e.fields["id"] for e in events]
        assert sorted(order) == sorted(p.id for p in sent)
        position = {ident: i for i, ident in enumerate(order)}
        for p in sent:  # every dependency was stored before its dependant
            assert all(position[d] < position[p.id] for d in p.header.depends)
        # Every packet was checked on the pool but the first want's few (asked for before the
        # window knew the packets' size, transfer.py: a small frame, checked inline) ...
        first_want = DEFAULT_INFLIGHT_BYTES // MAX_WIRE_PACKET
        assert sum(verified) == len(sent) - first_want
        assert max(in_flight) >= 2  # ... with frames of one link verified side by side
        assert len(off_loop) == 1 and off_loop.pop().startswith("receipt")
        # Every inbound decision reaches the ledger while the node runs: in the writer's
        # transactions while it was busy (the audit task defers to it), then by the audit task.
        async def decided() -> list[str]:
            events = await b_store.events(kind=EventKind.POLICY_DECISION)
            decisions = [d for e in events for d in e.fields["decisions"]]
            return [d["subject"] for d in decisions if d["hook"] == "inbound_packet"]

        deadline = asyncio.get_running_loop().time() + 60
        while len(await decided()) < len(sent):
            assert asyncio.get_running_loop().time() < deadline, "the audit did not reach the ledger"
            await asyncio.sleep(0.05)
        assert sorted(await decided()) == sorted(p.hex_id for p in sent)


async def test_frames_of_a_few_large_packets_are_opened_and_delivered_on_the_loop(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """After a link's first big frame, one of a few large packets skips the hops to worker
    threads (peering.FEW_PACKETS): opened and delivered by the owner on the loop, verified on the
    pool, stored whole; the first big frame, whose packet count was not known yet, is opened on
    a worker thread like a frame of many small packets."""
    a_id = Identity.generate()
    sent = [
        Packet.create(a_id, topic="lab/big", kind="note", body=bytes([n]) * (700 * 1024),
                      created_at=pack(T0_MS, n))
        for n in range(12)
    ]
    loop_thread = threading.current_thread()
    opened_on: list[tuple[bool, int]] = []  # (on the loop, packets) per big frame B opened
    delivered_on: list[bool] = []  # on the loop, per frame of large packets B delivered
    session_open, session_deliver = Session.open, Session.deliver

    def open_(self: Session, data: bytes, now: float) -> Any:
        opened = session_open(self, data, now)
        if self.role.value == "initiator" and len(data) >= OFFLOAD_BYTES and opened is not None:
            opened_on.append((threading.current_thread() is loop_thread, opened.size))
        return opened

    def deliver(self: Session, opened: Any, now: float) -> None:
        if self.role.value == "initiator" and opened.size and len(opened.wires[0].body) >= OFFLOAD_BYTES:
            delivered_on.append(threading.current_thread() is loop_thread)
        session_deliver(self, opened, now)

    monkeypatch.setattr(Session, "open", open_)
    monkeypatch.setattr(Session, "deliver", deliver)
    async with _synced(tmp_path, a_id, sent) as b_store:
        stored = await b_store.get_packets([p.id for p in sent])
    assert sorted((s.packet.id, s.packet.body) for s in stored) == sorted((p.id, p.body) for p in sent)
    assert len(opened_on) >= 2 and all(0 < size <= FEW_PACKETS for _, size in opened_on)
    assert [on_loop for on_loop, _ in opened_on] == [False] + [True] * (len(opened_on) - 1)
    assert delivered_on and all(delivered_on)
