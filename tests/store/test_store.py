import asyncio
import sqlite3

import pytest

from ark_lattice.errors import AmbiguousId, LedgerError, NotFound, UsageError
from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store
from ark_lattice.tiers import TrustTier

AUTHOR = Identity.generate()


def packet(i: int) -> Packet:
    return Packet.create(AUTHOR, topic="t", kind="note", body=b"%d" % i, created_at=i)


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "ledger.db")
    yield s
    await s.close()


async def test_packets_are_stored_once_with_an_event_each(store):
    new = await store.put_packets([packet(1), packet(2), packet(1)])
    assert len(new) == 2
    assert await store.put_packets([packet(2)]) == []
    assert await store.packet_count() == 2
    events = await store.events(kind=EventKind.PACKET_STORED)
    assert {e.subject for e in events} == {packet(1).hex_id, packet(2).hex_id}


async def test_a_failed_transaction_leaves_nothing_behind(store):
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.put_packets([packet(1)])
            async with store.transaction():  # a savepoint
                await store.add_peer("a" * 52)
            raise RuntimeError("boom")
    assert await store.packet_count() == 0
    assert await store.peer_count() == 0
    assert await store.event_count() == 0


async def test_a_failed_savepoint_keeps_the_outer_work(store):
    async with store.transaction():
        await store.put_packets([packet(1)])
        with pytest.raises(RuntimeError):
            async with store.transaction():
                await store.add_peer("a" * 52)
                raise RuntimeError("inner")
    assert await store.packet_count() == 1
    assert await store.peer_count() == 0


async def test_concurrent_tasks_do_not_interleave_transactions(store):
    async def writer(base):
        for i in range(20):
            await store.put_packets([packet(base + i)])

    await asyncio.gather(writer(0), writer(1000), writer(2000))
    events = list(reversed(await store.events()))
    assert [e.seq for e in events] == list(range(1, 61))
    for before, after in zip(events, events[1:], strict=False):
        assert after.prev == before.hash


async def test_prefixes_resolve_or_fail_clearly(store):
    packets = [packet(i) for i in range(40)]  # 40 ids: two of them surely share a first hex digit
    await store.put_packets(packets)
    a = packets[0]
    assert await store.resolve_packet(a.hex_id[:12].upper()) == a.id
    first_digits = [p.hex_id[0] for p in packets]
    shared = next(d for d in first_digits if first_digits.count(d) > 1)
    with pytest.raises(AmbiguousId):
        await store.resolve_packet(shared)
    prefixes = {p.hex_id[:2] for p in packets}
    missing = next(f"{i:02x}" for i in range(256) if f"{i:02x}" not in prefixes)
    with pytest.raises(NotFound):
        await store.resolve_packet(missing)
    with pytest.raises(UsageError):
        await store.resolve_packet("xyz")


async def test_peer_tiers_are_recorded_as_events(store):
    await store.add_peer("a" * 52, endpoints=["ws://127.0.0.1:1"])
    assert not await store.add_peer("a" * 52, endpoints=["ws://127.0.0.1:2"])
    peer = await store.get_peer(await store.resolve_peer("aaaa"))
    assert peer.tier is TrustTier.UNKNOWN
    assert peer.endpoints == ("ws://127.0.0.1:1", "ws://127.0.0.1:2")
    assert await store.set_tier(peer.id, TrustTier.CORE, reason="operator") is TrustTier.UNKNOWN
    [event] = await store.events(kind=EventKind.PEER_TIER_CHANGED)
    assert event.fields == {"old": "unknown", "new": "core", "reason": "operator"}
    await store.remove_peer(peer.id)
    with pytest.raises(NotFound):
        await store.get_peer(peer.id)


async def test_events_by_subject_are_found_through_an_index_without_the_stored_packets(tmp_path):
    """events_subject (migration 0005) leaves packet.stored events out: their subjects are random
    packet ids, so each write transaction rewrote most of the index. A lookup by subject finds
    what it found before, through the index for every other kind (the plan of the very SQL the
    store runs: a partial index serves only a query that repeats its condition)."""
    path = tmp_path / "ledger.db"
    store = await Store.open(path)
    ran: list[str] = []
    try:
        stored = packet(1)
        await store.put_packets([stored])
        await store.audit_protocol_error(stored.hex_id, "bad_frame", "about the packet", False)
        await store.audit_protocol_error("b" * 52, "bad_frame", "about a peer", False)
        await store.add_peer("b" * 52)
        await store._conn.set_trace_callback(ran.append)  # expanded: the values in the text
        errors = await store.events(kind=EventKind.PROTOCOL_ERROR, subject=stored.hex_id)
        [put] = await store.events(kind=EventKind.PACKET_STORED, subject=stored.hex_id)
        pending = await store.pending_peers()
        await store._conn.set_trace_callback(None)
        everything = await store.events(subject=stored.hex_id)  # of any kind: both
    finally:
        await store.close()
    assert [e.fields["reason"] for e in errors] == ["about the packet"]
    assert put.subject == stored.hex_id  # not in the index, found all the same (by kind)
    assert [e.kind for e in everything] == [EventKind.PROTOCOL_ERROR, EventKind.PACKET_STORED]
    assert pending == []  # seen never: not pending, whatever the events say
    conn = sqlite3.connect(path)
    try:
        [(index,)] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events_subject'")
        plans = {
            sql: " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            for sql in ran if "subject" in sql and "events" in sql
        }
    finally:
        conn.close()
    assert index.endswith("WHERE kind <> 'packet.stored'")
    by_error, by_stored, by_peers = plans.values()
    assert "USING INDEX events_subject" in by_error and "USING INDEX events_subject" in by_peers
    assert "events_subject" not in by_stored


async def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "ledger.db"
    s = await Store.open(path)
    await s.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES ('9999_future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="newer"):
        await Store.open(path)


async def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="unreadable"):
        await Store.open(path)


async def test_a_batch_of_any_length_is_stored_whole_in_multi_row_inserts(tmp_path, monkeypatch):
    """put_packets inserts rows many to a statement, in powers of two (store._insert_rows): a
    length that is none (here 7 + 4 + 2 + 1 rows in statements of at most 8) stores every row and
    every event, in order, each linked to the one before it."""
    import ark_lattice.store.store as store_module
    from ark_lattice.store.events import GENESIS_PREV, entry_hash

    monkeypatch.setattr(store_module, "_ROWS_PER_INSERT", 8)
    author = Identity.generate()
    s = await Store.open(tmp_path / "ledger.db")
    try:
        batch = [Packet.create(author, topic="t", kind="note", body=b"%d" % i, created_at=10 + i)
                 for i in range(22)]
        await s.put_packets(batch)
        assert await s.packet_count() == 22
        held = await s.held_ids([p.id for p in batch])
        assert held == {p.id for p in batch}
    finally:
        await s.close()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        sql = "SELECT seq, ts, kind, subject, data, prev, hash FROM events ORDER BY seq"
        events = db.execute(sql).fetchall()
        assert db.execute("SELECT COUNT(*) FROM packets").fetchone() == (22,)
    assert [subject for _, _, _, subject, *_ in events] == [p.hex_id for p in batch]
    prev = GENESIS_PREV
    for seq, ts, kind, subject, data, link, hash_ in events:
        assert link == prev and entry_hash(seq, ts, kind, subject, data, link) == hash_
        prev = hash_
