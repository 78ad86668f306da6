"""``ark-lattice models``: submit, aggregate, list, show, export and verify; every error one sentence."""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ark_lattice.aggregation.methods import Params, aggregate
from ark_lattice.aggregation.tensors import encode_arrays, output_hash
from ark_lattice.encoding import canonical
from ark_lattice.home import Home
from ark_lattice.models import MODEL_KIND, round_updates
from ark_lattice.node import LocalNode


def one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return str(lines[0])


def save_npz(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, w=rng.standard_normal((3, 2)), b=rng.standard_normal(2).astype(np.float32))
    return path


@pytest.fixture
def node(cli: Any) -> Any:
    cli("init", "--name", "alpha")
    return cli


def test_submit_aggregate_show_export_verify(node: Any, tmp_path: Path) -> None:
    first = node.json("models", "submit", "--model", "mnist", "--round", "1", "--samples", "40",
                      str(save_npz(tmp_path / "u.npz", 1)))
    assert first["model"] == "mnist" and first["round"] == 1 and first["samples"] == 40
    assert first["arrays"] == {"b": {"dtype": "float32", "shape": [2]},
                               "w": {"dtype": "float64", "shape": [3, 2]}}
    shown = node.json("packets", "show", first["id"])
    assert shown["kind"] == "model_update" and shown["topic"] == "models/mnist"
    assert shown["meta"] == {"model": "mnist", "round": 1, "samples": 40}

    dry = node.json("models", "aggregate", "--model", "mnist", "--round", "1", "--method", "fedavg")
    assert dry["id"] is None and dry["inputs"] == [first["id"]]
    assert node.json("models", "list") == []

    done = node.json("models", "aggregate", "--model", "mnist", "--round", "1", "--method", "fedavg",
                     "--clip", "100", "--publish")
    assert done["id"] and done["output_hash"] == dry["output_hash"] != ""
    assert done["params"]["clip"] == 100.0
    listed = node.json("models", "list", "--model", "mnist", "--round", "1")
    assert [m["id"] for m in listed] == [done["id"]]
    assert node.json("models", "list", "--round", "2") == []

    shown = node.json("models", "show", done["id"][:12])
    assert shown["method"] == "fedavg" and shown["inputs"] == [first["id"]]
    assert shown["arrays"]["w"] == {"dtype": "float64", "shape": [3, 2]}
    text = node("models", "show", done["id"]).stdout
    assert "fedavg" in text and done["output_hash"] in text

    out = tmp_path / "model.npz"
    node("models", "export", done["id"], str(out))
    with np.load(out, allow_pickle=False) as archive:
        exported = {k: archive[k] for k in archive.files}
    with np.load(tmp_path / "u.npz", allow_pickle=False) as archive:
        for k in archive.files:  # one input: the average is that input (to rounding)
            assert exported[k].dtype == archive[k].dtype
            assert np.allclose(exported[k], archive[k], rtol=1e-6, atol=0)

    verified = node("models", "verify", done["id"])
    assert verified.exit_code == 0 and "verified" in verified.stdout
    assert node.json("models", "verify", done["id"])["verified"] is True


def test_a_single_npy_array_is_weights(node: Any, tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.ones((2, 2), dtype=np.float32))
    doc = node.json("models", "submit", "--model", "m", "--round", "0", "--samples", "1",
                    str(tmp_path / "one.npy"))
    assert doc["arrays"] == {"weights": {"dtype": "float32", "shape": [2, 2]}}


