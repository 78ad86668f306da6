"""IdSet: the same membership as a set of bytes, in a sorted blob plus a few recent ids."""

from __future__ import annotations

import mmap
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.protocol import idset
from ark_lattice.protocol.idset import IdSet

# Ids that share long prefixes and end in zero bytes, so the bisection compares whole ids.
ids = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.integers(0, 300).map(lambda i: bytes(28) + i.to_bytes(4, "big")),
    st.integers(0, 300).map(lambda i: i.to_bytes(4, "big") + bytes(28)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), ids), max_size=400), st.integers(1, 16), st.integers(1, 8))
def test_it_holds_what_a_set_holds(ops: list[tuple[bool, bytes]], merge_at: int, stride: int) -> None:
    # Merge often and index sparsely: the blob and its index are what is tested.
    saved = idset.MERGE_AT, idset.STRIDE
    idset.MERGE_AT, idset.STRIDE = merge_at, stride
    try:
        held, model = IdSet(), set()
        for add, ident in ops:
            if add:
                assert held.add(ident) == (ident not in model)
                model.add(ident)
            assert (ident in held) == (ident in model)
            assert len(held) == len(model)
        for ident in model:
            assert ident in held
    finally:
        idset.MERGE_AT, idset.STRIDE = saved


def test_bytes_across_two_records_are_not_an_id_held() -> None:
    """A lookup searches a block of the blob's bytes: a match that starts inside one record and
    ends in the next is no record."""
    saved = idset.MERGE_AT
    idset.MERGE_AT = 1  # every id in the blob at once
    try:
        held = IdSet()
        first, second = b"\x01" + b"\xaa" * 31, b"\x02" + b"\xbb" * 31
        held.add(first)
        held.add(second)
        assert held._count == 2
        for cut in range(1, 32):  # the last bytes of one, then the first of the next
            across = first[cut:] + second[:cut]
            assert across not in held and held.add(across)
    finally:
        idset.MERGE_AT = saved


def test_a_large_set_lives_in_one_blob_of_32_byte_records() -> None:
    held = IdSet()
    fresh = [os.urandom(32) for _ in range(100_000)]
    assert all(held.add(ident) for ident in fresh)
    assert not any(held.add(ident) for ident in fresh[::7])
    assert len(held) == 100_000
    assert len(held._recent) < 100_000 // 8 and held._blob is not None and len(held._blob) >= 32 * held._count
    assert os.urandom(32) not in held and b"short" not in held and "text" not in held
    with pytest.raises(ValueError):
        held.add(b"x" * 31)


class _NoRemap(mmap.mmap):
    """A memory map that cannot grow in place, as where there is no ``mremap`` (macOS)."""

    def resize(self, newsize: int) -> None:
        raise SystemError("mmap: resizing not available--no mremap()")


def test_where_the_blob_cannot_grow_in_place_it_is_copied_into_a_bigger_one(monkeypatch: Any) -> None:
    monkeypatch.setattr(mmap, "mmap", _NoRemap)  # what idset.py makes its blobs with
    monkeypatch.setattr(idset, "MERGE_AT", 64)  # many merges, each growing the blob
    held = IdSet()
    fresh = [os.urandom(32) for _ in range(5000)]
    assert all(held.add(ident) for ident in fresh)
    assert isinstance(held._blob, _NoRemap) and held._count > 4000
    assert all(ident in held for ident in fresh) and not any(held.add(ident) for ident in fresh)
    assert os.urandom(32) not in held
