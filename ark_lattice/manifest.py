"""Signed peer manifests (DESIGN §3): who a node is, how to reach it, what it can do.

A manifest carries a sequence number that only grows; a receiver keeps the highest it has accepted
from each node and refuses older ones (rollback), as well as expired ones and bad signatures.
It travels in :data:`MANIFEST_ENVELOPE` (``envelope.py``): canonical CBOR ``[payload, signature]``,
both parts in canonical form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ark_lattice import __version__
from ark_lattice.encoding import Purpose
from ark_lattice.envelope import Envelope, pack, unpack
from ark_lattice.errors import Expired, Malformed, Rollback
from ark_lattice.identity import Identity, NodeId

__all__ = [
    "PeerManifest",
    "SignedManifest",
    "MANIFEST_ENVELOPE",
    "MANIFEST_VERSION",
    "MAX_MANIFEST",
    "MAX_SIGNED_MANIFEST",
    "DEFAULT_LIFETIME",
]

MANIFEST_VERSION = 1
MAX_MANIFEST = 4096
MAX_SIGNED_MANIFEST = MAX_MANIFEST + 128  # docs/protocol.md §6: 4224 bytes
MAX_ENDPOINTS = 16
MAX_CAPABILITIES = 32
DEFAULT_LIFETIME = 24 * 3600  # seconds; re-issued at every start, so a day is ample


@dataclass(frozen=True)
class PeerManifest:
    node_id: NodeId
    name: str
    seq: int
    issued_at: int  # Unix seconds
    expires_at: int
    endpoints: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    version: str = __version__

    def check(self) -> None:
        if not isinstance(self.name, str) or len(self.name) > 64:
            raise Malformed("manifest name must be a string of at most 64 characters")
        if not isinstance(self.version, str) or len(self.version) > 32:
            raise Malformed("manifest version must be a short string")
        for n in (self.seq, self.issued_at, self.expires_at):
            if not isinstance(n, int) or not 0 <= n < 1 << 63:
                raise Malformed("manifest numbers must be non-negative 63-bit integers")
        if self.expires_at <= self.issued_at:
            raise Malformed("manifest expires before it was issued")
        if len(self.endpoints) > MAX_ENDPOINTS or not all(
            isinstance(e, str) and len(e) <= 256 for e in self.endpoints
        ):
            raise Malformed(f"manifest lists over {MAX_ENDPOINTS} endpoints or a bad one")
        if len(self.capabilities) > MAX_CAPABILITIES or not all(
            isinstance(c, str) and len(c) <= 64 for c in self.capabilities
        ):
            raise Malformed("manifest capabilities must be short strings")

    @property
    def signer(self) -> NodeId:
        return self.node_id

    def to_fields(self) -> list[Any]:
        return [
            MANIFEST_VERSION,
            self.node_id.key,
            self.name,
            self.version,
            self.seq,
            self.issued_at,
            self.expires_at,
            list(self.endpoints),
            list(self.capabilities),
        ]

    @classmethod
    def from_fields(cls, raw: Any) -> PeerManifest:
        if not isinstance(raw, list) or len(raw) != 9 or raw[0] != MANIFEST_VERSION:
            raise Malformed("manifest has the wrong shape or version")
        _, key, name, version, seq, issued_at, expires_at, endpoints, caps = raw
        if not isinstance(key, bytes) or not isinstance(endpoints, list) or not isinstance(caps, list):
            raise Malformed("manifest has the wrong shape")
        return cls(NodeId(key), name, seq, issued_at, expires_at, tuple(endpoints), tuple(caps), version)

    def encode(self) -> bytes:
        return MANIFEST_ENVELOPE.encode(self)

    @classmethod
    def parse(cls, data: bytes) -> PeerManifest:
        """Decode and check a payload; only its canonical encoding is accepted."""
        return MANIFEST_ENVELOPE.decode(data)

    def sign(self, identity: Identity) -> SignedManifest:
        """Raises :class:`ValueError` unless ``identity`` is the node the manifest describes."""
        payload, signature = MANIFEST_ENVELOPE.seal(identity, self)
        return SignedManifest(self, payload, signature)


MANIFEST_ENVELOPE = Envelope(PeerManifest, Purpose.MANIFEST, MAX_MANIFEST, "manifest")


@dataclass(frozen=True)
class SignedManifest:
    manifest: PeerManifest
    payload: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return pack(self.payload, self.signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedManifest:
        """Parse and check the signature; call :meth:`check_fresh` for expiry and rollback."""
        payload, signature = unpack(data, max_size=MAX_SIGNED_MANIFEST, what="signed manifest")
        return cls(MANIFEST_ENVELOPE.open(payload, signature), payload, signature)

    def check_fresh(self, now: int, held_seq: int | None = None) -> None:
        """Refuse an expired manifest, or one older than the sequence number already held."""
        if now >= self.manifest.expires_at:
            raise Expired(f"manifest of {self.manifest.node_id.short} expired")
        if held_seq is not None and self.manifest.seq < held_seq:
            raise Rollback(
                f"manifest of {self.manifest.node_id.short} has sequence {self.manifest.seq}, "
                f"older than {held_seq} already held"
            )

