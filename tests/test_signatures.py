"""Packet signatures checked in batches on every core, handed back in the rows' order."""

import sqlite3

import pytest

from ark_lattice import ledger, signatures
from ark_lattice.errors import BadSignature, LedgerCorrupt, Malformed
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.node import LocalNode
from ark_lattice.packet import Packet

AUTHOR = Identity.generate()


def parts(i: int) -> tuple[bytes, bytes, bytes]:
    p = Packet.create(AUTHOR, topic="t", kind="note", body=b"%d" % i, created_at=i)
    return p.header_bytes, p.signature, p.body


async def batches(items, size=5):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def opened(rows):
    """The check a worker runs: each row's packet, or what opening it raised."""
    out: list[Packet | Exception] = []
    for row in rows:
        try:
            out.append(Packet.from_parts(*row))
        except Exception as exc:
            out.append(exc)
    return out


async def test_rows_come_back_in_order_each_with_its_result(monkeypatch):
    monkeypatch.setattr(signatures, "BATCH", 3)  # many tasks, several in flight on 2 workers
    good = [parts(i) for i in range(20)]
    bad_signature = (good[7][0], bytes(64), good[7][2])
    bad_body = (good[12][0], good[12][1], b"not the body")
    given = [*good[:7], bad_signature, *good[8:12], bad_body, *good[13:], (None, None, None)]
    out = [
        pair
        async for rows, results in signatures.checked_in_order(batches(given), opened, workers=2)
        for pair in zip(rows, results, strict=True)
    ]
    assert [row for row, _ in out] == given
    for i, (row, result) in enumerate(out):
        if i == 7:
            assert isinstance(result, BadSignature)
        elif i in (12, 20):
            assert isinstance(result, Malformed)
        else:
            assert isinstance(result, Packet) and result.header_bytes == row[0]


async def test_large_rows_are_checked_a_few_at_a_time(monkeypatch):
    monkeypatch.setattr(signatures, "BATCH_BYTES", 100)
    sizes: list[int] = []

    def check(rows):
        sizes.append(len(rows))
        return [len(row) for row in rows]

    given = [b"x" * 60 for _ in range(7)]
    checked = signatures.checked_in_order(batches(given, 7), check, size=len)
    out = [r async for _, results in checked for r in results]
    assert out == [60] * 7 and sizes == [2, 2, 2, 1]  # a task ends once it holds 100 bytes


async def test_rows_read_before_a_failing_read_come_first(monkeypatch):
    monkeypatch.setattr(signatures, "BATCH", 2)

    async def damaged():
        yield [parts(i) for i in range(5)]
        raise sqlite3.DatabaseError("database disk image is malformed")

    seen = []
    with pytest.raises(sqlite3.DatabaseError):
        async for _rows, results in signatures.checked_in_order(damaged(), opened, workers=2):
            seen.extend(results)
    assert len(seen) == 5 and all(isinstance(p, Packet) for p in seen)


async def test_stopping_early_leaves_nothing_running(monkeypatch):
    monkeypatch.setattr(signatures, "BATCH", 2)
    checked = signatures.checked_in_order(batches([parts(i) for i in range(50)]), opened, workers=2)
    async for _ in checked:
        break
    await checked.aclose()  # the pool is shut down; the batches not started are dropped


@pytest.fixture
async def node(home):
    n = await LocalNode.init(Home(home), name="alpha")
    yield n
    await n.close()


async def test_verify_on_every_core_names_the_first_bad_packet(node, monkeypatch):
    monkeypatch.setattr(signatures, "BATCH", 64)  # the bad packets fall in different batches
    created = await node.store.next_timestamp(node.store.now_ms())
    batch = [
        Packet.create(node.identity, topic="bulk", kind="note", body=b"%d" % i, created_at=created + i)
        for i in range(1100)
    ]
    await node.store.put_packets(batch)
    seen: list[int] = []
    report = await ledger.verify(node.store, node.node_id, packet_progress=seen.append)
    assert report.packets == 1100 and seen == [1000]  # progress every 1000 packets
    db = sqlite3.connect(node.store.path)
    # Two bad packets in different batches: the first in created_at order is named, as before.
    db.execute("UPDATE packets SET signature = zeroblob(64) WHERE id = ?", (batch[150].id,))
    db.execute("UPDATE packets SET body = x'00' WHERE id = ?", (batch[40].id,))
    db.commit()
    db.close()
    with pytest.raises(LedgerCorrupt) as info:
        await ledger.verify(node.store, node.node_id)
    assert info.value.entry == f"packet {batch[40].hex_id}" and "body" in info.value.reason
