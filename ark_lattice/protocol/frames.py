"""Session frames: the plaintext messages carried inside the encrypted channel (docs/protocol.md).

Every frame is a CBOR array ``[version, type, field…]``. Each type is a frozen dataclass with
``serialize()`` and a ``_from_fields`` parser that checks every field's type and size limit, so a
frame object that exists is a valid frame. :func:`parse_frame` turns any failure into
``RemoteProtocolError`` with a wire error code; it never lets another exception escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cbor2

from ark_lattice.cbor_limits import DecodeLimits, DecodeRefused, OverLimit, check
from ark_lattice.errors import ErrorCode, Malformed, RemoteProtocolError
from ark_lattice.packet import MAX_BODY, MAX_HEADER

__all__ = [
    "FRAME_VERSION",
    "Frame",
    "ManifestFrame",
    "TermsFrame",
    "ReconFrame",
    "OfferFrame",
    "WantFrame",
    "PacketsFrame",
    "QueryFrame",
    "AnswerFrame",
    "PingFrame",
    "PongFrame",
    "SyncedFrame",
    "ErrorFrame",
    "AlertFrame",
    "AlertIdsFrame",
    "WitnessRequestFrame",
    "WitnessReplyFrame",
    "WirePacket",
    "parse_frame",
    "MAX_IDS",
    "MAX_PACKETS",
    "MAX_FRAME_PAYLOAD",
    "MAX_ALERT_IDS",
    "MAX_HOPS",
    "FRAME_LIMITS",
]

FRAME_VERSION = 1
MAX_FRAME_PAYLOAD = 2 * 1024 * 1024  # the channel's plaintext limit; a 1 MiB body always fits
MAX_IDS = 4096  # ids in one offer or want: 128 KiB
MAX_PACKETS = 1024
MAX_RECON = 512 * 1024
MAX_REASON = 256
MAX_QUERY_LIMIT = 1000
MAX_ALERT_IDS = 512  # recent alert ids in one digest: 16 KiB
MAX_HOPS = 64  # an alert's remaining hops; the sender's own limit is far lower (coordinator.py)
_MAX_TOPIC = 128
#: Decoding limits of a session frame (cbor_limits.py): the deepest frame is 3 levels (packets →
#: packet → fields), the most items ~4,100 (an offer of 4,096 ids, or 1,024 packets of 3 fields),
#: the most memory ~2.3 MiB (a full packets frame); frames never use tags or indefinite lengths.
#: The node's policy may set its own depth, items and memory ([limits] decode_*; policy/gate.py).
FRAME_LIMITS = DecodeLimits(allow_tags=False, allow_indefinite=False)


def _describe(value: Any) -> str:
    """A short description of an untrusted value for an error reason.

    Never ``str()`` or ``repr()`` the value itself: a huge integer raises ValueError (Python's
    4300-digit limit) and a deeply nested list can exhaust the recursion limit.
    """
    if isinstance(value, str):
        return repr(value[:32])
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**64:
        return str(value)
    return f"of type {type(value).__name__}"


def _bad(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.MALFORMED, reason)


def _bytes(value: Any, what: str, *, size: int | None = None, max_size: int | None = None) -> bytes:
    if not isinstance(value, bytes):
        raise _bad(f"{what} must be bytes")
    if size is not None and len(value) != size:
        raise _bad(f"{what} must be {size} bytes")
    if max_size is not None and len(value) > max_size:
        raise _bad(f"{what} is over {max_size} bytes")
    return value


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _bad(f"{what} must be an integer in [{lo}, {hi}]")
    return value


def _str(value: Any, what: str, max_len: int) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise _bad(f"{what} must be a string of at most {max_len} characters")
    return value


def _list(value: Any, what: str, max_len: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > max_len:
        raise _bad(f"{what} must be a list of at most {max_len} items")
    return value


@dataclass(frozen=True)
class WirePacket:
    """A packet as three byte strings; verified by the session, not by the parser."""

    header: bytes
    signature: bytes
    body: bytes

    def fields(self) -> list[bytes]:
        return [self.header, self.signature, self.body]

    @classmethod
    def from_fields(cls, value: Any) -> WirePacket:
        if not isinstance(value, list) or len(value) != 3:
            raise _bad("a packet is [header, signature, body]")
        return cls(
            _bytes(value[0], "packet header", max_size=MAX_HEADER),
            _bytes(value[1], "packet signature", size=64),
            _bytes(value[2], "packet body", max_size=MAX_BODY),
        )

    @property
    def size(self) -> int:
        return len(self.header) + len(self.signature) + len(self.body) + 16


class Frame:
    TYPE: ClassVar[str]

    def fields(self) -> list[Any]:
        raise NotImplementedError

    def serialize(self) -> bytes:
        return cbor2.dumps([FRAME_VERSION, self.TYPE, *self.fields()])

    @classmethod
    def _from_fields(cls, fields: list[Any]) -> Frame:
        raise NotImplementedError


@dataclass(frozen=True)
class ManifestFrame(Frame):
    TYPE: ClassVar[str] = "manifest"
    signed_manifest: bytes

    def fields(self) -> list[Any]:
        return [self.signed_manifest]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        (m,) = f
        return cls(_bytes(m, "manifest", max_size=8192))


@dataclass(frozen=True)
class TermsFrame(Frame):
    """What the sender will do for the receiver, decided by the tier it gave the receiver.

    Sent after manifests and again whenever the tier changes, so an honest peer never sends what
    the other side would refuse (and never collects strikes for it).
    """

    TYPE: ClassVar[str] = "terms"
    accepts: bool  # the sender stores packets from the receiver
    sends: bool  # the sender shares its packets with the receiver
    answers_queries: bool  # the sender answers the receiver's read-only queries

    def fields(self) -> list[Any]:
        return [self.accepts, self.sends, self.answers_queries]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        if len(f) != 3 or not all(isinstance(x, bool) for x in f):
            raise _bad("terms are three booleans")
        return cls(*f)


@dataclass(frozen=True)
class ReconFrame(Frame):
    """One negentropy message (protocol/reconcile.py); ``round`` pairs replies with requests."""

    TYPE: ClassVar[str] = "recon"
    round: int
    message: bytes

    def fields(self) -> list[Any]:
        return [self.round, self.message]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        r, m = f
        return cls(_int(r, "round", 0, 2**32), _bytes(m, "reconciliation message", max_size=MAX_RECON))


@dataclass(frozen=True)
class _IdListFrame(Frame):
    MAX: ClassVar[int] = MAX_IDS
    ids: tuple[bytes, ...]

    def fields(self) -> list[Any]:
        return [list(self.ids)]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        (ids,) = f
        return cls(tuple(_bytes(i, f"{cls.TYPE} id", size=32) for i in _list(ids, cls.TYPE, cls.MAX)))


@dataclass(frozen=True)
class OfferFrame(_IdListFrame):
    """Ids the sender holds and the receiver lacks; the receiver wants them at its own pace."""

    TYPE: ClassVar[str] = "offer"


@dataclass(frozen=True)
class WantFrame(_IdListFrame):
    """Ids the sender asks for; answered by packets frames, the last one marked ``last``."""

    TYPE: ClassVar[str] = "want"


@dataclass(frozen=True)
class PacketsFrame(Frame):
    """Packets answering a want (``live`` false) or pushed as they appear (``live`` true).

    An answer to one want may span several frames; its ``last`` frame closes it, so the receiver
    knows that ids not sent are not held by the sender and frees its flow-control window.
    """

    TYPE: ClassVar[str] = "packets"
    packets: tuple[WirePacket, ...]
    live: bool = False
    last: bool = True

    def fields(self) -> list[Any]:
        return [[p.fields() for p in self.packets], self.live, self.last]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        packets, live, last = f
        if not isinstance(live, bool) or not isinstance(last, bool):
            raise _bad("live and last must be booleans")
        return cls(
            tuple(WirePacket.from_fields(p) for p in _list(packets, "packets", MAX_PACKETS)), live, last
        )


@dataclass(frozen=True)
class QueryFrame(Frame):
    TYPE: ClassVar[str] = "query"
    query_id: int
    topic: str
    limit: int

    def fields(self) -> list[Any]:
        return [self.query_id, self.topic, self.limit]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        q, t, n = f
        return cls(
            _int(q, "query id", 0, 2**32), _str(t, "topic", _MAX_TOPIC), _int(n, "limit", 1, MAX_QUERY_LIMIT)
        )


@dataclass(frozen=True)
class AnswerFrame(Frame):
    TYPE: ClassVar[str] = "answer"
    query_id: int
    packets: tuple[WirePacket, ...]
    more: bool = False  # the answer was cut at the frame size; ask again with a smaller limit

    def fields(self) -> list[Any]:
        return [self.query_id, [p.fields() for p in self.packets], self.more]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        q, packets, more = f
        if not isinstance(more, bool):
            raise _bad("more must be a boolean")
        return cls(
            _int(q, "query id", 0, 2**32),
            tuple(WirePacket.from_fields(p) for p in _list(packets, "answer", MAX_QUERY_LIMIT)),
            more,
        )


@dataclass(frozen=True)
class PingFrame(Frame):
    TYPE: ClassVar[str] = "ping"
    nonce: int

    def fields(self) -> list[Any]:
        return [self.nonce]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        (n,) = f
        return cls(_int(n, "nonce", 0, 2**64 - 1))


@dataclass(frozen=True)
class PongFrame(PingFrame):
    TYPE: ClassVar[str] = "pong"


@dataclass(frozen=True)
class SyncedFrame(Frame):
    """The initiator's reconciliation finished: ``offered`` and ``wanted`` ids in all."""

    TYPE: ClassVar[str] = "synced"
    offered: int
    wanted: int

    def fields(self) -> list[Any]:
        return [self.offered, self.wanted]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        o, w = f
        return cls(_int(o, "offered", 0, 2**63), _int(w, "wanted", 0, 2**63))


