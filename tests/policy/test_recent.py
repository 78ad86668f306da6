"""RecentKeys: a fixed-size memory of 64-bit keys, CLOCK eviction, backward-shift removal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.policy.recent import RecentKeys


class ClockModel:
    """The same policy, written plainly: a ring of keys, reference bits and a hand."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ring: list[int] = []
        self.seen: list[bool] = []
        self.hand = 0

    def touch(self, key: int) -> bool:
        if key in self.ring:
            self.seen[self.ring.index(key)] = True
            return True
        return False

    def add(self, key: int) -> None:
        if len(self.ring) < self.capacity:
            self.ring.append(key)
            self.seen.append(False)
            return
        while self.seen[self.hand]:
            self.seen[self.hand] = False
            self.hand = (self.hand + 1) % self.capacity
        self.ring[self.hand], self.seen[self.hand] = key, False
        self.hand = (self.hand + 1) % self.capacity


def consistent(recent: RecentKeys) -> None:
    # Every key held is found from its home slot, and the table names no other position.
    positions = [e - 1 for e in recent._table if e]
    assert sorted(positions) == list(range(len(recent)))
    for pos in range(len(recent)):
        assert recent._find(recent._ring[pos])[1] == pos


# Keys from a small pool (so they repeat and evict) whose low bits collide a lot (long probe runs
# that wrap around the table), plus keys over 64 bits and negative ones (Python's hash()).
keys = st.one_of(
    st.integers(0, 40).map(lambda k: k * 16),
    st.integers(0, 40).map(lambda k: (k << 40) | 3),
    st.integers(-(2**70), 2**70),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12), st.lists(keys, max_size=200))
def test_it_keeps_the_keys_the_clock_policy_keeps(capacity: int, stream: list[int]) -> None:
    recent, model = RecentKeys(capacity), ClockModel(capacity)
    for key in stream:
        key &= 2**64 - 1
        assert recent.touch(key) == model.touch(key)
        if key not in model.ring:
            recent.add(key)
            model.add(key)
        consistent(recent)
        assert len(recent) == len(model.ring) <= capacity
        assert all(k in recent for k in model.ring)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.lists(keys, max_size=120))
def test_nothing_is_forgotten_within_the_capacity(capacity: int, stream: list[int]) -> None:
    recent = RecentKeys(capacity)
    distinct: list[int] = []
    for key in stream:
        if not recent.touch(key):
            recent.add(key)
        if key & (2**64 - 1) not in distinct:
            distinct.append(key & (2**64 - 1))
    if len(distinct) <= capacity:
        assert all(key in recent for key in distinct)


def test_a_key_seen_again_outlives_one_that_was_not() -> None:
    recent = RecentKeys(3)
    for key in (1, 2, 3):
        recent.add(key)
    assert recent.touch(1)
    recent.add(4)  # the hand passes 1 (seen: spared) and forgets 2
    assert 1 in recent and 2 not in recent and 3 in recent and 4 in recent


def test_its_arrays_are_allocated_once() -> None:
    recent = RecentKeys(65_536)
    sizes = (len(recent._table), len(recent._ring), len(recent._seen))
    for key in range(200_000):
        if not recent.touch(key * 0x9E3779B97F4A7C15):
            recent.add(key * 0x9E3779B97F4A7C15)
    assert (len(recent._table), len(recent._ring), len(recent._seen)) == sizes
    assert len(recent) == 65_536
    with pytest.raises(ValueError):
        recent.add(199_999 * 0x9E3779B97F4A7C15)  # remembered already
    with pytest.raises(ValueError):
        RecentKeys(0)
