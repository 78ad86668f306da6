"""The ``poisoning`` scenario: every aggregation rule on the same poisoned rounds, deterministically."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ark_lattice.aggregation.methods import METHODS
from ark_lattice.cli.app import app
from ark_lattice.errors import UsageError
from ark_lattice.sim.poisoning import THRESHOLD, PoisoningConfig, report_bytes, run, summary_lines

SMALL = PoisoningConfig(clients=8, byzantine=2, rounds=3, seed=1, attack="scaled")
ROBUST = ("median", "trimmed-mean", "krum")


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes():
    first = report_bytes(run(SMALL))
    assert report_bytes(run(SMALL)) == first
    assert first.endswith(b"\n") and json.loads(first)["seed"] == 1
    other = PoisoningConfig(clients=8, byzantine=2, rounds=3, seed=2, attack="scaled")
    assert report_bytes(run(other)) != first


def test_the_report_gives_every_method_in_every_round_or_says_why_not():
    report = run(SMALL)
    assert report["methods"] == list(METHODS)
    assert [rd["round"] for rd in report["rounds"]] == [0, 1, 2]
    skipped = report["result"]["skipped"]
    assert set(skipped) == {"bulyan"} and "4f+3" in skipped["bulyan"]  # 8 < 4·2 + 3
    for rd in report["rounds"]:
        assert set(rd["distance"]) == set(METHODS) - {"bulyan"}
        assert rd["honest_mean_norm"] > 0
    byzantine = [c for c in report["clients"] if c["byzantine"]]
    assert [c["kind"] for c in byzantine] == ["scaled", "scaled"]
    lines = summary_lines(report)
    assert any(line.startswith("skipped bulyan") for line in lines)


def test_robust_rules_stay_near_the_honest_mean_where_fedavg_does_not():
    report = run(SMALL)
    for rd in report["rounds"]:
        assert rd["distance"]["fedavg"] > 1.0  # two ×100 updates own the average
        for method in ROBUST:
            assert rd["distance"][method] <= THRESHOLD, (rd["round"], method)
    result = report["result"]
    assert result["fedavg_within_threshold"] is False
    assert all(result["methods"][m]["within_threshold"] for m in ROBUST)
    assert result["robust_hold_where_fedavg_fails"] is True


def test_the_default_mixed_attack_and_a_lying_sample_count():
    report = run(PoisoningConfig(clients=11, byzantine=3, rounds=2, seed=0))
    kinds = [c["kind"] for c in report["clients"] if c["byzantine"]]
    assert kinds == ["scaled", "sign-flipped", "lying"]
    assert list(report["result"]["skipped"]) == ["bulyan"]  # f = 3 needs n >= 15
    assert run(PoisoningConfig(clients=11, byzantine=2, rounds=1))["result"]["skipped"] == {}
    liar = run(PoisoningConfig(clients=10, byzantine=1, rounds=1, seed=0, attack="lying"))
    # Capped at max_samples, the lie still outweighs the honest clients' few hundred samples each.
    assert liar["rounds"][0]["distance"]["fedavg"] > 1.0
    assert liar["rounds"][0]["distance"]["median"] <= THRESHOLD


def test_no_honest_client_is_refused():
    with pytest.raises(UsageError):
        run(PoisoningConfig(clients=3, byzantine=3))
    with pytest.raises(UsageError):
        run(PoisoningConfig(attack="gentle"))


def test_simulate_scenario_poisoning_maps_nodes_to_clients_and_epochs_to_rounds(tmp_path):
    runner = CliRunner()
    args = ["--home", str(tmp_path / "home"), "simulate", "--scenario", "poisoning", "--nodes", "8",
            "--epochs", "2", "--seed", "4"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    expected = report_bytes(run(PoisoningConfig(clients=8, rounds=2, seed=4)))
    assert result.stdout.encode() == expected
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "poisoning: 8 clients, 2 byzantine (scaled, sign-flipped), 2 rounds, seed 4" in text.stdout
    assert "robust rules within 10% where FedAvg is not: yes" in text.stdout
