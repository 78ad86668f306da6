import hashlib
import pickle
import zipfile
from pathlib import Path

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.aggregation.tensors import (
    MAX_TENSOR_BYTES,
    decode_arrays,
    encode_arrays,
    load_file,
    output_hash,
)
from ark_lattice.encoding import canonical
from ark_lattice.errors import Malformed, UsageError
from ark_lattice.packet import MAX_BODY


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "layer1.w": rng.normal(size=(3, 4)),
        "layer1.b": rng.normal(size=4).astype(np.float32),
        "scale": np.array(2.5),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype
        assert a[name].shape == b[name].shape
        assert np.array_equal(a[name], b[name])


def test_round_trip_keeps_names_dtypes_shapes_and_values():
    arrays = sample_arrays()
    assert_same(decode_arrays(encode_arrays(arrays)), arrays)


def test_layout_is_the_documented_cbor_list():
    data = encode_arrays({"b": np.array([1.0, -2.0]), "a": np.array([[0.5]], dtype=np.float32)})
    assert cbor2.loads(data) == [
        1,
        [
            ["a", "float32", [1, 1], np.float32(0.5).tobytes()],
            ["b", "float64", [2], np.array([1.0, -2.0], dtype="<f8").tobytes()],
        ],
    ]


def test_encoding_is_independent_of_mapping_order_byte_order_and_memory_layout():
    w = np.arange(12, dtype=np.float64).reshape(3, 4)
    one = encode_arrays({"w": w, "b": np.ones(2)})
    two = encode_arrays({"b": np.ones(2), "w": np.asfortranarray(w.astype(">f8"))})
    assert one == two


def test_output_hash_is_sha256_of_the_encoding():
    arrays = sample_arrays()
    assert output_hash(arrays) == hashlib.sha256(encode_arrays(arrays)).hexdigest()


@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"w": np.array([1.0, np.nan])}, "NaN or infinite"),
        ({"w": np.array([np.inf], dtype=np.float32)}, "NaN or infinite"),
        ({"w": np.array([-np.inf])}, "NaN or infinite"),
        ({"w": np.array([1, 2], dtype=np.int64)}, "dtype"),
        ({"w": np.array([1.0], dtype=np.float16)}, "dtype"),
        ({"w": np.array([1 + 2j])}, "dtype"),
        ({"": np.ones(2)}, "non-empty text name"),
        ({}, "at least one"),
        ({"x" * 300: np.ones(1)}, "over 255 bytes"),
        ({"w": [1.0, 2.0]}, "not a numpy array"),
    ],
)
def test_encode_refuses_bad_arrays(arrays, words):
    with pytest.raises(Malformed, match=words):
        encode_arrays(arrays)


