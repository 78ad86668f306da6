"""Every ``--json`` listing, over generated ledgers: it parses, names its schema and version, and its
timestamps are RFC 3339 UTC with a raw HLC beside where one matters (docs/operator.md, "Output").
The human forms of the same listings carry no Python reprs."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ark_lattice.cli.app import app
from ark_lattice.cli.output import RFC3339, rfc3339
from ark_lattice.hlc import unpack
from ark_lattice.identity import Identity

SCHEMA = re.compile(r"^ark-lattice\.[a-z-]+/1$")
TIMESTAMPS = {"created_at", "received_at", "first_seen", "last_seen", "ts", "time"}
REPRS = re.compile(r"\bNone\b|\bTrue\b|\bFalse\b|\{'|\['")

topics = st.from_regex(r"[a-z0-9][a-z0-9._/-]{0,20}", fullmatch=True)
# Names people type; words that look like a Python repr are left out so a hit means a real repr.
names = st.text(st.characters(whitelist_categories=("L", "N", "Zs")), max_size=12).filter(
    lambda s: not REPRS.search(s)
)
tiers = st.sampled_from(["unknown", "sandbox", "external", "core", "blocked"])


def check_listing(doc: Any, name: str) -> list[dict[str, Any]]:
    assert isinstance(doc, dict) and SCHEMA.match(doc["schema"]), doc
    assert doc["schema"] == f"ark-lattice.{name}/1"
    assert isinstance(doc["items"], list)
    for item in doc["items"]:
        check_times(item)
    return list(doc["items"])


def check_times(value: Any) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in TIMESTAMPS:
                assert inner is None or (isinstance(inner, str) and RFC3339.match(inner)), (key, inner)
            elif key.endswith("_hlc"):
                assert isinstance(inner, int)
                base = key.removesuffix("_hlc")
                assert value[base] == rfc3339(unpack(inner)[0] / 1000)
            elif isinstance(inner, dict):
                check_times(inner)


# No shrinking: each example runs a dozen commands, and the failing one is printed as it is.
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(
    packets=st.lists(st.tuples(topics, st.binary(max_size=64)), max_size=6),
    peers=st.lists(st.tuples(names, tiers), max_size=4),
)
def test_every_listing_is_versioned_data(
    packets: list[tuple[str, bytes]], peers: list[tuple[str, str]]
) -> None:
    root = Path(tempfile.mkdtemp(prefix="ark-"))
    runner = CliRunner()

    def cli(*args: str, input: bytes | None = None) -> str:
        result = runner.invoke(app, ["--home", str(root / "n"), *args], input=input)
        assert result.exit_code == 0, (args, result.output, result.stderr)
        return result.stdout

    try:
        cli("init")
        for topic, body in packets:
            cli("packets", "publish", "--topic", topic, "-", input=body)
        for name, tier in peers:
            cli("peers", "add", str(Identity.generate().node_id), "--tier", tier, "--name", name)
        cli("alerts", "raise", "--severity", "info", "generated")
        docs = root / "docs"
        docs.mkdir()
        for i, (_topic, body) in enumerate(packets[:3] or [("t", b"x")]):
            (docs / f"{i}.txt").write_bytes(body)

        listed = check_listing(json.loads(cli("packets", "list", "--json")), "packets")
        assert len(listed) == len(packets) + 1  # and the alert
        assert all("created_at_hlc" in p for p in listed)
        assert len(check_listing(json.loads(cli("peers", "list", "--json")), "peers")) == len(peers)
        check_listing(json.loads(cli("ledger", "log", "--limit", "1000", "--json")), "events")
        check_listing(json.loads(cli("audit", "--limit", "1000", "--json")), "decisions")
        assert len(check_listing(json.loads(cli("alerts", "list", "--json")), "alerts")) == 1
        check_listing(json.loads(cli("models", "list", "--json")), "models")
        check_listing(json.loads(cli("simulate", "--list", "--json")), "scenarios")
        published = json.loads(cli("packets", "publish", "--topic", "docs", str(docs), "--json"))
        check_listing(published, "published")

        for args in (("packets", "list"), ("peers", "list"), ("ledger", "log"), ("audit",),
                     ("identity", "show"), ("packets", "show", listed[0]["id"])):
            human = cli(*args)
            assert not REPRS.search(human), (args, human)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_tables_fit_80_columns_and_keep_the_ids_whole(cli: Any) -> None:
    """A pipe is 80 columns: each row still shows the whole 16-character id prefix."""
    cli("init")
    for i in range(3):
        cli("packets", "publish", "--topic", "a/very/long/topic/name/that/goes/on/and/on/" + "x" * 40, "-",
            input=b"%d" % i)
    ids = [p["id"][:16] for p in cli.json("packets", "list")]
    out = cli("packets", "list").stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    for packet_id in ids:
        assert packet_id in out


def test_action_commands_print_one_json_object(cli: Any, tmp_path: Path) -> None:
    created = cli.json("init", "--name", "alpha")
    assert created["name"] == "alpha" and created["sealed"] is False and len(created["node_id"]) == 52
    peer = str(Identity.generate().node_id)
    cli("peers", "add", peer)
    assert cli.json("peers", "trust-tier", peer[:8], "sandbox") == {
        "id": peer, "old_tier": "unknown", "tier": "sandbox"}
    assert cli.json("peers", "remove", peer[:8]) == {"id": peer, "removed": True}
    policy = tmp_path / "policy.toml"
    policy.write_text(_default_policy())
    assert cli.json("policy", "set", str(policy))["reloaded"] is False

    # A quarantined packet to promote: carried in from a stranger's bundle.
    other = Path(tempfile.mkdtemp(prefix="ark-"))
    try:
        from typer.testing import CliRunner

        runner = CliRunner()
        home = ["--home", str(other / "n")]
        assert runner.invoke(app, [*home, "init"]).exit_code == 0
        published = runner.invoke(app, [*home, "packets", "publish", "--topic", "t", "-"], input=b"x")
        assert published.exit_code == 0
        assert runner.invoke(app, [*home, "packets", "export", str(tmp_path / "b.bundle")]).exit_code == 0
    finally:
        shutil.rmtree(other, ignore_errors=True)
    imported = cli.json("packets", "import", str(tmp_path / "b.bundle"))
    assert imported["new"] == 1 and imported["quarantined"] is True
    [held] = cli.json("packets", "list")
    assert cli.json("packets", "promote", held["id"][:12]) == {"id": held["id"], "quarantined": False}


def _default_policy() -> str:
    from ark_lattice.policy import DEFAULT_POLICY_TEXT

    return str(DEFAULT_POLICY_TEXT)
