"""Large bodies in files beside the ledger (store/bodies.py): written before their rows, read back,
removed on rollback, orphans collected at open, covered by `ledger verify` and `ledger backup`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from ark_lattice import ledger
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.node import LocalNode
from ark_lattice.packet import Packet
from ark_lattice.processes import run_cli
from ark_lattice.store import inline
from ark_lattice.store.bodies import BODY_FILE_MIN
from ark_lattice.store.store import Store

AUTHOR = Identity.generate()


def packet(i: int, size: int) -> Packet:
    body = os.urandom(size)  # incompressible, distinct: what a peer sends
    return Packet.create(AUTHOR, topic="files", kind="document", body=body, created_at=i)


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "ledger.db")
    yield s
    await s.close()


def body_column(path: Path, packet_id: bytes) -> bytes | None:
    conn = sqlite3.connect(path)
    try:
        [(body,)] = conn.execute("SELECT body FROM packets WHERE id = ?", (packet_id,)).fetchall()
        return body
    finally:
        conn.close()


def files_under(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_a_large_body_is_a_file_named_by_its_row_and_reads_back(store):
    large, small, edge = packet(1, BODY_FILE_MIN + 1000), packet(2, 1024), packet(3, BODY_FILE_MIN)
    await store.put_packets([large, small, edge])
    root = store.path.with_name("ledger.db-bodies")
    assert store.bodies is not None and store.bodies.root == root
    # <ledger>-bodies/<2 hex>/<64 hex id>, and no temporary file left behind
    assert files_under(root) == sorted([large.hex_id, edge.hex_id])
    assert (root / large.hex_id[:2] / large.hex_id).read_bytes() == large.body
    assert body_column(store.path, large.id) is None and body_column(store.path, edge.id) is None
    assert body_column(store.path, small.id) == small.body  # small bodies stay in their rows
    assert (await store.get_packet(large.id)).packet.body == large.body
    got = {s.packet.id: s.packet.body for s in await store.get_packets([large.id, small.id, edge.id])}
    assert got == {large.id: large.body, small.id: small.body, edge.id: edge.body}
    assert [s.packet.body for s in await store.list_packets()] == [edge.body, small.body, large.body]
    pushed, _ = await store.stored_since(0)
    assert {s.packet.body for s in pushed} == {large.body, small.body, edge.body}
    assert store.row_body(large.id, None) == large.body


async def test_a_batch_of_more_files_than_are_opened_at_once_is_written_in_full(store):
    from ark_lattice.store.bodies import OPEN_AT_ONCE

    batch = [packet(i, BODY_FILE_MIN) for i in range(OPEN_AT_ONCE + 3)]
    await store.put_packets(batch)
    root = store.path.with_name("ledger.db-bodies")
    assert files_under(root) == sorted(p.hex_id for p in batch)
    got = {s.packet.id: s.packet.body for s in await store.get_packets([p.id for p in batch])}
    assert got == {p.id: p.body for p in batch}


async def test_a_missing_body_file_is_reported_when_several_are_read(store):
    from ark_lattice.errors import LedgerCorrupt

    kept, lost = packet(1, BODY_FILE_MIN * 2), packet(2, BODY_FILE_MIN * 2)
    await store.put_packets([kept, lost])
    root = store.path.with_name("ledger.db-bodies")
    (root / lost.hex_id[:2] / lost.hex_id).unlink()
    # Read ahead together (bodies.py reads the files ahead of reading them one by one): the file
    # that is gone is still named, not skipped.
    with pytest.raises(LedgerCorrupt, match=f"its body file .*{lost.hex_id} is missing"):
        await store.get_packets([kept.id, lost.id])
    assert [s.packet.body for s in await store.get_packets([kept.id])] == [kept.body]


async def test_the_simulators_memory_ledger_keeps_every_body_in_its_row():
    s = await Store.open(Path(":memory:"), connect=inline.connect)
    try:
        big = packet(1, BODY_FILE_MIN * 2)
        await s.put_packets([big])
        assert s.bodies is None
        [(body,)] = inline.rows(s, "SELECT body FROM packets")
        assert body == big.body
        assert (await s.get_packet(big.id)).packet.body == big.body
    finally:
        await s.close()


async def test_a_rollback_leaves_no_body_file(store):
    root = store.path.with_name("ledger.db-bodies")
    big = packet(1, BODY_FILE_MIN * 2)
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.put_packets([big])
            assert files_under(root) == [big.hex_id]  # written before the row, in the transaction
            raise RuntimeError("abandon")
    assert files_under(root) == []
    # A savepoint rolled back inside a transaction that commits: its file goes, the others stay.
    kept, dropped = packet(2, BODY_FILE_MIN * 2), packet(3, BODY_FILE_MIN * 2)
    async with store.transaction():
        await store.put_packets([kept])
        with pytest.raises(RuntimeError):
            async with store.transaction():
                await store.put_packets([dropped])
                raise RuntimeError("abandon the savepoint")
    assert files_under(root) == [kept.hex_id]
    assert await store.packet_count() == 1


async def test_a_batch_whose_disk_fills_half_way_leaves_no_file_and_says_so(store, monkeypatch):
    import errno

    from ark_lattice.errors import LedgerError
    from ark_lattice.store import bodies

    batch = [packet(i, BODY_FILE_MIN * 2) for i in range(6)]
    real = bodies.BodyFiles._write_one

    def fill_up(self, packet_id, body, written):
        if packet_id == batch[3].id:  # the three before it are written, not yet fsynced
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, packet_id, body, written)

    monkeypatch.setattr(bodies.BodyFiles, "_write_one", fill_up)
    with pytest.raises(LedgerError, match="the disk is full; nothing was written"):
        await store.put_packets(batch)
    assert files_under(store.path.with_name("ledger.db-bodies")) == []
    assert await store.packet_count() == 0


async def test_orphans_and_temporary_files_are_removed_when_the_store_opens(tmp_path):
    path = tmp_path / "ledger.db"
    named = packet(1, BODY_FILE_MIN * 2)
    s = await Store.open(path)
    s.set_signer(AUTHOR)  # a signed head, as a node's ledger has
    await s.put_packets([named])
    await s.close()
    root = path.with_name("ledger.db-bodies")
    # What a writer killed between its file and its commit leaves, and one killed mid-write.
    orphan = packet(2, BODY_FILE_MIN * 2)
    (root / orphan.hex_id[:2]).mkdir(exist_ok=True)
    (root / orphan.hex_id[:2] / orphan.hex_id).write_bytes(orphan.body)
    temp = root / named.hex_id[:2] / (named.hex_id + ".tmp")  # an older version's temporary name
    temp.write_bytes(b"half a body")
    # A writer killed mid-write leaves its file torn under its own name: no row names it.
    torn = packet(3, BODY_FILE_MIN * 2)
    (root / torn.hex_id[:2]).mkdir(exist_ok=True)
    (root / torn.hex_id[:2] / torn.hex_id).write_bytes(torn.body[: BODY_FILE_MIN // 2])
    # `ledger verify` (a reader) counts them and passes: a crash is not a corruption.
    s = await Store.open_readonly(path)
    try:
        report = await ledger.verify(s, AUTHOR.node_id, owner=False)
    finally:
        await s.close()
    assert (report.body_files, report.orphan_bodies) == (1, 3)
    s = await Store.open(path)
    try:
        assert files_under(root) == [named.hex_id]
        assert (await s.get_packet(named.id)).packet.body == named.body
        # The orphans' packets can still arrive later: they are written again, in full.
        await s.put_packets([orphan, torn])
        assert (await s.get_packet(orphan.id)).packet.body == orphan.body
        assert (await s.get_packet(torn.id)).packet.body == torn.body
    finally:
        await s.close()


async def test_packet_counts_follow_inserts_and_promotions(store):
    await store.put_packets([packet(1, 10), packet(2, 10)])
    held = packet(3, 10)
    await store.put_packets([held, packet(4, BODY_FILE_MIN)], source="b" * 52, quarantined=True)
    assert (await store.packet_count(), await store.packet_count(quarantined=True)) == (4, 2)
    await store.promote(held.id)
    assert (await store.packet_count(quarantined=True), await store.packet_count(quarantined=False)) == (1, 3)
    counted = "SELECT total, quarantined FROM packet_counts WHERE one = 0"  # what packet_count reads
    plan = [r[-1] for r in store_plan(store.path, counted)]
    assert not any("SCAN" in step for step in plan)


def store_plan(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    finally:
        conn.close()


async def test_alerts_are_listed_from_the_kind_index_not_a_scan(tmp_path):
    await (await Store.open(tmp_path / "ledger.db")).close()
    plan = [r[-1] for r in store_plan(
        tmp_path / "ledger.db",
        "SELECT id FROM packets WHERE kind = 'alert' ORDER BY created_at DESC, id DESC",
    )]
    assert any("packets_kind" in step for step in plan) and not any("TEMP B-TREE" in step for step in plan)


# -- through the CLI ----------------------------------------------------------------------------


@pytest.fixture
def with_large(home: Path) -> tuple[Path, str]:
    async def go() -> str:
        node = await LocalNode.init(Home(home), name="alpha")
        try:
            await node.publish(topic="notes", kind="note", body=b"small")
            stored = await node.publish(topic="files", kind="document", body=os.urandom(BODY_FILE_MIN * 3))
            await ledger.anchor(node.store, node.identity)
            return stored.hex_id
        finally:
            await node.close()

    return home, asyncio.run(go())


def body_file(home: Path, hex_id: str) -> Path:
    return Home(home).ledger_path.with_name("ledger.db-bodies") / hex_id[:2] / hex_id


def verify_fails(home: Path, hex_id: str, *words: str) -> None:
    result = run_cli(home, "ledger", "verify", "--json")
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["entry"] == f"packet {hex_id}", doc
    for word in words:
        assert word in doc["reason"], doc


def test_verify_checks_every_body_file(with_large):
    home, hex_id = with_large
    result = run_cli(home, "ledger", "verify", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["packets"], doc["body_files"], doc["orphan_bodies"]) == (2, 1, 0)
    path = body_file(home, hex_id)
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 1
    path.write_bytes(bytes(damaged))
    verify_fails(home, hex_id, "body file", str(path), "does not match")
    path.write_bytes(original[:-1])  # truncated
    verify_fails(home, hex_id, "body file", "does not match")
    path.unlink()
    verify_fails(home, hex_id, "body file", "missing")
    # A reader of the packet says the same in one sentence, never a traceback.
    shown = run_cli(home, "packets", "show", hex_id)
    assert shown.returncode != 0 and "Traceback" not in shown.stderr.decode()
    assert "missing" in shown.stderr.decode()


def test_backup_copies_the_body_files_and_the_copy_verifies(with_large, tmp_path):
    home, hex_id = with_large
    target = tmp_path / "copy.db"
    result = run_cli(home, "ledger", "backup", str(target))
    assert result.returncode == 0, result.stderr
    assert "1 body files" in result.stdout.decode()
    copied = tmp_path / "copy.db-bodies" / hex_id[:2] / hex_id
    assert copied.read_bytes() == body_file(home, hex_id).read_bytes()

    async def check() -> ledger.VerifyReport:
        node_id = Identity.load(Home(home).key_path).node_id
        async with await Store.open_readonly(target) as copy:
            return await ledger.verify(copy, node_id)

    report = asyncio.run(check())
    assert (report.packets, report.body_files, report.orphan_bodies) == (2, 1, 0)
    # Restored as the operator's guide says, the copy (one file) is a ledger again, in WAL mode.
    restored = home.parent / "restored"
    shutil.copytree(home, restored, ignore=shutil.ignore_patterns("ledger.db*"))
    shutil.copy(target, Home(restored).ledger_path)
    shutil.copytree(tmp_path / "copy.db-bodies", restored / "ledger.db-bodies")
    assert run_cli(restored, "ledger", "anchor").returncode == 0  # a command that writes
    conn = sqlite3.connect(Home(restored).ledger_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert run_cli(restored, "ledger", "verify").returncode == 0
    # The copy's bodies are its own: damaging them fails the copy, not the original.
    copied.write_bytes(b"x" + copied.read_bytes()[1:])
    with pytest.raises(Exception, match="body file"):
        asyncio.run(check())
    assert run_cli(home, "ledger", "verify").returncode == 0
    again = run_cli(home, "ledger", "backup", str(target))
    assert again.returncode != 0 and "already exists" in again.stderr.decode()


def test_verify_checks_the_packet_counts_against_the_rows(with_large):
    home, _ = with_large
    conn = sqlite3.connect(Home(home).ledger_path)
    try:
        conn.execute("UPDATE packet_counts SET quarantined = quarantined + 1")
        conn.commit()
    finally:
        conn.close()
    result = run_cli(home, "ledger", "verify", "--json")
    assert result.returncode == 1 and len(result.stderr.decode().strip().splitlines()) == 1
    doc = json.loads(result.stdout)
    assert doc["entry"] == "the packet counts" and "1 in quarantine" in doc["reason"], doc
