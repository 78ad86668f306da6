from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.hlc import HybridClock, unpack


def test_clock_never_goes_backwards_even_if_the_wall_clock_does():
    clock = HybridClock()
    a = clock.tick(1000)
    b = clock.tick(999)
    c = clock.tick(1000)
    assert a < b < c
    assert unpack(c) == (1000, 2)


def test_clock_moves_past_observed_timestamps():
    clock = HybridClock()
    clock.observe(HybridClock(0).tick(5000))
    assert clock.tick(10) > HybridClock(0).tick(5000)


@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=200))
def test_ticks_are_strictly_increasing(walls):
    clock = HybridClock()
    stamps = [clock.tick(w) for w in walls]
    assert stamps == sorted(set(stamps))
