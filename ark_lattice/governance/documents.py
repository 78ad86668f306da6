"""Governance documents (DESIGN §10): membership, proposals and approvals, each a signed packet.

All three travel as packets on topic ``governance`` and sync (and flood) like any packet; their
bodies are canonical CBOR (RFC 8949 §4.2, ``encoding.py``) lists, accepted only in that one
encoding, so each document has one body and its packet one id:

- ``membership`` (the genesis, version 1, signed by the founder)::

      [1, version, threshold, [member public keys, 32 bytes each, sorted]]

- ``proposal``::

      [1, kind, base, new, payload_hash, signers_hash, k, created, not_before, expires, payload]

  ``kind`` is one of :data:`PROPOSAL_KINDS`; ``new`` is ``base + 1``; ``payload_hash`` is the
  SHA-256 of ``payload``; ``signers_hash`` (:func:`signers_hash`) and ``k`` freeze the eligible
  signer set and threshold of the membership in force when it was proposed; times are Unix seconds.

- ``approval``::

      [1, proposal_id, kind, base, expires]

  The approver's Ed25519 packet signature is the approval; its packet's signed time is when it was
  given, and ``expires`` repeats the proposal's. Naming kind, base and expiry makes two approvals
  by one key of two proposals for one (kind, base) whose windows overlap — from its signing to its
  proposal's expiry, both could count at once — *self-contained* evidence of equivocation
  (:func:`approval_equivocation`), checkable without either proposal. An approval given after the
  other's proposal expired is not: a member may approve anew once a proposal lapsed.

Pure: no clock, no I/O; the caller passes times in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ark_lattice.encoding import canonical, decode, sha256
from ark_lattice.errors import Malformed, VerificationError
from ark_lattice.hlc import unpack
from ark_lattice.identity import Identity, NodeId
from ark_lattice.packet import MAX_BODY, Packet
from ark_lattice.tiers import TrustTier

__all__ = [
    "TOPIC",
    "MEMBERSHIP_KIND",
    "PROPOSAL_KIND",
    "APPROVAL_KIND",
    "GOVERNANCE_KINDS",
    "PROPOSAL_KINDS",
    "EQUIVOCATION_TAG",
    "MAX_MEMBERS",
    "Membership",
    "Proposal",
    "Approval",
    "default_threshold",
    "check_threshold",
    "signers_hash",
    "members_payload",
    "decode_members_payload",
    "tier_payload",
    "decode_tier_payload",
    "round_payload",
    "decode_round_payload",
    "membership_packet",
    "proposal_packet",
    "approval_packet",
    "approval_evidence",
    "approval_equivocation",
    "packet_bytes",
    "packet_from_bytes",
]

TOPIC = "governance"
MEMBERSHIP_KIND = "membership"
PROPOSAL_KIND = "proposal"
APPROVAL_KIND = "approval"
GOVERNANCE_KINDS = frozenset({MEMBERSHIP_KIND, PROPOSAL_KIND, APPROVAL_KIND})
PROPOSAL_KINDS = ("policy", "tier", "members", "round")
EQUIVOCATION_TAG = "approval-equivocation"
VERSION = 1
MAX_MEMBERS = 256
MAX_PAYLOAD = 256 * 1024  # a policy bundle is a few KiB; the packet limit is 1 MiB
_KEY = 32


def default_threshold(n: int) -> int:
    """⌊2n/3⌋ + 1: a 2f+1 quorum of n = 3f+1 (DESIGN §10)."""
    return (2 * n) // 3 + 1


def check_threshold(k: int, n: int) -> None:
    """Raise :class:`Malformed` unless 1 ≤ n ≤ MAX_MEMBERS and n/2 < k ≤ n.

    k ≤ n/2 is refused: two disjoint halves could then adopt conflicting proposals."""
    if not isinstance(n, int) or not 1 <= n <= MAX_MEMBERS:
        raise Malformed(f"a membership has 1 to {MAX_MEMBERS} members")
    if isinstance(k, bool) or not isinstance(k, int) or not 2 * k > n or k > n:
        raise Malformed(f"threshold {k!r} of {n} members: it must be more than {n}/2 and at most {n}")


def signers_hash(members: tuple[bytes, ...]) -> bytes:
    """The hash of an eligible signer set: SHA-256 of the canonical CBOR of its sorted keys."""
    return sha256(canonical(sorted(members)))


def _check_keys(keys: object) -> tuple[bytes, ...]:
    if not isinstance(keys, list) or not all(isinstance(k, bytes) and len(k) == _KEY for k in keys):
        raise Malformed("members must be a list of 32-byte public keys")
    if len(set(keys)) != len(keys):
        # One key listed twice would count twice toward n; a set of distinct keys only.
        raise Malformed("a member key is listed twice")
    if keys != sorted(keys):
        raise Malformed("member keys must be sorted")
    return tuple(keys)


@dataclass(frozen=True)
class Membership:
    """Who may approve, and how many approvals adopt: version ``version`` of the federation's."""

    version: int
    threshold: int
    members: tuple[bytes, ...]  # 32-byte Ed25519 public keys, sorted, distinct
    established_by: bytes  # the genesis packet's id, or the adopted members proposal's

    @property
    def signers_hash(self) -> bytes:
        return signers_hash(self.members)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "threshold": self.threshold,
            "members": [str(NodeId(k)) for k in self.members],
            "signers_hash": self.signers_hash.hex(),
            "established_by": self.established_by.hex(),
        }

    @classmethod
    def from_packet(cls, packet: Packet) -> Membership:
        """The genesis document a ``membership`` packet carries; Malformed otherwise."""
        raw = _body(packet, MEMBERSHIP_KIND, 4)
        _, version, threshold, keys = raw
        if version != 1:
            raise Malformed("only the genesis (version 1) membership is a packet of its own")
        members = _check_keys(keys)
        check_threshold(threshold, len(members))
        return cls(version, threshold, members, packet.id)


