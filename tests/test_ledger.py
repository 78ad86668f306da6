"""Tamper evidence: every changed byte or deleted row is caught, and the first bad entry named."""

import asyncio
import sqlite3

import pytest

from ark_lattice import ledger
from ark_lattice.errors import LedgerCorrupt
from ark_lattice.home import Home
from ark_lattice.node import LocalNode
from ark_lattice.store.store import Store
from ark_lattice.tiers import TrustTier


@pytest.fixture
async def node(home):
    n = await LocalNode.init(Home(home), name="alpha")
    yield n
    await n.close()


async def populate(node, packets=30):
    for i in range(packets):
        await node.publish(topic="notes", kind="note", body=b"body %d" % i)
    await node.store.add_peer("a" * 52, tier=TrustTier.CORE)
    await node.store.add_peer("b" * 52)
    await node.store.set_tier("b" * 52, TrustTier.SANDBOX, reason="test")
    await ledger.anchor(node.store, node.identity)
    await node.publish(topic="notes", kind="note", body=b"after the first checkpoint")
    await ledger.anchor(node.store, node.identity)
    await node.publish(topic="notes", kind="note", body=b"after the second checkpoint")


def tamper(node, sql, *args):
    conn = sqlite3.connect(node.store.path)
    changed = conn.execute(sql, args).rowcount
    conn.commit()
    conn.close()
    assert changed == 1, sql


async def expect_corrupt(node, entry_prefix):
    with pytest.raises(LedgerCorrupt) as info:
        await ledger.verify(node.store, node.node_id)
    assert info.value.entry.startswith(entry_prefix), str(info.value)
    # `ledger verify` opens the file read-only: the file checks then run on a second connection
    # beside the passes, and the same first failure must be named, in the same words.
    async with await Store.open_readonly(node.store.path) as store:
        assert store.read_uri is not None
        with pytest.raises(LedgerCorrupt) as again:
            await ledger.verify(store, node.node_id)
    assert (again.value.entry, again.value.reason) == (info.value.entry, info.value.reason)
    return info.value


async def test_ten_thousand_packets_verify(node):
    from ark_lattice.packet import Packet

    created = await node.store.next_timestamp(node.store.now_ms())
    batch = [
        Packet.create(node.identity, topic="bulk", kind="note", body=b"%d" % i, created_at=created + i)
        for i in range(10_000)
    ]
    for i in range(0, len(batch), 1000):
        await node.store.put_packets(batch[i : i + 1000])
    await ledger.anchor(node.store, node.identity)
    report = await ledger.verify(node.store, node.node_id)
    assert report.packets == 10_000
    assert report.events == 10_000 + 2  # init, 10k stored, checkpoint
    assert report.checkpoints == 1


async def test_an_untouched_ledger_verifies(node):
    await populate(node)
    report = await ledger.verify(node.store, node.node_id)
    assert (report.packets, report.peers, report.checkpoints) == (32, 2, 2)


EVENT_COLUMNS = ["ts", "kind", "subject", "data", "prev", "hash"]


@pytest.mark.parametrize("column", EVENT_COLUMNS)
async def test_any_changed_event_field_is_caught(node, column):
    await populate(node)
    if column == "ts":
        tamper(node, "UPDATE events SET ts = ts + 1 WHERE seq = 10")
    elif column in ("kind", "subject"):
        tamper(node, f"UPDATE events SET {column} = {column} || 'x' WHERE seq = 10")
    else:
        flipped = _flipped(node, "events", column, "seq = 10")
        tamper(node, f"UPDATE events SET {column} = ? WHERE seq = 10", flipped)
    err = await expect_corrupt(node, "event #10")
    assert "#10" in str(err)


@pytest.mark.parametrize("column", ["header", "signature", "body"])
async def test_any_changed_packet_byte_is_caught(node, column):
    await populate(node)
    [(pid,)] = sqlite3.connect(node.store.path).execute("SELECT id FROM packets LIMIT 1 OFFSET 5").fetchall()
    flipped = _flipped(node, "packets", column, "id = ?", pid)
    tamper(node, f"UPDATE packets SET {column} = ? WHERE id = ?", flipped, pid)
    await expect_corrupt(node, f"packet {pid.hex()}")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE packets SET topic = 'other' WHERE id = ?",
        "UPDATE packets SET created_at = created_at + 1 WHERE id = ?",
        "UPDATE packets SET quarantined = 1 WHERE id = ?",
        "UPDATE packets SET id = zeroblob(32) WHERE id = ?",
    ],
)
async def test_changed_packet_columns_are_caught(node, sql):
    await populate(node)
    [(pid,)] = sqlite3.connect(node.store.path).execute("SELECT id FROM packets LIMIT 1 OFFSET 3").fetchall()
    tamper(node, sql, pid)
    await expect_corrupt(node, "packet ")


async def test_the_log_fails_before_the_packets_read_beside_it(node):
    """The packet pass runs beside the event pass: a bad packet is still named only after the
    whole log has verified, as when one pass followed the other."""
    await populate(node)
    [(pid,)] = sqlite3.connect(node.store.path).execute("SELECT id FROM packets LIMIT 1").fetchall()
    tamper(node, "UPDATE packets SET signature = zeroblob(64) WHERE id = ?", pid)
    last = sqlite3.connect(node.store.path).execute("SELECT MAX(seq) FROM events").fetchone()[0]
    tamper(node, "UPDATE events SET ts = ts + 1 WHERE seq = ?", last)
    await expect_corrupt(node, f"event #{last}")


async def test_packets_checked_while_the_log_is_replayed_are_named_in_order(node, monkeypatch):
    """Packet results that waited for the log are taken in order once it is replayed: the first
    bad one is named, not a later one nor a good one the failure left half-taken."""
    from ark_lattice import signatures

    await populate(node)
    ids = [bytes(r[0]) for r in sqlite3.connect(node.store.path).execute(
        "SELECT id FROM packets ORDER BY created_at, id")]
    tamper(node, "UPDATE packets SET signature = zeroblob(64) WHERE id = ?", ids[9])
    tamper(node, "UPDATE packets SET body = x'00' WHERE id = ?", ids[5])
    monkeypatch.setattr(signatures, "BATCH", 4)
    checked: list[int] = []
    real_rows, real_log = ledger._PacketRows.__call__, ledger._Verifier.check_log

    def check_rows(self, rows):
        out = real_rows(self, rows)
        checked.append(len(rows))
        return out

    async def check_log(self, *args):
        while sum(checked) < len(ids):  # every packet checked before the log is replayed
            await asyncio.sleep(0.001)
        return await real_log(self, *args)

    monkeypatch.setattr(ledger._PacketRows, "__call__", check_rows)
    monkeypatch.setattr(ledger._Verifier, "check_log", check_log)
    err = await expect_corrupt(node, f"packet {ids[5].hex()}")
    assert "body" in err.reason


async def test_the_file_checks_fail_before_the_passes_beside_them(node):
    """A value of the wrong type is named before a broken link in the log, though the file
    checks run on their own connection while the log is read."""
    await populate(node)
    tamper(node, "UPDATE events SET ts = ts + 1 WHERE seq = 3")
    [(pid,)] = sqlite3.connect(node.store.path).execute("SELECT id FROM packets LIMIT 1 OFFSET 20").fetchall()
    tamper(node, "UPDATE packets SET received_at = 'soon' WHERE id = ?", pid)
    err = await expect_corrupt(node, f"packet {pid.hex()}")
    assert "received_at is text" in err.reason


async def test_the_file_checks_are_waited_for_when_the_passes_fail_first(node, monkeypatch):
    """The same, with the file checks held back until the log has failed."""
    import threading

    await populate(node)
    tamper(node, "UPDATE events SET ts = ts + 1 WHERE seq = 3")
    tamper(node, "UPDATE meta SET key = CAST('hlc' AS BLOB) WHERE key = 'hlc'")
    failed = threading.Event()
    real_contents, real_run = ledger._Verifier.check_contents, ledger._FileChecks.run

    async def contents(self, started):
        try:
            return await real_contents(self, started)
        finally:
            failed.set()

    def run(self, tables):
        assert failed.wait(timeout=30)
        real_run(self, tables)

    monkeypatch.setattr(ledger._Verifier, "check_contents", contents)
    monkeypatch.setattr(ledger._FileChecks, "run", run)
    async with await Store.open_readonly(node.store.path) as store:
        with pytest.raises(LedgerCorrupt) as info:
            await ledger.verify(store, node.node_id)
    assert failed.is_set() and info.value.entry == "meta.hlc", str(info.value)


@pytest.mark.parametrize("writes, opened", [(1, 2), (5, 3)])
async def test_a_write_between_the_two_connections_first_reads_is_never_mixed_in(
    node, monkeypatch, writes, opened
):
    """Verify's second connection must read the snapshot the store's reads: a write committed
    between their first reads makes verify try again, and after three tries it checks the
    file on the one connection. Either way the ledger verifies (the write is a dialling hint)."""
    await populate(node)
    opens = []
    real_open = ledger._FileChecks.open

    async def open_then_write(uri):
        side = await real_open(uri)
        opens.append(uri)
        if len(opens) <= writes:
            db = sqlite3.connect(node.store.path)
            db.execute(
                "INSERT INTO endpoints (url, peer_id, source, added_at) VALUES (?, NULL, 'manual', 1)",
                (f"ws://10.0.0.{len(opens)}:7000",),
            )
            db.commit()
            db.close()
        return side

    monkeypatch.setattr(ledger._FileChecks, "open", open_then_write)
    checked: list[str] = []
    real_check_file = ledger._Verifier.check_file

    async def check_file(self):
        checked.append("one connection")
        await real_check_file(self)

    monkeypatch.setattr(ledger._Verifier, "check_file", check_file)
    async with await Store.open_readonly(node.store.path) as store:
        report = await ledger.verify(store, node.node_id)
    assert report.packets == 32 and len(opens) == opened
    assert checked == (["one connection"] if writes >= 3 else [])


@pytest.mark.parametrize("column", ["root", "note"])
async def test_any_changed_checkpoint_is_caught(node, column):
    await populate(node)
    where = "size = (SELECT MIN(size) FROM checkpoints)"
    flipped = _flipped(node, "checkpoints", column, where)
    tamper(node, f"UPDATE checkpoints SET {column} = ? WHERE {where}", flipped)
    await expect_corrupt(node, "checkpoint of size")


@pytest.mark.parametrize(
    "sql, entry",
    [
        ("DELETE FROM events WHERE seq = 7", "event #7"),
        ("DELETE FROM packets WHERE id = (SELECT id FROM packets ORDER BY id LIMIT 1)", "event #"),
        ("DELETE FROM peers WHERE id = '" + "a" * 52 + "'", "peer " + "a" * 52),
        ("DELETE FROM checkpoints WHERE size = (SELECT MIN(size) FROM checkpoints)", "event #"),
        ("DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)", "packet "),
        ("UPDATE peers SET tier = 'core' WHERE id = '" + "b" * 52 + "'", "peer " + "b" * 52),
    ],
)
async def test_deleted_rows_are_caught(node, sql, entry):
    await populate(node)
    tamper(node, sql)
    await expect_corrupt(node, entry)


async def test_a_rewritten_and_resigned_history_shows_as_inconsistent(node):
    """Even with the key, rewriting events under an old checkpoint cannot be hidden."""
    await populate(node)
    from ark_lattice.store.events import entry_hash

    conn = sqlite3.connect(node.store.path)
    rows = conn.execute("SELECT seq, ts, kind, subject, data, prev, hash FROM events ORDER BY seq").fetchall()
    # Rewrite event 3's timestamp and re-chain everything after it, as a forger with DB access would.
    prev = None
    for seq, ts, kind, subject, data, old_prev, _ in rows:
        if seq == 3:
            ts += 1
        p = old_prev if prev is None else prev
        h = entry_hash(seq, ts, kind, subject, data, p)
        conn.execute("UPDATE events SET ts = ?, prev = ?, hash = ? WHERE seq = ?", (ts, p, h, seq))
        prev = h
    conn.commit()
    conn.close()
    await expect_corrupt(node, "checkpoint of size")


async def test_backup_copy_verifies(node, tmp_path):
    await populate(node, packets=5)
    target = tmp_path / "copy.db"
    await node.store.backup_to(target)
    from ark_lattice.store.store import Store

    async with await Store.open(target) as copy:
        report = await ledger.verify(copy, node.node_id)
    assert report.packets == 7


def _flipped(node, table, column, where, *args):
    conn = sqlite3.connect(node.store.path)
    [(value,)] = conn.execute(f"SELECT {column} FROM {table} WHERE {where}", args).fetchall()
    conn.close()
    data = bytearray(value.encode() if isinstance(value, str) else value)
    data[len(data) // 2] ^= 0x01
    return data.decode() if isinstance(value, str) else bytes(data)


async def test_verify_is_linear_in_events_whatever_the_number_of_checkpoints(node, monkeypatch):
    """One incremental tree serves every checkpoint: no consistency proof, and the interior
    hashes computed stay near one per event plus one root per checkpoint."""
    from ark_lattice import merkle

    for i in range(40):
        await node.publish(topic="notes", kind="note", body=b"%d" % i)
        await ledger.anchor(node.store, node.identity)  # a checkpoint after every packet
    calls = {"node_hash": 0}
    real_node_hash = merkle.node_hash

    def counting(left: bytes, right: bytes) -> bytes:
        calls["node_hash"] += 1
        return real_node_hash(left, right)

    def no_proof(*args: object) -> list[bytes]:
        raise AssertionError("verify must not compute consistency proofs")

    monkeypatch.setattr(merkle, "node_hash", counting)
    monkeypatch.setattr(merkle, "consistency_proof", no_proof)
    report = await ledger.verify(node.store, node.node_id)
    assert report.checkpoints == 40
    depth = report.events.bit_length()
    assert calls["node_hash"] <= report.events + (report.checkpoints + 1) * depth


async def test_the_first_missing_checkpoint_is_named_not_the_first_checkpoint(node):
    await populate(node)
    conn = sqlite3.connect(node.store.path)
    [(size,)] = conn.execute("SELECT MAX(size) FROM checkpoints").fetchall()
    [(seq,)] = conn.execute("SELECT seq FROM events WHERE kind = 'checkpoint' AND subject = ?", (str(size),))
    conn.close()
    tamper(node, "DELETE FROM checkpoints WHERE size = ?", size)
    err = await expect_corrupt(node, f"event #{seq}")
    assert "missing" in err.reason


async def test_a_ledger_from_before_signed_heads_starts_them_and_is_then_held_to_them(tmp_path):
    from ark_lattice.identity import Identity
    from ark_lattice.store.events import EventKind
    from ark_lattice.store.store import Store

    me = Identity.generate()
    path = tmp_path / "ledger.db"
    async with await Store.open(path) as store:  # as an older version wrote it: no signer, no head
        await store.append_event(EventKind.NODE_INITIALISED, str(me.node_id), {"name": "old"})
        await store.add_peer("a" * 52, tier=TrustTier.CORE)
    conn = sqlite3.connect(path)  # and kept a peer's manifest without an event
    conn.execute("UPDATE peers SET manifest = x'00', manifest_seq = 4")
    conn.commit()
    conn.close()
    async with await Store.open(path) as store:
        with pytest.raises(LedgerCorrupt):  # no head yet (and a manifest no event records)
            await ledger.verify(store, me.node_id)
        store.set_signer(me)
        await store.add_peer("b" * 52)  # the first signed write starts the heads
        report = await ledger.verify(store, me.node_id)
        assert report.signed == report.events == 4  # init, two peers, ledger.heads_started
        tamper_path = store.path
        conn = sqlite3.connect(tamper_path)
        conn.execute("DELETE FROM meta WHERE key = 'head'")
        conn.commit()
        conn.close()
        await store.add_peer("c" * 52)  # a deleted head is not a ledger from before heads
        with pytest.raises(LedgerCorrupt, match="the signed head is missing") as info:
            await ledger.verify(store, me.node_id)
        assert info.value.entry == "event #6"


async def test_bench_ledger_reports_the_head_cost_and_verify_with_checkpoints():
    """The bench runs end to end on a small ledger; rates are reported, never asserted."""
    from ark_lattice.bench import ledger as bench_ledger

    rows = {m.name: m for m in await bench_ledger.run(2000, checkpoints=20, transactions=10)}
    assert set(rows) == {
        "ledger.append", "ledger.write.signed", "ledger.write.unsigned",
        "ledger.verify", "ledger.verify.checkpoints",
    }
    assert "2000 events with 20 checkpoints" in rows["ledger.verify.checkpoints"].note
    assert all(m.bound for name, m in rows.items() if name != "ledger.verify")


@pytest.mark.parametrize(
    "kind, subject, data",
    [
        ("packet.stored", "x", {"id": "not bytes", "quarantined": False, "source": "local"}),
        ("checkpoint", "1", {"size": [1, 2], "root": b"r"}),
        ("peer.manifest", "a" * 52, {"seq": 1, "digest": 10**12}),
        ("peer.strike", "a" * 52, {"strikes": 1.5e308}),
        ("packet.promoted", "x", {"id": {}}),
    ],
)
async def test_a_keyless_event_of_the_wrong_shape_is_named(node, kind, subject, data):
    from ark_lattice.encoding import canonical
    from ark_lattice.store.events import entry_hash

    await populate(node, packets=2)
    conn = sqlite3.connect(node.store.path)
    seq, prev, ts = conn.execute("SELECT seq, hash, ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    payload = canonical(data)
    conn.execute(
        "INSERT INTO events (seq, ts, kind, subject, data, prev, hash) VALUES (?,?,?,?,?,?,?)",
        (seq + 1, ts, kind, subject, payload, prev, entry_hash(seq + 1, ts, kind, subject, payload, prev)),
    )
    conn.commit()
    conn.close()
    err = await expect_corrupt(node, f"event #{seq + 1}")
    assert "does not fit" in err.reason


async def test_random_damage_to_the_file_only_ever_fails_as_ledger_corrupt(node, tmp_path):
    """Bytes flipped anywhere in the file: verify says what is wrong or that all is well (a flip
    in free space changes nothing), and never fails with anything but LedgerCorrupt."""
    import random

    from ark_lattice.store.store import Store

    await populate(node)
    conn = sqlite3.connect(node.store.path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    pristine = node.store.path.read_bytes()
    rng = random.Random(17)
    caught = 0
    for trial in range(200):
        copy = tmp_path / f"damaged-{trial}.db"
        data = bytearray(pristine)
        for _ in range(rng.choice([1, 8, 64])):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        copy.write_bytes(bytes(data))
        try:
            async with await Store.open_readonly(copy) as store:
                await ledger.verify(store, node.node_id)
        except LedgerCorrupt as exc:
            assert "\n" not in str(exc), str(exc)  # one sentence, even quoting a damaged schema
            caught += 1
        copy.unlink()
    assert caught > 20
