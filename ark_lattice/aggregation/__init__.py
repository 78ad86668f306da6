"""Federated model aggregation (DESIGN §10): the arrays' canonical layout and the aggregation rules."""

from __future__ import annotations

from ark_lattice.aggregation.methods import METHODS, Params, Result, Update, aggregate
from ark_lattice.aggregation.tensors import (
    DTYPES,
    MAX_TENSOR_BYTES,
    decode_arrays,
    encode_arrays,
    load_file,
    output_hash,
)

__all__ = [
    "METHODS",
    "Params",
    "Update",
    "Result",
    "aggregate",
    "DTYPES",
    "MAX_TENSOR_BYTES",
    "encode_arrays",
    "decode_arrays",
    "load_file",
    "output_hash",
]
