"""Signed envelopes (DESIGN §3): how every node-signed object is encoded, signed and checked.

A packet header, a peer manifest and a LAN announcement are each carried the same way:

- the **payload** is the canonical CBOR (RFC 8949 §4.2) of the object's list of fields;
- the **signature** is its node's Ed25519 signature over ``"ark-lattice/v<PROTOCOL_VERSION>/<purpose>\\x00"
  ‖ payload`` (:func:`ark_lattice.encoding.signing_input`), so a signature made for one object type
  or protocol version never verifies as another.

An :class:`Envelope` holds what differs between object types (the signing purpose, the payload's
size limit, the object's class) and does the rest once:

- :meth:`Envelope.seal`: check the object, encode it, sign the bytes with the node's identity;
- :meth:`Envelope.decode`: refuse an oversize payload before decoding it, decode it, build and check
  the object, encode it again and refuse it (:class:`Malformed`) unless the bytes are identical, so
  an object has exactly one encoding and one id;
- :meth:`Envelope.verify`: the Ed25519 check through libsodium, which is strict (it refuses a
  non-canonical ``S``, and small-order or non-canonical points), raising :class:`BadSignature`.

Where payload and signature travel as one byte string (a manifest frame, a beacon datagram) they
are canonical CBOR ``[payload, signature]``: :func:`pack` and :func:`unpack`, which holds that pair
to the same canonical rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

from ark_lattice.encoding import Purpose, canonical, decode
from ark_lattice.errors import BadSignature, Malformed
from ark_lattice.identity import Identity, NodeId

__all__ = ["Envelope", "Sealable", "pack", "unpack", "SIGNATURE_SIZE"]

SIGNATURE_SIZE = 64  # Ed25519 (RFC 8032 §5.1.6)


class Sealable(Protocol):
    """What an object offers to travel in an :class:`Envelope`."""

    @property
    def signer(self) -> NodeId:
        """The node whose signature the object must carry."""
        ...

    def check(self) -> None:
        """Raise :class:`Malformed` unless every field is within its type and size limits."""
        ...

    def to_fields(self) -> list[Any]:
        """The list of fields whose canonical CBOR is the payload."""
        ...

    @classmethod
    def from_fields(cls, raw: Any) -> Self:
        """The object from a decoded payload, shape-checked but not yet :meth:`check`-ed."""
        ...


T = TypeVar("T", bound=Sealable)


@dataclass(frozen=True)
class Envelope(Generic[T]):
    """The signed envelope of one object type; one instance per type, beside its class."""

    kind: type[T]
    purpose: str  # one of :class:`Purpose`: the domain-separation prefix of its signatures
    max_size: int  # bytes of payload, refused before decoding
    what: str  # the object's name in error messages: "packet header", "manifest", …

    def __post_init__(self) -> None:
        if self.purpose not in Purpose.ALL:
            raise ValueError(f"unknown signing purpose {self.purpose!r}")

    def encode(self, obj: T) -> bytes:
        """The canonical payload of ``obj``: the bytes its signature covers."""
        return canonical(obj.to_fields())

    def seal(self, identity: Identity, obj: T) -> tuple[bytes, bytes]:
        """Check ``obj`` and sign it with ``identity``: ``(payload, signature)``.

        Raises :class:`Malformed` for a field out of bounds and :class:`ValueError` if
        ``identity`` is not the object's signer.
        """
        if identity.node_id != obj.signer:
            raise ValueError(f"{self.what} of {obj.signer.short} signed by {identity.node_id.short}")
        obj.check()
        payload = self.encode(obj)
        return payload, identity.sign(self.purpose, payload)

    def decode(self, payload: bytes) -> T:
        """Parse and check an untrusted payload; only its canonical encoding is accepted."""
        obj = self.kind.from_fields(decode(payload, max_size=self.max_size, what=self.what))
        obj.check()
        if self.encode(obj) != payload:
            # Two encodings of one object would give it two ids, or let two carriers of one
            # announcement verify different bytes: only the canonical one is accepted.
            raise Malformed(f"{self.what} is not in canonical form")
        return obj

    def verify(self, signer: NodeId, payload: bytes, signature: bytes) -> None:
        """Raise :class:`BadSignature` unless ``signature`` is ``signer``'s over ``payload``."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            raise BadSignature(f"bad {self.purpose} signature")
        signer.verify(self.purpose, payload, signature)

    def open(self, payload: bytes, signature: bytes) -> T:
        """:meth:`decode`, then :meth:`verify` against the object's own signer."""
        obj = self.decode(payload)
        self.verify(obj.signer, payload, signature)
        return obj


def pack(payload: bytes, signature: bytes) -> bytes:
    """Payload and signature as one byte string: canonical CBOR ``[payload, signature]``."""
    return canonical([payload, signature])


def unpack(data: bytes, *, max_size: int, what: str) -> tuple[bytes, bytes]:
    """Split what :func:`pack` made; raise :class:`Malformed` for anything else.

    That includes a signature of the wrong size (so an unsigned object is malformed, not badly
    signed) and any non-canonical encoding of the pair.
    """
    raw = decode(data, max_size=max_size, what=what)
    if not isinstance(raw, list) or len(raw) != 2 or not all(isinstance(x, bytes) for x in raw):
        raise Malformed(f"{what} has the wrong shape")
    payload, signature = raw
    if len(signature) != SIGNATURE_SIZE:
        raise Malformed(f"{what} is unsigned or its signature has the wrong size")
    if pack(payload, signature) != data:
        raise Malformed(f"{what} is not in canonical form")
    return payload, signature
