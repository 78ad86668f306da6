"""Token buckets and the policy's rate limits, driven by an explicit clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.errors import UsageError
from ark_lattice.policy import Hook, Policy, RateLimiter, TokenBuckets


def test_burst_then_refill() -> None:
    buckets = TokenBuckets(rate=2, burst=3)
    assert [buckets.take("p", 0.0) for _ in range(4)] == [True, True, True, False]
    assert not buckets.take("p", 0.4)  # 0.8 tokens
    assert buckets.take("p", 0.5)  # 1.0 token
    assert not buckets.take("p", 0.5)
    assert buckets.take("p", 10.0) and buckets.available("p", 10.0) == 2.0  # capped at burst


def test_refused_take_takes_nothing() -> None:
    buckets = TokenBuckets(rate=1, burst=5)
    assert buckets.take("p", 0.0, cost=4)
    assert not buckets.take("p", 0.0, cost=2)
    assert buckets.available("p", 0.0) == 1.0
    assert buckets.take("p", 0.0, cost=1)


def test_cost_over_burst_is_never_allowed_and_negative_cost_is_misuse() -> None:
    buckets = TokenBuckets(rate=100, burst=5)
    assert not buckets.take("p", 0.0, cost=6)
    assert not buckets.take("p", 1e9, cost=6)
    assert buckets.take("p", 0.0, cost=0)
    with pytest.raises(UsageError):
        buckets.take("p", 0.0, cost=-1)


def test_keys_are_independent() -> None:
    buckets = TokenBuckets(rate=1, burst=1)
    assert buckets.take("a", 0.0) and not buckets.take("a", 0.0)
    assert buckets.take("b", 0.0)
    assert buckets.available("never-seen", 0.0) == 1.0


def test_clock_stepping_back_refills_nothing() -> None:
    buckets = TokenBuckets(rate=1, burst=2)
    assert buckets.take("p", 100.0) and buckets.take("p", 100.0)
    assert not buckets.take("p", 50.0)
    assert not buckets.take("p", 100.5)  # the step back did not reset the refill origin
    assert buckets.take("p", 101.0)


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (float("inf"), 1), (1, float("nan"))]
)
def test_bad_parameters_are_misuse(rate: float, burst: float) -> None:
    with pytest.raises(UsageError):
        TokenBuckets(rate, burst)


def test_idle_full_buckets_are_forgotten() -> None:
    buckets = TokenBuckets(rate=1, burst=1)
    for i in range(100):
        buckets.take(f"k{i}", float(i))
    # Each bucket is full again one second after its take, and each take drops idle ones.
    assert len(buckets) <= 3
    buckets.prune(1000.0)
    assert len(buckets) == 0


def test_key_count_is_capped_least_recently_used_first() -> None:
    buckets = TokenBuckets(rate=0.001, burst=1, max_keys=3)
    for key in "abcd":
        assert buckets.take(key, 0.0)
    assert len(buckets) == 3 and "a" not in buckets
    assert buckets.take("b", 0.0) is False  # still remembered, still empty
    assert buckets.take("e", 0.0)
    assert "c" not in buckets and "b" in buckets  # "b" was used more recently than "c"


def test_prune_keeps_buckets_still_refilling() -> None:
    buckets = TokenBuckets(rate=1, burst=10)
    buckets.take("busy", 0.0, cost=10)
    buckets.take("light", 0.0, cost=1)
    assert buckets.prune(2.0) == 1
    assert "busy" in buckets and "light" not in buckets


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 100),
    burst=st.integers(1, 50),
    steps=st.lists(st.tuples(st.floats(0, 2), st.integers(0, 5)), max_size=60),
)
def test_never_more_than_burst_plus_refill(rate: float, burst: int, steps: list) -> None:
    buckets = TokenBuckets(rate, burst)
    now = taken = 0.0
    for dt, cost in steps:
        now += dt
        if buckets.take("p", now, cost):
            taken += cost
        assert 0 <= buckets.available("p", now) <= burst
    assert taken <= burst + rate * now + 1e-6


# --- the policy's [[rate_limit]] entries ----------------------------------------------------------

LIMITS = """
version = 1

[[rate_limit]]
id = "per-peer"
scope = "peer"
hooks = ["inbound_packet"]
rate = 1
burst = 3

[[rate_limit]]
id = "per-topic"
scope = "topic"
hooks = ["inbound_packet", "query"]
rate = 1
burst = 2

