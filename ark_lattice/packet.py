"""Knowledge packets (DESIGN §4): immutable, signed by their author, addressed by content.

A packet is three byte strings: the canonical CBOR header, the author's Ed25519 signature over it
(purpose ``packet``; the header travels in :data:`HEADER_ENVELOPE`, see ``envelope.py``), and the raw
body. The header commits to the body by its SHA-256, and the packet
id is ``SHA-256(header ‖ signature)``, so the id commits to everything and a relayed packet is still
verifiably the author's. Bodies stay raw bytes everywhere: on disk and on the wire.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import cbor2
from nacl.bindings import crypto_sign_open

from ark_lattice.encoding import Purpose, canonical, sha256, signing_input
from ark_lattice.envelope import Envelope
from ark_lattice.errors import Malformed, UsageError
from ark_lattice.identity import Identity, NodeId

__all__ = [
    "Packet",
    "PacketHeader",
    "KINDS",
    "MAX_BODY",
    "MAX_HEADER",
    "MAX_DEPENDS",
    "HEADER_VERSION",
    "HEADER_ENVELOPE",
    "check_topic",
    "verified_header",
]

HEADER_VERSION = 1
MAX_BODY = 1 << 20  # 1 MiB: a packet must fit in one transfer frame
MAX_HEADER = 4096
MAX_DEPENDS = 32
MAX_META = 16
KINDS = frozenset(
    {"note", "document", "alert", "model_update", "model", "policy_bundle", "proposal", "approval",
     "membership"}
)
_TOPIC = re.compile(r"[a-z0-9][a-z0-9._/-]{0,127}")
_META_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise Malformed(
            f"bad topic {topic!r}: 1-128 characters of a-z 0-9 . _ / -, starting with a letter or digit"
        )
    return topic


@dataclass(frozen=True)
class PacketHeader:
    topic: str
    kind: str
    author: NodeId
    created_at: int  # hybrid logical clock, see hlc.py
    body_hash: bytes
    body_size: int
    depends: tuple[bytes, ...] = ()
    supersedes: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def check(self) -> None:
        """Raise :class:`Malformed` unless every field is in range."""
        check_topic(self.topic)
        if self.kind not in KINDS:
            raise Malformed(f"unknown packet kind {self.kind!r}")
        # 63 bits: SQLite integers are signed 64-bit (and an HLC reaches 2**63 in 4 million years).
        if not isinstance(self.created_at, int) or not 0 <= self.created_at < 1 << 63:
            raise Malformed("created_at must be a 63-bit hybrid logical timestamp")
        if not _is_hash(self.body_hash):
            raise Malformed("body_hash must be 32 bytes")
        if not isinstance(self.body_size, int) or not 0 <= self.body_size <= MAX_BODY:
            raise Malformed(f"body_size must be between 0 and {MAX_BODY}")
        if len(self.depends) > MAX_DEPENDS or not all(_is_hash(d) for d in self.depends):
            raise Malformed(f"depends must be at most {MAX_DEPENDS} packet ids")
        if len(set(self.depends)) != len(self.depends):
            raise Malformed("depends lists a packet id twice")
        if self.supersedes is not None and not _is_hash(self.supersedes):
            raise Malformed("supersedes must be a packet id")
        if not isinstance(self.meta, dict) or len(self.meta) > MAX_META:
            raise Malformed(f"meta must be a map of at most {MAX_META} entries")
        for k, v in self.meta.items():
            if not isinstance(k, str) or not _META_KEY.fullmatch(k):
                raise Malformed(f"bad meta key {k!r}")
            if not isinstance(v, (str, int, float, bool)) or (isinstance(v, str) and len(v) > 256):
                raise Malformed(f"meta value for {k!r} must be a short string or a number")

    @property
    def signer(self) -> NodeId:
        return self.author

    def to_fields(self) -> list[Any]:
        return [
            HEADER_VERSION,
            self.topic,
            self.kind,
            self.author.key,
            self.created_at,
            self.body_hash,
            self.body_size,
            list(self.depends),
            self.supersedes,
            self.meta,
        ]

    @classmethod
    def from_fields(cls, raw: Any) -> PacketHeader:
        if not isinstance(raw, list) or len(raw) != 10 or raw[0] != HEADER_VERSION:
            raise Malformed("packet header has the wrong shape or version")
        _, topic, kind, author, created_at, body_hash, body_size, depends, supersedes, meta = raw
        if not isinstance(depends, list) or not isinstance(author, bytes):
            raise Malformed("packet header has the wrong shape")
        return cls(
            topic=topic,
            kind=kind,
            author=_author(author),
            created_at=created_at,
            body_hash=body_hash,
            body_size=body_size,
            depends=tuple(depends),
            supersedes=supersedes,
            meta=meta,
        )

    def encode(self) -> bytes:
        return HEADER_ENVELOPE.encode(self)

    @classmethod
    def parse(cls, data: bytes, *, trusted: bool = False) -> PacketHeader:
        """Decode and check a header; ``trusted`` (our own ledger's bytes) skips the checks."""
        if trusted:
            # Bytes that passed the full parse below when they came in. The decode limits'
            # pre-scan (cbor_limits.py) is a guard against hostile input and half the cost of
            # this parse, which every packet read from the store pays (a sender reads each packet
            # it sends): skipped here. The size limit stays, so a damaged row still costs cbor2
            # at most MAX_HEADER bytes of items, and anything it cannot decode is Malformed.
            if not isinstance(data, bytes) or len(data) > MAX_HEADER:
                raise Malformed("packet header is not at most MAX_HEADER bytes")
            try:
                raw = cbor2.loads(data)
            except Exception:  # cbor2 raises many types on garbage
                raise Malformed("packet header is not valid CBOR") from None
            return cls.from_fields(raw)
        return HEADER_ENVELOPE.decode(data)


#: The header is the payload of the packet's envelope; the body is committed to by its hash.
HEADER_ENVELOPE = Envelope(PacketHeader, Purpose.PACKET, MAX_HEADER, "packet header")


@dataclass(frozen=True)
class Packet:
    """A verified packet. Build one with :meth:`create` or :meth:`from_parts`, never directly."""

    id: bytes
    header: PacketHeader
    header_bytes: bytes
    signature: bytes
    body: bytes = field(repr=False)

    @classmethod
    def create(
        cls,
        author: Identity,
        *,
        topic: str,
        kind: str,
        body: bytes,
        created_at: int,
        depends: tuple[bytes, ...] = (),
        supersedes: bytes | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Packet:
        if len(body) > MAX_BODY:
            raise UsageError(f"the body is {len(body)} bytes, over the packet limit of {MAX_BODY}")
        header = PacketHeader(
            topic=topic,
            kind=kind,
            author=author.node_id,
            created_at=created_at,
            body_hash=sha256(body),
            body_size=len(body),
            depends=tuple(depends),
            supersedes=supersedes,
            meta=dict(meta or {}),
        )
        try:
            header_bytes, signature = HEADER_ENVELOPE.seal(author, header)
        except Malformed as exc:  # our own operator's input, not a peer's
            raise UsageError(str(exc)) from None
        return cls(sha256(header_bytes, signature), header, header_bytes, signature, body)

    @classmethod
    def from_parts(cls, header_bytes: bytes, signature: bytes, body: bytes) -> Packet:
        """Parse and fully verify a packet received from anywhere (peer, disk, backup).

        A well-formed packet takes the short way (:func:`_open_quickly`): every packet a sync
        brings is opened here, on the verifier threads, and the Python of the long way holds the
        GIL the loop and the writer wait for. Anything else takes the long way, which names it.
        """
        quick = _open_quickly(header_bytes, signature, body)
        if quick is not None:
            return cls(quick[0], quick[1], header_bytes, signature, body)
        return cls._open_step_by_step(header_bytes, signature, body)

    @classmethod
    def _open_step_by_step(cls, header_bytes: bytes, signature: bytes, body: bytes) -> Packet:
        """:meth:`from_parts` the long way: each check in turn, raising what the first failed
        one finds. The reference the short way is tested against."""
        if not isinstance(header_bytes, bytes) or not isinstance(signature, bytes):
            raise Malformed("packet parts must be byte strings")
        if not isinstance(body, bytes) or len(body) > MAX_BODY:
            raise Malformed(f"packet body must be at most {MAX_BODY} bytes")
        header = PacketHeader.parse(header_bytes)
        if header.body_size != len(body) or header.body_hash != sha256(body):
            raise Malformed("packet body does not match the hash in its header")
        HEADER_ENVELOPE.verify(header.author, header_bytes, signature)
        return cls(sha256(header_bytes, signature), header, header_bytes, signature, body)

    @classmethod
    def from_store(cls, packet_id: bytes, header_bytes: bytes, signature: bytes, body: bytes) -> Packet:
        """Rebuild a packet read from our own ledger without re-checking its signature.

        Only for reads of packets that were verified on the way in; ``ledger verify`` is the
        place that re-checks every signature and id.
        """
        return cls(packet_id, PacketHeader.parse(header_bytes, trusted=True), header_bytes, signature, body)

    @property
    def hex_id(self) -> str:
        return self.id.hex()


_SIGNED_PREFIX = signing_input(Purpose.PACKET, b"")  # what a packet signature covers before the header


def verified_header(header_bytes: bytes, signature: bytes, body: bytes) -> tuple[bytes, PacketHeader]:
    """The id and header of a packet checked exactly as :meth:`Packet.from_parts` checks it, and
    raising what it raises: ``ledger verify``'s packet pass, which keeps no packet."""
    quick = _open_quickly(header_bytes, signature, body)
    if quick is not None:
        return quick
    packet = Packet._open_step_by_step(header_bytes, signature, body)
    return packet.id, packet.header


def _open_quickly(header_bytes: bytes, signature: bytes, body: bytes) -> tuple[bytes, PacketHeader] | None:
    """The id and header of a well-formed packet, checked as :meth:`Packet._open_step_by_step`
    checks it; None for anything else, which the long way then names.

    The header is decoded without the pre-decoding walk of ``encoding.decode`` (pure Python, a
    third of the parse), checked and re-encoded as ``Envelope.decode`` does, and its signature
    checked by one libsodium call. Skipping the walk admits nothing it would refuse: a header of
    at most ``MAX_HEADER`` bytes has fewer items and a smaller decoded size than
    ``UNTRUSTED_LIMITS`` allow, and one that passes the shape checks nests two deep, not sixteen
    (cbor2 bounds its own recursion on the way).
    """
    if not (
        type(header_bytes) is bytes and type(signature) is bytes and type(body) is bytes
        and len(header_bytes) <= MAX_HEADER and len(signature) == 64 and len(body) <= MAX_BODY
    ):
        return None
    try:
        raw = cbor2.loads(header_bytes)
        # from_fields accepts a version equal to 1 (True, 1.0) that re-encodes differently.
        if type(raw) is list and len(raw) == 10 and type(raw[0]) is int:
            header = PacketHeader.from_fields(raw)
            header.check()
            fields = header.to_fields()
            # Checked, a header without meta holds no map and no float, the only values whose
            # canonical encoding differs from cbor2's plain one (which costs half as much).
            if (
                (canonical(fields) if header.meta else cbor2.dumps(fields)) == header_bytes
                and header.body_size == len(body)
                and header.body_hash == hashlib.sha256(body).digest()
            ):
                crypto_sign_open(signature + _SIGNED_PREFIX + header_bytes, header.author.key)
                return hashlib.sha256(header_bytes + signature).digest(), header
    except Exception:  # the long way names what is wrong
        pass
    return None


@functools.lru_cache(maxsize=4096)
def _author(key: bytes) -> NodeId:
    """One NodeId per author key: a sync brings thousands of packets by the same few authors, and
    the id's text form (printed into every stored row, policy input and audit record) is then
    computed once per author, not once per packet. NodeId is frozen, so sharing it is safe."""
    return NodeId(key)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == 32
