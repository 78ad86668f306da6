"""Shared fixtures: short-lived node homes, the CLI runner, and real node processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ark_lattice.cli.app import app


@pytest.fixture
def home() -> Iterator[Path]:
    # Not tmp_path: a control socket path must stay under 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="ark-"))
    yield path / "node"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def homes() -> Iterator[Callable[[str], Path]]:
    root = Path(tempfile.mkdtemp(prefix="ark-"))
    yield lambda name: root / name
    shutil.rmtree(root, ignore_errors=True)


class Cli:
    """Runs the command tree in-process through Typer's runner, as a user would type it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | bytes | None = None, ok: bool = True) -> Any:
        result = self.runner.invoke(app, ["--home", str(self.home), *args], input=input)
        if ok and result.exit_code != 0:
            raise AssertionError(
                f"ark-lattice {' '.join(args)} exited {result.exit_code}: {result.output}"
                f"{result.stderr if result.stderr_bytes is not None else ''}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


def run_cli(home: Path, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "ark_lattice", "--home", str(home), *args],
        input=input,
        capture_output=True,
        timeout=timeout,
    )


def wait_for(condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class NodeProcess:
    """A real `ark-lattice federation start` process on 127.0.0.1."""

    def __init__(
        self,
        home: Path,
        *extra: str,
        bind: str = "127.0.0.1",
        port: int = 0,
        prefix: tuple[str, ...] = (),
        wait: bool = True,
    ) -> None:
        """``prefix`` runs it elsewhere (``ip netns exec NS``); ``wait`` blocks until it serves."""
        self.home = home
        home.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = home.parent / f"{home.name}.out"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "ark_lattice", "--home", str(home), "federation", "start",
             "--bind", bind, "--port", str(port), *extra],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.status = wait_for(self._status, timeout=60, what=f"node in {home} to start")

    def _status(self) -> dict | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"node exited with {self.proc.returncode}: {self.output()}")
        if not (self.home / "control.sock").exists():
            return None
        result = run_cli(self.home, "federation", "status", "--json")
        return json.loads(result.stdout) if result.returncode == 0 else None

    @property
    def url(self) -> str:
        return self.status["listen"]

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"node did not stop on signal {sig}: {self.output()}")
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def start_node() -> Iterator[Callable[..., NodeProcess]]:
    started: list[NodeProcess] = []

    def start(home: Path, *extra: str) -> NodeProcess:
        node = NodeProcess(home, *extra)
        started.append(node)
        return node

    yield start
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
        if not node.log.closed:
            node.log.close()


def init_federation(homes: Callable[[str], Path], *names: str) -> dict[str, str]:
    """Create nodes that share one federation key; returns name -> node id."""
    ids: dict[str, str] = {}
    first: Path | None = None
    for name in names:
        home = homes(name)
        args = ["init", "--name", name]
        if first is not None:
            args += ["--federation-key-file", str(first / "federation.key")]
        result = run_cli(home, *args)
        assert result.returncode == 0, result.stderr
        first = first or home
        ids[name] = json.loads(run_cli(home, "identity", "show", "--json").stdout)["node_id"]
    return ids


def set_tier(home: Path, peer_id: str, tier: str) -> None:
    result = run_cli(home, "peers", "add", peer_id, "--tier", tier)
    assert result.returncode == 0, result.stderr


def fill(home: Path, count: int, topic: str = "bulk", *, body_size: int = 64, start: int = 0) -> list[str]:
    """Publish ``count`` packets into a stopped node's ledger, fast (one batch per 2000)."""
    import asyncio

    from ark_lattice.home import Home
    from ark_lattice.node import LocalNode
    from ark_lattice.packet import Packet

    async def go() -> list[str]:
        node = await LocalNode.open(Home(home), unlock=True)
        try:
            base = await node.store.next_timestamp(node.store.now_ms())
            ids = []
            for lo in range(0, count, 2000):
                batch = [
                    Packet.create(node.identity, topic=topic, kind="note",
                                  body=(b"%d:" % (start + i)).ljust(body_size, b"."), created_at=base + i)
                    for i in range(lo, min(count, lo + 2000))
                ]
                await node.store.put_packets(batch)
                ids += [p.hex_id for p in batch]
            return ids
        finally:
            await node.close()

    return asyncio.run(go())


def packet_ids(home: Path) -> set[str]:
    """Ids a node holds, read straight from its ledger (works while the node runs)."""
    import sqlite3

    conn = sqlite3.connect(home / "ledger.db", timeout=30)
    try:
        return {row[0].hex() for row in conn.execute("SELECT id FROM packets")}
    finally:
        conn.close()


def quarantined_ids(home: Path) -> set[str]:
    import sqlite3

    conn = sqlite3.connect(home / "ledger.db", timeout=30)
    try:
        return {row[0].hex() for row in conn.execute("SELECT id FROM packets WHERE quarantined = 1")}
    finally:
        conn.close()
