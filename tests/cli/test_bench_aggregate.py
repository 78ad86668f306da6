"""``bench aggregate``: FedAvg against numpy's weighted mean, and the robust rules' times, run tiny."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ark_lattice.bench import aggregate as bench_aggregate
from ark_lattice.cli.app import app

NAMES = [
    "aggregate.fedavg",
    "aggregate.fedavg.time",
    "aggregate.krum.time",
    "aggregate.median.time",
    "aggregate.trimmed_mean.time",
]


def test_bench_aggregate_reports_fedavg_against_numpy_and_the_robust_rules_times(tmp_path):
    result = CliRunner().invoke(
        app, ["--home", str(tmp_path / "home"), "bench", "aggregate", "--json", "--updates", "5",
              "--params", "1000"],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["name"] for r in rows] == NAMES
    fedavg = rows[0]
    assert fedavg["unit"] == "updates/s" and fedavg["bound"] > 0 and fedavg["ratio"] > 0
    assert "np.average" in fedavg["note"]
    assert all(r["value"] >= 0 and "bound" not in r for r in rows[1:])
    assert "f=1" in rows[2]["note"]  # Krum's n >= 2f + 3 at five updates


def test_the_default_f_is_two():
    rows = bench_aggregate.run(7, 10, repeats=1)
    assert [r.name for r in rows] == NAMES
    assert "f=2" in rows[2].note and "trim=2/7" in rows[4].note
