"""The alert flood's bookkeeping (protocol/gossip.py), unit by unit.

:class:`Flood` is one node's seen-set: it says with how many hops a copy goes on (the first copy
from a peer with one hop fewer, our own with the full limit, a later copy only when it has more
hops left than any copy forwarded so far), remembers who sent each id (they are never sent it
back), forgets the oldest ids past its bound, and lists what the backstop's digest carries.
:class:`Quarantines` holds the peers alerts accused, until their quarantine expires or is lifted.
The coordinator's use of both is in test_flood.py.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.protocol.gossip import (
    MAX_DIGEST,
    RECENT_SECONDS,
    Flood,
    Quarantine,
    Quarantines,
    hop_limit,
)

T0 = 1_700_000_000.0
A, B, C = "peer-a", "peer-b", "peer-c"


def aid(n: int) -> bytes:
    """A 32-byte alert id."""
    return n.to_bytes(32, "big")


# -- Flood: how far a copy goes ------------------------------------------------------------------


def test_the_first_copy_from_a_peer_goes_on_with_one_hop_fewer() -> None:
    flood = Flood()
    assert flood.copy_arrived(aid(1), 3, A, T0) == 2
    assert aid(1) in flood and len(flood) == 1


def test_our_own_alert_goes_out_with_the_full_limit() -> None:
    flood = Flood()
    assert flood.copy_arrived(aid(1), 3, None, T0) == 3
    assert flood.senders(aid(1)) == set()


def test_a_copy_with_no_hops_left_is_seen_but_goes_no_further() -> None:
    flood = Flood()
    assert flood.copy_arrived(aid(1), 0, A, T0) is None
    assert aid(1) in flood
    assert flood.senders(aid(1)) == {A}
    # ...and a copy that then comes with hops left is forwarded after all.
    assert flood.copy_arrived(aid(1), 1, B, T0 + 0.1) == 0


def test_a_later_copy_with_more_hops_left_is_forwarded_again() -> None:
    flood = Flood()
    assert flood.copy_arrived(aid(1), 1, A, T0) == 0  # the long way round, at the limit
    assert flood.copy_arrived(aid(1), 3, B, T0 + 0.01) == 2
    assert flood.copy_arrived(aid(1), 4, C, T0 + 0.02) == 3


@pytest.mark.parametrize("later", [0, 1, 2, 3])
def test_a_later_copy_with_as_many_hops_left_or_fewer_is_never_forwarded(later: int) -> None:
    flood = Flood()
    assert flood.copy_arrived(aid(1), 3, A, T0) == 2
    assert flood.copy_arrived(aid(1), later, B, T0 + 1) is None
    assert flood.copy_arrived(aid(1), later, A, T0 + 2) is None  # a duplicate from the same peer


def test_after_our_own_alert_no_copy_is_forwarded_with_the_limit_or_less() -> None:
    flood = Flood()
    assert flood.copy_arrived(aid(1), 3, None, T0) == 3
    assert flood.copy_arrived(aid(1), 3, None, T0 + 1) is None  # raised twice: flooded once
    assert flood.copy_arrived(aid(1), 4, A, T0 + 2) is None  # 3 onward: not more than we sent


@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from([A, B, C, None])), max_size=30))
def test_onward_hops_strictly_increase_and_never_exceed_a_copys_hops(
    copies: list[tuple[int, str | None]],
) -> None:
    """Whatever the order of the copies: what goes on never repeats a hop count and only grows."""
    flood = Flood()
    forwarded: list[int] = []
    for i, (hops, sender) in enumerate(copies):
        onward = flood.copy_arrived(aid(1), hops, sender, T0 + i)
        if onward is not None:
            assert 0 <= onward == (hops if sender is None else hops - 1)
            forwarded.append(onward)
    assert forwarded == sorted(set(forwarded))
    best = max((h if s is None else h - 1 for h, s in copies), default=-1)
    assert (forwarded[-1] if forwarded else -1) == max(best, -1)


def test_every_sender_of_a_copy_is_remembered_and_the_answer_is_a_copy() -> None:
    flood = Flood()
    flood.copy_arrived(aid(1), 3, A, T0)
    flood.copy_arrived(aid(1), 2, B, T0)  # not forwarded, but B has it: never send it back
    flood.copy_arrived(aid(1), 0, C, T0)
    flood.copy_arrived(aid(1), 3, None, T0)  # our own: no sender
    senders = flood.senders(aid(1))
    assert senders == {A, B, C}
    senders.add("someone")
    assert flood.senders(aid(1)) == {A, B, C}
    assert flood.senders(aid(2)) == set()


def test_senders_are_kept_per_alert() -> None:
    flood = Flood()
    flood.copy_arrived(aid(1), 3, A, T0)
    flood.copy_arrived(aid(2), 3, B, T0)
    assert (flood.senders(aid(1)), flood.senders(aid(2))) == ({A}, {B})


def test_an_alert_stored_outside_the_flood_is_new_once_and_has_no_sender() -> None:
    flood = Flood()
    assert flood.stored(aid(1), T0) is True
    assert flood.stored(aid(1), T0 + 1) is False
    assert aid(1) in flood and flood.senders(aid(1)) == set()
    # It was never forwarded: a flooded copy with hops left still goes on.
    assert flood.copy_arrived(aid(1), 2, A, T0 + 2) == 1


def test_a_flooded_alert_is_not_new_to_the_store() -> None:
    flood = Flood()
    flood.copy_arrived(aid(1), 3, A, T0)
    assert flood.stored(aid(1), T0) is False


# -- Flood: the bounded seen-set -----------------------------------------------------------------


def test_the_seen_set_forgets_the_oldest_first() -> None:
    flood = Flood(max_seen=3)
    for n in range(3):
        flood.copy_arrived(aid(n), 3, A, T0 + n)
    flood.copy_arrived(aid(0), 4, B, T0 + 5)  # seen again: still the oldest
    flood.stored(aid(3), T0 + 6)
    assert len(flood) == 3
    assert aid(0) not in flood
    assert [aid(n) in flood for n in (1, 2, 3)] == [True, True, True]
    assert flood.senders(aid(0)) == set()
    flood.copy_arrived(aid(4), 3, A, T0 + 7)
    assert len(flood) == 3 and aid(1) not in flood and aid(4) in flood


def test_a_forgotten_id_is_new_again() -> None:
    flood = Flood(max_seen=1)
    assert flood.copy_arrived(aid(1), 3, A, T0) == 2
    flood.copy_arrived(aid(2), 3, A, T0)
    assert aid(1) not in flood
    assert flood.copy_arrived(aid(1), 3, A, T0) == 2
    assert flood.stored(aid(2), T0) is True


@given(st.lists(st.integers(0, 40), max_size=80), st.integers(1, 8))
def test_the_seen_set_never_grows_past_its_bound_and_keeps_the_newest(ids: list[int], bound: int) -> None:
    flood = Flood(max_seen=bound)
    order: list[int] = []  # first arrival order of the ids it still remembers
    for i, n in enumerate(ids):
        if n % 2:
            flood.copy_arrived(aid(n), 2, A, T0 + i)
        else:
            flood.stored(aid(n), T0 + i)
        if n not in order:
            order.append(n)
        order = order[-bound:]
        assert len(flood) <= bound
    assert {n for n in range(41) if aid(n) in flood} == set(order)


# -- Flood: the digest ---------------------------------------------------------------------------


def test_recent_lists_the_newest_first() -> None:
    flood = Flood()
    flood.copy_arrived(aid(1), 3, A, T0)
    flood.stored(aid(2), T0 + 1)
    flood.copy_arrived(aid(3), 3, None, T0 + 2)
    assert flood.recent(T0 + 3) == [aid(3), aid(2), aid(1)]


def test_recent_is_the_window_since_we_first_had_each_alert() -> None:
    flood = Flood()
    flood.copy_arrived(aid(1), 3, A, T0)
    flood.copy_arrived(aid(2), 3, A, T0 + 10)
    flood.copy_arrived(aid(1), 4, B, T0 + 20)  # a later copy does not make it younger
    assert flood.recent(T0 + RECENT_SECONDS) == [aid(2), aid(1)]  # the edge is inside
    assert flood.recent(T0 + RECENT_SECONDS + 1) == [aid(2)]
    assert flood.recent(T0 + 10 + RECENT_SECONDS + 1) == []
    assert aid(1) in flood  # out of the digest, not out of the seen-set


def test_recent_is_capped_at_a_digest_of_the_newest() -> None:
    flood = Flood()
    for n in range(MAX_DIGEST + 10):
        flood.stored(aid(n), T0 + n / 1000)
    recent = flood.recent(T0 + 1)
    assert len(recent) == MAX_DIGEST
    assert recent == [aid(n) for n in range(MAX_DIGEST + 9, 9, -1)]


def test_an_empty_flood_has_nothing_recent_or_known() -> None:
    flood = Flood()
    assert flood.recent(T0) == []
    assert len(flood) == 0 and aid(1) not in flood


def test_missing_keeps_the_peers_order_and_drops_what_we_have() -> None:
    flood = Flood()
    flood.copy_arrived(aid(2), 3, A, T0)
    flood.stored(aid(4), T0)
    assert flood.missing([aid(5), aid(4), aid(3), aid(2), aid(1)]) == [aid(5), aid(3), aid(1)]
    assert flood.missing([aid(2), aid(4)]) == []
    assert flood.missing([]) == []


def test_a_digest_of_ours_is_all_a_peer_with_nothing_misses() -> None:
    ours, theirs = Flood(), Flood()
    for n in range(5):
        ours.copy_arrived(aid(n), 3, A, T0 + n)
    assert theirs.missing(ours.recent(T0 + 5)) == [aid(n) for n in range(4, -1, -1)]


# -- Quarantines ---------------------------------------------------------------------------------


def test_a_first_accusation_holds_the_peer_until_its_expiry() -> None:
    held = Quarantines()
    q, new = held.accuse(B, alert="aa", author=A, until=T0 + 3600)
    assert new is True
    assert (q.peer, q.until, q.accusers, q.alerts) == (B, T0 + 3600, {A}, ["aa"])
    assert B in held and A not in held
    assert list(held) == [q]


def test_a_later_accusation_adds_to_the_same_quarantine_and_keeps_its_deadline() -> None:
    held = Quarantines()
    first, _ = held.accuse(B, alert="aa", author=A, until=T0 + 3600)
    again, new = held.accuse(B, alert="bb", author=C, until=T0 + 7200)
    assert new is False and again is first
    assert again.until == T0 + 3600
    assert again.accusers == {A, C}
    assert again.alerts == ["aa", "bb"]


def test_an_author_counts_once_and_an_alert_is_listed_once() -> None:
    held = Quarantines()
    held.accuse(B, alert="aa", author=A, until=T0 + 10)
    held.accuse(B, alert="bb", author=A, until=T0 + 10)  # the same author again
    q, _ = held.accuse(B, alert="aa", author=A, until=T0 + 10)  # the same alert again
    assert q.accusers == {A}
    assert q.alerts == ["aa", "bb"]


def test_an_accusation_that_does_not_count_holds_the_peer_but_names_no_accuser() -> None:
    held = Quarantines()
    q, new = held.accuse(B, alert="aa", author=None, until=T0 + 10)
    assert new and B in held and q.accusers == set() and q.alerts == ["aa"]
    q, _ = held.accuse(B, alert="bb", author=None, until=T0 + 10)
    assert q.accusers == set() and q.alerts == ["aa", "bb"]


def test_quarantines_expire_at_their_deadline() -> None:
    held = Quarantines()
    held.accuse(C, alert="cc", author=A, until=T0 + 20)
    held.accuse(B, alert="bb", author=A, until=T0 + 10)
    assert held.expired(T0 + 9.9) == []
    assert held.expired(T0 + 10) == [B]
    assert held.expired(T0 + 30) == [B, C]
    assert B in held  # expired() reports; the coordinator lifts


def test_lift_ends_a_quarantine_and_says_whether_there_was_one() -> None:
    held = Quarantines()
    q, _ = held.accuse(B, alert="bb", author=A, until=T0 + 10)
    assert held.lift(B) is q
    assert B not in held and held.expired(T0 + 100) == []
    assert held.lift(B) is None
    q2, new = held.accuse(B, alert="b2", author=C, until=T0 + 50)  # accused again: a new one
    assert new and q2.accusers == {C} and q2.alerts == ["b2"]


def test_next_expiry_is_the_earliest_deadline() -> None:
    held = Quarantines()
    assert held.next_expiry() is None
    held.accuse(B, alert="bb", author=A, until=T0 + 30)
    held.accuse(C, alert="cc", author=A, until=T0 + 20)
    assert held.next_expiry() == T0 + 20
    held.lift(C)
    assert held.next_expiry() == T0 + 30
    held.lift(B)
    assert held.next_expiry() is None


def test_quarantines_iterate_by_deadline_then_peer() -> None:
    held = Quarantines()
    held.accuse("z", alert="1", author=None, until=T0 + 5)
    held.accuse("b", alert="2", author=None, until=T0 + 9)
    held.accuse("a", alert="3", author=None, until=T0 + 9)
    assert [q.peer for q in held] == ["z", "a", "b"]


def test_a_quarantine_as_json_lists_accusers_sorted() -> None:
    q = Quarantine(B, T0 + 1, {C, A}, ["aa", "bb"])
    assert q.to_json() == {"peer": B, "until": T0 + 1, "accusers": [A, C], "alerts": ["aa", "bb"]}


# -- hop_limit -----------------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", [1, 2, 5, 10])
@pytest.mark.parametrize("degree", [1, 2, 3, 9])
def test_three_hops_for_up_to_ten_nodes(nodes: int, degree: int) -> None:
    assert hop_limit(nodes, degree) == 3


@pytest.mark.parametrize("nodes", [11, 100, 10_000])
def test_three_hops_for_a_line_or_ring_of_any_size(nodes: int) -> None:
    assert hop_limit(nodes, 2) == 3  # degree − 1 = 1: the logarithm's base says nothing


@pytest.mark.parametrize(
    ("nodes", "degree", "expected"),
    [(11, 3, 7), (100, 4, 8), (100, 11, 5), (50, 8, 6)],
)
def test_beyond_ten_nodes_log_n_over_log_degree_minus_one_plus_three(
    nodes: int, degree: int, expected: int
) -> None:
    assert hop_limit(nodes, degree) == expected


@given(st.integers(11, 1_000_000), st.integers(3, 1000))
def test_the_limit_is_at_least_the_rule_of_thumb_and_an_integer_above_it(nodes: int, degree: int) -> None:
    limit = hop_limit(nodes, degree)
    rule = math.log(nodes) / math.log(degree - 1) + 3
    assert isinstance(limit, int)
    assert rule - 1e-9 <= limit < rule + 1
    assert limit >= 4  # more than ten nodes: always above the small federations' 3
