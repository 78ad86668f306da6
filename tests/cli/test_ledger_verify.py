"""`ledger verify` through the real CLI, one test per way a ledger can be damaged or rewritten.

Each case must end the same way: exit 1, one sentence on stderr naming what is wrong, no traceback
and no "internal error", and with ``--json`` the object ``{"ok": false, "entry", "reason"}``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from ark_lattice import ledger
from ark_lattice.encoding import canonical
from ark_lattice.errors import ExitCode
from ark_lattice.home import Home
from ark_lattice.node import LocalNode
from ark_lattice.processes import run_cli
from ark_lattice.store.events import EventKind, entry_hash
from ark_lattice.tiers import TrustTier

CORE = "a" * 52
SANDBOX = "b" * 52


async def _populate(home: Path) -> None:
    node = await LocalNode.init(Home(home), name="alpha")
    try:
        for i in range(5):
            await node.publish(topic="notes", kind="note", body=b"before %d" % i)
        await node.store.add_peer(CORE, tier=TrustTier.CORE)
        await node.store.add_peer(SANDBOX, tier=TrustTier.SANDBOX)
        await node.store.add_strike(SANDBOX, "malformed", "a bad frame")
        await node.store.record_manifest(CORE, b"a manifest of core", 7, "core", [])
        await node.store.next_counter("manifest_seq")
        await ledger.anchor(node.store, node.identity)
        await node.publish(topic="notes", kind="note", body=b"after the first checkpoint")
        await ledger.anchor(node.store, node.identity)
        await node.publish(topic="notes", kind="note", body=b"after the second checkpoint")
    finally:
        await node.close()


@pytest.fixture
def populated(home: Path) -> Path:
    asyncio.run(_populate(home))
    return home


def db(home: Path) -> Path:
    return Home(home).ledger_path


def sql(home: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(db(home))
    try:
        conn.execute(statement, args)
        conn.commit()
    finally:
        conn.close()


def checkpoint_wal(home: Path) -> None:
    """Fold the WAL into the database file, so a scribbled page is the page SQLite reads."""
    conn = sqlite3.connect(db(home))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def keyless_append(
    home: Path, kind: str, subject: str, data: dict, row: str | None = None, *args: object
) -> int:
    """Append a validly hashed event (and its row change), as anyone who can write the file can."""
    conn = sqlite3.connect(db(home))
    try:
        seq, prev, ts = conn.execute("SELECT seq, hash, ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        payload = canonical(data)
        h = entry_hash(seq + 1, ts + 1, kind, subject, payload, prev)
        conn.execute(
            "INSERT INTO events (seq, ts, kind, subject, data, prev, hash) VALUES (?,?,?,?,?,?,?)",
            (seq + 1, ts + 1, kind, subject, payload, prev, h),
        )
        if row is not None:
            conn.execute(row, args)
        conn.commit()
        return seq + 1
    finally:
        conn.close()


def rechain(conn: sqlite3.Connection) -> None:
    """Renumber and re-hash every event from the first, as a forger without the key would."""
    rows = conn.execute("SELECT seq, ts, kind, subject, data FROM events ORDER BY seq").fetchall()
    conn.execute("DELETE FROM events")
    prev = bytes(32)
    for seq, (_, ts, kind, subject, data) in enumerate(rows, start=1):
        h = entry_hash(seq, ts, kind, subject, data, prev)
        conn.execute(
            "INSERT INTO events (seq, ts, kind, subject, data, prev, hash) VALUES (?,?,?,?,?,?,?)",
            (seq, ts, kind, subject, data, prev, h),
        )
        prev = h


def fails(home: Path, entry: str, *words: str, code: int = 1) -> dict:
    """Run `ledger verify --json`: exit ``code`` (1: the ledger does not verify), one sentence, the
    JSON failure object; returns it."""
    result = run_cli(home, "ledger", "verify", "--json")
    stderr = result.stderr.decode()
    assert result.returncode == code, (result.returncode, stderr)
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is False, doc
    assert doc["entry"].startswith(entry), doc
    if code == 1:
        assert lines[0] == f"error: ledger verification failed at {doc['entry']}: {doc['reason']}", lines
    else:
        assert lines[0] == f"error: {doc['reason']}", lines
    for word in words:
        assert word in doc["reason"], doc
    return doc


def test_an_untouched_ledger_verifies_with_its_signed_head(populated):
    result = run_cli(populated, "ledger", "verify", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["entry"] is None and doc["reason"] is None
    assert doc["signed"] == doc["events"] and doc["checkpoints"] == 2 and doc["peers"] == 2


def test_a_value_of_the_wrong_sql_type(populated):
    sql(populated, "UPDATE events SET ts = 'yesterday' WHERE seq = 3")
    fails(populated, "event #3", "ts is text, not integer")


def test_a_blob_stored_as_invalid_utf8_text(populated):
    sql(populated, "UPDATE events SET data = CAST(X'ff00fe80' AS TEXT) WHERE seq = 4")
    fails(populated, "event #4", "data is text, not blob")


def test_a_text_column_holding_invalid_utf8(populated):
    sql(populated, "UPDATE peers SET name = CAST(X'ff80' AS TEXT) WHERE id = ?", CORE)
    fails(populated, f"peer {CORE}", "not valid UTF-8")


def test_a_dropped_table(populated):
    sql(populated, "DROP TABLE peers")
    fails(populated, "the peers table", "missing")


def test_a_scribbled_page(populated):
    checkpoint_wal(populated)
    path = db(populated)
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(page, len(data), page):  # every page but the first (the schema)
        data[offset : offset + page] = b"\x5a" * page
    path.write_bytes(bytes(data))
    doc = fails(populated, "the ledger file")
    assert "integrity check" in doc["reason"] or "malformed" in doc["reason"], doc


def test_a_missing_ledger_file(populated):
    for suffix in ("", "-wal", "-shm"):
        Path(str(db(populated)) + suffix).unlink(missing_ok=True)
    fails(populated, "the ledger file", "missing", "init", code=ExitCode.NO_NODE)
    assert not db(populated).exists()  # verify never creates one
    listed = run_cli(populated, "peers", "list")  # nor does any other command
    assert listed.returncode == ExitCode.NO_NODE and "only `init` creates a ledger" in listed.stderr.decode()
    assert not db(populated).exists()


def test_a_zero_byte_ledger_file(populated):
    for suffix in ("-wal", "-shm"):
        Path(str(db(populated)) + suffix).unlink(missing_ok=True)
    db(populated).write_bytes(b"")
    fails(populated, "the ledger file", "empty", code=ExitCode.NO_NODE)
    assert db(populated).stat().st_size == 0  # never migrated


def test_a_foreign_ledger(populated, homes):
    other = homes("other")
    asyncio.run(_populate(other))
    checkpoint_wal(other)
    for suffix in ("-wal", "-shm"):
        Path(str(db(populated)) + suffix).unlink(missing_ok=True)
    shutil.copy(db(other), db(populated))
    fails(populated, "event #1", "belongs to node")


def test_a_changed_packet_source(populated):
    sql(populated, "UPDATE packets SET source = ? WHERE id = (SELECT MIN(id) FROM packets)", SANDBOX)
    fails(populated, "packet ", "source")


def test_changed_strikes(populated):
    sql(populated, "UPDATE peers SET strikes = 0 WHERE id = ?", SANDBOX)
    fails(populated, f"peer {SANDBOX}", "strikes")


def test_a_rolled_back_peer_manifest_seq(populated):
    sql(populated, "UPDATE peers SET manifest_seq = 3 WHERE id = ?", CORE)
    fails(populated, f"peer {CORE}", "manifest")


def test_a_rolled_back_own_manifest_seq(populated):
    sql(populated, "UPDATE meta SET value = 0 WHERE key = 'manifest_seq'")
    fails(populated, "meta.manifest_seq", "signed head")


def test_a_clock_pushed_to_its_end(populated):
    sql(populated, "UPDATE meta SET value = ? WHERE key = 'hlc'", (1 << 63) - 1)
    fails(populated, "meta.hlc", "out of range")
    body = populated.parent / "body.txt"
    body.write_bytes(b"hello")
    published = run_cli(populated, "packets", "publish", "--topic", "t", "--kind", "note", str(body))
    stderr = published.stderr.decode()
    assert published.returncode == 1 and "Traceback" not in stderr and "internal error" not in stderr
    assert "meta.hlc" in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_a_keyless_append_after_the_last_checkpoint(populated):
    """Un-quarantine nothing, invent nothing: just add a core peer with a valid chain entry."""
    evil = "c" * 52
    seq = keyless_append(
        populated, EventKind.PEER_ADDED, evil, {"tier": "core"},
        "INSERT INTO peers (id, tier, first_seen) VALUES (?, 'core', 0)", evil,
    )
    fails(populated, f"event #{seq}", "not covered by the node's signed head")


def test_a_keyless_append_is_not_signed_over_by_the_next_write(populated):
    """The node's next write records the foreign events in the chain instead of covering them."""
    error = {"code": "x", "reason": "y", "fatal": False}
    seq = keyless_append(populated, EventKind.PROTOCOL_ERROR, "", error)

    async def write() -> None:
        node = await LocalNode.open(Home(populated))  # the key is loaded at the first write
        try:
            await node.store.add_peer("d" * 52)
        finally:
            await node.close()

    asyncio.run(write())
    # The peer's own event comes first; the record of the foreign one ends the transaction.
    fails(populated, f"event #{seq + 2}", f"events #{seq}-#{seq} were written without the node's key")


def test_stripped_checkpoints(populated):
    conn = sqlite3.connect(db(populated))
    conn.execute("DELETE FROM checkpoints")
    conn.execute("DELETE FROM events WHERE kind = ?", (EventKind.CHECKPOINT,))
    rechain(conn)
    conn.commit()
    conn.close()
    fails(populated, "the signed head", "events were removed")


def test_a_rollback_to_an_earlier_checkpoint(populated):
    conn = sqlite3.connect(db(populated))
    [(first_size,)] = conn.execute("SELECT MIN(size) FROM checkpoints").fetchall()
    cut = first_size + 1  # the first checkpoint's own event
    stored_later = conn.execute(
        "SELECT subject FROM events WHERE seq > ? AND kind = ?", (cut, EventKind.PACKET_STORED)
    )
    later = [bytes.fromhex(s) for (s,) in stored_later]
    conn.execute("DELETE FROM events WHERE seq > ?", (cut,))
    conn.execute("DELETE FROM checkpoints WHERE size > ?", (first_size,))
    conn.executemany("DELETE FROM packets WHERE id = ?", [(pid,) for pid in later])
    conn.commit()
    conn.close()
    fails(populated, "the signed head", "events were removed")


def test_a_deleted_head(populated):
    sql(populated, "DELETE FROM meta WHERE key = 'head'")
    fails(populated, "the signed head", "there is none")


