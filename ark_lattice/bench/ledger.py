"""``bench ledger``: event append rate against raw sqlite3, and ``ledger verify`` throughput."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path

from ark_lattice import ledger
from ark_lattice.bench import SILENT, Measurement, Progress
from ark_lattice.identity import Identity
from ark_lattice.store.events import Event, EventKind
from ark_lattice.store.store import Store

__all__ = ["run"]

BATCH = 500


async def run(events: int = 20_000, *, progress: Progress = SILENT) -> list[Measurement]:
    identity = Identity.generate()
    # Audit decisions are the ledger's highest-volume events, so they are the honest sample.
    data = {"hook": "inbound_packet", "allowed": True, "rules": ["allow-core"], "id": os.urandom(32)}
    with tempfile.TemporaryDirectory(prefix="ark-bench-") as tmp:
        db = Path(tmp) / "ledger.db"
        async with await Store.open(db) as store:
            progress.update(total=3, description=f"appending {events:,} events")
            started = time.perf_counter()
            for i in range(0, events, BATCH):
                n = min(BATCH, events - i)
                await store.append_events([(EventKind.POLICY_DECISION, "x" * 52, data)] * n)
            append_s = time.perf_counter() - started
            progress.advance()
            progress.update(description=f"verifying {events:,} events")
            # A row of the same shape and size as a ledger event, without hashing or chaining.
            sample = (await store.events(limit=1))[0]
            await ledger.anchor(store, identity)
            report = await ledger.verify(store, identity.node_id)
            progress.advance()
        progress.update(description=f"bound: {events:,} raw sqlite3 inserts")
        raw_s = _raw_insert(Path(tmp) / "raw.db", events, sample)
        progress.advance()

    return [
        Measurement("ledger.append", events / append_s, "events/s", bound=events / raw_s,
                    note=f"bound: sqlite3 executemany of {events} rows of the same size, "
                    f"{BATCH} per transaction"),
        Measurement("ledger.verify", report.events / report.seconds, "entries/s"),
    ]


def _raw_insert(path: Path, events: int, sample: Event) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, ts INTEGER, kind TEXT, subject TEXT,"
        " data BLOB, prev BLOB, hash BLOB)"
    )
    e = sample
    started = time.perf_counter()
    for i in range(0, events, BATCH):
        n = min(BATCH, events - i)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?)",
            [(i + k + 1, e.ts, e.kind, e.subject, e.data, e.prev, e.hash) for k in range(n)],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed
