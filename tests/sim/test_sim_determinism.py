"""The same scenario and seed give byte-identical reports, in any process and under any hash seed;
another seed gives another run."""

import json
import os
import subprocess
import sys

from ark_lattice.sim.mesh import Simulation, report_bytes
from ark_lattice.sim.scenario import load_scenario

# edge_failover exercises crashes, a partition, healing, restarts and lossy links.
ARGS = ["--scenario", "edge_failover", "--nodes", "14", "--epochs", "4"]


def cli_report(tmp_path, seed: int, hash_seed: str) -> bytes:
    out = tmp_path / f"{seed}-{hash_seed}"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-m", "ark_lattice", "simulate", *ARGS, "--seed", str(seed), "--out", str(out)],
        env=env, capture_output=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    [path] = out.iterdir()
    assert path.name == f"edge_failover-14n-seed{seed}.json"
    return path.read_bytes()


def test_one_seed_gives_identical_report_bytes_under_different_hash_seeds(tmp_path):
    first = cli_report(tmp_path, 7, "1")
    assert cli_report(tmp_path, 7, "2") == first
    # and in this process (pytest's own, random hash seed), through the library
    scenario = load_scenario("edge_failover").with_overrides(nodes=14, epochs=4)
    assert report_bytes(Simulation(scenario, seed=7).run()) == first
    report = json.loads(first)
    assert report["result"]["all_converged"]
    assert any(e["faults"] for e in report["epochs"])


def test_another_seed_gives_another_run():
    scenario = load_scenario("edge_failover").with_overrides(nodes=14, epochs=4)
    a, b = Simulation(scenario, seed=1).run(), Simulation(scenario, seed=2).run()
    assert report_bytes(a) != report_bytes(b)
    assert {n["id"] for n in a["nodes"]}.isdisjoint({n["id"] for n in b["nodes"]})
    assert a["epochs"][-1]["roots"] != b["epochs"][-1]["roots"]
    assert a["connections"] != b["connections"]


def test_the_json_option_prints_exactly_the_report_file(tmp_path):
    from typer.testing import CliRunner

    from ark_lattice.cli.app import app

    args = ["simulate", "--scenario", "baseline", "--nodes", "8", "--epochs", "1", "--seed", "3"]
    printed = CliRunner().invoke(app, [*args, "--json", "--out", str(tmp_path)])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout_bytes == (tmp_path / "baseline-8n-seed3.json").read_bytes()
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0
    assert "all 8 honest nodes converged" in shown.stdout
