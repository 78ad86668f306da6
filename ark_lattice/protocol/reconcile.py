"""Range-based set reconciliation of packet ids, wire-compatible with negentropy protocol v1.

Two peers each hold a set of items ``(timestamp, id)`` — a 64-bit timestamp and a 32-byte id —
ordered by timestamp, then id. The *initiator* wants to learn which ids it has that the responder
lacks (``have``) and which the responder has that it lacks (``need``), spending bytes and round
trips that grow with the size of the difference, not with the size of the sets. This is Aljoscha
Meyer's range-based set reconciliation ("Range-Based Set Reconciliation", arXiv:2212.13567) in the
production form of Doug Hoyte's negentropy protocol v1
(https://github.com/hoytech/negentropy, ``docs/negentropy-protocol-v1.md``; the message processing
below follows ``cpp/negentropy.h`` step by step).

How it works. A message is a version byte followed by *ranges* that tile the whole ordered
space from ``(0, 0…0)`` to infinity; each range carries only its exclusive upper bound (the lower
bound is the previous range's upper bound) and one of three payloads:

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
left nothing open. Neither side keeps protocol state between rounds: everything still open is in
the message in flight (the initiator only remembers which ids it reported, see below).

Wire format (negentropy v1)::

    Message     := 0x61 Range*
    Range       := Bound Varint(mode) (Skip | Fingerprint | IdList)
    Skip        :=                                   (mode 0)
    Fingerprint := Byte{16}                          (mode 1)
    IdList      := Varint(count) Byte{32}*count      (mode 2)
    Bound       := Varint(encodedTimestamp) Varint(prefixLength) Byte{prefixLength}

Varints are base-128, most significant digit first, high bit set on all but the last byte. A
bound's timestamp is encoded as ``0`` for infinity (``2**64 - 1``, reserved: no item may use it)
and as ``1 + (timestamp - previous timestamp in this message)`` otherwise; its id is the shortest
prefix (zero-padded to 32 bytes) that separates the two items it falls between. A range
fingerprint is the first 16 bytes of ``SHA-256((sum of ids as little-endian integers mod 2**256)
as 32 LE bytes ‖ Varint(count))``; :class:`ItemSet` keeps prefix sums (one every 32 items), so
every range fingerprint costs a subtraction and a few dozen additions. A sum is not collision
resistant for chosen ids (ids differing in one byte collide easily), which is safe here only
because packet ids are SHA-256 digests of their content.

Frame size. When ``frame_size_limit`` is set, a party stops processing an incoming message once
its reply would come within 200 bytes of the limit, and closes the reply with one fingerprint for
all of its items from there to infinity, so the peer reopens that remainder next round
(negentropy's ``frameSizeLimit``). Reconciliation then takes more rounds but no message exceeds
the limit. Two consequences, both handled here: ranges after the cut that the initiator had
already settled are reopened, so it could learn an id twice — :class:`Initiator` reports each id
once. One deliberate difference from ``cpp/negentropy.h``: when it drops a range's answer it
also drops the pending Skip before it and fingerprints the remainder from the end of the dropped
range, so the remainder never matches and settled ranges are reopened needlessly; we write the
pending Skip and fingerprint exactly the items the remainder spans. The message is still plain v1
that any negentropy peer reads the same way.

Untrusted input. Every incoming message is checked against ``max_message_size`` before it is
read; any truncation, overlong or non-minimal varint, unknown mode, id prefix over 32 bytes, bound
lower than the previous bound or id count beyond the message end raises
``RemoteProtocolError(ErrorCode.MALFORMED, reason)`` — never another exception — and each byte of
input is read once, so a hostile message cannot make the parser loop. Each range costs a bisect and
often a fingerprint, so ``max_ranges`` (the node's ``recon_max_ranges`` budget, protocol/budget.py)
caps the ranges of one message: reading stops at the first one over, with ``OVER_BUDGET``;
``last_cost`` tells the session's meter how much work the message took.

Sans-I/O: no sockets, no event loop, no clock. The node runtime carries the messages; the
simulator and :func:`sync_in_memory` pass them directly.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, groupby, islice
from typing import NamedTuple

from ark_lattice.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ark_lattice.protocol.idset import IdSet

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

#: Protocol version byte of negentropy v1; 0x60–0x6F is reserved for negentropy versions.
NEGENTROPY_VERSION = 0x61
ID_SIZE = 32
FINGERPRINT_SIZE = 16
#: The largest 64-bit timestamp stands for "infinity" in bounds, so no item may carry it
#: (negentropy-protocol-v1.md, "Preparation").
INFINITY = 2**64 - 1
DEFAULT_FRAME_SIZE_LIMIT = 60_000
#: Incoming messages over this size are refused unread; a peer with the default frame limit
#: stays far below it.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20


class ItemSet:
    """An immutable, sorted snapshot of ``(timestamp, id)`` items with cheap range fingerprints.

    Duplicate items collapse into one (it is a set). Timestamps must be integers in
    ``0 .. 2**64 - 2`` (``2**64 - 1`` is the protocol's infinity) and ids exactly 32 bytes, else
    ``ValueError``. Positions (``start``/``stop``) are indexes into the sorted order.

    A node builds one at every reconciliation round over everything it holds (or everything one
    peer sent it), so its size is the node's memory at each round: :meth:`keys_of` and
    :meth:`from_keys` let a caller turn rows into keys a batch at a time and never hold the rows.
    """

    __slots__ = ("_keys", "_prefix")

    def __init__(self, items: Iterable[tuple[int, bytes]] = ()) -> None:
        self._index(self.keys_of(items))

    @classmethod
    def from_keys(cls, keys: list[bytes]) -> ItemSet:
        """The set of ``keys`` made by :meth:`keys_of`, in any order; sorts the list in place
        and keeps it."""
        made = cls.__new__(cls)
        made._index(keys)
        return made

    @staticmethod
    def keys_of(items: Iterable[tuple[int, bytes]]) -> list[bytes]:
        """Each item as one 40-byte key, big-endian timestamp then id, whose byte order is the
        protocol's (timestamp, id) order: sorting and bisecting flat bytes is about twice as fast
        as tuples, and a bound padded to 40 bytes compares against keys the same way."""
        try:
            return [ts.to_bytes(8, "big") + ident for ts, ident in items]
        except (AttributeError, OverflowError, TypeError, ValueError) as exc:
            raise ValueError(
                f"items must be (timestamp in 0..{INFINITY - 1}, {ID_SIZE}-byte id) pairs: {exc}"
            ) from None

    def _index(self, keys: list[bytes]) -> None:
        keys.sort()  # rows read in (created_at, id) order are sorted already: one linear pass
        # Sorting a list and then dropping adjacent duplicates is about twice as fast as sorting
        # a set, whose scattered order costs cache misses; duplicates are rare, so check first.
        if any(map(bytes.__eq__, keys, islice(keys, 1, None))):
            keys = [key for key, _ in groupby(keys)]
        if keys and keys[-1][:8] == _INFINITY_TS:
            raise ValueError(f"timestamp {INFINITY} is reserved for the protocol's infinity bound")
        if any(len(key) != _KEY_SIZE for key in keys):
            raise ValueError(f"every item id must be exactly {ID_SIZE} bytes")
        self._keys: list[bytes] = keys
        # Sums of the ids as integers up to every _STRIDE-th key make any range sum one
        # subtraction and at most 2 * (_STRIDE - 1) additions; reduced mod 2**256 only when
        # fingerprinted. A sum at every key cost as much memory as the keys themselves.
        self._prefix: list[int] = list(
            accumulate(
                (_id_sum(keys, at, at + _STRIDE) for at in range(0, len(keys) - _STRIDE + 1, _STRIDE)),
                initial=0,
            )
        )

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """The items as ``(timestamp, id)`` in protocol order."""
        return ((int.from_bytes(key[:8], "big"), key[8:]) for key in self._keys)

    def __repr__(self) -> str:
        return f"ItemSet(<{len(self._keys)} items>)"

    def fingerprint(self, start: int = 0, stop: int | None = None) -> bytes:
        """The negentropy v1 fingerprint of the items at positions ``start`` .. ``stop - 1``."""
        if stop is None:
            stop = len(self._keys)
        if not 0 <= start <= stop <= len(self._keys):
            raise ValueError(f"bad range {start}..{stop} of {len(self._keys)} items")
        total = (self._sum_before(stop) - self._sum_before(start)) % (1 << 256)
        digest = hashlib.sha256(total.to_bytes(ID_SIZE, "little") + _varint(stop - start)).digest()
        return digest[:FINGERPRINT_SIZE]

    def _sum_before(self, position: int) -> int:
        """The sum of the ids of the items before ``position``, as integers."""
        block = position // _STRIDE
        return self._prefix[block] + _id_sum(self._keys, block * _STRIDE, position)

    def _lower_bound(self, bound: bytes, start: int) -> int:
        # The first position at or after ``start`` whose item is >= ``bound`` (a 40-byte key).
        return bisect_left(self._keys, bound, start)

    def _id_list(self, start: int, stop: int) -> bytes:
        return b"".join([key[8:] for key in self._keys[start:stop]])


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
    ``message`` is ``None``; ``have``/``need`` of all rounds together are the whole difference,
    each id reported once.
    """

    __slots__ = ("_party", "_initiated", "_reported")

    def __init__(
        self,
        items: ItemSet,
        *,
        frame_size_limit: int = DEFAULT_FRAME_SIZE_LIMIT,
        buckets: int = 16,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_ranges: int = 0,
    ) -> None:
        self._party = _Party(
            items, frame_size_limit, buckets, max_message_size, initiator=True, max_ranges=max_ranges
        )
        self._initiated = False
        # When a frame limit cuts a message, the remainder is reopened whole, so ranges settled in
        # an earlier round can come back and their ids would be reported twice (negentropy itself
        # returns them again); remembering what was reported costs memory only in the difference,
        # ~32 bytes an id (idset.py): a 100k-packet sync reports 100k.
        self._reported = IdSet()

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
        have = self._first_report(have)
        need = self._first_report(need)
        # A reply with no ranges means nothing is left open on our side: the exchange is over.
        return Round(None if len(reply) == 1 else reply, have, need)

    @property
    def last_cost(self) -> int:
        """Work done on the last message given to :meth:`reconcile`: ranges read, plus one per
        16 ids read (the budget unit of reconciliation.py)."""
        return self._party.last_cost

    def _first_report(self, ids: list[bytes]) -> list[bytes]:
        """``ids`` not reported before, in order, now remembered as reported."""
        reported = self._reported
        return [ident for ident in ids if reported.add(ident)]


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
        max_ranges: int = 0,
    ) -> None:
        self._party = _Party(
            items, frame_size_limit, buckets, max_message_size, initiator=False, max_ranges=max_ranges
        )

    def reconcile(self, message: bytes) -> bytes:
        """The reply to one initiator message; raises ``RemoteProtocolError`` if it is malformed.

        A message of an unsupported negentropy version (0x60–0x6F) gets the one-byte reply naming
        ours, as the spec asks, so the initiator can downgrade.
        """
        return self._party.process(message, None, None)

    @property
    def last_cost(self) -> int:
        """Work done on the last message given to :meth:`reconcile`: ranges read, plus one per
        16 ids read (the budget unit of reconciliation.py)."""
        return self._party.last_cost


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
    max_ranges: int = 0,
) -> Stats:
    """Reconcile ``a`` (initiator) against ``b`` (responder) in memory, both with the options.

    ``have`` ends up as the ids of ``a`` not in ``b``, ``need`` as those of ``b`` not in ``a``.
    ``max_rounds`` guards the loop: two honest parties always finish far sooner, so exceeding it is
    a bug (``LocalProtocolError``).
    """
    options = dict(
        frame_size_limit=frame_size_limit,
        buckets=buckets,
        max_message_size=max_message_size,
        max_ranges=max_ranges,
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
#
# Items and bounds are both 40-byte keys (8-byte big-endian timestamp, then the id, a bound's id
# prefix zero-padded), so ``bound <= item`` is one bytes comparison; a bound also carries the length
# of the id prefix it is sent with.

_MODE_SKIP = 0
_MODE_FINGERPRINT = 1
_MODE_ID_LIST = 2

_KEY_SIZE = 8 + ID_SIZE
_STRIDE = 32  # items between two of an ItemSet's prefix sums
_INFINITY_TS = INFINITY.to_bytes(8, "big")
_ZERO_ID = bytes(ID_SIZE)
_ZERO_BOUND = bytes(_KEY_SIZE)
#: Above every item, since no item may have the infinity timestamp.
_INFINITY_BOUND = _INFINITY_TS + _ZERO_ID

#: A u64 needs at most ceil(64 / 7) = 10 base-128 digits; capping the length keeps a hostile varint
#: from building a huge integer.
_MAX_VARINT_BYTES = 10
#: negentropy stops filling a frame 200 bytes short of the limit, leaving room for the closing
#: bound + mode + fingerprint and one id list header (cpp/negentropy.h exceededFrameSizeLimit).
_FRAME_HEADROOM = 200
#: negentropy refuses frame limits under 4 KiB: below that one split range might not fit.
_MIN_FRAME_SIZE_LIMIT = 4096
_SMALL_VARINTS = [bytes((n,)) for n in range(0x80)]
#: Ids read from a message that cost as much as one range (a bisect and a fingerprint, ~2 µs);
#: :attr:`Initiator.last_cost` counts ranges plus ids in these units.
_IDS_PER_RANGE = 16


def _id_sum(keys: list[bytes], start: int, stop: int) -> int:
    """The sum of the ids of ``keys[start:stop]`` as little-endian integers."""
    return sum([int.from_bytes(key[8:], "little") for key in keys[start:stop]])


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
    return RemoteProtocolError(ErrorCode.MALFORMED, reason)


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
            # The spec requires the fewest digits; a leading zero digit is a second encoding of the
            # same number, refused so every value has exactly one wire form.
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
    """Bound encoder of one outgoing message: timestamps are deltas from the last bound written."""

    __slots__ = ("last_timestamp",)

    def __init__(self) -> None:
        self.last_timestamp = 0

    def bound(self, bound: bytes, prefix_len: int) -> bytes:
        timestamp = int.from_bytes(bound[:8], "big")
        if timestamp == INFINITY:
            encoded = _SMALL_VARINTS[0]
        else:
            # Bounds are written in ascending order, so the delta is never negative.
            encoded = _varint(timestamp - self.last_timestamp + 1)
        self.last_timestamp = timestamp
        return encoded + _SMALL_VARINTS[prefix_len] + bound[8 : 8 + prefix_len]


def _minimal_bound(prev: bytes, curr: bytes) -> tuple[bytes, int]:
    """The shortest bound ``b`` with ``prev < b <= curr`` (cpp/negentropy.h getMinimalBound)."""
    if curr[:8] != prev[:8]:
        return curr[:8] + _ZERO_ID, 0
    # Bytes of common id prefix, from the highest differing bit of the two ids read big-endian.
    diff = int.from_bytes(curr[8:], "big") ^ int.from_bytes(prev[8:], "big")
    keep = (ID_SIZE * 8 - diff.bit_length()) // 8 + 1
    return curr[: 8 + keep] + bytes(ID_SIZE - keep), keep


def _largest_split(buckets: int) -> int:
    """Most bytes one range's answer takes, with a Skip before it and the version byte."""
    bound = 10 + 1 + ID_SIZE  # the longest timestamp varint, prefix length, full id
    fingerprints = buckets * (bound + 1 + FINGERPRINT_SIZE)
    id_list = bound + 1 + len(_varint(2 * buckets)) + (2 * buckets - 1) * ID_SIZE
    return 1 + (bound + 1) + max(fingerprints, id_list)


class _Party:
    """The message processing both sides share: negentropy's reconcileAux and splitRange."""

    __slots__ = (
        "items", "frame_size_limit", "buckets", "max_message_size", "initiator", "max_ranges",
        "last_cost",
    )

    def __init__(
        self,
        items: ItemSet,
        frame_size_limit: int,
        buckets: int,
        max_message_size: int,
        *,
        initiator: bool,
        max_ranges: int = 0,
    ) -> None:
        if not isinstance(items, ItemSet):
            raise TypeError("items must be an ItemSet")
        if frame_size_limit != 0 and frame_size_limit < _MIN_FRAME_SIZE_LIMIT:
            raise ValueError(
                f"frame_size_limit must be 0 (no limit) or at least {_MIN_FRAME_SIZE_LIMIT}"
            )
        if buckets < 2:
            raise ValueError("buckets must be at least 2")
        if frame_size_limit and _largest_split(buckets) > frame_size_limit - _FRAME_HEADROOM:
            # A split that cannot fit in an otherwise empty frame would be dropped every round and
            # the exchange would never progress; negentropy's fixed 16 buckets need ~1 KiB.
            raise ValueError(f"{buckets} buckets do not fit in a frame of {frame_size_limit} bytes")
        if max_message_size < max(frame_size_limit, 1):
            # Two parties with the same options must accept each other's largest message.
            raise ValueError("max_message_size must be positive and at least frame_size_limit")
        self.items = items
        self.frame_size_limit = frame_size_limit
        self.buckets = buckets
        self.max_message_size = max_message_size
        self.initiator = initiator
        # Ranges one incoming message may hold (0: no limit); reading stops at the first one
        # over, so a hostile message costs at most this many ranges of work.
        self.max_ranges = max_ranges
        self.last_cost = 0

    def initial_message(self) -> bytes:
        split = self._split(_Writer(), 0, len(self.items), _INFINITY_BOUND, 0)
        return _SMALL_VARINTS[NEGENTROPY_VERSION] + split

    def process(self, message: bytes, have: list[bytes] | None, need: list[bytes] | None) -> bytes:
        """Answer one message; the initiator passes ``have``/``need`` lists to fill."""
        if len(message) > self.max_message_size:
            raise _malformed(
                f"message of {len(message)} bytes is over the limit of {self.max_message_size}"
            )
        # A message refused as malformed part-way is charged the most it could have cost (a range
        # takes at least 3 bytes); one read to the end is charged what it did cost.
        most = len(message) // 3
        self.last_cost = min(most, self.max_ranges + 1) if self.max_ranges else most
        reader = _Reader(bytes(message))
        version = reader.take(1, "the version byte")[0]
        if not 0x60 <= version <= 0x6F:
            raise _malformed(f"0x{version:02x} is not a negentropy version byte")
        out = bytearray((NEGENTROPY_VERSION,))
        if version != NEGENTROPY_VERSION:
            if self.initiator:
                raise RemoteProtocolError(
                    ErrorCode.UNSUPPORTED_VERSION, f"peer speaks negentropy version 0x{version:02x}"
                )
            return bytes(out)  # the spec's downgrade hint: our highest version, alone

        items = self.items
        keys = items._keys
        size = len(keys)
        frame_size_limit = self.frame_size_limit
        writer = _Writer()
        last_timestamp_in = 0
        prev_bound, prev_len = _ZERO_BOUND, 0
        prev_index = 0
        # A run of settled ranges is sent as one Skip, written only when the next open range starts.
        skip = False
        max_ranges = self.max_ranges or INFINITY
        ranges = ids_read = 0

        while reader.remaining:
            ranges += 1
            if ranges > max_ranges:
                self.last_cost = ranges + ids_read // _IDS_PER_RANGE
                raise RemoteProtocolError(
                    ErrorCode.OVER_BUDGET, f"reconciliation message of more than {max_ranges} ranges"
                )
            # This range's answer goes to ``chunk`` and is only kept if it fits the frame; the
            # writer's state and the pending Skip are saved so dropping the answer can undo them.
            chunk = bytearray()
            skip_before, writer_mark = skip, writer.last_timestamp

            encoded = reader.varint("a bound timestamp")
            if encoded == 0:
                timestamp = INFINITY
            else:
                # Saturate at infinity, as negentropy does, rather than wrap around.
                timestamp = min(last_timestamp_in + encoded - 1, INFINITY)
            last_timestamp_in = timestamp
            prefix_len = reader.varint("a bound id length")
            if prefix_len > ID_SIZE:
                raise _malformed(f"bound id prefix of {prefix_len} bytes is over {ID_SIZE}")
            prefix = reader.take(prefix_len, "a bound id prefix")
            curr_bound = timestamp.to_bytes(8, "big") + prefix + bytes(ID_SIZE - prefix_len)
            if curr_bound < prev_bound:
                raise _malformed("range bounds are not in ascending order")
            mode = reader.varint("a range mode")

            lower = prev_index
            upper = items._lower_bound(curr_bound, prev_index)

            if mode == _MODE_SKIP:
                skip = True
            elif mode == _MODE_FINGERPRINT:
                theirs = reader.take(FINGERPRINT_SIZE, "a fingerprint")
                if theirs == items.fingerprint(lower, upper):
                    skip = True
                else:
                    if skip:
                        skip = False
                        chunk += writer.bound(prev_bound, prev_len)
                        chunk += _SMALL_VARINTS[_MODE_SKIP]
                    chunk += self._split(writer, lower, upper, curr_bound, prefix_len)
            elif mode == _MODE_ID_LIST:
                count = reader.varint("an id count")
                if count * ID_SIZE > reader.remaining:
                    raise _malformed(f"a list of {count} ids runs past the end of the message")
                blob = reader.take(count * ID_SIZE, "an id list")
                ids_read += count
                if have is not None and need is not None:
                    # Initiator: this settles the range; ours minus theirs is have, the rest need.
                    their_ids = dict.fromkeys(
                        blob[i : i + ID_SIZE] for i in range(0, len(blob), ID_SIZE)
                    )
                    for key in keys[lower:upper]:
                        ident = key[8:]
                        if ident in their_ids:
                            del their_ids[ident]
                        else:
                            have.append(ident)
                    need.extend(their_ids)
                    skip = True
                else:
                    # Responder: answer with all our ids in the range (their list is not needed:
                    # the initiator does the comparison), cut short at the frame limit.
                    if skip:
                        skip = False
                        out += writer.bound(prev_bound, prev_len)
                        out += _SMALL_VARINTS[_MODE_SKIP]
                    end_bound, end_len = curr_bound, prefix_len
                    if frame_size_limit:
                        # negentropy adds ids while the frame is within the headroom, checked
                        # before each id; this is the same count without the loop.
                        room = frame_size_limit - _FRAME_HEADROOM - len(out)
                        fits = room // ID_SIZE + 1 if room >= 0 else 0
                        if fits < upper - lower:
                            upper = lower + fits
                            # End the list at the first id left out, with a full-length bound, so
                            # the remainder fingerprint below starts exactly there.
                            end_bound, end_len = keys[upper], ID_SIZE
                    out += writer.bound(end_bound, end_len)
                    out += _SMALL_VARINTS[_MODE_ID_LIST]
                    out += _varint(upper - lower)
                    out += items._id_list(lower, upper)
            else:
                raise _malformed(f"unknown range mode {mode}")

            if frame_size_limit and len(out) + len(chunk) > frame_size_limit - _FRAME_HEADROOM:
                # Out of room: close the message with one fingerprint of everything we hold from
                # the end of what was sent to infinity; the peer reopens that remainder next round.
                if chunk:
                    # This range's answer is dropped, so the remainder starts where the range did.
                    # negentropy v1 sends fingerprint(upper..) here and loses the pending Skip, so
                    # the remainder fingerprint never matches and ranges it had already settled
                    # are reopened, reporting their ids twice; the range we send is the same shape
                    # on the wire, only its fingerprint is of the items it really spans.
                    writer.last_timestamp = writer_mark
                    if skip_before:
                        out += writer.bound(prev_bound, prev_len)
                        out += _SMALL_VARINTS[_MODE_SKIP]
                    remainder = lower
                else:
                    # Only a responder's cut id list gets here: it is in ``out``, up to ``upper``.
                    remainder = upper
                out += writer.bound(_INFINITY_BOUND, 0)
                out += _SMALL_VARINTS[_MODE_FINGERPRINT]
                out += items.fingerprint(remainder, size)
                break
            out += chunk

            prev_index = upper
            prev_bound, prev_len = curr_bound, prefix_len

        self.last_cost = ranges + ids_read // _IDS_PER_RANGE
        return bytes(out)

    def _split(
        self, writer: _Writer, lower: int, upper: int, upper_bound: bytes, upper_len: int
    ) -> bytes:
        """``lower..upper`` as one id list if small, else as ``buckets`` fingerprinted ranges."""
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
                    items._id_list(lower, upper),
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
