"""The node-process helpers shared by the tests and the benches."""

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ark_lattice.processes import NodeProcess, NodeProcessError, cli_command, wait_for


def test_wait_for_returns_the_first_value_that_holds():
    answers: Iterator[object] = iter([None, 0, {}, "ready", "later"])
    assert wait_for(lambda: next(answers), timeout=5) == "ready"


def test_wait_for_gives_up_at_its_deadline_and_says_what_it_waited_for():
    polls = []
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="0.3 s waiting for the moon"):
        wait_for(lambda: polls.append(1), timeout=0.3, what="the moon")
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.6  # it polls up to the deadline, never far past it
    assert len(polls) >= 4  # and keeps polling: 10 ms, doubling up to 200 ms


def test_wait_for_lets_the_condition_fail():
    def broken():
        raise KeyError("boom")

    with pytest.raises(KeyError):
        wait_for(broken, timeout=5)


def test_cli_command_runs_this_interpreter_after_a_prefix(tmp_path):
    assert cli_command(tmp_path, "federation", "status", prefix=["ip", "netns", "exec", "h1"]) == [
        "ip", "netns", "exec", "h1", sys.executable, "-m", "ark_lattice", "--home", str(tmp_path),
        "federation", "status",
    ]
    assert cli_command(None, "bench", "sync", "--help")[-4:] == ["ark_lattice", "bench", "sync", "--help"]


def test_a_node_that_exits_fails_the_wait_at_once_with_its_output(homes):
    started = time.monotonic()
    with pytest.raises(NodeProcessError, match="not an IPv4 multicast group"):
        NodeProcess(homes("a"), "--beacon-group", "nonsense", timeout=60)
    assert time.monotonic() - started < 30  # not the 60 s deadline


def test_importing_the_helpers_is_light():
    """The benches import it from the CLI; no event loop, codec or CLI framework comes with it."""
    code = (
        "import sys, ark_lattice.processes\n"
        "heavy = {'asyncio', 'typer', 'rich', 'websockets', 'nacl', 'cbor2', 'aiosqlite', 'zeroconf'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
