"""Witnessed checkpoints (witness.py): the cosignature format, the witness rule, fork proofs, and
what `ledger verify` makes of cosignatures and of a checkpoint held elsewhere (--against)."""

from __future__ import annotations

import base64
import sqlite3
import struct
from pathlib import Path

import nacl.signing
import pytest

from ark_lattice import ledger, merkle, witness
from ark_lattice.alerts import NONCE_SIZE, Alert
from ark_lattice.checkpoint import Checkpoint, open_note, sign_checkpoint
from ark_lattice.encoding import canonical, sha256
from ark_lattice.errors import BadSignature, LedgerCorrupt, Malformed
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.node import LocalNode
from ark_lattice.store import head as heads
from ark_lattice.witness import AddCheckpoint, Status

# RFC 8032 §7.1, TEST 1: a published Ed25519 key pair, so the vector below does not depend on us.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")

# The example of c2sp.org/tlog-cosignature (its key is not published, so only its layout and the
# timestamp it shares with the spec's example signed message can be checked).
SPEC_CHECKPOINT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_COSIGNATURE = (
    "\u2014 witness.example.com/w1 "
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"entry %d" % i) for i in range(n)]


def log_note(log: Identity, size: int, root: bytes) -> str:
    cp = Checkpoint(ledger.checkpoint_origin(log.node_id), size, root)
    return sign_checkpoint(cp, log, ledger.key_name(log.node_id))


def request(log: Identity, tree: list[bytes], size: int, old: int) -> AddCheckpoint:
    proof = merkle.consistency_proof(tree[:size], old) if old <= size else []  # a bad request
    return AddCheckpoint(old, tuple(proof), log_note(log, size, merkle.root(tree[:size])))


def state_after(req: AddCheckpoint) -> tuple[int, bytes, str]:
    cp, _ = open_note(req.note)
    return cp.size, cp.root_hash, req.note


# --- the cosignature format ----------------------------------------------------------------------


def test_cosignature_matches_an_independent_construction_from_the_spec() -> None:
    identity = Identity.from_seed(RFC8032_SEED)
    assert identity.public_key == RFC8032_PUBLIC
    cp = Checkpoint.parse(SPEC_CHECKPOINT)
    name = witness.witness_key_name(identity.node_id)
    line = witness.cosign(cp, identity, 1679315147).line()

    # Built by hand from the spec with PyNaCl alone: key ID with type 0x04, u64 big-endian time,
    # Ed25519 over "cosignature/v1\ntime <t>\n" || the checkpoint body.
    key_id = sha256(name.encode(), b"\n\x04", RFC8032_PUBLIC)[:4]
    message = b"cosignature/v1\ntime 1679315147\n" + SPEC_CHECKPOINT.encode()
    signature = nacl.signing.SigningKey(RFC8032_SEED).sign(message).signature
    expected = base64.b64encode(key_id + struct.pack(">Q", 1679315147) + signature).decode()
    assert line == f"\u2014 {name} {expected}\n"

    parsed = witness.Cosignature.parse_line(line)
    parsed.verify(cp.body(), identity.node_id)
    nacl.signing.VerifyKey(RFC8032_PUBLIC).verify(message, parsed.signature)


