"""Signed LAN announcements (DESIGN §7): "node N listens at these endpoints until time T".

Pure and sans-I/O: bytes or TXT properties in, checked objects out; ``now`` is an argument.

An :class:`Announcement` is signed by the node it names, with the ``beacon`` purpose, over its
canonical CBOR encoding (see :meth:`Announcement.encode`; it travels in :data:`ANNOUNCEMENT_ENVELOPE`,
see ``envelope.py``)::

    [ANNOUNCEMENT_VERSION, node public key, name, protocol version, port, issued-at, expires-at,
     [endpoint, …]]

so the signature covers the node ID, every endpoint and the expiry (and the rest). Two carriers
hold the same signed content:

- the UDP multicast beacon: ``BEACON_MAGIC`` followed by CBOR ``[payload, signature]``, at most
  ``MAX_DATAGRAM`` bytes (under the 1280-byte IPv6 minimum MTU with headers, so never fragmented);
- the mDNS/DNS-SD TXT record (RFC 6763 §6): ``txtvers``, ``v`` (protocol version), ``id``,
  ``port``, ``name``, ``iat``, ``exp``, ``ep0`` … ``ep7`` (endpoints) and ``sig`` (base64). Keys are
  at most 9 characters and every ``key=value`` string fits the 255-byte limit of RFC 6763 §6.1.
  The receiver rebuilds the canonical payload from the fields and checks the signature over it,
  so both carriers verify exactly the same bytes.

Parsers raise only :class:`Malformed` (wrong shape, over a size limit, unsigned); :meth:`verify`
adds :class:`BadSignature` and :class:`Expired`. Dropping our own announcements, older ones and
floods is the job of :mod:`ark_lattice.discovery.sightings`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ark_lattice import PROTOCOL_VERSION
from ark_lattice.encoding import Purpose
from ark_lattice.envelope import SIGNATURE_SIZE, Envelope, pack, unpack
from ark_lattice.errors import Expired, Malformed, UsageError
from ark_lattice.federation_url import check_peer_url
from ark_lattice.identity import Identity, NodeId

__all__ = [
    "Announcement",
    "SignedAnnouncement",
    "ANNOUNCEMENT_ENVELOPE",
    "ANNOUNCEMENT_VERSION",
    "BEACON_MAGIC",
    "SOLICIT_MAGIC",
    "MAX_DATAGRAM",
    "MAX_ENDPOINTS",
    "MAX_ENDPOINT",
    "MAX_NAME",
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "TXT_KEYS",
]

ANNOUNCEMENT_VERSION = 1
#: "ARKL" + carrier letter + format version: B is a signed beacon, Q asks nodes to send theirs now.
BEACON_MAGIC = b"ARKLB\x01"
SOLICIT_MAGIC = b"ARKLQ\x01"
MAX_DATAGRAM = 1200
MAX_ENDPOINTS = 8
MAX_ENDPOINT = 100  # bytes; ws://[full IPv6 address]:65535 is 52
MAX_NAME = 64  # bytes of UTF-8
#: An hour: long enough to ride out clock skew between hosts and mDNS caching, short enough that a
#: replayed announcement soon stops working. Re-signed at half-life and whenever endpoints change.
DEFAULT_LIFETIME = 3600
MAX_LIFETIME = 24 * 3600
_MAX_INT = 1 << 63

# RFC 6763 §6.4: keys are case-insensitive printable ASCII, at most 9 characters recommended.
TXT_KEYS = ("txtvers", "v", "id", "port", "name", "iat", "exp", "sig") + tuple(
    f"ep{i}" for i in range(MAX_ENDPOINTS)
)
_MAX_TXT_ENTRIES = 64
_MAX_TXT_ENTRY = 255  # RFC 6763 §6.1: one length byte per "key=value" string
_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,18}")
_ENDPOINT_KEY = re.compile(r"ep[0-9]+")


@dataclass(frozen=True)
class Announcement:
    """What a node says about itself on the LAN; signed with :meth:`sign`."""

    node_id: NodeId
    endpoints: tuple[str, ...]
    port: int
    protocol_version: int
    issued_at: int  # Unix seconds
    expires_at: int
    name: str = ""

    @classmethod
    def build(
        cls,
        node_id: NodeId,
        endpoints: list[str] | tuple[str, ...],
        port: int,
        *,
        now: float,
        name: str = "",
        lifetime: int = DEFAULT_LIFETIME,
    ) -> Announcement:
        """A fresh announcement issued at ``now``; the name is cut to fit ``MAX_NAME`` bytes."""
        issued = int(now)
        fitted = name
        while len(fitted.encode()) > MAX_NAME:
            fitted = fitted[:-1]
        a = cls(node_id, tuple(endpoints), port, PROTOCOL_VERSION, issued, issued + lifetime, fitted)
        a.check()
        return a

    def check(self) -> None:
        """Raise :class:`Malformed` unless every field is within its type and size limits."""
        if not isinstance(self.node_id, NodeId):
            raise Malformed("announcement node ID has the wrong type")
        for n in (self.protocol_version, self.issued_at, self.expires_at, self.port):
            if type(n) is not int or not 0 <= n < _MAX_INT:
                raise Malformed("announcement numbers must be non-negative 63-bit integers")
        if not 0 < self.port < 65536:
            raise Malformed(f"announcement port {self.port} is out of range")
        if self.expires_at <= self.issued_at:
            raise Malformed("announcement expires before it was issued")
        if self.expires_at - self.issued_at > MAX_LIFETIME:
            raise Malformed(f"announcement lives longer than {MAX_LIFETIME} s")
        if not isinstance(self.name, str) or len(_utf8(self.name)) > MAX_NAME:
            raise Malformed(f"announcement name must be a string of at most {MAX_NAME} bytes")
        if not isinstance(self.endpoints, tuple) or not 0 < len(self.endpoints) <= MAX_ENDPOINTS:
            raise Malformed(f"an announcement lists 1 to {MAX_ENDPOINTS} endpoints")
        for e in self.endpoints:
            _check_endpoint(e)
        if len(set(self.endpoints)) != len(self.endpoints):
            raise Malformed("announcement lists an endpoint twice")

    @property
    def signer(self) -> NodeId:
        return self.node_id

    def to_fields(self) -> list[Any]:
        return [
            ANNOUNCEMENT_VERSION,
            self.node_id.key,
            self.name,
            self.protocol_version,
            self.port,
            self.issued_at,
            self.expires_at,
            list(self.endpoints),
        ]

    @classmethod
    def from_fields(cls, raw: Any) -> Announcement:
        if not isinstance(raw, list) or len(raw) != 8 or raw[0] != ANNOUNCEMENT_VERSION:
            raise Malformed("announcement has the wrong shape or version")
        _, key, name, version, port, issued_at, expires_at, endpoints = raw
        if not isinstance(key, bytes) or not isinstance(endpoints, list):
            raise Malformed("announcement has the wrong shape")
        return cls(NodeId(key), tuple(endpoints), port, version, issued_at, expires_at, name)

    def encode(self) -> bytes:
        """The canonical payload the signature covers."""
        return ANNOUNCEMENT_ENVELOPE.encode(self)

    @classmethod
    def decode(cls, payload: bytes) -> Announcement:
        """Parse and check a payload; only its canonical form (the bytes both carriers verify)."""
        return ANNOUNCEMENT_ENVELOPE.decode(payload)

    def sign(self, identity: Identity) -> SignedAnnouncement:
        """Raises :class:`ValueError` unless ``identity`` is the node the announcement names."""
        _, signature = ANNOUNCEMENT_ENVELOPE.seal(identity, self)
        return SignedAnnouncement(self, signature)


ANNOUNCEMENT_ENVELOPE = Envelope(Announcement, Purpose.BEACON, MAX_DATAGRAM, "announcement")


@dataclass(frozen=True)
class SignedAnnouncement:
    """An announcement and the signature its node made over it (not yet checked when parsed)."""

    announcement: Announcement
    signature: bytes

    def verify(self, now: float) -> Announcement:
        """The announcement, if its node signed it and it has not expired at ``now``.

        Raises :class:`Malformed` for another protocol version (its signature prefix differs
        from ours, so "bad signature" would be the wrong reason), :class:`BadSignature` and
        :class:`Expired`.
        """
        a = self.announcement
        if a.protocol_version != PROTOCOL_VERSION:
            raise Malformed(
                f"announcement of protocol version {a.protocol_version}; this node speaks {PROTOCOL_VERSION}"
            )
        ANNOUNCEMENT_ENVELOPE.verify(a.node_id, a.encode(), self.signature)
        if now >= a.expires_at:
            raise Expired(f"announcement of {a.node_id.short} expired")
        return a

    # -- carrier (a): the UDP beacon datagram ---------------------------------------------------

    def to_datagram(self) -> bytes:
        data = BEACON_MAGIC + pack(self.announcement.encode(), self.signature)
        if len(data) > MAX_DATAGRAM:
            raise Malformed(f"beacon is {len(data)} bytes, over the limit of {MAX_DATAGRAM}")
        return data

    @classmethod
    def from_datagram(cls, data: bytes) -> SignedAnnouncement:
        if not isinstance(data, bytes) or not data.startswith(BEACON_MAGIC):
            raise Malformed("not an ark-lattice beacon")
        payload, signature = unpack(
            data[len(BEACON_MAGIC) :], max_size=MAX_DATAGRAM - len(BEACON_MAGIC), what="beacon"
        )
        return cls(ANNOUNCEMENT_ENVELOPE.decode(payload), signature)

    # -- carrier (b): mDNS TXT record properties ------------------------------------------------

    def to_txt(self) -> dict[str, bytes]:
        """TXT properties in a fixed order; every ``key=value`` fits in 255 bytes."""
        a = self.announcement
        props: dict[str, bytes] = {
            "txtvers": b"%d" % ANNOUNCEMENT_VERSION,
            "v": b"%d" % a.protocol_version,
            "id": str(a.node_id).encode(),
            "port": b"%d" % a.port,
            "iat": b"%d" % a.issued_at,
            "exp": b"%d" % a.expires_at,
        }
        if a.name:
            props["name"] = a.name.encode()
        for i, endpoint in enumerate(a.endpoints):
            props[f"ep{i}"] = endpoint.encode()
        props["sig"] = base64.b64encode(self.signature)
        return props

    @classmethod
    def from_txt(cls, properties: Mapping[bytes | str, bytes | str | None]) -> SignedAnnouncement:
        """Parse TXT properties as python-zeroconf hands them over; unknown keys are ignored."""
        props = _normalise_txt(properties)
        if "sig" not in props:
            raise Malformed("TXT record is unsigned")
        if _txt_int(props, "txtvers") != ANNOUNCEMENT_VERSION:
            raise Malformed("TXT record has an unknown txtvers")
        try:
            node_id = NodeId.parse(_txt_text(props, "id"))
        except Malformed:
            raise Malformed("TXT record has a bad node ID") from None
        endpoint_keys = sorted((k for k in props if _ENDPOINT_KEY.fullmatch(k)), key=lambda k: int(k[2:]))
        if endpoint_keys != [f"ep{i}" for i in range(len(endpoint_keys))]:
            raise Malformed("TXT record endpoints must be ep0, ep1, … without gaps")
        if len(endpoint_keys) > MAX_ENDPOINTS:
            raise Malformed(f"TXT record lists over {MAX_ENDPOINTS} endpoints")
        a = Announcement(
            node_id=node_id,
            endpoints=tuple(_txt_text(props, k) for k in endpoint_keys),
            port=_txt_int(props, "port"),
            protocol_version=_txt_int(props, "v"),
            issued_at=_txt_int(props, "iat"),
            expires_at=_txt_int(props, "exp"),
            name=_txt_text(props, "name") if "name" in props else "",
        )
        a.check()
        try:
            signature = base64.b64decode(props["sig"] or b"", validate=True)
        except (binascii.Error, ValueError):
            raise Malformed("TXT record signature is not base64") from None
        if len(signature) != SIGNATURE_SIZE:
            raise Malformed("TXT record signature has the wrong size")
        return cls(a, signature)

    def txt_size(self) -> int:
        """Bytes of the TXT record's RDATA (each string is a length byte and ``key=value``)."""
        return sum(1 + len(k) + 1 + len(v) for k, v in self.to_txt().items())