@dataclass(frozen=True)
class Proposal:
    id: bytes
    author: bytes
    kind: str
    base: int
    new: int
    payload_hash: bytes
    signers_hash: bytes
    k: int
    created: int
    not_before: int
    expires: int
    payload: bytes

    @classmethod
    def from_packet(cls, packet: Packet) -> Proposal:
        raw = _body(packet, PROPOSAL_KIND, 11)
        _, kind, base, new, payload_hash, signers, k, created, not_before, expires, payload = raw
        if kind not in PROPOSAL_KINDS:
            raise Malformed(f"unknown proposal kind {kind!r}")
        for name, value in (("base", base), ("k", k), ("created", created), ("not_before", not_before),
                            ("expires", expires)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 62:
                raise Malformed(f"proposal {name} must be a whole number")
        if new != base + 1:
            raise Malformed("a proposal's new version is its base version + 1")
        if not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD:
            raise Malformed(f"proposal payload must be at most {MAX_PAYLOAD} bytes")
        if payload_hash != sha256(payload):
            raise Malformed("proposal payload does not match its hash")
        if not isinstance(signers, bytes) or len(signers) != 32:
            raise Malformed("proposal signers hash must be 32 bytes")
        if not not_before <= expires:
            raise Malformed("a proposal expires before it may be adopted")
        _check_payload(kind, payload)
        return cls(packet.id, packet.header.author.key, kind, base, new, payload_hash, signers, k,
                   created, not_before, expires, payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "author": str(NodeId(self.author)),
            "kind": self.kind,
            "base": self.base,
            "new": self.new,
            "payload_hash": self.payload_hash.hex(),
            "signers_hash": self.signers_hash.hex(),
            "k": self.k,
            "created": self.created,
            "not_before": self.not_before,
            "expires": self.expires,
        }


@dataclass(frozen=True)
class Approval:
    id: bytes
    approver: bytes  # the packet author's 32-byte public key: what counts, never the id
    proposal: bytes
    kind: str
    base: int
    expires: int  # the proposal's expiry, repeated: the approval's window is [signed_at, expires]
    signed_at: float  # the approver's own signed time (its HLC's physical part), Unix seconds

    def overlaps(self, other: Approval) -> bool:
        """Both could count at one moment: their windows [signed_at, expires] intersect."""
        return self.signed_at <= other.expires and other.signed_at <= self.expires

    def conflicts(self, other: Approval) -> bool:
        """Equivocation: one key, one (kind, base), two proposals, overlapping windows."""
        return (
            self.approver == other.approver
            and (self.kind, self.base) == (other.kind, other.base)
            and self.proposal != other.proposal
            and self.overlaps(other)
        )

    @classmethod
    def from_packet(cls, packet: Packet) -> Approval:
        raw = _body(packet, APPROVAL_KIND, 5)
        _, proposal, kind, base, expires = raw
        if not isinstance(proposal, bytes) or len(proposal) != 32:
            raise Malformed("an approval names a proposal's 32-byte id")
        if kind not in PROPOSAL_KINDS:
            raise Malformed(f"unknown proposal kind {kind!r}")
        if isinstance(base, bool) or not isinstance(base, int) or not 0 <= base < 1 << 62:
            raise Malformed("approval base must be a whole number")
        if isinstance(expires, bool) or not isinstance(expires, int) or not 0 <= expires < 1 << 62:
            raise Malformed("approval expires must be a whole number")
        physical_ms, _ = unpack(packet.header.created_at)
        return cls(packet.id, packet.header.author.key, proposal, kind, base, expires, physical_ms / 1000)


def _body(packet: Packet, kind: str, length: int) -> list[Any]:
    if packet.header.kind != kind:
        raise Malformed(f"a packet of kind {packet.header.kind!r} is not a {kind}")
    if packet.header.topic != TOPIC:
        raise Malformed(f"governance packets travel on topic {TOPIC!r}")
    raw = decode(packet.body, max_size=MAX_BODY, what=kind)
    if not isinstance(raw, list) or len(raw) != length or raw[0] != VERSION or type(raw[0]) is not int:
        raise Malformed(f"{kind} has the wrong shape or version")
    if canonical(raw) != packet.body:
        raise Malformed(f"{kind} is not in canonical form")
    return raw


# -- payloads ---------------------------------------------------------------------------------


def members_payload(threshold: int, members: list[bytes]) -> bytes:
    keys = sorted(set(members))  # one key named twice (in two spellings) is one member
    check_threshold(threshold, len(keys))
    return canonical([threshold, keys])


def decode_members_payload(payload: bytes) -> tuple[int, tuple[bytes, ...]]:
    raw = decode(payload, max_size=MAX_PAYLOAD, what="members payload")
    if not isinstance(raw, list) or len(raw) != 2 or canonical(raw) != payload:
        raise Malformed("members payload has the wrong shape")
    threshold, keys = raw
    members = _check_keys(keys)
    check_threshold(threshold, len(members))
    return threshold, members


def tier_payload(peer: NodeId, tier: TrustTier) -> bytes:
    return canonical([peer.key, tier.value])


def decode_tier_payload(payload: bytes) -> tuple[NodeId, TrustTier]:
    raw = decode(payload, max_size=MAX_PAYLOAD, what="tier payload")
    if not isinstance(raw, list) or len(raw) != 2 or canonical(raw) != payload:
        raise Malformed("tier payload has the wrong shape")
    key, tier = raw
    if not isinstance(key, bytes) or len(key) != _KEY or not isinstance(tier, str):
        raise Malformed("tier payload names a 32-byte key and a tier")
    try:
        return NodeId(key), TrustTier(tier)
    except ValueError:
        raise Malformed(f"unknown tier {tier!r}") from None


def round_payload(config: dict[str, Any]) -> bytes:
    payload = canonical(config)
    decode_round_payload(payload)
    return payload


def decode_round_payload(payload: bytes) -> dict[str, Any]:
    """A round's configuration: a map with at least ``model`` (text) and ``round`` (a number)."""
    raw = decode(payload, max_size=MAX_PAYLOAD, what="round payload")
    if not isinstance(raw, dict) or canonical(raw) != payload:
        raise Malformed("round payload must be a map")
    if not isinstance(raw.get("model"), str) or isinstance(raw.get("round"), bool) or not isinstance(
        raw.get("round"), int
    ):
        raise Malformed("round payload names a model (text) and a round (a whole number)")
    return raw


def _check_payload(kind: str, payload: bytes) -> None:
    """Malformed unless ``payload`` is a valid payload of ``kind`` (a policy's rules are compiled
    where it is applied: CEL is the node's to load, not the documents')."""
    if kind == "members":
        decode_members_payload(payload)
    elif kind == "tier":
        decode_tier_payload(payload)
    elif kind == "round":
        decode_round_payload(payload)
    else:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("a policy payload is UTF-8 text") from None


# -- packets ----------------------------------------------------------------------------------


def membership_packet(identity: Identity, threshold: int, members: list[bytes], *, created_at: int) -> Packet:
    keys = sorted(set(members))
    check_threshold(threshold, len(keys))
    body = canonical([VERSION, 1, threshold, keys])
    return Packet.create(identity, topic=TOPIC, kind=MEMBERSHIP_KIND, body=body, created_at=created_at)


def proposal_packet(
    identity: Identity,
    *,
    kind: str,
    base: int,
    membership: Membership,
    payload: bytes,
    created: int,
    not_before: int,
    expires: int,
    created_at: int,
) -> Packet:
    if kind not in PROPOSAL_KINDS:
        raise Malformed(f"unknown proposal kind {kind!r}; one of {', '.join(PROPOSAL_KINDS)}")
    body = canonical([
        VERSION, kind, base, base + 1, sha256(payload), membership.signers_hash, membership.threshold,
        created, not_before, expires, payload,
    ])
    packet = Packet.create(identity, topic=TOPIC, kind=PROPOSAL_KIND, body=body, created_at=created_at)
    Proposal.from_packet(packet)  # the same checks a receiver makes
    return packet


def approval_packet(identity: Identity, proposal: Proposal, *, created_at: int) -> Packet:
    body = canonical([VERSION, proposal.id, proposal.kind, proposal.base, proposal.expires])
    return Packet.create(identity, topic=TOPIC, kind=APPROVAL_KIND, body=body, created_at=created_at)


def packet_bytes(packet: Packet) -> bytes:
    """A packet as one byte string anyone can re-verify: canonical CBOR [header, signature, body]."""
    return canonical([packet.header_bytes, packet.signature, packet.body])


def packet_from_bytes(data: bytes) -> Packet:
    """The packet :func:`packet_bytes` made, fully verified (strict Ed25519 through libsodium)."""
    raw = decode(data, max_size=MAX_BODY + 8192, what="packet")
    if not isinstance(raw, list) or len(raw) != 3 or not all(isinstance(x, bytes) for x in raw):
        raise Malformed("packet has the wrong shape")
    if canonical(raw) != data:
        raise Malformed("packet is not in canonical form")
    return Packet.from_parts(raw[0], raw[1], raw[2])


def approval_evidence(first: Packet, second: Packet) -> bytes:
    """Alert evidence that one key approved two proposals for one (kind, base)."""
    return canonical([EQUIVOCATION_TAG, packet_bytes(first), packet_bytes(second)])


def approval_equivocation(evidence: bytes, about: str) -> bool:
    """True iff ``evidence`` proves that ``about`` signed approvals of two different proposals
    for the same (kind, base) with overlapping windows: both packets verify, both are
    ``about``'s. Never raises."""
    try:
        raw = decode(evidence, max_size=2 * (MAX_BODY + 8192), what="evidence")
        if not (isinstance(raw, list) and len(raw) == 3 and raw[0] == EQUIVOCATION_TAG):
            return False
        if not all(isinstance(x, bytes) for x in raw[1:]) or canonical(raw) != evidence:
            return False
        a = Approval.from_packet(packet_from_bytes(raw[1]))
        b = Approval.from_packet(packet_from_bytes(raw[2]))
    except (VerificationError, ValueError, TypeError):
        return False
    return a.conflicts(b) and str(NodeId(a.approver)) == about
