"""Store.iter_packets: the streamed listing, newest first, in short keyset pages."""

import pytest

from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.store.store import Store

AUTHOR = Identity.generate()


def packet(i: int, topic: str = "t") -> Packet:
    return Packet.create(AUTHOR, topic=topic, kind="note", body=b"body %d" % i, created_at=1000 + i // 2)


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "ledger.db")
    # Pairs of packets share a timestamp: the order within a pair is by id, as list_packets has it.
    await s.put_packets([packet(i, "a" if i % 3 else "b") for i in range(11)])
    yield s
    await s.close()


async def _ids(rows):
    return [r.packet.id async for r in rows]


async def test_pages_give_the_order_and_rows_of_list_packets(store):
    listed = await store.list_packets()
    for page in (1, 2, 3, 1000):
        streamed = [r async for r in store.iter_packets(page=page)]
        assert [r.packet.id for r in streamed] == [r.packet.id for r in listed]
        assert [(r.source, r.received_at, r.quarantined, r.packet.header) for r in streamed] == [
            (r.source, r.received_at, r.quarantined, r.packet.header) for r in listed
        ]
    for topic in ("a", "b"):
        want = [r.packet.id for r in await store.list_packets(topic=topic)]
        assert await _ids(store.iter_packets(topic=topic, page=2)) == want
    assert await _ids(store.iter_packets(limit=4, page=3)) == [r.packet.id for r in listed[:4]]
    assert await _ids(store.iter_packets(topic="nothing")) == []


async def test_a_listing_reads_no_body(store):
    row = await anext(store.iter_packets())
    assert row.packet.body == b"" and row.packet.header.body_size == len(b"body 10")


async def test_a_limit_or_an_early_stop_reads_no_further_page(store):
    statements: list[str] = []
    await store._reader.set_trace_callback(statements.append)
    await _ids(store.iter_packets(limit=3, page=2))
    assert len([s for s in statements if "FROM packets" in s]) == 2  # a page of 2, then one of 1
    statements.clear()
    async for _ in store.iter_packets(page=2):
        break
    assert len([s for s in statements if "FROM packets" in s]) == 1
