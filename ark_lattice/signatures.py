"""Packet signatures checked on every core: the packet pass of ``ledger verify`` (DESIGN §8).

Ed25519 verification (libsodium, through cffi) and SHA-256 release the GIL, so batches of packets
opened on a pool of ``os.cpu_count()`` threads are checked side by side while the event loop goes
on reading rows. The results come back in the rows' order, each row with its packet or with the
exception opening it raised, so the caller checks them one after another exactly as before and
names the same first bad packet.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ark_lattice.packet import Packet

__all__ = ["opened_in_order", "open_batch", "BATCH", "BATCH_BYTES"]

BATCH = 256  # packets per task on the pool: large enough that handing it over costs nothing
BATCH_BYTES = 4 << 20  # and at most about this many body bytes, so 1 MiB bodies stay few in memory
IN_FLIGHT = 2  # batches per worker queued or running while the loop reads the next rows

Row = TypeVar("Row")
Parts = tuple[Any, Any, Any]  # a packet's header, signature and body, as read


def open_batch(batch: list[Parts]) -> list[Packet | Exception]:
    """Each packet parsed and fully verified (``Packet.from_parts``), or what that raised."""
    out: list[Packet | Exception] = []
    for header, signature, body in batch:
        try:
            out.append(Packet.from_parts(header, signature, body))
        except Exception as exc:  # handed back in order: the caller raises it at this row's turn
            out.append(exc)
    return out


async def opened_in_order(
    rows: AsyncIterable[Row],
    parts: Callable[[Row], Parts],
    *,
    workers: int | None = None,
) -> AsyncGenerator[tuple[Row, Packet | Exception], None]:
    """Each row with its opened packet (or the exception opening it raised), in the rows' order;
    ``parts`` takes a row's header, signature and body. Batches are opened on ``workers`` threads
    (every core by default), at most :data:`IN_FLIGHT` per worker at a time."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # the simulator's inline store (store/inline.py): no loop, no threads
        async for row in rows:
            part = parts(row)
            yield row, open_batch([part])[0]
        return
    threads = workers or os.cpu_count() or 1
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verify")
    pending: deque[tuple[list[Row], asyncio.Future[list[Packet | Exception]]]] = deque()
    failure: Exception | None = None
    try:
        batch: list[Row] = []
        size = 0
        opening: list[Parts] = []
        try:
            async for row in rows:
                part = parts(row)  # may raise (a body file gone): then this row is the failure
                batch.append(row)
                opening.append(part)
                body = part[2]
                size += len(body) if isinstance(body, bytes) else 0
                if len(batch) < BATCH and size < BATCH_BYTES:
                    continue
                pending.append((batch, loop.run_in_executor(pool, open_batch, opening)))
                batch, opening, size = [], [], 0
                while len(pending) > IN_FLIGHT * threads:
                    done, future = pending.popleft()
                    for pair in zip(done, await future, strict=True):
                        yield pair
        except Exception as exc:
            # A row that cannot be read (a damaged page): the rows read before it are handed
            # back first, as one after another would have checked them, then the failure.
            failure = exc
        if batch:
            pending.append((batch, loop.run_in_executor(pool, open_batch, opening)))
        while pending:
            done, future = pending.popleft()
            for pair in zip(done, await future, strict=True):
                yield pair
        if failure is not None:
            raise failure
    finally:
        # A bad packet stops the caller early: batches not started are dropped, running ones end.
        pool.shutdown(wait=False, cancel_futures=True)

