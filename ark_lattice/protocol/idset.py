"""A growing set of 32-byte ids in about 32 bytes each: what one reconciliation run reported.

The initiator of a run remembers every id it reported (reconcile.py: a frame-size cut reopens
ranges it had settled, and their ids must not be reported twice). As a ``set[bytes]`` that is
~110 bytes an id — the table's slots and a bytes object each, kept alive after the packet itself
has arrived — and the run of a 100k-packet sync reports 100k ids. :class:`IdSet` keeps them as
one sorted ``bytearray`` of fixed-width records, searched by bisection, plus a small ``set`` of
the latest ones; the set is merged into the blob once it holds an eighth as many (at least
:data:`MERGE_AT`), so merging costs O(1) amortised per id and the blob is the bulk.

Pure and exact: membership compares whole ids.
"""

from __future__ import annotations

__all__ = ["IdSet", "ID_SIZE", "MERGE_AT"]

ID_SIZE = 32
MERGE_AT = 4096  # recent ids held as objects before the first merge into the blob


class IdSet:
    """Ids of exactly :data:`ID_SIZE` bytes (else ``ValueError``); only added, never removed."""

    __slots__ = ("_blob", "_count", "_recent")

    def __init__(self) -> None:
        self._blob = bytearray()
        self._count = 0
        self._recent: set[bytes] = set()

    def __len__(self) -> int:
        return self._count + len(self._recent)

    def __contains__(self, ident: object) -> bool:
        if ident in self._recent:
            return True
        if not isinstance(ident, bytes) or len(ident) != ID_SIZE:
            return False
        blob = self._blob
        lo, hi = 0, self._count
        while lo < hi:
            mid = (lo + hi) >> 1
            start = mid * ID_SIZE
            key = blob[start : start + ID_SIZE]
            if key < ident:
                lo = mid + 1
            elif key == ident:
                return True
            else:
                hi = mid
        return False

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
        # In place, from the back: the blob grows by the new records and each old record greater
        # than a new one moves up once, so a merge never holds a second copy of the blob.
        recent = sorted(self._recent)
        blob = self._blob
        old = self._count - 1
        blob += bytes(len(recent) * ID_SIZE)
        end = len(blob)
        for ident in reversed(recent):
            while old >= 0:
                start = old * ID_SIZE
                record = blob[start : start + ID_SIZE]
                if record < ident:
                    break
                blob[end - ID_SIZE : end] = record
                end -= ID_SIZE
                old -= 1
            blob[end - ID_SIZE : end] = ident
            end -= ID_SIZE
        self._count += len(recent)
        self._recent = set()
