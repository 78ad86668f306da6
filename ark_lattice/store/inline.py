"""An aiosqlite-shaped connection that runs every statement inline, on the event loop's thread.

aiosqlite hands each statement to a worker thread, which is right for a node (the loop keeps
serving sockets while SQLite works on the disk) and wrong for the simulator: threads make the
order of events depend on the operating system's scheduler, and a thousand nodes would mean a
thousand threads. Over an in-memory database a statement takes microseconds, so running it inline
costs nothing and keeps a simulated run a pure function of its seed.

Only what :class:`~ark_lattice.store.store.Store` uses is implemented: ``execute`` (awaitable, and
an async context manager that yields the cursor), ``executemany``, ``close`` and ``backup``; a
cursor offers ``fetchone``, ``fetchall``, ``fetchmany`` and ``rowcount``. Open a store on it with
``Store.open(Path(":memory:"), connect=inline.connect)``, and drive its coroutines with :func:`run`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Coroutine, Generator, Iterable, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

if TYPE_CHECKING:
    from ark_lattice.store.store import Store

T = TypeVar("T")

__all__ = ["connect", "run", "rows", "InlineConnection", "InlineCursor"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of a store on this connection to its end, with no event loop.

    Every await in a store on an inline connection lands on a statement that completes at once
    (and its lock is never contended, since nothing else runs meanwhile), so the coroutine never
    suspends: one ``send`` runs it to the end. A coroutine that does suspend waits for something
    outside the store, which the simulator never has; that is a bug, reported as one.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise RuntimeError("a coroutine run inline waited for something that is not an inline statement")


def rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    """Every row ``sql`` reads from ``store`` (a store on an inline connection), run inline."""

    async def collect() -> list[tuple[Any, ...]]:
        return [row async for row in store.iter_rows(sql)]

    return run(collect())


async def connect(
    database: str | PathLike[str],
    *,
    isolation_level: Literal["DEFERRED", "EXCLUSIVE", "IMMEDIATE"] | None = None,
    timeout: float = 5.0,
) -> InlineConnection:
    """Open ``database`` (usually ``":memory:"``) like ``aiosqlite.connect`` would."""
    return InlineConnection(sqlite3.connect(database, isolation_level=isolation_level, timeout=timeout))


class InlineCursor:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size) if size is not None else self._cursor.fetchmany()

    async def close(self) -> None:
        self._cursor.close()


class _Statement:
    """What ``execute`` returns: await it for the cursor, or ``async with`` it to close the cursor.

    Like aiosqlite's ``Result``, the statement runs when awaited or entered, not when created.
    """

    __slots__ = ("_run", "_cursor")

    def __init__(self, run: Any) -> None:
        self._run = run
        self._cursor: InlineCursor | None = None

    async def _execute(self) -> InlineCursor:
        self._cursor = InlineCursor(self._run())
        return self._cursor

    def __await__(self) -> Generator[Any, None, InlineCursor]:
        return self._execute().__await__()

    async def __aenter__(self) -> InlineCursor:
        return await self._execute()

    async def __aexit__(self, *exc: object) -> None:
        if self._cursor is not None:
            self._cursor._cursor.close()


class InlineConnection:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> _Statement:
        return _Statement(lambda: self._conn.execute(sql, parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> _Statement:
        return _Statement(lambda: self._conn.executemany(sql, parameters))

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    async def backup(self, target: sqlite3.Connection | InlineConnection, **kwargs: Any) -> None:
        if isinstance(target, InlineConnection):
            target = target._conn
        self._conn.backup(target, **kwargs)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    @property
    def total_changes(self) -> int:
        return self._conn.total_changes
