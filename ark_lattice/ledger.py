"""Tamper evidence for the store: signed checkpoints and full verification (DESIGN §8).

The ledger's event log is a hash chain; its entry hashes are the leaves of an RFC 6962 Merkle tree.
``anchor`` signs the tree head as a C2SP tlog-checkpoint note. ``verify`` reads the database in one
snapshot (``Store.open_readonly`` for the CLI: never created, never migrated), recomputes
everything that can be recomputed and names the first entry that does not match:

0. the file: every table there, SQLite's integrity check (pages, indexes), every value of its
   column's SQLite type, every text valid UTF-8, and event #1 this node's own initialisation
   (a foreign or never-initialised ledger is refused);
1. every event hash and every link, in order, with no gap;
2. every checkpoint: its signature, and its root against the tree rebuilt from the events. One
   incremental tree yields the root at every checkpoint's size, so the cost is linear in events
   whatever the number of checkpoints (a rewrite under an old checkpoint changes its root);
3. every packet: its id, signature and body hash (a body held in a file, store/bodies.py, is read
   from its file: a missing or changed file names the packet), that exactly the packets the log
   says were stored are present, in the quarantine state and with the source the log says, and
   that the packet counts (``packet_counts``) match them. Body files no row names (left by a
   writer killed before its commit; the next writer removes them) are counted, not a failure;
4. every peer's tier, strikes and newest manifest (seq and digest) against the replayed log;
5. ``meta.hlc`` within bounds, and the head signed by the node's key (store/head.py) covering
   exactly the log and ``meta.manifest_seq``: no append, rollback or re-chaining without the key.

Any SQLite failure on the way (a damaged page, a dropped column) becomes a :class:`LedgerCorrupt`
naming the table being read: verify fails with one sentence, never with anything else.

The work overlaps, the naming does not. On a ledger file the checks of 0 (SQLite's integrity
check and the type scans: C, off the GIL) run on a second connection of the same snapshot
(``_FileChecks``, ``_Verifier.run``); 1-2 and 3 read the store's connection side by side, the
packet rows checked on every core (signatures.py) while the loop replays the log. A failure waits
for every check before it in the order above to pass, so the entry named is the one a single pass
in that order names.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import cbor2

from ark_lattice import merkle, witness
from ark_lattice.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from ark_lattice.encoding import Purpose, sha256
from ark_lattice.errors import LedgerCorrupt, Unfinished, VerificationError
from ark_lattice.hlc import unpack as hlc_unpack
from ark_lattice.identity import Identity, NodeId
from ark_lattice.packet import verified_header
from ark_lattice.store.bodies import BodyFiles
from ark_lattice.store.events import GENESIS_PREV, Event, EventKind, entry_hash
from ark_lattice.store.head import HEAD_KEY, decode_head
from ark_lattice.store.store import Store

__all__ = ["anchor", "verify", "VerifyReport", "checkpoint_origin", "key_name"]


@dataclass(frozen=True)
class VerifyReport:
    events: int
    packets: int
    checkpoints: int
    peers: int
    root: bytes
    seconds: float
    signed: int = 0  # events the node's signed head covers (all of them, once verified)
    cosignatures: int = 0  # witnesses' cosignatures checked against the log (witness.py)
    body_files: int = 0  # bodies read from their files (store/bodies.py) and checked
    orphan_bodies: int = 0  # body files no packet names: an interrupted write, removed at next open

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "entry": None,
            "reason": None,
            "signed": self.signed,
            "cosignatures": self.cosignatures,
            "body_files": self.body_files,
            "orphan_bodies": self.orphan_bodies,
            "events": self.events,
            "packets": self.packets,
            "checkpoints": self.checkpoints,
            "peers": self.peers,
            "root": self.root.hex(),
            "seconds": round(self.seconds, 3),
        }


def checkpoint_origin(node_id: NodeId) -> str:
    return f"ark-lattice.ledger/{node_id}"


def key_name(node_id: NodeId) -> str:
    return f"ark-lattice-{node_id}"


async def anchor(store: Store, identity: Identity) -> tuple[Checkpoint, bool]:
    """Sign a checkpoint over every event so far; returns it and whether it is new.

    Anchoring a log that has not grown since the last checkpoint returns that checkpoint.
    """
    async with store.transaction():
        tree = merkle.CompactRange()
        last_kind = None
        async for event in store.iter_events():
            tree.append(merkle.leaf_hash(event.hash))
            last_kind = event.kind
        existing = await store.checkpoints()
        # The checkpoint's own event is the one entry a new checkpoint would add: not growth.
        if existing and (
            existing[-1][0] == tree.size
            or (existing[-1][0] == tree.size - 1 and last_kind == EventKind.CHECKPOINT)
        ):
            size, root, note = existing[-1]
            return Checkpoint(checkpoint_origin(identity.node_id), size, root), False
        checkpoint = Checkpoint(checkpoint_origin(identity.node_id), tree.size, tree.root())
        note = sign_checkpoint(checkpoint, identity, key_name(identity.node_id))
        await store.add_checkpoint(checkpoint.size, checkpoint.root_hash, note)
        return checkpoint, True


async def verify(
    store: Store,
    node_id: NodeId,
    *,
    progress: Callable[[int], None] | None = None,
    owner: bool = True,
    against: Sequence[witness.Expected] = (),
    packet_progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check the whole ledger; raise :class:`LedgerCorrupt` naming the first bad entry.

    ``against``: tree heads held elsewhere (``--against NOTE``) that the log must still have, as
    it must have every one a witness cosigned (witness.py). ``progress`` hears the events checked
    so far (every 5,000) until the packets are counted, ``packet_progress`` the packets (every 1,000;
    their signatures are checked on every core, signatures.py).

    ``owner`` also requires event #1 to be this node's own initialisation (a ledger made by
    ``init`` for ``node_id``); the simulator's in-memory ledgers have no such event. Whatever is
    wrong with the database (a dropped table, a damaged page, a value of the wrong type) becomes a
    :class:`LedgerCorrupt` too: verify never fails with anything else.

    The checks of the whole file (SQLite's integrity check and every value's type) run on a
    second read connection of the same snapshot (``_FileChecks``), and the event and packet
    passes side by side on the store's: the failure named is still the one the order above
    names first.
    """
    verifier = _Verifier(store, node_id, owner, progress, against)
    verifier.packet_progress = packet_progress
    try:
        return await verifier.run()
    except sqlite3.Error as exc:
        raise _unreadable(verifier.reading, exc) from None
    except UnicodeDecodeError as exc:
        raise _unreadable(verifier.reading, exc) from None


