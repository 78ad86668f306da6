"""Commands that keep printing until Ctrl-C, against real processes: `federation logs --follow`,
`ledger log --follow`, `audit --follow` and `federation status --watch` in a pipe.

Each runs as a child process writing to a file; the test waits (bounded) for what it must print,
makes something new happen from another process, waits for that too, then stops it with SIGINT,
which must end it with exit 0 and nothing on stderr.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType

from ark_lattice.identity import Identity
from ark_lattice.processes import cli_command, run_cli, wait_for

QUIET = ("--no-mdns", "--no-multicast")


class Follower:
    """``ark-lattice ARGS…`` running until stopped, its stdout in a file."""

    def __init__(self, home: Path, *args: str) -> None:
        self.out = home.parent / f"follow-{args[0]}-{id(self)}.out"
        self._file = open(self.out, "wb")
        self.proc = subprocess.Popen(cli_command(home, *args), stdout=self._file, stderr=subprocess.PIPE)

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def wait_for_text(self, needle: str, what: str) -> str:
        def seen() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"the follower exited {self.proc.returncode}: {self.stderr()}")
            text = self.text()
            return text if needle in text else None

        return wait_for(seen, timeout=30, what=what)

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        self._file.close()
        return self.proc.returncode, err.decode()

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode()

    def __enter__(self) -> Follower:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._file.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_peer() -> str:
    return str(Identity.generate().node_id)


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_logs_follow_shows_a_line_the_node_writes_after_it_started(home, start_node):
    start_node(home, *QUIET, "--log-format", "json", "--log-level", "debug")
    with Follower(home, "federation", "logs", "--follow", "--level", "info") as follower:
        # The history comes first: once the start-up line is there, the follower is following.
        follower.wait_for_text("listening on", "the follower to print the node's start-up line")
        assert "could not reach" not in follower.text()
        url = f"ws://127.0.0.1:{closed_port()}"
        ok(run_cli(home, "federation", "add-peer", url))
        follower.wait_for_text(f"could not reach {url}", "the node's new line in the follower's output")
        code, err = follower.interrupt()
    assert (code, err) == (0, "")
    # The node wrote JSON lines; without --json they are shown as text, times in UTC.
    line = next(x for x in follower.lines() if "could not reach" in x)
    assert line.split(" ")[1:3] == ["INFO", "ark_lattice.peering:"] and line.split(" ")[0].endswith("Z")
    raw = (home / "logs" / "node.log").read_text().splitlines()
    assert all(json.loads(x)["time"].endswith("Z") for x in raw)
    # And --json gives them back as JSON objects, the level filter applied.
    shown = ok(run_cli(home, "federation", "logs", "--json", "--level", "info"))
    docs = [json.loads(x) for x in shown.splitlines()]
    assert any("could not reach" in d["message"] for d in docs)
    assert all(set(d) == {"time", "level", "logger", "message"} and d["level"] != "DEBUG" for d in docs)


def test_ledger_log_follow_without_a_node_running(home):
    ok(run_cli(home, "init", "--name", "alpha"))
    first, second = new_peer(), new_peer()
    ok(run_cli(home, "peers", "add", first))
    with Follower(home, "ledger", "log", "--follow", "--json", "--kind", "peer.added") as follower:
        follower.wait_for_text(first, "the existing peer.added event")
        ok(run_cli(home, "peers", "add", second))
        follower.wait_for_text(second, "the new peer.added event")
        code, err = follower.interrupt()
    assert (code, err) == (0, "")
    events = [json.loads(line) for line in follower.lines()]
    assert [e["subject"] for e in events] == [first, second]
    assert events[1]["seq"] > events[0]["seq"] and all(e["kind"] == "peer.added" for e in events)


def test_audit_follow_beside_a_running_node(home, start_node):
    ok(run_cli(home, "init", "--name", "alpha"))
    first, second = new_peer(), new_peer()
    ok(run_cli(home, "peers", "add", first, "--tier", "sandbox"))  # a tier change: one decision
    start_node(home, *QUIET)
    with Follower(home, "audit", "--follow", "--decision", "allow") as follower:
        follower.wait_for_text(first[:12], "the existing decision")
        ok(run_cli(home, "peers", "add", second, "--tier", "sandbox"))
        follower.wait_for_text(second[:12], "the decision taken after following started")
        code, err = follower.interrupt()
    assert (code, err) == (0, "")
    lines = follower.lines()
    assert len(lines) == 2 and all(" allow " in x and "tier_change" in x for x in lines)
    assert first[:12] in lines[0] and second[:12] in lines[1]


def test_status_watch_in_a_pipe_prints_plain_lines(home, start_node):
    node = start_node(home, *QUIET)
    doc = node.current_status()
    assert doc is not None
    assert {"now", "ledger", "denials"} <= doc.keys() and doc["ledger"]["events"] == doc["events"]
    assert doc["denials"] == [] and doc["ledger"]["bytes"] > 0
    human = ok(run_cli(home, "federation", "status"))
    assert "no sessions" in human and "None" not in human and "False" not in human
    with Follower(home, "federation", "status", "--watch", "--interval", "0.2") as follower:
        wait_for(lambda: len(follower.lines()) >= 3, timeout=30, what="three refreshes")
        code, err = follower.interrupt()
    assert (code, err) == (0, "")
    lines = follower.lines()
    assert "\x1b" not in follower.text()
    assert all(x.startswith("time=") and " node=" in x and " events=" in x for x in lines)
    assert " pkt_in=- " in lines[0]
    with Follower(home, "federation", "status", "--watch", "--json", "--interval", "0.2") as follower:
        wait_for(lambda: len(follower.lines()) >= 2, timeout=30, what="two JSON refreshes")
        code, err = follower.interrupt()
    assert (code, err) == (0, "")
    docs = [json.loads(x) for x in follower.lines()]
    assert all(d["running"] is True and d["name"] == doc["name"] for d in docs)


def test_status_watch_on_a_terminal_refreshes_in_place_and_leaves_it_clean(home, start_node):
    start_node(home, *QUIET, "--name", "alpha")
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        cli_command(home, "federation", "status", "--watch", "--interval", "0.2"),
        stdin=child, stdout=child, stderr=child, env=env,
    )
    os.close(child)
    seen = bytearray()

    def read_some() -> None:
        while select.select([main], [], [], 0)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            seen.extend(chunk)

    def refreshed() -> bool:
        read_some()
        return seen.count(b"alpha") >= 3  # drawn, then redrawn in place at least twice

    try:
        wait_for(refreshed, timeout=30, what="the live view to refresh twice")
        assert b"\x1b[?25l" in seen  # the cursor is hidden while the view is live …
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        read_some()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    text = seen.decode(errors="replace")
    assert text.rstrip().endswith("\x1b[?25h")  # … and shown again when Ctrl-C ends it
    assert "sessions" in text or "no sessions" in text
    assert "Traceback" not in text and "error:" not in text


def test_follow_errors_are_one_line(home):
    ok(run_cli(home, "init"))
    result = run_cli(home, "federation", "logs")
    assert result.returncode == 2 and result.stderr.decode().startswith("error: no log in ")
    result = run_cli(home, "federation", "logs", "--level", "loud")
    assert result.returncode == 2 and result.stderr.decode().count("\n") == 1
    result = run_cli(home, "federation", "start", "--log-level", "loud", "--port", "0")
    assert result.returncode == 2 and "unknown log level" in result.stderr.decode()
    assert not (home / "control.sock").exists()
    result = run_cli(home, "federation", "status", "--watch")
    assert result.returncode == 3 and "not running" in result.stdout.decode()
