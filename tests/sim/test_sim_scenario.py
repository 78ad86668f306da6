"""Scenario files: built-ins load, defaults are applied, and every mistake names its field."""

import json

import pytest
from typer.testing import CliRunner

from ark_lattice.cli.app import app
from ark_lattice.errors import ConfigError, UsageError
from ark_lattice.sim.scenario import Scenario, builtin_names, load_scenario
from ark_lattice.tiers import TrustTier

runner = CliRunner()


def test_the_built_ins_load_with_the_promised_quorums():
    assert builtin_names() == ["baseline", "edge_failover", "equivocator", "intruder", "validator_loss"]
    quorum = {name: load_scenario(name).quorum for name in builtin_names()}
    assert quorum == {"baseline": 3, "edge_failover": 3, "equivocator": 3, "intruder": 0, "validator_loss": 3}
    assert load_scenario("baseline").epochs == 5
    kinds = {f.kind for f in load_scenario("edge_failover").faults}
    assert {"crash", "restart", "partition", "heal"} <= kinds
    assert any(
        f.kind == "drop" and f.select is not None and f.select.group == "validators"
        for f in load_scenario("validator_loss").faults
    )


def test_group_sizes_honour_counts_and_share_the_rest_by_weight():
    sc = load_scenario("baseline").with_overrides(nodes=1000)
    sizes = sc.group_sizes()
    assert sizes["validators"] == 4 and sum(sizes.values()) == 1000
    assert sizes == {"validators": 4, "local": 498, "remote": 299, "edge": 199}


def test_defaults_and_link_profiles():
    sc = Scenario.from_json({"groups": [
        {"name": "a", "latency_ms": [1, 2], "loss": 0.1},
        {"name": "b", "latency_ms": [10, 20], "loss": 0.1},
    ], "tiers": {"a": {"b": "sandbox"}}})
    assert sc.tier("a", "b") is TrustTier.SANDBOX and sc.tier("b", "a") is TrustTier.CORE
    assert sc.link("a", "b").latency_ms == (11.0, 22.0)
    assert sc.link("a", "b").loss == pytest.approx(0.19)
    assert sc.topology == {"degree": 4, "peers": "connected"} and sc.policy == "default"
    # what to_json writes reads back the same
    assert Scenario.from_json(sc.to_json()).to_json() == sc.to_json()


def test_the_file_form_round_trips_with_every_fault_kind():
    doc = load_scenario("edge_failover").to_json()
    doc["faults"].append({"epoch": 4, "churn": {"fraction": 0.2}, "downtime_s": 15})
    doc["faults"].append({"epoch": 5, "drop": {"nodes": ["edge-0001"]}})
    doc["faults"].append({"epoch": 2, "at_s": 7, "misbehave": {"group": "remote", "count": 1}})
    doc["faults"].append({"epoch": 3, "misbehave": {"nodes": ["edge-0002"]}, "interval_s": 0.5})
    doc["topology"]["peers"] = "all"
    sc = Scenario.from_json(doc)
    assert Scenario.from_json(sc.to_json()) == sc
    assert {f.kind for f in sc.faults} >= {"misbehave", "churn", "drop", "crash", "partition", "heal"}
    misbehaving = [f for f in sc.faults if f.kind == "misbehave"]
    assert [(f.epoch, f.at_s, f.interval_s) for f in misbehaving] == [(2, 7, 1.0), (3, 0.0, 0.5)]
    assert misbehaving[0].to_json() == {
        "epoch": 2, "at_s": 7, "misbehave": {"group": "remote", "count": 1}, "interval_s": 1.0
    }
    assert sc.topology == {"degree": 4, "peers": "all"}


