"""The simulator drives the node's own protocol core; it holds no second copy of protocol logic."""

import ast
from pathlib import Path

import ark_lattice.sim
from ark_lattice.protocol.session import Session
from ark_lattice.runtime.effects import Driver
from ark_lattice.runtime.peering import Federation
from ark_lattice.sim.mesh import Simulation
from ark_lattice.sim.node import SimNode
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
        # from the session it takes its class, roles and states (to drive it), nothing else
        assert imported.get("ark_lattice.protocol.session", set()) <= {"Role", "Session", "State"}, path
    node_imports = imports_of(SIM / "node.py")
    assert "Coordinator" in node_imports["ark_lattice.protocol.coordinator"]
    assert {"Driver", "Effects", "apply_to_session"} <= node_imports["ark_lattice.runtime.effects"]


def test_the_simulator_uses_no_asyncio_and_no_private_name_of_another_module():
    for path in sorted(SIM.rglob("*.py")):
        text = path.read_text()
        imported = imports_of(path)
        assert "asyncio" not in imported, path
        tree = ast.parse(text)
        attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not attributes & {"_scheduled", "_when", "_selector", "_ready", "_process_events"}, path
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):  # no subclass of a node class overriding its internals
                bases = {ast.unparse(b) for b in node.bases}
                assert not bases & {"Federation", "Coordinator", "Session"}, (path, node.name)


def test_the_simulated_node_carries_out_actions_with_the_runtimes_own_loop():
    assert SimNode.__bases__ == (Driver,)
    assert Federation.__bases__ == (Driver,)
    # the shared loop and the store effects are not overridden: only the driver's hooks are
    hooks = {"on_link", "dial", "wake_at", "audit_queued"}
    for cls in (SimNode, Federation):
        overridden = {k for k in vars(cls) if k in vars(Driver) and not k.startswith("__")}
        assert overridden <= hooks | {"ingest", "query_answered"}, cls
    assert "carry_out" not in vars(SimNode) and "carry_out" not in vars(Federation)


def test_simulated_links_carry_the_real_session_class():
    seen: list[type] = []

    def on_progress(done, epoch):
        if epoch is not None:
            for node in sim.nodes:
                for link in node.links.values():
                    seen.append(type(link.session))

    sim = Simulation(load_scenario("baseline").with_overrides(nodes=6, epochs=1), on_progress=on_progress)
    sim.run()
    assert seen and set(seen) == {Session}
