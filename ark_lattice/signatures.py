"""Packet checks on every core: the packet pass of ``ledger verify`` (DESIGN §8).

Batches of rows are checked on a pool of workers, one per core up to :data:`MAX_WORKERS`, while
the event loop goes on reading rows. Each batch is checked whole on its worker (parse, hashes,
signature and whatever else the caller's ``check`` compares), so the event loop only reads rows
and takes the results, in the rows' order: the caller goes through them one after another
exactly as before and names the same first bad packet.

The workers are threads for a small ledger and processes for a large one (:func:`pool`).
Ed25519 verification (libsodium, through cffi) releases the GIL, but the Python around each
signature (the header's parse and checks) holds it, and so does the loop: two threads checking
rows took turns on the GIL with the loop, and the kernel's hand-overs between them (0.87 context
switches a packet) cost as much as a tenth of the signatures. Measured on the 2-core VM (issue 16):
the rows of a 100k-packet home checked alone, on 2 threads 23.0k and 25.2k packets/s (78 and 72 us
of CPU a packet), on 2 forked processes 31.5k and 30.0k/s (62 and 66 us); a whole ``ledger
verify`` of a 1M-packet home, 3 runs alternating with threads: 24.8k, 25.7k, 23.7k against 20.7k,
21.2k, 22.7k packets/s (bare Ed25519 on both cores: 35k-45k/s as the machine's state moved). A
process costs a fork and a copy of each batch through a pipe, which a small ledger does not earn
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

from ark_lattice.errors import Unfinished

__all__ = ["checked_in_order", "pool", "BATCH", "BATCH_BYTES", "MAX_WORKERS", "PROCESSES_FROM"]

BATCH = 512  # rows per task on the pool: large enough that handing it over costs little (to a
# process, at 1M packets: the parent's threads used 34.7 s of CPU with 128 rows a task, 30.3 s
# with 512, in one run each; the pickling and the results are per task)
BATCH_BYTES = 4 << 20  # and at most about this many body bytes, so 1 MiB bodies stay few in memory
IN_FLIGHT = 2  # batches per worker queued or running while the loop reads the next rows
# Rows from which the workers are processes (module doc). A whole verify of a 100k-packet home took
# 4.6 and 4.7 s on them against 6.8 and 5.8 s on threads; a fork costs a few milliseconds, and 20k
# rows take about a second on threads.
PROCESSES_FROM = 20_000
# The parent feeds the workers, and its own share of a packet (reading it, the log, the checks
# against it, SQLite's integrity check: about 30 us of CPU at 1M packets) leaves room for about
# three workers of 52-72 us a row: more would wait, each a process forked for nothing. The same
# cap as the node's verifier threads (runtime/peering.py).
MAX_WORKERS = 4
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

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


def _workers() -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def _forks() -> bool:
    """Whether a worker process can be forked here. Only on Linux: macOS's system libraries are
    not safe to use in a forked child, and a spawned one would start the whole CLI again."""
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def _child(parent: int) -> None:
    """A worker process's start: it ends with its parent, leaves Ctrl-C to it, and drops the
    signal handling it was forked with.

    The parent may end without a word to its workers (a SIGTERM, a kill -9), and they would
    wait for work forever: the kernel kills each with its parent (Linux's ``PR_SET_PDEATHSIG``;
    forked only there, :func:`_forks`). The parent reports Ctrl-C once and stops the pool, not
    every worker with a traceback of its own. And the parent's event loop learns of a signal
    through a socket the child shares: it would take a signal sent to a child for its own.
    """
    with contextlib.suppress(AttributeError, OSError):  # no such call: it ends when it is told
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the line above
        os._exit(1)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


@contextlib.asynccontextmanager
async def pool(rows: int) -> AsyncIterator[Executor | None]:
    """The workers for a pass over about ``rows`` rows: threads, or processes from
    :data:`PROCESSES_FROM` rows on a machine of several cores that can fork (module doc); None
    without an event loop (the simulator's inline store, store/inline.py, checks on the caller).

    The processes are forked here, at once: the caller enters this before it starts threads of
    its own, so that no lock one of them holds is copied into a child (a child runs only the
    check: parsing, hashing, libsodium and reading body files).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        yield None
        return
    workers = _workers()
    executor: Executor | None = None
    if rows >= PROCESSES_FROM and workers > 1 and _forks():
        executor = await _processes(loop, workers)
    if executor is None:
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")
    try:
        yield executor
    finally:
        # A bad packet stops the caller early: batches not started are dropped, running ones end.
        executor.shutdown(wait=False, cancel_futures=True)


async def _processes(loop: asyncio.AbstractEventLoop, workers: int) -> ProcessPoolExecutor | None:
    """``workers`` processes, forked now (3.11 forks them all at the first task); None where
    they cannot start (no ``/dev/shm`` for the pool's locks, or no working ``sem_open`` at all):
    threads check as well."""
    try:
        executor = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_child,
            initargs=(os.getpid(),),
        )
    except (OSError, NotImplementedError):
        return None
    try:
        await loop.run_in_executor(executor, int)
    except (OSError, BrokenExecutor):
        executor.shutdown(wait=False, cancel_futures=True)
        return None
    return executor


def _stopped() -> Unfinished:
    return Unfinished(
        "a process checking packet signatures stopped before it finished (killed, or out of "
        "memory); nothing is known about the packets it held: run the check again"
    )


async def checked_in_order(
    batches: AsyncIterable[list[Row]],
    check: Callable[[list[Row]], list[Result]],
    executor: Executor | None,
    *,
    size: Callable[[Row], int] | None = None,
) -> AsyncGenerator[tuple[list[Row], list[Result]], None]:
    """Each batch of rows with ``check``'s results for it (one per row), in the rows' order.

    ``check`` runs on ``executor``'s workers (:func:`pool`; on the caller when None), at most
    :data:`IN_FLIGHT` tasks per worker at a time; ``size`` gives a row's bytes, to keep large
    bodies few in memory. ``check`` hands back a failure as a result (it must not raise): the
    caller meets it at its row's turn. On processes, ``check``, the rows and the results are
    pickled. A batch that cannot be read (a damaged page) raises after every batch read before
    it has been handed back, as one row after another would have met them.
    """
    if executor is None:
        async for rows in batches:
            for task in _tasks(rows, size):
                yield task, check(task)
        return
    loop = asyncio.get_running_loop()
    ahead = IN_FLIGHT * _workers()
    pending: deque[tuple[list[Row], asyncio.Future[list[Result]]]] = deque()
    failure: Exception | None = None

    def submit(task: list[Row]) -> asyncio.Future[list[Result]]:
        try:
            return loop.run_in_executor(executor, check, task)
        except BrokenExecutor:  # a worker was killed before this task
            raise _stopped() from None

    async def result(future: asyncio.Future[list[Result]]) -> list[Result]:
        try:
            return await future
        except BrokenExecutor:  # a worker was killed with this task or before it
            raise _stopped() from None

    try:
        async for rows in batches:
            for task in _tasks(rows, size):
                pending.append((task, submit(task)))
            while len(pending) > ahead:
                done, future = pending.popleft()
                yield done, await result(future)
    except Unfinished:
        raise
    except Exception as exc:
        # A row that cannot be read (a damaged page): the rows read before it are handed
        # back first, as one after another would have checked them, then the failure.
        failure = exc
    while pending:
        done, future = pending.popleft()
        yield done, await result(future)
    if failure is not None:
        raise failure
