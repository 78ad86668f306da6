"""Tests for ``ark_lattice.protocol.reconcile``: range-based set reconciliation (negentropy v1).

Covers the wire format against negentropy's own test vectors, exact have/need for random pairs of
sets (property tests), round trips growing with log(n), frame size limits, and a parser that only
ever raises ``RemoteProtocolError`` on hostile input.
"""

from __future__ import annotations

import functools
import hashlib
import random
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ark_lattice.errors import LocalProtocolError, RemoteProtocolError
from ark_lattice.protocol.reconcile import (
    INFINITY,
    Initiator,
    ItemSet,
    Responder,
    Round,
    _varint,
    sync_in_memory,
)

# Items from negentropy's test suite (kotlin/src/test/.../StorageAssets.kt, FingerprintTest.kt,
# NegentropyBasicTest.kt), so our bytes are checked against another implementation's.
VECTOR_IDS = [
    bytes.fromhex("eb6b05c2e3b008592ac666594d78ed83e7b9ab30f825b9b08878128f7500008c"),
    bytes.fromhex("39b916432333e069a4386917609215cc688eb99f06fed01aadc29b1b4b92d6f0"),
    bytes.fromhex("abc81d58ebe3b9a87100d47f58bf15e9b1cbf62d38623f11d0f0d17179f5f3ba"),
]
VECTOR_ITEMS = [(1678011277 + i, ident) for i, ident in enumerate(VECTOR_IDS)]

#: Realistic packet timestamps: hybrid logical clock values (ms << 16 | counter) around 2023.
HLC_BASE = 1_700_000_000_000 << 16


# --- wire format against negentropy ----------------------------------------------------------


def test_fingerprints_match_negentropy_vectors() -> None:
    items = ItemSet(VECTOR_ITEMS)
    assert items.fingerprint(0, 1).hex() == "6d74e1212fcafc8a81d090f0ffbde8b0"
    assert items.fingerprint(0, 2).hex() == "96b26d110825d4b1805fc56988a3e65d"
    assert items.fingerprint().hex() == "c15ce60f185fd24ae341076caa93daa5"


def test_empty_fingerprint_is_hash_of_zero_sum_and_zero_count() -> None:
    assert ItemSet().fingerprint() == hashlib.sha256(bytes(32) + b"\x00").digest()[:16]


def test_initiate_matches_negentropy_vector() -> None:
    # Version 0x61, bound = infinity (timestamp 0, prefix length 0), mode IdList, 3 ids.
    expected = "6100000203" + "".join(ident.hex() for ident in VECTOR_IDS)
    assert Initiator(ItemSet(VECTOR_ITEMS)).initiate().hex() == expected


def test_initiator_reconciling_its_own_message_is_done() -> None:
    initiator = Initiator(ItemSet(VECTOR_ITEMS))
    assert initiator.reconcile(initiator.initiate()) == Round(None, [], [])


def test_responder_answers_other_version_with_its_own() -> None:
    # negentropy NegentropyBasicTest.testReconcileSimple: a v2 query gets the one byte 0x61.
    assert Responder(ItemSet(VECTOR_ITEMS)).reconcile(bytes.fromhex("62aabbccddeeff")) == b"\x61"


def test_initiator_refuses_other_version() -> None:
    initiator = Initiator(ItemSet(VECTOR_ITEMS))
    initiator.initiate()
    with pytest.raises(RemoteProtocolError) as info:
        initiator.reconcile(b"\x62")
    assert info.value.code == "unsupported_version"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8100"), (16383, "ff7f"), (16384, "818000")],
)
def test_varint_encoding(value: int, encoded: str) -> None:
    assert _varint(value).hex() == encoded


