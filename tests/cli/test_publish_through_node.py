"""`packets publish` hands bodies to the running node; export/import carry packets on a signed file;
identity backup and change-passphrase."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ark_lattice.errors import ExitCode
from ark_lattice.processes import NodeProcess, run_cli
from ark_lattice.runtime.control import call

PASSPHRASE = "correct horse battery"


Result = subprocess.CompletedProcess[bytes]


def ok(result: Result) -> Any:
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"", result.stderr
    return json.loads(result.stdout)


def one_line(result: Result, code: int) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == code, (result.returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_publish_through_a_node_with_a_sealed_key(
    homes: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = homes("sealed")
    monkeypatch.setenv("ARK_LATTICE_PASSPHRASE", PASSPHRASE)
    assert run_cli(home, "init", "--seal").returncode == 0
    with NodeProcess(home, "--no-mdns", "--no-multicast") as node:  # unlocks the key once, here
        # From here on the CLI has no way to get the passphrase: no variable, no file, no terminal.
        # Were it to derive the key it would stop with "a passphrase is needed".
        monkeypatch.delenv("ARK_LATTICE_PASSPHRASE")
        assert "ARK_LATTICE_PASSPHRASE" not in os.environ
        one = ok(run_cli(home, "packets", "publish", "--topic", "notes", "--json", "-", input=b"first"))
        assert one["delivered"] == "node" and one["size"] == 5
        docs = tmp_path / "docs"
        (docs / "sub").mkdir(parents=True)
        for name, text in (("a.txt", "alpha"), ("b.txt", "beta"), ("sub/c.md", "gamma")):
            (docs / name).write_text(text)
        many = ok(run_cli(home, "packets", "publish", "--topic", "docs", "--depends", one["id"][:12],
                          "--json", str(docs)))
        assert many["schema"] == "ark-lattice.published/1"
        assert [Path(i["path"]).name for i in many["items"]] == ["a.txt", "b.txt", "c.md"]
        assert {i["delivered"] for i in many["items"]} == {"node"}
        plain = run_cli(home, "packets", "publish", "--topic", "notes", "-", input=b"plain")
        assert plain.returncode == 0 and len(plain.stdout.strip()) == 64
        publish_big = ("packets", "publish", "--topic", "big", "--json", "-")
        largest = ok(run_cli(home, *publish_big, input=b"x" * (1 << 20)))
        assert largest["delivered"] == "node" and largest["size"] == 1 << 20
        over = run_cli(home, "packets", "publish", "--topic", "big", "-", input=b"x" * ((1 << 20) + 1))
        assert "over the packet limit" in one_line(over, ExitCode.USAGE)

        # The node did the signing: its own count and its log say so, and the packets are its own.
        status = node.current_status()
        assert status is not None and status["published"] == 6
        assert node.output().count("for the CLI") >= 6
        listed = ok(run_cli(home, "packets", "list", "--json"))["items"]
        assert len(listed) == 6 and {p["author"] for p in listed} == {status["node_id"]}
        assert all(p["depends"] == [one["id"]] for p in listed if p["topic"] == "docs")

        # The node's refusals keep their exit code and stay one line.
        bad = run_cli(home, "packets", "publish", "--topic", "Bad Topic", "-", input=b"x")
        assert "topic" in one_line(bad, ExitCode.USAGE)
        missing = run_cli(home, "packets", "publish", "--topic", "t", "--depends", "ffff", "-", input=b"x")
        assert "no packet" in one_line(missing, ExitCode.USAGE)

        # Export is signed by the node too, with the key it holds.
        bundle = tmp_path / "out.bundle"
        exported = ok(run_cli(home, "packets", "export", str(bundle), "--topic", "docs", "--json"))
        assert exported["packets"] == 3 and exported["signed_by"] == "node"
    assert ok(run_cli(home, "ledger", "verify", "--json"))["packets"] == 6


def test_export_import_round_trip_between_two_homes(homes: Callable[[str], Path], tmp_path: Path) -> None:
    a, b = homes("a"), homes("b")
    for home in (a, b):  # two separate federations: nothing but the file links them
        assert run_cli(home, "init", "--name", home.name).returncode == 0
    a_id = ok(run_cli(a, "identity", "show", "--json"))["node_id"]
    publish = ("packets", "publish", "--topic", "field/notes", "--json", "-")
    ids = [ok(run_cli(a, *publish, input=b"%d" % i))["id"] for i in range(3)]
    ok(run_cli(a, "packets", "publish", "--topic", "private", "--json", "-", input=b"stays"))

    bundle = tmp_path / "notes.bundle"
    exported = ok(run_cli(a, "packets", "export", str(bundle), "--topic", "field/notes", "--json"))
    assert exported == {"path": str(bundle), "packets": 3, "bytes": bundle.stat().st_size,
                        "exporter": a_id, "signed_by": "local"}
    assert "already exists" in one_line(run_cli(a, "packets", "export", str(bundle)), ExitCode.USAGE)

    # A tampered bundle is refused whole: nothing imported.
    tampered = tmp_path / "tampered.bundle"
    raw = bytearray(bundle.read_bytes())
    raw[-80] ^= 1
    tampered.write_bytes(bytes(raw))
    one_line(run_cli(b, "packets", "import", str(tampered)), ExitCode.FAILED)
    assert ok(run_cli(b, "packets", "list", "--json"))["items"] == []

    first = ok(run_cli(b, "packets", "import", str(bundle), "--json"))
    assert first["new"] == 3 and first["held"] == 0 and first["quarantined"] is True  # A is a stranger to B
    again = ok(run_cli(b, "packets", "import", str(bundle), "--json"))
    assert again["new"] == 0 and again["held"] == 3
    listed = ok(run_cli(b, "packets", "list", "--json"))["items"]
    assert sorted(p["id"] for p in listed) == sorted(ids)
    assert all(p["quarantined"] and p["source"] == a_id and p["author"] == a_id for p in listed)
    for packet_id in ids:  # same bytes on both sides
        shown_a = run_cli(a, "packets", "show", packet_id, "--body").stdout
        assert run_cli(b, "packets", "show", packet_id, "--body").stdout == shown_a

    # From a core peer, packets arrive shared; from a blocked one, not at all.
    c = homes("c")
    assert run_cli(c, "init").returncode == 0
    assert run_cli(c, "peers", "add", a_id, "--tier", "core").returncode == 0
    assert ok(run_cli(c, "packets", "import", str(bundle), "--json"))["quarantined"] is False
    assert not any(p["quarantined"] for p in ok(run_cli(c, "packets", "list", "--json"))["items"])
    d = homes("d")
    assert run_cli(d, "init").returncode == 0
    assert run_cli(d, "peers", "add", a_id, "--tier", "blocked").returncode == 0
    assert "blocked" in one_line(run_cli(d, "packets", "import", str(bundle)), ExitCode.USAGE)
    assert ok(run_cli(d, "packets", "list", "--json"))["items"] == []
    assert ok(run_cli(b, "ledger", "verify", "--json"))["packets"] == 3


def test_identity_backup_and_change_passphrase(home: Path, tmp_path: Path) -> None:
    assert run_cli(home, "init").returncode == 0
    key = (home / "identity.key").read_bytes()
    copy = tmp_path / "key.backup"
    backed = run_cli(home, "identity", "backup", str(copy))
    assert backed.returncode == 0 and b"not sealed" in backed.stderr  # a note, not an error
    assert copy.read_bytes() == key and (copy.stat().st_mode & 0o777) == 0o600
    assert "already exists" in one_line(run_cli(home, "identity", "backup", str(copy)), ExitCode.USAGE)

    new = tmp_path / "new"
    new.write_text(PASSPHRASE + "\n")
    assert ok(run_cli(home, "identity", "change-passphrase", "--new-passphrase-file", str(new), "--json"))[
        "sealed"] is True
    assert ok(run_cli(home, "identity", "show", "--json"))["sealed"] is True
    node_id = ok(run_cli(home, "identity", "show", "--json"))["node_id"]

    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    sealed = (home / "identity.key").read_bytes()
    refused = run_cli(home, "--passphrase-file", str(wrong), "identity", "change-passphrase",
                      "--new-passphrase-file", str(new))
    assert "wrong passphrase" in one_line(refused, ExitCode.FAILED)
    assert (home / "identity.key").read_bytes() == sealed  # nothing lost

    publish = ("--passphrase-file", str(new), "packets", "publish", "--topic", "t", "--json", "-")
    assert ok(run_cli(home, *publish, input=b"x"))["delivered"] == "local"
    sealed_copy = tmp_path / "sealed.backup"
    assert ok(run_cli(home, "identity", "backup", str(sealed_copy), "--json")) == {
        "path": str(sealed_copy), "node_id": node_id, "sealed": True}
    assert b"box" in sealed_copy.read_bytes() and b"seed" not in sealed_copy.read_bytes()


def test_shell_completion_is_offered(home: Path) -> None:
    shown = run_cli(home, "--help")
    assert b"--install-completion" in shown.stdout and b"--show-completion" in shown.stdout


def test_control_requests_answer_with_the_exit_code_of_the_error(homes: Callable[[str], Path]) -> None:
    home = homes("n")
    assert run_cli(home, "init").returncode == 0
    with NodeProcess(home, "--no-mdns", "--no-multicast") as node:
        from ark_lattice.errors import UsageError

        with pytest.raises(UsageError) as caught:
            call(node.control_path, "publish", {"topic": "t", "body": "!!"})
        assert "base64" in str(caught.value) and caught.value.exit_code == ExitCode.USAGE
