"""``bench sync``: the two-node sync against bare primitives, run tiny; and the bound's own parts.

No timed assertion: the figures are whatever this machine gives; what is checked is that each one
is there, is a ratio of value over a bound measured in the same run, and that the bound does the
work it says it does (verify the exact signed bytes, hash, insert; open, hash, write and fsync).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from nacl.exceptions import BadSignatureError

from ark_lattice.bench.sync import (
    StoredCount,
    _bare_ingest,
    _bare_large,
    _prepare,
    _project_ingest,
)
from ark_lattice.packet import Packet
from ark_lattice.processes import run_cli


def _rows(result) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return {row["name"]: row for row in map(json.loads, result.stdout.decode().splitlines())}


def _is_ratio(row: dict) -> None:
    assert row["value"] > 0 and row["bound"] > 0
    assert row["ratio"] == pytest.approx(row["value"] / row["bound"], rel=1e-3)


def test_bench_sync_reports_small_and_large_ingest_against_bare_primitives(home: Path) -> None:
    args = ("bench", "sync", "--packets", "200", "--large-packets", "3", "--json")
    rows = _rows(run_cli(home, *args, timeout=300))
    assert list(rows) == [
        "sync.ingest",
        "sync.ingest.project_code",
        "sync.cpu_per_packet",
        "sync.metrics_on",
        "sync.large.ingest",
        "sync.large.cpu_per_packet",
    ]
    for row in rows.values():
        _is_ratio(row)
    assert rows["sync.ingest"]["unit"] == rows["sync.large.ingest"]["unit"] == "packets/s"
    assert rows["sync.cpu_per_packet"]["unit"] == rows["sync.large.cpu_per_packet"]["unit"] == "us/packet"
    assert "crypto_sign_open" in rows["sync.ingest"]["note"]
    assert "XChaCha20-Poly1305" in rows["sync.large.ingest"]["note"]
    # The old bound is the second figure, for the same sync.
    assert rows["sync.ingest.project_code"]["value"] == rows["sync.ingest"]["value"]
    assert rows["sync.metrics_on"]["bound"] == rows["sync.ingest"]["value"]


def test_bench_sync_without_large_packets_reports_the_small_job_only(home: Path) -> None:
    args = ("bench", "sync", "--packets", "100", "--large-packets", "0", "--json")
    rows = _rows(run_cli(home, *args, timeout=300))
    assert not [name for name in rows if name.startswith("sync.large")]
    assert "sync.ingest" in rows


def test_bench_sync_rss_reports_peak_rss_after_n_and_ten_times_n_packets(home: Path) -> None:
    rows = _rows(run_cli(home, "bench", "sync", "--rss", "100", "--json", timeout=300))
    assert list(rows) == ["sync.rss.100", "sync.rss.1000"]
    small, large = rows["sync.rss.100"], rows["sync.rss.1000"]
    assert small["unit"] == large["unit"] == "MB" and small["value"] > 10  # a Python process, in MB
    assert large["bound"] == small["value"]
    _is_ratio(large)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, list[Packet]]:
    root = tmp_path_factory.mktemp("prepared")
    _a, b_home, packets = asyncio.run(_prepare(root, 30, 64))
    return b_home.ledger_path, packets


def test_the_bare_bound_stores_every_packet_under_its_id(prepared, tmp_path: Path) -> None:
    _ledger, packets = prepared
    wall, cpu = _bare_ingest(tmp_path / "bare.db", packets)
    assert wall > 0 and cpu > 0
    with sqlite3.connect(tmp_path / "bare.db") as db:
        stored = dict(db.execute("SELECT id, body FROM packets"))
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert stored == {p.id: p.body for p in packets}


def test_the_bare_bound_verifies_the_exact_signed_bytes(prepared, tmp_path: Path) -> None:
    _ledger, packets = prepared
    p = packets[7]
    tampered = Packet(p.id, p.header, p.header_bytes, bytes([p.signature[0] ^ 1]) + p.signature[1:], p.body)
    with pytest.raises(BadSignatureError):
        _bare_ingest(tmp_path / "bare.db", [*packets[:7], tampered])


def test_the_project_bound_inserts_into_a_table_made_with_the_nodes_own_ddl(prepared, tmp_path: Path) -> None:
    ledger, packets = prepared
    assert _project_ingest(tmp_path / "project.db", ledger, packets) > 0
    with sqlite3.connect(ledger) as node, sqlite3.connect(tmp_path / "project.db") as copy:
        # The table and its indexes; the node's count triggers write a table the bound does not have.
        ddl = (
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'packets'"
            " AND type IN ('table', 'index') ORDER BY name"
        )
        assert copy.execute(ddl).fetchall() == node.execute(ddl).fetchall()
        assert copy.execute("SELECT count(*) FROM packets").fetchone() == (len(packets),)


def test_the_large_bound_writes_and_fsyncs_every_body(tmp_path: Path) -> None:
    wall, cpu = _bare_large(tmp_path / "large.bin", 3, 4096)
    assert wall > 0 and cpu > 0
    assert (tmp_path / "large.bin").stat().st_size == 3 * 4096


def test_the_stored_count_counts_only_packet_events_and_each_once(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL)")
        conn.executemany("INSERT INTO events (kind) VALUES (?)", [("packet.stored",), ("peer.added",)] * 3)
    count = StoredCount(db)
    assert count.now() == 3 and count.now() == 3
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO events (kind) VALUES ('packet.stored')")
    assert count.now() == 4
    count.close()
