"""`ark-lattice ledger compact` through the command tree, on a real old home (tests/store/data/
home-0003.tar.gz) migrated to 0004: the pages the migration freed go back to the disk, every packet
and the ledger's proofs stay, and the refusals are one line and their exit code."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import tarfile
from pathlib import Path

import pytest

from ark_lattice.errors import ExitCode
from ark_lattice.processes import NodeProcess, run_cli
from ark_lattice.store import compaction

FIXTURE = Path(__file__).parents[1] / "store" / "data" / "home-0003.tar.gz"


@pytest.fixture
def migrated(home: Path) -> Path:
    """The old home, migrated by its first command; its dropped packets table left free pages."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(home.parent, filter="data")
    old = home.parent / "home"
    listed = run_cli(old, "packets", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert free_pages(old) > 0
    return old


def free_pages(home: Path) -> int:
    conn = sqlite3.connect(home / "ledger.db")
    try:
        return int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        conn.close()


def packets(home: Path) -> dict[bytes, tuple]:
    conn = sqlite3.connect(home / "ledger.db")
    try:
        query = "SELECT id, n, header, signature, body, source, quarantined FROM packets"
        return {r[0]: r[1:] for r in conn.execute(query)}
    finally:
        conn.close()


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_compact_gives_back_what_the_migration_freed(migrated, cli):
    cli.home = migrated
    free, held, size = free_pages(migrated), packets(migrated), (migrated / "ledger.db").stat().st_size
    doc = cli.json("ledger", "compact")
    assert doc["path"] == str(migrated / "ledger.db")
    assert (doc["free_pages_before"], doc["free_pages_after"]) == (free, 0)
    assert doc["pages_freed"] == doc["pages_before"] - doc["pages_after"] >= free
    assert doc["bytes_before"] == size
    assert doc["bytes_after"] == (migrated / "ledger.db").stat().st_size < size
    assert doc["wal_truncated"] is True
    assert free_pages(migrated) == 0 and packets(migrated) == held
    report = cli.json("ledger", "verify")
    assert report["ok"] and (report["packets"], report["checkpoints"], report["peers"]) == (12, 2, 3)
    fixture = json.loads((migrated / "fixture.json").read_text())
    shown = cli.json("packets", "show", fixture["large"])
    assert shown["size"] == 128 * 1024


def test_compact_says_what_it_did(migrated, cli):
    cli.home = migrated
    free = free_pages(migrated)
    out = cli("ledger", "compact").stdout.strip()
    assert re.fullmatch(
        r"compacted the ledger: [\d.]+ KiB -> [\d.]+ KiB, (\d+) pages \([\d.]+ KiB\) given back to the "
        r"disk in \d+\.\d s", out,
    ), out
    assert int(out.split(", ")[1].split()[0]) >= free
    assert cli("ledger", "compact").stdout.strip().startswith("nothing to give back: the ledger (")


def test_too_little_disk_is_one_line_and_exit_1(migrated, cli, monkeypatch):
    cli.home = migrated
    free, held = free_pages(migrated), packets(migrated)
    asked: list[Path] = []

    def full(directory: Path) -> int:
        asked.append(directory)
        return 10 * 1024 * 1024

    monkeypatch.setattr(compaction, "disk_free", full)
    result = cli("ledger", "compact", "--json", ok=False)
    assert result.exit_code == ExitCode.FAILED == 1
    line = one_error_line(result.stderr)
    assert re.fullmatch(
        r"error: compacting the ledger needs about [\d.]+ MiB free in .+ \(a compacted copy and its "
        r"write-ahead log\) and there is 10\.0 MiB; nothing was changed", line,
    ), line
    assert result.stdout == ""
    assert asked == [migrated]
    assert free_pages(migrated) == free and packets(migrated) == held


def test_refused_while_the_node_runs(migrated):
    free = free_pages(migrated)
    with NodeProcess(migrated, "--no-mdns", "--no-multicast"):
        result = run_cli(migrated, "ledger", "compact")
        assert result.returncode == ExitCode.USAGE, result.stderr
        line = one_error_line(result.stderr.decode())
        assert line == (
            f"error: a node is running in {migrated}; stop it first, since compacting holds the ledger's "
            "write lock for as long as it copies the ledger"
        )
        assert free_pages(migrated) == free
    done = run_cli(migrated, "ledger", "compact")  # stopped: now it may
    assert done.returncode == 0, done.stderr
    assert free_pages(migrated) == 0


def test_the_command_that_migrates_says_compact_would_help_and_compact_does_not(homes, monkeypatch, caplog):
    """The hint is a warning of ``ark_lattice.store`` (stderr in a real CLI process, caplog here)."""
    from typer.testing import CliRunner

    from ark_lattice.cli.app import app

    def hints() -> list[str]:
        return [r.getMessage() for r in caplog.records if "`ark-lattice ledger compact`" in r.getMessage()]

    monkeypatch.setattr(compaction, "RECLAIM_MIN_BYTES", 64 * 1024)  # the fixture is small
    olds = []
    for name in ("listed", "compacted"):
        with tarfile.open(FIXTURE) as tar:
            tar.extractall(homes(name), filter="data")
        olds.append(homes(name) / "home")
    runner = CliRunner()
    caplog.set_level(logging.WARNING, logger="ark_lattice.store")
    listed = runner.invoke(app, ["--home", str(olds[0]), "packets", "list", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)
    [hint] = hints()
    assert "after migration 0005_events_subject_partial" in hint and str(olds[0] / "ledger.db") in hint
    caplog.clear()
    again = runner.invoke(app, ["--home", str(olds[0]), "packets", "list", "--json"])
    assert again.exit_code == 0 and hints() == []  # once: only the command that migrated
    compacted = runner.invoke(app, ["--home", str(olds[1]), "ledger", "compact"])
    assert compacted.exit_code == 0 and hints() == []  # migrated too, but compacting is the answer
    assert compacted.stdout.startswith("compacted the ledger: ")
    assert free_pages(olds[1]) == 0