def test_the_spec_example_line_parses_with_its_timestamp() -> None:
    cosig = witness.Cosignature.parse_line(SPEC_COSIGNATURE)
    assert cosig.key_name == "witness.example.com/w1"
    assert cosig.timestamp == 1679315147  # the "time 1679315147" of the spec's signed message
    assert len(cosig.signature) == 64
    # And the spec's checkpoint, with the log's line and this one, is a well-formed signed note.
    note = SPEC_CHECKPOINT + "\n" + (
        "\u2014 example.com/behind-the-sofa "
        "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    ) + SPEC_COSIGNATURE + "\n"
    cp, signatures = open_note(note)
    assert cp.size == 20852163 and len(signatures) == 2


def test_a_cosignature_is_not_a_log_signature_and_is_bound_to_its_checkpoint() -> None:
    w = Identity.from_seed(b"w" * 32)
    log = Identity.from_seed(b"l" * 32)
    cp = Checkpoint(ledger.checkpoint_origin(log.node_id), 5, merkle.root(leaves(5)))
    cosig = witness.cosign(cp, w, 100)
    other = Checkpoint(cp.origin, 6, merkle.root(leaves(6)))
    with pytest.raises(BadSignature):
        cosig.verify(other.body(), w.node_id)
    with pytest.raises(BadSignature):
        cosig.verify(cp.body(), log.node_id)  # another key
    later = witness.Cosignature(cosig.key_name, cosig.key_id, 101, cosig.signature)
    with pytest.raises(BadSignature):
        later.verify(cp.body(), w.node_id)  # the time is signed too


def test_add_checkpoint_request_round_trips_and_refuses_garbage() -> None:
    log = Identity.from_seed(b"l" * 32)
    tree = leaves(20)
    req = request(log, tree, 20, 7)
    assert AddCheckpoint.parse(req.encode()) == req
    assert req.encode().startswith(b"old 7\n")
    for bad in (b"old 07\n\n" + req.note.encode(), b"new 7\n\n", b"old 7\nnot base64!\n\n", b"\xff" * 10,
                b"old 7\n" + b"AAAA\n" + b"\n"):
        with pytest.raises(Malformed):
            AddCheckpoint.parse(bad)


# --- the witness rule ----------------------------------------------------------------------------


def test_the_first_checkpoint_is_cosigned_from_size_zero_only() -> None:
    log = Identity.from_seed(b"l" * 32)
    tree = leaves(10)
    assert witness.judge(request(log, tree, 10, 0), log.node_id, None, None).status is Status.OK
    conflict = witness.judge(request(log, tree, 10, 4), log.node_id, None, None)
    assert conflict.status is Status.CONFLICT and conflict.known_size == 0


def test_growth_with_a_good_proof_is_cosigned_and_a_bad_proof_refused() -> None:
    log = Identity.from_seed(b"l" * 32)
    tree = leaves(30)
    latest = state_after(request(log, tree, 10, 0))
    assert witness.judge(request(log, tree, 30, 10), log.node_id, latest, None).status is Status.OK
    good = request(log, tree, 30, 10)
    tampered = AddCheckpoint(10, (bytes(32),) + good.proof[1:], good.note)
    assert witness.judge(tampered, log.node_id, latest, None).status is Status.BAD_PROOF
    # A log whose first 10 entries changed cannot prove consistency with what we cosigned.
    rewritten = [merkle.leaf_hash(b"other")] + tree[1:]
    verdict = witness.judge(request(log, rewritten, 30, 10), log.node_id, latest, None)
    assert verdict.status is Status.BAD_PROOF


def test_a_rollback_is_refused_with_the_size_we_cosigned() -> None:
    log = Identity.from_seed(b"l" * 32)
    tree = leaves(30)
    latest = state_after(request(log, tree, 30, 0))
    verdict = witness.judge(request(log, tree, 20, 0), log.node_id, latest, None)
    assert verdict.status is Status.CONFLICT and verdict.known_size == 30
    assert verdict.known_note == latest[2]
    assert witness.judge(request(log, tree, 20, 30), log.node_id, latest, None).status is Status.BAD_REQUEST


def test_same_size_with_another_root_is_a_fork_proof() -> None:
    log = Identity.from_seed(b"l" * 32)
    tree = leaves(12)
    first = request(log, tree, 12, 0)
    latest = state_after(first)
    other = [merkle.leaf_hash(b"forged")] + tree[1:]
    second = request(log, other, 12, 12)
    verdict = witness.judge(second, log.node_id, latest, (latest[1], latest[2]))
    assert verdict.status is Status.CONFLICT and verdict.fork
    assert verdict.evidence is not None
    assert witness.fork_proven(witness.decode_evidence(verdict.evidence), str(log.node_id))
    # The same root again is no fork: cosigned again.
    again = witness.judge(request(log, tree, 12, 12), log.node_id, latest, (latest[1], latest[2]))
    assert again.status is Status.OK and not again.fork


def test_a_checkpoint_not_signed_by_the_log_is_refused() -> None:
    log, stranger = Identity.from_seed(b"l" * 32), Identity.from_seed(b"s" * 32)
    tree = leaves(5)
    forged = AddCheckpoint(0, (), log_note(stranger, 5, merkle.root(tree)).replace(
        ledger.checkpoint_origin(stranger.node_id), ledger.checkpoint_origin(log.node_id)))
    assert witness.judge(forged, log.node_id, None, None).status is Status.FORBIDDEN
    # Its own log, signed by itself, but presented as another node's: not a log we follow here.
    assert witness.judge(request(stranger, tree, 5, 0), log.node_id, None, None).status is Status.FORBIDDEN


def test_fork_evidence_is_a_self_proving_alert_only_when_it_proves_a_fork() -> None:
    log, other = Identity.from_seed(b"l" * 32), Identity.from_seed(b"o" * 32)
    a, b = log_note(log, 8, merkle.root(leaves(8))), log_note(log, 8, merkle.root(leaves(9)[1:]))

    def alert(evidence: bytes, about: Identity = log) -> Alert:
        return Alert("critical", "fork", str(about.node_id), b"n" * NONCE_SIZE, evidence)

    assert alert(witness.fork_evidence(a, b)).self_proving()
    assert not alert(witness.fork_evidence(a, b), other).self_proving()  # names someone else
    assert not alert(witness.fork_evidence(a, a)).self_proving()  # same root: no fork
    c = log_note(log, 9, merkle.root(leaves(9)))
    assert not alert(witness.fork_evidence(a, c)).self_proving()  # different sizes
    assert not alert(canonical(["fork", a.encode(), b"junk"])).self_proving()


# --- the store: state persisted before the answer, and what verify makes of it --------------------


@pytest.fixture
async def node(home: Path):
    n = await LocalNode.init(Home(home), name="alpha")
    yield n
    await n.close()


async def grow(node: LocalNode, n: int) -> None:
    for i in range(n):
        await node.publish(topic="notes", kind="note", body=b"body %d" % i)


async def test_witness_state_is_persisted_and_rules_apply_across_requests(node: LocalNode) -> None:
    log = Identity.from_seed(b"l" * 32)
    tree = leaves(40)

    async def ask(req: AddCheckpoint, now: float) -> witness.Verdict:
        return await witness.witness_request(node.store, node.identity, log.node_id, req.encode(), now)

    ok = await ask(request(log, tree, 10, 0), 1000.0)
    assert ok.status is Status.OK
    assert ok.cosignature is not None
    witness.Cosignature.parse_line(ok.cosignature).verify(ok.checkpoint.body(), node.identity.node_id)  # type: ignore[union-attr]
    origin = ledger.checkpoint_origin(log.node_id)
    assert (await node.store.latest_witnessed(origin))[0] == 10  # type: ignore[index]
    # Replaying the first request (old 0) after we moved on: refused, our size named.
    again = await ask(request(log, tree, 40, 0), 1001.0)
    assert again.status is Status.CONFLICT and again.known_size == 10
    grown = await ask(request(log, tree, 40, 10), 1002.0)
    assert grown.status is Status.OK
    # A fork at a size we cosigned earlier (not the latest) is caught too.
    other = [merkle.leaf_hash(b"x")] + tree[1:]
    fork = await ask(request(log, other, 10, 40), 1003.0)
    assert fork.fork and fork.status is Status.CONFLICT
    assert (await node.store.latest_witnessed(origin))[0] == 40  # type: ignore[index]


async def cosigned_by(node: LocalNode, witness_identity: Identity) -> None:
    """Have ``witness_identity`` cosign the node's newest checkpoint and store it (as a peer would)."""
    rows = await node.store.checkpoints()
    size, root, note = rows[-1]
    cosig = witness.cosign(Checkpoint.parse(note.split("\n\n")[0] + "\n"), witness_identity, 1_700_000_000)
    outcome = await witness.record_reply(
        node.store, node.node_id, witness_identity.node_id, 200, cosig.line().encode(), b""
    )
    assert outcome.stored, outcome.message


async def test_verify_names_the_missing_range_of_a_truncated_ledger(node: LocalNode) -> None:
    peer = Identity.from_seed(b"p" * 32)
    await grow(node, 5)
    await ledger.anchor(node.store, node.identity)
    await grow(node, 10)
    checkpoint, _ = await ledger.anchor(node.store, node.identity)
    await cosigned_by(node, peer)
    report = await ledger.verify(node.store, node.node_id)
    assert report.cosignatures == 1
    keep = checkpoint.size - 8
    conn = sqlite3.connect(node.store.path)
    conn.execute("DELETE FROM events WHERE seq > ?", (keep,))
    conn.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorrupt) as info:
        await ledger.verify(node.store, node.node_id)
    assert info.value.entry == f"events #{keep + 1}..#{checkpoint.size}"
    assert "truncated" in str(info.value) and "witness" in str(info.value)


async def test_verify_calls_a_different_root_at_a_cosigned_size_a_fork(node: LocalNode) -> None:
    await grow(node, 6)
    checkpoint, _ = await ledger.anchor(node.store, node.identity)
    await cosigned_by(node, Identity.from_seed(b"p" * 32))
    # Rewrite the history and re-sign everything with the node's own key (the signed head too):
    # internally consistent, but not what the witness cosigned.
    conn = sqlite3.connect(node.store.path)
    conn.execute("DELETE FROM events WHERE seq > 1")
    conn.execute("DELETE FROM checkpoints")
    conn.execute("DELETE FROM packets")
    [(tip,)] = conn.execute("SELECT hash FROM events WHERE seq = 1")
    manifest_seq = conn.execute("SELECT value FROM meta WHERE key = 'manifest_seq'").fetchone()
    assert node.store.signer is not None
    signed = heads.Head("", 1, tip, int(manifest_seq[0]) if manifest_seq else 0).signed(node.store.signer)
    conn.execute("UPDATE meta SET value = ? WHERE key = ?", (signed.to_bytes(), heads.HEAD_KEY))
    conn.commit()
    conn.close()
    for i in range(checkpoint.size + 3):
        await node.store.append_event("note.rewritten", "", {"i": i})
    with pytest.raises(LedgerCorrupt) as info:
        await ledger.verify(node.store, node.node_id)
    assert info.value.entry == f"the first {checkpoint.size} events" and "fork" in str(info.value)