def test_encode_refuses_oversize_and_the_limit_leaves_room_in_a_packet():
    assert MAX_BODY - 16 * 1024 <= MAX_TENSOR_BYTES < MAX_BODY
    with pytest.raises(Malformed, match="over the limit"):
        encode_arrays({"w": np.zeros(MAX_TENSOR_BYTES // 8 + 1)})
    fits = encode_arrays({"w": np.zeros(MAX_TENSOR_BYTES // 8 - 64)})
    assert len(fits) <= MAX_TENSOR_BYTES


def entry(name="w", dtype="float64", shape=(2,), raw=None):
    if raw is None:
        raw = np.zeros(shape, dtype="<f8" if dtype == "float64" else "<f4").tobytes()
    return [name, dtype, list(shape), raw]


@pytest.mark.parametrize(
    "doc, words",
    [
        ([2, [entry()]], "version"),
        ([1], "version, entries"),
        ({"v": 1}, "version, entries"),
        ([1, [["w", "float64", [2]]]], "entry"),
        ([1, [entry(dtype="int64", raw=b"\x00" * 16)]], "dtype"),
        ([1, [entry(raw=b"\x00" * 15)]], "bytes"),
        ([1, [["w", "float64", [-1], b""]]], "shape"),
        ([1, [["w", "float64", [True], b"\x00" * 8]]], "shape"),
        ([1, [["w", "float64", [2], "text"]]], "byte string"),
        ([1, [entry(name="")]], "name"),
        ([1, [entry(raw=np.array([np.nan, 1.0]).tobytes())]], "NaN"),
        ([1, [entry(raw=np.array([np.inf, 1.0]).tobytes())]], "NaN"),
        ([1, [entry(name="b"), entry(name="a")]], "canonical"),
        ([1, [entry(name="a"), entry(name="a")]], "twice"),
        ([1, []], "at least one"),
    ],
)
def test_decode_refuses_what_the_layout_forbids(doc, words):
    with pytest.raises(Malformed, match=words):
        decode_arrays(canonical(doc))


def test_decode_refuses_non_canonical_cbor_of_valid_arrays():
    good = encode_arrays({"w": np.ones(2)})
    doc = cbor2.loads(good)
    # The same value with an indefinite-length outer list: decodes to equal arrays, but not canonical.
    indefinite = b"\x9f" + good[1:] + b"\xff"
    assert cbor2.loads(indefinite) == doc
    with pytest.raises(Malformed, match="canonical"):
        decode_arrays(indefinite)
    # The version 1 as a two-byte integer instead of the shortest form.
    long_int = good[:1] + b"\x18\x01" + good[2:]
    assert cbor2.loads(long_int) == doc
    with pytest.raises(Malformed, match="canonical"):
        decode_arrays(long_int)


def test_decode_refuses_oversize_before_decoding():
    with pytest.raises(Malformed, match="over the limit"):
        decode_arrays(b"\x00" * (MAX_TENSOR_BYTES + 1))


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_decode_of_random_bytes_only_raises_malformed(data):
    try:
        decode_arrays(data)
    except Malformed:
        pass


VALID = encode_arrays({"a": np.array([1.0, 2.0], dtype=np.float32), "b": np.eye(2)})


@settings(max_examples=300)
@given(st.integers(0, len(VALID) - 1), st.integers(0, 255), st.integers(0, len(VALID)))
def test_decode_of_mutated_encodings_only_raises_malformed(pos, byte, cut):
    for data in (VALID[:pos] + bytes([byte]) + VALID[pos + 1 :], VALID[:cut]):
        try:
            arrays = decode_arrays(data)
        except Malformed:
            continue
        assert encode_arrays(arrays) == data  # anything accepted is canonical


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=8),
            st.sampled_from(["float32", "float64"]),
            st.lists(st.integers(0, 3), max_size=3),
            st.integers(0, 2**32 - 1),
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda t: t[0],
    )
)
def test_round_trip_of_generated_arrays(specs):
    arrays = {}
    for name, dtype, shape, seed in specs:
        arrays[name] = np.random.default_rng(seed).normal(size=shape).astype(dtype)
    data = encode_arrays(arrays)
    back = decode_arrays(data)
    assert_same(back, arrays)
    assert encode_arrays(back) == data


# load_file


def test_load_npz_and_npy(tmp_path: Path):
    arrays: dict[str, np.ndarray] = {"w": np.ones((2, 3), dtype=np.float32), "b": np.zeros(3)}
    np.savez(tmp_path / "m.npz", w=arrays["w"], b=arrays["b"])
    assert_same(load_file(tmp_path / "m.npz"), arrays)
    np.savez_compressed(tmp_path / "c.npz", w=arrays["w"], b=arrays["b"])
    assert_same(load_file(tmp_path / "c.npz"), arrays)
    np.save(tmp_path / "one.npy", np.arange(4.0))
    assert_same(load_file(tmp_path / "one.npy"), {"weights": np.arange(4.0)})


def test_load_refuses_pickled_objects_without_running_them(tmp_path: Path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match="evil.npy"):
        load_file(path)
    raw = tmp_path / "raw.npy"
    raw.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(UsageError, match="raw.npy"):
        load_file(raw)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.array([1, 2], dtype=np.int32), "dtype"),
        (np.array([1.0, np.nan]), "NaN"),
        (np.array([np.inf], dtype=np.float32), "NaN"),
    ],
)
def test_load_refuses_bad_values_naming_the_file(tmp_path: Path, array, words):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(UsageError, match=words) as info:
        load_file(path)
    assert "bad.npy" in str(info.value)


def test_load_refuses_oversize_files(tmp_path: Path):
    path = tmp_path / "big.npy"
    np.save(path, np.zeros(MAX_TENSOR_BYTES // 8 + 100_000))
    with pytest.raises(UsageError, match="big.npy.*over"):
        load_file(path)
    # Just under the file-size check, but the encoding is over the limit.
    path = tmp_path / "edge.npy"
    np.save(path, np.zeros(MAX_TENSOR_BYTES // 8 + 10))
    with pytest.raises(UsageError, match="edge.npy.*over the limit"):
        load_file(path)


def test_load_refuses_a_zip_that_expands_past_the_limit(tmp_path: Path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, w=np.zeros(4 * MAX_TENSOR_BYTES // 8))
    assert path.stat().st_size < MAX_TENSOR_BYTES
    with pytest.raises(UsageError, match="bomb.npz expands"):
        load_file(path)


@pytest.mark.parametrize("name, content", [("junk.npy", b"not numpy"), ("junk.npz", b"PK\x03\x04junk")])
def test_load_refuses_garbage(tmp_path: Path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UsageError, match=name):
        load_file(path)


def test_load_refuses_missing_files_and_other_suffixes(tmp_path: Path):
    with pytest.raises(UsageError, match="missing.npz"):
        load_file(tmp_path / "missing.npz")
    other = tmp_path / "model.pkl"
    other.write_bytes(b"x")
    with pytest.raises(UsageError, match=r"model.pkl.*\.npz or \.npy"):
        load_file(other)


def test_load_refuses_an_empty_npz(tmp_path: Path):
    path = tmp_path / "empty.npz"
    with zipfile.ZipFile(path, "w"):
        pass
    with pytest.raises(UsageError, match="empty.npz"):
        load_file(path)
