"""Canonical byte encoding and domain separation for everything that is signed or hashed.

Signed objects are encoded as deterministic CBOR (RFC 8949 §4.2: shortest integer forms, sorted map
keys, definite lengths), which ``cbor2`` produces with ``canonical=True``; we never hand-roll a codec.
Every signature covers ``b"ark-lattice/v<PROTOCOL_VERSION>/<purpose>\\x00" + payload``, so a signature
made for one purpose (a packet, a manifest, a beacon, a handshake transcript, a checkpoint) can never
be replayed as another, nor across protocol versions.
"""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2

from ark_lattice import PROTOCOL_VERSION
from ark_lattice.cbor_limits import DecodeLimits, check
from ark_lattice.errors import Malformed

__all__ = ["Purpose", "canonical", "decode", "signing_input", "sha256"]


class Purpose:
    """The closed set of signing purposes (one per signed object type)."""

    PACKET = "packet"
    MANIFEST = "manifest"
    BEACON = "beacon"
    HANDSHAKE = "handshake"
    CHECKPOINT = "checkpoint"
    LEDGER_EVENT = "ledger-event"
    LEDGER_HEAD = "ledger-head"  # store/head.py: the head each write transaction ends with
    BUNDLE = "bundle"  # a packet bundle carried by hand (bundle.py), signed by its exporter

    ALL = frozenset({PACKET, MANIFEST, BEACON, HANDSHAKE, CHECKPOINT, LEDGER_EVENT, LEDGER_HEAD, BUNDLE})


def canonical(obj: Any) -> bytes:
    """Deterministic CBOR encoding of ``obj`` (the same value always gives the same bytes)."""
    return cbor2.dumps(obj, canonical=True)


#: Decoding limits of signed objects and packet bodies (headers, manifests, models, tensors): far
#: above any honest one (a model names at most ~30k inputs in a 1 MiB body), yet bounded.
UNTRUSTED_LIMITS = DecodeLimits(max_depth=16, max_items=65_536, max_alloc=16 * 1024 * 1024)


def decode(
    data: bytes, *, max_size: int, what: str, limits: DecodeLimits = UNTRUSTED_LIMITS
) -> Any:
    """Decode CBOR from an untrusted source; any failure becomes :class:`Malformed`.

    ``max_size`` and then the decoding ``limits`` (nesting, item count, memory; cbor_limits.py)
    are checked before decoding, so an input over any of them costs nothing to refuse.
    """
    if len(data) > max_size:
        raise Malformed(f"{what} is {len(data)} bytes, over the limit of {max_size}")
    try:
        check(data, limits)
    except Malformed as exc:
        raise Malformed(f"{what} refused before decoding: {exc}") from None
    try:
        return cbor2.loads(data)
    except Exception as exc:  # cbor2 raises many types (ValueError, RecursionError, …) on garbage
        raise Malformed(f"{what} is not valid CBOR ({exc.__class__.__name__})") from None


def signing_input(purpose: str, payload: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers for ``purpose``."""
    if purpose not in Purpose.ALL:
        raise ValueError(f"unknown signing purpose {purpose!r}")
    return b"ark-lattice/v%d/%s\x00" % (PROTOCOL_VERSION, purpose.encode()) + payload


def sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()
