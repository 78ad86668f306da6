"""The signed ledger head: no rewrite of the ledger without the node's key (DESIGN §8).

The hash chain and the Merkle tree are unkeyed: anyone who can write the database file can append
validly hashed events, cut the log back, or strip the checkpoints and re-chain everything. So
every write transaction ends, just before ``COMMIT``, with a *head* signed by the node's Ed25519
key and stored in ``meta`` under ``head``::

    payload   = canonical CBOR [node id, size, hash, manifest_seq]
    signature = Ed25519(signing_input("ledger-head", payload))

``size`` is the number of events, ``hash`` the last event's hash (it commits to every event
before it) and ``manifest_seq`` the counter that keeps this node's manifests moving forward (a
lowered counter would make peers refuse our manifests as rollbacks). One signature per
transaction, not per event, and only for transactions that appended an event or moved that
counter.

``ledger verify`` checks the head against the log it holds: events appended without the key are
not covered, a log cut back is shorter than the head, a changed counter does not match it.

Before the first event of a transaction, the writer checks that the head still covers the log as
it finds it. If not, someone wrote without the key, and the writer says so in the chain itself
(a ``ledger.unsigned`` event, see :func:`continuity`) rather than sign over the foreign events:
the evidence stays in the log, the node keeps working, and ``verify`` names that event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import cbor2

from ark_lattice.encoding import Purpose, canonical

__all__ = [
    "HEAD_KEY",
    "PROTECTED_META",
    "Head",
    "HeadSigner",
    "decode_head",
    "continuity",
    "HEADS_FLAG",
]

HEAD_KEY = "head"
# meta keys whose value the head signs: a change by a transaction makes it sign a new head.
PROTECTED_META = frozenset({"manifest_seq"})
# Set in the data of event #1 (`node.initialised`) of a ledger written with signed heads from the
# start, so a deleted head row is never mistaken for a ledger older than signed heads.
HEADS_FLAG = "signed_heads"


class HeadSigner(Protocol):
    """What the store needs of an identity: its node id and a domain-separated signature."""

    @property
    def node_id(self) -> Any: ...

    def sign(self, purpose: str, payload: bytes) -> bytes: ...


@dataclass(frozen=True)
class Head:
    node_id: str
    size: int
    hash: bytes
    manifest_seq: int
    signature: bytes = b""

    def payload(self) -> bytes:
        return canonical([self.node_id, self.size, self.hash, self.manifest_seq])

    def signed(self, signer: HeadSigner) -> Head:
        unsigned = Head(str(signer.node_id), self.size, self.hash, self.manifest_seq)
        return Head(
            unsigned.node_id,
            unsigned.size,
            unsigned.hash,
            unsigned.manifest_seq,
            signer.sign(Purpose.LEDGER_HEAD, unsigned.payload()),
        )

    def to_bytes(self) -> bytes:
        return canonical(
            {
                "node": self.node_id,
                "size": self.size,
                "hash": self.hash,
                "manifest_seq": self.manifest_seq,
                "sig": self.signature,
            }
        )


def decode_head(value: object) -> Head | None:
    """The head stored in ``meta``, or None if it is not a well-formed head."""
    if not isinstance(value, bytes):
        return None
    try:
        doc = cbor2.loads(value)
        head = Head(doc["node"], doc["size"], doc["hash"], doc["manifest_seq"], doc["sig"])
    except Exception:  # cbor2 raises many types on garbage; a wrong shape is KeyError/TypeError
        return None
    types_ok = (
        isinstance(head.node_id, str)
        and isinstance(head.size, int)
        and isinstance(head.hash, bytes)
        and isinstance(head.manifest_seq, int)
        and isinstance(head.signature, bytes)
    )
    return head if types_ok else None


def continuity(
    head: Head | None, tip_size: int, tip_hash: bytes, heads_in_force: bool
) -> dict[str, Any] | None:
    """Whether a writer may sign over the log it found; if not, the ``ledger.unsigned`` data.

    ``tip_*`` is the log as the transaction found it, before its own events. ``heads_in_force``
    says the log was written with signed heads (event #1 carries :data:`HEADS_FLAG`, or signing
    began later with a ``ledger.heads_started`` event); without it a missing head is a ledger
    from before signed heads, which the writer starts signing from here on.
    """
    if head is None:
        if tip_size == 0 or not heads_in_force:
            return None
        return {"head": 0, "size": tip_size, "why": "the signed head is missing"}
    if head.size == tip_size and head.hash == tip_hash:
        return None
    if head.size < tip_size:
        why = f"events #{head.size + 1}-#{tip_size} were written without the node's key"
    elif head.size > tip_size:
        why = f"the log was cut back from {head.size} to {tip_size} events"
    else:
        why = f"event #{tip_size} is not the one the signed head covers"
    return {"head": head.size, "size": tip_size, "why": why}
