"""``ark-lattice alerts``: raise (to a running node, or stored here), list, follow and show."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ark_lattice.alerts import DEFAULT_TOPIC, NONCE_SIZE, Alert, alert_packet, equivocation_evidence
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest
from ark_lattice.processes import cli_command, run_cli, wait_for
from ark_lattice.runtime.control import ControlServer
from ark_lattice.store.store import Store

VILLAIN = Identity.generate()
STRANGER = Identity.generate()


def one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return str(lines[0])


@pytest.fixture
def node(cli: Any) -> Any:
    """An initialised node that knows VILLAIN as a core peer."""
    cli("init", "--name", "alpha")
    cli("peers", "add", str(VILLAIN.node_id), "--tier", "core")
    return cli


def store_foreign(home: Path, *packets: Any, quarantined: bool = False) -> None:
    """Put packets as if a peer had sent them."""

    async def go() -> None:
        store = await Store.open(Home(home).ledger_path)
        try:
            await store.put_packets(packets, source=str(STRANGER.node_id), quarantined=quarantined)
        finally:
            await store.close()

    asyncio.run(go())


def equivocation_file(tmp_path: Path, who: Identity = VILLAIN) -> Path:
    def signed(name: str) -> bytes:
        return PeerManifest(who.node_id, name, 9, 1_700_000_000, 1_800_000_000).sign(who).to_bytes()

    path = tmp_path / "proof.cbor"
    path.write_bytes(equivocation_evidence(signed("honest"), signed("liar")))
    return path


# --- raise with no node running ------------------------------------------------------------------


def test_raise_without_a_node_stores_the_alert_here(node: Any) -> None:
    result = node("alerts", "raise", "--severity", "critical", "--about", str(VILLAIN.node_id)[:6],
                  "villain leaks keys")
    packet_id = result.stdout.strip()
    assert len(packet_id) == 64 and "next sync" in result.stderr
    doc = node.json("alerts", "raise", "--severity", "info", "--topic", "ops/alerts", "fyi")
    assert doc["delivered"] == "local" and doc["about"] is None
    assert (doc["severity"], doc["topic"]) == ("info", "ops/alerts")
    listed = node.json("alerts", "list")
    assert [a["id"] for a in listed] == [doc["id"], packet_id]  # newest first
    me = node.json("identity", "show")["node_id"]
    first = listed[1]
    assert first["about"] == str(VILLAIN.node_id) and first["author"] == me
    assert (first["severity"], first["message"], first["topic"]) == ("critical", "villain leaks keys",
                                                                     DEFAULT_TOPIC)
    assert first["source"] == "local" and first["quarantined"] is False
    assert first["self_proving"] is False and first["evidence_size"] == 0
    # It is an ordinary packet too, of kind alert.
    assert node.json("packets", "show", packet_id)["kind"] == "alert"


def test_the_same_text_raised_twice_is_two_alerts(node: Any) -> None:
    first = node.json("alerts", "raise", "--severity", "warning", "same")["id"]
    second = node.json("alerts", "raise", "--severity", "warning", "same")["id"]
    assert first != second
    assert len(node.json("alerts", "list")) == 2


def test_raise_with_evidence_and_show_it_in_full(node: Any, tmp_path: Path) -> None:
    proof = equivocation_file(tmp_path)
    doc = node.json("alerts", "raise", "--severity", "critical", "--about", str(VILLAIN.node_id)[:8],
                    "--evidence", str(proof), "two manifests, one sequence number")
    shown = node.json("alerts", "show", doc["id"][:10])
    assert shown["self_proving"] is True and shown["evidence"] == proof.read_bytes().hex()
    assert shown["evidence_size"] == len(proof.read_bytes())
    assert shown["about"] == str(VILLAIN.node_id) and shown["source"] == "local"
    human = node("alerts", "show", doc["id"]).stdout
    assert "self-proving" in human and "not self-proving" not in human
    assert "(this node)" in human and str(VILLAIN.node_id) in human
    assert "two manifests, one sequence number" in human
    assert "quarantined  no" in human


def test_raise_about_a_full_id_of_an_unknown_node(node: Any) -> None:
    doc = node.json("alerts", "raise", "--severity", "warning", "--about",
                    STRANGER.node_id.grouped.upper(), "heard of it")
    assert doc["about"] == str(STRANGER.node_id)


# --- raise through a running node -----------------------------------------------------------------


class FakeNode:
    """A control socket that answers ``raise_alert`` as the running node does."""

    def __init__(self, home: Path, answer: Any = None) -> None:
        self.answer = {"id": "ab" * 32} if answer is None else answer
        self.requests: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = ControlServer(Home(home).control_path, {"raise_alert": self.raise_alert})

    async def raise_alert(self, args: dict[str, Any]) -> Any:
        self.requests.append(args)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def __enter__(self) -> FakeNode:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_raise_hands_the_alert_to_the_running_node(node: Any, home: Path, tmp_path: Path) -> None:
    proof = equivocation_file(tmp_path)
    with FakeNode(home) as fake:
        doc = node.json("alerts", "raise", "--severity", "critical", "--about",
                        str(VILLAIN.node_id)[:5], "--evidence", str(proof), "--topic", "ops/x", "look")
        plain = node("alerts", "raise", "--severity", "info", "hello")
    assert doc == {"id": "ab" * 32, "severity": "critical", "about": str(VILLAIN.node_id),
                   "topic": "ops/x", "delivered": "node"}
    assert plain.stdout.strip() == "ab" * 32 and plain.stderr == ""
    assert fake.requests == [
        {"severity": "critical", "message": "look", "about": str(VILLAIN.node_id), "topic": "ops/x",
         "evidence": proof.read_bytes().hex()},
        {"severity": "info", "message": "hello", "about": None, "topic": "alerts", "evidence": None},
    ]
    assert node.json("alerts", "list") == []  # the node stores it, not the CLI


def test_a_node_that_refuses_or_answers_oddly_is_one_line(node: Any, home: Path) -> None:
    from ark_lattice.errors import UsageError

    with FakeNode(home, answer=UsageError("policy refuses alerts today")):
        line = one_line_error(node("alerts", "raise", "--severity", "info", "x", ok=False), 2)
    assert line == "error: policy refuses alerts today"
    with FakeNode(home, answer=["no id"]):
        line = one_line_error(node("alerts", "raise", "--severity", "info", "x", ok=False), 1)
    assert "did not answer with its id" in line
    assert node.json("alerts", "list") == []  # never stored here as well


def test_a_socket_left_by_a_dead_node_means_no_node(node: Any, home: Path) -> None:
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(Home(home).control_path))
    left.close()  # the file stays; nobody listens
    doc = node.json("alerts", "raise", "--severity", "warning", "stale socket")
    assert doc["delivered"] == "local"
    assert [a["id"] for a in node.json("alerts", "list")] == [doc["id"]]


# --- list and show ----------------------------------------------------------------------------------


def foreign_alert(severity: str, message: str, about: Identity | None, n: int) -> Any:
    alert = Alert(severity, message, str(about.node_id) if about else None,
                  n.to_bytes(NONCE_SIZE, "big"), None)
    return alert_packet(STRANGER, alert, created_at=(1_700_000_000_000 + n) << 16)


def test_list_filters_and_marks_quarantined_alerts(node: Any, home: Path) -> None:
    store_foreign(home, foreign_alert("warning", "from a stranger [red]x[/red]", VILLAIN, 1),
                  quarantined=True)
    store_foreign(home, foreign_alert("info", "about nobody", None, 2))
    mine = node.json("alerts", "raise", "--severity", "critical", "--about", str(VILLAIN.node_id)[:7],
                     "mine")["id"]
    node("packets", "publish", "--topic", "alerts", "-", input=b"a note is no alert")
    listed = node.json("alerts", "list")
    assert [a["severity"] for a in listed] == ["critical", "info", "warning"]
    assert [a["quarantined"] for a in listed] == [False, False, True]
    assert listed[2]["source"] == str(STRANGER.node_id)
    assert [a["id"] for a in node.json("alerts", "list", "--severity", "critical")] == [mine]
    about = node.json("alerts", "list", "--about", str(VILLAIN.node_id)[:4])
    assert [a["severity"] for a in about] == ["critical", "warning"]
    assert len(node.json("alerts", "list", "--limit", "2")) == 2
    table = node("alerts", "list").stdout
    assert "3 alert(s)" in table and "[quarantined]" in table
    assert "[red]x[/red]" in table  # a remote message is text, never markup
    assert STRANGER.node_id.short in table and VILLAIN.node_id.short in table


def test_a_malformed_alert_is_listed_and_refused_by_show(node: Any) -> None:
    bad = node("packets", "publish", "--topic", "alerts", "--kind", "alert", "-",
               input=b"not cbor").stdout.strip()
    (row,) = node.json("alerts", "list")
    assert row["id"] == bad and row["severity"] == "malformed" and row["error"]
    assert node.json("alerts", "list", "--severity", "info") == []
    line = one_line_error(node("alerts", "show", bad[:12], ok=False), 1)
    assert "not a valid alert" in line


def test_show_a_foreign_alert(node: Any, home: Path) -> None:
    packet = foreign_alert("warning", "line one\nline two", VILLAIN, 5)
    store_foreign(home, packet, quarantined=True)
    doc = node.json("alerts", "show", packet.hex_id)
    assert doc["author"] == str(STRANGER.node_id) and doc["source"] == str(STRANGER.node_id)
    assert doc["message"] == "line one\nline two" and doc["quarantined"] is True
    assert doc["evidence"] is None and doc["self_proving"] is False
    assert doc["time"].startswith("2023-11-1")  # local time of 1_700_000_000 s, in any zone
    human = node("alerts", "show", packet.hex_id[:8]).stdout
    assert "quarantined  yes" in human and "evidence     none" in human
    assert "line one\n             line two" in human


# --- errors: one line each --------------------------------------------------------------------------


def test_errors_are_one_sentence(node: Any, tmp_path: Path) -> None:
    raise_ = ("alerts", "raise", "--severity")
    assert "info, warning or critical" in one_line_error(node(*raise_, "fatal", "x", ok=False), 2)
    assert "info, warning or critical" in one_line_error(
        node("alerts", "list", "--severity", "loud", ok=False), 2
    )
    assert "no peer matches 'zzzz'" in one_line_error(
        node(*raise_, "info", "--about", "zzzz", "x", ok=False), 2
    )
    assert "no peer matches" in one_line_error(
        node("alerts", "list", "--about", "qq", ok=False), 2
    )
    missing = tmp_path / "nope.bin"
    line = one_line_error(node(*raise_, "info", "--evidence", str(missing), "x", ok=False), 2)
    assert "cannot read the evidence file" in line and str(missing) in line
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert "1 to 65536 bytes" in one_line_error(
        node(*raise_, "info", "--evidence", str(empty), "x", ok=False), 2
    )
    assert "control character" in one_line_error(node(*raise_, "info", "a\x1b[2Jb", ok=False), 2)
    assert "1 to 1024 characters" in one_line_error(node(*raise_, "info", "x" * 1025, ok=False), 2)
    assert "bad topic" in one_line_error(node(*raise_, "info", "--topic", "A B", "x", ok=False), 2)
    me = node.json("identity", "show")["node_id"]
    assert "this node itself" in one_line_error(node(*raise_, "info", "--about", me, "x", ok=False), 2)
    note = node("packets", "publish", "--topic", "t", "-", input=b"x").stdout.strip()
    assert "is a note, not an alert" in one_line_error(node("alerts", "show", note, ok=False), 2)
    assert "no packet matches" in one_line_error(node("alerts", "show", "abcdef", ok=False), 2)
    assert node.json("alerts", "list") == []  # nothing was raised by any of those


def test_alerts_before_init_say_so(cli: Any) -> None:
    assert "ark-lattice init" in one_line_error(cli("alerts", "list", ok=False), 5)
    assert "ark-lattice init" in one_line_error(
        cli("alerts", "raise", "--severity", "info", "x", ok=False), 5
    )


# --- list --follow, a real process until Ctrl-C -----------------------------------------------------


@pytest.fixture
def follower(node: Any, home: Path) -> Iterator[Any]:
    out = home.parent / "follow.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            cli_command(home, "alerts", "list", "--follow", "--json", "--severity", "critical"),
            stdout=sink, stderr=subprocess.PIPE,
        )
        try:
            yield proc, out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_follow_prints_new_alerts_as_they_are_stored(node: Any, home: Path, follower: Any) -> None:
    old = node.json("alerts", "raise", "--severity", "critical", "before")["id"]
    proc, out = follower

    def lines(count: int) -> list[dict[str, Any]] | None:
        if proc.poll() is not None:
            raise AssertionError(f"the follower exited {proc.returncode}")
        found = [json.loads(x) for x in out.read_text().splitlines()]
        return found if len(found) >= count else None

    assert [a["id"] for a in wait_for(lambda: lines(1), timeout=30, what="the listing")] == [old]
    assert run_cli(home, "alerts", "raise", "--severity", "info", "not shown").returncode == 0
    assert run_cli(home, "packets", "publish", "--topic", "t", "-", input=b"note").returncode == 0
    new = json.loads(run_cli(home, "alerts", "raise", "--severity", "critical", "after", "--json").stdout)
    seen = wait_for(lambda: lines(2), timeout=30, what="the new alert")
    assert [a["id"] for a in seen] == [old, new["id"]] and seen[1]["message"] == "after"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == b""
    assert len(out.read_text().splitlines()) == 2
