"""The canonical binary layout of a model's named arrays (DESIGN §10), and loading them from a file.

An encoded set of arrays is the deterministic CBOR (``encoding.canonical``) of::

    [1, [[name, dtype, [dim, ...], raw], ...]]

- ``1`` is the layout version;
- one entry per array, sorted by name (Python string order, which is UTF-8 byte order); a name is a
  non-empty text of at most ``MAX_NAME_BYTES`` UTF-8 bytes;
- ``dtype`` is one of ``DTYPES`` (``"float32"``, ``"float64"``);
- the shape is a list of non-negative integers (at most ``MAX_DIMS`` of them; ``[]`` is a scalar);
- ``raw`` is a byte string holding the elements in C (row-major) order, each IEEE 754 little-endian,
  so its length is the product of the shape times the item size (4 or 8).

Every value must be finite (no NaN, no ±Inf). The whole encoding is at most ``MAX_TENSOR_BYTES``, so
a model update fits a packet body with room left for its other fields. Nothing here uses pickle:
``np.load`` is always called with ``allow_pickle=False``, so loading a file never executes code.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ark_lattice.encoding import canonical, decode
from ark_lattice.errors import Malformed, UsageError
from ark_lattice.packet import MAX_BODY

__all__ = [
    "DTYPES",
    "LAYOUT_VERSION",
    "MAX_TENSOR_BYTES",
    "MAX_NAME_BYTES",
    "MAX_DIMS",
    "NPY_NAME",
    "encode_arrays",
    "decode_arrays",
    "load_file",
    "output_hash",
]

DTYPES = ("float32", "float64")
LAYOUT_VERSION = 1
# A packet body is at most MAX_BODY (1 MiB); 8 KiB stay free for the update's other fields
# (model name, round, sample count).
MAX_TENSOR_BYTES = MAX_BODY - 8 * 1024
MAX_NAME_BYTES = 255
MAX_DIMS = 32
NPY_NAME = "weights"  # the name a lone array from a .npy file gets

Arrays = Mapping[str, npt.NDArray[Any]]


def encode_arrays(arrays: Arrays) -> bytes:
    """The canonical bytes of ``arrays``; :class:`Malformed` if they break a rule of the layout."""
    reason = array_problem(arrays)
    if reason is not None:
        raise Malformed(reason)
    entries = []
    for name in sorted(arrays):
        array = arrays[name]
        little = array.astype(np.dtype(array.dtype.name).newbyteorder("<"), copy=False)
        entries.append([name, array.dtype.name, list(array.shape), np.ascontiguousarray(little).tobytes()])
    data = canonical([LAYOUT_VERSION, entries])
    if len(data) > MAX_TENSOR_BYTES:
        raise Malformed(f"the encoded arrays are {len(data)} bytes, over the limit of {MAX_TENSOR_BYTES}")
    return data


def decode_arrays(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """The arrays ``data`` encodes; :class:`Malformed` unless ``data`` is exactly their canonical bytes."""
    doc = decode(data, max_size=MAX_TENSOR_BYTES, what="the encoded arrays")
    if not (isinstance(doc, list) and len(doc) == 2 and type(doc[0]) is int and isinstance(doc[1], list)):
        raise Malformed("the encoded arrays are not a [version, entries] list")
    if doc[0] != LAYOUT_VERSION:
        raise Malformed(f"the array layout version {doc[0]} is not {LAYOUT_VERSION}")
    arrays: dict[str, npt.NDArray[Any]] = {}
    for entry in doc[1]:
        name, array = _decode_entry(entry)
        if name in arrays:
            raise Malformed(f"the array name {name!r} appears twice")
        arrays[name] = array
    try:
        again = encode_arrays(arrays)
    except Malformed:
        raise
    except Exception as exc:  # e.g. a name cbor2 cannot encode back
        raise Malformed(f"the encoded arrays do not re-encode ({exc.__class__.__name__})") from None
    if again != data:
        raise Malformed("the encoded arrays are not in canonical form")
    return arrays


def load_file(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The arrays of a ``.npz`` file (names are its keys) or a ``.npy`` file (one array, ``weights``).

    Any problem (unreadable, not numpy, oversize, a bad dtype, NaN/Inf) is a :class:`UsageError`
    naming the file.
    """
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise UsageError(f"{path}: a model file must be .npz or .npy")
    try:
        size = path.stat().st_size
        if size > MAX_TENSOR_BYTES + 64 * 1024:
            raise UsageError(f"{path} is {size} bytes, over the model update limit of {MAX_TENSOR_BYTES}")
        if suffix == ".npz":
            _check_zip_size(path)
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: np.asarray(archive[name]) for name in archive.files}
        else:
            arrays = {NPY_NAME: np.asarray(np.load(path, allow_pickle=False))}
    except UsageError:
        raise
    except Exception as exc:  # OSError, ValueError (pickled objects, bad header), zipfile errors, ...
        raise UsageError(f"{path} is not a readable numpy file ({exc.__class__.__name__})") from None
    reason = array_problem(arrays)
    if reason is not None:
        raise UsageError(f"{path}: {reason}")
    try:
        encode_arrays(arrays)
    except Malformed as exc:
        raise UsageError(f"{path}: {exc}") from None
    return {name: np.ascontiguousarray(arrays[name]) for name in sorted(arrays)}


