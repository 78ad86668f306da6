"""The command tree through Typer's runner: exact outputs and one-line errors."""

import json
import sqlite3
import stat


def one_line_error(result, code):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_init_creates_a_private_identity_once(cli, home):
    out = cli("init", "--name", "alpha").stdout
    assert "created node alpha" in out
    assert stat.S_IMODE((home / "identity.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "federation.key").stat().st_mode) == 0o600
    before = (home / "identity.key").read_bytes()
    line = one_line_error(cli("init", ok=False), 2)
    assert "already exists" in line
    assert (home / "identity.key").read_bytes() == before


def test_identity_show(cli):
    cli("init", "--name", "alpha")
    doc = cli.json("identity", "show")
    assert doc["name"] == "alpha" and len(doc["node_id"]) == 52
    assert doc["short_id"] == doc["node_id"][:8]
    assert doc["grouped_id"].replace("-", "") == doc["node_id"]
    human = cli("identity", "show").stdout
    assert doc["grouped_id"] in human and "not sealed" in human


def test_commands_before_init_say_so(cli):
    line = one_line_error(cli("packets", "list", ok=False), 5)
    assert "ark-lattice init" in line


def test_sealed_identity(cli, tmp_path):
    secret = tmp_path / "pass"
    secret.write_text("correct horse\n")
    cli("--passphrase-file", str(secret), "init", "--seal")
    assert cli.json("identity", "show")["sealed"] is True
    publish = ("--passphrase-file", str(secret), "packets", "publish", "--topic", "t", "-")
    cli(*publish, input=b"x")
    secret.write_text("wrong\n")
    line = one_line_error(cli(*publish, input=b"x", ok=False), 1)
    assert "wrong passphrase" in line
    # Reading does not need the key at all.
    assert len(cli.json("packets", "list")) == 1


def test_publish_list_show(cli, tmp_path):
    cli("init")
    body = bytes(range(256)) * 4
    src = tmp_path / "doc.bin"
    src.write_bytes(body)
    first = cli("packets", "publish", "--topic", "docs/a", "--kind", "document", str(src)).stdout.strip()
    second = cli.json("packets", "publish", "--topic", "notes", "--depends", first[:10], "-")
    listing = cli.json("packets", "list")
    assert [p["id"] for p in listing] == [second["id"], first]
    assert listing[0]["depends"] == [first]
    assert [p["id"] for p in cli.json("packets", "list", "--topic", "docs/a")] == [first]
    shown = cli("packets", "show", first[:12], "--body")
    assert shown.stdout_bytes == body
    meta = cli.json("packets", "show", first)
    assert meta["size"] == len(body) and meta["kind"] == "document"


def test_publish_errors_are_one_line(cli):
    cli("init")
    publish = ("packets", "publish", "--topic")
    assert "topic" in one_line_error(cli(*publish, "Bad Topic", "-", input=b"x", ok=False), 2)
    assert "kind" in one_line_error(cli(*publish, "t", "--kind", "x", "-", input=b"x", ok=False), 2)
    assert "cannot read" in one_line_error(cli(*publish, "t", "/nonexistent", ok=False), 2)
    depends_on_nothing = cli(*publish, "t", "--depends", "abcd", "-", input=b"x", ok=False)
    assert "no packet" in one_line_error(depends_on_nothing, 2)
    assert "no packet" in one_line_error(cli("packets", "show", "abcdef", ok=False), 2)
    published = cli(*publish, "t", "-", input=b"x").stdout.strip()
    assert "not in quarantine" in one_line_error(cli("packets", "promote", published, ok=False), 2)


def test_peers_lifecycle(cli):
    cli("init")
    from ark_lattice.identity import NodeId

    a, b = str(NodeId.parse("a" * 52)), str(NodeId.parse("ab" + "c" * 50))
    cli("peers", "add", a, "--endpoint", "ws://127.0.0.1:9")
    cli("peers", "add", b, "--tier", "sandbox")
    assert {p["id"]: p["tier"] for p in cli.json("peers", "list")} == {a: "unknown", b: "sandbox"}
    line = one_line_error(cli("peers", "trust-tier", "a", "core", ok=False), 2)
    assert "several peers" in line
    assert cli("peers", "trust-tier", "aaaa", "core").stdout.strip() == f"peer {a[:16]}: unknown -> core"
    assert "unknown trust tier" in one_line_error(cli("peers", "trust-tier", "aaaa", "friend", ok=False), 2)
    assert cli.json("peers", "show", "aaa")["tier"] == "core"
    assert cli.json("peers", "show", "aaa")["endpoints"] == ["ws://127.0.0.1:9"]
    cli("peers", "remove", "abc")
    assert [p["id"] for p in cli.json("peers", "list")] == [a]
    assert "no peer" in one_line_error(cli("peers", "show", "zz", ok=False), 2)
    kinds = [e["kind"] for e in cli.json("ledger", "log", "--limit", "20") if e["kind"] != "policy.decision"]
    assert kinds[:5] == ["peer.removed", "peer.tier_changed", "peer.tier_changed", "peer.added", "peer.added"]
    assert len(cli.json("audit", "--hook", "tier_change")) == 3  # each tier change was decided by policy


def test_ledger_commands(cli, home, tmp_path):
    cli("init")
    for i in range(3):
        cli("packets", "publish", "--topic", "t", "-", input=b"%d" % i)
    anchored = cli.json("ledger", "anchor")
    assert anchored["size"] == 4 and anchored["new"] is True
    assert cli.json("ledger", "anchor")["new"] is False
    report = cli.json("ledger", "verify")
    assert report["ok"] and report["events"] == 5 and report["packets"] == 3
    assert "ledger OK: 5 events, 3 packets" in cli("ledger", "verify").stdout
    copy = tmp_path / "backup.db"
    assert cli.json("ledger", "backup", str(copy))["events"] == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(copy.name)] == [copy.name]  # one file
    assert "already exists" in one_line_error(cli("ledger", "backup", str(copy), ok=False), 2)

    conn = sqlite3.connect(home / "ledger.db")
    conn.execute("UPDATE packets SET body = X'00' WHERE id = (SELECT id FROM packets LIMIT 1)")
    conn.commit()
    conn.close()
    line = one_line_error(cli("ledger", "verify", ok=False), 1)
    assert "ledger verification failed at packet" in line


def test_federation_status_without_a_node_running(cli):
    cli("init")
    result = cli("federation", "status", ok=False)
    assert result.exit_code == 3
    assert "not running" in result.stdout
    assert json.loads(cli("federation", "status", "--json", ok=False).stdout)["running"] is False


def test_version_and_help_are_quick_and_light():
    import subprocess
    import sys

    code = (
        "import sys; from ark_lattice.cli.app import app; "
        "heavy = {'numpy', 'zeroconf', 'websockets', 'aiosqlite', 'cel'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    version = subprocess.run(
        [sys.executable, "-m", "ark_lattice", "--version"], capture_output=True, text=True
    )
    assert version.stdout.startswith("ark-lattice ")


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly():
    """`ark-lattice … | head`: no "internal error", no traceback, the shell's SIGPIPE status."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ark_lattice.cli import app as cli\n"
        "@cli.app.command('spill')\n"
        "def spill() -> None:\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "sys.argv = ['ark-lattice', 'spill']\n"
        "cli.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 141
    assert done.stderr == b""
