"""Echoes: packets a peer we do not send to gave us that we already held.

With a peer we only receive from (a sandbox peer), a session reconciles over the packets *that peer*
sent us (docs/protocol.md §8, "Sets"), so that our fingerprints tell it nothing about the rest of
our store. A packet it holds that we got from someone else is then missing from our side at every
run: we want it, it sends it, our policy decides it, and the store finds it already held — each
sync round, forever (every two seconds, a ~45 KB audit event about packets we already hold).

The store keeps one ``source`` per packet, so the coordinator remembers these echoes itself and
adds them to the set of the next run with that peer. That tells the peer nothing new: each is a
packet it sent us, which would be in the set anyway had we not held it before. The memory is per
peer and bounded (:data:`MAX_PER_PEER`, oldest forgotten first); a forgotten echo, or all of them
after a restart, costs one more transfer of those packets, and their audit is counted, not
written again (policy/repeats.py). Sans-I/O, like the rest of protocol/.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from ark_lattice.packet import Packet

__all__ = ["Echoes", "MAX_PER_PEER"]

MAX_PER_PEER = 100_000  # ~100 bytes each


class Echoes:
    def __init__(self, *, max_per_peer: int = MAX_PER_PEER) -> None:
        self.max_per_peer = max_per_peer
        self._by_peer: dict[str, OrderedDict[bytes, int]] = {}

    def add(self, peer: str, packets: Iterable[Packet]) -> None:
        """``peer`` sent us ``packets``, which we already held."""
        echoes = self._by_peer.get(peer)
        for packet in packets:
            if echoes is None:
                echoes = self._by_peer[peer] = OrderedDict()
            echoes[packet.id] = packet.header.created_at
            echoes.move_to_end(packet.id)
        if echoes is not None:
            while len(echoes) > self.max_per_peer:
                echoes.popitem(last=False)

    def keys(self, peer: str) -> tuple[tuple[int, bytes], ...]:
        """The ``(created_at, id)`` items to add to the set we reconcile over with ``peer``."""
        echoes = self._by_peer.get(peer)
        return tuple((created_at, ident) for ident, created_at in echoes.items()) if echoes else ()

    def forget(self, peer: str) -> None:
        self._by_peer.pop(peer, None)
