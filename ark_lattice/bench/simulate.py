"""``bench simulate``: how fast and how big the deterministic simulator runs (DESIGN §11, §15).

Each size runs the built-in ``baseline`` scenario in a fresh process, so its peak memory (the
process's maximum resident set, ``getrusage``) is its own and not the previous size's. The rate is
simulated node-epochs per second of wall time: nodes × epochs / seconds, setup included.

It also runs the built-in ``intruder`` scenario (10 core nodes, one of which starts sending forged
packets) and reports, in virtual time, how long the honest nodes took to isolate it and how many
alert messages each alert cost.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

from ark_lattice.bench import SILENT, Measurement, Progress

__all__ = ["run", "measure", "intruder"]

SCENARIO = "baseline"
INTRUDER_NODES = 10


def measure(nodes: int, epochs: int, seed: int = 0) -> dict[str, float | int | bool]:
    """Run baseline once in this process; wall seconds, peak RSS and whether it converged."""
    from ark_lattice.sim.mesh import Simulation
    from ark_lattice.sim.scenario import load_scenario

    scenario = load_scenario(SCENARIO).with_overrides(nodes=nodes, epochs=epochs)
    started = time.perf_counter()
    report = Simulation(scenario, seed=seed).run()
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "nodes": nodes,
        "epochs": epochs,
        "wall_s": wall,
        "peak_rss_mib": peak_kib / 1024,
        "converged": bool(report["result"]["all_converged"]),
        "messages": sum(e["messages"] for e in report["epochs"]),
    }


def intruder(nodes: int = INTRUDER_NODES, seed: int = 0) -> list[Measurement]:
    """The intruder scenario's report as measurements: virtual ms from the first forged packet
    to each honest node's isolation of the intruder (p50/p99/max), and messages per alert."""
    from ark_lattice.sim.mesh import Simulation
    from ark_lattice.sim.scenario import load_scenario

    report = Simulation(load_scenario("intruder").with_overrides(nodes=nodes), seed=seed).run()
    result = report["result"]
    [bad] = result["misbehaviour"]
    times, spread = bad["time_to_isolation_ms"], bad["after_first_isolation_ms"]
    note = (
        f"intruder, {nodes} nodes, seed {seed}, virtual time; a forged packet to each peer every "
        f"{bad['every_s']:g} s; {bad['never_isolated']} honest node(s) never isolated it; "
        f"after the first isolation: p50 {spread['p50']} ms, max {spread['max']} ms"
    )
    out = [
        Measurement(f"simulate.intruder.isolation_{q}", float(times[q]), "ms", note=note)
        for q in ("p50", "p99", "max") if times[q] is not None
    ]
    alerts = result["alerts"]
    if alerts["messages_per_alert"] is not None:
        out.append(Measurement(
            "simulate.intruder.messages_per_alert", alerts["messages_per_alert"], "messages",
            note=f"{alerts['frames']} alert frames for {alerts['raised']} alerts "
            f"({alerts['messages_per_alert_per_node']} per honest node per alert); "
            f"{alerts['id_frames']} backstop digests",
        ))
    return out


def run(
    sizes: Sequence[int] = (100, 1000), epochs: int = 5, *, progress: Progress = SILENT
) -> list[Measurement]:
    out: list[Measurement] = []
    progress.update(total=len(sizes) + 1)
    for nodes in sizes:
        progress.update(description=f"simulate {nodes:,} nodes x {epochs} epochs")
        proc = subprocess.run(
            [sys.executable, "-m", "ark_lattice.bench.simulate", str(nodes), str(epochs)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the {nodes}-node simulation failed: {proc.stderr.strip()[-500:]}")
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        converged = "converged" if m["converged"] else "NOT converged"
        note = (
            f"{SCENARIO}, {nodes} nodes x {epochs} epochs in {m['wall_s']:.1f} s wall, "
            f"{m['messages']:,} messages, {converged}"
        )
        out.append(Measurement(
            f"simulate.rate.{nodes}", nodes * epochs / m["wall_s"], "node-epochs/s", note=note
        ))
        out.append(Measurement(f"simulate.wall.{nodes}", m["wall_s"], "s", note=note))
        out.append(Measurement(
            f"simulate.peak_memory.{nodes}", m["peak_rss_mib"], "MiB",
            note=f"peak resident set of the process running {nodes} nodes "
            f"({m['peak_rss_mib'] * 1024 / nodes:.0f} KiB per node, interpreter included)",
        ))
        progress.advance()
    progress.update(description=f"simulate intruder, {INTRUDER_NODES} nodes")
    out += intruder()
    progress.advance()
    return out


if __name__ == "__main__":  # the worker process of run()
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]))))
