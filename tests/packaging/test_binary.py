"""The single binary (packaging/build-binary.sh) runs with no Python on the host, and carries every
native piece: libsodium (PyNaCl/cffi), cbor2's and zeroconf's compiled modules, numpy and CEL.

Runs when a built binary exists: ``$ARK_LATTICE_BINARY`` or ``dist/ark-lattice/ark-lattice``; CI
builds it after the suite and runs this module against it (.ci/run), then packaging/smoke-binary.sh.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ark_lattice import __version__

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("ARK_LATTICE_BINARY") or ROOT / "dist" / "ark-lattice" / "ark-lattice")

pytestmark = pytest.mark.skipif(
    not BINARY.is_file(), reason=f"no binary at {BINARY} (packaging/build-binary.sh builds it)"
)


def run(*args: str, home: Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The binary in an empty environment: no PATH, no PYTHONHOME, a HOME of its own."""
    env = {"PATH": "", "HOME": str(home / "host-home"), "ARK_LATTICE_PASSPHRASE": "correct horse"}
    (home / "host-home").mkdir(exist_ok=True)
    done = subprocess.run(
        [str(BINARY), "--home", str(home / "node"), *args], env=env, input=input, capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done


def test_version_with_no_python_on_the_host(tmp_path: Path) -> None:
    assert run("--version", home=tmp_path).stdout.decode().strip() == f"ark-lattice {__version__}"


def test_a_sealed_node_signs_stores_and_verifies(tmp_path: Path) -> None:
    run("init", "--seal", "--name", "frozen", home=tmp_path)  # argon2id, Ed25519: libsodium
    assert json.loads(run("identity", "show", "--json", home=tmp_path).stdout)["sealed"] is True
    packet = run("packets", "publish", "--topic", "t", "-", home=tmp_path, input=b"x").stdout.decode()
    listed = json.loads(run("packets", "list", "--json", home=tmp_path).stdout)  # CBOR packets
    assert listed["schema"] == "ark-lattice.packets/1"
    assert [p["id"] for p in listed["items"]] == [packet.strip()]
    run("ledger", "verify", home=tmp_path)


def test_the_policy_engine_compiles_cel(tmp_path: Path) -> None:
    run("init", home=tmp_path)
    out = run("policy", "check", str(tmp_path / "node" / "policy.toml"), home=tmp_path).stdout.decode()
    assert "ok" in out.lower()


def test_numpy_aggregation_runs(tmp_path: Path) -> None:
    done = run("simulate", "--scenario", "poisoning", "--epochs", "1", "--json", home=tmp_path)
    report = json.loads(done.stdout)
    assert report["clients"]


def test_zeroconf_and_cbor2_are_compiled_not_pure_fallbacks() -> None:
    internal = BINARY.parent / "_internal"
    if not internal.is_dir():
        pytest.skip("a one-file binary: its modules are inside it")
    compiled = [("zeroconf", "_dns"), ("zeroconf", "_cache"), ("cbor2", "_cbor2"), ("nacl", "_sodium")]
    for package, module in compiled:
        assert list((internal / package).glob(f"{module}.*.so")), f"{package}.{module} is missing"
