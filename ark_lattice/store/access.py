"""How a process reaches its ledger: one writer, readers on their own snapshot, bounded retries.

SQLite in WAL mode allows one writer and any number of readers, each reader on the snapshot its
read transaction began with. The store (store.py) keeps to that:

- **one writer connection**, used only inside ``Store.transaction()`` (``BEGIN IMMEDIATE``, under
  the store's lock), so a transaction's uncommitted rows are seen by that transaction alone;
- **one reader connection** for every read outside a transaction. It only ever sees committed
  transactions, so every count the node reports (``federation status``, metrics) is durable: a
  kill -9 right after the answer cannot take it back. Each read is a complete statement whose
  cursor is closed before the call returns, so no read holds a snapshot across an await;
- **a private snapshot connection** for each long streaming read (``Store.iter_rows``: verify,
  exports), closed when the iteration ends, so a slow consumer never pins the shared reader;
- ``BEGIN IMMEDIATE`` and ``COMMIT`` retried on ``SQLITE_BUSY`` (another process holds the write
  lock) and ``SQLITE_BUSY_SNAPSHOT`` (this connection's snapshot went stale) with a doubling,
  capped delay, until :attr:`RetryPolicy.budget` seconds have passed; then one
  :class:`~ark_lattice.errors.LedgerError` sentence, never a traceback. SQLite's own busy handler
  is off on the writer once the ledger is open (:attr:`RetryPolicy.attempt_ms`), so the waiting
  happens on the event loop (cancellable, counted in :class:`AccessStats`) rather than inside a
  blocked worker thread.

This module holds the policy and the retry loop; it has no state of its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ark_lattice.errors import LedgerError

__all__ = ["AccessStats", "RetryPolicy", "busy_kind", "retry_busy", "SQLITE_BUSY_SNAPSHOT"]

T = TypeVar("T")

SQLITE_BUSY = 5
SQLITE_BUSY_SNAPSHOT = 517  # SQLITE_BUSY | (2 << 8)
SQLITE_LOCKED = 6


@dataclass(frozen=True)
class RetryPolicy:
    """How long a write waits for the ledger's write lock before it gives up."""

    first_delay: float = 0.005  # seconds before the first retry; doubles each time
    max_delay: float = 0.1  # short, so a writer that keeps coming back is not starved
    budget: float = 30.0  # seconds of retrying, after which the write fails with one sentence
    # SQLite's own busy handler per attempt (PRAGMA busy_timeout); 0: every wait is ours, counted
    attempt_ms: int = 0


@dataclass
class AccessStats:
    """What the retries cost, for tests, benches and metrics (observation only)."""

    busy_retries: int = 0  # another connection held the write lock
    snapshot_retries: int = 0  # this connection's read snapshot was stale
    gave_up: int = 0  # writes that failed after the whole budget
    longest_wait: float = 0.0  # seconds, the longest a write waited before it went through

    @property
    def retries(self) -> int:
        return self.busy_retries + self.snapshot_retries

    def to_json(self) -> dict[str, float]:
        return {
            "busy_retries": self.busy_retries,
            "snapshot_retries": self.snapshot_retries,
            "gave_up": self.gave_up,
            "longest_wait_s": round(self.longest_wait, 3),
        }


def busy_kind(exc: BaseException) -> str | None:
    """``"busy"``, ``"snapshot"`` or None: whether ``exc`` is a lock conflict worth retrying."""
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if code == SQLITE_BUSY_SNAPSHOT:
        return "snapshot"
    if code is not None and code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED):
        return "busy"
    text = str(exc).lower()
    return "busy" if "locked" in text or "busy" in text else None


async def retry_busy(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    stats: AccessStats,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``attempt`` until it does not fail with a lock conflict, within ``policy.budget``.

    ``attempt`` must be safe to repeat after a lock conflict (``BEGIN IMMEDIATE`` and ``COMMIT``
    are: SQLite changes nothing when it answers BUSY). Other errors propagate at once.
    """
    started = clock()
    delay = policy.first_delay
    while True:
        try:
            result = await attempt()
        except sqlite3.OperationalError as exc:
            kind = busy_kind(exc)
            if kind is None:
                raise
            waited = clock() - started
            if waited + delay > policy.budget:
                stats.gave_up += 1
                raise LedgerError(
                    f"the ledger stayed locked by another process for {waited:.1f} s; "
                    "nothing was written, try again"
                ) from None
            if kind == "snapshot":
                stats.snapshot_retries += 1
            else:
                stats.busy_retries += 1
            await sleep(delay)
            delay = min(delay * 2, policy.max_delay)
            continue
        stats.longest_wait = max(stats.longest_wait, clock() - started)
        return result
