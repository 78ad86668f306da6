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
    """Deterministic CBOR encoding of ``obj`` (the same value always gives the same bytes).

    cbor2's plain encoder writes the same bytes as its canonical one for a value with no float
    and whose maps' keys are text already in canonical order: integers, strings and arrays have
    one encoding either way, and only a map's key order and a float's width differ. Most of what
    the node encodes is so (ledger events' data, the audit record of every packet a sync lets in or
    out, written in that order by policy/gate.py), and the plain encoder costs about half as much:
    the canonical one encodes and sorts every map's keys (a policy.decision event of 1,000 records:
    3.2 -> 1.8 µs a record with the check, issue 16). Anything else takes the canonical encoder.
    """
    try:
        plain = _plainly_canonical(obj)
    except (RecursionError, UnicodeEncodeError):  # nested past Python's stack, or not UTF-8 text:
        plain = False  # the canonical encoder encodes the one and refuses the other, as it did
    return cbor2.dumps(obj) if plain else cbor2.dumps(obj, canonical=True)


# Exact types, not subclasses: a str enum or a bool-like int subclass goes the canonical way.
_ONE_ENCODING = frozenset({str, bytes, int, bool, type(None)})


def _plainly_canonical(value: Any) -> bool:
    """Does cbor2's plain encoding of ``value`` equal its canonical one (see :func:`canonical`)?"""
    kind = type(value)
    if kind in _ONE_ENCODING:
        return True
    if kind is list or kind is tuple:
        return all(map(_plainly_canonical, value))
    if kind is dict:
        return _in_canonical_order(tuple(value)) and all(map(_plainly_canonical, value.values()))
    return False  # a float, a set, a tag, a subclass: the canonical encoder decides


def _in_canonical_order(keys: tuple[Any, ...]) -> bool:
    """Are ``keys`` text, in the canonical order of map keys: the shorter encoding first, then
    bytewise (RFC 7049 §3.9; for text keys the same as RFC 8949's bytewise order of their
    encodings, whose first byte grows with the length)?

    A map's keys repeat from one record to the next, so the answer is remembered by the keys,
    for small maps of short keys only and up to :data:`_ORDERS_KEPT` of them: what a peer's
    document holds costs a bounded amount here, and past the bound only the time to work it out.
    """
    known = _ORDERS.get(keys)
    if known is not None:
        return known
    texts = all(type(key) is str for key in keys)
    encoded = [key.encode() for key in keys] if texts else []
    answer = texts and encoded == sorted(encoded, key=lambda key: (len(key), key))
    if texts and len(_ORDERS) < _ORDERS_KEPT and len(keys) <= 16 and all(len(key) <= 64 for key in encoded):
        _ORDERS[keys] = answer
    return answer


_ORDERS: dict[tuple[Any, ...], bool] = {}
_ORDERS_KEPT = 1024


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