@dataclass(frozen=True)
class ErrorFrame(Frame):
    TYPE: ClassVar[str] = "error"
    code: str
    reason: str
    fatal: bool = False

    def fields(self) -> list[Any]:
        return [self.code, self.reason[:MAX_REASON], self.fatal]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        c, r, fatal = f
        if not isinstance(fatal, bool):
            raise _bad("fatal must be a boolean")
        return cls(_str(c, "error code", 32), _str(r, "error reason", MAX_REASON), fatal)


@dataclass(frozen=True)
class AlertFrame(Frame):
    """An alert (a signed packet of kind ``alert``) flooded to core peers, ahead of bulk transfer.

    ``hops`` is how many more times the receiver may forward it (DESIGN §10); it is not signed,
    so a relay can only lower it for the nodes after it, never raise it past its own limit.
    """

    TYPE: ClassVar[str] = "alert"
    packet: WirePacket
    hops: int

    def fields(self) -> list[Any]:
        return [self.packet.fields(), self.hops]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        p, h = f
        return cls(WirePacket.from_fields(p), _int(h, "hops", 0, MAX_HOPS))


@dataclass(frozen=True)
class AlertIdsFrame(_IdListFrame):
    """Ids of recent alerts the sender holds and this session has not carried: the receiver wants
    what it lacks. The flood's backstop (coordinator.py, docs/protocol.md §15)."""

    TYPE: ClassVar[str] = "alert_ids"
    MAX: ClassVar[int] = MAX_ALERT_IDS


