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
        self.missing = missing  # fetch these: dependencies nobody has sent yet


class Intake:
    def __init__(self, max_waiting: int = 10_000) -> None:
        self._max_waiting = max_waiting
        # id -> packet waiting for dependencies; oldest first so overflow drops the oldest
        self._waiting: OrderedDict[bytes, Packet] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    @staticmethod
    def dependencies(packets: Iterable[Packet]) -> set[bytes]:
        return {d for p in packets for d in p.header.depends}

    def admit(self, packets: Sequence[Packet], held: set[bytes]) -> Admission:
        """Split ``packets`` into ready and waiting; ``held`` are the dependencies already stored."""
        for p in packets:
            if p.id not in held:
                self._waiting[p.id] = p
        ready = self._release(set(held))
        missing = {
            d
            for p in self._waiting.values()
            for d in p.header.depends
            if d not in held and d not in self._waiting
        }
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
        progress = True
        while progress:
            progress = False
            for pid, p in sorted(self._waiting.items(), key=lambda kv: (kv[1].header.created_at, kv[0])):
                if all(d in available for d in p.header.depends):
                    ready.append(p)
                    available.add(pid)
                    del self._waiting[pid]
                    progress = True
        return ready
