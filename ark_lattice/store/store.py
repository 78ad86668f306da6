"""The store: one SQLite file (WAL) that is the single source of truth of a node (DESIGN §2, §8).

One writer connection per process, owned here. Writes happen in ``async with store.transaction()``,
which starts ``BEGIN IMMEDIATE`` so the chain head is read and extended under SQLite's write lock:
the CLI and a running node can write at the same time without ever forking the hash chain. Nested
transactions become savepoints; a rollback never hides the original error. Every state change is
recorded as a ledger event in the same transaction as the change itself.

Reads outside a transaction go to a separate reader connection that sees committed rows only, and
lock conflicts are retried with bounded backoff: the store access rule in store/access.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import cbor2

from ark_lattice.encoding import canonical, sha256
from ark_lattice.errors import AmbiguousId, ArkLatticeError, HomeUnusable, LedgerError, NotFound, UsageError
from ark_lattice.hlc import HybridClock
from ark_lattice.packet import Packet
from ark_lattice.store import compaction
from ark_lattice.store import head as heads
from ark_lattice.store.access import AccessStats, RetryPolicy, retry_busy
from ark_lattice.store.bodies import BODY_FILE_MIN, BodyFiles, bodies_dir
from ark_lattice.store.events import GENESIS_PREV, Event, EventKind, entry_hash, stored_data
from ark_lattice.store.schema import MIGRATIONS
from ark_lattice.tiers import TrustTier

__all__ = ["Store", "PeerRecord", "StoredPacket", "NewEvent", "LOCAL_SOURCE"]

LOCAL_SOURCE = "local"
BUSY_TIMEOUT_MS = 15_000
SPARE_READERS = 2  # private read connections kept open for the next iter_rows
# Keys per batch of packet_keys: a 1M-packet node's rows in tuples would take ~160 MB at once.
KEY_BATCH = 8192
# The largest timestamp SQLite's INTEGER holds; a hybrid clock that would pass it is damaged.
MAX_TIMESTAMP = (1 << 63) - 1

NewEvent = tuple[str, str, dict[str, Any]]  # kind, subject, data
# The condition of the events_subject index (migration 0005), repeated by each query by subject:
# SQLite uses a partial index only for a query whose WHERE holds the index's own term.
SUBJECT_INDEXED = f"kind <> '{EventKind.PACKET_STORED}'"


@dataclass(frozen=True)
class PeerRecord:
    id: str
    tier: TrustTier
    name: str
    endpoints: tuple[str, ...]
    manifest: bytes | None
    manifest_seq: int | None
    first_seen: int
    last_seen: int | None
    strikes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tier": self.tier.value,
            "name": self.name,
            "endpoints": list(self.endpoints),
            "manifest_seq": self.manifest_seq,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "strikes": self.strikes,
        }


@dataclass(frozen=True)
class StoredPacket:
    packet: Packet
    source: str
    received_at: int
    quarantined: bool

    def to_json(self, *, body: bool = False) -> dict[str, Any]:
        h = self.packet.header
        doc: dict[str, Any] = {
            "id": self.packet.hex_id,
            "topic": h.topic,
            "kind": h.kind,
            "author": str(h.author),
            "created_at": h.created_at,
            "size": h.body_size,
            "depends": [d.hex() for d in h.depends],
            "supersedes": h.supersedes.hex() if h.supersedes else None,
            "meta": h.meta,
            "source": self.source,
            "received_at": self.received_at,
            "quarantined": self.quarantined,
        }
        if body:
            doc["body"] = self.packet.body.decode("utf-8", errors="replace")
        return doc


# Bound parameters per statement: SQLite's compile-time limit, 32,766 since 3.32 (999 before; it
# can only be lowered at run time). A multi-row INSERT holds at most this many values.
_MAX_VARIABLES = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_ROWS_PER_INSERT = 1024  # rows per multi-row INSERT (_insert_rows): a writer's batch in two or so
_PACKET_COLUMNS = "id, header, signature, body, source, received_at, quarantined"
_PEER_COLUMNS = (
    "id, tier, name, endpoints, manifest, manifest_seq, first_seen, last_seen, strikes"
)


class Store:
    """Async access to a node's ledger database. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, clock: Callable[[], float]) -> None:
        # The store access rule (store/access.py): the writer only inside transaction(), the
        # reader (committed rows only) everywhere else; `_conn` picks between them.
        self._writer = conn
        self._reader = conn  # until open() gives the reader its own connection
        self._connect: Callable[..., Awaitable[Any]] = aiosqlite.connect
        self._snapshots: set[Any] = set()  # private connections of unfinished iter_rows
        self._spare: list[Any] = []  # private connections of finished ones, for the next
        self.retry = RetryPolicy()
        self.access = AccessStats()
        self.path = path
        self._clock = clock
        self._depth: contextvars.ContextVar[int] = contextvars.ContextVar("depth", default=0)
        # One connection is shared by all tasks of the process: the lock keeps one task's
        # statements out of another's transaction.
        self._lock = asyncio.Lock()
        self._readonly = False  # open_readonly(): one connection, never written
        # open_readonly(): the URI it opened, for a second read-only connection (ledger verify).
        self.read_uri: str | None = None
        # Signed heads (store/head.py): who signs, and what the open transaction found and did.
        self._signer: heads.HeadSigner | None = None
        self._signer_source: Callable[[], heads.HeadSigner | None] | None = None
        self._found: tuple[heads.Head | None, int, bytes] | None = None
        self._dirty = False
        # What the head will sign, known without a query unless a savepoint was rolled back.
        self._tip: tuple[int, bytes] | None = None
        self._manifest_seq: int | None = None
        # Large bodies as files beside the ledger (store/bodies.py); None in memory (simulator).
        root = bodies_dir(path)
        self.bodies: BodyFiles | None = BodyFiles(root) if root is not None else None
        self._written: list[Path] = []  # body files of the open transaction, removed on rollback

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        connect: Callable[..., Awaitable[Any]] | None = None,
        retry: RetryPolicy | None = None,
        read_only: bool = False,
    ) -> Store:
        """Open (and migrate) the ledger at ``path``.

        ``connect`` replaces ``aiosqlite.connect``: the simulator passes ``store.inline.connect``
        and ``Path(":memory:")``, so each simulated node has a real ledger run on the loop's thread.
        ``read_only`` opens it for reading on a home that cannot be written (see :func:`_open_read_only`).
        """
        if read_only:
            return await _open_read_only(cls, path, clock)
        connect = connect or aiosqlite.connect
        try:
            conn = await connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {path}: {exc}") from None
        store = cls(conn, path, clock)
        store._connect = connect
        store.retry = retry or store.retry
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a transaction acknowledged to a caller survives power loss, not only kill -9.
            await conn.execute("PRAGMA synchronous = FULL")
            await store._migrate()
            # From here on a lock conflict is retried on the loop (store/access.py), in short steps.
            await conn.execute(f"PRAGMA busy_timeout = {store.retry.attempt_ms}")
            store._reader = await store._open_reader()
            await store._collect_orphans()
        except BaseException as exc:
            await store._close_reader()
            await conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise LedgerError(f"the ledger {path} is unreadable: {exc}") from None
            raise
        return store

    @classmethod
    async def open_readonly(cls, path: Path, *, clock: Callable[[], float] = time.time) -> Store:
        """Open an existing ledger read-only (``ledger verify``, a read-only home): never created,
        never migrated, never written.

        SQLite needs its -wal and -shm files beside a WAL database; where they are not there (the
        ledger was closed cleanly) and cannot be created (a write-protected stick, a read-only
        mount), ``immutable=1`` says nobody can write it, which is then true.
        """
        if not path.exists():
            raise LedgerError(f"there is no ledger at {path}; only `ark-lattice init` creates one")
        wal = path.with_name(path.name + "-wal").exists() and path.with_name(path.name + "-shm").exists()
        immutable = not wal and not os.access(path.parent, os.W_OK)
        uri = f"{path.absolute().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
        try:
            conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {path}: {exc}") from None
        store = cls(conn, path, clock)
        store._readonly = True
        store.read_uri = uri
        return store

    def set_signer(self, signer: heads.HeadSigner | None) -> None:
        """The key that signs the head every write transaction ends with (store/head.py)."""
        self._signer = signer

    def set_signer_source(self, source: Callable[[], heads.HeadSigner | None]) -> None:
        """Where to get the signer at the first write (a CLI unlocks a sealed key only to write)."""
        self._signer_source = source

    @property
    def signer(self) -> heads.HeadSigner | None:
        return self._signer

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        """One read transaction: every read inside sees the same committed state."""
        async with self._lock:
            await self._conn.execute("BEGIN")
            try:
                yield
            finally:
                await self._conn.execute("ROLLBACK")

    async def close(self) -> None:
        for snapshot in [*self._snapshots, *self._spare]:  # also iterations abandoned before their end
            await _close_quietly(snapshot)
        self._snapshots.clear()
        self._spare.clear()
        await self._close_reader()
        await self._writer.close()

    @property
    def _conn(self) -> Any:
        """The writer inside this task's transaction (it must see its own rows), else the reader."""
        return self._writer if self._depth.get() else self._reader

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A write transaction; nested calls in the same task become savepoints."""
        depth = self._depth.get()
        if depth:
            name = f"sp{depth}"
            await self._conn.execute(f"SAVEPOINT {name}")
            token = self._depth.set(depth + 1)
            written = len(self._written)
            try:
                yield
            except BaseException:
                await self._conn.execute(f"ROLLBACK TO {name}")
                await self._conn.execute(f"RELEASE {name}")
                self._discard_bodies(written)  # their rows are gone with the savepoint
                self._tip = self._manifest_seq = None  # the head reads them back at commit
                raise
            else:
                await self._conn.execute(f"RELEASE {name}")
            finally:
                self._depth.reset(token)
            return
        if self._signer is None and self._signer_source is not None:
            # Before the write lock: unlocking a sealed key may prompt for its passphrase.
            self._signer, self._signer_source = self._signer_source(), None
        async with self._lock:
            await self._execute_write("BEGIN IMMEDIATE")
            token = self._depth.set(1)
            self._written = []
            try:
                await self._begin_head()
                yield
                await self._seal_head()
            except BaseException as exc:
                # Before the write lock goes: another writer may then write a file of the same name.
                self._discard_bodies(0)
                try:
                    await self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # keep the original error; SQLite may have rolled back already
                if isinstance(exc, sqlite3.Error):  # one sentence for the operator, not a traceback
                    raise self._write_refused(exc) from None
                raise
            else:
                try:
                    await self._execute_write("COMMIT")
                finally:
                    # A COMMIT that failed may still have gone through in aiosqlite's thread (a
                    # cancelled await): the files stay; what no row names is removed at next open.
                    self._written = []
            finally:
                self._depth.reset(token)

    # -- events -----------------------------------------------------------------------------

    async def append_events(self, new: Sequence[NewEvent]) -> list[Event]:
        """Extend the hash chain; call inside :meth:`transaction` to join a larger change."""
        return await self._append_encoded([(kind, subject, canonical(data)) for kind, subject, data in new])

    async def _append_encoded(
        self, new: Sequence[tuple[str, str, bytes]], *, events: bool = True
    ) -> list[Event]:
        """:meth:`append_events` of events whose data is already canonical CBOR; returns no
        events unless ``events``."""
        async with self.transaction():
            async with self._conn.execute(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
            ) as cur:
                row = await cur.fetchone()
            seq, prev = (row[0], row[1]) if row else (0, GENESIS_PREV)
            ts = self.now_ms()
            await self._note_found()
            # The rows are the events' fields in order: one tuple per event serves the insert
            # and the Event (put_packets writes one per packet and needs no Event back).
            rows = []
            for kind, subject, payload in new:
                seq += 1
                h = entry_hash(seq, ts, kind, subject, payload, prev)
                rows.append((seq, ts, kind, subject, payload, prev, h))
                prev = h
            await self._insert_rows("INSERT INTO events (seq, ts, kind, subject, data, prev, hash)", rows)
            if rows:
                self._tip = (seq, prev)
            return [Event(*row) for row in rows] if events else []

    async def _insert_rows(self, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """``insert`` (``INSERT INTO t (columns)``) of ``rows``, many rows to a statement.

        Not ``executemany``: Python's sqlite3 lets go of the GIL around every step of a statement,
        so the writer's thread, inserting a row per step, queued for the GIL once per row behind
        the event loop and the verifier threads, up to a switch interval each time. A sync's
        writer was busy 96-98% of the time, mostly waiting so: the same rows took about 35 us each
        in the node against 8.6 us alone (issue 16). One statement of many rows waits once.

        Statements hold a power of two of rows: sqlite3 keeps each statement it prepared, and with
        it the values last bound to it (a thousand bodies), so a statement for every batch length
        grew the receiver's peak RSS by a tenth over a long sync; a dozen lengths hold little.
        """
        if not rows:
            return
        width = len(rows[0])
        most = max(1, min(_ROWS_PER_INSERT, _MAX_VARIABLES // width))
        one = "(" + ",".join("?" * width) + ")"
        start = 0
        while start < len(rows):
            count = 1 << (min(most, len(rows) - start).bit_length() - 1)
            chunk = rows[start : start + count]
            start += count
            values = [value for row in chunk for value in row]
            await self._conn.execute(f"{insert} VALUES {','.join([one] * count)}", values)

    async def append_event(self, kind: str, subject: str, data: dict[str, Any]) -> Event:
        return (await self.append_events([(kind, subject, data)]))[0]

    async def event_count(self) -> int:
        return await self._scalar("SELECT COALESCE(MAX(seq), 0) FROM events")

    async def events(
        self,
        *,
        limit: int | None = None,
        kind: str | None = None,
        subject: str | None = None,
        since_ms: int | None = None,
    ) -> list[Event]:
        """The newest events first."""
        where, args = _where(("kind", kind), ("subject", subject))
        if subject is not None and kind is not None and kind != EventKind.PACKET_STORED:
            where += f" AND {SUBJECT_INDEXED}"  # the same rows, found through events_subject
        if since_ms is not None:
            where += (" AND" if where else " WHERE") + " ts >= ?"
            args.append(since_ms)
        sql = f"SELECT seq, ts, kind, subject, data, prev, hash FROM events{where} ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        async with self._conn.execute(sql, args) as cur:
            return [Event(*r) for r in await cur.fetchall()]

    async def iter_events(self, batch: int = 5000) -> AsyncIterator[Event]:
        """Every event in chain order, read in batches so a large ledger streams."""
        after = 0
        while True:
            async with self._conn.execute(
                "SELECT seq, ts, kind, subject, data, prev, hash FROM events "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, batch),
            ) as cur:
                rows = list(await cur.fetchall())  # aiosqlite types it Iterable
            if not rows:
                return
            for r in rows:
                yield Event(*r)
            after = rows[-1][0]

    # -- packets ----------------------------------------------------------------------------

    async def next_timestamp(self, now_ms: int) -> int:
        """The next hybrid-logical timestamp, shared by every process on this ledger."""
        async with self.transaction():
            last = await self._scalar("SELECT value FROM meta WHERE key = 'hlc'")
            # A tick adds at most 2**16 (hlc.py); a value that leaves no room came from outside.
            if not isinstance(last, int | None) or not 0 <= (last or 0) < MAX_TIMESTAMP - (1 << 16):
                raise LedgerError(
                    f"the ledger's clock (meta.hlc = {last!r}) is damaged: no timestamp can follow "
                    "it; run `ark-lattice ledger verify`"
                )
            stamp = HybridClock(int(last or 0)).tick(now_ms)
            await self._set_meta("hlc", stamp)
            return stamp

    async def put_packets(
        self, packets: Iterable[Packet], *, source: str = LOCAL_SOURCE, quarantined: bool = False
    ) -> list[Packet]:
        """Store verified packets not held yet, each with its ledger event; returns the new ones."""
        packets = list(packets)
        if not packets:
            return []
        async with self.transaction():
            held = await self.held_ids([p.id for p in packets])
            fresh: dict[bytes, Packet] = {}
            for p in packets:
                if p.id not in held:
                    fresh.setdefault(p.id, p)
            if not fresh:
                return []
            # The hybrid clock moves past every timestamp this node has seen (hlc.py).
            await self._set_meta("hlc", max(p.header.created_at for p in fresh.values()), grow_only=True)
            now = self.now_ms()
            # Large bodies go to files, durable before the rows that name them (store/bodies.py).
            files = [
                (p.id, p.body) for p in fresh.values()
                if self.bodies is not None and len(p.body) >= BODY_FILE_MIN
            ]
            if files:
                await self._write_bodies(files)
            in_files = {pid for pid, _ in files}
            await self._insert_rows(
                "INSERT INTO packets (id, created_at, topic, kind, author, header, signature, body,"
                " source, received_at, quarantined)",
                [
                    (
                        p.id,
                        p.header.created_at,
                        p.header.topic,
                        p.header.kind,
                        str(p.header.author),
                        p.header_bytes,
                        p.signature,
                        None if p.id in in_files else p.body,
                        source,
                        now,
                        int(quarantined),
                    )
                    for p in fresh.values()
                ],
            )
            await self._conn.execute(  # the counts `status` reads (migration 0004)
                "UPDATE packet_counts SET total = total + ?, quarantined = quarantined + ? WHERE one = 0",
                (len(fresh), len(fresh) if quarantined else 0),
            )
            stored = EventKind.PACKET_STORED
            await self._append_encoded(
                [(stored, p.hex_id, stored_data(p.id, source, quarantined)) for p in fresh.values()],
                events=False,
            )
        return list(fresh.values())

    async def held_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        held: set[bytes] = set()
        for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            async with self._conn.execute(
                f"SELECT id FROM packets WHERE id IN ({marks})", chunk
            ) as cur:
                held.update(r[0] for r in await cur.fetchall())
        return held

    async def get_packet(self, packet_id: bytes) -> StoredPacket:
        async with self._conn.execute(
            f"SELECT {_PACKET_COLUMNS} FROM packets WHERE id = ?", (packet_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no packet {packet_id.hex()}")
        return (await self._stored_packets([row]))[0]

    async def get_packets(self, ids: Sequence[bytes]) -> list[StoredPacket]:
        rows = await self._rows_in(f"SELECT {_PACKET_COLUMNS} FROM packets WHERE id IN", ids)
        return await self._stored_packets(rows)

    async def _rows_in(self, sql: str, ids: Sequence[bytes]) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` (which ends in ``id IN``) for ``ids``, 500 ids per statement to
        stay under SQLite's bound-parameter limit."""
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            async with self._conn.execute(f"{sql} ({','.join('?' * len(chunk))})", chunk) as cur:
                out.extend(tuple(r) for r in await cur.fetchall())
        return out

    async def resolve_packet(self, prefix: str) -> bytes:
        """The packet id that ``prefix`` (hex) names, or a clear error."""
        text = prefix.strip().lower()
        if not text or any(c not in "0123456789abcdef" for c in text) or len(text) > 64:
            raise UsageError(f"{prefix!r} is not a packet id (hex)")
        lo = bytes.fromhex(text.ljust(64, "0"))
        hi = bytes.fromhex(text.ljust(64, "f"))
        async with self._conn.execute(
            "SELECT id FROM packets WHERE id BETWEEN ? AND ? LIMIT 2", (lo, hi)
        ) as cur:
            rows = list(await cur.fetchall())  # aiosqlite types it Iterable
        if not rows:
            raise NotFound(f"no packet matches {prefix!r}")
        if len(rows) > 1:
            raise AmbiguousId(f"{prefix!r} matches several packets; give more characters")
        return rows[0][0]

    async def list_packets(
        self, *, topic: str | None = None, limit: int | None = None
    ) -> list[StoredPacket]:
        where, args = _where(("topic", topic))
        sql = f"SELECT {_PACKET_COLUMNS} FROM packets{where} ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        async with self._conn.execute(sql, args) as cur:
            rows = list(await cur.fetchall())  # aiosqlite types it Iterable
        return await self._stored_packets(rows)

    async def iter_packets(
        self, *, topic: str | None = None, limit: int | None = None, page: int = 1000
    ) -> AsyncIterator[StoredPacket]:
        """Stored packets newest first, as :meth:`list_packets` orders them, streamed in keyset
        pages: each page is one short read (no snapshot held while the caller is slow, say behind
        a pager), so memory and the reader's hold on the WAL stay bounded however large the ledger.

        For listings: bodies are not read (a packet's ``body`` is ``b""``; its header carries
        ``body_size``), nor are signatures checked (``ledger verify`` does that).
        """
        where, args = _where(("topic", topic))
        after: tuple[int, bytes] | None = None
        left = limit
        wanted = min(page, 100)  # a short first page: the first row shows before a full page is read
        while left is None or left > 0:
            size = wanted if left is None else min(wanted, left)
            clause, values = where, list(args)
            if after is not None:
                clause += (" AND" if clause else " WHERE") + " (created_at, id) < (?, ?)"
                values.extend(after)
            async with self._conn.execute(
                "SELECT id, created_at, header, signature, source, received_at, quarantined FROM packets"
                f"{clause} ORDER BY created_at DESC, id DESC LIMIT ?",
                [*values, size],
            ) as cur:
                rows = list(await cur.fetchall())  # aiosqlite types it Iterable
            for pid, _, header, signature, source, received_at, quarantined in rows:
                yield StoredPacket(
                    Packet.from_store(pid, header, signature, b""), source, received_at, bool(quarantined)
                )
            if len(rows) < size:
                return
            after, wanted = (rows[-1][1], rows[-1][0]), page
            if left is not None:
                left -= len(rows)

    async def packet_count(self, *, quarantined: bool | None = None) -> int:
        """How many packets the ledger holds (in quarantine, or not): one row read, no scan."""
        try:
            total, held = await self._row("SELECT total, quarantined FROM packet_counts WHERE one = 0")
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            # A ledger from before migration 0004 opened read-only (never migrated): count.
            if quarantined is None:
                return await self._scalar("SELECT COUNT(*) FROM packets")
            return await self._scalar(
                "SELECT COUNT(*) FROM packets WHERE quarantined = ?", (int(quarantined),)
            )
        if quarantined is None:
            return int(total)
        return int(held) if quarantined else int(total) - int(held)

    def row_body(self, packet_id: bytes, body: bytes | None) -> bytes:
        """The body of a packet row read raw (``SELECT … body FROM packets``): the column, or
        its file when the column is NULL (store/bodies.py). Blocks on the file: for raw readers
        of a few rows; listings of many go through :meth:`get_packets`."""
        if body is not None:
            return bytes(body)
        if self.bodies is None:
            raise LedgerError(f"packet {packet_id.hex()} has no body in the in-memory ledger")
        return self.bodies.read(packet_id)

    async def promote(self, packet_id: bytes) -> None:
        """Move a quarantined (sandbox) packet into the shared set."""
        async with self.transaction():
            stored = await self.get_packet(packet_id)
            if not stored.quarantined:
                raise UsageError(f"packet {packet_id.hex()[:16]} is not in quarantine")
            await self._conn.execute("UPDATE packets SET quarantined = 0 WHERE id = ?", (packet_id,))
            await self.append_event(EventKind.PACKET_PROMOTED, packet_id.hex(), {"id": packet_id})

    # -- peers ------------------------------------------------------------------------------

    async def add_peer(
        self,
        node_id: str,
        *,
        tier: TrustTier = TrustTier.UNKNOWN,
        endpoints: Sequence[str] = (),
        name: str = "",
    ) -> bool:
        """Record a peer on first contact; returns False if it was known (endpoints merged)."""
        async with self.transaction():
            existing = await self._peer_row(node_id)
            if existing is not None:
                merged = list(dict.fromkeys([*existing.endpoints, *endpoints]))
                await self._conn.execute(
                    "UPDATE peers SET endpoints = ?, name = CASE WHEN ? = '' THEN name ELSE ? END "
                    "WHERE id = ?",
                    (json.dumps(merged), name, name, node_id),
                )
                return False
            await self._conn.execute(
                "INSERT INTO peers (id, tier, name, endpoints, first_seen) VALUES (?,?,?,?,?)",
                (node_id, tier.value, name, json.dumps(list(endpoints)), self.now_ms()),
            )
            await self.append_event(EventKind.PEER_ADDED, node_id, {"tier": tier.value})
            return True

    async def set_tier(self, node_id: str, tier: TrustTier, *, reason: str) -> TrustTier:
        """Change a peer's tier with its reason in the ledger; returns the old tier."""
        async with self.transaction():
            peer = await self.get_peer(node_id)
            if peer.tier != tier:
                await self._conn.execute(
                    "UPDATE peers SET tier = ?, strikes = CASE WHEN ? = 'blocked' THEN strikes "
                    "ELSE 0 END WHERE id = ?",
                    (tier.value, tier.value, node_id),
                )
                await self.append_event(
                    EventKind.PEER_TIER_CHANGED,
                    node_id,
                    {"old": peer.tier.value, "new": tier.value, "reason": reason},
                )
            return peer.tier

    async def remove_peer(self, node_id: str) -> None:
        async with self.transaction():
            await self.get_peer(node_id)
            await self._conn.execute("DELETE FROM peers WHERE id = ?", (node_id,))
            await self.append_event(EventKind.PEER_REMOVED, node_id, {})

    async def get_peer(self, node_id: str) -> PeerRecord:
        peer = await self._peer_row(node_id)
        if peer is None:
            raise NotFound(f"no peer {node_id}")
        return peer

    async def find_peer(self, node_id: str) -> PeerRecord | None:
        return await self._peer_row(node_id)

    async def resolve_peer(self, prefix: str) -> str:
        """The full node id that ``prefix`` names (dashes and case ignored), or a clear error."""
        text = prefix.strip().replace("-", "").lower()
        if not text:
            raise UsageError("give a peer id or a prefix of one")
        async with self._conn.execute(
            "SELECT id FROM peers WHERE substr(id, 1, ?) = ? LIMIT 2", (len(text), text)
        ) as cur:
            rows = list(await cur.fetchall())  # aiosqlite types it Iterable
        if not rows:
            raise NotFound(f"no peer matches {prefix!r}")
        if len(rows) > 1:
            raise AmbiguousId(f"{prefix!r} matches several peers; give more characters")
        return rows[0][0]

    async def list_peers(self) -> list[PeerRecord]:
        async with self._conn.execute(
            f"SELECT {_PEER_COLUMNS} FROM peers ORDER BY tier, id"
        ) as cur:
            return [_peer_record(r) for r in await cur.fetchall()]

    async def pending_peers(self) -> list[PeerRecord]:
        """First contact: peers that passed a handshake and showed their manifest, still at the
        tier `unknown` that nobody chose (no tier change in the ledger): the operator's to answer."""
        async with self._conn.execute(
            f"SELECT {_PEER_COLUMNS} FROM peers p WHERE tier = 'unknown' AND last_seen IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM events e "
            f"WHERE e.subject = p.id AND e.kind = ? AND e.{SUBJECT_INDEXED}) "
            "ORDER BY first_seen, id",
            (EventKind.PEER_TIER_CHANGED,),
        ) as cur:
            return [_peer_record(r) for r in await cur.fetchall()]

    async def peer_count(self) -> int:
        return await self._scalar("SELECT COUNT(*) FROM peers")

    async def record_manifest(
        self, node_id: str, manifest: bytes, seq: int, name: str, endpoints: Sequence[str]
    ) -> None:
        """Keep the newest manifest a peer showed us (its seq guards against rollback)."""
        async with self.transaction():
            peer = await self.get_peer(node_id)
            merged = list(dict.fromkeys([*peer.endpoints, *endpoints]))
            await self._conn.execute(
                "UPDATE peers SET manifest = ?, manifest_seq = ?, name = ?, endpoints = ?, last_seen = ?"
                " WHERE id = ?",
                (manifest, seq, name, json.dumps(merged), self.now_ms(), node_id),
            )
            if (peer.manifest, peer.manifest_seq) != (manifest, seq):
                # The held seq is the rollback guard: `ledger verify` replays it from this event.
                await self.append_event(
                    EventKind.PEER_MANIFEST, node_id, {"seq": seq, "digest": sha256(manifest)}
                )

    async def add_strike(self, node_id: str, code: str, reason: str) -> int:
        """Count a strike against a peer, with its evidence in the ledger; returns the total."""
        async with self.transaction():
            peer = await self.get_peer(node_id)
            await self._conn.execute(
                "UPDATE peers SET strikes = strikes + 1 WHERE id = ?", (node_id,)
            )
            await self.append_event(
                EventKind.PEER_STRIKE, node_id, {"code": code, "reason": reason, "strikes": peer.strikes + 1}
            )
            return peer.strikes + 1

    async def audit_protocol_error(self, subject: str, code: str, reason: str, fatal: bool) -> None:
        await self.append_event(
            EventKind.PROTOCOL_ERROR, subject, {"code": code, "reason": reason, "fatal": fatal}
        )

    # -- endpoints --------------------------------------------------------------------------

    async def add_endpoint(self, url: str, *, source: str, peer_id: str | None = None) -> bool:
        async with self.transaction():
            cur = await self._conn.execute(
                "INSERT INTO endpoints (url, peer_id, source, added_at) VALUES (?,?,?,?) "
                "ON CONFLICT (url) DO UPDATE SET peer_id = COALESCE(excluded.peer_id, peer_id)",
                (url, peer_id, source, self.now_ms()),
            )
            return cur.rowcount > 0

    async def bind_endpoint(self, url: str, peer_id: str) -> None:
        """The peer reached at ``url`` turned out to be ``peer_id``."""
        async with self.transaction():
            await self._conn.execute("UPDATE endpoints SET peer_id = ? WHERE url = ?", (peer_id, url))

    async def endpoints(self) -> list[tuple[str, str | None]]:
        async with self._conn.execute("SELECT url, peer_id FROM endpoints ORDER BY added_at") as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def endpoint_rows(self) -> list[tuple[str, str | None, str, int]]:
        """(url, peer id, source, added at in Unix ms) of every remembered address."""
        async with self._conn.execute(
            "SELECT url, peer_id, source, added_at FROM endpoints ORDER BY added_at, url"
        ) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def remove_endpoint(self, url: str) -> list[str]:
        """Forget ``url`` everywhere it is dialled from (the endpoints table and peers' lists);
        returns the peers whose list held it. Raises NotFound if nothing held it."""
        async with self.transaction():
            cur = await self._conn.execute("DELETE FROM endpoints WHERE url = ?", (url,))
            found = cur.rowcount > 0
            peers: list[str] = []
            for peer in await self.list_peers():
                if url in peer.endpoints:
                    rest = [e for e in peer.endpoints if e != url]
                    await self._conn.execute(
                        "UPDATE peers SET endpoints = ? WHERE id = ?", (json.dumps(rest), peer.id)
                    )
                    peers.append(peer.id)
            if not found and not peers:
                raise NotFound(f"this node does not dial {url}")
            await self.append_event(EventKind.ENDPOINT_REMOVED, url, {"peers": peers})
            return peers

    # -- reconciliation sets ----------------------------------------------------------------

    def packet_keys(self, *, source: str | None = None) -> AsyncGenerator[list[tuple[int, bytes]], None]:
        """(created_at, id) of every packet we may re-share (none in quarantine), or of the
        packets ``source`` itself sent us, in that order and in batches of KEY_BATCH: what a
        reconciliation round is over. Read from a snapshot of its own (:meth:`iter_batches`)."""
        which, args = ("quarantined = 0", ()) if source is None else ("source = ?", (source,))
        sql = f"SELECT created_at, id FROM packets WHERE {which} ORDER BY created_at, id"
        return self.iter_batches(sql, KEY_BATCH, args)

    async def stored_since(self, seq: int, limit: int = 1000) -> tuple[list[StoredPacket], int]:
        """Packets stored after ledger entry ``seq`` (for live push), and the last seq seen."""
        async with self._conn.execute(
            "SELECT seq, subject FROM events WHERE seq > ? AND kind = ? ORDER BY seq LIMIT ?",
            (seq, EventKind.PACKET_STORED, limit),
        ) as cur:
            rows = list(await cur.fetchall())  # aiosqlite types it Iterable
        if not rows:
            return [], seq
        ids = [bytes.fromhex(r[1]) for r in rows]
        return await self.get_packets(ids), rows[-1][0]

    async def _stored_packets(self, rows: Sequence[Sequence[Any]]) -> list[StoredPacket]:
        """Packets from their rows, the bodies held in files read in a worker thread."""
        in_files = [bytes(r[0]) for r in rows if r[3] is None]
        bodies: dict[bytes, bytes] = {}
        if in_files:
            if self.bodies is None:
                raise LedgerError(f"packet {in_files[0].hex()} has no body in the in-memory ledger")
            bodies = await asyncio.to_thread(self.bodies.read_many, in_files)
        return [_stored_packet(r, bodies.get(bytes(r[0]))) for r in rows]

    async def _write_bodies(self, files: Sequence[tuple[bytes, bytes]]) -> None:
        """Write body files inside the open transaction; its rollback removes them."""
        assert self.bodies is not None and self._depth.get()
        writing = asyncio.ensure_future(asyncio.to_thread(self.bodies.write, files, self._written))
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            # The thread goes on: wait for it, so that the rollback removes every file it wrote.
            with contextlib.suppress(Exception):
                await writing
            raise

    def _discard_bodies(self, keep: int) -> None:
        """Remove the body files written since ``keep`` (a rollback took their rows)."""
        if self.bodies is not None and len(self._written) > keep:
            self.bodies.remove(self._written[keep:])
        del self._written[keep:]

    async def _collect_orphans(self) -> int:
        """Remove body files no committed row names (a writer killed between its file and its
        commit, or mid-write); returns how many. Checked without the lock first, so opening a
        ledger with no orphan never waits for the write lock."""
        if self.bodies is None or not self.bodies.root.is_dir():
            return 0
        candidates = await asyncio.to_thread(self.bodies.candidates)
        unnamed = await self._unnamed(candidates)
        if not unnamed:
            return 0
        async with self._lock:
            await self._execute_write("BEGIN IMMEDIATE")
            token = self._depth.set(1)  # reads on the writer, under the write lock
            try:
                # No other writer is between a file and its commit now: what no row names is
                # an orphan (a file committed since the first look is named now, and kept).
                orphans = await self._unnamed(unnamed)
                # Before the lock goes: a writer after us may write a file of the same name.
                await asyncio.to_thread(self.bodies.remove, [path for _, path in orphans])
            finally:
                self._depth.reset(token)
                await self._writer.execute("ROLLBACK")
        if orphans:
            logging.getLogger("ark_lattice.store").info(
                "removed %d body file(s) no packet names (an interrupted write)", len(orphans)
            )
        return len(orphans)

    async def _unnamed(
        self, candidates: Sequence[tuple[bytes | None, Path]]
    ) -> list[tuple[bytes | None, Path]]:
        """The candidates no row names as its body file (temporary files are never named)."""
        ids = [pid for pid, _ in candidates if pid is not None]
        rows = await self._rows_in("SELECT id FROM packets WHERE body IS NULL AND id IN", ids)
        named = {bytes(r[0]) for r in rows}
        return [(pid, path) for pid, path in candidates if pid is None or pid not in named]

    async def next_counter(self, key: str) -> int:
        """A counter that only grows, shared by every process on this ledger."""
        async with self.transaction():
            value = int(await self._scalar("SELECT value FROM meta WHERE key = ?", (key,)) or 0) + 1
            await self._set_meta(key, value)
            return value

    # -- checkpoints ------------------------------------------------------------------------

    async def add_checkpoint(self, size: int, root: bytes, note: str) -> None:
        async with self.transaction():
            await self._conn.execute(
                "INSERT INTO checkpoints (size, root, note, created_at) VALUES (?,?,?,?)",
                (size, root, note, self.now_ms()),
            )
            await self.append_event(EventKind.CHECKPOINT, str(size), {"size": size, "root": root})

    async def checkpoints(self) -> list[tuple[int, bytes, str]]:
        async with self._conn.execute(
            "SELECT size, root, note FROM checkpoints ORDER BY size"
        ) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    # -- witnesses (witness.py) -------------------------------------------------------------

    async def latest_witnessed(self, origin: str) -> tuple[int, bytes, str] | None:
        """The largest checkpoint of ``origin`` we cosigned: (size, root, note)."""
        async with self._conn.execute(
            "SELECT size, root, note FROM witnessed WHERE origin = ? ORDER BY size DESC LIMIT 1", (origin,)
        ) as cur:
            row = await cur.fetchone()
        return (int(row[0]), bytes(row[1]), str(row[2])) if row else None

    async def witnessed_at(self, origin: str, size: int) -> tuple[bytes, str] | None:
        async with self._conn.execute(
            "SELECT root, note FROM witnessed WHERE origin = ? AND size = ?", (origin, size)
        ) as cur:
            row = await cur.fetchone()
        return (bytes(row[0]), str(row[1])) if row else None

    async def record_witnessed(self, origin: str, size: int, root: bytes, note: str) -> None:
        await self._conn.execute(
            "INSERT OR REPLACE INTO witnessed (origin, size, root, note, at) VALUES (?,?,?,?,?)",
            (origin, size, root, note, self.now_ms()),
        )

    async def add_cosignature(self, witness: str, size: int, root: bytes, timestamp: int, note: str) -> bool:
        """Keep a witness's cosignature on our checkpoint of ``size``; the first one stays (a
        later one for another root is what ``ledger verify`` must not lose)."""
        async with self.transaction():
            async with self._conn.execute(
                "INSERT OR IGNORE INTO cosignatures (witness, size, root, timestamp, note, received_at) "
                "VALUES (?,?,?,?,?,?)",
                (witness, size, root, timestamp, note, self.now_ms()),
            ) as cur:
                return bool(cur.rowcount)

    async def cosignatures(self) -> list[dict[str, Any]]:
        async with self._conn.execute(
            "SELECT witness, size, root, timestamp, note, received_at FROM cosignatures "
            "ORDER BY size, witness"
        ) as cur:
            rows = await cur.fetchall()
        keys = ("witness", "size", "root", "timestamp", "note", "received_at")
        return [dict(zip(keys, (r[0], int(r[1]), bytes(r[2]), int(r[3]), str(r[4]), int(r[5])), strict=True))
                for r in rows]

    # -- raw reads for verification ---------------------------------------------------------

    async def iter_rows(
        self, sql: str, batch: int = 2000, args: Sequence[Any] = ()
    ) -> AsyncIterator[tuple]:
        """Every row of ``sql`` (with parameters ``args``), streamed from one consistent snapshot.

        Outside a transaction the rows come from a private read connection, opened for this
        iteration and closed at its end (or by :meth:`close`), so a slow consumer pins no shared
        connection. Inside a transaction, and on the simulator's single inline connection, the
        rows are read whole before the first is yielded: no cursor stays open across a yield. A
        read-only store (``ledger verify``) streams from its one connection: nothing else uses it.
        A caller that may stop early wraps the iteration in ``contextlib.aclosing``.
        """
        async with contextlib.aclosing(self.iter_batches(sql, batch, args)) as batches:
            async for rows in batches:
                for r in rows:
                    yield tuple(r)

    async def iter_batches(
        self, sql: str, batch: int = 128, args: Sequence[Any] = ()
    ) -> AsyncGenerator[list[tuple], None]:
        """The rows of :meth:`iter_rows` in lists of up to ``batch``, each fetched from SQLite as
        it is asked for: ``ledger verify`` hands each list to a worker whole (a row at a time
        through the event loop cost it ~1 us a packet), and a reconciliation turns each into
        keys without holding every row at once (runtime/effects.py)."""
        if self._readonly:  # `ledger verify`: the one connection, inside its snapshot()
            async with self._reader.execute(sql, args) as cur:
                while rows := await cur.fetchmany(batch):
                    yield list(rows)  # type: ignore[arg-type]  # tuples: no row factory is set
            return
        if self._depth.get() or self._reader is self._writer:
            async with self._conn.execute(sql, args) as cur:
                whole = list(await cur.fetchall())
            for start in range(0, len(whole), batch):
                yield whole[start : start + batch]
            return
        snapshot = self._spare.pop() if self._spare else await self._open_reader()
        self._snapshots.add(snapshot)
        finished = False
        try:
            cur = await snapshot.execute(sql, args)
            while rows := await cur.fetchmany(batch):
                yield list(rows)
            await cur.close()
            finished = True  # the cursor is closed, so the connection holds no snapshot now
        finally:  # else the connection goes, cursor and all (it may be closed already: no error)
            self._snapshots.discard(snapshot)
            if finished and len(self._spare) < SPARE_READERS:
                self._spare.append(snapshot)
            else:
                await _close_quietly(snapshot)

    async def backup_to(self, target: Path) -> int:
        """Copy the live database with SQLite's online backup API (consistent under writes),
        then the body files its rows name to ``target``-bodies; returns how many files.

        Body files are never changed or deleted once committed, so the files of the copy's
        rows are all there to copy, whatever was written meanwhile."""
        dest = sqlite3.connect(target)
        try:
            await self._conn.backup(dest)
            # The copy is one file: in WAL mode, as the ledger is, the read-only verification that
            # follows would leave PATH-wal and PATH-shm beside it. A store that opens it as its
            # ledger puts it back in WAL mode.
            dest.execute("PRAGMA journal_mode = DELETE")
            try:
                ids = [bytes(r[0]) for r in dest.execute("SELECT id FROM packets WHERE body IS NULL")]
            except sqlite3.OperationalError:
                ids = []  # before migration 0004 every body is in its row
        finally:
            dest.close()
        copy_root = bodies_dir(target)
        if not ids or self.bodies is None or copy_root is None:
            return 0
        return await asyncio.to_thread(self.bodies.copy_to, BodyFiles(copy_root), ids)

    async def pages(self) -> compaction.Pages:
        """The ledger file's page counts, from its header: how much ``compact`` would give back."""
        return await compaction.read_pages(self._conn)

    async def compact(self, **options: Any) -> compaction.Compaction:
        """Give the ledger's free pages back to the disk (``ledger compact``); ``options`` go to
        :func:`store.compaction.compact`. The writer is held the whole time: it runs outside any
        transaction, and no task of this process may begin one meanwhile."""
        if self._readonly:
            raise HomeUnusable(f"the ledger in {self.path.parent} is open read-only; it cannot be compacted")
        async with self._lock:
            return await compaction.compact(
                self._writer, self.path, retry=self.retry, access=self.access, **options
            )

    # -- private ----------------------------------------------------------------------------

    async def _migrate(self) -> None:
        await self._writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER)"
        )
        async with self._conn.execute("SELECT name FROM schema_migrations") as cur:
            applied = {r[0] for r in await cur.fetchall()}
        known = {name for name, _ in MIGRATIONS}
        if applied - known:
            raise LedgerError(
                f"the ledger {self.path} was written by a newer ark-lattice "
                f"(migrations {sorted(applied - known)}); upgrade to open it"
            )
        ran: list[str] = []
        for name, sql in MIGRATIONS:
            if name in applied:
                continue
            async with self.transaction():
                if await self._scalar("SELECT 1 FROM schema_migrations WHERE name = ?", (name,)):
                    continue  # another process applied it while we waited for the lock
                for statement in _statements(sql):
                    await self._conn.execute(statement)
                await self._conn.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                    (name, self.now_ms()),
                )
                ran.append(name)
        if ran and str(self.path) != ":memory:":
            # Once, in the process that migrated (the node's log, or a command's stderr): a
            # rebuilt table leaves its old pages free, and the file never shrinks by itself.
            pages = await compaction.read_pages(self._writer)
            if notice := compaction.reclaimable_notice(pages, self.path, f"after migration {ran[-1]}"):
                # Marked, so `ledger compact` itself does not suggest what it is about to do.
                logging.getLogger("ark_lattice.store").warning("%s", notice, extra={"compact_hint": True})

    async def _execute_write(self, sql: str) -> None:
        """BEGIN IMMEDIATE or COMMIT on the writer, retried on a lock conflict (store/access.py)."""

        async def attempt() -> None:
            await self._writer.execute(sql)

        try:
            await retry_busy(attempt, self.retry, self.access)
        except BaseException as exc:
            if sql == "COMMIT" and self._writer.in_transaction:
                # A transaction that cannot commit is rolled back: else the writer stays inside
                # it, and every later write of this process fails with "within a transaction".
                with contextlib.suppress(sqlite3.Error):
                    await self._writer.execute("ROLLBACK")
            if not isinstance(exc, sqlite3.OperationalError):
                raise
            if "full" in str(exc).lower():
                raise LedgerError("the disk is full; nothing was written") from None
            raise self._write_refused(exc) from None

    def _write_refused(self, exc: sqlite3.Error) -> ArkLatticeError:
        """One sentence for a write SQLite refused; a read-only ledger is the home's fault."""
        if "readonly" in str(exc).lower() or "read-only" in str(exc).lower():
            return HomeUnusable(
                f"the ledger in {self.path.parent} is read-only (a read-only file system or "
                "directory); commands that change it cannot run"
            )
        return LedgerError(f"the ledger refused a write: {exc}; nothing was written")

    async def _open_reader(self) -> Any:
        """A connection for reads only; the in-memory ledger (simulator) has just the one."""
        if str(self.path) == ":memory:":
            return self._writer
        try:
            reader = await self._connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from None
        try:
            await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await reader.execute("PRAGMA query_only = ON")  # a read path that tried to write is a bug
        except BaseException:
            await reader.close()
            raise
        return reader

    async def _close_reader(self) -> None:
        if self._reader is not self._writer:
            await self._reader.close()
            self._reader = self._writer
    async def _begin_head(self) -> None:
        self._dirty, self._found, self._tip, self._manifest_seq = False, None, None, None

    async def _note_found(self) -> None:
        """Before this transaction's first change to the log or a protected counter, note the
        head and the log's tip as it finds them (under the write lock; the head is ours alone)."""
        self._dirty = True
        if self._signer is None or self._found is not None:
            return
        async with self._conn.execute(
            "SELECT (SELECT value FROM meta WHERE key = ?),"
            " (SELECT seq FROM events ORDER BY seq DESC LIMIT 1),"
            " (SELECT hash FROM events ORDER BY seq DESC LIMIT 1),"
            " (SELECT value FROM meta WHERE key = 'manifest_seq')",
            (heads.HEAD_KEY,),
        ) as cur:
            row = await cur.fetchone()
        stored, size, tip, manifest_seq = row if row else (None, None, None, None)
        self._found = (heads.decode_head(stored), size or 0, tip or GENESIS_PREV)
        self._tip, self._manifest_seq = (size or 0, tip or GENESIS_PREV), int(manifest_seq or 0)

    async def _seal_head(self) -> None:
        """End a transaction that changed the log or a protected counter with a signed head."""
        if self._signer is None or self._found is None or not self._dirty:
            return
        head, size, tip = self._found
        in_force = head is not None or await self._heads_in_force()
        gap = heads.continuity(head, size, tip, in_force)
        if gap is not None:
            # Never sign over events written without the key: record them in the chain instead.
            logging.getLogger("ark_lattice.store").warning(
                "the ledger changed without this node's key (%s); recorded, see `ledger verify`",
                gap["why"],
            )
            await self.append_event(EventKind.LEDGER_UNSIGNED, "", gap)
        elif head is None and size > 0:
            await self.append_event(EventKind.LEDGER_HEADS_STARTED, "", {"from": size + 1})
        if self._tip is None or self._manifest_seq is None:
            async with self._conn.execute(
                "SELECT (SELECT seq FROM events ORDER BY seq DESC LIMIT 1),"
                " (SELECT hash FROM events ORDER BY seq DESC LIMIT 1),"
                " (SELECT value FROM meta WHERE key = 'manifest_seq')"
            ) as cur:
                row = await cur.fetchone()
            size_now, tip_now, seq_now = row if row else (None, None, None)
            self._tip, self._manifest_seq = (size_now or 0, tip_now or GENESIS_PREV), int(seq_now or 0)
        (new_size, new_tip), manifest_seq = self._tip, self._manifest_seq
        signed = heads.Head("", new_size, new_tip, manifest_seq).signed(self._signer)
        await self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (heads.HEAD_KEY, signed.to_bytes()),
        )

    async def _heads_in_force(self) -> bool:
        """Whether this log was written with signed heads (a missing head is then a deletion)."""
        first = await self._scalar("SELECT data FROM events WHERE seq = 1")
        if isinstance(first, bytes):
            try:
                if cbor2.loads(first).get(heads.HEADS_FLAG):
                    return True
            except Exception:  # a damaged event #1 is for `ledger verify` to name
                pass
        return bool(
            await self._scalar(
                "SELECT 1 FROM events WHERE kind IN (?, ?) LIMIT 1",
                (EventKind.LEDGER_HEADS_STARTED, EventKind.LEDGER_UNSIGNED),
            )
        )

    async def _set_meta(self, key: str, value: int, *, grow_only: bool = False) -> None:
        if key in heads.PROTECTED_META:
            await self._note_found()
        new = "MAX(value, excluded.value)" if grow_only else "excluded.value"
        await self._conn.execute(
            f"INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = {new}",
            (key, value),
        )
        if key == "manifest_seq":
            self._manifest_seq = None if grow_only else value

    async def _row(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Any]:
        async with self._conn.execute(sql, args) as cur:
            row = await cur.fetchone()
        if row is None:
            raise LedgerError(f"the ledger {self.path} lacks a row it always has ({sql})")
        return tuple(row)

    async def _scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        async with self._conn.execute(sql, args) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def _peer_row(self, node_id: str) -> PeerRecord | None:
        async with self._conn.execute(
            f"SELECT {_PEER_COLUMNS} FROM peers WHERE id = ?", (node_id,)
        ) as cur:
            row = await cur.fetchone()
        return _peer_record(row) if row else None


