"""The store access rule with real processes: CLI writers beside a busy node, a kill -9 right after
`federation status` answered, and a write lock held by another process (store/access.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.processes import NodeProcess, run_cli, wait_for
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store

from conftest import fill, init_federation, items, packet_ids, set_tier

PROBLEMS = ("Traceback", "LedgerError", "stayed locked", "internal error", "audit event kept",
            "could not write the audit trail", "failed")


def count_packets(home: Path) -> int:
    conn = sqlite3.connect(home / "ledger.db", timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM packets").fetchone()[0])
    finally:
        conn.close()


def audited_and_stored(home: Path, source: str) -> tuple[set[str], set[str]]:
    """(packets whose inbound decision is in the ledger, packets stored from ``source``)."""

    async def read() -> tuple[set[str], set[str]]:
        async with await Store.open(Home(home).ledger_path) as store:
            allowed = {
                record["subject"]
                for event in await store.events(kind=EventKind.POLICY_DECISION)
                for record in event.fields["decisions"]
                if record["hook"] == "inbound_packet" and record["peer"] == source and record["allowed"]
            }
            stored = {row[0].hex() async for row in store.iter_rows(
                f"SELECT id FROM packets WHERE source = '{source}'")}
        return allowed, stored

    return asyncio.run(read())


def test_cli_writers_looping_beside_a_busy_node_lose_nothing(homes, start_node):
    ids = init_federation(homes, "a", "b")
    a, b = homes("a"), homes("b")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    from_a = set(fill(a, 12_000, "from/a"))
    node_a = start_node(a)
    node_b = start_node(b)

    files = homes("files")
    files.mkdir()
    for i in range(40):
        (files / f"note-{i:02d}.txt").write_bytes(b"note %d " % i * 20)
    published: set[str] = set()
    added: set[str] = set()
    failures: list[str] = []
    writes, rounds = [0], [0, 0]
    lock = threading.Lock()
    stop = threading.Event()
    started = time.monotonic()

    def cli_loop(n: int) -> None:
        """One operator's CLI writes on B, again and again: a directory, stdin, a new peer."""
        while not stop.is_set():
            peer = str(Identity.generate().node_id)
            for args in (
                ("packets", "publish", "--topic", f"cli/{n}", "--json", str(files)),
                ("packets", "publish", "--topic", "cli/one", "-"),
                ("peers", "add", peer, "--tier", "sandbox"),
            ):
                result = run_cli(b, *args, input=b"one %d %d" % (n, rounds[n]))
                err = result.stderr.decode(errors="replace")
                with lock:
                    writes[0] += 1
                    if result.returncode != 0 or err:
                        failures.append(f"{' '.join(args[:2])}: exit {result.returncode}: {err}")
                    elif args[1] == "publish" and "--json" in args:
                        published.update(doc["id"] for doc in items(json.loads(result.stdout)))
                    elif args[1] == "publish":
                        published.add(result.stdout.decode().strip())
                    else:
                        added.add(peer)
            rounds[n] += 1

    # An operator watching: status reads on B all along, while B and the CLI write.
    polls, slowest, unanswered = [0], [0.0], [0]

    def poll() -> None:
        while not stop.is_set():
            asked = time.monotonic()
            if node_b.ask("status", timeout=10) is None:
                unanswered[0] += 1
            slowest[0] = max(slowest[0], time.monotonic() - asked)
            polls[0] += 1

    threads = [threading.Thread(target=cli_loop, args=(n,), daemon=True) for n in (0, 1)]
    threads.append(threading.Thread(target=poll, daemon=True))
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: rounds[0] >= 1, timeout=120, what="a first round of CLI writes")
        # B dials A while the CLI loops run: B stores A's packets beside the CLI's writes.
        assert run_cli(b, "federation", "add-peer", node_a.url).returncode == 0
        wait_for(lambda: from_a <= packet_ids(b), timeout=240, what="B to catch up with A")
        synced_at = time.monotonic() - started
        wait_for(lambda: min(rounds) >= 4 or failures, timeout=240, what="four rounds of each CLI loop")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert failures == []
    assert unanswered[0] == 0 and polls[0] > 0
    # What the CLI wrote on B reaches A (live push after the CLI's nudge, or the next sync).
    wait_for(lambda: published <= packet_ids(a), timeout=120, what="B's CLI packets at A")
    access = node_b.ask("status")["store_access"]
    for node in (node_a, node_b):
        assert node.stop() == 0
        log = node.output()
        assert not [p for p in PROBLEMS if p in log], log[-3000:]
    # No lost audit event: every packet a node stored from its peer has its policy decision.
    for home, peer, expected in ((b, ids["a"], from_a), (a, ids["b"], published)):
        allowed, stored = audited_and_stored(home, peer)
        assert expected <= stored
        assert stored <= allowed, f"{len(stored - allowed)} stored packet(s) without their audit record"
        verify = run_cli(home, "ledger", "verify")
        assert verify.returncode == 0, verify.stderr
    peers_at_b = {p["id"] for p in items(json.loads(run_cli(b, "peers", "list", "--json").stdout))}
    assert added <= peers_at_b  # no CLI write was lost either
    print(f"\n{sum(rounds)} rounds, {writes[0]} CLI writes ({len(published)} packets, {len(added)} peers) "
          f"by two loops beside the sync of "
          f"{len(from_a)} packets in {synced_at:.1f} s; {polls[0]} status polls, "
          f"slowest {slowest[0] * 1000:.0f} ms; node B's store: {access}")


