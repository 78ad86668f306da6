"""Packet checks on every core: the packet pass of ``ledger verify`` (DESIGN §8).

Ed25519 verification (libsodium, through cffi) and SHA-256 release the GIL, so batches of rows
checked on a pool of ``os.cpu_count()`` threads are checked side by side while the event loop goes
on reading rows. Each batch is checked whole on its worker (parse, hashes, signature and whatever
else the caller's ``check`` compares), so the event loop only reads rows and takes the results,
in the rows' order: the caller goes through them one after another exactly as before and names
the same first bad packet.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["checked_in_order", "BATCH", "BATCH_BYTES"]

BATCH = 128  # rows per task on the pool: large enough that handing it over costs nothing
BATCH_BYTES = 4 << 20  # and at most about this many body bytes, so 1 MiB bodies stay few in memory
IN_FLIGHT = 2  # batches per worker queued or running while the loop reads the next rows

Row = TypeVar("Row")
Result = TypeVar("Result")


def _tasks(rows: list[Row], size: Callable[[Row], int] | None) -> list[list[Row]]:
    """``rows`` cut into tasks of at most :data:`BATCH` rows and about :data:`BATCH_BYTES`."""
    if size is None:
        return [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    tasks: list[list[Row]] = []
    task: list[Row] = []
    held = 0
    for row in rows:
        task.append(row)
        held += size(row)
        if len(task) >= BATCH or held >= BATCH_BYTES:
            tasks.append(task)
            task, held = [], 0
    if task:
        tasks.append(task)
    return tasks


async def checked_in_order(
    batches: AsyncIterable[list[Row]],
    check: Callable[[list[Row]], list[Result]],
    *,
    size: Callable[[Row], int] | None = None,
    workers: int | None = None,
) -> AsyncGenerator[tuple[list[Row], list[Result]], None]:
    """Each batch of rows with ``check``'s results for it (one per row), in the rows' order.

    ``check`` runs on ``workers`` threads (every core by default), at most :data:`IN_FLIGHT`
    tasks per worker at a time; ``size`` gives a row's bytes, to keep large bodies few in memory.
    ``check`` hands back a failure as a result (it must not raise): the caller meets it at its
    row's turn. A batch that cannot be read (a damaged page) raises after every batch read
    before it has been handed back, as one row after another would have met them.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # the simulator's inline store (store/inline.py): no loop, no threads
        async for rows in batches:
            for task in _tasks(rows, size):
                yield task, check(task)
        return
    threads = workers or os.cpu_count() or 1
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verify")
    pending: deque[tuple[list[Row], asyncio.Future[list[Result]]]] = deque()
    failure: Exception | None = None
    try:
        try:
            async for rows in batches:
                for task in _tasks(rows, size):
                    pending.append((task, loop.run_in_executor(pool, check, task)))
                while len(pending) > IN_FLIGHT * threads:
                    done, future = pending.popleft()
                    yield done, await future
        except Exception as exc:
            # A row that cannot be read (a damaged page): the rows read before it are handed
            # back first, as one after another would have checked them, then the failure.
            failure = exc
        while pending:
            done, future = pending.popleft()
            yield done, await future
        if failure is not None:
            raise failure
    finally:
        # A bad packet stops the caller early: batches not started are dropped, running ones end.
        pool.shutdown(wait=False, cancel_futures=True)
