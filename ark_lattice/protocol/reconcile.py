"""Range-based set reconciliation of packet ids, wire-compatible with negentropy protocol v1.

Two peers each hold a set of items ``(timestamp, id)`` — a 64-bit timestamp and a 32-byte id —
ordered by timestamp, then id. The *initiator* wants to learn which ids it has that the responder
lacks (``have``) and which the responder has that it lacks (``need``), spending bytes and round
trips that grow with the size of the difference, not with the size of the sets. This is Aljoscha
Meyer's range-based set reconciliation ("Range-Based Set Reconciliation", arXiv:2212.13567) in the
production form of Doug Hoyte's negentropy protocol v1
(https://github.com/hoytech/negentropy, ``docs/negentropy-protocol-v1.md``; the message processing
below follows ``cpp/negentropy.h`` step by step).

How it works. A message is a version byte followed by *ranges* that tile the whole ordered space
from ``(0, 0…0)`` to infinity; each range carries only its exclusive upper bound (the lower bound is
the previous range's upper bound) and one of three payloads:

- ``Skip``: the sender needs nothing more about this range;
- ``Fingerprint``: a 16-byte digest of the sender's items in the range;
- ``IdList``: every id the sender has in the range.

The initiator opens with its whole set split into ``buckets`` (16) fingerprinted ranges of equal
item count, or one ``IdList`` if it holds fewer than ``2 * buckets`` items. The receiver of a
fingerprint computes its own over the same bounds: equal means the range is settled (``Skip``),
different means it answers with that range split again into buckets — so a single difference is
pinned down after about ``log_16(n)`` splits, each costing ~16 fingerprints. An ``IdList`` received
by the responder is answered with the responder's own ``IdList`` for that range; an ``IdList``
received by the initiator settles the range: ids only on our side go to ``have``, ids only in the
list go to ``need``. The initiator stops (``Round.message is None``) when the responder's reply
left nothing open. The initiator keeps no state between rounds: everything still open is in flight.

Wire format (negentropy v1)::

    Message     := 0x61 Range*
    Range       := Bound Varint(mode) (Skip | Fingerprint | IdList)
    Skip        :=                                   (mode 0)
    Fingerprint := Byte{16}                          (mode 1)
    IdList      := Varint(count) Byte{32}*count      (mode 2)
    Bound       := Varint(encodedTimestamp) Varint(prefixLength) Byte{prefixLength}

Varints are base-128, most significant digit first, high bit set on all but the last byte. A bound's
timestamp is encoded as ``0`` for infinity (``2**64 - 1``, reserved: no item may use it) and as
``1 + (timestamp - previous timestamp in this message)`` otherwise; its id is the shortest prefix
(zero-padded to 32 bytes) that separates the two items it falls between. A range fingerprint is the
first 16 bytes of ``SHA-256((sum of ids as little-endian integers mod 2**256) as 32 LE bytes ‖
Varint(count))``; :class:`ItemSet` keeps prefix sums so every range fingerprint costs O(1).

Frame size. When ``frame_size_limit`` is set, a party stops processing an incoming message once its
reply would come within 200 bytes of the limit, and closes the reply with one fingerprint for all
of its items from there to infinity, so the peer reopens that remainder next round (negentropy's
``frameSizeLimit``). Reconciliation then takes more rounds but no message exceeds the limit.

Untrusted input. Every incoming message is checked against ``max_message_size`` before it is read;
any truncation, overlong or non-minimal varint, unknown mode, id prefix over 32 bytes, bound lower
than the previous bound or id count beyond the message end raises
``RemoteProtocolError("malformed", reason)`` — never another exception — and each byte of input is
read once, so a hostile message cannot make the parser loop.

Sans-I/O: no sockets, no event loop, no clock. The node runtime carries the messages; the
simulator and :func:`sync_in_memory` pass them directly.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from ark_lattice.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ItemSet",
    "Initiator",
    "Responder",
    "Round",
    "Stats",
    "sync_in_memory",
    "NEGENTROPY_VERSION",
    "ID_SIZE",
    "FINGERPRINT_SIZE",
    "INFINITY",
    "DEFAULT_FRAME_SIZE_LIMIT",
    "DEFAULT_MAX_MESSAGE_SIZE",
]

#: Protocol version byte of negentropy v1; 0x60–0x6F is the range reserved for negentropy versions.
NEGENTROPY_VERSION = 0x61
ID_SIZE = 32
FINGERPRINT_SIZE = 16
#: The largest 64-bit timestamp stands for "infinity" in bounds, so no item may carry it (spec §Preparation).
INFINITY = 2**64 - 1
DEFAULT_FRAME_SIZE_LIMIT = 60_000
#: Incoming messages over this size are refused unread; a peer with the default frame limit stays far below.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20


class ItemSet:
    """An immutable, sorted snapshot of ``(timestamp, id)`` items with O(1) range fingerprints.

    Duplicate items collapse into one (it is a set). Timestamps must be in ``0 .. 2**64 - 2``
    (``2**64 - 1`` is the protocol's infinity) and ids exactly 32 bytes, else ``ValueError``.
    Positions (``start``/``stop``) are indexes into the sorted order.
    """

    __slots__ = ("_keys", "_prefix")

    def __init__(self, items: Iterable[tuple[int, bytes]] = ()) -> None:
        keys = sorted(set(items))
        # Validate after sorting: the extreme timestamps are at the ends, so only ids need a full pass.
        if keys:
            low, high = keys[0][0], keys[-1][0]
            if not (isinstance(low, int) and isinstance(high, int) and 0 <= low and high < INFINITY):
                raise ValueError(f"item timestamps must be integers in 0..{INFINITY - 1}")
            for key in keys:
                ident = key[1]
                if type(ident) is not bytes or len(ident) != ID_SIZE or type(key[0]) is not int:
                    raise ValueError(f"item {key!r} is not (int timestamp, {ID_SIZE}-byte id)")
        self._keys: list[tuple[int, bytes]] = keys
        # Prefix sums of the ids as integers make any range sum one subtraction; reduced mod 2**256
        # only when fingerprinted, which is cheaper than reducing a million times here.
        self._prefix: list[int] = list(
            accumulate((int.from_bytes(key[1], "little") for key in keys), initial=0)
        )

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return iter(self._keys)

    def __repr__(self) -> str:
        return f"ItemSet(<{len(self._keys)} items>)"

    def fingerprint(self, start: int = 0, stop: int | None = None) -> bytes:
        """The negentropy v1 fingerprint of the items at positions ``start`` .. ``stop - 1``."""
        if stop is None:
            stop = len(self._keys)
        if not 0 <= start <= stop <= len(self._keys):
            raise ValueError(f"bad range {start}..{stop} of {len(self._keys)} items")
        total = (self._prefix[stop] - self._prefix[start]) % (1 << 256)
        digest = hashlib.sha256(total.to_bytes(ID_SIZE, "little") + _varint(stop - start)).digest()
        return digest[:FINGERPRINT_SIZE]

    def _lower_bound(self, bound: tuple[int, bytes], start: int) -> int:
        # Bounds are kept zero-padded to 32 bytes so plain tuple order matches negentropy's Bound < Item.
        return bisect_left(self._keys, bound, start)

    def _ids(self, start: int, stop: int) -> list[bytes]:
        return [key[1] for key in self._keys[start:stop]]


class Round(NamedTuple):
    """What the initiator learnt from one reply: the next message (``None``: done) and new ids.

    ``have``: ids we hold that the responder lacks; ``need``: ids the responder holds that we lack.
    """

    message: bytes | None
    have: list[bytes]
    need: list[bytes]


class Initiator:
    """The side that opens a reconciliation and learns the difference (negentropy's client).

    ``initiate()`` once, then feed each reply to ``reconcile()`` until it returns a round whose
    ``message`` is ``None``; ``have``/``need`` of all rounds together are the whole difference.
    """

    __slots__ = ("_party", "_initiated")

    def __init__(
        self,
        items: ItemSet,
        *,
        frame_size_limit: int = DEFAULT_FRAME_SIZE_LIMIT,
        buckets: int = 16,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._party = _Party(items, frame_size_limit, buckets, max_message_size, initiator=True)
        self._initiated = False

    def initiate(self) -> bytes:
        """The opening message: the whole set as ``buckets`` fingerprints (or one id list)."""
        if self._initiated:
            raise LocalProtocolError("reconciliation already initiated")
        self._initiated = True
        return self._party.initial_message()

    def reconcile(self, message: bytes) -> Round:
        """Process the responder's reply; raises ``RemoteProtocolError`` if it is malformed."""
        if not self._initiated:
            raise LocalProtocolError("initiate() must come before reconcile()")
        have: list[bytes] = []
        need: list[bytes] = []
        reply = self._party.process(message, have, need)
        # A reply with no ranges means nothing is left open on our side: the exchange is over.
        return Round(None if len(reply) == 1 else reply, have, need)


class Responder:
    """The side that answers (negentropy's server); it learns nothing and keeps no state."""

    __slots__ = ("_party",)

    def __init__(
        self,
        items: ItemSet,
        *,
        frame_size_limit: int = DEFAULT_FRAME_SIZE_LIMIT,
        buckets: int = 16,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._party = _Party(items, frame_size_limit, buckets, max_message_size, initiator=False)

    def reconcile(self, message: bytes) -> bytes:
        """The reply to one initiator message; raises ``RemoteProtocolError`` if it is malformed.

        A message of an unsupported negentropy version (0x60–0x6F) gets the one-byte reply naming
        ours, as the spec asks, so the initiator can downgrade.
        """
        return self._party.process(message, None, None)


@dataclass(frozen=True, slots=True)
class Stats:
    """Outcome of :func:`sync_in_memory`.

    ``rounds`` counts round trips (initiator message + responder reply); ``bytes_sent`` is what the
    initiator sent, ``bytes_received`` what the responder sent back; ``largest_message`` the
    longest single message either way.
    """

    rounds: int
    bytes_sent: int
    bytes_received: int
    largest_message: int
    have: list[bytes]
    need: list[bytes]


def sync_in_memory(
    a: ItemSet,
    b: ItemSet,
    *,
    frame_size_limit: int = DEFAULT_FRAME_SIZE_LIMIT,
    buckets: int = 16,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_rounds: int = 10_000,
) -> Stats:
    """Reconcile ``a`` (initiator) against ``b`` (responder) with no transport; both use the options.

    ``have`` ends up as the ids of ``a`` not in ``b``, ``need`` as those of ``b`` not in ``a``.
    ``max_rounds`` guards the loop: two honest parties always finish far sooner, so exceeding it is
    a bug (``LocalProtocolError``).
    """
    options = dict(
        frame_size_limit=frame_size_limit, buckets=buckets, max_message_size=max_message_size
    )
    initiator = Initiator(a, **options)
    responder = Responder(b, **options)
    have: list[bytes] = []
    need: list[bytes] = []
    rounds = sent = received = largest = 0
    message: bytes | None = initiator.initiate()
    while message is not None:
        if rounds == max_rounds:
            raise LocalProtocolError(f"reconciliation did not finish in {max_rounds} rounds")
        reply = responder.reconcile(message)
        rounds += 1
        sent += len(message)
        received += len(reply)
        largest = max(largest, len(message), len(reply))
        message, new_have, new_need = initiator.reconcile(reply)
        have += new_have
        need += new_need
    return Stats(rounds, sent, received, largest, have, need)


# --- private: message processing shared by both sides ---------------------------------------

_MODE_SKIP = 0
_MODE_FINGERPRINT = 1
_MODE_ID_LIST = 2

#: A u64 needs at most ceil(64 / 7) = 10 base-128 digits; capping the length keeps a hostile varint
#: from building a huge integer.
_MAX_VARINT_BYTES = 10
#: negentropy stops filling a frame 200 bytes short of the limit, leaving room for the closing
#: bound + mode + fingerprint (at most 1 + 1 + 33 + 1 + 16 bytes) — cpp/negentropy.h exceededFrameSizeLimit.
_FRAME_HEADROOM = 200
#: negentropy refuses frame limits under 4 KiB: below that a split range (16 fingerprints) may not fit.
_MIN_FRAME_SIZE_LIMIT = 4096

_ZERO_ID = bytes(ID_SIZE)
_ZERO_BOUND = (0, _ZERO_ID)
_INFINITY_BOUND = (INFINITY, _ZERO_ID)
_SMALL_VARINTS = [bytes((n,)) for n in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    digits = [n & 0x7F]
    n >>= 7
    while n:
        digits.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(digits))


def _malformed(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError("malformed", reason)


class _Reader:
    """Cursor over one incoming message; every read checks the remaining length first."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, what: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise _malformed(f"message ends inside {what}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def varint(self, what: str) -> int:
        data = self._data
        pos = self._pos
        end = min(len(data), pos + _MAX_VARINT_BYTES)
        if pos < end and data[pos] == 0x80:
            # The spec requires the fewest digits; a leading zero digit is a different encoding of
            # the same number, which we refuse so every value has one wire form.
            raise _malformed(f"non-minimal varint in {what}")
        value = 0
        while pos < end:
            byte = data[pos]
            pos += 1
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                if value > INFINITY:
                    raise _malformed(f"{what} does not fit in 64 bits")
                self._pos = pos
                return value
        if end == len(data):
            raise _malformed(f"message ends inside {what}")
        raise _malformed(f"{what} is longer than {_MAX_VARINT_BYTES} bytes")


class _Writer:
    """One outgoing message's bound encoder: timestamps are deltas from the previous bound written."""

    __slots__ = ("last_timestamp",)

    def __init__(self) -> None:
        self.last_timestamp = 0

    def bound(self, bound: tuple[int, bytes], prefix_len: int) -> bytes:
        timestamp, ident = bound
        if timestamp == INFINITY:
            self.last_timestamp = INFINITY
            encoded = _SMALL_VARINTS[0]
        else:
            encoded = _varint(timestamp - self.last_timestamp + 1)
            self.last_timestamp = timestamp
        return encoded + _SMALL_VARINTS[prefix_len] + ident[:prefix_len]


def _minimal_bound(prev: tuple[int, bytes], curr: tuple[int, bytes]) -> tuple[tuple[int, bytes], int]:
    """The shortest bound ``b`` with ``prev < b <= curr`` (cpp/negentropy.h getMinimalBound)."""
    if curr[0] != prev[0]:
        return (curr[0], _ZERO_ID), 0
    # Length of the common prefix from the highest differing bit of the two ids read big-endian.
    diff = int.from_bytes(curr[1], "big") ^ int.from_bytes(prev[1], "big")
    shared = (ID_SIZE * 8 - diff.bit_length()) // 8
    keep = shared + 1
    return (curr[0], curr[1][:keep] + bytes(ID_SIZE - keep)), keep


class _Party:
    """The message processing both sides share; negentropy's reconcileAux and splitRange."""

    __slots__ = ("items", "frame_size_limit", "buckets", "max_message_size", "initiator")

    def __init__(
        self,
        items: ItemSet,
        frame_size_limit: int,
        buckets: int,
        max_message_size: int,
        *,
        initiator: bool,
    ) -> None:
        if not isinstance(items, ItemSet):
            raise TypeError("items must be an ItemSet")
        if frame_size_limit != 0 and frame_size_limit < _MIN_FRAME_SIZE_LIMIT:
            raise ValueError(f"frame_size_limit must be 0 (no limit) or at least {_MIN_FRAME_SIZE_LIMIT}")
        if buckets < 2:
            raise ValueError("buckets must be at least 2")
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        self.items = items
        self.frame_size_limit = frame_size_limit
        self.buckets = buckets
        self.max_message_size = max_message_size
        self.initiator = initiator

    def initial_message(self) -> bytes:
        writer = _Writer()
        return bytes((NEGENTROPY_VERSION,)) + self._split(
            writer, 0, len(self.items), _INFINITY_BOUND, 0
        )

    def process(
        self, message: bytes, have: list[bytes] | None, need: list[bytes] | None
    ) -> bytes:
        if len(message) > self.max_message_size:
            raise _malformed(f"message of {len(message)} bytes is over the limit of {self.max_message_size}")
        reader = _Reader(bytes(message))
        version = reader.take(1, "the version byte")[0]
        if not 0x60 <= version <= 0x6F:
            raise _malformed(f"0x{version:02x} is not a negentropy version byte")
        out = bytearray((NEGENTROPY_VERSION,))
        if version != NEGENTROPY_VERSION:
            if self.initiator:
                raise RemoteProtocolError(
                    "unsupported-version", f"peer speaks negentropy version 0x{version:02x}"
                )
            return bytes(out)

        items = self.items
        keys = items._keys
        size = len(keys)
        writer = _Writer()
        last_timestamp_in = 0
        prev_bound, prev_len = _ZERO_BOUND, 0
        prev_index = 0
        # A run of settled ranges is sent as one Skip, written lazily when the next open range starts.
        skip = False

        while reader.remaining:
            chunk = bytearray()

            # Decode the range's upper bound (timestamp delta + zero-padded id prefix).
            encoded = reader.varint("a bound timestamp")
            if encoded == 0:
                timestamp = INFINITY
            else:
                # Saturate at infinity as negentropy does rather than wrap around.
                timestamp = min(last_timestamp_in + encoded - 1, INFINITY)
            last_timestamp_in = timestamp
            prefix_len = reader.varint("a bound id length")
            if prefix_len > ID_SIZE:
                raise _malformed(f"bound id prefix of {prefix_len} bytes is over {ID_SIZE}")
            prefix = reader.take(prefix_len, "a bound id prefix")
            curr_bound = (timestamp, prefix + bytes(ID_SIZE - prefix_len))
            if curr_bound < prev_bound:
                raise _malformed("range bounds are not in ascending order")
            mode = reader.varint("a range mode")

            lower = prev_index
            upper = items._lower_bound(curr_bound, prev_index)

            if mode == _MODE_SKIP:
                skip = True
            elif mode == _MODE_FINGERPRINT:
                theirs = reader.take(FINGERPRINT_SIZE, "a fingerprint")
                if theirs != items.fingerprint(lower, upper):
                    if skip:
                        skip = False
                        chunk += writer.bound(prev_bound, prev_len)
                        chunk += _SMALL_VARINTS[_MODE_SKIP]
                    chunk += self._split(writer, lower, upper, curr_bound, prefix_len)
                else:
                    skip = True
            elif mode == _MODE_ID_LIST:
                count = reader.varint("an id count")
                if count * ID_SIZE > reader.remaining:
                    raise _malformed(f"id list of {count} ids runs past the end of the message")
                blob = reader.take(count * ID_SIZE, "an id list")
                if have is not None and need is not None:
                    # Initiator: the range is settled here; split it into have and need.
                    their_ids = dict.fromkeys(blob[i : i + ID_SIZE] for i in range(0, len(blob), ID_SIZE))
                    for key in keys[lower:upper]:
                        if key[1] in their_ids:
                            del their_ids[key[1]]
                        else:
                            have.append(key[1])
                    need.extend(their_ids)
                    skip = True
                else:
                    # Responder: answer with all our ids in the range, truncated at the frame limit.
                    if skip:
                        skip = False
                        out += writer.bound(prev_bound, prev_len)
                        out += _SMALL_VARINTS[_MODE_SKIP]
                    end_bound, end_len = curr_bound, prefix_len
                    if self.frame_size_limit:
                        room = self.frame_size_limit - _FRAME_HEADROOM - len(out)
                        fits = room // ID_SIZE + 1 if room >= 0 else 0
                        if fits < upper - lower:
                            upper = lower + fits
                            # Close the list exactly at the first id left out (a full-length bound),
                            # so the remainder fingerprint below starts there.
                            end_bound, end_len = keys[upper], ID_SIZE
                    out += writer.bound(end_bound, end_len)
                    out += _SMALL_VARINTS[_MODE_ID_LIST]
                    out += _varint(upper - lower)
                    out += b"".join(items._ids(lower, upper))
            else:
                raise _malformed(f"unknown range mode {mode}")

            if self._over_frame_limit(len(out) + len(chunk)):
                # Out of room: drop this range's answer and hand the peer one fingerprint of all we
                # hold from here on; it will reopen that remainder in the next round.
                out += writer.bound(_INFINITY_BOUND, 0)
                out += _SMALL_VARINTS[_MODE_FINGERPRINT]
                out += items.fingerprint(upper, size)
                break
            out += chunk

            prev_index = upper
            prev_bound, prev_len = curr_bound, prefix_len

        return bytes(out)

    def _over_frame_limit(self, n: int) -> bool:
        return bool(self.frame_size_limit) and n > self.frame_size_limit - _FRAME_HEADROOM

    def _split(
        self,
        writer: _Writer,
        lower: int,
        upper: int,
        upper_bound: tuple[int, bytes],
        upper_len: int,
    ) -> bytes:
        """Encode ``lower..upper`` as one id list if small, else as ``buckets`` fingerprinted ranges."""
        items = self.items
        keys = items._keys
        count = upper - lower
        buckets = self.buckets
        if count < buckets * 2:
            return b"".join(
                (
                    writer.bound(upper_bound, upper_len),
                    _SMALL_VARINTS[_MODE_ID_LIST],
                    _varint(count),
                    *items._ids(lower, upper),
                )
            )
        parts = []
        per_bucket, with_extra = divmod(count, buckets)
        curr = lower
        for i in range(buckets):
            start = curr
            curr += per_bucket + (i < with_extra)
            if curr == upper:
                bound, bound_len = upper_bound, upper_len
            else:
                bound, bound_len = _minimal_bound(keys[curr - 1], keys[curr])
            parts.append(writer.bound(bound, bound_len))
            parts.append(_SMALL_VARINTS[_MODE_FINGERPRINT])
            parts.append(items.fingerprint(start, curr))
        return b"".join(parts)
