"""The tail of the ledger: events after a sequence number, recent denials, size and last errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ark_lattice import tail
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "ledger.db")
    yield s
    await s.close()


def decision(n: int, allowed: bool, peer: str = "p1", hook: str = "inbound_packet") -> dict[str, Any]:
    return {"hook": hook, "peer": peer, "subject": f"s{n}", "allowed": allowed, "rules": [f"r{n}"],
            "reason": f"reason {n}"}


async def decide(store: Store, *records: dict[str, Any]) -> None:
    await store.append_event(EventKind.POLICY_DECISION, "", {"decisions": list(records)})


async def test_events_after_a_sequence_number(store):
    for i in range(5):
        await store.append_event(EventKind.PEER_ADDED if i % 2 else EventKind.PROTOCOL_ERROR, f"x{i}", {})
    assert [e.seq for e in await tail.events_after(store, 2)] == [3, 4, 5]
    assert [e.seq for e in await tail.events_after(store, 0, limit=2)] == [1, 2]
    assert [e.seq for e in await tail.events_after(store, 0, kind=EventKind.PEER_ADDED)] == [2, 4]
    assert await tail.events_after(store, 5) == []
    with pytest.raises(ValueError):
        await tail.events_after(store, 0, kind="x' OR 1=1 --")


async def test_follow_yields_what_is_appended_after_it_started(store):
    await store.append_event(EventKind.PEER_ADDED, "before", {})
    seen: list[str] = []

    start = await store.event_count()

    async def reader() -> None:
        async for event in tail.follow(store, start, kind=EventKind.PEER_ADDED, poll=0.01):
            seen.append(event.subject)
            if len(seen) == 2:
                return

    task = asyncio.create_task(reader())
    await store.append_event(EventKind.PEER_ADDED, "first", {})
    await store.append_event(EventKind.PROTOCOL_ERROR, "not this kind", {})
    await store.append_event(EventKind.PEER_ADDED, "second", {})
    await asyncio.wait_for(task, timeout=10)
    assert seen == ["first", "second"]


async def test_follow_decisions_filters_and_keeps_order(store):
    which = tail.DecisionFilter(peer="p2", allowed=False)
    got: list[str] = []

    async def reader() -> None:
        async for row in tail.follow_decisions(store, 0, which, poll=0.01):
            got.append(row["subject"])
            if len(got) == 2:
                return

    task = asyncio.create_task(reader())
    await decide(store, decision(1, False, "p2"), decision(2, True, "p2"), decision(3, False, "p1"))
    await decide(store, decision(4, False, "p2"))
    await asyncio.wait_for(task, timeout=10)
    assert got == ["s1", "s4"]


async def test_recent_denials_read_only_what_is_new(store):
    await decide(store, *(decision(i, i % 3 != 0) for i in range(1, 30)))  # 9 denials
    denials = tail.RecentDenials(keep=5)
    first = await denials.read(store)
    assert [r["subject"] for r in first] == ["s27", "s24", "s21", "s18", "s15"]  # newest first
    assert first[0]["seq"] == 1 and first[0]["allowed"] is False and first[0]["rules"] == ["r27"]
    await store.append_event(EventKind.PEER_ADDED, "noise", {})
    await decide(store, decision(40, False), decision(41, True))
    assert [r["subject"] for r in await denials.read(store)][:2] == ["s40", "s27"]
    assert len(await denials.read(store)) == 5  # nothing new: the same five


async def test_recent_denials_of_an_empty_trail(store):
    denials = tail.RecentDenials()
    assert await denials.read(store) == []
    await decide(store, decision(1, False))
    assert [r["subject"] for r in await denials.read(store)] == ["s1"]


async def test_summary_counts_the_database_and_its_log(store):
    doc = await tail.summary(store)
    assert doc["events"] == 0 and doc["checkpoint"] is None
    assert doc["bytes"] >= store.path.stat().st_size
    await store.add_checkpoint(1, bytes(32), "note")
    doc = await tail.summary(store)
    assert doc["events"] == 1 and doc["checkpoint"]["size"] == 1
    assert abs(doc["checkpoint"]["at"] - store.now_ms() / 1000) < 60


async def test_last_errors_by_subject(store):
    await store.audit_protocol_error("peer-a", "malformed", "bad frame", True)
    await store.audit_protocol_error("10.0.0.1:5000", "handshake_failed", "wrong key", True)
    await store.audit_protocol_error("peer-a", "too_large", "over the limit", False)
    errors = await tail.last_errors(store, ["peer-a", "10.0.0.1:5000", "peer-b", "peer-a"])
    assert {k: v["error"] for k, v in errors.items()} == {
        "peer-a": "too_large: over the limit",
        "10.0.0.1:5000": "handshake_failed: wrong key",
    }
