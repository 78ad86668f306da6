"""The store access rule (store/access.py): one writer, readers on committed snapshots, bounded
retries on SQLITE_BUSY / SQLITE_BUSY_SNAPSHOT, provoked here with a second sqlite3 connection."""

import asyncio
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ark_lattice.errors import LedgerError, NotFound
from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.protocol import actions as act
from ark_lattice.runtime.effects import Effects
from ark_lattice.store.access import AccessStats, RetryPolicy, busy_kind, retry_busy
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store

AUTHOR = Identity.generate()


def packet(i: int) -> Packet:
    return Packet.create(AUTHOR, topic="t", kind="note", body=b"%d" % i, created_at=i)


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "ledger.db")
    yield s
    await s.close()


@pytest.fixture
def other(tmp_path):
    """A second process's connection to the same ledger (autocommit, like the CLI's)."""
    conn = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=0)
    yield conn
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.close()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` on the loop until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition did not hold in time"
        await asyncio.sleep(0.005)


async def test_reads_never_see_an_uncommitted_transaction(store):
    inside, release = asyncio.Event(), asyncio.Event()
    seen_inside: list[int] = []

    async def writer() -> None:
        async with store.transaction():
            await store.put_packets([packet(1), packet(2)])
            seen_inside.append(await store.packet_count())  # its own rows, on the writer
            inside.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await inside.wait()
    # Another task, mid-transaction: counts, lookups and listings show committed rows only.
    assert await store.packet_count() == 0
    assert await store.event_count() == 0
    assert await store.list_packets() == []
    with pytest.raises(NotFound):
        await store.get_packet(packet(1).id)
    assert [r async for r in store.iter_rows("SELECT id FROM packets")] == []
    release.set()
    await task
    assert seen_inside == [2]
    assert await store.packet_count() == 2
    assert await store.event_count() == 2


async def test_a_rolled_back_transaction_was_never_visible(store):
    inside, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with store.transaction():
            await store.put_packets([packet(1)])
            inside.set()
            await release.wait()
            raise RuntimeError("abandoned")

    task = asyncio.create_task(writer())
    await inside.wait()
    assert await store.packet_count() == 0
    release.set()
    with pytest.raises(RuntimeError):
        await task
    assert await store.packet_count() == 0


async def test_a_held_write_lock_is_waited_out_with_retries(store, other):
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO meta (key, value) VALUES ('cli', 1)")
    write = asyncio.create_task(store.append_event(EventKind.PROTOCOL_ERROR, "x", {"n": 1}))
    await until(lambda: store.access.busy_retries >= 3)
    assert not write.done()
    # Reads go on meanwhile: the reader does not wait for the write lock.
    assert await store.event_count() == 0
    other.execute("COMMIT")
    event = await write
    assert event.seq == 1
    assert store.access.gave_up == 0 and store.access.longest_wait > 0
    assert await store._scalar("SELECT value FROM meta WHERE key = 'cli'") == 1  # the other's commit


async def test_a_lock_held_past_the_budget_is_one_clear_error(tmp_path, other):
    s = await Store.open(tmp_path / "ledger.db", retry=RetryPolicy(budget=0.3, attempt_ms=20))
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(LedgerError) as caught:
            await s.put_packets([packet(1)])
        assert time.monotonic() - started < 5
        assert "stayed locked by another process" in str(caught.value)
        assert "\n" not in str(caught.value)
        assert s.access.gave_up == 1 and s.access.busy_retries >= 1
        other.execute("ROLLBACK")
        # Nothing half-done is left behind, and the store writes again once the lock is free.
        assert await s.put_packets([packet(1)]) != []
        assert await s.packet_count() == 1
    finally:
        await s.close()


async def test_a_stale_snapshot_is_retried_once_it_is_released(store, other):
    await store.put_packets([packet(i) for i in range(5)])
    # The bug of issue 17: a read left open on the writer connection (a stale snapshot) and a
    # commit by another process in between make BEGIN IMMEDIATE fail with SQLITE_BUSY_SNAPSHOT.
    stale = await store._writer.execute("SELECT id FROM packets")
    await stale.fetchone()
    other.execute("INSERT INTO meta (key, value) VALUES ('cli', 1)")
    write = asyncio.create_task(store.next_counter("n"))
    await until(lambda: store.access.snapshot_retries >= 2)
    assert not write.done()
    await stale.close()
    assert await write == 1
    assert store.access.busy_retries == 0


async def test_an_open_read_never_makes_a_write_fail(store, other):
    """The same interleaving through the store's own API: reads are on their own snapshots."""
    await store.put_packets([packet(i) for i in range(3000)])
    rows = store.iter_rows("SELECT id FROM packets", batch=100)
    first = await rows.__anext__()  # a streaming read, mid-way
    other.execute("INSERT INTO meta (key, value) VALUES ('cli', 1)")
    assert await store.put_packets([packet(5000)]) != []
    assert store.access.retries == 0
    rest = [r async for r in rows]
    assert len(rest) + 1 == 3000 and first not in rest  # the iteration's own snapshot
    assert await store.packet_count() == 3001


async def test_an_abandoned_iteration_is_closed_with_the_store(tmp_path):
    s = await Store.open(tmp_path / "ledger.db")
    await s.put_packets([packet(i) for i in range(10)])
    rows = cast(AsyncGenerator[tuple[Any, ...], None], s.iter_rows("SELECT id FROM packets", batch=2))
    await rows.__anext__()
    await s.close()  # before the generator: its private connection goes with the store
    await rows.aclose()  # no error from a cursor on a closed connection


async def test_retry_busy_classifies_and_bounds(tmp_path):
    busy = sqlite3.OperationalError("database is locked")
    assert busy_kind(busy) == "busy"
    assert busy_kind(sqlite3.OperationalError("no such table: x")) is None
    assert busy_kind(ValueError("busy")) is None
    calls = 0
    fake_now = [0.0]

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise busy
        return "done"

    async def sleep(seconds: float) -> None:
        fake_now[0] += seconds

    stats = AccessStats()
    policy = RetryPolicy(first_delay=0.01, max_delay=0.02, budget=1.0)
    assert await retry_busy(attempt, policy, stats, sleep=sleep, clock=lambda: fake_now[0]) == "done"
    assert stats.busy_retries == 3 and fake_now[0] == pytest.approx(0.05)

    async def never() -> None:
        raise busy

    with pytest.raises(LedgerError, match="stayed locked"):
        await retry_busy(never, policy, stats, sleep=sleep, clock=lambda: fake_now[0])
    assert stats.gave_up == 1


async def test_an_audit_event_the_ledger_refuses_is_kept_and_written_later(tmp_path, other):
    s = await Store.open(tmp_path / "ledger.db", retry=RetryPolicy(budget=0.2, attempt_ms=20))
    try:
        # A Strike without a peer needs no core beyond the policy gate's audit interval (none: the default).
        effects = Effects(s, core=SimpleNamespace(gate=None))  # type: ignore[arg-type]
        told: list[LedgerError] = []
        effects.on_kept = told.append
        effects.decisions.append({"decision": "allow", "n": 1})
        other.execute("BEGIN IMMEDIATE")
        strike = act.Strike(link=1, peer=None, subject="127.0.0.1:9", code="malformed", reason="bad",
                            fatal=True)
        assert await effects.perform(strike, 0.0) == []  # no exception reaches the session
        assert len(told) == 1 and len(effects.kept) == 1
        with pytest.raises(LedgerError):
            await effects.write_audit()
        assert len(effects.kept) + len(effects.decisions) >= 2  # nothing dropped by the failure
        other.execute("ROLLBACK")
        written = await effects.write_audit()
        assert [kind for kind, _, _ in written] == [EventKind.PROTOCOL_ERROR, EventKind.POLICY_DECISION]
        assert effects.kept == [] and effects.decisions == []
        kinds = [e.kind for e in reversed(await s.events())]
        assert kinds == [EventKind.PROTOCOL_ERROR, EventKind.POLICY_DECISION]
    finally:
        await s.close()


async def test_decisions_written_in_an_ingest_that_rolls_back_are_kept(store):
    class FailingCore:
        gate = None  # the default audit-summary interval

        def admit_packets(self, packets: object, held: object) -> None:
            raise RuntimeError("the batch failed after its audit was written")

    effects = Effects(store, FailingCore())  # type: ignore[arg-type]
    effects.decisions.append({"hook": "inbound_packet", "subject": "x", "allowed": True})
    ingest = act.Ingest(link=1, peer="p" * 52, packets=(packet(1),), quarantine=False)
    with pytest.raises(RuntimeError):
        await effects.ingest([ingest], 0.0)
    assert await store.event_count() == 0  # rolled back with the batch ...
    assert [kind for kind, _, _ in effects.kept] == [EventKind.POLICY_DECISION]  # ... and kept
    await effects.write_audit()
    [event] = await store.events()
    assert event.fields["decisions"][0]["subject"] == "x"


async def test_a_finished_iteration_leaves_no_snapshot_behind(store, other):
    await store.put_packets([packet(1)])
    assert len([r async for r in store.iter_rows("SELECT id FROM packets")]) == 1
    assert len(store._spare) == 1  # its connection is kept for the next iteration ...
    other.execute("INSERT INTO meta (key, value) VALUES ('cli', 1)")
    await store.put_packets([packet(2)])
    # ... which starts on a fresh snapshot: it sees both commits made since.
    assert len([r async for r in store.iter_rows("SELECT id FROM packets")]) == 2
    assert [r async for r in store.iter_rows("SELECT value FROM meta WHERE key = 'cli'")] == [(1,)]
    assert len(store._spare) == 1


async def test_a_commit_that_fails_leaves_the_writer_usable(tmp_path):
    s = await Store.open(tmp_path / "ledger.db", retry=RetryPolicy(budget=0.2))
    try:
        real = s._writer.execute
        refuse = [True]

        def failing_commit(sql: str, *args: Any) -> Any:
            if sql == "COMMIT" and refuse[0]:
                raise sqlite3.OperationalError("disk I/O error")
            return real(sql, *args)

        s._writer.execute = failing_commit  # type: ignore[method-assign]
        with pytest.raises(LedgerError, match="refused a write"):
            await s.put_packets([packet(1)])
        refuse[0] = False
        assert await s.put_packets([packet(2)]) != []  # not "cannot start a transaction within …"
        assert await s.packet_count() == 1 and await s.event_count() == 1
    finally:
        await s.close()
