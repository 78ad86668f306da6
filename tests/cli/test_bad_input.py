"""Every bad input is one sentence on stderr and the exit code of its row in docs/operator.md.

Each case runs the real entry point in a subprocess (what a user sees, stderr included), checks the
code against :class:`ExitCode`, that stderr is one ``error:`` line with no traceback, and that
nothing was lost or silently created.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ark_lattice.errors import ExitCode
from ark_lattice.processes import NodeProcess, run_cli, wait_for


def one_line(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    """The one error line of a failed command, after checking its exit code."""
    stderr = result.stderr.decode()
    assert result.returncode == code, (result.returncode, stderr, result.stdout)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    return lines[0]


def init(home: Path) -> str:
    assert run_cli(home, "init", "--name", home.name).returncode == 0
    return str(json.loads(run_cli(home, "identity", "show", "--json").stdout)["node_id"])


def packet_count(home: Path) -> int:
    return len(json.loads(run_cli(home, "packets", "list", "--json").stdout)["items"])


def test_a_home_that_is_a_file_or_under_one(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a home")
    for home in (a_file, a_file / "below"):
        for args in (("init",), ("packets", "list"), ("federation", "status"), ("identity", "show")):
            line = one_line(run_cli(home, *args), ExitCode.HOME_UNUSABLE)
            assert str(home) in line and "not a directory" in line
    assert a_file.read_text() == "not a home"


def test_a_missing_or_empty_ledger_is_never_recreated(home: Path) -> None:
    init(home)
    ledger = home / "ledger.db"
    kept = ledger.read_bytes()
    ledger.unlink()
    args: tuple[str, ...]
    for args in (("packets", "list"), ("peers", "list"), ("federation", "start", "--port", "0")):
        assert "is missing" in one_line(run_cli(home, *args), ExitCode.NO_NODE)
        assert not ledger.exists()
    ledger.write_bytes(b"")
    for args in (("packets", "list"), ("ledger", "verify"), ("packets", "publish", "--topic", "t", "-")):
        assert "is empty (0 bytes)" in one_line(run_cli(home, *args, input=b"x"), ExitCode.NO_NODE)
        assert ledger.stat().st_size == 0
    # `init` does not paper over it either: the node's identity is still there.
    assert "already exists" in one_line(run_cli(home, "init"), ExitCode.USAGE)
    ledger.write_bytes(kept)
    assert run_cli(home, "ledger", "verify").returncode == 0


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_port_out_of_range(home: Path, port: str) -> None:
    init(home)
    line = one_line(run_cli(home, "federation", "start", "--port", port), ExitCode.USAGE)
    assert "--port" in line and "--help" in line


def test_a_bad_option_is_one_line_too(home: Path) -> None:
    assert "--hme" in one_line(run_cli(home, "--hme", "x", "packets", "list"), ExitCode.USAGE)
    assert "--limit" in one_line(run_cli(home, "packets", "list", "--limit", "0"), ExitCode.USAGE)


def test_node_not_running_is_the_same_code_in_every_command(home: Path) -> None:
    init(home)
    for args in (("federation", "sync"), ("federation", "metrics"), ("peers", "lift", "abcd"),
                 ("federation", "auto-sync", "--stop")):
        assert "not running" in one_line(run_cli(home, *args), ExitCode.NODE_NOT_RUNNING)
    status = run_cli(home, "federation", "status")
    assert status.returncode == ExitCode.NODE_NOT_RUNNING and b"not running" in status.stdout


# --- a read-only home ---------------------------------------------------------------------------


@pytest.fixture
def read_only_view(home: Path) -> Iterator[Path]:
    """A read-only bind mount of an initialised ``home`` (root only; a write-protected USB stick
    behaves the same)."""
    init(home)
    view = home.parent / "ro"
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(home), str(view)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {mounted.stderr.decode().strip()}")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_read_only_home_reads_and_refuses_writes(home: Path, read_only_view: Path) -> None:
    assert run_cli(home, "packets", "publish", "--topic", "t", "-", input=b"kept").returncode == 0
    before = (home / "ledger.db").read_bytes()
    view = read_only_view
    assert packet_count(view) == 1
    for args in (("peers", "list"), ("ledger", "verify"), ("identity", "show"), ("ledger", "log")):
        result = run_cli(view, *args)
        assert result.returncode == 0, result.stderr
    refused = ExitCode.HOME_UNUSABLE
    publish = run_cli(view, "packets", "publish", "--topic", "t", "-", input=b"x")
    assert "read-only" in one_line(publish, refused)
    assert "read-only" in one_line(run_cli(view, "federation", "start", "--port", "0"), refused)
    assert "read-only" in one_line(run_cli(view / "sub", "init"), refused).lower()
    assert (home / "ledger.db").read_bytes() == before
    assert packet_count(home) == 1


# --- federation status while a connection is mid-handshake -----------------------------------------


def test_status_while_a_connection_sits_in_the_handshake(home: Path) -> None:
    """Anyone on the LAN can open a connection and say nothing: status must still show the node."""
    init(home)
    with NodeProcess(home, "--no-mdns", "--no-multicast") as node:
        port = int(node.url.rsplit(":", 1)[1])
        silent_ws = socket.create_connection(("127.0.0.1", port))
        silent_tcp = socket.create_connection(("127.0.0.1", port))
        try:
            silent_ws.sendall(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            assert silent_ws.recv(64).startswith(b"HTTP/1.1 101")  # upgraded, then silent
            local = f"127.0.0.1:{silent_ws.getsockname()[1]}"

            def in_handshake() -> Any:
                status = node.current_status() or {}
                return [c for c in status.get("connections", []) if c["remote"] == local]

            [conn] = wait_for(in_handshake, what="the silent connection to show")
            assert conn["peer"] is None and conn["state"] == "handshake"
            human = run_cli(home, "federation", "status")
            assert human.returncode == 0, human.stderr
            assert local in human.stdout.decode() and "handshake" in human.stdout.decode()
            for word in ("None", "False", "True", "{"):
                assert word not in human.stdout.decode()
            doc = json.loads(run_cli(home, "federation", "status", "--json").stdout)
            assert any(c["remote"] == local and c["peer"] is None for c in doc["connections"])
            # --watch runs until Ctrl-C; in a pipe it prints one plain line per refresh.
            from ark_lattice.cli.watch import plain_line

            raw = node.current_status() or {}
            assert "None" not in plain_line(raw, now=raw["now"])
            assert doc["now"].endswith("Z")  # JSON times are RFC 3339 UTC
        finally:
            silent_ws.close()
            silent_tcp.close()


# --- a home that cannot hold the control socket -----------------------------------------------------


def test_a_home_too_deep_for_a_socket_gets_one_in_the_runtime_dir() -> None:
    root = Path(tempfile.mkdtemp(prefix="ark-"))
    try:
        home = root / ("d" * 60) / ("e" * 40) / "node"  # home/control.sock is over 107 bytes
        assert len(str(home / "control.sock")) > 107
        init(home)
        with NodeProcess(home, "--no-mdns", "--no-multicast") as node:
            assert not (home / "control.sock").exists()
            status = json.loads(run_cli(home, "federation", "status", "--json").stdout)
            assert status["running"] is True and status["node_id"] == node.status["node_id"]
            assert "control socket is" in node.output()
            published = run_cli(home, "packets", "publish", "--topic", "t", "--json", "-", input=b"deep")
            assert json.loads(published.stdout)["delivered"] == "node", published.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_file_system_without_sockets_falls_back(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bind() on FAT says EPERM: the node binds in the runtime dir, and clients find it there."""
    from ark_lattice.runtime import control

    home.mkdir(parents=True)
    real = asyncio.start_unix_server

    async def no_sockets_in_home(callback: Any, **kwargs: Any) -> Any:
        if Path(kwargs["path"]).parent == home:
            raise OSError(errno.EPERM, "Operation not permitted")
        return await real(callback, **kwargs)

    monkeypatch.setattr(control.asyncio, "start_unix_server", no_sockets_in_home)

    async def answer(_args: dict[str, Any]) -> str:
        return "pong"

    async def go() -> tuple[Path, Any]:
        server = control.ControlServer(home / "control.sock", {"ping": answer})
        await server.start()
        try:
            reply = await asyncio.to_thread(control.call, home / "control.sock", "ping")
            return server.path, reply
        finally:
            await server.close()

    path, reply = asyncio.run(go())
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:24]
    assert reply == "pong" and path.name == f"{digest}.sock" and path.parent != home
    assert not path.exists()


def test_the_exit_code_table_in_the_docs_is_the_one_in_the_code() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "operator.md").read_text()
    section = docs.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}
