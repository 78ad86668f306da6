"""``bench publish``: packets/s through a real node with a sealed key, run tiny."""

from __future__ import annotations

import json
from pathlib import Path

from ark_lattice.processes import run_cli


def test_bench_publish_reports_packets_per_second_through_the_node(home: Path) -> None:
    result = run_cli(home, "bench", "publish", "--packets", "10", "--body-size", "64", "--json", timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    rows = {row["name"]: row for row in map(json.loads, result.stdout.decode().splitlines())}
    assert list(rows) == ["publish.node", "publish.cli_via_node", "publish.cli_sealed_local"]
    node = rows["publish.node"]
    assert node["unit"] == "packets/s" and node["value"] > 0 and node["bound"] > 0
    assert abs(node["ratio"] - node["value"] / node["bound"]) < 0.01
    assert node["note"].startswith("15 signed by the node")  # 10 requests and 5 CLI commands
    assert rows["publish.cli_sealed_local"]["value"] > 0
