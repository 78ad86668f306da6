"""``bench sync``: ingest rate of a real two-process sync against the raw ingest bound.

The bound is measured in the same run on the same packets: Ed25519 verify + SHA-256 of each
packet and a batched SQLite insert, with no network, no session and no ledger events.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ark_lattice.bench import SILENT, Measurement, Progress
from ark_lattice.home import Home
from ark_lattice.node import LocalNode
from ark_lattice.packet import Packet
from ark_lattice.processes import NodeProcess, wait_for
from ark_lattice.runtime.control import call
from ark_lattice.tiers import TrustTier

__all__ = ["run"]

BATCH = 1000


async def _prepare(
    root: Path, count: int, body_size: int, policy_text: str | None = None
) -> tuple[Home, Home, list[Packet]]:
    a_home, b_home = Home(root / "a"), Home(root / "b")
    a = await LocalNode.init(a_home, name="bench-a")
    b = await LocalNode.init(b_home, name="bench-b", federation_key=a.federation_key())
    if policy_text is not None:
        for node in (a, b):
            await node.set_policy(policy_text, "bench")
    await a.store.add_peer(str(b.node_id), tier=TrustTier.CORE)
    await b.store.add_peer(str(a.node_id), tier=TrustTier.CORE)
    base = await a.store.next_timestamp(a.store.now_ms())
    packets = [
        Packet.create(a.identity, topic="bench", kind="note", body=os.urandom(body_size), created_at=base + i)
        for i in range(count)
    ]
    for i in range(0, count, BATCH):
        await a.store.put_packets(packets[i : i + BATCH])
    await a.close()
    await b.close()
    return a_home, b_home, packets


def _raw_ingest_seconds(path: Path, packets: list[Packet]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE packets (id BLOB PRIMARY KEY, created_at INTEGER, header BLOB, signature BLOB,"
        " body BLOB) WITHOUT ROWID"
    )
    started = time.perf_counter()
    for i in range(0, len(packets), BATCH):
        rows = []
        for p in packets[i : i + BATCH]:
            v = Packet.from_parts(p.header_bytes, p.signature, p.body)  # verify + hash
            rows.append((v.id, v.header.created_at, v.header_bytes, v.signature, v.body))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO packets VALUES (?,?,?,?,?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def run(count: int = 20_000, body_size: int = 1024, *, progress: Progress = SILENT) -> list[Measurement]:
    with tempfile.TemporaryDirectory(prefix="ark-bench-") as tmp:
        root = Path(tmp)
        progress.update(total=3, description=f"signing and storing {count:,} packets")
        a_home, b_home, packets = asyncio.run(_prepare(root, count, body_size))
        progress.advance()
        progress.update(description=f"bound: raw ingest of {count:,} packets")
        raw_s = _raw_ingest_seconds(root / "raw.db", packets)
        progress.advance()
        progress.update(description="sync: starting two nodes")

        def synced_so_far(held: int) -> None:
            progress.update(description=f"sync: {held:,}/{count:,} packets")

        sync_s = _timed_sync(a_home, b_home, count, synced_so_far)
        progress.advance()
    return [
        Measurement(
            "sync.ingest", count / sync_s, "packets/s", bound=count / raw_s,
            note=f"{count} packets of {body_size} B over loopback WebSockets between two processes; "
            "bound: verify + hash + batched insert of the same packets, no network",
        )
    ]


def run_with_policy(
    policy_text: str,
    count: int = 20_000,
    body_size: int = 1024,
    synced_so_far: Callable[[int], None] | None = None,
) -> float:
    """Packets/s of the same sync with both nodes under ``policy_text``."""
    with tempfile.TemporaryDirectory(prefix="ark-bench-") as tmp:
        a_home, b_home, _ = asyncio.run(_prepare(Path(tmp), count, body_size, policy_text))
        return count / _timed_sync(a_home, b_home, count, synced_so_far)


def _timed_sync(
    a_home: Home, b_home: Home, count: int, synced_so_far: Callable[[int], None] | None = None
) -> float:
    """Seconds from B dialling A until B holds ``count`` packets.

    ``synced_so_far`` is told the count each poll has already read, for a progress display; it
    adds no request to the nodes.
    """
    with (
        NodeProcess(a_home.root, "--sync-interval", "3600", wait=False) as a,
        NodeProcess(b_home.root, "--sync-interval", "3600", wait=False) as b,
    ):
        a.wait_started()
        b.wait_started()
        started = time.perf_counter()
        call(b_home.control_path, "add_peer", {"url": a.url})

        def synced() -> bool:
            status = b.current_status()
            if status is None:
                return False
            if synced_so_far is not None:
                synced_so_far(status["packets"])
            return bool(status["packets"] >= count)

        # Polled every 20 ms at most: the poll's granularity is part of the measured time.
        wait_for(synced, timeout=900, what="the sync", max_interval=0.02)
        return time.perf_counter() - started
