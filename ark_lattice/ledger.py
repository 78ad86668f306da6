"""Tamper evidence for the store: signed checkpoints and full verification (DESIGN §8).

The ledger's event log is a hash chain; its entry hashes are the leaves of an RFC 6962 Merkle tree.
``anchor`` signs the tree head as a C2SP tlog-checkpoint note. ``verify`` recomputes everything that
can be recomputed and names the first entry that does not match:

1. every event hash and every link, in order, with no gap;
2. every checkpoint: its signature, its root against the recomputed tree, and the consistency proof
   between consecutive checkpoints (so a log rewritten and re-signed would still show the fork);
3. every packet: its id, signature and body hash, and that exactly the packets the log says were
   stored are present, in the quarantine state the log says;
4. every peer's tier against the replayed log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from ark_lattice import merkle, witness
from ark_lattice.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from ark_lattice.errors import LedgerCorrupt, VerificationError
from ark_lattice.identity import Identity, NodeId
from ark_lattice.packet import Packet
from ark_lattice.store.events import GENESIS_PREV, Event, EventKind, entry_hash
from ark_lattice.store.store import Store

__all__ = ["anchor", "verify", "VerifyReport", "checkpoint_origin", "key_name"]


@dataclass(frozen=True)
class VerifyReport:
    events: int
    packets: int
    checkpoints: int
    peers: int
    root: bytes
    seconds: float
    cosignatures: int = 0  # witnesses' cosignatures checked against the log (witness.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "events": self.events,
            "packets": self.packets,
            "checkpoints": self.checkpoints,
            "peers": self.peers,
            "root": self.root.hex(),
            "seconds": round(self.seconds, 3),
            "cosignatures": self.cosignatures,
        }


def checkpoint_origin(node_id: NodeId) -> str:
    return f"ark-lattice.ledger/{node_id}"


def key_name(node_id: NodeId) -> str:
    return f"ark-lattice-{node_id}"


async def anchor(store: Store, identity: Identity) -> tuple[Checkpoint, bool]:
    """Sign a checkpoint over every event so far; returns it and whether it is new.

    Anchoring a log that has not grown since the last checkpoint returns that checkpoint.
    """
    async with store.transaction():
        tree = merkle.CompactRange()
        last_kind = None
        async for event in store.iter_events():
            tree.append(merkle.leaf_hash(event.hash))
            last_kind = event.kind
        existing = await store.checkpoints()
        # The checkpoint's own event is the one entry a new checkpoint would add: not growth.
        if existing and (
            existing[-1][0] == tree.size
            or (existing[-1][0] == tree.size - 1 and last_kind == EventKind.CHECKPOINT)
        ):
            size, root, note = existing[-1]
            return Checkpoint(checkpoint_origin(identity.node_id), size, root), False
        checkpoint = Checkpoint(checkpoint_origin(identity.node_id), tree.size, tree.root())
        note = sign_checkpoint(checkpoint, identity, key_name(identity.node_id))
        await store.add_checkpoint(checkpoint.size, checkpoint.root_hash, note)
        return checkpoint, True


async def verify(
    store: Store,
    node_id: NodeId,
    *,
    progress: Callable[[int], None] | None = None,
    against: Sequence[witness.Expected] = (),
) -> VerifyReport:
    """Check the whole ledger; raise :class:`LedgerCorrupt` naming the first bad entry.

    ``against``: tree heads held elsewhere (``--against NOTE``) that the log must still have, as
    it must have every one a witness cosigned (witness.py)."""
    started = time.perf_counter()
    checkpoint_rows = await store.checkpoints()
    heads = [*await witness.expectations(store, node_id), *against]
    wanted_sizes = {size for size, _, _ in checkpoint_rows} | {e.size for e in heads}

    # 1. the chain
    leaves: list[bytes] = []
    roots_at: dict[int, bytes] = {}
    tree = merkle.CompactRange()
    replay = _Replay()
    prev, expected_seq = GENESIS_PREV, 1
    if 0 in wanted_sizes:
        roots_at[0] = tree.root()
    async for event in store.iter_events():
        where = f"event #{event.seq}"
        if event.seq != expected_seq:
            raise LedgerCorrupt(f"event #{expected_seq}", "missing (the sequence jumps)")
        if event.prev != prev:
            raise LedgerCorrupt(where, "does not link to the entry before it")
        if entry_hash(event.seq, event.ts, event.kind, event.subject, event.data, event.prev) != event.hash:
            raise LedgerCorrupt(where, "its hash does not match its contents")
        replay.apply(event, where)
        leaf = merkle.leaf_hash(event.hash)
        leaves.append(leaf)
        tree.append(leaf)
        if tree.size in wanted_sizes:
            roots_at[tree.size] = tree.root()
        prev, expected_seq = event.hash, expected_seq + 1
        if progress is not None and event.seq % 5000 == 0:
            progress(event.seq)

    # 1b. what witnesses cosigned (and --against): a shorter or different log is named here
    witness.check_expectations(heads, roots_at, tree.size)

    # 2. checkpoints
    origin, name = checkpoint_origin(node_id), key_name(node_id)
    previous: tuple[int, bytes] | None = None
    for size, root, note in checkpoint_rows:
        where = f"checkpoint of size {size}"
        try:
            cp = verify_checkpoint(note, node_id, name)
        except VerificationError as exc:
            raise LedgerCorrupt(where, str(exc)) from None
        if cp.origin != origin or cp.size != size or cp.root_hash != root:
            raise LedgerCorrupt(where, "its signed note does not match its row")
        if size not in roots_at:
            raise LedgerCorrupt(where, f"it covers {size} events but the log holds {tree.size}")
        if roots_at[size] != root:
            raise LedgerCorrupt(where, "its root does not match the events it covers")
        if replay.checkpoints.pop(size, None) != root:
            raise LedgerCorrupt(where, "no checkpoint event in the log records it")
        if previous is not None:
            old_size, old_root = previous
            try:
                proof = merkle.consistency_proof(leaves[:size], old_size)
                merkle.verify_consistency(old_size, size, old_root, root, proof)
            except VerificationError as exc:
                raise LedgerCorrupt(where, f"not consistent with the checkpoint before it: {exc}") from None
        previous = (size, root)
    if replay.checkpoints:
        size, seq = min(replay.checkpoint_seqs.items())
        raise LedgerCorrupt(f"event #{seq}", f"records a checkpoint of size {size} that is missing")

    # 3. packets
    packets = 0
    async for row in store.iter_rows(
        "SELECT id, created_at, topic, kind, author, header, signature, body, quarantined "
        "FROM packets ORDER BY created_at, id"
    ):
        pid, created_at, topic, kind, author, header, signature, body, quarantined = row
        where = f"packet {bytes(pid).hex()}"
        try:
            packet = Packet.from_parts(header, signature, body)
        except VerificationError as exc:
            raise LedgerCorrupt(where, str(exc)) from None
        if packet.id != pid:
            raise LedgerCorrupt(where, "its contents hash to another id")
        h = packet.header
        if (created_at, topic, kind, author) != (h.created_at, h.topic, h.kind, str(h.author)):
            raise LedgerCorrupt(where, "its indexed columns do not match its signed header")
        expected = replay.packets.pop(pid, None)
        if expected is None:
            raise LedgerCorrupt(where, "no event in the log records storing it")
        if bool(quarantined) != expected[0]:
            raise LedgerCorrupt(where, "its quarantine state differs from the log")
        packets += 1
    if replay.packets:
        pid, (_, seq) = min(replay.packets.items(), key=lambda item: item[1][1])
        raise LedgerCorrupt(f"event #{seq}", f"records packet {pid.hex()} that is missing")

    # 4. peers
    peers = 0
    async for row in store.iter_rows("SELECT id, tier FROM peers ORDER BY id"):
        peer_id, tier = row
        where = f"peer {peer_id}"
        expected_tier = replay.peers.pop(peer_id, None)
        if expected_tier is None:
            raise LedgerCorrupt(where, "no event in the log records adding it")
        if tier != expected_tier:
            raise LedgerCorrupt(where, f"its tier {tier} differs from {expected_tier} in the log")
        peers += 1
    if replay.peers:
        peer_id = min(replay.peers)
        raise LedgerCorrupt(f"peer {peer_id}", "the log records it but its row is missing")

    return VerifyReport(
        events=tree.size,
        packets=packets,
        checkpoints=len(checkpoint_rows),
        peers=peers,
        root=tree.root(),
        seconds=time.perf_counter() - started,
        cosignatures=len(heads) - len(against),
    )


class _Replay:
    """The state the event log implies, rebuilt entry by entry."""

    def __init__(self) -> None:
        self.packets: dict[bytes, tuple[bool, int]] = {}  # id -> (quarantined, seq stored)
        self.peers: dict[str, str] = {}  # node id -> tier
        self.checkpoints: dict[int, bytes] = {}  # size -> root
        self.checkpoint_seqs: dict[int, int] = {}  # size -> seq

    def apply(self, event: Event, where: str) -> None:
        kind = event.kind
        if kind not in _REPLAYED:
            return
        try:
            data = cbor2.loads(event.data)
        except Exception:
            raise LedgerCorrupt(where, "its data is not valid CBOR") from None
        if not isinstance(data, dict):
            raise LedgerCorrupt(where, "its data is not a map")
        try:
            if kind == EventKind.PACKET_STORED:
                self.packets[data["id"]] = (bool(data["quarantined"]), event.seq)
            elif kind == EventKind.PACKET_PROMOTED:
                _, seq = self.packets[data["id"]]
                self.packets[data["id"]] = (False, seq)
            elif kind == EventKind.PEER_ADDED:
                self.peers[event.subject] = data["tier"]
            elif kind == EventKind.PEER_TIER_CHANGED:
                self.peers[event.subject] = data["new"]
            elif kind == EventKind.PEER_REMOVED:
                del self.peers[event.subject]
            elif kind == EventKind.CHECKPOINT:
                self.checkpoints[data["size"]] = data["root"]
                self.checkpoint_seqs[data["size"]] = event.seq
        except (KeyError, TypeError):
            raise LedgerCorrupt(where, f"a {kind} event that does not fit the log before it") from None


_REPLAYED = frozenset(
    {
        EventKind.PACKET_STORED,
        EventKind.PACKET_PROMOTED,
        EventKind.PEER_ADDED,
        EventKind.PEER_TIER_CHANGED,
        EventKind.PEER_REMOVED,
        EventKind.CHECKPOINT,
    }
)