def test_bounds_are_minimal_and_ordered() -> None:
    # Equal timestamps and ids sharing long prefixes force bounds with id prefixes (spec §Bound).
    rng = random.Random(7)
    items = [(5, (bytes([0xAB] * rng.randrange(4)) + rng.randbytes(32))[:32]) for _ in range(200)]
    items += [(6 + i // 50, rng.randbytes(32)) for i in range(200)]
    item_set = ItemSet(items)
    ordered = list(item_set)
    ranges = _decode(Initiator(item_set).initiate())
    assert [mode for *_, mode, _ in ranges] == [1] * 16
    position = 0
    for (timestamp, prefix, prefix_len, _, fingerprint), next_position in zip(
        ranges, _bucket_ends(len(ordered), 16), strict=True
    ):
        assert fingerprint == item_set.fingerprint(position, next_position)
        if next_position == len(ordered):
            assert (timestamp, prefix_len) == (INFINITY, 0)
        else:
            prev_item, first_item = ordered[next_position - 1], ordered[next_position]
            bound = (timestamp, prefix)
            assert prev_item < bound <= first_item
            if prev_item[0] != first_item[0]:
                assert prefix_len == 0
            else:
                shared = next(i for i in range(32) if prev_item[1][i] != first_item[1][i])
                assert prefix_len == shared + 1
        position = next_position


# --- reconciliation is exact ------------------------------------------------------------------


@st.composite
def set_pairs(draw: st.DrawFn) -> tuple[list, list, list]:
    """Shared items plus items only in A and only in B, with ids unique across all three."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    n_shared = draw(st.sampled_from([0, 1, 5, 31, 32, 33, 100, 300]))
    n_a = draw(st.integers(0, 40) | st.sampled_from([0, 150]))
    n_b = draw(st.integers(0, 40) | st.sampled_from([0, 150]))
    timestamps = draw(st.sampled_from(["equal", "narrow", "hlc", "extreme"]))
    common_prefix = draw(st.booleans())
    seen: set[bytes] = set()

    def item() -> tuple[int, bytes]:
        while True:
            ident = rng.randbytes(32)
            if common_prefix:
                # Long shared prefixes make bounds carry id bytes. Leave at least 8 random bytes:
                # the fingerprint is a plain sum, so ids differing in one byte collide easily
                # (b9 + f0 == c0 + e9); real ids are SHA-256 digests and never look like that.
                ident = (bytes([0x42] * rng.randrange(25)) + ident)[:32]
            if ident not in seen:
                seen.add(ident)
                break
        if timestamps == "equal":
            ts = 7
        elif timestamps == "narrow":
            ts = rng.randrange(4)
        elif timestamps == "hlc":
            ts = HLC_BASE + rng.randrange(10**6) * 65536
        else:
            ts = rng.choice([0, 1, INFINITY - 2, INFINITY - 1, rng.randrange(INFINITY)])
        return ts, ident

    return (
        [item() for _ in range(n_shared)],
        [item() for _ in range(n_a)],
        [item() for _ in range(n_b)],
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=set_pairs(),
    buckets=st.sampled_from([2, 3, 16]),
    frame_size_limit=st.sampled_from([0, 4096, 60_000]),
)
def test_initiator_learns_exact_difference(pairs, buckets: int, frame_size_limit: int) -> None:
    shared, only_a, only_b = pairs
    stats = sync_in_memory(
        ItemSet(shared + only_a),
        ItemSet(shared + only_b),
        buckets=buckets,
        frame_size_limit=frame_size_limit,
    )
    assert sorted(stats.have) == sorted(ident for _, ident in only_a)
    assert sorted(stats.need) == sorted(ident for _, ident in only_b)
    if frame_size_limit:
        assert stats.largest_message <= frame_size_limit


@pytest.mark.parametrize(
    "kind", ["empty", "identical", "disjoint", "initiator-empty", "responder-empty"]
)
def test_edge_cases(kind: str) -> None:
    a = _random_items(random.Random(1), 500)
    b = _random_items(random.Random(2), 500)
    a_items, b_items = {
        "empty": ([], []),
        "identical": (a, a),
        "disjoint": (a, b),
        "initiator-empty": ([], b),
        "responder-empty": (a, []),
    }[kind]
    stats = sync_in_memory(ItemSet(a_items), ItemSet(b_items))
    assert sorted(stats.have) == sorted({i for _, i in a_items} - {i for _, i in b_items})
    assert sorted(stats.need) == sorted({i for _, i in b_items} - {i for _, i in a_items})
    if kind in ("empty", "identical"):
        assert stats.rounds == 1 and not stats.have and not stats.need


def test_small_frames_take_more_rounds_but_stay_under_the_limit() -> None:
    b = _random_items(random.Random(3), 3000)  # 96 KB of ids the initiator lacks
    stats = sync_in_memory(ItemSet([]), ItemSet(b), frame_size_limit=4096)
    assert sorted(stats.need) == sorted(i for _, i in b)
    assert stats.largest_message <= 4096
    assert stats.rounds > 20  # ~3000 ids at ~120 per frame


def test_rounds_grow_with_log_n() -> None:
    rounds = []
    for n in (100, 1_000, 10_000):
        items = _random_items(random.Random(n), n + 1)
        stats = sync_in_memory(ItemSet(items[:n]), ItemSet(items), buckets=16)
        assert stats.need == [items[n][1]] and stats.have == []
        rounds.append(stats.rounds)
    assert rounds == sorted(rounds)
    assert rounds[-1] <= 3


# A module-scoped pair of 100k-item sets, built once (~0.3 s); the sync itself takes milliseconds.
@pytest.fixture(scope="module")
def sets_100k() -> tuple[ItemSet, ItemSet, bytes]:
    items = _random_items(random.Random(100_000), 100_001)
    return ItemSet(items[:100_000]), ItemSet(items), items[100_000][1]


def test_100k_items_differing_by_one(sets_100k) -> None:
    a, b, missing = sets_100k
    stats = sync_in_memory(a, b)
    assert stats.need == [missing] and stats.have == []
    assert stats.bytes_sent + stats.bytes_received < 4096
    assert stats.rounds <= 4
    reverse = sync_in_memory(b, a)
    assert reverse.have == [missing] and reverse.need == []
    assert reverse.bytes_sent + reverse.bytes_received < 4096


# --- hostile input ----------------------------------------------------------------------------


@functools.cache
def _hostile_target() -> ItemSet:
    return ItemSet(_random_items(random.Random(5), 300))


def _parties() -> tuple[Initiator, Responder]:
    items = _hostile_target()
    initiator = Initiator(items, frame_size_limit=4096)
    initiator.initiate()
    return initiator, Responder(items, frame_size_limit=4096)


def _feed_both(message: bytes) -> None:
    initiator, responder = _parties()
    for party in (initiator, responder):
        try:
            party.reconcile(message)
        except RemoteProtocolError as exc:
            assert exc.code in ("malformed", "unsupported_version")


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=600) | st.binary(max_size=600).map(lambda b: b"\x61" + b))
def test_random_bytes_raise_only_remote_protocol_error(message: bytes) -> None:
    _feed_both(message)


@functools.cache
def _valid_messages() -> list[bytes]:
    """Every message of a real exchange, both directions, to mutate and truncate."""
    a = ItemSet(_random_items(random.Random(8), 400))
    b = ItemSet(_random_items(random.Random(8), 380) + _random_items(random.Random(9), 30))
    initiator, responder = Initiator(a), Responder(b)
    messages = []
    message: bytes | None = initiator.initiate()
    while message is not None:
        reply = responder.reconcile(message)
        messages += [message, reply]
        message = initiator.reconcile(reply).message
    return messages


@settings(max_examples=300, deadline=1000)
@given(
    index=st.integers(0, 1000),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("rid")), max_size=4
    ),
)
def test_mutated_messages_raise_only_remote_protocol_error(index: int, edits: list) -> None:
    messages = _valid_messages()
    message = bytearray(messages[index % len(messages)])
    for position, value, how in edits:
        position %= len(message) + 1
        if how == "r" and position < len(message):
            message[position] = value
        elif how == "i":
            message.insert(position, value)
        elif position < len(message):
            del message[position]
    _feed_both(bytes(message))


def test_every_truncation_is_handled() -> None:
    for message in _valid_messages():
        for cut in range(len(message)):
            _feed_both(message[:cut])


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"", "ends inside the version byte"),
        (b"\x00", "not a negentropy version"),
        (b"\x61\x80\x01", "non-minimal"),
        (b"\x61" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x61\x82\x80\x80\x80\x80\x80\x80\x80\x80\x00", "64 bits"),
        (b"\x61\x00\x21" + bytes(33) + b"\x00", "prefix of 33 bytes"),
        (b"\x61\x00\x00\x03", "unknown range mode 3"),
        (b"\x61\x00\x00\x01" + bytes(15), "ends inside a fingerprint"),
        (b"\x61\x00\x00\x02\xff\xff\xff\xff\x0f", "runs past the end"),
        (b"\x61\x05\x01\x09\x00\x01\x01\x05\x00", "not in ascending order"),
        (b"\x61" + bytes(2_000_000), "over the limit"),
    ],
)
def test_malformed_messages_are_named(message: bytes, reason: str) -> None:
    initiator, responder = _parties()
    for party in (initiator, responder):
        with pytest.raises(RemoteProtocolError) as info:
            party.reconcile(message)
        assert info.value.code == "malformed"
        assert reason in info.value.reason


# --- local misuse and item validation ---------------------------------------------------------


def test_item_set_sorts_dedupes_and_validates() -> None:
    items = [(2, b"\x01" * 32), (1, b"\x02" * 32), (2, b"\x00" * 32), (1, b"\x02" * 32)]
    assert list(ItemSet(items)) == [(1, b"\x02" * 32), (2, b"\x00" * 32), (2, b"\x01" * 32)]
    bad_items: list[tuple[Any, Any]] = [  # Any: some are ill-typed on purpose
        (INFINITY, bytes(32)),  # reserved for the infinity bound
        (-1, bytes(32)),
        (2**64, bytes(32)),
        (1, bytes(31)),
        (1, "x" * 32),
        (1.0, bytes(32)),
        (1, 32),
    ]
    for bad in bad_items:
        with pytest.raises(ValueError):
            ItemSet([bad])


def test_an_item_set_made_from_keys_a_batch_at_a_time_is_the_same_set() -> None:
    """What a node does with rows read in batches (runtime/effects.py sync_set)."""
    items = [(t % 7, hashlib.sha256(b"%d" % t).digest()) for t in range(200)]
    keys: list[bytes] = []
    for start in range(0, len(items), 64):
        keys += ItemSet.keys_of(items[start : start + 64])
    made, direct = ItemSet.from_keys(keys), ItemSet(items)
    assert list(made) == list(direct) == sorted(items)
    assert [made.fingerprint(i, j) for i in range(0, 200, 13) for j in range(i, 200, 17)] == [
        direct.fingerprint(i, j) for i in range(0, 200, 13) for j in range(i, 200, 17)
    ]
    with pytest.raises(ValueError):
        ItemSet.keys_of([(INFINITY + 1, bytes(32))])
    with pytest.raises(ValueError):
        ItemSet.from_keys([bytes(39)])


@settings(max_examples=50, deadline=None)
@given(
    # Past a few prefix-sum strides (reconcile._STRIDE), so ranges start and end inside blocks.
    st.lists(st.tuples(st.integers(0, 3), st.binary(min_size=32, max_size=32)), max_size=120),
    st.data(),
)
def test_range_fingerprint_equals_direct_computation(items, data) -> None:
    item_set = ItemSet(items)
    start = data.draw(st.integers(0, len(item_set)))
    stop = data.draw(st.integers(start, len(item_set)))
    ids = [ident for _, ident in list(item_set)[start:stop]]
    total = sum(int.from_bytes(i, "little") for i in ids) % 2**256
    expected = hashlib.sha256(total.to_bytes(32, "little") + _varint(len(ids))).digest()[:16]
    assert item_set.fingerprint(start, stop) == expected


def test_local_misuse() -> None:
    items = ItemSet(VECTOR_ITEMS)
    initiator = Initiator(items)
    with pytest.raises(LocalProtocolError):
        initiator.reconcile(b"\x61")
    initiator.initiate()
    with pytest.raises(LocalProtocolError):
        initiator.initiate()
    for kwargs in (
        {"frame_size_limit": 1000},
        {"buckets": 1},
        {"buckets": 100, "frame_size_limit": 4096},
        {"max_message_size": 50_000},  # under the default frame limit of 60 000
    ):
        with pytest.raises(ValueError):
            Responder(items, **kwargs)


def test_sync_in_memory_stops_at_max_rounds() -> None:
    items = _random_items(random.Random(4), 1001)
    with pytest.raises(LocalProtocolError):
        sync_in_memory(ItemSet(items[:1000]), ItemSet(items), max_rounds=1)


def test_core_is_sans_io() -> None:
    code = (
        "import sys, ark_lattice.protocol.reconcile; "
        "bad = {'asyncio', 'websockets', 'zeroconf', 'aiosqlite', 'socket'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- helpers ----------------------------------------------------------------------------------


def _random_items(rng: random.Random, n: int) -> list[tuple[int, bytes]]:
    return [
        (HLC_BASE + rng.randrange(10**7) * 65536 + rng.randrange(3), rng.randbytes(32))
        for _ in range(n)
    ]


def _bucket_ends(count: int, buckets: int) -> list[int]:
    per_bucket, extra = divmod(count, buckets)
    ends, position = [], 0
    for i in range(buckets):
        position += per_bucket + (i < extra)
        ends.append(position)
    return ends


def _decode(message: bytes) -> list[tuple[int, bytes, int, int, bytes]]:
    """The spec read independently: (timestamp, padded prefix, prefix length, mode, payload)."""
    pos = 1  # after the version byte, checked below

    def varint() -> int:
        nonlocal pos
        value = 0
        while True:
            byte = message[pos]
            pos += 1
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                return value

    assert message[0] == 0x61
    last, ranges = 0, []
    while pos < len(message):
        encoded = varint()
        timestamp = INFINITY if encoded == 0 else last + encoded - 1
        last = timestamp
        prefix_len = varint()
        prefix = message[pos : pos + prefix_len].ljust(32, b"\x00")
        pos += prefix_len
        mode = varint()
        if mode == 1:
            payload = message[pos : pos + 16]
            pos += 16
        elif mode == 2:
            count = varint()
            payload = message[pos : pos + 32 * count]
            pos += 32 * count
        else:
            payload = b""
        ranges.append((timestamp, prefix, prefix_len, mode, payload))
    return ranges
