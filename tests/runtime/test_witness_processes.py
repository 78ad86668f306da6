"""Witnessed checkpoints between real node processes on loopback (issue 13, "How it is judged").

Nodes run without LAN discovery and with periodic anchoring off (an hour), so every checkpoint is
one a test signs with `ledger anchor`, which tells the running node to have it cosigned.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_alert_processes import core_links, dial, peer_tier, wait_linked

from ark_lattice import ledger, merkle
from ark_lattice.checkpoint import Checkpoint, sign_checkpoint
from ark_lattice.home import Home
from ark_lattice.identity import Identity, NodeId
from ark_lattice.processes import NodeProcess, run_cli, wait_for
from ark_lattice.store import head as heads

from conftest import init_federation, items

QUIET = ("--no-mdns", "--no-multicast", "--sync-interval", "3600", "--anchor-interval", "3600")

Homes = Callable[[str], Path]


def publish(home: Path, count: int, tag: str) -> None:
    for i in range(count):
        result = run_cli(home, "packets", "publish", "--topic", "notes", "-", input=f"{tag} {i}".encode())
        assert result.returncode == 0, result.stderr


def anchor(home: Path) -> int:
    result = run_cli(home, "ledger", "anchor", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["new"], doc
    return int(doc["size"])


def cosignatures(home: Path) -> list[dict[str, Any]]:
    result = run_cli(home, "ledger", "witnesses", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = items(json.loads(result.stdout))
    return rows


def cosigned_by(home: Path, size: int) -> set[str]:
    return {row["witness"] for row in cosignatures(home) if row["size"] == size}


def start_all(homes: Homes, names: tuple[str, ...]) -> dict[str, NodeProcess]:
    nodes = {name: NodeProcess(homes(name), *QUIET, wait=False) for name in names}
    for node in nodes.values():
        node.wait_started()
    return nodes


def test_a_truncated_ledger_is_caught_by_its_peers_cosignatures(homes: Homes) -> None:
    names = ("a", "b", "c")
    ids = init_federation(homes, *names)
    pairs = [("a", "b"), ("a", "c")]
    core_links(homes, ids, pairs)
    nodes = start_all(homes, names)
    try:
        dial(homes, nodes, pairs)
        wait_linked(nodes, ids, pairs)
        publish(homes("a"), 3, "early")
        early = anchor(homes("a"))
        publish(homes("a"), 30, "late")
        newest = anchor(homes("a"))
        wait_for(lambda: cosigned_by(homes("a"), newest) == {ids["b"], ids["c"]},
                 timeout=30, what="b and c to cosign a's newest checkpoint")
        ok = run_cli(homes("a"), "ledger", "verify", "--json")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["cosignatures"] >= 2
        kept = homes("a").parent / "a-anchor.note"  # a copy kept elsewhere, cosignatures and all

        def written_with_cosignatures() -> bool:
            # If the ledger grew meanwhile this signs a newer checkpoint, cosigned in turn.
            result = run_cli(homes("a"), "ledger", "anchor", "--out", str(kept))
            assert result.returncode == 0, result.stderr
            return kept.read_text().count("\u2014 ark-lattice-witness/") == 2

        wait_for(written_with_cosignatures, timeout=30, what="a cosigned note to keep elsewhere")
        newest = int(kept.read_text().split("\n")[1])
        nodes["a"].stop()

        # Someone with a's key deletes its newest events and checkpoint, and the cosignatures it
        # held too, and re-signs the ledger's head (without the key, the head alone catches it).
        keep = early + 3
        home = Home(homes("a"))
        conn = sqlite3.connect(home.ledger_path)
        conn.execute("DELETE FROM events WHERE seq > ?", (keep,))
        conn.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
        conn.execute("DELETE FROM cosignatures")
        [(tip,)] = conn.execute("SELECT hash FROM events WHERE seq = ?", (keep,))
        seq = conn.execute("SELECT value FROM meta WHERE key = 'manifest_seq'").fetchone()
        head = heads.Head("", keep, tip, int(seq[0]) if seq else 0).signed(Identity.load(home.key_path))
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (head.to_bytes(), heads.HEAD_KEY))
        conn.commit()
        conn.close()

        # Back up, a asks its peers to cosign its (older) newest checkpoint; they answer with the
        # size they cosigned before and that note, carrying their cosignatures.
        nodes["a"] = NodeProcess(homes("a"), *QUIET)
        wait_for(lambda: cosigned_by(homes("a"), newest) == {ids["b"], ids["c"]},
                 timeout=30, what="b and c to hand back the checkpoint they cosigned")
        nodes["a"].stop()
        log = run_cli(homes("a"), "ledger", "log", "--limit", "1", "--json")
        held = items(json.loads(log.stdout))[0]["seq"]
        assert held < newest
        result = run_cli(homes("a"), "ledger", "verify")
        assert result.returncode == 1, result.stdout
        line = result.stderr.decode().strip()
        assert f"events #{held + 1}..#{newest}" in line, line
        assert "truncated" in line and "Traceback" not in line
        against = run_cli(homes("a"), "ledger", "verify", "--against", str(kept))
        assert against.returncode == 1
        assert f"#{newest}" in against.stderr.decode()
    finally:
        for node in nodes.values():
            node.close(grace=0)


def test_a_node_that_signs_two_roots_for_one_size_is_isolated_everywhere(homes: Homes) -> None:
    names = ("a", "b", "c", "d")
    ids = init_federation(homes, *names)
    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]  # d never talks to a
    core_links(homes, ids, pairs)
    nodes = start_all(homes, names)
    try:
        dial(homes, nodes, pairs)
        wait_linked(nodes, ids, pairs)
        publish(homes("a"), 4, "honest")
        size = anchor(homes("a"))
        wait_for(lambda: cosigned_by(homes("a"), size) == {ids["b"], ids["c"]},
                 timeout=30, what="b and c to cosign a's checkpoint")
        nodes["a"].stop()

        # a signs a second root for the same size (with its own key) and asks again.
        who = Identity.load(Home(homes("a")).key_path)
        forged = Checkpoint(ledger.checkpoint_origin(who.node_id), size, merkle.leaf_hash(b"another history"))
        note = sign_checkpoint(forged, who, ledger.key_name(who.node_id))
        conn = sqlite3.connect(Home(homes("a")).ledger_path)
        conn.execute(
            "UPDATE checkpoints SET root = ?, note = ? WHERE size = ?", (forged.root_hash, note, size)
        )
        conn.commit()
        conn.close()
        nodes["a"] = NodeProcess(homes("a"), *QUIET)

        for name in ("b", "c", "d"):
            wait_for(lambda name=name: peer_tier(homes(name), ids["a"]) == "blocked",  # type: ignore[misc]
                     timeout=30, what=f"{name} to isolate a")
        # The alert carries both notes, and anyone can check them: self-proving on every node.
        for name in ("b", "c", "d"):
            listed = run_cli(homes(name), "alerts", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            alerts = items(json.loads(listed.stdout))
            forks = [x for x in alerts if x["about"] == ids["a"] and x["self_proving"]]
            assert forks, (name, listed.stdout)
        assert NodeId.parse(ids["a"]) == who.node_id
    finally:
        for node in nodes.values():
            node.close(grace=0)
