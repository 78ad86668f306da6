"""Whole simulated federations: convergence, partitions, crashes, churn, quorum and trust tiers."""

from ark_lattice.sim.convergence import merkle_root
from ark_lattice.sim.mesh import Simulation
from ark_lattice.sim.scenario import Scenario, load_scenario


def simulate(scenario, seed=0):
    if isinstance(scenario, dict):
        scenario = Scenario.from_json(scenario, "test scenario")
    sim = Simulation(scenario, seed=seed)
    report = sim.run()
    assert report["result"]["log"]["error"] == 0, sim.log.errors
    assert report["result"]["ledgers"] == {"verified": len(sim.nodes), "failed": []}
    assert report["result"]["violations"] == 0
    return sim, report


def roots_by_group(report, epoch):
    out: dict[str, set[str]] = {}
    for node, root in zip(report["nodes"], report["epochs"][epoch]["roots"], strict=True):
        out.setdefault(node["group"], set()).add(root)
    return out


def test_baseline_converges_every_epoch_on_one_merkle_root():
    sim, report = simulate(load_scenario("baseline").with_overrides(nodes=16, epochs=2))
    result = report["result"]
    assert result["all_converged"] and result["converged_since_epoch"] == 0
    # 20 published, the validators' genesis membership, and each epoch a round proposal with the
    # approvals given before it was adopted (3 or 4 of the 4 validators).
    assert 20 + 1 + 2 * (1 + 3) <= result["packets"] <= 20 + 1 + 2 * (1 + 4) and result["honest_nodes"] == 16
    for epoch in report["epochs"]:
        assert epoch["converged"] == epoch["up"] == 16
        assert epoch["settled_at_ms"] is not None
        assert epoch["messages"] > 0 and epoch["bytes"] > 0 and epoch["reconciliations"] > 0
        quorum = epoch["quorum"]
        assert (quorum["threshold"], quorum["validators"], quorum["met"]) == (3, 4, True)
        assert quorum["adopted_on"] == 16
        assert quorum["ready"] >= 3
        assert epoch["distinct_roots"] == 1
    every_packet = merkle_root([bytes.fromhex(h) for h in sim.holdings()["local-0000"]["held"]])
    assert set(report["epochs"][-1]["roots"]) == {every_packet.hex()}
    assert len(sim.holdings()["local-0000"]["held"]) == result["packets"]


def test_a_partition_stops_convergence_across_the_cut_and_healing_restores_it():
    sim, report = simulate({
        "nodes": 12, "epochs": 5,
        "groups": [{"name": "west", "weight": 1}, {"name": "east", "weight": 1, "latency_ms": [20, 40]}],
        # a full mesh, so that each side stays connected within itself when cut from the other
        "topology": {"pairs": [["west", "west"], ["east", "east"], ["west", "east"]]},
        "workload": [{"group": "west", "packets": 2}, {"group": "east", "packets": 2}],
        "faults": [{"epoch": 1, "partition": [["west"], ["east"]]}, {"epoch": 3, "heal": True}],
    })
    epochs = report["epochs"]
    assert epochs[0]["converged"] == 12
    for e in (1, 2):
        # Each side holds its own packets and none of the other side's new ones.
        assert epochs[e]["converged"] == 0 and epochs[e]["settled_at_ms"] is None
        roots = roots_by_group(report, e)
        assert len(roots["west"]) == 1 and len(roots["east"]) == 1 and roots["west"] != roots["east"]
        assert epochs[e]["held_messages"] > 0  # heartbeats waiting behind the cut
    assert epochs[4]["converged"] == 12 and epochs[4]["distinct_roots"] == 1
    assert report["result"]["all_converged"] and report["result"]["converged_since_epoch"] in (3, 4)


