"""Alerts (DESIGN §10): a signed packet of kind ``alert`` that names a severity, a message and,
optionally, the peer it accuses, with evidence anyone can check.

Pure: no clock, no randomness, no I/O. The caller draws the nonce (``os.urandom(NONCE_SIZE)``) so
that the same text raised twice is two alerts with two ids, and passes the packet's HLC time.

The packet body is the canonical CBOR (RFC 8949 §4.2, ``encoding.py``) of the list::

    [ALERT_VERSION, severity, message, about, nonce, evidence]

where ``about`` is the accused node's 32-byte public key or null and ``evidence`` a byte string or
null. A body is accepted only in that one encoding (:meth:`Alert.from_packet` re-encodes it and
compares), so an alert has one body and its packet one id.

Evidence is *self-proving* when anyone can check, from the evidence alone, that the accused
misbehaved: ``["fork", note_a, note_b]``, two ledger checkpoints the accused signed for one size
with different roots (witness.py), or two conflicting signed statements by the accused —
``["equivocation", manifest_a, manifest_b]``, two :class:`~ark_lattice.manifest.SignedManifest`
encodings that both verify, describe the accused, carry the same sequence number and differ
(:func:`equivocation_evidence` builds it); and ``["approval-equivocation", approval_a, approval_b]``,
two governance approvals the accused signed for one (kind, base) and two proposals
(``governance/documents.py``). Anything else is an accusation, not a proof.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from ark_lattice.encoding import canonical, decode
from ark_lattice.errors import Malformed, VerificationError
from ark_lattice.identity import Identity, NodeId
from ark_lattice.manifest import SignedManifest
from ark_lattice.packet import Packet

__all__ = [
    "ALERT_KIND",
    "ALERT_VERSION",
    "DEFAULT_TOPIC",
    "SEVERITIES",
    "MAX_MESSAGE",
    "MAX_EVIDENCE",
    "MAX_ALERT_BODY",
    "NONCE_SIZE",
    "EQUIVOCATION",
    "Alert",
    "alert_packet",
    "equivocation_evidence",
]

ALERT_KIND = "alert"
ALERT_VERSION = 1
DEFAULT_TOPIC = "alerts"
SEVERITIES = ("info", "warning", "critical")
MAX_MESSAGE = 1024  # characters
MAX_EVIDENCE = 64 * 1024  # bytes
NONCE_SIZE = 16
# The largest canonical body: a message of MAX_MESSAGE characters of 4 UTF-8 bytes each, the
# evidence, and the list around them (version, severity, key, nonce and the CBOR heads).
MAX_ALERT_BODY = 4 * MAX_MESSAGE + MAX_EVIDENCE + 128
EQUIVOCATION = "equivocation"
FORK = "fork"  # ["fork", note_a, note_b]: two checkpoints one node signed for one size (witness.py)

# Control characters (Unicode category Cc) other than these are refused in a message: an alert
# comes from another node and is printed on the operator's terminal.
_ALLOWED_CONTROLS = frozenset("\n\t")


@dataclass(frozen=True)
class Alert:
    severity: str  # one of SEVERITIES
    message: str  # 1 to MAX_MESSAGE characters; no control characters but newline and tab
    about: str | None  # the accused peer's node id (full base32 text), or None
    nonce: bytes  # NONCE_SIZE random bytes: the same text raised twice gives two ids
    evidence: bytes | None  # 1 to MAX_EVIDENCE bytes, or None; see self_proving()

    def check(self) -> None:
        """Raise :class:`Malformed` unless every field is of its type and within its limits."""
        if not isinstance(self.severity, str) or self.severity not in SEVERITIES:
            raise Malformed(f"alert severity must be one of {', '.join(SEVERITIES)}")
        _check_message(self.message)
        if self.about is not None:
            if not isinstance(self.about, str):
                raise Malformed("alert about must be a node ID or absent")
            try:
                canonical_text = str(NodeId.parse(self.about))
            except ValueError:  # base64 refuses text that is not ASCII
                raise Malformed("alert about must be a node ID") from None
            if canonical_text != self.about:
                raise Malformed("alert about must be a node ID in its full lower-case form")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise Malformed(f"alert nonce must be {NONCE_SIZE} bytes")
        if self.evidence is not None and (
            not isinstance(self.evidence, bytes) or not 0 < len(self.evidence) <= MAX_EVIDENCE
        ):
            raise Malformed(f"alert evidence must be 1 to {MAX_EVIDENCE} bytes, or absent")

    def to_fields(self) -> list[Any]:
        about = NodeId.parse(self.about).key if self.about is not None else None
        return [ALERT_VERSION, self.severity, self.message, about, self.nonce, self.evidence]

    def body(self) -> bytes:
        """The packet body: canonical CBOR of :meth:`to_fields`; raises Malformed for a bad field."""
        self.check()
        return canonical(self.to_fields())

    @classmethod
    def from_fields(cls, raw: Any) -> Alert:
        """The alert from a decoded body, shape-checked but not yet :meth:`check`-ed."""
        if not isinstance(raw, list) or len(raw) != 6:
            raise Malformed("alert has the wrong shape")
        version, severity, message, about, nonce, evidence = raw
        if type(version) is not int or version != ALERT_VERSION:
            raise Malformed(f"alert has an unknown version (this node reads {ALERT_VERSION})")
        if about is not None and not isinstance(about, bytes):
            raise Malformed("alert about must be a node ID's 32 bytes or null")
        return cls(
            severity=severity,
            message=message,
            about=str(NodeId(about)) if about is not None else None,
            nonce=nonce,
            evidence=evidence,
        )

    @classmethod
    def from_packet(cls, packet: Packet) -> Alert:
        """The alert a packet carries; :class:`Malformed` unless the packet is of kind ``alert``
        and its body is a valid alert in canonical form."""
        if packet.header.kind != ALERT_KIND:
            raise Malformed(f"a packet of kind {packet.header.kind!r} is not an alert")
        alert = cls.from_fields(decode(packet.body, max_size=MAX_ALERT_BODY, what="alert"))
        if alert.body() != packet.body:  # body() runs check()
            raise Malformed("alert is not in canonical form")
        return alert

    def self_proving(self) -> bool:
        """True iff the evidence proves, to anyone, that ``about`` misbehaved (see the module's
        docstring); False for anything else, never an exception."""
        if not isinstance(self.evidence, bytes) or not isinstance(self.about, str):
            return False
        from ark_lattice.governance.documents import approval_equivocation

        if approval_equivocation(self.evidence, self.about):  # two approvals for one (kind, base)
            return True
        try:
            raw = decode(self.evidence, max_size=MAX_EVIDENCE, what="alert evidence")
            if isinstance(raw, list) and raw and raw[0] == FORK:  # witness.py: two roots, one size
                from ark_lattice.witness import fork_proven

                return canonical(raw) == self.evidence and fork_proven(raw, self.about)
            if not (
                isinstance(raw, list)
                and len(raw) == 3
                and isinstance(raw[0], str)
                and raw[0] == EQUIVOCATION
                and isinstance(raw[1], bytes)
                and isinstance(raw[2], bytes)
            ):
                return False
            if canonical(raw) != self.evidence:
                return False
            first, second = SignedManifest.from_bytes(raw[1]), SignedManifest.from_bytes(raw[2])
        except VerificationError:  # not CBOR, a bad manifest, a bad signature
            return False
        a, b = first.manifest, second.manifest
        # Both signatures verified against the node each manifest describes (from_bytes); the
        # payloads are canonical, so different payloads are two different statements.
        return (
            a.node_id == b.node_id
            and str(a.node_id) == self.about
            and a.seq == b.seq
            and first.payload != second.payload
        )


def alert_packet(
    identity: Identity, alert: Alert, *, created_at: int, topic: str = DEFAULT_TOPIC
) -> Packet:
    """The alert as a packet signed by ``identity``; Malformed for a bad alert field, UsageError
    for a bad topic or timestamp (as :meth:`Packet.create`)."""
    return Packet.create(identity, topic=topic, kind=ALERT_KIND, body=alert.body(), created_at=created_at)


def equivocation_evidence(first: bytes, second: bytes) -> bytes:
    """Evidence of equivocation from two ``SignedManifest.to_bytes()`` strings, as they are (it
    is :meth:`Alert.self_proving` that judges whether they prove anything)."""
    if not isinstance(first, bytes) or not isinstance(second, bytes):
        raise TypeError("equivocation evidence is made of two signed manifests' bytes")
    return canonical([EQUIVOCATION, first, second])


def _check_message(message: object) -> None:
    if not isinstance(message, str) or not 0 < len(message) <= MAX_MESSAGE:
        raise Malformed(f"alert message must be 1 to {MAX_MESSAGE} characters")
    for char in message:
        category = unicodedata.category(char)
        if category == "Cs":
            raise Malformed("alert message is not valid Unicode text (a lone surrogate)")
        if category == "Cc" and char not in _ALLOWED_CONTROLS:
            raise Malformed("alert message holds a control character (only newline and tab may appear)")