MAX_WITNESS_REQUEST = 16 * 1024  # witness.MAX_REQUEST: a consistency proof and a signed note
MAX_WITNESS_NOTE = 8 * 1024  # checkpoint.MAX_NOTE_SIZE


@dataclass(frozen=True)
class WitnessRequestFrame(Frame):
    """Cosign my checkpoint: a c2sp.org/tlog-witness add-checkpoint request body (witness.py)."""

    TYPE: ClassVar[str] = "witness_request"
    request: bytes

    def fields(self) -> list[Any]:
        return [self.request]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        (r,) = f
        return cls(_bytes(r, "witness request", max_size=MAX_WITNESS_REQUEST))


@dataclass(frozen=True)
class WitnessReplyFrame(Frame):
    """The witness's answer: a tlog-witness status (200, 400, 403, 404, 409, 422) and body
    (cosignature lines, or the size it last cosigned), and with a 409 the note it last cosigned
    for the requester, carrying its cosignature (empty when none)."""

    TYPE: ClassVar[str] = "witness_reply"
    status: int
    body: bytes
    note: bytes = b""

    def fields(self) -> list[Any]:
        return [self.status, self.body, self.note]

    @classmethod
    def _from_fields(cls, f: list[Any]) -> Frame:
        s, b, n = f
        return cls(
            _int(s, "witness status", 100, 599),
            _bytes(b, "witness reply", max_size=MAX_WITNESS_NOTE),
            _bytes(n, "witnessed note", max_size=MAX_WITNESS_NOTE),
        )

_TYPES: dict[str, type[Frame]] = {
    cls.TYPE: cls
    for cls in (
        ManifestFrame,
        TermsFrame,
        ReconFrame,
        OfferFrame,
        WantFrame,
        PacketsFrame,
        QueryFrame,
        AnswerFrame,
        PingFrame,
        PongFrame,
        SyncedFrame,
        ErrorFrame,
        AlertFrame,
        AlertIdsFrame,
        WitnessRequestFrame,
        WitnessReplyFrame,
    )
}


def parse_frame(data: bytes, limits: DecodeLimits = FRAME_LIMITS) -> Frame:
    """Decode one frame; any problem is a ``RemoteProtocolError`` carrying its wire code.

    The CBOR is checked against ``limits`` before ``cbor2`` sees it: a frame over a limit is
    refused with ``over_budget`` having cost at most ``limits.max_items`` header reads.
    """
    if len(data) > MAX_FRAME_PAYLOAD:
        raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"frame of {len(data)} bytes")
    try:
        check(data, limits)
    except OverLimit as exc:
        raise RemoteProtocolError(ErrorCode.OVER_BUDGET, f"frame refused before decoding: {exc}") from None
    except DecodeRefused as exc:
        raise _bad(f"frame is not valid CBOR: {exc}") from None
    try:
        raw = cbor2.loads(data)
    except Exception:  # cbor2 raises a zoo of types on garbage; all mean the same here
        raise _bad("frame is not valid CBOR") from None
    if not isinstance(raw, list) or len(raw) < 2:
        raise _bad("a frame is [version, type, …]")
    version, kind, *fields = raw
    if type(version) is not int or version != FRAME_VERSION:  # True == 1 and 1.0 == 1 in Python
        raise RemoteProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"frame version {_describe(version)}")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RemoteProtocolError(ErrorCode.UNKNOWN_FRAME, f"unknown frame type {_describe(kind)}")
    try:
        return cls._from_fields(fields)
    except RemoteProtocolError:
        raise
    except (ValueError, TypeError, Malformed):  # wrong arity unpacking, etc.
        raise _bad(f"bad {kind} frame") from None
