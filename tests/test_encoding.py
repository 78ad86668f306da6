import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.encoding import Purpose, canonical, canonical_plain, decode, signing_input
from ark_lattice.errors import Malformed


def test_canonical_encoding_is_deterministic():
    assert canonical({"b": 1, "a": [1, 2]}) == canonical({"a": [1, 2], "b": 1})


_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=6) | st.binary(max_size=6) | st.floats(allow_nan=False)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    | st.dictionaries(st.integers(-30, 30) | st.text(max_size=2), inner, max_size=3),
    max_leaves=30,
)


@given(_VALUES)
def test_the_plain_way_writes_the_canonical_bytes(value):
    """Maps in every key order (non-ASCII keys, whose UTF-8 length orders them), floats and
    non-text keys (which take the canonical encoder whole): the same bytes, so events hash as
    they always did."""
    assert canonical_plain(value) == canonical(value)
    if isinstance(value, dict):
        assert canonical_plain(dict(reversed(value.items()))) == canonical(value)


def test_the_plain_way_orders_keys_by_their_encoded_length_first():
    value = {"é": 1, "z": 2, "aa": [{"é": None, "b": b"x"}]}  # "é" is two bytes long in UTF-8
    shuffled = {"z": 2, "aa": [{"b": b"x", "é": None}], "é": 1}
    assert canonical_plain(value) == canonical(value) == canonical(shuffled)
    assert list(cbor2.loads(canonical_plain(value))) == ["z", "aa", "é"]


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