@pytest.mark.parametrize(
    "doc, field",
    [
        ({}, "groups"),
        ({"groups": [{"name": "a"}], "nodes": 0}, "nodes"),
        ({"groups": [{"name": "a", "count": 3}], "nodes": 2}, "nodes"),
        ({"groups": [{"name": "a", "latency_ms": [9, 1]}]}, "groups[0].latency_ms"),
        ({"groups": [{"name": "a", "loss": 0.9}]}, "groups[0].loss"),
        ({"groups": [{"name": "a"}, {"name": "a"}]}, "groups[1].name"),
        ({"groups": [{"name": "a"}], "tiers": {"a": {"z": "core"}}}, "tiers.a"),
        ({"groups": [{"name": "a"}], "tiers": {"a": {"a": "friend"}}}, "tiers.a.a"),
        ({"groups": [{"name": "a"}], "topology": {"degree": 3}}, "topology.degree"),
        ({"groups": [{"name": "a"}], "workload": [{"group": "a", "packets": -1}]}, "workload[0].packets"),
        (
            {"groups": [{"name": "a"}], "workload": [{"group": "a", "packets": 1, "topic": ""}]},
            "workload[0].topic",
        ),
        ({"groups": [{"name": "a"}], "faults": [{"epoch": 1}]}, "faults[0]"),
        ({"groups": [{"name": "a"}], "faults": [{"epoch": 1, "crash": {"group": "a"}}]}, "faults[0].crash"),
        (
            {"groups": [{"name": "a"}], "faults": [{"epoch": 1, "crash": {"count": "x"}}]},
            "faults[0].crash.count",
        ),
        (
            {"groups": [{"name": "a"}], "faults": [{"epoch": 1, "partition": [["a"], ["a"]]}]},
            "faults[0].partition",
        ),
        (
            {"groups": [{"name": "a"}], "faults": [{"epoch": 1, "misbehave": {"count": 1}, "interval_s": 0}]},
            "faults[0].interval_s",
        ),
        (
            {"groups": [{"name": "a"}], "faults": [{"epoch": 1, "crash": {"count": 1}, "interval_s": 1}]},
            "faults[0].interval_s",
        ),
        ({"groups": [{"name": "a"}], "faults": [{"epoch": 1, "misbehave": {"group": "b", "all": True}}]},
         "faults[0].misbehave.group"),
        ({"groups": [{"name": "a"}], "topology": {"degree": 4, "peers": "some"}}, "topology.peers"),
        ({"groups": [{"name": "a"}], "quorum": 2}, "quorum"),
        ({"groups": [{"name": "a"}], "policy": "lenient"}, "policy"),
        ({"groups": [{"name": "a"}], "epoch_seconds": 0}, "epoch_seconds"),
        ({"groups": [{"name": "a"}], "colour": "blue"}, "colour"),
    ],
)
def test_a_bad_scenario_names_the_field(doc, field):
    with pytest.raises(ConfigError) as err:
        Scenario.from_json(doc, "s.json")
    assert str(err.value).startswith(f"s.json: {field}: "), str(err.value)


def test_the_cli_lists_built_ins_and_refuses_bad_files_in_one_line(tmp_path):
    listed = runner.invoke(app, ["simulate", "--list", "--json"])
    assert listed.exit_code == 0
    doc = json.loads(listed.stdout)
    assert doc["schema"] == "ark-lattice.scenarios/1"
    assert [s["name"] for s in doc["items"]] == builtin_names()

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(
        {"groups": [{"name": "a"}], "faults": [{"epoch": 0, "crash": {"group": "b", "all": True}}]}
    ))
    result = runner.invoke(app, ["simulate", "--scenario", str(bad)])
    assert result.exit_code == 1
    assert result.stderr == f"error: {bad}: faults[0].crash.group: 'b' is not a group (groups: a)\n"

    bad.write_text("{ not json")
    result = runner.invoke(app, ["simulate", "--scenario", str(bad)])
    assert result.exit_code == 1 and "is not valid JSON" in result.stderr

    result = runner.invoke(app, ["simulate", "--scenario", "no-such-scenario"])
    assert result.exit_code == 2 and "not a built-in" in result.stderr
    result = runner.invoke(app, ["simulate", "--scenario", "validator_loss", "--nodes", "3"])
    assert result.exit_code == 1 and "nodes: 3 is fewer than the 4" in result.stderr


def test_load_scenario_errors_are_library_errors(tmp_path):
    with pytest.raises(UsageError):
        load_scenario(str(tmp_path / "missing.json"))
