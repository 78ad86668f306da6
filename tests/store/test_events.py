"""Ledger entry hashes and the data of packet events: the same bytes as the canonical encoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.encoding import Purpose, canonical, sha256, signing_input
from ark_lattice.store.events import entry_hash, stored_data


def reference(*entry: object) -> bytes:
    """The entry hash as every ledger so far was written: canonical CBOR throughout."""
    return sha256(signing_input(Purpose.LEDGER_EVENT, canonical(list(entry))))


@given(
    seq=st.integers(-(2**80), 2**80),
    ts=st.integers(-(2**70), 2**70),
    kind=st.text(max_size=40),
    subject=st.text(max_size=80),
    data=st.binary(max_size=400),
    prev=st.binary(min_size=32, max_size=32),
)
def test_entry_hashes_are_those_of_the_canonical_encoding(seq, ts, kind, subject, data, prev):
    assert entry_hash(seq, ts, kind, subject, data, prev) == reference(seq, ts, kind, subject, data, prev)


@pytest.mark.parametrize("ts", [1.5, 2.0, True])
def test_values_of_another_type_still_hash_canonically(ts):
    # A damaged row read back by `ledger verify` (a float where an integer belongs): the hash is
    # what the canonical encoder gives, so it differs from the stored one as it always did.
    assert entry_hash(1, ts, "k", "s", b"d", bytes(32)) == reference(1, ts, "k", "s", b"d", bytes(32))


@given(packet_id=st.binary(max_size=64), source=st.text(max_size=80), quarantined=st.booleans())
def test_stored_data_is_canonical(packet_id, source, quarantined):
    expected = canonical({"id": packet_id, "source": source, "quarantined": quarantined})
    assert stored_data(packet_id, source, quarantined) == expected