def test_a_node_killed_right_after_status_keeps_every_packet_it_reported(homes, start_node):
    ids = init_federation(homes, "a", "b")
    a, b = homes("a"), homes("b")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    total = 12_000
    fill(a, total, "bulk")
    node_a = start_node(a)
    node_b = start_node(b)
    assert run_cli(b, "federation", "add-peer", node_a.url).returncode == 0
    started = time.monotonic()
    trials = []
    for threshold in range(700, 12_000, 1_500):  # eight trials at different points
        reported = 0

        def past_threshold(node: NodeProcess = node_b, at: int = threshold) -> bool:
            nonlocal reported
            status = node.ask("status", timeout=10)
            if status is None:
                return False
            reported = int(status["packets"])
            return reported >= at

        wait_for(past_threshold, timeout=120, max_interval=0.02, what=f"B to report {threshold} packets")
        node_b.proc.kill()  # kill -9, right after the answer
        node_b.proc.wait()
        node_b.close(grace=0)
        held = count_packets(b)
        trials.append((reported, held))
        assert held >= reported, f"status reported {reported} packets, the ledger holds {held} after kill -9"
        if held >= total:
            break
        node_b = start_node(b)  # it redials A (the endpoint is in its ledger) and carries on
    wait_for(lambda: count_packets(b) >= total, timeout=180, what="B to hold all of A's packets")
    node_b.stop()
    verify = run_cli(b, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr
    print(f"\nkill -9 trials (reported, held after restart): {trials}; "
          f"{time.monotonic() - started:.1f} s in all")


def test_a_write_lock_held_by_another_process_does_not_freeze_the_node(homes, start_node):
    (home,) = (homes("a"),)
    init_federation(homes, "a")
    fill(home, 50, "bulk")
    node = start_node(home)
    answers: list[Any] = []
    conn = sqlite3.connect(home / "ledger.db", isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")  # a CLI-like writer that holds the lock for seconds
        conn.execute("INSERT INTO meta (key, value) VALUES ('held', 1)")
        held_since = time.monotonic()
        # The node has a write to do meanwhile (`federation add-peer` records the endpoint).
        writer = threading.Thread(target=lambda: answers.append(
            node.ask("add_peer", {"url": "ws://127.0.0.1:9"}, timeout=30)))
        writer.start()
        slowest = 0.0
        while time.monotonic() - held_since < 3.0:
            asked = time.monotonic()
            status = node.ask("status", timeout=5)
            slowest = max(slowest, time.monotonic() - asked)
            assert status is not None and status["packets"] == 50
        assert answers == []  # the node's write is still waiting for the lock
        conn.execute("COMMIT")
    finally:
        conn.close()
    writer.join(timeout=30)
    # Reads never waited for the lock: every status answered well within a second.
    assert slowest < 1.0, slowest
    # The node's write went through once the lock was free, after retries on the loop.
    access = node.ask("status")["store_access"]
    assert answers and access["busy_retries"] > 0 and access["gave_up"] == 0, (answers, access)
    endpoints = {e["url"] for e in node.ask("status")["dialling"]}
    assert "ws://127.0.0.1:9" in endpoints
    assert node.stop() == 0
    assert "Traceback" not in node.output()
    print(f"\nslowest status while another process held the write lock: {slowest * 1000:.0f} ms; {access}")
