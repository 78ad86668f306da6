"""A misbehaving node: it runs the node's own code and also forges packets; the honest nodes isolate
it on strikes, their alerts quarantine and block it everywhere, and the report says how fast."""

import os
import subprocess
import sys

import pytest

from ark_lattice.policy import Policy
from ark_lattice.sim.mesh import Simulation, report_bytes
from ark_lattice.sim.scenario import Scenario, load_scenario

NODES = 8
SEED = 1


def intruder(nodes: int = NODES, seed: int = SEED) -> tuple[Simulation, dict]:
    sim = Simulation(load_scenario("intruder").with_overrides(nodes=nodes), seed=seed)
    report = sim.run()
    assert report["result"]["log"]["error"] == 0, sim.log.errors
    assert report["result"]["ledgers"] == {"verified": nodes, "failed": []}
    assert report["result"]["violations"] == 0
    return sim, report


@pytest.fixture(scope="module")
def run() -> tuple[Simulation, dict, dict[str, list[str]]]:
    isolated_by: dict[str, list[str]] = {}  # node -> peers its coordinator isolated on strikes

    def on_progress(done, epoch):
        if epoch is not None and epoch["epoch"] == 1:
            for node in sim.nodes:
                if node.core is not None:
                    isolated_by[node.name] = [i["peer"] for i in node.core.isolations()]

    sim = Simulation(
        load_scenario("intruder").with_overrides(nodes=NODES), seed=SEED, on_progress=on_progress
    )
    report = sim.run()
    assert report["result"]["log"]["error"] == 0, sim.log.errors
    assert report["result"]["ledgers"] == {"verified": NODES, "failed": []}
    assert report["result"]["violations"] == 0
    return sim, report, isolated_by


def test_the_intruder_scenario_is_built_in_and_misbehaves_from_epoch_1():
    sc = load_scenario("intruder")
    assert sc.nodes == 10 and sc.epochs == 5 and [g.name for g in sc.groups] == ["core"]
    assert sc.topology == {"degree": 4, "peers": "all"}
    [fault] = sc.faults
    assert (fault.kind, fault.epoch, fault.interval_s) == ("misbehave", 1, 1.0)
    assert fault.select is not None and fault.select.count == 1
    assert "a bad signature to each peer every 1 s" in fault.describe()
    assert load_scenario("intruder").with_overrides(nodes=NODES).nodes == NODES


def test_every_honest_neighbour_blocks_the_intruder_and_every_honest_node_isolates_it(run):
    sim, report, isolated_by = run
    [bad] = report["result"]["misbehaviour"]
    intruder_node = next(n for n in sim.nodes if n.name == bad["node"])
    assert intruder_node.misbehaving and not intruder_node.honest
    sc = load_scenario("intruder")
    assert bad["since_ms"] == round((1 * sc.epoch_seconds + sc.faults[0].at_s) * 1000)
    assert bad["every_s"] == 1 and bad["bad_packets"] >= 5
    connected = {tuple(c) for c in report["connections"]}
    neighbours = sorted(
        b if a == bad["node"] else a for a, b in connected if bad["node"] in (a, b)
    )
    assert bad["neighbours"] == neighbours and len(neighbours) >= 2
    rows = bad["honest"]
    assert [r["node"] for r in rows] == [n.name for n in sim.nodes if n.name != bad["node"]]
    assert {r["node"] for r in rows if r["adjacent"]} == set(neighbours)
    for row in rows:
        if row["adjacent"]:
            assert row["blocked_ms"] is not None, row  # each neighbour blocks it for good
        assert row["isolated_ms"] is not None, row  # and every honest node holds it off
        times = [t for t in (row["blocked_ms"], row["quarantined_ms"]) if t is not None]
        assert row["isolated_ms"] == min(times)
    # within a bounded virtual time: the strikes that reach the threshold, plus the alert's flood
    strikes = Policy.default().limits.strikes_to_block
    bound = (strikes * bad["every_s"] + 1) * 1000
    assert all(r["isolated_ms"] <= bound for r in rows), rows
    assert bad["never_isolated"] == 0
    # isolation on strikes raised the alerts; the node's own coordinator says so too
    struck = [r["node"] for r in rows if r["blocked_by"] == "strikes"]
    assert struck and all(r["adjacent"] for r in rows if r["blocked_by"] == "strikes")
    for name in struck:
        assert intruder_node.node_id in isolated_by[name]
    # a node that was not adjacent acted on the alerts: quarantined first, then blocked
    far = [r for r in rows if not r["adjacent"]]
    assert far and all(r["quarantined_ms"] is not None for r in far)
    assert all(r["blocked_by"] in ("alert", None) for r in far)