async def test_a_stored_cosignature_that_does_not_verify_is_named(node: LocalNode) -> None:
    await grow(node, 3)
    await ledger.anchor(node.store, node.identity)
    await cosigned_by(node, Identity.from_seed(b"p" * 32))
    conn = sqlite3.connect(node.store.path)
    conn.execute("UPDATE cosignatures SET timestamp = timestamp + 1, note = replace(note, 'AAAA', 'AAAB')")
    conn.execute("UPDATE cosignatures SET witness = ?", (str(Identity.from_seed(b"q" * 32).node_id),))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorrupt) as info:
        await ledger.verify(node.store, node.node_id)
    assert info.value.entry.startswith("cosignature by witness")


# --- the CLI: anchor --out, verify --against, witnesses -------------------------------------------


def test_verify_against_a_note_held_elsewhere(cli, tmp_path: Path) -> None:
    cli("init", "--name", "alpha")
    for i in range(4):
        cli("packets", "publish", "--topic", "notes", "-", input=f"note {i}")
    note = tmp_path / "anchor.note"
    doc = cli.json("ledger", "anchor", "--out", str(note))
    assert note.read_text().startswith("ark-lattice.ledger/")
    ok = cli("ledger", "verify", "--against", str(note))
    assert "consistent with" in ok.stdout
    for i in range(3):  # a longer ledger is still consistent with the older checkpoint
        cli("packets", "publish", "--topic", "notes", "-", input=f"later {i}")
    cli("ledger", "verify", "--against", str(note))

    # Truncated below the note's size: named, exit 1.
    conn = sqlite3.connect(Home(cli.home).ledger_path)
    conn.execute("DELETE FROM events WHERE seq > ?", (doc["size"] - 2,))
    conn.execute("DELETE FROM checkpoints")
    conn.execute("DELETE FROM packets")
    conn.execute("DELETE FROM peers")
    conn.commit()
    conn.close()
    bad = cli("ledger", "verify", "--against", str(note), ok=False)
    assert bad.exit_code == 1
    assert f"events #{doc['size'] - 1}..#{doc['size']}" in bad.output + (bad.stderr or "")


