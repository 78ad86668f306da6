"""Packet signatures checked in batches on every core, handed back in the rows' order."""

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from ark_lattice import ledger, signatures
from ark_lattice.errors import BadSignature, LedgerCorrupt, Malformed, Unfinished
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.node import LocalNode
from ark_lattice.packet import Packet
from ark_lattice.processes import wait_for
from ark_lattice.store.bodies import BODY_FILE_MIN

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


@pytest.fixture(params=["threads", "processes"])
def kind(request, monkeypatch):
    """Workers of each kind, two of them whatever the machine's cores."""
    monkeypatch.setattr(signatures, "_workers", lambda: 2)
    monkeypatch.setattr(signatures, "PROCESSES_FROM", 0 if request.param == "processes" else 10**9)
    return ProcessPoolExecutor if request.param == "processes" else ThreadPoolExecutor


async def checked(items, check, kind, **options):
    """Every (row, result) pair ``checked_in_order`` hands back, on a pool of ``kind``."""
    async with signatures.pool(len(items)) as executor:
        assert type(executor) is kind
        return [
            pair
            async for rows, results in signatures.checked_in_order(batches(items), check, executor, **options)
            for pair in zip(rows, results, strict=True)
        ]


async def test_rows_come_back_in_order_each_with_its_result(monkeypatch, kind):
    monkeypatch.setattr(signatures, "BATCH", 3)  # many tasks, several in flight on 2 workers
    good = [parts(i) for i in range(20)]
    bad_signature = (good[7][0], bytes(64), good[7][2])
    bad_body = (good[12][0], good[12][1], b"not the body")
    given = [*good[:7], bad_signature, *good[8:12], bad_body, *good[13:], (None, None, None)]
    out = await checked(given, opened, kind)
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
    async with signatures.pool(len(given)) as executor:
        passed = signatures.checked_in_order(batches(given, 7), check, executor, size=len)
        out = [r async for _, results in passed for r in results]
    assert out == [60] * 7 and sizes == [2, 2, 2, 1]  # a task ends once it holds 100 bytes


async def test_rows_read_before_a_failing_read_come_first(monkeypatch, kind):
    monkeypatch.setattr(signatures, "BATCH", 2)

    async def damaged():
        yield [parts(i) for i in range(5)]
        raise sqlite3.DatabaseError("database disk image is malformed")

    seen = []
    async with signatures.pool(5) as executor:
        with pytest.raises(sqlite3.DatabaseError):
            async for _rows, results in signatures.checked_in_order(damaged(), opened, executor):
                seen.extend(results)
    assert len(seen) == 5 and all(isinstance(p, Packet) for p in seen)


async def test_stopping_early_leaves_nothing_running(monkeypatch, kind):
    monkeypatch.setattr(signatures, "BATCH", 2)
    async with signatures.pool(50) as executor:
        processes = list(executor._processes.values()) if isinstance(executor, ProcessPoolExecutor) else []
        passed = signatures.checked_in_order(batches([parts(i) for i in range(50)]), opened, executor)
        async for _ in passed:
            break
        await passed.aclose()
    # The pool is shut down: the batches not started are dropped, and its processes end.
    assert len(processes) == (2 if kind is ProcessPoolExecutor else 0)
    wait_for(lambda: not any(p.is_alive() for p in processes), timeout=30, what="the workers to end")


def dies(rows):
    """A worker process killed while it checks (out of memory, say)."""
    os._exit(9)


async def test_a_worker_process_that_dies_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(signatures, "_workers", lambda: 2)
    monkeypatch.setattr(signatures, "PROCESSES_FROM", 0)
    given = [parts(i) for i in range(10)]
    async with signatures.pool(len(given)) as executor:
        with pytest.raises(Unfinished) as info:
            async for _ in signatures.checked_in_order(batches(given), dies, executor):
                pass
    assert str(info.value).startswith("a process checking packet signatures stopped before it finished")