def test_the_report_gives_the_times_and_messages_per_alert(run):
    _, report, _ = run
    [bad] = report["result"]["misbehaviour"]
    acted = sorted(r["isolated_ms"] for r in bad["honest"])
    assert bad["time_to_isolation_ms"] == {
        "p50": acted[(len(acted) + 1) // 2 - 1], "p99": acted[-1], "max": acted[-1]
    }
    blocked = sorted(r["blocked_ms"] for r in bad["honest"] if r["blocked_ms"] is not None)
    assert bad["time_to_block_ms"]["max"] == blocked[-1]
    assert bad["never_blocked"] == len(bad["honest"]) - len(blocked)
    assert bad["after_first_isolation_ms"]["max"] == acted[-1] - acted[0]
    alerts = report["result"]["alerts"]
    raised = sum(e["alerts_raised"] for e in report["epochs"])
    frames = sum(e["alert_frames"] for e in report["epochs"])
    assert alerts["raised"] == raised >= 1 and alerts["frames"] == frames > 0
    assert alerts["messages_per_alert"] == round(frames / raised, 2)
    # Digests go only on sessions that did not carry an alert: none are needed in this mesh.
    assert alerts["id_frames"] == sum(e["alert_id_frames"] for e in report["epochs"])
    honest = report["result"]["honest_nodes"]
    assert honest == NODES - 1
    assert alerts["messages_per_alert_per_node"] == round(frames / raised / honest, 3)
    # nothing about alerts before the intruder starts; it is named in every epoch after
    first = report["epochs"][0]
    assert first["alerts_raised"] == first["alert_frames"] == 0 and first["misbehaving"] == []
    assert all(e["misbehaving"] == [bad["node"]] for e in report["epochs"][1:])
    # the intruder does not count as honest, and the honest nodes still converge (alerts included)
    assert all(e["honest"] == NODES - (e["epoch"] >= 1) for e in report["epochs"])
    assert report["result"]["all_converged"]
    assert report["result"]["packets"] == 4 * 5 + raised


def test_the_same_seed_gives_the_same_report_bytes_in_any_process(run, tmp_path):
    _, report, _ = run
    first = report_bytes(report)
    assert report_bytes(intruder()[1]) == first
    env = {**os.environ, "PYTHONHASHSEED": "3"}
    printed = subprocess.run(
        [sys.executable, "-m", "ark_lattice", "simulate", "--scenario", "intruder", "--nodes", str(NODES),
         "--seed", str(SEED), "--json"],
        env=env, capture_output=True, timeout=300,
    )
    assert printed.returncode == 0, printed.stderr.decode()
    assert printed.stdout == first
    assert report_bytes(intruder(seed=SEED + 1)[1]) != first


def test_a_scenario_file_picks_the_intruder_by_name_and_its_pace():
    doc = load_scenario("intruder").to_json()
    doc["nodes"] = 6
    doc["epochs"] = 2
    doc["faults"] = [{"epoch": 0, "at_s": 30, "misbehave": {"nodes": ["core-0002"]}, "interval_s": 0.25}]
    sim = Simulation(Scenario.from_json(doc, "test scenario"), seed=2)
    report = sim.run()
    assert report["result"]["log"]["error"] == 0, sim.log.errors
    [bad] = report["result"]["misbehaviour"]
    assert bad["node"] == "core-0002" and bad["since_ms"] == 30_000 and bad["every_s"] == 0.25
    # five strikes come four times as fast
    assert bad["never_isolated"] == 0 and bad["time_to_isolation_ms"]["max"] <= 2000
    assert report["epochs"][0]["misbehaving"] == ["core-0002"]