async def _close_quietly(conn: Any) -> None:
    """Close a private read connection; it may be closed already (the store was closed first)."""
    with contextlib.suppress(Exception):  # nothing to save in a read connection that fails to close
        await conn.close()


def _statements(sql: str) -> list[str]:
    """Split a script into statements (executescript would commit the migration's transaction)."""
    out, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in pending.splitlines()
    ):
        raise ValueError("a migration ends with an incomplete statement")
    return out


def _where(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for column, value in pairs:
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _stored_packet(row: Sequence[Any], from_file: bytes | None = None) -> StoredPacket:
    pid, header, signature, body, source, received_at, quarantined = row
    # Signatures were checked when the packet was stored and `ledger verify` re-checks them all;
    # reading trusts them so that listings stay cheap.
    if body is None:  # held in a file (store/bodies.py), read by the caller
        assert from_file is not None
        body = from_file
    packet = Packet.from_store(pid, header, signature, body)
    return StoredPacket(packet, source, received_at, bool(quarantined))


def _peer_record(row: Sequence[Any]) -> PeerRecord:
    pid, tier, name, endpoints, manifest, mseq, first, last, strikes = row
    return PeerRecord(
        pid, TrustTier(tier), name, tuple(json.loads(endpoints)), manifest, mseq, first, last, strikes
    )


async def _open_read_only(cls: type[Store], path: Path, clock: Callable[[], float]) -> Store:
    """The ledger of a read-only home, for reading; a file SQLite cannot read is refused here."""
    store = await cls.open_readonly(path, clock=clock)
    try:
        await store._reader.execute("SELECT count(*) FROM sqlite_master")
    except sqlite3.Error as exc:
        await store.close()
        raise LedgerError(f"cannot read the ledger {path} on a read-only home: {exc}") from None
    return store
