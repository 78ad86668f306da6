"""Giving the pages a ledger no longer uses back to the disk (``ark-lattice ledger compact``).

SQLite never shrinks a file by itself: the pages a ``DROP TABLE`` or a delete frees go on the
file's free list, to be reused by later inserts. Migration 0004 rebuilds the packets table and
drops the old one, so a migrated ledger keeps the old table's size as free pages: a 1M-packet
home migrated from 0003 is 6.7 GB with 71% of its pages free, where the same packets in a
ledger made at 0004 take 1.99 GB.

How: a plain ``VACUUM`` on the store's writer connection, then ``PRAGMA wal_checkpoint(TRUNCATE)``.
SQLite builds a compacted copy in a temporary file, then writes it back over the ledger as one
transaction through the write-ahead log; the checkpoint copies it into the file and cuts the file
to its new length. A ``kill -9`` (or a power cut: the writer is ``synchronous=FULL``) at any moment
leaves either the old ledger or the compacted one, both whole: before the transaction commits its
frames in the WAL are ignored, after it they are replayed. No row changes: every table is keyed
by its own columns (an ``INTEGER PRIMARY KEY`` keeps its value; the implicit rowids VACUUM may
renumber are read by nothing), so the hash chain, the signed head and the body files beside the
ledger (store/bodies.py, named by packet id) are untouched.

Not ``VACUUM INTO`` a new file renamed over the ledger, although that needs half the space: any
other connection — a node started meanwhile, a ``ledger log --follow`` — keeps the old file open
by its inode and would go on writing into a file no longer named ``ledger.db``; the ``-wal`` and
``-shm`` files belong to the old file, and SQLite offers no lock that covers a rename. The plain
``VACUUM`` takes SQLite's own write lock, so every other process simply waits (or is told the
ledger is busy), and readers go on reading their snapshot.

Space: the compacted copy and the WAL each hold about the ledger's used pages, so compacting
needs twice that free (:func:`space_needed`). The temporary copy goes beside the ledger
(``PRAGMA temp_store_directory``) rather than in ``/tmp``, which is often memory (tmpfs) and
another file system: one file system to check, and the space that is freed is where it is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ark_lattice.errors import LedgerError, NotEnoughSpace
from ark_lattice.store.access import AccessStats, RetryPolicy, retry_busy

__all__ = [
    "Compaction",
    "Pages",
    "compact",
    "disk_free",
    "read_pages",
    "reclaimable_notice",
    "size_text",
    "space_needed",
    "worth_compacting",
    "RECLAIM_MIN_BYTES",
    "RECLAIM_MIN_SHARE",
]

# When free pages are worth a `ledger compact` (the notice after a migration, `worth_compacting`).
# A free list is also working room: SQLite reuses it for the next inserts, so a little is normal
# and gone again soon. Compacting rewrites every used page and needs twice their size free, so it
# is worth suggesting only when it gives back a large share (a quarter of the file) and an amount
# that matters on a small disk or a USB stick (64 MiB); a migrated 0003 ledger frees 70%.
RECLAIM_MIN_BYTES = 64 * 1024 * 1024
RECLAIM_MIN_SHARE = 0.25
# Beyond the copy and the WAL: WAL frame headers (24 bytes a page), the WAL index (-shm: 32 KiB per
# 4096 frames) and room for the file system, so a compaction that starts can finish.
_SPACE_SLACK = 32 * 1024 * 1024
_POLL = 0.2  # seconds between progress readings while SQLite works

log = logging.getLogger("ark_lattice.store")


@dataclass(frozen=True)
class Pages:
    """The ledger file's pages, from its header (no scan): ``count`` in all, ``free`` of them unused."""

    size: int  # bytes a page
    count: int
    free: int

    @property
    def file_bytes(self) -> int:
        return self.size * self.count

    @property
    def free_bytes(self) -> int:
        return self.size * self.free

    @property
    def used_bytes(self) -> int:
        return self.size * (self.count - self.free)

    @property
    def worth_compacting(self) -> bool:
        return worth_compacting(self.free_bytes, self.file_bytes)


@dataclass(frozen=True)
class Compaction:
    """What ``ledger compact`` did: the pages before and after, and the files' bytes on disk
    (the ledger with its WAL) before and after."""

    before: Pages
    after: Pages
    bytes_before: int
    bytes_after: int
    seconds: float
    # False when another process held a read snapshot and the WAL could not be emptied: the file
    # is compacted, the WAL shrinks at the next checkpoint that finds no reader.
    wal_truncated: bool

    @property
    def pages_freed(self) -> int:
        return self.before.count - self.after.count

    def to_json(self) -> dict[str, Any]:
        return {
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "page_size": self.before.size,
            "pages_before": self.before.count,
            "pages_after": self.after.count,
            "pages_freed": self.pages_freed,
            "free_pages_before": self.before.free,
            "free_pages_after": self.after.free,
            "wal_truncated": self.wal_truncated,
            "seconds": round(self.seconds, 3),
        }


def worth_compacting(free_bytes: int, file_bytes: int) -> bool:
    """Whether ``free_bytes`` unused in a file of ``file_bytes`` are worth a ``ledger compact``."""
    return free_bytes >= RECLAIM_MIN_BYTES and free_bytes >= RECLAIM_MIN_SHARE * file_bytes


