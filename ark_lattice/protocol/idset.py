"""A growing set of 32-byte ids in about 32 bytes each: what one reconciliation run reported.

The initiator of a run remembers every id it reported (reconcile.py: a frame-size cut reopens
ranges it had settled, and their ids must not be reported twice). As a ``set[bytes]`` that is
~110 bytes an id — the table's slots and a bytes object each, kept alive after the packet itself
has arrived — and the run of a 100k-packet sync reports 100k ids. :class:`IdSet` keeps them as
one sorted ``bytearray`` of fixed-width records, searched by bisection (through an index of
every 64th record), plus a small ``set`` of the latest ones; the set is merged into the blob once
it holds an eighth as many (at least :data:`MERGE_AT`), moving the old records between two new
ones as one block, so the blob is the bulk and a merge costs a lookup per new id.

The blob is an anonymous memory map, not a ``bytearray``: it grows by ``mremap``, and its pages
go back to the system when the set is dropped. A ``bytearray`` of a few megabytes lives in the C
heap, under the allocator's mmap threshold (runtime/allocator.py), and each time it grows it may
move and leave the space it held as a hole among the blocks allocated since; in the receiver of a
100k-packet sync that heap kept megabytes free that it never gave back (issue 16).

Pure and exact: membership compares whole ids.
"""

from __future__ import annotations

import mmap
from bisect import bisect_right

__all__ = ["IdSet", "ID_SIZE", "MERGE_AT", "STRIDE"]

ID_SIZE = 32
MERGE_AT = 4096  # recent ids held as objects before the first merge into the blob
STRIDE = 64  # records of the blob per entry of its index
# Private, not the default shared mapping: a shared anonymous map grown by mremap faults (SIGBUS)
# beyond its first size. (Windows has no such flags and grows it by copying.)
_PRIVATE = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}


class IdSet:
    """Ids of exactly :data:`ID_SIZE` bytes (else ``ValueError``); only added, never removed."""

    __slots__ = ("_blob", "_count", "_recent", "_index")

    def __init__(self) -> None:
        self._blob: mmap.mmap | None = None  # _count records, then room; made at the first merge
        self._count = 0
        self._recent: set[bytes] = set()
        # Every STRIDE-th record of the blob as an object, so a lookup bisects this short list in
        # C and only the last few steps slice the blob (~1 µs instead of ~4 at 100k ids).
        self._index: list[bytes] = []

    def __len__(self) -> int:
        return self._count + len(self._recent)

    def __contains__(self, ident: object) -> bool:
        if ident in self._recent:
            return True
        if not isinstance(ident, bytes) or len(ident) != ID_SIZE:
            return False
        # The block of the index that holds it, if anything does, then a search of that block's
        # bytes in C for a match at a record's boundary: the bisection's last six steps, a loop
        # in Python, took half of each lookup (2.1-2.9 -> 1.0 µs at 100k ids).
        block = bisect_right(self._index, ident) - 1
        if block < 0:
            return False
        blob = self._blob
        assert blob is not None  # the index is made of its records
        start = block * STRIDE * ID_SIZE
        stop = min(start + STRIDE * ID_SIZE, self._count * ID_SIZE)
        at = blob.find(ident, start, stop)
        while at >= 0 and (at - start) % ID_SIZE:  # straddling two records: not one of them
            at = blob.find(ident, at + 1, stop)
        return at >= 0

    def _lower_bound(self, ident: bytes, hi: int) -> int:
        """The first position below ``hi`` whose record is not less than ``ident`` (else ``hi``)."""
        block = bisect_right(self._index, ident) - 1
        if block < 0:
            return 0
        blob = self._blob
        assert blob is not None
        lo, hi = min(block * STRIDE, hi), min((block + 1) * STRIDE, hi)
        while lo < hi:
            mid = (lo + hi) >> 1
            start = mid * ID_SIZE
            if blob[start : start + ID_SIZE] < ident:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def add(self, ident: bytes) -> bool:
        """Add ``ident``; returns whether it is new (false: held already)."""
        if len(ident) != ID_SIZE:
            raise ValueError(f"ids are exactly {ID_SIZE} bytes")
        if ident in self:
            return False
        self._recent.add(bytes(ident))
        if len(self._recent) >= max(MERGE_AT, self._count >> 3):
            self._merge()
        return True

    def _merge(self) -> None:
        # In place, from the back: the blob grows by the new records, and the old records between
        # two new ones move up as one block (a memmove), so a merge costs a lookup per new id and
        # never holds a second copy of the blob.
        recent = sorted(self._recent)
        placed = self._count  # old records at and above this one have moved to their place
        end = (self._count + len(recent)) * ID_SIZE
        blob = self._room_for(end)
        for ident in reversed(recent):
            at = self._lower_bound(ident, placed)
            if at < placed:
                size = (placed - at) * ID_SIZE
                blob.move(end - size, at * ID_SIZE, size)
                end -= size
                placed = at
            blob[end - ID_SIZE : end] = ident
            end -= ID_SIZE
        self._count += len(recent)
        self._recent = set()
        step = STRIDE * ID_SIZE
        self._index = [blob[i : i + ID_SIZE] for i in range(0, self._count * ID_SIZE, step)]

    def _room_for(self, size: int) -> mmap.mmap:
        """The blob, with room for ``size`` bytes: it at least doubles when it grows, so the
        records are moved (by the kernel, a page table at a time) a few times in all."""
        blob = self._blob
        if blob is not None and len(blob) >= size:
            return blob
        capacity = max(size, 2 * len(blob) if blob is not None else 0)
        capacity = -(-capacity // mmap.PAGESIZE) * mmap.PAGESIZE
        if blob is not None:
            try:
                blob.resize(capacity)  # mremap: private pages, so the new ones are plain zeroes
                return blob
            except (OSError, SystemError):  # no mremap (macOS): copy into a bigger map
                pass
        grown = mmap.mmap(-1, capacity, **_PRIVATE)
        if blob is not None:
            grown[: self._count * ID_SIZE] = blob[: self._count * ID_SIZE]
            blob.close()
        self._blob = grown
        return grown
