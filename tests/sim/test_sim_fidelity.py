"""Fidelity: one small workload, run by real node processes on loopback and by the simulator with
the same identities, federation key, packets, connections and tiers, ends with the same packet
set, quarantine and Merkle root on every node."""

import json
import sqlite3
import time

from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.processes import run_cli, wait_for
from ark_lattice.sim.convergence import merkle_root
from ark_lattice.sim.mesh import Simulation
from ark_lattice.sim.scenario import Scenario

from conftest import fill, init_federation, set_tier


def ledger_packets(home) -> tuple[list[Packet], set[str], set[str]]:
    conn = sqlite3.connect(home / "ledger.db", timeout=30)
    try:
        rows = conn.execute("SELECT header, signature, body, quarantined FROM packets").fetchall()
    finally:
        conn.close()
    packets = [Packet.from_parts(h, s, b) for h, s, b, _ in rows]
    held = {p.hex_id for p in packets}
    quarantined = {p.hex_id for p, row in zip(packets, rows, strict=True) if row[3]}
    return packets, held, quarantined


def test_simulator_and_real_nodes_end_with_the_same_packets_and_roots(homes, start_node):
    # A line a - b - c. a and b are core to each other; b keeps c in the sandbox while c trusts b
    # fully; a and c do not know each other.
    ids = init_federation(homes, "a", "b", "c")
    h = {n: homes(n) for n in "abc"}
    set_tier(h["a"], ids["b"], "core")
    set_tier(h["b"], ids["a"], "core")
    set_tier(h["b"], ids["c"], "sandbox")
    set_tier(h["c"], ids["b"], "core")
    fill(h["a"], 30, "from/a")
    fill(h["b"], 10, "from/b")
    fill(h["c"], 20, "from/c")
    initial = {f"{n}-0000": ledger_packets(h[n])[0] for n in "abc"}

    # -- the simulator -------------------------------------------------------------------------
    scenario = Scenario.from_json({
        "name": "fidelity", "epochs": 2, "policy": "default",
        "groups": [{"name": n, "count": 1} for n in "abc"],
        "tiers": {"b": {"c": "sandbox"}, "a": {"c": "unknown"}, "c": {"a": "unknown"}},
        "topology": {"pairs": [["a", "b"], ["c", "b"]]},
    })
    sim = Simulation(
        scenario,
        identities={f"{n}-0000": Identity.load(Home(h[n]).key_path) for n in "abc"},
        initial_packets=initial,
        federation_key=Home(h["a"]).federation_key_path.read_bytes(),
        start_time=time.time(),  # the packets were stamped just now
    )
    report = sim.run()
    assert report["result"]["log"]["error"] == 0, sim.log.errors
    simulated = sim.holdings()
    roots = dict(zip((n["name"] for n in report["nodes"]), report["epochs"][-1]["roots"], strict=True))
    # the interesting shape: relayed a -> b, quarantined at b, nothing to c
    assert set(simulated["a-0000"]["held"]) == {p.hex_id for p in initial["a-0000"] + initial["b-0000"]}
    assert set(simulated["b-0000"]["quarantined"]) == {p.hex_id for p in initial["c-0000"]}
    assert set(simulated["c-0000"]["held"]) == {p.hex_id for p in initial["c-0000"]}

    # -- real processes ------------------------------------------------------------------------
    nodes = {n: start_node(h[n], wait=False) for n in "abc"}
    for node in nodes.values():
        node.wait_started()
    assert run_cli(h["a"], "federation", "add-peer", nodes["b"].url).returncode == 0
    assert run_cli(h["c"], "federation", "add-peer", nodes["b"].url).returncode == 0

    def same_as_simulated():
        return all(ledger_packets(h[n])[1] == set(simulated[f"{n}-0000"]["held"]) for n in "abc")

    wait_for(same_as_simulated, timeout=60, what="the real nodes to hold what the simulated ones hold")
    asked = time.time()  # the nodes' clock: last_sync is wall-clock time
    for n in "abc":  # one more full reconciliation: nothing else arrives
        run_cli(h[n], "federation", "sync")

    def resynced_and_idle():
        conns = [
            c
            for n in "abc"
            for c in json.loads(run_cli(h[n], "federation", "status", "--json").stdout)["connections"]
            if c["state"] == "open"
        ]
        # `sync` starts a reconciliation on every session its node dialled (a -> b and c -> b).
        dialled = [c for c in conns if c["role"] == "initiator"]
        return (
            len(dialled) == 2
            and all(c["last_sync"] is not None and _seconds(c["last_sync"]) >= asked for c in dialled)
            and not any(c["syncing"] for c in conns)
        )

    wait_for(resynced_and_idle, timeout=60, what="the extra reconciliation to finish on every session")
    for n in "abc":
        nodes[n].stop()
    for n in "abc":
        _, held, quarantined = ledger_packets(h[n])
        name = f"{n}-0000"
        assert held == set(simulated[name]["held"]), n
        assert quarantined == set(simulated[name]["quarantined"]), n
        assert merkle_root([bytes.fromhex(i) for i in held]).hex() == roots[name], n
        verify = run_cli(h[n], "ledger", "verify")
        assert verify.returncode == 0, verify.stderr


def _seconds(stamp: str) -> float:
    """Unix seconds of an RFC 3339 time of the CLI's JSON (docs/operator.md, "Output")."""
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