def test_verify_against_refuses_a_note_that_is_not_ours(cli, tmp_path: Path) -> None:
    cli("init", "--name", "alpha")
    stranger = Identity.from_seed(b"s" * 32)
    foreign = tmp_path / "foreign.note"
    foreign.write_text(log_note(stranger, 3, merkle.root(leaves(3))))
    result = cli("ledger", "verify", "--against", str(foreign), ok=False)
    assert result.exit_code == 2
    text = result.output + (result.stderr or "")
    assert "not a checkpoint this node signed" in text and "Traceback" not in text
    garbage = tmp_path / "garbage.note"
    garbage.write_bytes(b"\xff\xfe")
    assert cli("ledger", "verify", "--against", str(garbage), ok=False).exit_code == 2
    assert cli("ledger", "verify", "--against", str(tmp_path / "missing"), ok=False).exit_code == 2


def test_witnesses_lists_none_then_json(cli) -> None:
    cli("init", "--name", "alpha")
    assert "no cosignatures yet" in cli("ledger", "witnesses").stdout
    assert cli.json("ledger", "witnesses") == []


async def test_what_a_witness_answers_is_checked_before_it_is_kept(node: LocalNode) -> None:
    peer, liar = Identity.from_seed(b"p" * 32), Identity.from_seed(b"q" * 32)
    await grow(node, 3)
    await ledger.anchor(node.store, node.identity)
    size, root, note = (await node.store.checkpoints())[-1]
    cp = Checkpoint(ledger.checkpoint_origin(node.node_id), size, root)
    garbage = await witness.record_reply(node.store, node.node_id, peer.node_id, 200, b"not a line\n", b"")
    assert garbage.bad and not garbage.stored
    # A cosignature by someone else, sent as the peer's: not kept.
    other = witness.cosign(cp, liar, 1_700_000_000).line().encode()
    assert (await witness.record_reply(node.store, node.node_id, peer.node_id, 200, other, b"")).bad
    # A 409 with a note of a bigger size we never signed: not kept (only our own signed notes count).
    forged = witness.cosigned_note(log_note(liar, size + 5, root), [witness.cosign(cp, peer, 1).line()])
    outcome = await witness.record_reply(
        node.store, node.node_id, peer.node_id, 409, f"{size + 5}\n".encode(), forged.encode()
    )
    assert not outcome.stored and outcome.retry_from == size + 5
    # A 409 with our own note that the peer cosigned: kept, and verify counts it.
    ours = witness.cosigned_note(note, [witness.cosign(cp, peer, 1_700_000_000).line()])
    kept = await witness.record_reply(
        node.store, node.node_id, peer.node_id, 409, f"{size}\n".encode(), ours.encode()
    )
    assert kept.stored and await node.store.cosignatures()
    assert (await ledger.verify(node.store, node.node_id)).cosignatures == 1
