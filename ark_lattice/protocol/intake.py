"""Dependencies first (DESIGN §4): received packets wait here until what they build on is held.

Pure bookkeeping for the node: it says which packets of a batch can be stored now (in an order
where every dependency comes before its dependants), which must wait, and which dependency ids
to fetch. The node asks its store which dependencies it already holds and passes that in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from ark_lattice.packet import Packet

__all__ = ["Intake", "Admission"]


class Admission:
    __slots__ = ("ready", "missing")

    def __init__(self, ready: list[Packet], missing: set[bytes]) -> None:
        self.ready = ready  # store these, in this order
        self.missing = missing  # fetch these: dependencies not asked for yet


class Intake:
    def __init__(self, max_waiting: int = 10_000) -> None:
        self._max_waiting = max_waiting
        # id -> (packet, the dependencies it still lacks); oldest first, so overflow drops those
        self._waiting: OrderedDict[bytes, tuple[Packet, set[bytes]]] = OrderedDict()
        self._requested: set[bytes] = set()  # dependencies already asked for, not stored yet

    def __len__(self) -> int:
        return len(self._waiting)

    @staticmethod
    def dependencies(packets: Iterable[Packet]) -> set[bytes]:
        return {d for p in packets for d in p.header.depends}

    def admit(self, packets: Sequence[Packet], held: set[bytes]) -> Admission:
        """Split ``packets`` into ready and waiting; ``held`` are the dependencies already stored."""
        incoming = {p.id for p in packets}
        ready: list[Packet] = []
        for p in sorted(packets, key=lambda p: (p.header.created_at, p.id)):
            lacking = {d for d in p.header.depends if d not in held}
            if lacking:
                self._waiting[p.id] = (p, lacking)
            else:
                ready.append(p)
        # Packets of this batch satisfy each other (and earlier waiters) as they become ready.
        ready += self._release({p.id for p in ready})
        missing = {
            d
            for _, lacking in self._waiting.values()
            for d in lacking
            if d not in incoming and d not in self._waiting and d not in self._requested
        }
        self._requested |= missing
        while len(self._waiting) > self._max_waiting:
            # A dependency that never comes must not pin memory: the dropped packet is simply
            # not stored, and the next reconciliation offers it again.
            self._waiting.popitem(last=False)
        return Admission(ready, missing)

    def stored(self, ids: Iterable[bytes]) -> list[Packet]:
        """Packets that became ready because ``ids`` are now stored."""
        return self._release(set(ids))

    def _release(self, available: set[bytes]) -> list[Packet]:
        ready: list[Packet] = []
        frontier = set(available)
        self._requested -= frontier
        while frontier:
            newly: set[bytes] = set()
            for pid, (p, lacking) in list(self._waiting.items()):
                lacking -= frontier
                if not lacking:
                    ready.append(p)
                    del self._waiting[pid]
                    newly.add(pid)
            self._requested -= newly
            frontier = newly
        return ready
