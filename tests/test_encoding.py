import pytest
from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.encoding import Purpose, canonical, decode, signing_input
from ark_lattice.errors import Malformed


def test_canonical_encoding_is_deterministic():
    assert canonical({"b": 1, "a": [1, 2]}) == canonical({"a": [1, 2], "b": 1})


def test_every_purpose_has_its_own_prefix():
    inputs = {signing_input(p, b"x") for p in Purpose.ALL}
    assert len(inputs) == len(Purpose.ALL)
    assert all(b"\x00" in i for i in inputs)  # never a valid signed-note text (checkpoint.py)
    with pytest.raises(ValueError):
        signing_input("nonsense", b"x")


def test_oversize_input_is_refused_before_decoding():
    with pytest.raises(Malformed, match="over the limit"):
        decode(b"\x00" * 11, max_size=10, what="thing")


@given(st.binary(max_size=300))
def test_decode_only_raises_malformed(data):
    try:
        decode(data, max_size=1000, what="thing")
    except Malformed:
        pass