def test_a_missing_home_is_one_line_and_a_json_failure(home):
    result = run_cli(home, "ledger", "verify", "--json")
    stderr = result.stderr.decode()
    assert result.returncode == ExitCode.NO_NODE and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and "init" in stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["entry"] == "the node's home" and "init" in doc["reason"]


def test_a_write_with_a_sealed_key_asks_for_it_and_signs(home, tmp_path):
    """Commands that write sign the head: a sealed key is unlocked at the first write only."""
    secret = tmp_path / "secret"
    secret.write_text("correct horse\n")
    assert run_cli(home, "--passphrase-file", str(secret), "init", "--seal").returncode == 0
    peer = "e" * 52
    refused = run_cli(home, "peers", "add", peer, "--tier", "core", input=b"")
    stderr = refused.stderr.decode()
    assert refused.returncode == 2 and "passphrase" in stderr and len(stderr.strip().splitlines()) == 1
    assert run_cli(home, "peers", "list", "--json", input=b"").returncode == 0  # reads never ask
    added = run_cli(home, "--passphrase-file", str(secret), "peers", "add", peer, "--tier", "core")
    assert added.returncode == 0, added.stderr
    verified = run_cli(home, "ledger", "verify", "--json", input=b"")
    assert verified.returncode == 0, verified.stderr
    doc = json.loads(verified.stdout)
    assert doc["ok"] and doc["peers"] == 1 and doc["signed"] == doc["events"]


def test_a_worker_killed_while_it_checks_says_nothing_is_known(populated, monkeypatch):
    """A verifying process killed mid-check (out of memory, say) is not a bad ledger: one line
    that says so, exit 1, and ``"entry": null``; no traceback."""
    import os

    from typer.testing import CliRunner

    from ark_lattice import signatures
    from ark_lattice.cli.app import app

    def killed(self, rows):
        os._exit(9)

    monkeypatch.setattr(signatures, "PROCESSES_FROM", 0)  # processes for these few packets
    monkeypatch.setattr(signatures, "_workers", lambda: 2)
    monkeypatch.setattr(ledger._PacketRows, "__call__", killed)
    runner = CliRunner()
    for args in ([], ["--json"]):
        result = runner.invoke(app, ["--home", str(populated), "ledger", "verify", *args])
        assert result.exit_code == ExitCode.FAILED, result.output
        assert result.stderr.strip() == (
            "error: a process checking packet signatures stopped before it finished (killed, or "
            "out of memory); nothing is known about the packets it held: run the check again"
        )
    assert json.loads(result.stdout) == {"ok": False, "entry": None, "reason": result.stderr[7:].strip()}
