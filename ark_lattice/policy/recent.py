"""A bounded memory of 64-bit keys in fixed arrays: its size does not grow with what it holds.

:class:`RepeatedDecisions` remembers which policy decisions are already in the ledger (one key per
decision, up to 65,536 of them). As an ``OrderedDict`` of ints that cost ~180 bytes a key, and
a receiver syncing 100k packets takes 100k distinct decisions, so the memory grew by ~11 MB
between a 10k-packet and a 100k-packet sync — a third of the receiver's growth in RSS. Here
the keys live in arrays allocated once, at full size (~20 bytes a key of capacity):

- ``_ring``: the keys, one per position (``array('Q')``);
- ``_table``: an open-addressing hash table (linear probing, at most half full) from a key to
  its ring position + 1 (0: empty), so a lookup is a few array reads;
- ``_seen``: one reference bit per position, for the CLOCK policy (Corbató 1968): once full, a
  new key takes the position of the first key the hand finds not seen since the hand last
  passed it. That approximates "least recently seen forgotten first" at O(1) per key.

Nothing is forgotten before ``capacity`` distinct keys were remembered. Removal from the table
shifts later entries of the probe run back (Knuth, TAOCP vol. 3, 6.4 Algorithm R), so no
tombstones accumulate. Pure, no I/O.
"""

from __future__ import annotations

from array import array

__all__ = ["RecentKeys"]

_KEY_MASK = (1 << 64) - 1


class RecentKeys:
    """At most ``capacity`` 64-bit keys (ints; reduced mod 2**64), the least recently seen
    forgotten first (approximately: CLOCK)."""

    __slots__ = ("capacity", "_mask", "_table", "_ring", "_seen", "_size", "_hand")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        slots = 1 << max(3, (2 * capacity - 1).bit_length())  # at most half full: short probes
        self._mask = slots - 1
        self._table = array("I", bytes(array("I").itemsize * slots))
        self._ring = array("Q", bytes(8 * capacity))
        self._seen = bytearray(capacity)
        self._size = 0
        self._hand = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: int) -> bool:
        return self._find(key & _KEY_MASK)[1] >= 0

    def touch(self, key: int) -> bool:
        """Whether ``key`` is remembered; if so it counts as just seen."""
        pos = self._find(key & _KEY_MASK)[1]
        if pos < 0:
            return False
        self._seen[pos] = 1
        return True

    def add(self, key: int) -> None:
        """Remember ``key`` (not remembered yet: see :meth:`touch`), forgetting one if full."""
        key &= _KEY_MASK
        slot, found = self._find(key)
        if found >= 0:
            raise ValueError("key is remembered already")
        if self._size < self.capacity:
            pos = self._size
            self._size += 1
        else:
            pos = self._evict()
            slot, _ = self._find(key)  # the removal may have shifted the probe run
        self._ring[pos] = key
        self._seen[pos] = 0
        self._table[slot] = pos + 1

    def _home(self, key: int) -> int:
        # Python's hash of a tuple is well mixed in all bits, but fold the high half in anyway.
        return (key ^ (key >> 29)) & self._mask

    def _find(self, key: int) -> tuple[int, int]:
        """(the slot holding ``key`` or the empty slot ending its probe run, its ring position
        or -1)."""
        table, ring, mask = self._table, self._ring, self._mask
        slot = self._home(key)
        while entry := table[slot]:
            if ring[entry - 1] == key:
                return slot, entry - 1
            slot = (slot + 1) & mask
        return slot, -1

    def _evict(self) -> int:
        """Forget the key at the CLOCK hand (skipping, and clearing, those seen since); returns
        its ring position, now free."""
        seen, capacity = self._seen, self.capacity
        hand = self._hand
        while seen[hand]:
            seen[hand] = 0
            hand = hand + 1 if hand + 1 < capacity else 0
        self._hand = hand + 1 if hand + 1 < capacity else 0
        slot, pos = self._find(self._ring[hand])
        assert pos == hand
        self._remove(slot)
        return hand

    def _remove(self, hole: int) -> None:
        """Empty ``hole`` and move back the entries of its probe run that may fill it."""
        table, ring, mask = self._table, self._ring, self._mask
        slot = hole
        while True:
            slot = (slot + 1) & mask
            entry = table[slot]
            if not entry:
                break
            home = self._home(ring[entry - 1])
            # The entry stays if its home lies cyclically in (hole, slot]: moving it to the hole
            # would put it before its home, where a lookup never probes.
            if hole < slot:
                stays = hole < home <= slot
            else:
                stays = home > hole or home <= slot
            if not stays:
                table[hole] = entry
                hole = slot
        table[hole] = 0
