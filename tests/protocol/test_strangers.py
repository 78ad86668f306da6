"""Strangers' budget: connection caps per address and in all, and the summarised audit."""

from __future__ import annotations

import random

from ark_lattice.protocol.strangers import OTHERS, StrangerBudget, Strangers, source_of

T0 = 1_700_000_000.0


def test_connections_before_the_handshake_are_capped_per_address_and_in_all() -> None:
    s = Strangers(StrangerBudget(per_source=2, total=3))
    assert s.arrive(1, "10.0.0.1", T0) is None and s.arrive(2, "10.0.0.1", T0) is None
    assert "from this address" in (s.arrive(3, "10.0.0.1", T0) or "")
    assert s.arrive(4, "10.0.0.2", T0) is None
    assert "in all" in (s.arrive(5, "10.0.0.3", T0) or "")
    assert s.connected == 3
    s.known(1)  # authenticated: no stranger any more, its place is free
    assert s.arrive(6, "10.0.0.1", T0) is None
    for key in (2, 4, 4, 99):  # a repeated or unknown key changes nothing
        s.left(key)
    assert s.connected == 1
    # The refusals were counted as failures of their addresses.
    (a, b) = sorted(s.due(T0), key=lambda r: r["subject"])
    assert (a["subject"], a["codes"], b["subject"], b["codes"]) == (
        "10.0.0.1", {"rate_limited": 1}, "10.0.0.3", {"rate_limited": 1}
    )


def test_strangers_never_write_more_than_the_summary_rate() -> None:
    budget = StrangerBudget(summary_interval=10.0, summary_sources=4)
    s = Strangers(budget)
    rng = random.Random(7)
    written: list[tuple[float, str]] = []
    failures = 0
    now = T0
    for step in range(20_000):  # 200 s of failures from 1000 addresses, 100 per second
        now = T0 + step / 100
        s.failed(f"10.1.{rng.randrange(4)}.{rng.randrange(250)}", "handshake_failed", f"n{step}", now)
        failures += 1
        if (due := s.next_due()) is not None and due <= now:
            written += [(now, r["subject"]) for r in s.due(now)]
    flushed = s.flush(now)  # the stop writes what is pending, once
    assert len(flushed) <= budget.summary_sources + 1
    # At most summary_sources + 1 events in any interval, and each source once per interval.
    for t, _ in written:
        in_window = [w for w in written if t <= w[0] < t + budget.summary_interval]
        assert len(in_window) <= budget.summary_sources + 1
    by_source: dict[str, list[float]] = {}
    for t, source in written:
        by_source.setdefault(source, []).append(t)
    for times in by_source.values():
        assert all(b - a >= budget.summary_interval for a, b in zip(times, times[1:], strict=False))
    assert OTHERS in by_source  # the crowd past the named addresses is still counted
    assert len(written) <= (200 / 10 + 1) * (budget.summary_sources + 1)
    assert sum(1 for _ in written) > 20  # it did write, all along


def test_a_summary_counts_every_failure_once() -> None:
    s = Strangers(StrangerBudget(summary_interval=5.0, summary_sources=2))
    total = 0
    counted = 0
    for step in range(1000):
        now = T0 + step * 0.05
        s.failed(f"h{step % 5}", "too_large" if step % 2 else "timeout", "r", now)
        total += 1
        counted += sum(r["count"] for r in s.due(now))
    counted += sum(r["count"] for r in s.flush(T0 + 100))
    assert counted == total


def test_the_source_of_a_remote_is_its_address() -> None:
    assert source_of("10.0.0.1:4000") == "10.0.0.1"
    assert source_of("[::1]:4000") == "::1"
    assert source_of("::1:4000") == "::1"
    assert source_of("unix-socket") == "unix-socket"
