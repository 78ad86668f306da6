"""Real k-of-n governance in the simulator: the validators adopt a round each epoch through the
nodes' own coordinators; a validator that equivocates is caught and blocked everywhere."""

import pytest

from ark_lattice.errors import ConfigError
from ark_lattice.sim.mesh import Simulation
from ark_lattice.sim.scenario import Scenario, load_scenario


def run(scenario: Scenario) -> dict:
    sim = Simulation(scenario, seed=3)
    report = sim.run()
    assert report["result"]["log"]["error"] == 0, sim.log.errors
    assert report["result"]["ledgers"]["failed"] == []
    return report


def test_losing_a_second_validator_stalls_adoption_until_it_returns() -> None:
    report = run(load_scenario("validator_loss").with_overrides(nodes=12))
    q = [e["quorum"] for e in report["epochs"]]
    assert [x["met"] for x in q] == [True, True, True, False, True, True]
    # Epoch 3: two validators up, two approvals of three: adopted nowhere. Epoch 4: the crashed
    # validator is back and approves the same, still open, proposal: adopted on every node.
    assert q[3]["ready"] == 2 and q[3]["adopted_on"] == 0
    assert q[4]["proposal"] == q[3]["proposal"] and q[4]["adopted_on"] == report["epochs"][4]["up"]
    assert len({x["proposal"] for x in q}) == 5


def test_an_equivocating_validator_is_caught_and_blocked_by_every_honest_node() -> None:
    report = run(load_scenario("equivocator"))
    (caught,) = report["result"]["governance"]["equivocation"]
    assert caught["node"] == "validators-0003"
    assert caught["caught_by"] == caught["blocked_by"] == caught["honest"] == 19
    assert all(e["quorum"]["met"] for e in report["epochs"])  # the honest three still adopt
    assert report["epochs"][1]["alerts_raised"] > 0


def test_a_quorum_of_half_the_validators_is_refused() -> None:
    doc = load_scenario("baseline").with_overrides(nodes=8).to_json()
    doc["quorum"] = 2
    with pytest.raises(ConfigError, match="more than half"):
        Simulation(Scenario.from_json(doc, "test"), seed=1).run()
