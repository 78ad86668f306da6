"""Witnessed checkpoints (DESIGN §8, §10): core peers cosign each other's ledger checkpoints.

Formats, all C2SP so that the notes interoperate with transparency-dev and Sigsum tooling:

- A **cosignature** (https://c2sp.org/tlog-cosignature, Ed25519 ``cosignature/v1``) is one more
  signed-note line on a checkpoint: ``— <witness key name> base64(key ID || timestamp || sig)``,
  with key ID ``SHA-256(name || "\\n" || 0x04 || public key)[:4]``, an 8-byte big-endian POSIX
  timestamp, and an Ed25519 signature over ``"cosignature/v1\\ntime <t>\\n" || checkpoint body``.
  A node cosigns with its own node key under the name ``ark-lattice-witness/<node id>``; the
  message's fixed header keeps it apart from every other thing that key signs.
- An **add-checkpoint request** (https://c2sp.org/tlog-witness) is ``old <size>\\n``, the
  consistency proof from that size one base64 hash a line, a blank line, then the signed note.

The **witness rule** (:func:`judge`, pure): a checkpoint is cosigned only if the log's own key
signed it; the old size is the size this witness last cosigned for that log; the RFC 6962
consistency proof from there verifies; and no checkpoint of the same size with another root was
ever seen ("same size ⇒ same root"). The state is persisted before the answer leaves
(:func:`witness_request`, one transaction), so a witness never cosigns a rollback.

Two checkpoints signed by one log key for one size with different roots are a **fork proof**
anyone can check from the two notes alone (:func:`fork_evidence`, :func:`fork_proven`): the
alert that carries it is self-proving (alerts.py), so every node isolates the forker at once.

The log side: :func:`build_request` makes the request for a peer from our newest checkpoint;
:func:`record_reply` keeps a cosignature after checking it; :func:`expectations` and
:func:`check_expectations` are what ``ledger verify`` uses to catch a ledger that is shorter than
what a witness cosigned (truncation, naming the missing range) or differs from it (a fork).
"""

from __future__ import annotations

import base64
import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ark_lattice import merkle
from ark_lattice.checkpoint import (
    Checkpoint,
    NoteSignature,
    open_note,
    verify_checkpoint,
)
from ark_lattice.encoding import canonical, decode, sha256
from ark_lattice.errors import BadSignature, LedgerCorrupt, Malformed, VerificationError
from ark_lattice.identity import Identity, NodeId

if TYPE_CHECKING:
    from ark_lattice.store.store import Store

__all__ = [
    "COSIGNATURE_TYPE_ED25519",
    "COSIGNATURE_HEADER",
    "FORK",
    "Cosignature",
    "AddCheckpoint",
    "Status",
    "Verdict",
    "Expected",
    "witness_key_name",
    "cosignature_key_id",
    "cosigned_message",
    "cosign",
    "judge",
    "fork_evidence",
    "fork_proven",
    "witness_request",
    "build_request",
    "record_reply",
    "held_cosignatures",
    "expectations",
    "expected_from_note",
    "check_expectations",
    "cosigned_note",
]

COSIGNATURE_TYPE_ED25519 = 0x04  # c2sp.org/tlog-cosignature: Ed25519 cosignature/v1
COSIGNATURE_HEADER = "cosignature/v1"
FORK = "fork"  # the evidence tag (alerts.py reads it)
MAX_PROOF_LINES = 63  # c2sp.org/tlog-witness: a client sends at most 63 proof lines
MAX_REQUEST = 16 * 1024  # proof (63 × 45 bytes) + the note limit, with room
_TIMESTAMP_MAX = (1 << 63) - 1
_ED25519_SIGNATURE_SIZE = 64
_KEY_ID_SIZE = 4


def witness_key_name(node_id: NodeId) -> str:
    """The key name a node cosigns under (a schema-less name, as tlog-cosignature suggests)."""
    return f"ark-lattice-witness/{node_id}"


def cosignature_key_id(key_name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x04 || key)[:4]: the key ID of an Ed25519 cosigner."""
    prefix = bytes([COSIGNATURE_TYPE_ED25519])
    return sha256(key_name.encode("utf-8"), b"\n", prefix, public_key)[:_KEY_ID_SIZE]


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """What an Ed25519 cosignature signs: the header line, the time line, the checkpoint body."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n".encode("ascii") + body


@dataclass(frozen=True)
class Cosignature:
    """One cosignature line: the witness's key name and key ID, the time, the signature."""

    key_name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    @classmethod
    def from_note_signature(cls, sig: NoteSignature) -> Cosignature:
        raw = sig.signature  # what follows the key ID: u64 timestamp || signature
        if len(raw) != 8 + _ED25519_SIGNATURE_SIZE:
            raise Malformed(f"the signature by {sig.key_name} is not an Ed25519 cosignature")
        (timestamp,) = struct.unpack(">Q", raw[:8])
        if timestamp > _TIMESTAMP_MAX:
            raise Malformed("a cosignature timestamp must not exceed 2**63 - 1")
        return cls(sig.key_name, sig.key_id, timestamp, raw[8:])

    @classmethod
    def parse_line(cls, line: str) -> Cosignature:
        return cls.from_note_signature(NoteSignature.parse_line(line.rstrip("\n")))

    def line(self) -> str:
        """The note signature line, newline included."""
        raw = self.key_id + struct.pack(">Q", self.timestamp) + self.signature
        return f"\u2014 {self.key_name} {base64.b64encode(raw).decode('ascii')}\n"

    def is_by(self, witness: NodeId) -> bool:
        name = witness_key_name(witness)
        return self.key_name == name and self.key_id == cosignature_key_id(name, witness.key)

    def verify(self, body: bytes, witness: NodeId) -> None:
        """Raise :class:`BadSignature` unless ``witness`` made this cosignature on ``body``."""
        if not self.is_by(witness):
            raise BadSignature(f"the cosignature is not by witness {witness.short}")
        try:
            witness.verify_note(cosigned_message(body, self.timestamp), self.signature)
        except BadSignature:
            raise BadSignature(f"bad cosignature by witness {witness.short}") from None


def cosign(checkpoint: Checkpoint, identity: Identity, timestamp: int) -> Cosignature:
    """``identity``'s cosignature on ``checkpoint`` at POSIX time ``timestamp``."""
    if not 0 <= timestamp <= _TIMESTAMP_MAX:
        raise ValueError("a cosignature timestamp is in [0, 2**63)")
    name = witness_key_name(identity.node_id)
    signature = identity.sign_note(cosigned_message(checkpoint.body(), timestamp))
    return Cosignature(name, cosignature_key_id(name, identity.public_key), timestamp, signature)


def cosigned_note(note: str, lines: Sequence[str]) -> str:
    """``note`` with cosignature ``lines`` appended (a signed note carries both kinds)."""
    return note + "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# -- the add-checkpoint request (c2sp.org/tlog-witness) ------------------------------------------


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    note: str

    def encode(self) -> bytes:
        lines = [f"old {self.old_size}"] + [base64.b64encode(h).decode("ascii") for h in self.proof]
        return ("\n".join(lines) + "\n\n" + self.note).encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> AddCheckpoint:
        """Untrusted bytes: anything wrong raises :class:`Malformed`, nothing else."""
        if not isinstance(data, bytes) or len(data) > MAX_REQUEST:
            raise Malformed(f"an add-checkpoint request is at most {MAX_REQUEST} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("an add-checkpoint request is not UTF-8") from None
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise Malformed("an add-checkpoint request needs a blank line before the checkpoint")
        first, *hashes = head.split("\n")
        if not first.startswith("old ") or not _decimal(first[4:]):
            raise Malformed("an add-checkpoint request starts with 'old <size>'")
        if len(hashes) > MAX_PROOF_LINES:
            raise Malformed(f"a consistency proof has at most {MAX_PROOF_LINES} lines")
        proof = tuple(_hash_line(h) for h in hashes)
        return cls(int(first[4:]), proof, note)


def _decimal(text: str) -> bool:
    return text == "0" or (text.isascii() and text.isdigit() and not text.startswith("0") and len(text) <= 20)


def _hash_line(line: str) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except ValueError:
        raise Malformed("a consistency proof line is not base64") from None
    if len(raw) != merkle.HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
        raise Malformed("a consistency proof line is not one base64 SHA-256 hash")
    return raw


# -- the witness rule (pure) ---------------------------------------------------------------------


class Status(enum.IntEnum):
    """The tlog-witness answers, with their HTTP status numbers."""

    OK = 200
    BAD_REQUEST = 400
    FORBIDDEN = 403  # no valid signature by the log's key
    NOT_FOUND = 404  # not a log this witness follows (the requester is not its core peer)
    CONFLICT = 409  # the old size is not ours, or same size with another root (a fork)
    BAD_PROOF = 422


@dataclass(frozen=True)
class Verdict:
    status: Status
    reason: str
    checkpoint: Checkpoint | None = None
    known_size: int | None = None  # CONFLICT: the size this witness last cosigned
    known_note: str | None = None  # ... and that note, with our cosignature, as proof of it
    evidence: bytes | None = None  # a fork proof (fork_evidence)
    cosignature: str | None = None  # OK, once the state is persisted: our cosignature line

    @property
    def fork(self) -> bool:
        return self.evidence is not None


def judge(
    request: AddCheckpoint,
    log: NodeId,
    latest: tuple[int, bytes, str] | None,
    same_size: tuple[bytes, str] | None,
) -> Verdict:
    """The witness's decision on ``request`` for the log of node ``log``.

    ``latest`` is the (size, root, note) it last cosigned for this log, if any; ``same_size``
    the (root, note) it cosigned earlier at the request's tree size, if any.
    """
    from ark_lattice.ledger import checkpoint_origin, key_name

    try:
        checkpoint = verify_checkpoint(request.note, log, key_name(log))
    except Malformed as exc:
        return Verdict(Status.BAD_REQUEST, f"not a signed checkpoint: {exc}")
    except BadSignature as exc:
        return Verdict(Status.FORBIDDEN, str(exc))
    if checkpoint.origin != checkpoint_origin(log):
        return Verdict(Status.NOT_FOUND, f"unknown log origin {checkpoint.origin[:64]!r}")
    if same_size is not None and same_size[0] != checkpoint.root_hash:
        # Signed by the log's key, same size, another root: that is the fork proof, whatever
        # the rest of the request says.
        return Verdict(
            Status.CONFLICT, f"two roots signed for size {checkpoint.size}: a fork",
            checkpoint, latest[0] if latest else 0, latest[2] if latest else None,
            fork_evidence(same_size[1], request.note),
        )
    if request.old_size > checkpoint.size:
        return Verdict(Status.BAD_REQUEST, "the old size is larger than the checkpoint's")
    known = latest[0] if latest else 0
    if request.old_size != known:
        return Verdict(
            Status.CONFLICT, f"this witness last cosigned size {known}", checkpoint, known,
            latest[2] if latest else None,
        )
    if latest is None:
        if request.proof:
            return Verdict(Status.BAD_PROOF, "the proof must be empty from size 0")
        return Verdict(Status.OK, "first checkpoint of this log", checkpoint)
    old_size, old_root, _ = latest
    try:
        merkle.verify_consistency(old_size, checkpoint.size, old_root, checkpoint.root_hash, request.proof)
    except VerificationError as exc:
        if old_size == checkpoint.size:  # unreachable with same_size given; kept for callers
            return Verdict(Status.CONFLICT, str(exc), checkpoint, old_size, latest[2])
        return Verdict(Status.BAD_PROOF, f"consistency proof from size {old_size}: {exc}", checkpoint)
    return Verdict(Status.OK, f"consistent with size {old_size}", checkpoint)


# -- fork proofs ---------------------------------------------------------------------------------


def fork_evidence(first_note: str, second_note: str) -> bytes:
    """Alert evidence: ``["fork", note_a, note_b]`` in canonical CBOR."""
    return canonical([FORK, first_note.encode("utf-8"), second_note.encode("utf-8")])


def fork_proven(raw: Any, about: str) -> bool:
    """Whether decoded evidence ``raw`` proves that node ``about`` signed two roots for one size.

    Never raises: anything that is not exactly such a proof is False.
    """
    from ark_lattice.ledger import checkpoint_origin, key_name

    if not (isinstance(raw, list) and len(raw) == 3 and raw[0] == FORK):
        return False
    first, second = raw[1], raw[2]
    if not isinstance(first, bytes) or not isinstance(second, bytes):
        return False
    try:
        node = NodeId.parse(about)
        a = verify_checkpoint(first, node, key_name(node))
        b = verify_checkpoint(second, node, key_name(node))
    except VerificationError:
        return False
    origin = checkpoint_origin(node)
    return a.origin == b.origin == origin and a.size == b.size and a.root_hash != b.root_hash


def decode_evidence(evidence: bytes) -> Any:
    return decode(evidence, max_size=64 * 1024, what="fork evidence")


# -- the witness side, over the store ------------------------------------------------------------


async def witness_request(store: Store, identity: Identity, log: NodeId, data: bytes, now: float) -> Verdict:
    """Judge an add-checkpoint request from the log of ``log`` and, if it passes, record the new
    state and return the verdict carrying our cosignature line.

    Reading the state, judging and persisting are one transaction (tlog-witness: otherwise two
    requests can race into a rollback); the cosignature is made only after the state is written.
    """
    try:
        request = AddCheckpoint.parse(data)
    except Malformed as exc:
        return Verdict(Status.BAD_REQUEST, str(exc))
    from ark_lattice.ledger import checkpoint_origin

    origin = checkpoint_origin(log)
    async with store.transaction():
        latest = await store.latest_witnessed(origin)
        try:
            size_hint = open_note(request.note)[0].size
        except Malformed as exc:
            return Verdict(Status.BAD_REQUEST, f"not a signed checkpoint: {exc}")
        same = await store.witnessed_at(origin, size_hint)
        verdict = judge(request, log, latest, same)
        if verdict.status is not Status.OK:
            return verdict
        checkpoint = verdict.checkpoint
        assert checkpoint is not None
        timestamp = max(0, int(now))
        line = cosign(checkpoint, identity, timestamp).line()
        note = cosigned_note(request.note, [line])
        await store.record_witnessed(origin, checkpoint.size, checkpoint.root_hash, note)
    return Verdict(Status.OK, verdict.reason, checkpoint, cosignature=line)


# -- the log side --------------------------------------------------------------------------------


async def build_request(store: Store, witness: NodeId, old_size: int | None) -> bytes | None:
    """Our add-checkpoint request for ``witness``: the newest checkpoint, with the consistency
    proof from ``old_size`` (default: the largest size that witness cosigned and we still hold
    the checkpoint of). None without a checkpoint, or when ``old_size`` is past it."""
    rows = await store.checkpoints()
    if not rows:
        return None
    size, _root, note = rows[-1]
    if old_size is None:
        ours = {s for s, _, _ in rows}
        cosigned = [c["size"] for c in await store.cosignatures() if c["witness"] == str(witness)]
        old_size = max((s for s in cosigned if s in ours and s <= size), default=0)
    if old_size > size:
        return None
    if old_size in (0, size):
        return AddCheckpoint(old_size, (), note).encode()  # nothing to prove: no need to read the log
    leaves: list[bytes] = []
    async for event in store.iter_events():
        if len(leaves) == size:
            break
        leaves.append(merkle.leaf_hash(event.hash))
    if len(leaves) < size:
        return None  # the checkpoint covers events we no longer hold: nothing honest to send
    proof = merkle.consistency_proof(leaves, old_size)
    return AddCheckpoint(old_size, tuple(proof), note).encode()


@dataclass(frozen=True)
class ReplyOutcome:
    stored: bool
    retry_from: int | None  # the witness last cosigned this size (≤ ours): ask again from it
    message: str
    bad: bool = False  # the witness sent something that does not check out (audited)


async def record_reply(
    store: Store, node_id: NodeId, witness: NodeId, status: int, body: bytes, note: bytes
) -> ReplyOutcome:
    """Keep what a witness answered, after checking it: a cosignature (200), or the note it last
    cosigned (409) — our own signed checkpoint with its cosignature, which is how a node whose
    newest events and checkpoints were deleted learns what it had signed."""
    from ark_lattice.ledger import key_name

    stored = False
    if note:
        stored = await _store_cosigned(store, node_id, witness, note)
    if status == Status.OK:
        try:
            text = body.decode("utf-8")
            rows = await store.checkpoints()
            if not rows:
                return ReplyOutcome(stored, None, "a cosignature but we hold no checkpoint")
            lines = [line for line in text.split("\n") if line]
            for size, _root, our_note in reversed(rows):
                checkpoint = verify_checkpoint(our_note, node_id, key_name(node_id))
                for line in lines:
                    cosig = Cosignature.parse_line(line)
                    if not cosig.is_by(witness):
                        continue
                    try:
                        cosig.verify(checkpoint.body(), witness)
                    except BadSignature:
                        continue
                    kept = cosigned_note(our_note, [line])
                    root = checkpoint.root_hash
                    await store.add_cosignature(str(witness), size, root, cosig.timestamp, kept)
                    return ReplyOutcome(True, None, f"cosigned size {size}")
        except VerificationError as exc:
            return ReplyOutcome(stored, None, f"a cosignature that does not verify: {exc}", bad=True)
        return ReplyOutcome(stored, None, "no cosignature by the witness on any checkpoint of ours", bad=True)
    if status == Status.CONFLICT:
        try:
            known = int(body.decode("ascii").strip() or "0")
        except (UnicodeDecodeError, ValueError):
            return ReplyOutcome(stored, None, "a conflict without a size", bad=True)
        return ReplyOutcome(stored, known, f"the witness last cosigned size {known}")
    return ReplyOutcome(stored, None, f"refused ({status}): {body[:200].decode('utf-8', 'replace')}")


async def _store_cosigned(store: Store, node_id: NodeId, witness: NodeId, note: bytes) -> bool:
    """Store a note of ours that ``witness`` cosigned, if both signatures verify."""
    from ark_lattice.ledger import key_name

    try:
        checkpoint = verify_checkpoint(note, node_id, key_name(node_id))
        _, signatures = open_note(note)
        for sig in signatures:
            if sig.key_name != witness_key_name(witness):
                continue
            cosig = Cosignature.from_note_signature(sig)
            cosig.verify(checkpoint.body(), witness)
            ours = [s for s in signatures if s.key_name == key_name(node_id)]
            text = checkpoint.body().decode("utf-8") + "\n" + "".join(s.line() for s in ours) + cosig.line()
            root = checkpoint.root_hash
            await store.add_cosignature(str(witness), checkpoint.size, root, cosig.timestamp, text)
            return True
    except VerificationError:
        return False
    return False


async def held_cosignatures(store: Store) -> list[dict[str, Any]]:
    """Every cosignature we hold on our checkpoints, oldest size first."""
    return await store.cosignatures()


# -- what `ledger verify` checks -----------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """A tree head the ledger must still have: ``size`` events hashing to ``root``."""

    size: int
    root: bytes
    source: str  # who says so, a noun phrase for the message ("the checkpoint in FILE")


async def expectations(store: Store, node_id: NodeId) -> list[Expected]:
    """The tree heads our witnesses cosigned, each checked (our signature and theirs) first."""
    from ark_lattice.ledger import checkpoint_origin, key_name

    out: list[Expected] = []
    for row in await store.cosignatures():
        where = f"cosignature by witness {row['witness'][:16]} of size {row['size']}"
        try:
            witness = NodeId.parse(row["witness"])
            checkpoint = verify_checkpoint(row["note"], node_id, key_name(node_id))
            _, signatures = open_note(row["note"])
            cosigs = [
                Cosignature.from_note_signature(s) for s in signatures
                if s.key_name == witness_key_name(witness)
            ]
            if not cosigs:
                raise BadSignature("the note carries no cosignature by that witness")
            for cosig in cosigs:
                cosig.verify(checkpoint.body(), witness)
        except VerificationError as exc:
            raise LedgerCorrupt(where, str(exc)) from None
        if checkpoint.origin != checkpoint_origin(node_id) or (checkpoint.size, checkpoint.root_hash) != (
            row["size"], row["root"]
        ):
            raise LedgerCorrupt(where, "its note does not match its row")
        source = f"the checkpoint witness {row['witness'][:16]} cosigned"
        out.append(Expected(checkpoint.size, checkpoint.root_hash, source))
    return out


def expected_from_note(note: str | bytes, node_id: NodeId, source: str) -> Expected:
    """A checkpoint held elsewhere (``ledger verify --against``): it must be ours, signed."""
    from ark_lattice.ledger import checkpoint_origin, key_name

    checkpoint = verify_checkpoint(note, node_id, key_name(node_id))
    if checkpoint.origin != checkpoint_origin(node_id):
        raise Malformed(f"the checkpoint is for another log ({checkpoint.origin[:80]})")
    return Expected(checkpoint.size, checkpoint.root_hash, source)


def check_expectations(expected: Sequence[Expected], roots_at: Mapping[int, bytes], size: int) -> None:
    """Raise :class:`LedgerCorrupt` for the first tree head the ledger does not have.

    A size past our end is a truncation and names the missing events; a size we hold with
    another root is a fork (or a rewrite re-signed with our own key)."""
    for e in sorted(expected, key=lambda e: -e.size):  # the largest truncation first
        if e.size > size:
            missing = f"event #{size + 1}" if e.size == size + 1 else f"events #{size + 1}..#{e.size}"
            raise LedgerCorrupt(
                missing, f"missing (truncated): the ledger holds {size} events but {e.source} covers {e.size}"
            )
    for e in sorted(expected, key=lambda e: e.size):
        if roots_at.get(e.size) != e.root:
            raise LedgerCorrupt(
                f"the first {e.size} events",
                f"they hash to another root than {e.source} ({e.root.hex()[:16]}): "
                "the ledger was rewritten (a fork)",
            )
