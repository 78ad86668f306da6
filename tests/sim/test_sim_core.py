"""The simulator drives the node's own protocol core; it holds no second copy of protocol logic."""

import ast
from pathlib import Path

import ark_lattice.sim
from ark_lattice.protocol.session import Session
from ark_lattice.runtime.peering import Federation
from ark_lattice.sim import mesh
from ark_lattice.sim.mesh import Simulation
from ark_lattice.sim.scenario import load_scenario

SIM = Path(ark_lattice.sim.__file__).parent
PROTOCOL_INTERNALS = {
    "ark_lattice.protocol.handshake",
    "ark_lattice.protocol.reconcile",
    "ark_lattice.protocol.channel",
    "ark_lattice.protocol.frames",
    "ark_lattice.protocol.intake",
}


def imports_of(path: Path) -> dict[str, set[str]]:
    """module -> names imported from it (empty for ``import module``)."""
    out: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.setdefault(node.module, set()).update(a.name for a in node.names)
            for alias in node.names:  # ``from ark_lattice.protocol import reconcile``
                out.setdefault(f"{node.module}.{alias.name}", set())
        elif isinstance(node, ast.Import):
            for alias in node.names:
                out.setdefault(alias.name, set())
    return out


def test_the_simulator_imports_no_protocol_internals():
    files = sorted(SIM.rglob("*.py"))
    assert {f.name for f in files} >= {"mesh.py", "network.py", "clock.py", "scenario.py", "convergence.py"}
    for path in files:
        imported = imports_of(path)
        assert not PROTOCOL_INTERNALS & set(imported), path
        # from the session it takes two event/enum names to count reconciliations, nothing else
        assert imported.get("ark_lattice.protocol.session", set()) <= {"Role", "SyncCompleted"}, path
    assert "Federation" in imports_of(SIM / "mesh.py")["ark_lattice.runtime.peering"]


def test_the_simulated_node_is_the_nodes_federation_with_one_counter_added():
    cls = mesh._ObservedFederation
    assert cls.__bases__ == (Federation,)
    own = {k for k in vars(cls) if not (k.startswith("__") and k.endswith("__"))}
    assert own == {"_on_event"}  # plus __init__, which only stores the counter


def test_simulated_links_carry_the_real_session_class():
    seen = []

    def on_progress(done, epoch):
        if epoch is not None:
            for node in sim.nodes:
                for link in node.federation.links:
                    seen.append(type(link.session))

    sim = Simulation(load_scenario("baseline").with_overrides(nodes=6, epochs=1), on_progress=on_progress)
    sim.run()
    assert seen and set(seen) == {Session}