# -- helpers ---------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # lone surrogates
        raise Malformed("announcement text is not valid Unicode") from None


def _check_endpoint(endpoint: object) -> None:
    if not isinstance(endpoint, str) or not endpoint.isascii() or len(endpoint) > MAX_ENDPOINT:
        raise Malformed(f"announcement endpoints are ASCII URLs of at most {MAX_ENDPOINT} bytes")
    if not endpoint.isprintable() or " " in endpoint:
        raise Malformed("announcement endpoint holds a control character or a space")
    try:
        normal = check_peer_url(endpoint)
    except UsageError:
        raise Malformed(f"announcement endpoint {endpoint!r} is not ws://HOST:PORT") from None
    if normal != endpoint:
        raise Malformed(f"announcement endpoint {endpoint!r} is not in normal form ({normal})")


def _normalise_txt(properties: Mapping[bytes | str, bytes | str | None]) -> dict[str, bytes | None]:
    if not isinstance(properties, Mapping) or len(properties) > _MAX_TXT_ENTRIES:
        raise Malformed("TXT record has too many entries")
    props: dict[str, bytes | None] = {}
    for key, value in properties.items():
        raw_key = key.encode() if isinstance(key, str) else key
        raw_value = value.encode() if isinstance(value, str) else value
        if not isinstance(raw_key, bytes) or not (raw_value is None or isinstance(raw_value, bytes)):
            raise Malformed("TXT record entries must be bytes")
        if len(raw_key) + (0 if raw_value is None else 1 + len(raw_value)) > _MAX_TXT_ENTRY:
            raise Malformed("TXT record entry is over 255 bytes")
        if not raw_key or not raw_key.isascii() or b"=" in raw_key:
            raise Malformed("TXT record key is empty or not ASCII")
        name = raw_key.decode().lower()  # RFC 6763 §6.4: keys are case-insensitive
        if name in props:
            raise Malformed(f"TXT record holds the key {name!r} twice")
        props[name] = raw_value
    return props


def _txt_value(props: dict[str, bytes | None], key: str) -> bytes:
    value = props.get(key)
    if value is None:
        raise Malformed(f"TXT record has no value for {key!r}")
    return value


def _txt_int(props: dict[str, bytes | None], key: str) -> int:
    value = _txt_value(props, key)
    if not _DECIMAL.fullmatch(value):
        raise Malformed(f"TXT record {key!r} is not a decimal number")
    return int(value)


def _txt_text(props: dict[str, bytes | None], key: str) -> str:
    try:
        return _txt_value(props, key).decode()
    except UnicodeDecodeError:
        raise Malformed(f"TXT record {key!r} is not UTF-8") from None
