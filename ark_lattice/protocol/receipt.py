"""A received frame between its opening and its delivery: the part of receipt that may run anywhere.

A session takes a frame in three steps (docs/protocol.md §9, "Receipt"):

1. :meth:`Session.open <ark_lattice.protocol.session.Session.open>` decrypts and parses it. The
   channel's counter nonces make this strictly ordered, so it happens in the session, frame by
   frame, and returns an :class:`Opened`.
2. :meth:`Opened.verify` checks the signed packets the frame carries (header, body hash, Ed25519
   signature, id). It reads nothing of the session and writes only the ``Opened`` itself, so a
   driver may run it on a worker thread, several frames at once: libsodium and hashlib release
   the GIL, which is how a node verifies on all its cores while its loop keeps reading.
3. :meth:`Session.deliver <ark_lattice.protocol.session.Session.deliver>` acts on the frame, in the
   order the frames were opened; every protocol decision (was the packet wanted, is it stamped in
   the future, does the policy let it in) is taken there. A frame not verified yet is verified then,
   inline, so a driver without threads (the simulator, the tests) calls ``receive_data`` and gets
   the same behaviour.

Verification may be split into ranges (:meth:`Opened.verify` with ``start`` and ``stop``) so one
large frame can occupy several threads; each range writes only its own slots.
"""

from __future__ import annotations

from collections.abc import Sequence

from ark_lattice.errors import VerificationError
from ark_lattice.packet import Packet
from ark_lattice.protocol.frames import AlertFrame, AnswerFrame, Frame, PacketsFrame, WirePacket

__all__ = ["Opened", "Checked", "verify_wire", "wires_of"]

#: What checking one wire packet gave: the verified packet, or why it is not one.
Checked = Packet | VerificationError


def verify_wire(wire: WirePacket) -> Checked:
    """Parse and fully verify one wire packet; the error is returned, not raised."""
    try:
        return Packet.from_parts(wire.header, wire.signature, wire.body)
    except VerificationError as exc:
        return exc


def wires_of(frame: Frame) -> Sequence[WirePacket]:
    """The signed packets a frame carries (none for frames that carry no packets)."""
    if isinstance(frame, PacketsFrame | AnswerFrame):
        return frame.packets
    if isinstance(frame, AlertFrame):
        return (frame.packet,)
    return ()


class Opened:
    """One decrypted, parsed frame; its packets are checked by :meth:`verify`, then delivered."""

    __slots__ = ("frame", "wires", "_checked")

    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.wires = wires_of(frame)
        self._checked: list[Checked | None] = [None] * len(self.wires)

    @property
    def size(self) -> int:
        """How many signed packets the frame carries: the work :meth:`verify` has to do."""
        return len(self.wires)

    def verify(self, start: int = 0, stop: int | None = None) -> None:
        """Check the packets ``start:stop`` (all by default). Pure: safe on any thread, and
        disjoint ranges of one frame may be checked on different threads at the same time."""
        checked, wires = self._checked, self.wires
        for i in range(start, len(wires) if stop is None else min(stop, len(wires))):
            if checked[i] is None:
                checked[i] = verify_wire(wires[i])

    def checked(self) -> list[Checked]:
        """Every packet's result, in frame order; what was not verified yet is verified now."""
        self.verify()
        return [c for c in self._checked if c is not None]
