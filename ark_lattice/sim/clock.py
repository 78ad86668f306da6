"""Virtual time: a discrete-event scheduler whose clock jumps from one due callback to the next.

The simulated mesh does no real I/O: every node is its coordinator and sessions (sans-I/O), its
store runs inline, and its network delivers messages by scheduling callbacks. So nothing ever
waits for anything but time, and time can jump straight to the next thing due, as trio's autojump
clock does; an hour of protocol time takes as long as the work done in it. Callbacks run in the
order (due time, order of scheduling), which the seed fixes: no thread, socket, wall clock or
event loop can reorder them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

__all__ = ["Scheduler", "Timer"]


class Timer:
    """One scheduled callback; :meth:`cancel` keeps it from running."""

    __slots__ = ("at", "seq", "callback", "args", "cancelled")

    def __init__(self, at: float, seq: int, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.at = at
        self.seq = seq
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """``time()`` starts at 0.0 and moves only when :meth:`run_until` reaches the next timer."""

    def __init__(self) -> None:
        self._now = 0.0
        self._heap: list[tuple[float, int, Timer]] = []  # tuples: compared in C, not by __lt__
        self._seq = 0

    def time(self) -> float:
        return self._now

    def call_at(self, at: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` at ``at`` (now, if ``at`` has passed)."""
        self._seq += 1
        timer = Timer(max(at, self._now), self._seq, callback, args)
        heapq.heappush(self._heap, (timer.at, timer.seq, timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self.call_at(self._now + delay, callback, *args)

    def run_until(self, at: float) -> None:
        """Run every callback due up to ``at`` (including those they schedule), then stand at ``at``."""
        heap = self._heap
        while heap and heap[0][0] <= at:
            timer = heapq.heappop(heap)[2]
            if timer.cancelled:
                continue
            self._now = timer.at
            timer.callback(*timer.args)
        self._now = max(self._now, at)

    def pending(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)
