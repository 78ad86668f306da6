"""``bench publish``: packets/s published through a running node with a sealed key.

One real node process on 127.0.0.1 (no discovery), its key sealed with a passphrase and unlocked
once at start. Measured in the same run:

- ``publish.node``: ``publish`` control requests, one after another, as `packets publish` sends them
  (base64 body over the control socket; the node signs, stores durably, then answers). The bound is
  the bare work of one publish: a libsodium Ed25519 signature over a header of the same size plus
  one sqlite3 insert committed with ``synchronous=FULL`` in WAL mode, per packet.
- ``publish.cli_via_node``: the whole `ark-lattice packets publish` command, a new Python process
  each time, handing its body to the node (what a shell loop gets).
- ``publish.cli_sealed_local``: the same command with the node stopped: the CLI unlocks the sealed
  key itself each time (argon2id), which is what every publish cost before it went through the node;
  its bound is one bare ``crypto_pwhash`` derivation with the key file's limits.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path

from ark_lattice.bench import SILENT, Measurement, Progress

__all__ = ["run"]

PASSPHRASE = "bench passphrase"
CLI_RUNS = 5
SEALED_RUNS = 2


def run(packets: int = 500, body_size: int = 1024, *, progress: Progress = SILENT) -> list[Measurement]:
    from ark_lattice.processes import NodeProcess, run_cli
    from ark_lattice.runtime.control import call
    from ark_lattice.runtime.publishing import encode_request

    body = os.urandom(body_size)
    progress.update(total=5, description="creating a node with a sealed key")
    with tempfile.TemporaryDirectory(prefix="ark-bench-") as tmp:
        home = Path(tmp) / "node"
        previous = os.environ.get("ARK_LATTICE_PASSPHRASE")
        os.environ["ARK_LATTICE_PASSPHRASE"] = PASSPHRASE
        try:
            created = run_cli(home, "init", "--seal")
            if created.returncode != 0:
                raise RuntimeError(created.stderr.decode())
            progress.advance()
            progress.update(description="starting the node (one key derivation)")
            node = NodeProcess(home, "--no-mdns", "--no-multicast", "--anchor-interval", "3600")
        finally:
            _restore(previous)
        with node:
            progress.advance()
            progress.update(description=f"{packets:,} publishes through the node")
            started = time.perf_counter()
            for i in range(packets):
                args = encode_request(topic="bench/publish", kind="note", body=body + b"%d" % i,
                                      depends=None, supersedes=None)
                call(node.control_path, "publish", args)
            node_s = time.perf_counter() - started
            progress.advance()
            progress.update(description=f"{CLI_RUNS} `packets publish` commands through the node")
            started = time.perf_counter()
            for i in range(CLI_RUNS):
                result = run_cli(home, "packets", "publish", "--topic", "bench/cli", "-", input=b"cli %d" % i)
                if result.returncode != 0:
                    raise RuntimeError(result.stderr.decode())
            cli_s = time.perf_counter() - started
            status = node.ask("status") or {}
        progress.advance()
        progress.update(description=f"{SEALED_RUNS} `packets publish` commands unlocking the key")
        os.environ["ARK_LATTICE_PASSPHRASE"] = PASSPHRASE
        try:
            started = time.perf_counter()
            for i in range(SEALED_RUNS):
                result = run_cli(home, "packets", "publish", "--topic", "bench/local", "-", input=b"l %d" % i)
                if result.returncode != 0:
                    raise RuntimeError(result.stderr.decode())
            sealed_s = time.perf_counter() - started
        finally:
            _restore(previous)
        kdf_s = _bare_kdf(home / "identity.key")
        bare_s = _bare_publish(Path(tmp) / "bare.db", packets, body)
        progress.advance()
    signed = int(status.get("published", 0))
    return [
        Measurement("publish.node", packets / node_s, "packets/s", bound=packets / bare_s,
                    note=f"{signed} signed by the node; bound: Ed25519 sign + one sqlite3 FULL commit "
                    f"per packet, {body_size} B bodies"),
        Measurement("publish.cli_via_node", CLI_RUNS / cli_s, "packets/s",
                    note="a new `ark-lattice packets publish` process per packet"),
        Measurement("publish.cli_sealed_local", SEALED_RUNS / sealed_s, "packets/s", bound=1 / kdf_s,
                    note="node stopped: each command derives the sealed key (argon2id); "
                    "bound: one bare derivation"),
    ]


def _restore(previous: str | None) -> None:
    if previous is None:
        os.environ.pop("ARK_LATTICE_PASSPHRASE", None)
    else:
        os.environ["ARK_LATTICE_PASSPHRASE"] = previous


def _bare_kdf(key_path: Path) -> float:
    import base64
    import json

    import nacl.pwhash
    import nacl.secret

    doc = json.loads(key_path.read_text())
    started = time.perf_counter()
    nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, PASSPHRASE.encode(), base64.b64decode(doc["salt"]),
        opslimit=int(doc["opslimit"]), memlimit=int(doc["memlimit"]),
    )
    return time.perf_counter() - started


def _bare_publish(path: Path, packets: int, body: bytes) -> float:
    """Sign a header-sized message and insert one row with its body, one FULL commit per packet."""
    import hashlib

    import nacl.signing

    key = nacl.signing.SigningKey.generate()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE packets (id BLOB PRIMARY KEY, header BLOB, signature BLOB, body BLOB)")
    header = os.urandom(200)
    started = time.perf_counter()
    for i in range(packets):
        data = body + b"%d" % i
        message = header + hashlib.sha256(data).digest()
        signature = key.sign(message).signature
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO packets VALUES (?,?,?,?)",
                     (hashlib.sha256(message + signature).digest(), message, signature, data))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed
