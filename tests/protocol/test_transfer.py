"""The transfer window (protocol/transfer.py): wants capped by count and by expected bytes."""

from __future__ import annotations

import hashlib

from ark_lattice.protocol.transfer import MAX_WIRE_PACKET, TransferWindow

MiB = 1024 * 1024


def _ids(n: int, tag: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{tag}{i}".encode()).digest() for i in range(n)]


def _answer_oldest(window: TransferWindow, size: int) -> int:
    """The peer answers the oldest want in full with packets of ``size`` bytes."""
    batch = sorted(window._inflight[0])
    for ident in batch:
        assert window.arrived(ident, size)
    window.answered()
    return len(batch)


def test_the_first_want_expects_the_largest_packets_then_the_window_opens_by_their_size() -> None:
    window = TransferWindow(want_batch=512, max_inflight_wants=4, max_inflight_bytes=32 * MiB)
    window.want(_ids(20_000))
    (first,) = window.pump()
    assert len(first.ids) == 32 * MiB // MAX_WIRE_PACKET  # nothing known yet: assume the worst
    assert window.pump() == []  # the bytes we expect fill the window
    _answer_oldest(window, 1100)  # small packets
    wants = window.pump()
    assert [len(w.ids) for w in wants] == [512] * 4  # now the count is the limit, not the bytes
    assert window.expected_size == 1100


def test_large_packets_keep_the_bytes_in_flight_under_the_cap() -> None:
    window = TransferWindow(want_batch=512, max_inflight_wants=4, max_inflight_bytes=16 * MiB)
    window.want(_ids(300))
    delivered = 0
    while window.busy:
        window.pump()
        assert window.inflight_bytes <= 16 * MiB + MAX_WIRE_PACKET  # one packet over at most
        assert len(window._inflight_ids) * MiB <= 16 * MiB
        delivered += _answer_oldest(window, MiB)
    assert delivered == 300 and window.pending == 0


def test_a_window_smaller_than_one_packet_still_moves_one_at_a_time() -> None:
    window = TransferWindow(want_batch=512, max_inflight_wants=4, max_inflight_bytes=1000)
    window.want(_ids(3))
    sizes = []
    while window.busy:
        sizes.append([len(w.ids) for w in window.pump()])
        _answer_oldest(window, 5000)
    assert sizes == [[1], [1], [1]]


def test_packets_that_do_not_come_are_not_counted_in_the_expected_size() -> None:
    window = TransferWindow(want_batch=4, max_inflight_wants=1, max_inflight_bytes=64 * MiB)
    window.want(_ids(8))
    (want,) = window.pump()
    window.arrived(want.ids[0], 2000)
    window.answered()  # the other three were not sent: skipped, and not part of the mean
    assert window.expected_size == 2000
    assert window.pending == 4


def test_large_packets_are_wanted_in_shares_of_the_window_not_one_by_one() -> None:
    # Wanting again after every packet that arrives would fill the four want slots with wants of
    # one id each: the window would hold a few packets, and the peer idle between its answers.
    window = TransferWindow(want_batch=512, max_inflight_wants=4, max_inflight_bytes=32 * MiB)
    window.want(_ids(300))
    sizes = [len(w.ids) for w in window.pump()]
    while window.busy:
        oldest = sorted(window._inflight[0])
        for ident in oldest:  # the answer comes one packet at a time, the window pumped after each
            assert window.arrived(ident, MiB)
            sizes += [len(w.ids) for w in window.pump()]
        window.answered()
        sizes += [len(w.ids) for w in window.pump()]
        assert len(window._inflight_ids) * MiB <= 32 * MiB
    assert sum(sizes) == 300
    share = 32 // 4  # the window's bytes split among the wants, in packets of the size seen
    assert all(n >= share for n in sizes[:-1]), sizes  # only the remainder may be smaller
    assert max(len(sizes) - 1, 1) <= 300 // share  # so a few dozen wants, not one per packet
