"""One metric set, named in three places that must not drift: the table in docs/operator.md
("Watching your node"), the Grafana dashboard in packaging/grafana/ and the node's own set
(runtime/metrics.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "packaging" / "grafana" / "ark-lattice-dashboard.json"
OPERATOR = ROOT / "docs" / "operator.md"

# name -> (type, labels): the contract of issue 11, in Prometheus conventions and base units.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ark_lattice_up": ("gauge", ()),
    "ark_lattice_uptime_seconds": ("gauge", ()),
    "ark_lattice_sessions": ("gauge", ("tier", "state")),
    "ark_lattice_packets_received_total": ("counter", ("tier",)),
    "ark_lattice_packets_sent_total": ("counter", ("tier",)),
    "ark_lattice_bytes_received_total": ("counter", ("tier",)),
    "ark_lattice_bytes_sent_total": ("counter", ("tier",)),
    "ark_lattice_reconciliations_total": ("counter", ("role",)),
    "ark_lattice_packets_stored": ("gauge", ("state",)),
    "ark_lattice_packets_ingested_total": ("counter", ("state",)),
    "ark_lattice_policy_decisions_total": ("counter", ("hook", "effect")),
    "ark_lattice_strikes_total": ("counter", ()),
    "ark_lattice_isolations_total": ("counter", ()),
    "ark_lattice_dials_total": ("counter", ("result",)),
    "ark_lattice_ledger_events": ("gauge", ()),
    "ark_lattice_checkpoint_age_seconds": ("gauge", ()),
}

NAME = re.compile(r"\bark_lattice_[a-z0-9_]+")


def test_the_contract_follows_prometheus_conventions() -> None:
    for name, (kind, _) in METRICS.items():
        assert name.endswith("_total") == (kind == "counter"), name


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def queries(node: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and "(" in value:
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def test_every_dashboard_query_names_only_metrics_of_the_set() -> None:
    exprs = list(queries(dashboard()))
    assert len(exprs) >= 16
    used: set[str] = set()
    for expr in exprs:
        names = set(NAME.findall(expr))
        assert names, f"a query names no ark_lattice metric: {expr}"
        assert names <= set(METRICS), f"unknown metric in {expr}: {sorted(names - set(METRICS))}"
        used |= names
    assert used == set(METRICS), f"metrics with no panel: {sorted(set(METRICS) - used)}"


def test_counters_are_only_graphed_as_rates_or_increases() -> None:
    for expr in queries(dashboard()):
        for match in NAME.finditer(expr):
            if METRICS[match.group()][0] == "counter":
                before = expr[: match.start()].rstrip()
                assert before.endswith(("rate(", "increase(")), expr


def test_the_dashboard_imports_with_a_prometheus_data_source() -> None:
    doc = dashboard()
    assert doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]


def docs_table() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The metric table of "Watching your node": name -> (type, labels)."""
    text = OPERATOR.read_text()
    section = text.split("\n## Watching your node\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`ark_lattice_"):
            name = cells[0].strip("`")
            assert name not in rows, f"{name} is listed twice"
            labels = tuple(label.strip("` ") for label in cells[2].split(",") if label.strip())
            rows[name] = (cells[1], labels)
    return rows


def test_the_operator_manual_lists_exactly_the_set() -> None:
    assert docs_table() == METRICS


def test_the_node_exports_exactly_the_set() -> None:
    metrics = pytest.importorskip("ark_lattice.runtime.metrics")
    store = metrics.StoreGauges(packets=0, quarantined=0, events=0, last_checkpoint=None)
    families = metrics.families(metrics.Counters(), [], store, now=0.0)
    assert {f.name: (f.kind, tuple(f.labels)) for f in families} == METRICS