def output_hash(arrays: Arrays) -> str:
    """Hex SHA-256 of ``encode_arrays(arrays)``: the hash a ``model`` packet names its output by."""
    return hashlib.sha256(encode_arrays(arrays)).hexdigest()


def array_problem(arrays: Arrays) -> str | None:
    """One sentence saying why ``arrays`` cannot be a model's arrays, or None (the size is not checked)."""
    if not isinstance(arrays, Mapping) or not arrays:
        return "a model update must hold at least one named array"
    for name, array in arrays.items():
        if not isinstance(name, str) or not name:
            return "every array needs a non-empty text name"
        try:
            name_bytes = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            return f"the array name {name!r} is not valid UTF-8 text"
        if name_bytes > MAX_NAME_BYTES:
            return f"the array name {name[:40]!r}… is over {MAX_NAME_BYTES} bytes"
        if not isinstance(array, np.ndarray):
            return f"array {name!r} is not a numpy array"
        if array.dtype.name not in DTYPES:
            return f"array {name!r} has dtype {array.dtype}, not one of {', '.join(DTYPES)}"
        if array.ndim > MAX_DIMS:
            return f"array {name!r} has {array.ndim} dimensions, over the limit of {MAX_DIMS}"
        if not bool(np.isfinite(array).all()):
            return f"array {name!r} holds NaN or infinite values"
    return None


def _decode_entry(entry: Any) -> tuple[str, npt.NDArray[Any]]:
    if not (isinstance(entry, list) and len(entry) == 4):
        raise Malformed("an array entry is not a [name, dtype, shape, bytes] list")
    name, dtype, shape, raw = entry
    if not isinstance(name, str) or not name:
        raise Malformed("an array entry has no text name")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise Malformed(f"array {name!r} has a dtype that is not one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise Malformed(f"array {name!r} has no shape list of at most {MAX_DIMS} dimensions")
    if not all(type(dim) is int and 0 <= dim <= MAX_TENSOR_BYTES for dim in shape):
        raise Malformed(f"array {name!r} has a shape that is not non-negative integers")
    if not isinstance(raw, bytes):
        raise Malformed(f"array {name!r} has no byte string of elements")
    item = np.dtype(dtype).newbyteorder("<")
    if len(raw) != math.prod(shape) * item.itemsize:
        raise Malformed(f"array {name!r} has {len(raw)} bytes, not what its shape and dtype need")
    array = np.frombuffer(raw, dtype=item).reshape(shape).astype(np.dtype(dtype))
    if not bool(np.isfinite(array).all()):
        raise Malformed(f"array {name!r} holds NaN or infinite values")
    return name, array


def _check_zip_size(path: Path) -> None:
    # An .npz is a zip archive: bound what it expands to before numpy decompresses anything.
    with zipfile.ZipFile(path) as archive:
        total = sum(info.file_size for info in archive.infolist())
    if total > MAX_TENSOR_BYTES + 64 * 1024:
        raise UsageError(
            f"{path} expands to {total} bytes, over the model update limit of {MAX_TENSOR_BYTES}"
        )
