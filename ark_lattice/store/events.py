"""Ledger events: the entries of the append-only hash chain (DESIGN §8).

Each entry commits to the one before it: ``hash = SHA-256(domain ‖ CBOR[seq, ts, kind, subject,
data, prev])``, so changing, inserting or deleting any entry breaks every link after it. The entry
hashes are also the leaves of the RFC 6962 Merkle tree that checkpoints sign.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cbor2

from ark_lattice.encoding import Purpose, canonical, signing_input

__all__ = ["Event", "EventKind", "GENESIS_PREV", "entry_hash", "stored_data"]

GENESIS_PREV = bytes(32)


class EventKind:
    """Every kind of state change the ledger records."""

    NODE_INITIALISED = "node.initialised"
    PACKET_STORED = "packet.stored"
    PACKET_PROMOTED = "packet.promoted"
    PEER_ADDED = "peer.added"
    PEER_TIER_CHANGED = "peer.tier_changed"
    PEER_REMOVED = "peer.removed"
    PEER_STRIKE = "peer.strike"
    PROTOCOL_ERROR = "protocol.error"
    CHECKPOINT = "checkpoint"
    POLICY_SET = "policy.set"
    POLICY_DECISION = "policy.decision"
    PEER_QUARANTINED = "peer.quarantined"  # an alert accused it: held until `until` unless proven
    PEER_QUARANTINE_LIFTED = "peer.quarantine_lifted"  # expired, or lifted by the operator
    INVITE_ISSUED = "invite.issued"  # `federation invite`: its id, expiry, uses and tier (no secret)
    PEER_INTRODUCED = "peer.introduced"  # a newcomer joined with one of our invites
    FEDERATION_JOINED = "federation.joined"  # we joined a federation with an invite
    ENDPOINT_REMOVED = "endpoint.removed"  # `federation endpoints remove`
    INVITE_REVOKED = "invite.revoked"  # `federation invites revoke`: nobody joins with it now
    GOVERNANCE_ADOPTED = "governance.adopted"  # subject: the proposal id; data: its approvals
    PEER_MANIFEST = "peer.manifest"  # a newer manifest of a peer: its seq is the rollback guard
    LEDGER_HEADS_STARTED = "ledger.heads_started"  # a ledger older than signed heads gets its first
    LEDGER_UNSIGNED = "ledger.unsigned"  # a writer found events no signed head covers (store/head.py)


_ENTRY_PREFIX = signing_input(Purpose.LEDGER_EVENT, b"")  # built once: verify hashes every event


def entry_hash(seq: int, ts: int, kind: str, subject: str, data: bytes, prev: bytes) -> bytes:
    entry = [seq, ts, kind, subject, data, prev]
    if (
        type(seq) is int and type(ts) is int and type(kind) is str and type(subject) is str
        and type(data) is bytes and type(prev) is bytes
    ):
        # A list of integers and strings has one encoding: cbor2 writes each integer in its
        # shortest form either way, and only maps (key order) and floats differ under
        # ``canonical``, which costs a third more. Any other value (a damaged row read back
        # by `ledger verify`) takes the canonical encoder, as every entry was hashed before.
        return hashlib.sha256(_ENTRY_PREFIX + cbor2.dumps(entry)).digest()
    return hashlib.sha256(_ENTRY_PREFIX + canonical(entry)).digest()


def stored_data(packet_id: bytes, source: str, quarantined: bool) -> bytes:
    """The canonical data of a ``packet.stored`` event: ``{"id", "source", "quarantined"}``.

    Written for every packet a node stores, so it skips the canonical encoder's sorting of the
    keys: they are written in canonical order here (shortest encoded key first: "id", "source",
    "quarantined"), and a byte string, a text string and a boolean each have one encoding.
    """
    if type(packet_id) is bytes and type(source) is str and type(quarantined) is bool:
        return cbor2.dumps({"id": packet_id, "source": source, "quarantined": quarantined})
    return canonical({"id": packet_id, "source": source, "quarantined": quarantined})


@dataclass(frozen=True)
class Event:
    seq: int
    ts: int
    kind: str
    subject: str
    data: bytes
    prev: bytes
    hash: bytes

    @property
    def fields(self) -> dict[str, Any]:
        """The decoded data map (for display; verification works on the raw bytes)."""
        try:
            value = cbor2.loads(self.data)
        except Exception:
            return {"undecodable": self.data.hex()}
        return value if isinstance(value, dict) else {"value": value}

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "subject": self.subject,
            "data": _jsonable(self.fields),
            "hash": self.hash.hex(),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
