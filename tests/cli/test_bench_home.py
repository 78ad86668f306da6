"""``bench home``: a home built once and measured through the real CLI, run tiny."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from ark_lattice.bench.home import build_home
from ark_lattice.processes import run_cli


def test_bench_home_measures_a_home_it_builds_once(home: Path) -> None:
    built = home.parent / "big"
    result = run_cli(home, "bench", "home", "--packets", "300", "--body", "64", "--home-dir", str(built),
                     "--json", timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    rows = {row["name"]: row for row in map(json.loads, result.stdout.decode().splitlines())}
    # Built once: a later run finds it big enough, or tops it up.
    assert asyncio.run(build_home(built, 200, 64)) == 0
    assert asyncio.run(build_home(built, 310, 64)) == 10
    with sqlite3.connect(built / "ledger.db") as db:
        assert db.execute("SELECT COUNT(*) FROM packets").fetchone() == (310,)
    assert list(rows) == [
        "home.list.first_row", "home.list.total", "home.list.rss",
        "home.list.json.first_row", "home.list.json.total", "home.list.json.rss",
        "home.status", "home.status.cli", "home.verify", "home.verify.cpu", "home.verify.ceiling",
    ]
    for form in ("list", "list.json"):
        first, total = rows[f"home.{form}.first_row"]["value"], rows[f"home.{form}.total"]["value"]
        assert 0 < first <= total
        assert 10 < rows[f"home.{form}.rss"]["value"] < 1000
    verify = rows["home.verify"]
    assert verify["unit"] == "packets/s" and verify["bound"] and verify["ratio"]
    assert str(verify["note"]).startswith("301 events")
    cpu = rows["home.verify.cpu"]
    assert cpu["unit"] == "µs/packet" and cpu["value"] > 0 and "bare Ed25519" in cpu["note"]
    # A ceiling under the same bound, and one: the real verify, which makes every check the bare
    # primitives stand for and much more, stayed under it.
    ceiling = rows["home.verify.ceiling"]
    assert ceiling["unit"] == "packets/s" and ceiling["bound"] == verify["bound"]
    assert verify["value"] < ceiling["value"] < ceiling["bound"]
