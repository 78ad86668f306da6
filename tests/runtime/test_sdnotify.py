"""sd_notify from the node: the datagrams systemd would get, read from a socket the test binds."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ark_lattice.processes import NodeProcess
from ark_lattice.runtime.sdnotify import Notifier, watchdog_interval


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"ark-test-notify-{secrets.token_hex(6)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    yield "@" + name, sock
    sock.close()


def _fields(sock: socket.socket, timeout: float) -> dict[str, str]:
    sock.settimeout(timeout)
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_a_path_socket_gets_the_fields(home: Path) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    path = home.parent / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.ready("listening on ws://127.0.0.1:1")
        fields = _fields(sock, 5)
    assert fields == {"READY": "1", "STATUS": "listening on ws://127.0.0.1:1", "MAINPID": str(os.getpid())}


def test_an_abstract_socket_is_named_with_an_at_sign(abstract_socket: tuple[str, socket.socket]) -> None:
    name, sock = abstract_socket
    assert Notifier({"NOTIFY_SOCKET": name}).notify("WATCHDOG=1")
    assert _fields(sock, 5) == {"WATCHDOG": "1"}


def test_without_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.interval is None
    assert not notifier.ready("x")


def test_a_socket_nobody_listens_on_is_a_warning_not_a_failure(home: Path) -> None:
    assert not Notifier({"NOTIFY_SOCKET": str(home.parent / "gone")}).notify("READY=1")


def test_the_watchdog_interval_is_half_the_timeout_and_only_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval({}) is None


def test_a_node_says_ready_once_it_listens_pings_the_watchdog_and_says_stopping(
    home: Path, abstract_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, sock = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    with NodeProcess(home, "--no-mdns", "--no-multicast") as node:
        got: list[dict[str, str]] = []
        deadline = time.monotonic() + 60
        while not (any("READY" in f for f in got) and sum("WATCHDOG" in f for f in got) >= 2):
            assert time.monotonic() < deadline, f"no READY and two pings in 60 s: {got}"
            got.append(_fields(sock, deadline - time.monotonic()))
        ready = next(f for f in got if "READY" in f)
        assert ready["STATUS"] == f"listening on {node.url}"
        assert ready["MAINPID"] == str(node.proc.pid)
        node.close()
    stopping: dict[str, str] = {}
    while "STOPPING" not in stopping:
        stopping = _fields(sock, 30)  # leftover pings first, then STOPPING=1
