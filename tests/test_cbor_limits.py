"""Decoding limits (cbor_limits.py): well-formed input within the limits passes and decodes as
cbor2 decodes it; hostile shapes are refused at their header, before anything is decoded."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.cbor_limits import DecodeLimits, DecodeRefused, OverLimit, check
from ark_lattice.encoding import decode
from ark_lattice.errors import Malformed

GENEROUS = DecodeLimits(max_depth=64, max_items=1 << 20, max_alloc=1 << 30)

values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda children: st.lists(children, max_size=8)
    | st.dictionaries(st.text(max_size=8) | st.integers(0, 1000), children, max_size=6),
    max_leaves=60,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


def items_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + sum(items_of(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(items_of(k) + items_of(v) for k, v in value.items())
    return 1


def smallest_passing(data: bytes, field: str) -> int:
    """The least value of one limit that lets ``data`` pass (the others generous)."""
    lo, hi = 1, 1 << 31
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            check(data, DecodeLimits(**{**_generous(), field: mid}))
            hi = mid
        except OverLimit:
            lo = mid + 1
    return lo


def _generous() -> dict[str, Any]:
    return {"max_depth": 64, "max_items": 1 << 20, "max_alloc": 1 << 30}


@settings(max_examples=300, deadline=None)
@given(values)
def test_what_cbor2_encodes_passes_and_the_limits_count_exactly(value: Any) -> None:
    data = cbor2.dumps(value)
    check(data, GENEROUS)
    # Depth and items are counted exactly: one less than what the value needs is refused.
    assert smallest_passing(data, "max_depth") == max(depth_of(value), 1)
    assert smallest_passing(data, "max_items") == items_of(value)


@settings(max_examples=60, deadline=None)
@given(values)
def test_the_memory_estimate_is_an_upper_bound_of_what_cbor2_allocates(value: Any) -> None:
    data = cbor2.dumps(value)
    estimate = smallest_passing(data, "max_alloc")
    tracemalloc.start()
    try:
        decoded = cbor2.loads(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del decoded
    assert peak <= estimate + 4096  # tracemalloc's own bookkeeping and small-object arenas


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_are_refused_with_decode_refused_or_pass(data: bytes) -> None:
    try:
        check(data, DecodeLimits())
    except DecodeRefused:
        return
    # What passes is one well-formed item; cbor2 may still refuse its content (invalid UTF-8, a
    # reserved simple value), but it reads it without running past the end or leaving bytes.
    try:
        cbor2.loads(data)
    except cbor2.CBORDecodeError as exc:
        assert "premature end" not in str(exc).lower()


def two_million_empty_arrays() -> bytes:
    n = 2_000_000
    return b"\x85\x01\x67packets\x9a" + struct.pack(">I", n) + b"\x80" * n + b"\xf4\xf5"


HOSTILE = {
    "2M empty arrays": (two_million_empty_arrays(), OverLimit, "more than 16384 CBOR items"),
    "deep nesting": (b"\x81" * 10_000 + b"\x80", OverLimit, "nested deeper than 8"),
    "deep tags": (b"\xd8\x20" * 1000 + b"\x00", OverLimit, "nested deeper than 8"),
    "array count past the end": (
        b"\x9b" + (2**64 - 1).to_bytes(8, "big"), DecodeRefused, "runs past the end"
    ),
    "map count past the end": (b"\xba\x7f\xff\xff\xff\x00", DecodeRefused, "runs past the end"),
    "string length past the end": (b"\x5a\xff\xff\xff\xff" + b"x" * 10, DecodeRefused, "runs past the end"),
    "text length past the end": (b"\x7b" + (2**63).to_bytes(8, "big"), DecodeRefused, "runs past the end"),
    "indefinite arrays, never closed": (b"\x9f" * 5, DecodeRefused, "ends inside an item"),
    "indefinite arrays nested deep": (b"\x9f" * 50 + b"\xff" * 50, OverLimit, "nested deeper than 8"),
    "indefinite array of many items": (b"\x9f" + b"\x00" * 20_000 + b"\xff", OverLimit, "more than"),
    "a string chunk of another type": (b"\x5f\x61a\xff", DecodeRefused, "another type"),
    "a nested indefinite chunk": (b"\x5f\x5f\xff\xff", DecodeRefused, "itself indefinite"),
    "a break outside": (b"\x82\x00\xff", DecodeRefused, "break outside"),
    "reserved additional information": (b"\x1c", DecodeRefused, "reserved additional information 28"),
    "a header cut short": (b"\x19\x01", DecodeRefused, "ends inside an item header"),
    "trailing bytes": (b"\x80\x80", DecodeRefused, "1 bytes after the CBOR item"),
    "memory over the limit": (b"\x99\x3f\xff" + b"\x80" * 0x3FFF, OverLimit, "bytes of memory"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_shapes_are_refused_at_their_header(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data, kind, words = HOSTILE[name]
    limits = DecodeLimits(max_alloc=64 * 1024) if name == "memory over the limit" else DecodeLimits()
    with pytest.raises(kind) as caught:
        check(data, limits)
    assert words in str(caught.value)
    # encoding.decode refuses it as Malformed without ever calling cbor2.
    monkeypatch.setattr(cbor2, "loads", _must_not_decode)
    with pytest.raises(Malformed, match="refused before decoding"):
        decode(data, max_size=len(data), what="the input", limits=limits)


def _must_not_decode(*args: Any, **kw: Any) -> Any:
    raise AssertionError("cbor2 was asked to decode input the limits refuse")


def test_tags_and_indefinite_lengths_can_be_refused_outright() -> None:
    strict = DecodeLimits(allow_tags=False, allow_indefinite=False)
    check(cbor2.dumps([1, b"x", "y", {"a": 2.5}]), strict)
    for data, words in [
        (cbor2.dumps(cbor2.CBORTag(42, 1)), "a CBOR tag"),
        (b"\x9f\xff", "indefinite-length array or map"),
        (b"\x5f\xff", "indefinite-length string"),
    ]:
        check(data, DecodeLimits())
        with pytest.raises(DecodeRefused, match=words):
            check(data, strict)


def test_the_walk_reads_at_most_max_items_headers() -> None:
    # 100,000 one-byte integers in a definite array: refused at the array's header, whatever
    # follows; in an indefinite array, at the first item over the limit.
    definite = b"\x9a" + struct.pack(">I", 100_000) + b"\x00" * 100_000
    with pytest.raises(OverLimit, match="more than 10 CBOR items"):
        check(definite, DecodeLimits(max_items=10))
    indefinite = b"\x9f" + b"\x00" * 100_000 + b"\xff"
    with pytest.raises(OverLimit, match="more than 10 CBOR items"):
        check(indefinite, DecodeLimits(max_items=10))
