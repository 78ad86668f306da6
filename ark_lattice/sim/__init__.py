"""The deterministic mesh simulator (DESIGN §11; docs/simulator.md).

Many nodes in one process, each running the node's own Federation, sessions and ledger, over a
virtual network (network.py) in virtual time (clock.py); scenarios (scenario.py) say what the
federation looks like and what happens to it; mesh.py runs them and reports convergence
(convergence.py). The same scenario and seed give byte-identical reports.

    from ark_lattice.sim import Simulation, load_scenario, report_bytes
    report = Simulation(load_scenario("baseline").with_overrides(nodes=1000), seed=1).run()
"""

from __future__ import annotations

from ark_lattice.sim.mesh import EPOCH_START, Simulation, report_bytes
from ark_lattice.sim.scenario import Scenario, builtin_names, load_scenario

__all__ = ["Simulation", "Scenario", "load_scenario", "builtin_names", "report_bytes", "EPOCH_START"]