def _unreadable(reading: str, exc: sqlite3.Error | UnicodeDecodeError) -> LedgerCorrupt:
    if isinstance(exc, UnicodeDecodeError):
        # A damaged name in the schema, or a message quoting damaged bytes.
        return LedgerCorrupt(reading, "SQLite cannot read it (text that is not UTF-8)")
    return LedgerCorrupt(reading, f"SQLite cannot read it ({_sqlite_reason(exc)})")


T = TypeVar("T")


async def _reading(reading: str, work: Awaitable[T]) -> T:
    """``work``, with a SQLite failure named after what it reads (passes that run side by side
    cannot share the verifier's ``reading``)."""
    try:
        return await work
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        raise _unreadable(reading, exc) from None


def _rows(store: Store, sql: str) -> aclosing[AsyncGenerator[tuple[Any, ...], None]]:
    """Rows of ``sql``, closed when the loop ends, also by an exception: the cursor must not
    outlive the connection (a generator left open is finalised later, and fails then)."""
    return aclosing(cast(AsyncGenerator[tuple[Any, ...], None], store.iter_rows(sql)))


def _batches(store: Store, sql: str, size: int) -> AsyncGenerator[list[tuple[Any, ...]], None]:
    """Rows of ``sql`` in lists of ``size`` (``Store.iter_batches``); the caller closes it."""
    return store.iter_batches(sql, size)


def _sqlite_reason(exc: sqlite3.Error) -> str:
    # SQLite may quote a damaged schema, newlines and all: one line, and not a page of it.
    text = " ".join(str(exc).split()).rstrip(".") or exc.__class__.__name__
    return text if len(text) <= 200 else text[:200] + "…"


REQUIRED_TABLES = ("meta", "events", "packets", "peers", "checkpoints", "endpoints")

# What each table's rows are called in a message, and the SQLite storage classes each column may
# hold. A value of another class makes the node's own reads fail, so verify names it first.
_TABLES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "events": (
        "seq",
        {
            "ts": ("integer",),
            "kind": ("text",),
            "subject": ("text",),
            "data": ("blob",),
            "prev": ("blob",),
            "hash": ("blob",),
        },
    ),
    "packets": (
        "id",
        {
            "id": ("blob",),
            "created_at": ("integer",),
            "topic": ("text",),
            "kind": ("text",),
            "author": ("text",),
            "header": ("blob",),
            "signature": ("blob",),
            "body": ("blob", "null"),  # NULL: the body is in its file (store/bodies.py)
            "source": ("text",),
            "received_at": ("integer",),
            "quarantined": ("integer",),
        },
    ),
    "peers": (
        "id",
        {
            "id": ("text",),
            "tier": ("text",),
            "name": ("text",),
            "endpoints": ("text",),
            "manifest": ("blob", "null"),
            "manifest_seq": ("integer", "null"),
            "first_seen": ("integer",),
            "last_seen": ("integer", "null"),
            "strikes": ("integer",),
        },
    ),
    "checkpoints": ("size", {"root": ("blob",), "note": ("text",), "created_at": ("integer",)}),
    "endpoints": (
        "url",
        {"url": ("text",), "peer_id": ("text", "null"), "source": ("text",), "added_at": ("integer",)},
    ),
    "meta": ("key", {"key": ("text",)}),
    # Migration 0004; a ledger from before it is verified read-only, without it.
    "packet_counts": ("one", {"total": ("integer",), "quarantined": ("integer",)}),
}
_META_TYPES = {"hlc": "integer", "manifest_seq": "integer", HEAD_KEY: "blob"}
_TEXT_COLUMNS = {
    "peers": ("id", "tier", "name", "endpoints"),
    "endpoints": ("url", "peer_id", "source"),
    "meta": ("key",),
}
_CLOCK_SLACK_MS = 24 * 3600 * 1000  # meta.hlc may run this far ahead of the verifying machine
_MAX_HLC = (1 << 63) - 1 - (1 << 16)  # store.py: a clock past this could not tick again


def _row_name(table: str, key: object) -> str:
    if isinstance(key, bytes):
        key = key.hex() if table == "packets" else key.decode("utf-8", errors="replace")
    return {
        "events": f"event #{key}",
        "packets": f"packet {key}",
        "peers": f"peer {key}",
        "checkpoints": f"checkpoint of size {key}",
        "endpoints": f"endpoint {key}",
        "meta": f"meta.{key}",
        "packet_counts": "the packet counts",
    }[table]


def _text(raw: object, where: str, what: str) -> str:
    if not isinstance(raw, bytes):
        raise LedgerCorrupt(where, f"its {what} is not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LedgerCorrupt(where, f"its {what} is not valid UTF-8 text") from None


# Packet results that wait for the replayed log before the packet pass waits for it instead
# (about 250 bytes each: 50 MB at most, whatever the log's length). A million events take ~7 s
# to replay, in which the workers check ~150k packets: they need not stop.
_WAITING = 200_000
# Events per fetch: the log pass then keeps the loop in long runs and ends sooner, and the packet
# results that wait for it are fewer (100k home: 3.7 s in all, 4.0 s with 512 and 64).
_EVENT_BATCH = 4096
# A packet row checked against itself, as its check against the log needs it: id, created_at,
# whether its body is in a file, source and quarantine; or the failure met at its turn.
_Checked = tuple[bytes, int, bool, bytes, int] | Exception
_PACKET_BATCH = 512  # packet rows per fetch (a task on the pool holds at most signatures.BATCH)
_SNAPSHOT_TRIES = 3  # tries to open both connections on one snapshot before using one


def _file_checks(tables: set[str]) -> Generator[tuple[str, str], list[tuple[Any, ...]], None]:
    """The checks of the file as a whole, without I/O: yields what it reads and its query, is
    sent the query's rows, raises :class:`LedgerCorrupt` for the first failure.

    The passes read tables, not indexes; the node's queries use both. SQLite checks every page
    and that every index matches its table (UNIQUE included); then every value must be of the
    storage class its column needs and every text valid UTF-8.
    """
    [(first,)] = yield "the ledger file", "PRAGMA integrity_check(1)"
    if first != "ok":
        lines = [ln.strip() for ln in str(first).splitlines() if ln.strip() and "***" not in ln]
        found = "; ".join(lines)[:200] or "no detail"  # one sentence, however SQLite words it
        raise LedgerCorrupt("the ledger file", f"SQLite's integrity check fails ({found})")
    for table, (key, columns) in _TABLES.items():
        if table not in tables:  # only optional tables can be missing here
            continue
        names = list(columns)
        tests = " OR ".join(f"typeof({c}) NOT IN ({', '.join(repr(t) for t in columns[c])})" for c in names)
        # NOT INDEXED: one pass over the table in its own order and the (rare) misfits sorted,
        # not a walk of the key's index with a lookup of every row (packets: 2.3x as long).
        misfits = yield f"the {table} table", (
            f"SELECT CAST({key} AS BLOB), {', '.join(f'typeof({c})' for c in names)} "
            f"FROM {table} NOT INDEXED WHERE {tests} ORDER BY {key} LIMIT 1"
        )
        if misfits:
            raw_key, *kinds = misfits[0]
            if table in ("events", "checkpoints") and isinstance(raw_key, bytes):
                raw_key = raw_key.decode("ascii", errors="replace")
            for column, kind in zip(names, kinds, strict=True):
                if kind not in columns[column]:
                    wanted = " or ".join(columns[column])
                    raise LedgerCorrupt(_row_name(table, raw_key), f"its {column} is {kind}, not {wanted}")
    for table, text_columns in _TEXT_COLUMNS.items():
        key = _TABLES[table][0]
        casts = ", ".join(f"CAST({c} AS BLOB)" for c in text_columns)
        texts = yield f"the {table} table", f"SELECT CAST({key} AS BLOB), {casts} FROM {table}"
        for raw_key, *values in texts:
            where = _row_name(table, raw_key)
            for column, value in zip(text_columns, values, strict=True):
                if value is not None:
                    _text(value, where, column)


class _FileChecks:
    """:func:`_file_checks` on a second read connection, on a thread of its own: SQLite's
    integrity check (a tenth of a verify, and I/O bound on a ledger not in the page cache) and
    the type scans run while the passes over events and packets check the same snapshot."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-file")
        self.db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, uri: str) -> _FileChecks:
        """Connected, its snapshot begun (a first read), before the store's begins."""
        side = cls(uri)
        try:
            await side.call(side.begin)
        except BaseException:
            await side.close()
            raise
        return side

    async def call(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, work)

    def begin(self) -> None:
        self.db = sqlite3.connect(self.uri, uri=True, isolation_level=None, check_same_thread=False)
        self.db.execute("BEGIN")
        self.db.execute("SELECT count(*) FROM sqlite_master").fetchall()

    async def check(self, tables: set[str]) -> None:
        await self.call(lambda: self.run(tables))

    def run(self, tables: set[str]) -> None:
        assert self.db is not None
        checks = _file_checks(tables)
        reading = "the ledger file"
        try:
            reading, sql = next(checks)
            while True:
                reading, sql = checks.send(self.db.execute(sql).fetchall())
        except StopIteration:
            return
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise _unreadable(reading, exc) from None

    async def close(self) -> None:
        db, self.db = self.db, None
        if db is not None:
            # A running check ends with its statement: interrupt it (a failure elsewhere).
            db.interrupt()
            await self.call(db.close)
        self.thread.shutdown(wait=False)


class _Verifier:
    def __init__(
        self,
        store: Store,
        node_id: NodeId,
        owner: bool,
        progress: Callable[[int], None] | None,
        against: Sequence[witness.Expected] = (),
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.owner = owner
        self.progress = progress
        self.packet_progress: Callable[[int], None] | None = None  # packets checked, every 1000
        self.reading = "the ledger file"  # what a SQLite error is about
        self.replay = _Replay()
        self.against = list(against)
        self.tables: set[str] = set()
        self.body_files: set[bytes] = set()  # packets whose body is in a file
        self.quarantined = 0  # packets rows in quarantine (against packet_counts)
        self.counted = self.newest = 0  # packet rows checked, and the newest created_at of them
        # The passes run side by side: the bar counts events until it counts packets (the longer).
        self.packets_begun = False
        self.workers: Executor | None = None  # the packet pass's (signatures.pool)

    async def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        async with _rows(self.store, sql) as rows:
            async for row in rows:
                out.append(row)
        return out

    async def run(self) -> VerifyReport:
        """Start the packet pass's workers, then check the ledger (:meth:`snapshots`)."""
        from ark_lattice.signatures import pool

        # Before any thread of this pass starts: processes are forked here (signatures.pool).
        async with pool(await self.packets_held()) as self.workers:
            return await self.snapshots()

    async def packets_held(self) -> int:
        """The store's packet count, to choose the workers by; 0 when it cannot be read (the
        passes then name what is wrong)."""
        try:
            return await self.store.packet_count()
        except (sqlite3.Error, UnicodeDecodeError, TypeError, ValueError):
            return 0

    async def snapshots(self) -> VerifyReport:
        """Open the snapshot every pass reads (and the second connection, on the same one)."""
        for attempt in range(_SNAPSHOT_TRIES):
            side = before = None
            if self.store.read_uri is not None:  # a ledger file: a second connection can read it
                self.reading = "the ledger file"
                before = await self.data_version()
                side = await _FileChecks.open(self.store.read_uri)
            try:
                async with self.store.snapshot():
                    if side is not None and await self.data_version() != before:
                        # A write committed between the two connections' first reads: they may
                        # see different states. Again; under steady writes, one connection.
                        if attempt + 1 < _SNAPSHOT_TRIES:
                            continue
                        await side.close()
                        side = None
                    return await self.passes(side)
            finally:
                if side is not None:
                    await side.close()
        raise AssertionError("unreachable: the last attempt runs on one connection")

    async def data_version(self) -> int:
        """SQLite's count of the commits this connection has seen by other connections: equal
        before and inside a read transaction, nothing was committed in between, so a snapshot
        begun in between (the second connection's) is this one (SQLite's ``data_version``)."""
        [(version,)] = await self.rows("PRAGMA data_version")
        return int(version)

    async def passes(self, side: _FileChecks | None) -> VerifyReport:
        started = time.perf_counter()
        await self.check_schema()
        if side is None:  # an in-memory ledger, or a busy one: here, first, as in the order above
            await self.check_file()
            return await self.check_contents(started)
        files = asyncio.ensure_future(side.check(self.tables))
        contents = asyncio.ensure_future(self.check_contents(started))
        try:
            # The file checks come first in the order: their failure is named whatever else
            # fails, and at once; any other waits for them to pass.
            await asyncio.wait({files, contents}, return_when=asyncio.FIRST_EXCEPTION)
            if files.done():
                files.result()
            await files
            return await contents
        finally:
            for task in (contents, files):
                task.cancel()
            await asyncio.gather(contents, files, return_exceptions=True)

    async def check_contents(self, started: float) -> VerifyReport:
        checkpoint_rows = await self.read_checkpoints()
        # What witnesses cosigned (a ledger from before witnessing has no such table: none).
        self.reading = "the cosignatures table"
        cosigned = []
        if "cosignatures" in self.tables:
            cosigned = await witness.expectations(self.store, self.node_id)
        heads = [*cosigned, *self.against]
        # The events and the packets are read side by side (one snapshot, two cursors): the
        # packets checked before the log is replayed wait for it, and its failure comes first.
        log_pass = _reading("the events table", self.check_log(checkpoint_rows, heads))
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the simulator's inline store: no loop, one pass after the other
            tree = await log_pass
            packets, newest = await _reading("the packets table", self.check_packets(None))
        else:
            log = asyncio.ensure_future(log_pass)
            try:
                packets, newest = await _reading("the packets table", self.check_packets(log))
                tree = await log
            finally:
                log.cancel()
        await self.check_counts(packets)
        orphans = self.orphan_bodies()
        peers = await self.check_peers()
        await self.check_endpoints()
        manifest_seq = await self.check_meta(newest)
        head = await self.check_head(tree.size, manifest_seq)
        return VerifyReport(
            events=tree.size,
            packets=packets,
            checkpoints=len(checkpoint_rows),
            peers=peers,
            root=tree.root(),
            seconds=time.perf_counter() - started,
            signed=head,
            cosignatures=len(cosigned),
            body_files=len(self.body_files),
            orphan_bodies=orphans,
        )

    async def check_log(
        self, checkpoint_rows: list[tuple[int, bytes, bytes]], heads: list[witness.Expected]
    ) -> merkle.CompactRange:
        """The chain, then what witnesses cosigned and the checkpoints against it."""
        sizes = {size for size, _, _ in checkpoint_rows} | {e.size for e in heads}
        tree, roots_at = await self.check_chain(sizes)
        # A shorter or different log than one a witness cosigned (or --against) is named here.
        witness.check_expectations(heads, roots_at, tree.size)
        self.check_checkpoints(checkpoint_rows, tree, roots_at)
        return tree

    async def check_schema(self) -> None:
        self.reading = "the ledger file"
        tables = {
            bytes(r[0]).decode("utf-8", errors="replace")
            for r in await self.rows("SELECT CAST(name AS BLOB) FROM sqlite_master WHERE type = 'table'")
        }
        if not tables:
            raise LedgerCorrupt(
                "the ledger file", "it is empty, with no tables: only `ark-lattice init` creates a ledger"
            )
        self.tables = tables
        for table in REQUIRED_TABLES:
            if table not in tables:
                raise LedgerCorrupt(f"the {table} table", "it is missing")

    async def check_file(self) -> None:
        """:func:`_file_checks` on the store's connection."""
        checks = _file_checks(self.tables)
        try:
            self.reading, sql = next(checks)
            while True:
                self.reading, sql = checks.send(await self.rows(sql))
        except StopIteration:
            return

    async def read_checkpoints(self) -> list[tuple[int, bytes, bytes]]:
        self.reading = "the checkpoints table"
        return [
            (size, root, note)
            for size, root, note in await self.rows(
                "SELECT size, root, CAST(note AS BLOB) FROM checkpoints ORDER BY size"
            )
        ]

    async def check_chain(self, wanted: set[int]) -> tuple[merkle.CompactRange, dict[int, bytes]]:
        """Every hash and link in one pass; the tree root at every checkpoint's size on the way.

        One incremental tree serves every checkpoint, so the cost is linear in events whatever
        their number: a root recomputed from the very leaves is stronger than a consistency proof.
        """
        tree = merkle.CompactRange()
        roots_at: dict[int, bytes] = {}
        if 0 in wanted:
            roots_at[0] = tree.root()
        prev, expected_seq = GENESIS_PREV, 1
        sql = (
            "SELECT seq, ts, CAST(kind AS BLOB), CAST(subject AS BLOB), data, prev, hash "
            "FROM events ORDER BY seq"
        )
        apply, append, leaf_hash = self.replay.apply, tree.append, merkle.leaf_hash
        batches = _batches(self.store, sql, _EVENT_BATCH)
        async with aclosing(batches):
            async for rows in batches:
                for seq, ts, raw_kind, raw_subject, data, prev_hash, hash_ in rows:
                    if seq != expected_seq:
                        raise LedgerCorrupt(f"event #{expected_seq}", "missing (the sequence jumps)")
                    try:
                        kind, subject = raw_kind.decode(), raw_subject.decode()
                    except (AttributeError, UnicodeDecodeError):  # named as _text names it
                        kind = _text(raw_kind, f"event #{seq}", "kind")
                        subject = _text(raw_subject, f"event #{seq}", "subject")
                    if prev_hash != prev:
                        raise LedgerCorrupt(f"event #{seq}", "does not link to the entry before it")
                    if entry_hash(seq, ts, kind, subject, data, prev_hash) != hash_:
                        raise LedgerCorrupt(f"event #{seq}", "its hash does not match its contents")
                    if seq == 1 and self.owner:
                        self.check_owner(kind, subject)
                    apply(seq, kind, subject, data)
                    append(leaf_hash(hash_))
                    if seq in wanted:  # seq is the tree's size now
                        roots_at[seq] = tree.root()
                    prev, expected_seq = hash_, expected_seq + 1
                    if self.progress is not None and seq % 5000 == 0 and not self.packets_begun:
                        self.progress(seq)
        if tree.size == 0 and self.owner:
            raise LedgerCorrupt(
                "the events table", "it holds no events: only `ark-lattice init` creates a ledger"
            )
        self.tip = prev
        return tree, roots_at

    def check_owner(self, kind: str, subject: str) -> None:
        if kind != EventKind.NODE_INITIALISED:
            raise LedgerCorrupt("event #1", f"it is a {kind} event, not the initialisation of this node")
        if subject != str(self.node_id):
            raise LedgerCorrupt(
                "event #1", f"the ledger belongs to node {subject}, not to this home's node {self.node_id}"
            )

    def check_checkpoints(
        self,
        rows: list[tuple[int, bytes, bytes]],
        tree: merkle.CompactRange,
        roots_at: dict[int, bytes],
    ) -> None:
        origin, name = checkpoint_origin(self.node_id), key_name(self.node_id)
        for size, root, note in rows:
            where = f"checkpoint of size {size}"
            try:
                cp = verify_checkpoint(note, self.node_id, name)
            except VerificationError as exc:
                raise LedgerCorrupt(where, str(exc)) from None
            if cp.origin != origin or cp.size != size or cp.root_hash != root:
                raise LedgerCorrupt(where, "its signed note does not match its row")
            if size not in roots_at:
                raise LedgerCorrupt(where, f"it covers {size} events but the log holds {tree.size}")
            if roots_at[size] != root:
                raise LedgerCorrupt(where, "its root does not match the events it covers")
            if self.replay.checkpoints.pop(size, None) != root:
                raise LedgerCorrupt(where, "no checkpoint event in the log records it")
        if self.replay.checkpoints:
            # The first checkpoint event whose row is gone (not the first checkpoint event at all).
            seq, size = min((self.replay.checkpoint_seqs[s], s) for s in self.replay.checkpoints)
            raise LedgerCorrupt(f"event #{seq}", f"records a checkpoint of size {size} that is missing")

    async def check_packets(self, log: asyncio.Future[merkle.CompactRange] | None) -> tuple[int, int]:
        """Each packet row against its signed parts and against the log, in (created_at, id) order.

        The rows go to the workers in batches (signatures.py); each comes back checked as far as
        its own parts go (:class:`_PacketRows`). The checks against the log follow here in order,
        once ``log`` (the pass over the events, read side by side) has replayed it: until then the
        results wait, and its failure comes first. No ``log``: it has been replayed already.
        """
        from ark_lattice.signatures import checked_in_order

        self.counted = self.newest = 0
        sql = (
            "SELECT id, created_at, CAST(topic AS BLOB), CAST(kind AS BLOB), CAST(author AS BLOB), "
            "header, signature, body, CAST(source AS BLOB), quarantined FROM packets ORDER BY created_at, id"
        )
        waiting: list[_Checked] = []  # what the checks against the log need of each row
        batches = _batches(self.store, sql, _PACKET_BATCH)
        check = _PacketRows(self.store.bodies)
        checked = checked_in_order(batches, check, self.workers, size=_body_size)
        async with aclosing(batches), aclosing(checked):
            while True:
                try:
                    rows, failures = await anext(checked)
                except StopAsyncIteration:
                    break
                except Unfinished:
                    raise  # a worker was killed: nothing is known of the rows it held
                except Exception:
                    if log is not None:  # a row that cannot be read: the log's failure first,
                        await log
                    self.take(waiting)  # then the rows read before it
                    raise
                results = [
                    (row[0], row[1], row[7] is None, row[8], row[9]) if failure is None else failure
                    for row, failure in zip(rows, failures, strict=True)
                ]
                if log is not None and not log.done() and len(waiting) < _WAITING:
                    waiting += results
                    continue
                if log is not None:
                    await log  # the log's own failure first
                taking, waiting = waiting, []
                self.take(taking)
                self.take(results)
        if log is not None:
            await log
        self.take(waiting)
        if self.replay.packets:
            pid, (_, seq, _) = min(self.replay.packets.items(), key=lambda item: item[1][1])
            raise LedgerCorrupt(f"event #{seq}", f"records packet {pid.hex()} that is missing")
        return self.counted, self.newest

    def take(self, results: list[_Checked]) -> None:
        """Checked packet rows, in order, against the replayed log."""
        progress = self.packet_progress
        for result in results:
            if isinstance(result, Exception):
                raise result
            pid, created_at, in_file, source, quarantined = result
            if in_file:
                self.body_files.add(pid)
            self.against_log(pid, quarantined, source)
            if created_at > self.newest:
                self.newest = created_at
            self.counted += 1
            self.quarantined += bool(quarantined)
            if progress is not None and self.counted % 1000 == 0:
                self.packets_begun = True
                progress(self.counted)

    def against_log(self, pid: bytes, quarantined: int, source: bytes) -> None:
        """A packet row against the log: it records storing it, its quarantine and its source."""
        expected = self.replay.packets.pop(pid, None)
        if expected is None:
            raise LedgerCorrupt(_row_name("packets", pid), "no event in the log records storing it")
        was_quarantined, _, want = expected
        if bool(quarantined) != was_quarantined:
            raise LedgerCorrupt(_row_name("packets", pid), "its quarantine state differs from the log")
        if source != want.encode():  # the same text is the same UTF-8
            where = _row_name("packets", pid)
            if _text(source, where, "source") != want:
                raise LedgerCorrupt(where, f"its source differs from {want} in the log")

    async def check_counts(self, packets: int) -> None:
        """The counts `status` reads (migration 0004; kept by the store) against the rows."""
        if "packet_counts" not in self.tables:
            return
        self.reading = "the packet_counts table"
        found = await self.rows("SELECT total, quarantined FROM packet_counts WHERE one = 0")
        total, held = found[0] if found else (None, None)
        quarantined = self.quarantined
        if (total, held) != (packets, quarantined):
            raise LedgerCorrupt(
                "the packet counts",
                f"they say {total} packets ({held} in quarantine) but the ledger holds "
                f"{packets} ({quarantined} in quarantine)",
            )

    def orphan_bodies(self) -> int:
        """Body files no packet row names (none in an in-memory ledger)."""
        files = self.store.bodies
        if files is None:
            return 0
        return sum(1 for pid, _ in files.candidates() if pid is None or pid not in self.body_files)

    async def check_peers(self) -> int:
        self.reading = "the peers table"
        peers = 0
        sql = (
            "SELECT CAST(id AS BLOB), CAST(tier AS BLOB), CAST(endpoints AS BLOB), manifest, manifest_seq,"
            " strikes FROM peers ORDER BY id"
        )
        for raw_id, raw_tier, raw_endpoints, manifest, manifest_seq, strikes in await self.rows(sql):
            peer_id = _text(raw_id, "the peers table", "id")
            where = f"peer {peer_id}"
            expected = self.replay.peers.pop(peer_id, None)
            if expected is None:
                raise LedgerCorrupt(where, "no event in the log records adding it")
            tier = _text(raw_tier, where, "tier")
            if tier != expected.tier:
                raise LedgerCorrupt(where, f"its tier {tier} differs from {expected.tier} in the log")
            if strikes != expected.strikes:
                raise LedgerCorrupt(where, f"its {strikes} strikes differ from {expected.strikes} in the log")
            digest = sha256(manifest) if manifest is not None else None
            # Before signed heads a peer's manifest was kept without an event: a ledger that
            # started its heads later is held to the events it has (a newer manifest has one).
            unrecorded = self.replay.legacy and expected.manifest_seq is None
            if not unrecorded and (manifest_seq, digest) != (expected.manifest_seq, expected.manifest_digest):
                raise LedgerCorrupt(
                    where,
                    f"its manifest (seq {manifest_seq}) differs from seq {expected.manifest_seq} in the log",
                )
            try:
                endpoints = json.loads(_text(raw_endpoints, where, "endpoints"))
            except ValueError:
                endpoints = None
            if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
                raise LedgerCorrupt(where, "its endpoints are not a JSON list of URLs")
            peers += 1
        if self.replay.peers:
            peer_id = min(self.replay.peers)
            raise LedgerCorrupt(f"peer {peer_id}", "the log records it but its row is missing")
        return peers

    async def check_endpoints(self) -> None:
        # Dialling hints, not protected state (docs/operator.md): readable is all they must be,
        # and the type and text checks above saw to that.
        pass

    async def check_meta(self, newest_packet: int) -> int:
        self.reading = "the meta table"
        values = {
            _text(key, "the meta table", "key"): (value, kind)
            for key, value, kind in await self.rows(
                "SELECT CAST(key AS BLOB), value, typeof(value) FROM meta"
            )
        }
        for key, wanted in _META_TYPES.items():
            if key in values and values[key][1] != wanted:
                raise LedgerCorrupt(f"meta.{key}", f"it is {values[key][1]}, not {wanted}")
        hlc = values.get("hlc", (0, "integer"))[0]
        if not 0 <= hlc <= _MAX_HLC:
            raise LedgerCorrupt(
                "meta.hlc", f"the clock value {hlc} is out of range: no timestamp could follow it"
            )
        if hlc < newest_packet:
            raise LedgerCorrupt(
                "meta.hlc", f"the clock {hlc} is behind the newest packet's timestamp {newest_packet}"
            )
        ahead = hlc_unpack(hlc)[0] - self.store.now_ms()
        if ahead > _CLOCK_SLACK_MS:
            days = ahead // 86_400_000
            raise LedgerCorrupt("meta.hlc", f"the clock runs {days} days ahead of this machine's")
        manifest_seq = values.get("manifest_seq", (0, "integer"))[0]
        if manifest_seq < 0:
            raise LedgerCorrupt("meta.manifest_seq", f"it is negative ({manifest_seq})")
        self.head_value = values.get(HEAD_KEY, (None, "null"))[0]
        return int(manifest_seq)

    async def check_head(self, size: int, manifest_seq: int) -> int:
        where = "the signed head"
        if self.head_value is None:
            raise LedgerCorrupt(
                where,
                "there is none: the ledger was written without the node's key "
                "(a ledger from before signed heads gets one at its next write with the key)",
            )
        head = decode_head(self.head_value)
        if head is None:
            raise LedgerCorrupt(where, "it is not a well-formed head")
        if head.node_id != str(self.node_id):
            raise LedgerCorrupt(where, f"it is signed for node {head.node_id}, not {self.node_id}")
        try:
            self.node_id.verify(Purpose.LEDGER_HEAD, head.payload(), head.signature)
        except VerificationError:
            raise LedgerCorrupt(where, "its signature does not verify with this node's key") from None
        if head.size < size:
            raise LedgerCorrupt(
                f"event #{head.size + 1}",
                f"events #{head.size + 1}-#{size} are not covered by the node's signed head "
                "(written without its key)",
            )
        if head.size > size:
            raise LedgerCorrupt(
                where, f"it covers {head.size} events but the log holds {size}: events were removed"
            )
        if head.hash != self.tip:
            raise LedgerCorrupt(f"event #{size}", "it is not the last event the node's signed head covers")
        if head.manifest_seq != manifest_seq:
            raise LedgerCorrupt(
                "meta.manifest_seq",
                f"it is {manifest_seq} but the node's signed head says {head.manifest_seq}",
            )
        return head.size

@dataclass
class _PeerState:
    tier: str
    strikes: int = 0
    manifest_seq: int | None = None
    manifest_digest: bytes | None = None


class _Replay:
    """The state the event log implies, rebuilt entry by entry."""

    def __init__(self) -> None:
        self.packets: dict[bytes, tuple[bool, int, str]] = {}  # id -> (quarantined, seq, source)
        self.peers: dict[str, _PeerState] = {}
        self.checkpoints: dict[int, bytes] = {}  # size -> root
        self.checkpoint_seqs: dict[int, int] = {}  # size -> seq
        self.legacy = False  # the log began before signed heads (a ledger.heads_started event)

    def apply(self, seq: int, kind: str, subject: str, data: bytes) -> None:
        """Event #``seq``'s change to the state (an Event object per event was a tenth of the pass)."""
        if kind == EventKind.LEDGER_UNSIGNED:
            fields = Event(seq, 0, kind, subject, data, b"", b"").fields
            why = fields.get("why", "events were written without its key")
            raise LedgerCorrupt(f"event #{seq}", f"the node found the log changed without its key: {why}")
        if kind == EventKind.LEDGER_HEADS_STARTED:
            self.legacy = True
        if kind not in _REPLAYED:
            return
        try:
            fields = cbor2.loads(data)
        except Exception:
            raise LedgerCorrupt(f"event #{seq}", "its data is not valid CBOR") from None
        if not isinstance(fields, dict):
            raise LedgerCorrupt(f"event #{seq}", "its data is not a map")
        self.change(seq, kind, subject, fields)

    def change(self, seq: int, kind: str, subject: str, data: dict[Any, Any]) -> None:
        # A keyless writer can hash any CBOR into a new event: every field is checked for its
        # type before it is used, so a misfit is named, never a crash.
        try:
            if kind in (EventKind.PACKET_STORED, EventKind.PACKET_PROMOTED) and not isinstance(
                data["id"], bytes
            ):
                raise TypeError("packet id")
            if kind == EventKind.PACKET_STORED:
                self.packets[data["id"]] = (bool(data["quarantined"]), seq, str(data["source"]))
            elif kind == EventKind.PACKET_PROMOTED:
                _, stored, source = self.packets[data["id"]]
                self.packets[data["id"]] = (False, stored, source)
            elif kind == EventKind.PEER_ADDED:
                self.peers[subject] = _PeerState(str(data["tier"]))
            elif kind == EventKind.PEER_TIER_CHANGED:
                peer = self.peers[subject]
                peer.tier = str(data["new"])
                if peer.tier != "blocked":  # store.set_tier: a new tier starts with no strikes
                    peer.strikes = 0
            elif kind == EventKind.PEER_STRIKE:
                self.peers[subject].strikes = _integer(data["strikes"])
            elif kind == EventKind.PEER_MANIFEST:
                peer = self.peers[subject]
                if not isinstance(data["digest"], bytes):
                    raise TypeError("manifest digest")
                peer.manifest_seq, peer.manifest_digest = _integer(data["seq"]), data["digest"]
            elif kind == EventKind.PEER_REMOVED:
                del self.peers[subject]
            elif kind == EventKind.CHECKPOINT:
                _integer(data["size"])
                self.checkpoints[data["size"]] = data["root"]
                self.checkpoint_seqs[data["size"]] = seq
        except (KeyError, TypeError, ValueError):
            where = f"event #{seq}"
            raise LedgerCorrupt(where, f"a {kind} event that does not fit the log before it") from None


class _PacketRows:
    """The checks of a packet row against itself, on a worker (signatures.py: a thread, or a
    process, which is sent this object): its id, signature and body hash, and its indexed columns
    against its signed header. What the rows say against the log is checked by the verifier."""

    def __init__(self, bodies: BodyFiles | None) -> None:
        self.bodies = bodies  # where bodies held in files are (None: an in-memory ledger)

    def __call__(self, rows: list[tuple[Any, ...]]) -> list[Exception | None]:
        """Each row's failure, or None: a failure is met at its row's turn, after every row
        before it, so it is handed back, not raised."""
        out: list[Exception | None] = []
        for pid, created_at, topic, kind, author, header, signature, body, *_ in rows:
            try:
                self.check(pid, created_at, topic, kind, author, header, signature, body)
                out.append(None)
            except Exception as exc:
                out.append(exc)
        return out

    def check(
        self, pid: bytes, created_at: int, topic: bytes, kind: bytes, author: bytes,
        header: bytes, signature: bytes, body: bytes | None,
    ) -> None:
        try:
            packet_id, h = verified_header(header, signature, self.body(pid, body))
        except VerificationError as exc:
            where = f"packet {bytes(pid).hex()}"
            if self.bodies is not None and body is None and "body" in str(exc):
                in_file = self.bodies.path(bytes(pid))
                reason = f"its body file {in_file} does not match the hash in its signed header"
                raise LedgerCorrupt(where, reason) from None
            raise LedgerCorrupt(where, str(exc)) from None
        if packet_id != pid:
            raise LedgerCorrupt(f"packet {bytes(pid).hex()}", "its contents hash to another id")
        if (
            created_at != h.created_at
            or topic != h.topic.encode()
            or kind != h.kind.encode()
            or author != _author_text(h.author.key)
        ):
            # The bytes differ: name a column that is not even text first, as always.
            where = f"packet {bytes(pid).hex()}"
            for value, column in ((topic, "topic"), (kind, "kind"), (author, "author")):
                _text(value, where, column)
            raise LedgerCorrupt(where, "its indexed columns do not match its signed header")

    def body(self, pid: bytes, body: bytes | None) -> bytes:
        """A packet row's body, read from its file when the row holds none."""
        if body is not None:
            return body
        if self.bodies is None:
            raise LedgerCorrupt(f"packet {bytes(pid).hex()}", "its body is missing (NULL in memory)")
        return self.bodies.read(bytes(pid))


@functools.lru_cache(maxsize=4096)
def _author_text(key: bytes) -> bytes:
    """An author's node id as the text its column holds, once per author: the base32 of every
    packet's key was a tenth of the pass."""
    return str(NodeId(key)).encode()


def _body_size(row: tuple[Any, ...]) -> int:
    body = row[7]
    return len(body) if body is not None else 0


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


_REPLAYED = frozenset(
    {
        EventKind.PACKET_STORED,
        EventKind.PACKET_PROMOTED,
        EventKind.PEER_ADDED,
        EventKind.PEER_TIER_CHANGED,
        EventKind.PEER_STRIKE,
        EventKind.PEER_MANIFEST,
        EventKind.PEER_REMOVED,
        EventKind.CHECKPOINT,
    }
)