def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["garbage.npz"] = tmp_path / "garbage.npz"
    files["garbage.npz"].write_bytes(b"PK\x03\x04 this is not a zip")
    files["text.npy"] = tmp_path / "text.npy"
    files["text.npy"].write_text("hello")
    files["pickled.npy"] = tmp_path / "pickled.npy"
    np.save(files["pickled.npy"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files["raw.pkl.npy"] = tmp_path / "raw.pkl.npy"
    files["raw.pkl.npy"].write_bytes(pickle.dumps({"w": [1.0]}))
    files["nan.npz"] = tmp_path / "nan.npz"
    np.savez(files["nan.npz"], w=np.array([1.0, np.nan]))
    files["ints.npy"] = tmp_path / "ints.npy"
    np.save(files["ints.npy"], np.arange(4))
    files["big.npy"] = tmp_path / "big.npy"
    np.save(files["big.npy"], np.ones(300_000, dtype=np.float32))
    files["notes.txt"] = tmp_path / "notes.txt"
    files["notes.txt"].write_text("1 2 3")
    files["missing.npz"] = tmp_path / "missing.npz"
    return files


@pytest.mark.parametrize(
    "which",
    ["garbage.npz", "text.npy", "pickled.npy", "raw.pkl.npy", "nan.npz", "ints.npy", "big.npy",
     "notes.txt", "missing.npz"],
)
def test_a_malformed_or_oversize_file_is_one_clear_error(node: Any, tmp_path: Path, which: str) -> None:
    path = bad_files(tmp_path)[which]
    result = node("models", "submit", "--model", "m", "--round", "1", "--samples", "5", str(path), ok=False)
    line = one_line_error(result, 2)
    assert str(path) in line
    if which == "big.npy":
        assert "limit" in line
    assert node.json("packets", "list") == []


def test_bad_options_are_one_sentence(node: Any, tmp_path: Path) -> None:
    good = str(save_npz(tmp_path / "u.npz", 1))
    line = one_line_error(
        node("models", "submit", "--model", "Bad Name", "--round", "1", "--samples", "5", good, ok=False), 2
    )
    assert "model name" in line
    line = one_line_error(
        node("models", "aggregate", "--model", "m", "--round", "1", "--method", "mean", ok=False), 2
    )
    assert "mean" in line
    line = one_line_error(
        node("models", "aggregate", "--model", "m", "--round", "1", "--method", "fedavg", ok=False), 2
    )
    assert "no update" in line
    node("models", "submit", "--model", "m", "--round", "1", "--samples", "5", good)
    line = one_line_error(
        node("models", "aggregate", "--model", "m", "--round", "1", "--method", "krum", "--f", "1",
             ok=False), 2
    )
    assert "2f+3" in line
    line = one_line_error(
        node("models", "aggregate", "--model", "m", "--round", "1", "--method", "fedavg", "--trim", "1.5",
             ok=False), 2
    )
    assert "trim" in line
    shown = node.json("packets", "list")
    update_id = shown[0]["id"]
    line = one_line_error(node("models", "show", update_id, ok=False), 2)
    assert "not a model" in line
    line = one_line_error(node("models", "verify", "ffff", ok=False), 2)
    assert "no packet" in line


def test_verify_fails_on_a_tampered_model(node: Any, home: Path, tmp_path: Path) -> None:
    for seed in (1, 2):  # two updates: the same author, so the later one counts
        node("models", "submit", "--model", "m", "--round", "3", "--samples", "5",
             str(save_npz(tmp_path / f"u{seed}.npz", seed)))

    async def forge() -> str:
        n = await LocalNode.open(Home(home), unlock=True)
        try:
            updates = await round_updates(n.store, "m", 3, me=n.config.node_id)
            params = Params("fedavg")
            result = aggregate(updates, params)
            changed = {k: v.copy() for k, v in result.arrays.items()}
            changed["w"][0, 0] = changed["w"][0, 0] + 0.5
            body = canonical([1, "m", 3, "fedavg", params.to_json(), sorted(result.inputs),
                              output_hash(result.arrays), encode_arrays(changed)])
            packet = await n.publish(topic="models/m", kind=MODEL_KIND, body=body,
                                     meta={"model": "m", "round": 3, "method": "fedavg"})
            return packet.hex_id
        finally:
            await n.close()

    forged = asyncio.run(forge())
    line = one_line_error(node("models", "verify", forged, ok=False), 1)
    assert "differ" in line
    doc = json.loads(node("models", "verify", forged, "--json", ok=False).stdout)
    assert doc["verified"] is False and "differ" in doc["reason"]
    honest = node.json("models", "aggregate", "--model", "m", "--round", "3", "--method", "fedavg",
                       "--publish")
    assert len(honest["excluded"]) == 1 and "superseded" in honest["excluded"][0]["reason"]
    assert node("models", "verify", honest["id"]).exit_code == 0
