"""The transfer window of one session: which packet ids we want from the peer, and how many at once.

Transfer is receiver-driven (docs/protocol.md §9): we ask for ids in ``want`` frames of at most
``want_batch`` ids, with at most ``max_inflight_wants`` frames unanswered, and the peer answers
each ``want`` in order with ``packets`` frames, the last one flagged ``last``. So a peer can never
push more wanted packets at us than we asked for, and a slow receiver slows the sender down.

The window is also measured in bytes: the ids in flight times the expected size of one packet
stay under ``max_inflight_bytes``, so a window of 1 MiB packets holds a few dozen MiB in flight,
not hundreds (and the sender, which loads a want's packets to answer it, holds no more either).
While wants are in flight, a new one waits until it can ask for its share of the window (the
bytes split among the wants), so large packets are not wanted one at a time as each arrives.
The expected size is the mean wire size of the wanted packets that arrived in this session;
before the first one, the largest a packet can be, so the first want of a session is small and
the window opens as soon as its answer shows how big the packets are.

:class:`TransferWindow` keeps the queue of ids still to ask for, the batches in flight (one per
``want``, oldest first), and the ids not to ask this peer for again in this session.
:func:`packet_frames` is the sending side: packets cut into ``packets`` frames under the size
budget. Both are pure; the session sends the frames they return.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from ark_lattice.packet import MAX_BODY, MAX_HEADER, Packet
from ark_lattice.protocol.frames import MAX_PACKETS, PacketsFrame, WantFrame, WirePacket

__all__ = ["TransferWindow", "packet_frames", "wire_size", "MAX_WIRE_PACKET", "DEFAULT_INFLIGHT_BYTES"]

#: The largest wire size of one packet (WirePacket.size): what we expect before we know better.
MAX_WIRE_PACKET = MAX_HEADER + 64 + MAX_BODY + 16
#: Bytes of wanted packets in flight from one peer, at most (as expected; see the module doc).
DEFAULT_INFLIGHT_BYTES = 32 * 1024 * 1024


def wire_size(packet: Packet) -> int:
    """A packet's size as the transfer window counts it (that of its WirePacket)."""
    return len(packet.header_bytes) + len(packet.signature) + len(packet.body) + 16


class TransferWindow:
    """The ids we want from one peer: queued, in flight, or not to be asked for again."""

    def __init__(
        self, *, want_batch: int, max_inflight_wants: int, max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES
    ) -> None:
        self.want_batch = want_batch
        self.max_inflight_wants = max_inflight_wants
        self.max_inflight_bytes = max_inflight_bytes
        self._arrived = 0  # wanted packets that arrived in this session
        self._arrived_bytes = 0  # and their wire bytes: the mean is the expected size
        self._queue: deque[bytes] = deque()
        self._queued: set[bytes] = set()
        self._inflight: deque[set[bytes]] = deque()  # one set per want frame, in order
        self._inflight_ids: set[bytes] = set()
        # Ids not to ask this peer for again in this session: it did not send them when asked, or
        # our policy refused them (reconciliation would otherwise offer them every round).
        self._skip: set[bytes] = set()

    @property
    def busy(self) -> bool:
        """Ids are still queued or a want is unanswered."""
        return bool(self._queue or self._inflight)

    @property
    def pending(self) -> int:
        """Ids wanted and not yet arrived: queued, or asked for in a want still unanswered."""
        return len(self._queue) + len(self._inflight_ids)

    def want(self, ids: Iterable[bytes], *, first: bool = False) -> None:
        """Queue ids not already queued, in flight or skipped (missing dependencies go ``first``)."""
        known = (self._queued, self._inflight_ids, self._skip)
        fresh = [i for i in ids if not any(i in ids_ for ids_ in known)]
        if first:
            self._queue.extendleft(reversed(fresh))
        else:
            self._queue.extend(fresh)
        self._queued.update(fresh)

    @property
    def expected_size(self) -> int:
        """The wire size we expect of the next wanted packet (see the module doc)."""
        if not self._arrived:
            return MAX_WIRE_PACKET
        return max(1, -(-self._arrived_bytes // self._arrived))

    @property
    def inflight_bytes(self) -> int:
        """The bytes we expect the wants in flight still to bring."""
        return len(self._inflight_ids) * self.expected_size

    def pump(self) -> list[WantFrame]:
        """The want frames to send now: queued ids, as far as the window has room (in wants and
        in bytes; one id at least while nothing is in flight, so a transfer always moves)."""
        frames: list[WantFrame] = []
        expected = self.expected_size
        share = self._share(expected)
        while self._queue and len(self._inflight) < self.max_inflight_wants:
            room = (self.max_inflight_bytes - len(self._inflight_ids) * expected) // expected
            if self._inflight_ids and room < min(share, len(self._queue)):
                break  # wait for a want's share of room rather than spend a want on a few ids
            batch: list[bytes] = []
            while self._queue and len(batch) < min(self.want_batch, max(1, room)):
                ident = self._queue.popleft()
                self._queued.discard(ident)
                batch.append(ident)
            self._inflight.append(set(batch))
            self._inflight_ids.update(batch)
            frames.append(WantFrame(tuple(batch)))
        return frames

    def _share(self, expected: int) -> int:
        """The ids one want waits for room for while others are in flight: the byte window split
        among the wants (the want batch at most). When the bytes, not the count of wants, bound the
        window (large packets), a want sent for every packet that arrived would fill the want slots
        with wants of one id each: the window would hold a few packets, not the bytes it may, and
        the peer, which loads a want's packets before it answers, would send a burst, then idle
        (issue 16: 1 MiB packets were wanted 28, 1, 1, 1 at a time; now about 8 at a time, and
        `bench sync --large-packets 300` went from 144 and 178 to 194 and 204 packets/s)."""
        return min(self.want_batch, max(1, self.max_inflight_bytes // expected // self.max_inflight_wants))

    def drop_queue(self) -> None:
        """The peer no longer sends to us: forget what we had not asked for yet."""
        self._queue.clear()
        self._queued.clear()

    @property
    def answering(self) -> bool:
        """A want is unanswered, so a non-live ``packets`` frame is expected."""
        return bool(self._inflight)

    def arrived(self, ident: bytes, size: int = 0) -> bool:
        """A packet of the answer to the oldest want (``size``: its wire size); false if that
        want did not ask for it."""
        batch = self._inflight[0]
        if ident not in batch:
            return False
        batch.discard(ident)
        self._inflight_ids.discard(ident)
        if size > 0:
            self._arrived += 1
            self._arrived_bytes += size
        return True

    def answered(self) -> None:
        """The ``last`` frame of the answer to the oldest want: what it did not bring, we skip."""
        batch = self._inflight.popleft()
        self._inflight_ids.difference_update(batch)
        self._skip.update(batch)

    def skip(self, ids: Iterable[bytes]) -> None:
        """Never ask this peer for these again in this session (our policy refused them)."""
        self._skip.update(ids)


def packet_frames(packets: Sequence[Packet], *, budget: int, live: bool) -> list[PacketsFrame]:
    """``packets`` in order, cut into frames of at most ``budget`` bytes and ``MAX_PACKETS`` each.

    A packet bigger than the budget still goes, alone in its frame (a 1 MiB body always fits the
    channel). The answer to a want always ends with a ``last`` frame, even an empty one, so the
    peer's window moves on; a live push of nothing sends nothing.
    """
    frames: list[PacketsFrame] = []
    chunk: list[WirePacket] = []
    left = budget
    for p in packets:
        wire = WirePacket(p.header_bytes, p.signature, p.body)
        if chunk and (wire.size > left or len(chunk) == MAX_PACKETS):
            frames.append(PacketsFrame(tuple(chunk), live=live, last=False))
            chunk, left = [], budget
        chunk.append(wire)
        left -= wire.size
    if chunk or not live:
        frames.append(PacketsFrame(tuple(chunk), live=live, last=True))
    return frames