[[rate_limit]]
id = "per-peer-topic"
scope = "peer_topic"
hooks = ["query"]
rate = 1
burst = 1
"""


def test_limiter_names_the_limit_exceeded() -> None:
    limiter = RateLimiter(Policy.load(LIMITS).rate_limits)
    check = limiter.check
    assert check(Hook.INBOUND_PACKET, 0.0, peer_id="A", topic="t1") is None
    assert check(Hook.INBOUND_PACKET, 0.0, peer_id="A", topic="t1") is None
    assert check(Hook.INBOUND_PACKET, 0.0, peer_id="A", topic="t1") == "per-topic"
    assert check(Hook.INBOUND_PACKET, 0.0, peer_id="A", topic="t2") is None
    assert check(Hook.INBOUND_PACKET, 0.0, peer_id="A", topic="t3") == "per-peer"
    assert check(Hook.INBOUND_PACKET, 0.0, peer_id="B", topic="t3") is None
    # No limit covers outbound packets or tier changes.
    assert all(check("outbound_packet", 0.0, peer_id="A", topic="t1") is None for _ in range(10))
    assert check(Hook.QUERY, 0.0, peer_id="C", topic="q") is None
    assert check(Hook.QUERY, 0.0, peer_id="C", topic="q") == "per-peer-topic"
    # The refused request took nothing from topic q, which has one token left for D.
    assert check(Hook.QUERY, 0.0, peer_id="D", topic="q") is None
    assert check(Hook.QUERY, 0.0, peer_id="E", topic="q") == "per-topic"
    assert check(Hook.QUERY, 1.0, peer_id="C", topic="q") is None


def test_limiter_is_all_or_nothing() -> None:
    limiter = RateLimiter(Policy.load(LIMITS).rate_limits)
    # Topic t is exhausted; the refused requests must not drain peer A's bucket.
    assert limiter.check("inbound_packet", 0.0, peer_id="X", topic="t") is None
    assert limiter.check("inbound_packet", 0.0, peer_id="Y", topic="t") is None
    for _ in range(10):
        assert limiter.check("inbound_packet", 0.0, peer_id="A", topic="t") == "per-topic"
    for topic in ("u", "v", "w"):
        assert limiter.check("inbound_packet", 0.0, peer_id="A", topic=topic) is None


def test_limiter_misuse() -> None:
    limiter = RateLimiter(Policy.load(LIMITS).rate_limits)
    with pytest.raises(UsageError):
        limiter.check("inbound", 0.0)
    with pytest.raises(UsageError):
        limiter.check("query", 0.0, cost=-1)


def test_default_policy_peer_flood_limit() -> None:
    limiter = RateLimiter(Policy.default().rate_limits)
    results = [limiter.check("inbound_packet", 0.0, peer_id="P", topic="t") for _ in range(2001)]
    assert results[:2000] == [None] * 2000
    assert results[2000] == "peer-flood"
    assert limiter.check("query", 0.0, peer_id="P") == "peer-flood"  # queries share the bucket
    assert limiter.check("inbound_packet", 0.0, peer_id="Q") is None
    later = [limiter.check("inbound_packet", 1.0, peer_id="P") for _ in range(201)]
    assert later.count(None) == 200
    assert limiter.prune(1000.0) >= 1  # Q's full bucket may already have gone on a take
    assert limiter.prune(2000.0) == 0


def test_author_scope_counts_per_author_whoever_relays() -> None:
    policy = Policy.load(
        """
version = 1

[[rate_limit]]
id = "per-author"
scope = "author"
hooks = ["alert"]
rate = 1
burst = 2
"""
    )
    limiter = RateLimiter(policy.rate_limits)
    # Two relays of one author's alerts drain one bucket; another author has its own.
    assert limiter.check(Hook.ALERT, 0.0, peer_id="R1", topic="alerts", author="A") is None
    assert limiter.check(Hook.ALERT, 0.0, peer_id="R2", topic="other", author="A") is None
    assert limiter.check(Hook.ALERT, 0.0, peer_id="R3", topic="alerts", author="A") == "per-author"
    assert limiter.check(Hook.ALERT, 0.0, peer_id="R1", topic="alerts", author="B") is None
    assert limiter.check(Hook.ALERT, 1.0, peer_id="R3", topic="alerts", author="A") is None
    # The limit covers only its hooks.
    assert limiter.check(Hook.INBOUND_PACKET, 0.0, peer_id="R1", author="A") is None


def test_default_policy_alert_author_limit() -> None:
    limiter = RateLimiter(Policy.default().rate_limits)
    burst = [limiter.check(Hook.ALERT, 0.0, peer_id=f"R{i}", author="A") for i in range(11)]
    assert burst == [None] * 10 + ["alert-author"]
    assert limiter.check(Hook.ALERT, 11.0, peer_id="R", author="A") == "alert-author"  # 0.92 token
    assert limiter.check(Hook.ALERT, 12.1, peer_id="R", author="A") is None  # 5 a minute
    assert limiter.check(Hook.ALERT, 0.0, peer_id="R", author="B") is None
