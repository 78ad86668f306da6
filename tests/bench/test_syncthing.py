"""``bench compare-syncthing``: skipped in one line without Syncthing; a tiny real run with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ark_lattice.bench.syncthing import _bare_item_cpu
from ark_lattice.processes import cli_command


def test_compare_syncthing_without_syncthing_on_path_says_so_in_one_line_and_exits_0(
    home: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "bin"  # a PATH with nothing on it: the interpreter is named by its full path
    empty.mkdir()
    result = subprocess.run(
        cli_command(home, "bench", "compare-syncthing", "--json"),
        env={**os.environ, "PATH": str(empty)},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert result.stdout == b""
    (line,) = result.stderr.decode().splitlines()
    assert line == "bench compare-syncthing: skipped, syncthing is not on PATH"


@pytest.mark.skipif(shutil.which("syncthing") is None, reason="syncthing is not on PATH")
def test_compare_syncthing_runs_both_jobs_through_both_and_reports_each_pair_the_median_and_the_ceiling(
    home: Path,
) -> None:
    args = ("bench", "compare-syncthing", "--small", "20", "--large", "2", "--pairs", "1", "--json")
    result = subprocess.run(cli_command(home, *args), capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    rows = {row["name"]: row for row in map(json.loads, result.stdout.decode().splitlines())}
    assert list(rows) == [
        "compare_syncthing.small.pair1",
        "compare_syncthing.small.median",
        "compare_syncthing.small.ceiling",
        "compare_syncthing.large.pair1",
        "compare_syncthing.large.median",
        "compare_syncthing.large.ceiling",
    ]
    for job in ("small", "large"):
        pair, median = rows[f"compare_syncthing.{job}.pair1"], rows[f"compare_syncthing.{job}.median"]
        assert pair["unit"] == "items/s" and pair["value"] > 0 and pair["bound"] > 0
        # The JSON rounds value and bound to 3 decimals: Syncthing takes ~20 s for the 2 large
        # items, a bound near 0.1 items/s, where that rounding alone moves the quotient by 0.5%.
        slack = 1e-3 + 5e-4 / pair["bound"] + 5e-4 / pair["value"]
        assert pair["ratio"] == pytest.approx(pair["value"] / pair["bound"], rel=slack)
        assert median["value"] == pytest.approx(pair["ratio"], rel=1e-3)  # one pair: its ratio is the median
        # The ceiling is measured against Syncthing's median rate (one pair: its rate), and is one:
        # the nodes of the real run, which did all the primitives and much more, stayed under it.
        ceiling = rows[f"compare_syncthing.{job}.ceiling"]
        assert ceiling["unit"] == "items/s" and ceiling["bound"] == pair["bound"]
        assert ceiling["value"] > pair["value"]
        assert ceiling["ratio"] == pytest.approx(ceiling["value"] / ceiling["bound"], rel=slack)


def test_the_ceiling_times_the_primitives_of_every_item_and_removes_its_file(tmp_path: Path) -> None:
    assert _bare_item_cpu(tmp_path / "bare.bin", 3, 64 * 1024) > 0
    assert list(tmp_path.iterdir()) == []
