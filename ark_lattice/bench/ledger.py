"""``bench ledger``: append and write rates against raw sqlite3, the cost of the signed head, and
``ledger verify`` throughput with and without checkpoints.

- ``ledger.append``: events appended in transactions of 500, each transaction ending with its
  signed head, against sqlite3 ``executemany`` of rows of the same size, 500 per transaction.
- ``ledger.write.signed`` / ``ledger.write.unsigned``: one-event transactions (how audit events and
  strikes are written) with and without the signed head, against one-row sqlite3 transactions;
  the two ratios side by side are the price of the head (one Ed25519 signature and three small
  statements per transaction).
- ``ledger.verify``: entries per second of a full verify of a ledger without checkpoints.
- ``ledger.verify.checkpoints``: the same number of events with a checkpoint every
  ``events / checkpoints`` events, against the rate without any: a ratio of 0.5 or more is
  "within 2×" (verify is linear in events whatever the number of checkpoints).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path

from ark_lattice import ledger, merkle
from ark_lattice.bench import SILENT, Measurement, Progress
from ark_lattice.checkpoint import Checkpoint, sign_checkpoint
from ark_lattice.identity import Identity
from ark_lattice.store.events import Event, EventKind
from ark_lattice.store.store import NewEvent, Store

__all__ = ["run"]

BATCH = 500
ROUNDS = 5


async def run(
    events: int = 100_000,
    *,
    checkpoints: int = 1000,
    transactions: int = 500,
    progress: Progress = SILENT,
) -> list[Measurement]:
    identity = Identity.generate()
    # Audit decisions are the ledger's highest-volume events, so they are the honest sample.
    data = {"hook": "inbound_packet", "allowed": True, "rules": ["allow-core"], "id": os.urandom(32)}
    event: NewEvent = (EventKind.POLICY_DECISION, "x" * 52, data)
    progress.update(total=6, description=f"appending {events:,} events")
    with tempfile.TemporaryDirectory(prefix="ark-bench-") as tmp:
        root = Path(tmp)
        async with await Store.open(root / "plain.db") as store:
            store.set_signer(identity)
            started = time.perf_counter()
            for i in range(0, events, BATCH):
                await store.append_events([event] * min(BATCH, events - i))
            append_s = time.perf_counter() - started
            sample = (await store.events(limit=1))[0]  # a row of the same shape, for the bound
            progress.advance()
            progress.update(description=f"verifying {events:,} events, no checkpoint")
            plain = await ledger.verify(store, identity.node_id, owner=False)
            progress.advance()

        progress.update(description=f"appending {events:,} events with {checkpoints:,} checkpoints")
        async with await Store.open(root / "anchored.db") as store:
            store.set_signer(identity)
            await _anchored(store, identity, event, events, checkpoints)
            progress.advance()
            progress.update(description=f"verifying {events:,} events, {checkpoints:,} checkpoints")
            anchored = await ledger.verify(store, identity.node_id, owner=False)
            progress.advance()

        progress.update(description=f"{transactions:,} one-event transactions, signed and not")
        # Each transaction waits for an fsync, whose time swings with the disk's other work: the
        # three kinds take turns in rounds, and each keeps its fastest round.
        per_round = max(1, transactions // ROUNDS)
        raw_one_s = signed_s = unsigned_s = float("inf")
        for r in range(ROUNDS):
            raw_one_s = min(raw_one_s, _raw_insert(root / f"raw1-{r}.db", per_round, sample, 1))
            signed_s = min(
                signed_s, await _one_event_transactions(root / f"signed-{r}.db", identity, event, per_round)
            )
            unsigned_s = min(
                unsigned_s, await _one_event_transactions(root / f"unsigned-{r}.db", None, event, per_round)
            )
        transactions = per_round
        progress.advance()
        progress.update(description=f"bound: {events:,} raw sqlite3 inserts")
        raw_s = _raw_insert(root / "raw.db", events, sample, BATCH)
        progress.advance()

    per_tx_ms = (signed_s - unsigned_s) / transactions * 1000
    return [
        Measurement("ledger.append", events / append_s, "events/s", bound=events / raw_s,
                    note=f"bound: sqlite3 executemany of {events} rows of the same size, "
                    f"{BATCH} per transaction; each ledger transaction ends with a signed head"),
        Measurement("ledger.write.signed", transactions / signed_s, "transactions/s",
                    bound=transactions / raw_one_s,
                    note=f"one event per transaction with its signed head; bound: one-row sqlite3 "
                    f"transactions; the head costs {per_tx_ms:.3f} ms per transaction "
                    f"(fastest of {ROUNDS} rounds of {transactions} each)"),
        Measurement("ledger.write.unsigned", transactions / unsigned_s, "transactions/s",
                    bound=transactions / raw_one_s,
                    note="the same transactions by a store without a signer (no head)"),
        Measurement("ledger.verify", plain.events / plain.seconds, "entries/s",
                    note=f"{plain.events} events, no checkpoint: {plain.seconds:.2f} s"),
        Measurement("ledger.verify.checkpoints", anchored.events / anchored.seconds, "entries/s",
                    bound=plain.events / plain.seconds,
                    note=f"{anchored.events} events with {anchored.checkpoints} checkpoints: "
                    f"{anchored.seconds:.2f} s; bound: the same without checkpoints "
                    f"({plain.seconds:.2f} s); ratio >= 0.5 is within 2x"),
    ]


async def _anchored(
    store: Store, identity: Identity, event: NewEvent, events: int, checkpoints: int
) -> None:
    """``events`` events with a signed checkpoint every ``events // checkpoints`` of them, each
    as ``ledger anchor`` writes it (its row and its event), built in one pass."""
    tree = merkle.CompactRange()
    every = max(2, events // max(1, checkpoints))
    origin, name = ledger.checkpoint_origin(identity.node_id), ledger.key_name(identity.node_id)
    written = 0
    while written < events:
        chunk = min(every - 1, events - written)
        for i in range(0, chunk, BATCH):
            for e in await store.append_events([event] * min(BATCH, chunk - i)):
                tree.append(merkle.leaf_hash(e.hash))
        written += chunk
        if written < events:
            checkpoint = Checkpoint(origin, tree.size, tree.root())
            await store.add_checkpoint(tree.size, tree.root(), sign_checkpoint(checkpoint, identity, name))
            tree.append(merkle.leaf_hash((await store.events(limit=1))[0].hash))
            written += 1


async def _one_event_transactions(
    path: Path, identity: Identity | None, event: NewEvent, transactions: int
) -> float:
    async with await Store.open(path) as store:
        store.set_signer(identity)
        await store.append_event(*event)  # the first head is not part of the rate
        started = time.perf_counter()
        for _ in range(transactions):
            await store.append_event(*event)
        return time.perf_counter() - started


def _raw_insert(path: Path, rows: int, sample: Event, batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, ts INTEGER, kind TEXT, subject TEXT,"
        " data BLOB, prev BLOB, hash BLOB)"
    )
    e = sample
    # One row first, untimed, as the ledger's runs have theirs: a new file's first commits grow it.
    conn.execute(
        "INSERT INTO events VALUES (?,?,?,?,?,?,?)", (0, e.ts, e.kind, e.subject, e.data, e.prev, e.hash)
    )
    started = time.perf_counter()
    for i in range(0, rows, batch):
        n = min(batch, rows - i)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?)",
            [(i + k + 1, e.ts, e.kind, e.subject, e.data, e.prev, e.hash) for k in range(n)],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed
