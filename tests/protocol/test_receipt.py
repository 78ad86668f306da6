"""Receipt in three steps (protocol/receipt.py): open in order, verify anywhere, deliver in order.

A driver that verifies frames on other threads, several at once and in any order, must leave the
session exactly where ``receive_data`` (open, verify inline, deliver) leaves it.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from ark_lattice.errors import BadSignature, ErrorCode, Malformed
from ark_lattice.packet import Packet
from ark_lattice.protocol import frames as f
from ark_lattice.protocol.events import PacketsReceived
from ark_lattice.protocol.receipt import Opened, wires_of
from ark_lattice.protocol.session import State

from test_session import ALICE, CORE, Pair, make_packet, open_pair, wire


def _frames() -> list[f.Frame]:
    """Live pushes with a forged and a broken packet among good ones, and a ping between."""
    good = [make_packet(ALICE, n) for n in range(40)]
    forged = make_packet(ALICE, 99)
    bad = f.WirePacket(forged.header_bytes, bytes(64), forged.body)
    broken = f.WirePacket(forged.header_bytes, forged.signature, forged.body + b"!")
    return [
        f.PacketsFrame(tuple(wire(p) for p in good[:15]) + (bad,), live=True),
        f.PingFrame(7),
        f.PacketsFrame((broken,) + tuple(wire(p) for p in good[15:]), live=True),
    ]


def _sealed(pair: Pair, frames: list[f.Frame]) -> list[bytes]:
    """What ``a`` puts on the wire for ``frames``, not yet given to ``b``."""
    for frame in frames:
        pair.a.session._send(frame, pair.now)
    pair.a.collect()
    out = [data for data, _ in pair.a.outbox]
    pair.a.outbox.clear()
    return out


def _outcome(pair: Pair) -> tuple[list[bytes], list[str], list[bytes]]:
    pair.b.drain_events()
    pair.settle()  # b's answers (error frames, the pong) reach a
    stored = sorted(pair.b.node.ids())
    received = [p.id for e in pair.b.of(PacketsReceived) for p in e.packets]
    return stored, pair.b.codes(), received


def test_verifying_apart_and_out_of_order_gives_what_inline_receipt_gives() -> None:
    inline = open_pair(CORE, CORE)
    for data in _sealed(inline, _frames()):
        inline.b.session.receive_data(data, inline.now)
    expected = _outcome(inline)
    assert expected[1] == [ErrorCode.BAD_SIGNATURE, ErrorCode.BAD_PACKET]
    assert len(expected[0]) == 40

    pair = open_pair(CORE, CORE)
    session = pair.b.session
    opened = [session.open(data, pair.now) for data in _sealed(pair, _frames())]
    assert all(o is not None for o in opened)
    # Every frame is opened before any is delivered; the checks run on four threads, in chunks of
    # three packets, submitted in a shuffled order.
    jobs = [(o, start) for o in opened if o is not None for start in range(0, o.size, 3)]
    random.Random(5).shuffle(jobs)
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(o.verify, start, start + 3) for o, start in jobs]:
            future.result()
    assert pair.b.node.ids() == set()  # nothing acted on before delivery
    for o in opened:
        assert o is not None
        session.deliver(o, pair.now)
    assert _outcome(pair) == expected
    assert [type(fr) for fr in pair.a.received if isinstance(fr, f.PongFrame)] == [f.PongFrame]


def test_a_frame_opened_before_the_session_closed_is_dropped_at_delivery() -> None:
    pair = open_pair(CORE, CORE)
    p = make_packet(ALICE, 1)
    frames: list[f.Frame] = [
        f.ErrorFrame(ErrorCode.SHUTDOWN, "bye", True), f.PacketsFrame((wire(p),), live=True)
    ]
    first, second = (pair.b.session.open(data, pair.now) for data in _sealed(pair, frames))
    assert first is not None and second is not None
    pair.b.session.deliver(first, pair.now)
    assert pair.b.session.state is State.CLOSED
    pair.b.session.deliver(second, pair.now)
    pair.b.drain_events()
    assert pair.b.node.ids() == set() and pair.b.session.packets_in == 0


def test_a_frame_that_fails_to_open_is_handled_at_once() -> None:
    pair = open_pair(CORE, CORE)
    (data,) = _sealed(pair, [f.PingFrame(1)])
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    assert pair.b.session.open(tampered, pair.now) is None
    pair.b.drain_events()
    assert pair.b.codes() == [ErrorCode.DECRYPT_FAILED] and pair.b.session.state is State.CLOSED


def test_opened_checks_each_packet_once_in_any_ranges() -> None:
    good = [make_packet(ALICE, n) for n in range(5)]
    forged = f.WirePacket(good[0].header_bytes, bytes(64), good[0].body)
    junk = f.WirePacket(b"\x01", bytes(64), b"")
    opened = Opened(f.PacketsFrame((*map(wire, good), forged, junk)))
    assert opened.size == 7
    opened.verify(2, 4)
    opened.verify(6, 100)  # a range past the end stops at it
    checked = opened.checked()  # the rest is verified now
    assert [c.id for c in checked[:5] if isinstance(c, Packet)] == [p.id for p in good]
    assert isinstance(checked[5], BadSignature) and isinstance(checked[6], Malformed)
    again = opened.checked()
    assert all(a is b for a, b in zip(checked, again, strict=True))  # not verified twice


def test_only_frames_that_carry_packets_have_work_to_verify() -> None:
    p = make_packet(ALICE, 1)
    assert wires_of(f.PingFrame(1)) == () and Opened(f.WantFrame((p.id,))).size == 0
    assert wires_of(f.AlertFrame(wire(p), 3)) == (wire(p),)
    assert wires_of(f.AnswerFrame(1, (wire(p), wire(p)))) == (wire(p), wire(p))
