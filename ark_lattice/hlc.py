"""Hybrid logical clock (Kulkarni et al., 2014) for packet timestamps.

A timestamp is one 64-bit integer: milliseconds since the Unix epoch in the high 48 bits and a
logical counter in the low 16. It never goes backwards on one node, even if the wall clock does, and
it moves past every timestamp the node has seen, so causally later packets sort later everywhere.
Pure: the caller passes ``now_ms``; the clock never reads time itself.
"""

from __future__ import annotations

__all__ = ["HybridClock", "pack", "unpack", "LOGICAL_BITS"]

LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def pack(physical_ms: int, logical: int) -> int:
    return (physical_ms << LOGICAL_BITS) | logical


def unpack(timestamp: int) -> tuple[int, int]:
    return timestamp >> LOGICAL_BITS, timestamp & _LOGICAL_MASK


class HybridClock:
    __slots__ = ("last",)

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def tick(self, now_ms: int) -> int:
        """A new timestamp for a local event at wall time ``now_ms``."""
        physical, logical = unpack(self.last)
        if now_ms > physical:
            self.last = pack(now_ms, 0)
        elif logical < _LOGICAL_MASK:
            self.last = pack(physical, logical + 1)
        else:  # 65 536 events in one millisecond: borrow the next millisecond
            self.last = pack(physical + 1, 0)
        return self.last

    def observe(self, remote: int) -> None:
        """Move past a timestamp seen on a received packet."""
        if remote > self.last:
            self.last = remote
