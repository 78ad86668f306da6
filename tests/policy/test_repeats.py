"""Repeated policy decisions (policy/repeats.py): the first is written, the rest are counted into
one summary per peer and interval."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.policy.repeats import FLOOD_WRITTEN, RepeatedDecisions


def record(
    subject: str, peer: str = "P", *, allowed: bool = True, rules: tuple[str, ...] = ("r",)
) -> dict[str, Any]:
    return {"hook": "inbound_packet", "peer": peer, "subject": subject, "allowed": allowed,
            "rules": list(rules), "reason": "x"}


def test_a_sync_round_repeated_forever_is_written_once_then_summarised_per_interval() -> None:
    repeats = RepeatedDecisions()
    ids = [f"{i:064x}" for i in range(300)]
    written = repeats.sift([record(i) for i in ids], 0.0)
    assert len(written) == 300
    summaries = []
    for round_ in range(1, 1000):  # a sync every 2 s for ~33 minutes
        now = 2.0 * round_
        assert repeats.sift([record(i) for i in ids], now) == []
        summaries += repeats.due(now, interval=300)
    # One summary per 300 s: the ledger grows by a fixed rate, whatever the number of packets.
    assert 6 <= len(summaries) <= 7
    assert all(s["peer"] == "P" and s["allowed"] and s["rules"] == ["r"] for s in summaries)
    assert sum(s["repeats"] for s in summaries) + repeats.pending == 999 * 300
    assert all(s["last"] - s["first"] <= 300 for s in summaries)


def test_a_changed_outcome_or_another_peer_is_news() -> None:
    repeats = RepeatedDecisions()
    assert len(repeats.sift([record("a")], 0)) == 1
    assert repeats.sift([record("a")], 1) == []
    assert len(repeats.sift([record("a", allowed=False, rules=("deny",))], 2)) == 1
    assert len(repeats.sift([record("a", peer="Q")], 3)) == 1
    assert len(repeats.sift([record("b")], 4)) == 1


def test_summaries_are_grouped_by_peer_hook_outcome_and_rules_and_drained_at_stop() -> None:
    repeats = RepeatedDecisions()
    first = [record("a"), record("b", allowed=False, rules=("deny",)), record("c", peer="Q")]
    repeats.sift(first, 0)
    repeats.sift(first * 3, 10)
    assert repeats.due(10, interval=300) == []
    drained = repeats.drain()
    assert sorted((s["peer"], s["allowed"], s["repeats"]) for s in drained) == [
        ("P", False, 3), ("P", True, 3), ("Q", True, 3)
    ]
    assert repeats.drain() == [] and repeats.pending == 0


def test_a_rate_limit_flood_writes_the_first_refusals_and_counts_the_rest() -> None:
    repeats = RepeatedDecisions()
    flood = [record(f"{i:064x}", allowed=False, rules=("rate:peer-flood",)) for i in range(5000)]
    written = repeats.sift(flood, 0)
    assert written == flood[:FLOOD_WRITTEN]
    assert repeats.due(299, interval=300) == []
    [summary] = repeats.due(300, interval=300)
    assert summary["repeats"] == 5000 - FLOOD_WRITTEN and summary["rules"] == ["rate:peer-flood"]
    assert "rate limit peer-flood" in summary["reason"]
    # A new interval: the first refusals are written again; other peers were never capped.
    assert len(repeats.sift([record("x" * 64, allowed=False, rules=("rate:peer-flood",))], 301)) == 1
    other = [record(f"{i:064x}", peer="Q", allowed=False, rules=("rate:peer-flood",)) for i in range(3)]
    assert repeats.sift(other, 301) == other


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from("PQ"), st.booleans()), max_size=80),
       st.integers(1, 8))
def test_nothing_is_lost_every_decision_is_written_or_counted(
    decisions: list[tuple[str, str, bool]], memory: int
) -> None:
    repeats = RepeatedDecisions(memory=memory)
    # Denials here are rate-limit refusals (at most 6 distinct per peer: under the flood cap).
    records = [record(s, p, allowed=a, rules=("r",) if a else ("rate:x",)) for s, p, a in decisions]
    written = repeats.sift(records, 0)
    counted = sum(s["repeats"] for s in repeats.drain())
    assert len(written) + counted == len(decisions)
    # Within the memory, what is written is exactly the distinct decisions.
    if len(set(decisions)) <= memory:
        assert len(written) == len(set(decisions))
