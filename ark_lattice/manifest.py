"""Signed peer manifests (DESIGN §3): who a node is, how to reach it, what it can do.

A manifest carries a sequence number that only grows; a receiver keeps the highest it has accepted
from each node and refuses older ones (rollback), as well as expired ones and bad signatures.
"""

from __future__ import annotations

from dataclasses import dataclass

from ark_lattice import __version__
from ark_lattice.encoding import Purpose, canonical, decode
from ark_lattice.errors import Expired, Malformed, Rollback
from ark_lattice.identity import Identity, NodeId

__all__ = ["PeerManifest", "SignedManifest", "MANIFEST_VERSION", "MAX_MANIFEST", "DEFAULT_LIFETIME"]

MANIFEST_VERSION = 1
MAX_MANIFEST = 4096
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

    def encode(self) -> bytes:
        return canonical(
            [
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
        )

    @classmethod
    def parse(cls, data: bytes) -> PeerManifest:
        raw = decode(data, max_size=MAX_MANIFEST, what="manifest")
        if not isinstance(raw, list) or len(raw) != 9 or raw[0] != MANIFEST_VERSION:
            raise Malformed("manifest has the wrong shape or version")
        _, key, name, version, seq, issued_at, expires_at, endpoints, caps = raw
        if not isinstance(key, bytes) or not isinstance(endpoints, list) or not isinstance(caps, list):
            raise Malformed("manifest has the wrong shape")
        m = cls(NodeId(key), name, seq, issued_at, expires_at, tuple(endpoints), tuple(caps), version)
        m.check()
        return m

    def sign(self, identity: Identity) -> SignedManifest:
        if identity.node_id != self.node_id:
            raise ValueError("a manifest can only be signed by the node it describes")
        self.check()
        payload = self.encode()
        return SignedManifest(self, payload, identity.sign(Purpose.MANIFEST, payload))


@dataclass(frozen=True)
class SignedManifest:
    manifest: PeerManifest
    payload: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return canonical([self.payload, self.signature])

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedManifest:
        """Parse and check the signature; call :meth:`check_fresh` for expiry and rollback."""
        raw = decode(data, max_size=MAX_MANIFEST + 128, what="signed manifest")
        if not isinstance(raw, list) or len(raw) != 2 or not all(isinstance(x, bytes) for x in raw):
            raise Malformed("signed manifest has the wrong shape")
        payload, signature = raw
        manifest = PeerManifest.parse(payload)
        manifest.node_id.verify(Purpose.MANIFEST, payload, signature)
        return cls(manifest, payload, signature)

    def check_fresh(self, now: int, held_seq: int | None = None) -> None:
        """Refuse an expired manifest, or one older than the sequence number already held."""
        if now >= self.manifest.expires_at:
            raise Expired(f"manifest of {self.manifest.node_id.short} expired")
        if held_seq is not None and self.manifest.seq < held_seq:
            raise Rollback(
                f"manifest of {self.manifest.node_id.short} has sequence {self.manifest.seq}, "
                f"older than {held_seq} already held"
            )