async def test_processes_from_a_large_ledger_on_linux(monkeypatch):
    monkeypatch.setattr(signatures, "_workers", lambda: 2)
    for rows, kind in ((signatures.PROCESSES_FROM - 1, ThreadPoolExecutor),
                       (signatures.PROCESSES_FROM, ProcessPoolExecutor)):
        async with signatures.pool(rows) as executor:
            assert type(executor) is kind
    monkeypatch.setattr(signatures, "_workers", lambda: 1)  # one core: nothing to share
    async with signatures.pool(signatures.PROCESSES_FROM) as executor:
        assert type(executor) is ThreadPoolExecutor


@pytest.fixture
async def node(home):
    n = await LocalNode.init(Home(home), name="alpha")
    yield n
    await n.close()


@pytest.fixture
def pools(monkeypatch):
    """The kind of each pool ``ledger.verify`` checks its packets on."""
    kinds: list[type] = []
    real = signatures.pool

    @contextlib.asynccontextmanager
    async def pool(rows):
        async with real(rows) as executor:
            kinds.append(type(executor))
            yield executor

    monkeypatch.setattr(signatures, "pool", pool)
    return kinds


async def test_verify_on_every_core_names_the_first_bad_packet(node, monkeypatch, kind, pools):
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
    assert pools == [kind, kind]


async def test_verify_reads_body_files_on_every_core(node, kind, pools):
    """Bodies held in files are read and checked by the workers, and counted by the verifier."""
    created = await node.store.next_timestamp(node.store.now_ms())
    big = [
        Packet.create(node.identity, topic="big", kind="note", body=bytes([i]) * BODY_FILE_MIN,
                      created_at=created + i)
        for i in range(3)
    ]
    await node.store.put_packets(big)
    report = await ledger.verify(node.store, node.node_id)
    assert (report.packets, report.body_files, report.orphan_bodies) == (3, 3, 0)
    assert node.store.bodies is not None
    changed = node.store.bodies.path(big[1].id)
    changed.write_bytes(b"\x00" * BODY_FILE_MIN)
    with pytest.raises(LedgerCorrupt) as info:
        await ledger.verify(node.store, node.node_id)
    assert info.value.entry == f"packet {big[1].hex_id}"
    assert info.value.reason == f"its body file {changed} does not match the hash in its signed header"
    assert pools == [kind, kind]


def test_worker_processes_end_with_their_parent():
    """A parent killed outright (kill -9) leaves no worker waiting for work."""
    script = textwrap.dedent(
        """
        import asyncio
        from ark_lattice import signatures

        async def main():
            signatures._workers = lambda: 2
            async with signatures.pool(signatures.PROCESSES_FROM) as executor:
                print(*executor._processes, flush=True)
                await asyncio.Event().wait()  # until killed

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
    finally:
        parent.kill()
        parent.wait()
    assert len(workers) == 2

    def running(pid: int) -> bool:  # a worker no one has reaped yet is a zombie: it has ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    wait_for(lambda: not any(running(pid) for pid in workers), timeout=30, what="the workers to end")


@pytest.mark.parametrize(
    "refusal",
    [
        FileNotFoundError(2, "No such file or directory"),  # no /dev/shm for the pool's locks
        NotImplementedError("This Python has no working sem_open"),  # concurrent.futures' own check
    ],
)
async def test_threads_check_where_processes_cannot_start(monkeypatch, refusal):
    def refused(*args, **kwargs):
        raise refusal

    monkeypatch.setattr(signatures, "_workers", lambda: 2)
    monkeypatch.setattr(signatures, "ProcessPoolExecutor", refused)
    async with signatures.pool(signatures.PROCESSES_FROM) as executor:
        assert type(executor) is ThreadPoolExecutor
        found = [r async for _, results in signatures.checked_in_order(batches([parts(1)]), opened, executor)
                 for r in results]
    assert isinstance(found[0], Packet)


def test_one_worker_a_core_up_to_the_cap(monkeypatch):
    for cores, workers in ((64, signatures.MAX_WORKERS), (2, 2), (None, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert signatures._workers() == workers