def space_needed(pages: Pages) -> int:
    """Bytes free beside the ledger that compacting needs: the compacted copy in a temporary file,
    the same pages again in the WAL, and a margin."""
    return 2 * pages.used_bytes + pages.used_bytes // 64 + _SPACE_SLACK


def disk_free(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``path``."""
    return shutil.disk_usage(path).free


async def read_pages(conn: Any) -> Pages:
    """The page counts of ``conn``'s main database, as its last committed transaction left them."""
    async with conn.execute(
        "SELECT * FROM pragma_page_size(), pragma_page_count(), pragma_freelist_count()"
    ) as cur:
        row = await cur.fetchone()
    size, count, free = row
    return Pages(int(size), int(count), int(free))


def reclaimable_notice(pages: Pages, path: Path, after: str) -> str | None:
    """The one line telling the operator that ``ledger compact`` would give space back, or None
    when it would not be worth it."""
    if not pages.worth_compacting:
        return None
    share = pages.free * 100 // pages.count
    return (
        f"the ledger {path} holds {size_text(pages.free_bytes)} of free pages ({share}% of the file) "
        f"{after}; `ark-lattice ledger compact`, with the node stopped, gives them back to the disk"
    )


async def compact(
    conn: Any,
    path: Path,
    *,
    retry: RetryPolicy,
    access: AccessStats,
    free_space: Callable[[Path], int] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Compaction:
    """VACUUM the ledger at ``path`` through ``conn`` (its writer, outside any transaction), then
    empty the WAL; see the module docstring for why this way.

    Refuses with :class:`NotEnoughSpace` before writing anything when the free space of the
    ledger's directory (``free_space``, :func:`disk_free` by default) is under
    :func:`space_needed`. ``progress(done, total)`` is called while it works, in bytes written by
    this process (``total`` None where that cannot be read).
    """
    started = clock()
    before = await read_pages(conn)
    bytes_before = _on_disk(path)
    if before.free == 0:
        return Compaction(before, before, bytes_before, bytes_before, clock() - started, True)
    directory = path.absolute().parent
    needed, available = space_needed(before), (free_space or disk_free)(directory)
    if available < needed:
        raise NotEnoughSpace(
            f"compacting the ledger needs about {size_text(needed)} free in {directory} (a compacted copy "
            f"and its write-ahead log) and there is {size_text(available)}; nothing was changed"
        )
    async with conn.execute("PRAGMA temp_store_directory") as cur:
        row = await cur.fetchone()
    saved = row[0] if row else ""
    await conn.execute(f"PRAGMA temp_store_directory = {_quoted(str(directory))}")
    try:
        truncated = await _watched(_vacuum(conn, retry, access), conn, before, progress)
    finally:
        await conn.execute(f"PRAGMA temp_store_directory = {_quoted(saved)}")
    after = await read_pages(conn)
    return Compaction(before, after, bytes_before, _on_disk(path), clock() - started, truncated)


def size_text(n: int) -> str:
    """Bytes for people, in binary units: the compaction messages and ``federation status``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# -- private ------------------------------------------------------------------------------------


async def _vacuum(conn: Any, retry: RetryPolicy, access: AccessStats) -> bool:
    """VACUUM, then write the WAL into the file and empty it; whether it was emptied."""

    async def attempt() -> None:
        await conn.execute("VACUUM")

    try:
        # SQLite answers BUSY before it changes anything when another process holds the write
        # lock: worth the same bounded retries as any write (store/access.py).
        await retry_busy(attempt, retry, access)
    except sqlite3.OperationalError as exc:
        if "full" in str(exc).lower():
            raise NotEnoughSpace(
                "the disk filled up while compacting the ledger; nothing was changed"
            ) from None
        raise LedgerError(f"the ledger could not be compacted: {exc}; nothing was changed") from None
    # The checkpoint copies the compacted pages into the file and cuts it to its new length;
    # TRUNCATE then empties the WAL, which held a whole copy.
    async with conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
        busy, _, _ = await cur.fetchone()
    return not busy


async def _watched(
    work: Any, conn: Any, before: Pages, progress: Callable[[int, int | None], None] | None
) -> bool:
    """Await ``work`` (:func:`_vacuum`, in aiosqlite's thread), reporting progress meanwhile; on
    cancellation (Ctrl-C) interrupt SQLite, which rolls an unfinished VACUUM back, and wait for it."""
    task = asyncio.ensure_future(work)
    # The work writes the used pages three times: the temporary copy, the WAL, and the
    # checkpoint that writes the WAL into the file.
    start = _written()
    total = 3 * before.used_bytes if start is not None else None
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=_POLL)
            if progress is not None:
                now = _written()
                progress(0 if now is None or start is None else now - start, total)
    except asyncio.CancelledError:
        await conn.interrupt()
        with contextlib.suppress(BaseException):
            await task
        raise
    return bool(task.result())


def _written() -> int | None:
    """Bytes this process has written so far (Linux /proc/self/io ``wchar``), or None."""
    try:
        with open("/proc/self/io", "rb") as f:
            for line in f:
                if line.startswith(b"wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _on_disk(path: Path) -> int:
    total = 0
    for p in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