def test_crashed_nodes_restart_and_catch_up_on_what_they_missed():
    sim, report = simulate({
        "nodes": 12, "epochs": 4,
        "groups": [{"name": "steady", "weight": 1}, {"name": "flaky", "count": 3}],
        "workload": [{"group": "steady", "packets": 3}],
        "faults": [
            {"epoch": 1, "at_s": 10, "crash": {"group": "flaky", "all": True}},
            {"epoch": 2, "at_s": 30, "restart": {"group": "flaky", "all": True}},
        ],
    })
    epochs = report["epochs"]
    assert epochs[1]["down"] == ["flaky-0000", "flaky-0001", "flaky-0002"]
    assert epochs[1]["up"] == 9 and epochs[1]["converged"] == 9 and epochs[1]["honest"] == 12
    assert epochs[2]["down"] == [] and epochs[2]["converged"] == 12
    held = sim.holdings()
    assert held["flaky-0000"]["held"] == held["steady-0000"]["held"]
    assert len(held["flaky-0002"]["held"]) == 12  # including the 3 published while it was down
    assert report["result"]["converged_since_epoch"] == 2


def test_churn_and_loss_still_converge():
    sim, report = simulate({
        "nodes": 10, "epochs": 4,
        "groups": [{"name": "n", "weight": 1, "latency_ms": [10, 60], "loss": 0.05}],
        "workload": [{"group": "n", "packets": 3}],
        "faults": [{"epoch": 1, "churn": {"fraction": 0.5}, "downtime_s": 20}],
    })
    assert sum(e["retransmissions"] for e in report["epochs"]) > 0
    assert report["epochs"][1]["failed_dials"] > 0  # peers redialled the churned nodes while down
    assert report["result"]["all_converged"]


def test_quorum_follows_the_validators_that_are_up_and_converged():
    sim, report = simulate(load_scenario("validator_loss").with_overrides(nodes=12))
    epochs = report["epochs"]
    assert [e["quorum"]["met"] for e in epochs] == [True, True, True, False, True, True]
    assert [e["quorum"]["validators"] for e in epochs] == [4, 4, 3, 3, 3, 3]
    assert [e["honest"] for e in epochs] == [12, 12, 11, 11, 11, 11]
    assert len(epochs[2]["dropped"]) == 1 and epochs[2]["dropped"][0].startswith("validators-")
    assert report["result"]["all_converged"] and report["result"]["honest_nodes"] == 11


def test_trust_tiers_hold_sandbox_packets_in_quarantine_and_unknown_groups_get_nothing():
    groups = ["core", "gateway", "lab", "guest"]
    sim, report = simulate({
        "epochs": 3,
        "groups": [{"name": "core", "count": 4}, {"name": "gateway", "count": 1},
                   {"name": "lab", "count": 2}, {"name": "guest", "count": 2}],
        # core and gateway keep the lab in the sandbox and do not know the guests; the lab and
        # the guests would share everything with anyone (the default tier is core).
        "tiers": {"core": {"lab": "sandbox", "guest": "unknown"},
                  "gateway": {"lab": "sandbox", "guest": "unknown"}},
        # the lab reaches the core only through the gateway
        "topology": {"pairs": [["core", "core"], ["gateway", "core"], ["lab", "gateway"],
                               ["guest", "gateway"], ["guest", "core"]]},
        "workload": [{"group": g, "packets": 2} for g in groups],
    })
    assert report["result"]["all_converged"]
    held = sim.holdings()
    by_group: dict[str, set[str]] = {g: set() for g in groups}
    for name, h in held.items():
        by_group[name.rsplit("-", 1)[0]] |= set(h["authored"])
    assert all(len(by_group[g]) == 6 for g in groups)
    gateway = held["gateway-0000"]
    # sandbox packets reach the gateway, in quarantine ...
    assert by_group["lab"] <= set(gateway["held"]) and set(gateway["quarantined"]) == by_group["lab"]
    for name, h in held.items():
        mine = set(h["held"])
        if name.startswith("core-"):
            # ... and are never re-shared to the core behind it; guests' packets go nowhere
            assert mine == by_group["core"] | by_group["gateway"], name
            assert not h["quarantined"]
        if name.startswith(("lab-", "guest-")):
            # nothing flows to a sandbox or unknown peer: each holds only what it wrote
            assert mine == set(h["authored"]), name
