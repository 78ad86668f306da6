"""Real node processes: start, status, clean stop, kill -9 safety, concurrent writers."""

import json
import signal
import stat
import subprocess
import sys
import textwrap
from typing import Any

from ark_lattice.processes import cli_command, run_cli, wait_for


def test_start_creates_the_node_and_status_reports_it(homes, start_node):
    home = homes("a")
    node = start_node(home, "--name", "alpha")
    status = node.status
    assert status["running"] is True and status["name"] == "alpha"
    assert status["listen"].startswith("ws://127.0.0.1:") and not status["listen"].endswith(":0")
    assert status["packets"] == 0 and status["events"] >= 1
    assert stat.S_IMODE((home / "control.sock").stat().st_mode) == 0o600
    human = run_cli(home, "federation", "status").stdout.decode()
    assert "alpha" in human and status["listen"] in human
    # A second node on the same home is refused with one line.
    second = subprocess.run(cli_command(home, "federation", "start", "--port", "0", "--bind", "127.0.0.1"),
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and "already running" in second.stderr
    assert node.stop(signal.SIGTERM) == 0
    assert not (home / "control.sock").exists()
    assert "stopped" in node.output()
    assert run_cli(home, "federation", "status").returncode == 3


def test_sigint_stops_cleanly_and_the_ledger_verifies(homes, start_node):
    home = homes("a")
    node = start_node(home)
    assert node.stop(signal.SIGINT) == 0
    result = run_cli(home, "ledger", "verify", "--json")
    assert result.returncode == 0, result.stderr


PUBLISHER = textwrap.dedent(
    """
    import asyncio, sys
    from ark_lattice.home import Home
    from ark_lattice.node import LocalNode

    async def main():
        node = await LocalNode.open(Home(sys.argv[1]), unlock=True)
        i = 0
        while True:
            p = await node.publish(topic="stream", kind="note", body=b"%d" % i)
            print(p.hex_id, flush=True)   # acknowledged: the transaction has committed
            i += 1

    asyncio.run(main())
    """
)


def test_kill_9_during_publishes_loses_nothing_acknowledged(homes):
    home = homes("a")
    assert run_cli(home, "init").returncode == 0
    acknowledged = []
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(home)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None  # stdout=PIPE
        for _ in range(50 + 37 * round_):  # kill at a different point each round
            acknowledged.append(proc.stdout.readline().strip())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    listed = json.loads(run_cli(home, "packets", "list", "--json").stdout)["items"]
    held = {p["id"] for p in listed}
    assert set(acknowledged) <= held
    verify = run_cli(home, "ledger", "verify", "--json")
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["packets"] == len(held)


def test_cli_and_running_node_writing_together_never_fork_the_chain(homes, start_node):
    home = homes("a")
    # The node anchors every 50 ms: it writes checkpoints while the CLI publishes.
    node = start_node(home, "--anchor-interval", "0.05")
    writers = [
        subprocess.Popen([sys.executable, "-c", PUBLISHER, str(home)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for w in writers:
        assert w.stdout is not None  # stdout=PIPE
        for _ in range(150):
            assert w.stdout.readline()
    def events() -> list[dict[str, Any]]:
        return list(json.loads(run_cli(home, "ledger", "log", "--limit", "50", "--json").stdout)["items"])

    wait_for(lambda: any(e["kind"] == "checkpoint" for e in events()),
             what="the node to anchor while writers run")
    for w in writers:
        w.kill()
        w.wait()
        assert w.stdout is not None
        w.stdout.close()
    node.stop()
    verify = run_cli(home, "ledger", "verify", "--json")
    assert verify.returncode == 0, verify.stderr
    report = json.loads(verify.stdout)
    assert report["packets"] >= 300 and report["checkpoints"] >= 1
