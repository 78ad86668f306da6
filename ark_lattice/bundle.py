"""Packet bundles: packets carried on a file between nodes that never meet on a network.

A sovereign node may sit behind an air gap; its operator moves knowledge by hand (a USB stick).
``packets export`` writes a *bundle* and ``packets import`` reads one on the other side. A bundle is
canonical CBOR ``[payload, signature]`` (envelope.pack) where ``payload`` is canonical CBOR::

    {"format": "ark-lattice-bundle/1", "exporter": <32-byte public key>,
     "created_at": <Unix ms>, "packets": [[header_bytes, signature, body], ...]}

and ``signature`` is the exporter's Ed25519 signature, purpose ``bundle``, over SHA-256(payload)
(a digest, so a running node can sign a bundle of any size without seeing it). The exporter's
signature says who vouches for the set; every packet still carries its author's signature and is
verified on its own (:meth:`Packet.from_parts`), so a bundle can neither forge nor alter a packet,
only choose which ones travel. Quarantined packets are never exported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ark_lattice.encoding import Purpose, canonical, decode, sha256
from ark_lattice.envelope import pack, unpack
from ark_lattice.errors import Malformed
from ark_lattice.identity import NodeId
from ark_lattice.packet import Packet

__all__ = ["BUNDLE_FORMAT", "MAX_BUNDLE", "Bundle", "payload_of", "seal", "open_bundle"]

BUNDLE_FORMAT = "ark-lattice-bundle/1"
MAX_BUNDLE = 1 << 30  # 1 GiB: read whole into memory, so bounded


@dataclass(frozen=True)
class Bundle:
    exporter: NodeId
    created_at_ms: int
    packets: list[Packet]


def payload_of(packets: Sequence[Packet], exporter: NodeId, *, now: Callable[[], float] = time.time) -> bytes:
    """The bytes an exporter signs (the digest of): the packets in the given order."""
    return canonical(
        {
            "format": BUNDLE_FORMAT,
            "exporter": exporter.key,
            "created_at": int(now() * 1000),
            "packets": [[p.header_bytes, p.signature, p.body] for p in packets],
        }
    )


def seal(payload: bytes, sign_digest: Callable[[bytes], bytes]) -> bytes:
    """The bundle file's bytes; ``sign_digest`` signs SHA-256(payload) with purpose ``bundle``."""
    return pack(payload, sign_digest(sha256(payload)))


def open_bundle(data: bytes) -> Bundle:
    """Check the exporter's signature and every packet; raise Malformed/BadSignature otherwise."""
    payload, signature = unpack(data, max_size=MAX_BUNDLE, what="the bundle")
    doc = decode(payload, max_size=MAX_BUNDLE, what="the bundle")
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise Malformed(f"not an {BUNDLE_FORMAT} file")
    exporter_key, created, rows = doc.get("exporter"), doc.get("created_at"), doc.get("packets")
    if not isinstance(exporter_key, bytes) or not isinstance(created, int) or not isinstance(rows, list):
        raise Malformed("the bundle has the wrong shape")
    exporter = NodeId(exporter_key)
    exporter.verify(Purpose.BUNDLE, sha256(payload), signature)
    packets = []
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 3:
            raise Malformed(f"packet {index} of the bundle has the wrong shape")
        try:
            packets.append(Packet.from_parts(*row))
        except Malformed as exc:
            raise Malformed(f"packet {index} of the bundle: {exc}") from None
    return Bundle(exporter, created, packets)
