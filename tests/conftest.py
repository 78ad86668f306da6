"""Shared fixtures: short-lived node homes, the CLI runner, and real node processes.

Starting node processes, running the CLI in a subprocess and waiting for a condition live in
:mod:`ark_lattice.processes`, which the benches share; the fixtures here wrap them. ``run_cli`` and
``wait_for`` are imported here too because test modules still take them from ``conftest``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ark_lattice.cli.app import app
from ark_lattice.processes import NodeProcess, run_cli, wait_for

__all__ = [
    "NodeProcess",
    "run_cli",
    "wait_for",
    "init_federation",
    "set_tier",
    "fill",
    "packet_ids",
    "quarantined_ids",
    "items",
]


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
        """The command's JSON; a listing's items, once its schema name has been checked."""
        return items(json.loads(self(*args, "--json").stdout))


def items(doc: Any) -> Any:
    """The items of a ``--json`` listing (docs/operator.md, "Output"), after checking its schema;
    any other document as it is."""
    if isinstance(doc, dict) and "schema" in doc and "items" in doc:
        assert re.fullmatch(r"ark-lattice\.[a-z-]+/1", doc["schema"]), doc["schema"]
        return doc["items"]
    return doc


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


# The nodes a test started, so that a failing test's report carries their logs (below): the logs
# live beside the homes, which the ``homes`` fixture removes when the test ends.
STARTED_NODES = pytest.StashKey[list[NodeProcess]]()
NODE_LOG_LINES = 80


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for node in item.stash.get(STARTED_NODES, []):
            lines = node.output().splitlines()[-NODE_LOG_LINES:]
            report.sections.append((f"log of the node in {node.home}", "\n".join(lines)))
    return report


@pytest.fixture
def start_node(request: pytest.FixtureRequest) -> Iterator[Callable[..., NodeProcess]]:
    started: list[NodeProcess] = []
    request.node.stash[STARTED_NODES] = started

    def start(home: Path, *extra: str, **options: Any) -> NodeProcess:
        """``options`` go to :class:`NodeProcess`: ``wait=False`` starts nodes side by side, each
        waited for after with ``wait_started()``."""
        node = NodeProcess(home, *extra, **options)
        started.append(node)
        return node

    yield start
    for node in started:
        node.close(grace=0)


def init_federation(homes: Callable[[str], Path], *names: str) -> dict[str, str]:
    """Create nodes that share one federation key; returns name -> node id.

    Setup, not the test: the same commands as ``run_cli`` would run, in-process through
    :class:`Cli`, which spares an interpreter start (about 0.5 s) per command.
    """
    ids: dict[str, str] = {}
    first: Path | None = None
    for name in names:
        home = homes(name)
        args = ["init", "--name", name]
        if first is not None:
            args += ["--federation-key-file", str(first / "federation.key")]
        Cli(home)(*args)
        first = first or home
        ids[name] = Cli(home).json("identity", "show")["node_id"]
    return ids


def set_tier(home: Path, peer_id: str, tier: str) -> None:
    """``peers add PEER --tier TIER``, in-process as :func:`init_federation` runs its commands
    (in a child process when called inside an event loop, where the command cannot run its own)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        Cli(home)("peers", "add", peer_id, "--tier", tier)
        return
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
