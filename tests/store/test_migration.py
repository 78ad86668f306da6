"""Migration 0004_packet_rows on a real old home (data/home-0003.tar.gz, made by make_old_home.py at
8fb63ad): packets, a 128 KiB body, quarantine, peers and two signed checkpoints survive it, and
`ledger verify` passes through the CLI before and after."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from ark_lattice.processes import run_cli

FIXTURE = Path(__file__).parent / "data" / "home-0003.tar.gz"


@pytest.fixture
def old_home(home: Path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(home.parent, filter="data")
    return home.parent / "home"


def packets(path: Path) -> dict[str, tuple]:
    conn = sqlite3.connect(path)
    try:
        return {
            pid.hex(): (header, signature, body, source, received_at, quarantined)
            for pid, header, signature, body, source, received_at, quarantined in conn.execute(
                "SELECT id, header, signature, body, source, received_at, quarantined FROM packets"
            )
        }
    finally:
        conn.close()


def schema(path: Path) -> tuple[set[str], str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        [(table,)] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'packets'").fetchall()
        applied = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
        return names, table, applied
    finally:
        conn.close()


def verify(home: Path) -> dict:
    result = run_cli(home, "ledger", "verify", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_an_old_home_migrates_and_keeps_every_packet(old_home):
    ledger = old_home / "ledger.db"
    fixture = json.loads((old_home / "fixture.json").read_text())
    names, table, applied = schema(ledger)
    assert "WITHOUT ROWID" in table and "0004_packet_rows" not in applied  # truly the old layout
    before = packets(ledger)
    doc = verify(old_home)  # read-only: the old layout verifies as it is, unmigrated
    assert (doc["packets"], doc["checkpoints"], doc["peers"]) == (12, 2, 3)

    listed = run_cli(old_home, "packets", "list", "--json")  # the first writer migrates
    assert listed.returncode == 0, listed.stderr
    names, table, applied = schema(ledger)
    assert applied[-2:] == ["0004_packet_rows", "0005_events_subject_partial"]
    with contextlib.closing(sqlite3.connect(ledger)) as conn:
        [(index,)] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events_subject'")
    assert index.endswith("WHERE kind <> 'packet.stored'")  # the old full index, replaced
    assert "WITHOUT ROWID" not in table and "n           INTEGER PRIMARY KEY" in table
    assert {"packets_order", "packets_topic", "packets_source", "packets_kind", "packet_counts"} <= names
    assert not {"packets_0004"} & names
    assert packets(ledger) == before  # ids, bodies (all still in rows), sources, quarantine states
    assert len(before[fixture["large"]][2]) == 128 * 1024
    quarantined = {pid for pid, row in before.items() if row[5]}
    assert quarantined == set(fixture["quarantined"]) and not before[fixture["promoted"]][5]
    assert set(fixture["published"]) <= set(before)

    doc = verify(old_home)
    assert (doc["packets"], doc["checkpoints"], doc["peers"], doc["body_files"]) == (12, 2, 3, 0)
    assert doc["signed"] == doc["events"]
    shown = run_cli(old_home, "packets", "show", fixture["large"], "--json")
    assert shown.returncode == 0, shown.stderr
    counts = json.loads(run_cli(old_home, "packets", "list", "--json").stdout)
    assert len(counts["items"]) == 12

    # New large bodies go to files beside the migrated ledger; the old ones stay in their rows.
    big = old_home.parent / "big.bin"
    big.write_bytes(os.urandom(200 * 1024))
    published = run_cli(old_home, "packets", "publish", "--topic", "files", "--kind", "document", str(big))
    assert published.returncode == 0, published.stderr
    new_id = published.stdout.decode().split()[-1]
    assert (old_home / "ledger.db-bodies" / new_id[:2] / new_id).read_bytes() == big.read_bytes()
    doc = verify(old_home)
    assert (doc["packets"], doc["body_files"], doc["orphan_bodies"]) == (13, 1, 0)
    assert run_cli(old_home, "ledger", "anchor").returncode == 0
    assert verify(old_home)["checkpoints"] == 3
