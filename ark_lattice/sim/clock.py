"""Virtual time: an asyncio event loop whose clock only moves when nothing is ready to run.

The simulated mesh does no real I/O, so there is never anything to wait for but timers. Where a
normal loop would block in ``select(timeout)``, this one moves its clock to the next timer at once
(trio's autojump ``MockClock`` does the same), so an hour of protocol time takes as long as the
work done in it. Everything the loop runs is then a function of the order in which callbacks and
timers were scheduled, which the seed fixes: no thread, no socket and no wall clock can reorder it.

Tasks belong to the simulated node whose context they were created in (``OWNER``, a context
variable inherited by every child task), so a node can be crashed by cancelling exactly its tasks,
in the order they were created.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, Protocol

__all__ = ["VirtualTimeLoop", "SimulationStalled", "OWNER", "TaskOwner"]


class TaskOwner(Protocol):
    def adopt(self, task: asyncio.Task[Any]) -> None: ...


OWNER: contextvars.ContextVar[TaskOwner | None] = contextvars.ContextVar("sim_owner", default=None)


class SimulationStalled(RuntimeError):
    """Nothing is ready and no timer is set: the simulation can never make progress again."""


class _Autojump:
    """Stands in for the selector: no file descriptors, and ``select(timeout)`` jumps the clock."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise SimulationStalled("every task is waiting and no timer is set")
        if timeout > 0:
            loop = self._loop
            target = loop._now + timeout
            scheduled = loop._scheduled
            if scheduled and scheduled[0]._when <= target:
                target = scheduled[0]._when  # exactly the timer's time, not a float sum near it
            loop._now = max(loop._now, target)
        return []

    def close(self) -> None:
        pass


class VirtualTimeLoop(asyncio.BaseEventLoop):
    """``time()`` starts at 0.0 and advances only to the next due timer."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _Autojump(self)
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._now

    def create_task(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        task = super().create_task(coro, name=name, context=context)
        owner = context.get(OWNER) if context is not None else OWNER.get()
        if owner is not None:
            owner.adopt(task)
        return task

    # -- what BaseEventLoop leaves to a subclass -------------------------------------------

    def _process_events(self, event_list: list[Any]) -> None:
        pass  # no file descriptors

    def _write_to_self(self) -> None:
        pass  # no other thread ever wakes this loop
