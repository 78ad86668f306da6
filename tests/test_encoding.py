import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.encoding import Purpose, canonical, decode, signing_input
from ark_lattice.errors import Malformed
from ark_lattice.policy.engine import Hook


def test_canonical_encoding_is_deterministic():
    assert canonical({"b": 1, "a": [1, 2]}) == canonical({"a": [1, 2], "b": 1})


# JSON-like values as the node encodes them, and what cbor2's plain encoder would write otherwise:
# floats, maps in any key order or with keys of other types, sets, tags, str and int subclasses.
_LEAVES = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=30)
    | st.binary(max_size=30) | st.floats(allow_nan=False) | st.sampled_from(list(Hook))
    | st.frozensets(st.integers(), max_size=3)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8) | st.integers() | st.binary(max_size=4), inner, max_size=5),
    max_leaves=20,
)


@given(_VALUES)
def test_canonical_is_the_canonical_encoder_whichever_way_it_takes(value):
    assert canonical(value) == cbor2.dumps(value, canonical=True)


def test_the_plain_encoder_is_taken_only_where_it_writes_the_same_bytes(monkeypatch):
    real, canonical_calls = cbor2.dumps, []

    def dumps(obj, **options):
        canonical_calls.append(options.get("canonical", False))
        return real(obj, **options)

    monkeypatch.setattr(cbor2, "dumps", dumps)
    record = {"hook": "inbound_packet", "peer": "p", "rules": ["r"], "reason": "ok", "allowed": True}
    nested: list = []
    for _ in range(3000):  # deeper than Python's recursion limit
        nested = [nested]
    for value in (record, dict(reversed(record.items())), {"x": 1.5}, nested, [record, Hook.INBOUND_PACKET]):
        canonical(value)
    assert canonical_calls == [False, True, True, True, True]
    assert canonical(record) == canonical(dict(reversed(record.items()))) == real(record)


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
