"""``bench sync``: ingest rate of a real two-process sync against the raw ingest bound.

The bound is measured in the same run on the same packets: Ed25519 verify + SHA-256 of each
packet and a batched SQLite insert, with no network, no session and no ledger events.

The cost of metrics is measured in the same run too: the same sync with ``--metrics`` on the
receiver, scraped every second, against the same sync without (``sync.metrics_on``; the target is a
ratio of at least 0.95). The two alternate off, on, on, off on copies of the same prepared homes,
so neither gets the warmer machine. The counters are kept either way (``federation metrics`` reads them
without a scraper, and counting is a few microseconds per action), so the ratio is the cost of the
endpoint and of a scrape a second.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ark_lattice.bench import SILENT, Measurement, Progress
from ark_lattice.bench.attack import Attack, AttackPlan
from ark_lattice.home import Home
from ark_lattice.node import LocalNode
from ark_lattice.packet import Packet
from ark_lattice.processes import NodeProcess, wait_for
from ark_lattice.runtime.control import call
from ark_lattice.tiers import TrustTier

__all__ = ["run"]

BATCH = 1000
SCRAPE_INTERVAL = 1.0  # seconds between scrapes of the receiver while metrics are on
METRICS_ORDER = (False, True, True, False)  # off, on, on, off: the order favours neither


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
        progress.update(total=2 + len(METRICS_ORDER), description=f"signing and storing {count:,} packets")
        a_home, b_home, packets = asyncio.run(_prepare(root, count, body_size))
        progress.advance()
        progress.update(description=f"bound: raw ingest of {count:,} packets")
        raw_s = _raw_ingest_seconds(root / "raw.db", packets)
        progress.advance()
        seconds: dict[bool, float] = {False: 0.0, True: 0.0}
        for i, metrics in enumerate(METRICS_ORDER):
            label = "sync, metrics on" if metrics else "sync"
            progress.update(description=f"{label}: starting two nodes")

            def synced_so_far(held: int, label: str = label) -> None:
                progress.update(description=f"{label}: {held:,}/{count:,} packets")

            run_root = root / f"run{i}"  # a fresh copy of the unsynced homes for every run
            a_run, b_run = Home(run_root / "a"), Home(run_root / "b")
            shutil.copytree(a_home.root, a_run.root)
            shutil.copytree(b_home.root, b_run.root)
            seconds[metrics] += _timed_sync(a_run, b_run, count, synced_so_far, metrics=metrics)
            shutil.rmtree(run_root)
            progress.advance()
    runs = METRICS_ORDER.count(False)
    off, on = count * runs / seconds[False], count * METRICS_ORDER.count(True) / seconds[True]
    return [
        Measurement(
            "sync.ingest", off, "packets/s", bound=count / raw_s,
            note=f"{count} packets of {body_size} B over loopback WebSockets between two processes "
            f"(mean of {runs} runs); bound: verify + hash + batched insert of the same packets, no network",
        ),
        Measurement(
            "sync.metrics_on", on, "packets/s", bound=off,
            note=f"the same sync with --metrics on the receiver, scraped every {SCRAPE_INTERVAL:g} s; "
            "bound: metrics off in the same run (runs alternate off, on, on, off); target ratio >= 0.95. "
            "The counters themselves run either way (`federation metrics` reads them): this is the cost of "
            "serving and scraping them",
        ),
    ]


ATTACK_ORDER = (False, True, True, False)  # clean, attacked, attacked, clean: the order favours neither


def run_under_attack(
    count: int = 20_000, body_size: int = 1024, *, progress: Progress = SILENT
) -> list[Measurement]:
    """``bench sync --under-attack``: the same sync, clean and while strangers and a keyed member
    attack the node being synced from (bench/attack.py); the ratio attacked/clean (goal >= 0.7)."""
    from ark_lattice.bench.attack import AttackPlan

    with tempfile.TemporaryDirectory(prefix="ark-bench-") as tmp:
        root = Path(tmp)
        progress.update(total=1 + len(ATTACK_ORDER), description=f"signing and storing {count:,} packets")
        a_home, b_home, _ = asyncio.run(_prepare(root, count, body_size))
        progress.advance()
        seconds: dict[bool, float] = {False: 0.0, True: 0.0}
        attacks: list[dict[str, int]] = []
        for i, attacked in enumerate(ATTACK_ORDER):
            label = "sync under attack" if attacked else "sync"

            def synced_so_far(held: int, label: str = label) -> None:
                progress.update(description=f"{label}: {held:,}/{count:,} packets")

            run_root = root / f"run{i}"
            a_run, b_run = Home(run_root / "a"), Home(run_root / "b")
            shutil.copytree(a_home.root, a_run.root)
            shutil.copytree(b_home.root, b_run.root)
            counts: dict[str, int] = {}
            seconds[attacked] += _timed_sync(
                a_run, b_run, count, synced_so_far, attack=AttackPlan() if attacked else None, counts=counts
            )
            if attacked:
                attacks.append(counts)
            shutil.rmtree(run_root)
            progress.advance()
    clean = count * ATTACK_ORDER.count(False) / seconds[False]
    under = count * ATTACK_ORDER.count(True) / seconds[True]
    connections = sum(a.get("connections", 0) for a in attacks) // max(1, len(attacks))
    plan = AttackPlan()
    return [
        Measurement(
            "sync.under_attack", under, "packets/s", bound=clean,
            note=f"{count} packets of {body_size} B between two processes while {plan.parked} parked "
            f"big frames, {plan.silent} silent sockets, {plan.pingers} ping floods, {plan.churners} "
            f"keyless handshakes and {plan.members} keyed member sending tampered frames hit the node "
            f"synced from (about {connections} connections per run); bound: the same sync without them "
            "in the same run (clean, attacked, attacked, clean); goal ratio >= 0.7",
        ),
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
    a_home: Home,
    b_home: Home,
    count: int,
    synced_so_far: Callable[[int], None] | None = None,
    *,
    metrics: bool = False,
    attack: AttackPlan | None = None,
    counts: dict[str, int] | None = None,
) -> float:
    """Seconds from B dialling A until B holds ``count`` packets.

    ``synced_so_far`` is told the count each poll has already read, for a progress display; it
    adds no request to the nodes. ``metrics``: B serves metrics on a loopback port and is scraped
    every SCRAPE_INTERVAL seconds while it syncs, as Prometheus would.
    """
    extra = ("--metrics", "127.0.0.1:0") if metrics else ()
    with (
        NodeProcess(a_home.root, "--sync-interval", "3600", wait=False) as a,
        NodeProcess(b_home.root, "--sync-interval", "3600", *extra, wait=False) as b,
    ):
        a.wait_started()
        b.wait_started()
        endpoint = call(b_home.control_path, "metrics")["endpoint"] if metrics else None
        attacker = None
        if attack is not None:  # strangers and a keyed member on the node B syncs from
            key = (a_home.root / "federation.key").read_bytes()
            attacker = Attack("127.0.0.1", int(a.url.rsplit(":", 1)[1]), attack, federation_key=key).start()
            wait_for(lambda: attacker.counts_now()["connections"] >= 50, timeout=60, what="the attack")
        scraped = [time.perf_counter()]
        started = time.perf_counter()
        call(b_home.control_path, "add_peer", {"url": a.url})

        def synced() -> bool:
            if endpoint is not None and time.perf_counter() - scraped[0] >= SCRAPE_INTERVAL:
                scraped[0] = time.perf_counter()
                with urllib.request.urlopen(endpoint, timeout=30) as response:
                    response.read()
            status = b.current_status()
            if status is None:
                return False
            if synced_so_far is not None:
                synced_so_far(status["packets"])
            return bool(status["packets"] >= count)

        # Polled every 20 ms at most: the poll's granularity is part of the measured time.
        try:
            wait_for(synced, timeout=900, what="the sync", max_interval=0.02)
            return time.perf_counter() - started
        finally:
            if attacker is not None:
                final = attacker.stop()
                if counts is not None:
                    counts.update(final)
