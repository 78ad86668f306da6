"""The status view rendered from a recorded status into a fixed-size console, against snapshots.

The recorded status (data/watch_status.json) has two snapshots two seconds apart: a session
moving packets, a quiet one with a past error, one still in its handshake (no peer yet), dial
targets waiting for three reasons, an isolated peer and two policy denials. To accept a changed
view on purpose: ``ARK_LATTICE_UPDATE_SNAPSHOTS=1 pytest tests/cli/test_watch.py`` and read the diff.
"""

from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ark_lattice.cli.watch import plain_line, render, render_not_running
from ark_lattice.status import Rates, session_rates, waiting_targets

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / "watch_status.json").read_text())
    return doc


def rendered(renderable: Any, width: int) -> str:
    console = Console(width=width, record=True, force_terminal=False, file=io.StringIO())
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def check_snapshot(text: str, name: str) -> None:
    path = DATA / name
    if os.environ.get("ARK_LATTICE_UPDATE_SNAPSHOTS"):
        path.write_text(text)
    assert text == path.read_text()


def test_the_live_view_matches_its_snapshot(recorded):
    view = render(recorded["current"], now=recorded["now"], previous=recorded["previous"], live=True)
    text = rendered(view, 100)
    check_snapshot(text, "watch_live_100.txt")
    # What the snapshot must show, whatever its layout: rates from the two snapshots, the peer of
    # each session or the remote address of the one in its handshake, and every section.
    assert "25.0 / 0.5" in text and "50.0 KiB / 512 B" in text
    assert "192.168.1.77:40022" in text and "handshake" in text
    assert "too_large: message over the size limit" in text
    for section in ("sessions", "not connected", "isolated peers", "recent policy denials"):
        assert section in text
    assert "blocked by peer" in text and "not dialled yet" in text
    assert "ws://192.168.1.20:7467" not in text.split("not connected")[1]  # connected, not waiting
    assert "last checkpoint 1m35s ago" in text and "46.0 MiB" in text


def test_the_one_shot_view_shows_totals_and_no_python_values(recorded):
    text = rendered(render(recorded["current"], now=recorded["now"]), 80)
    check_snapshot(text, "status_80.txt")
    assert "1,250 / 341" in text
    for repr_ in ("None", "True", "False", "{'"):
        assert repr_ not in text


def test_the_first_live_frame_has_no_rates_yet(recorded):
    text = rendered(render(recorded["current"], now=recorded["now"], live=True), 100)
    assert "- / -" in text and "25.0" not in text


def test_a_status_from_an_older_node_still_renders(recorded):
    old = {k: v for k, v in recorded["current"].items() if k not in ("ledger", "denials", "now")}
    for conn in old["connections"]:
        del conn["last_error"], conn["last_error_at"]
    text = rendered(render(old, now=recorded["now"]), 100)
    assert "ledger 20,460 events" in text and "recent policy denials" not in text


def test_free_pages_worth_a_compaction_are_shown_and_others_are_not(recorded):
    status = copy.deepcopy(recorded["current"])
    status["ledger"].update(bytes=800 * 1024 * 1024, free_bytes=560 * 1024 * 1024)  # a migrated ledger
    text = " ".join(rendered(render(status, now=recorded["now"]), 100).split())  # however it wraps
    assert "800.0 MiB (560.0 MiB free pages: ledger compact), last checkpoint" in text
    status["ledger"]["free_bytes"] = 60 * 1024 * 1024  # under 64 MiB: the working room SQLite reuses
    assert "free pages" not in rendered(render(status, now=recorded["now"]), 100)
    status["ledger"].update(bytes=4096 * 1024 * 1024, free_bytes=1000 * 1024 * 1024)  # under a quarter
    assert "free pages" not in rendered(render(status, now=recorded["now"]), 100)


def test_not_running(recorded):
    text = rendered(render_not_running("/srv/ark", recorded["now"], recorded["now"] - 75), 100)
    assert text == "the node in /srv/ark is not running (for 1m15s); still watching\n"


def test_plain_lines_for_a_pipe(recorded):
    line = plain_line(recorded["current"], now=recorded["now"], previous=recorded["previous"])
    assert line == (
        "time=2026-01-01T12:00:00Z node=alpha up=7400s sessions=3 open=2 pkt_in=25.0/s pkt_out=0.5/s "
        "bytes_in=51200/s bytes_out=512/s waiting=3 isolated=1 quarantined_peers=0 alerts=0 denials=2 "
        "events=20460 "
        "ledger_bytes=48234496 checkpoint_age=95s"
    )
    first = plain_line(recorded["current"], now=recorded["now"])
    assert "pkt_in=- " in first and "\x1b" not in first
    assert plain_line(None, now=recorded["now"]) == "time=2026-01-01T12:00:00Z running=no"


def test_rates_need_two_snapshots_of_one_run(recorded):
    prev, cur = recorded["previous"], recorded["current"]
    rates = session_rates(prev, cur)
    assert rates[("initiator", "ws://192.168.1.20:7467")] == Rates(25.0, 0.5, 51200.0, 512.0)
    assert ("responder", "192.168.1.77:40022") not in rates  # not in the previous snapshot
    restarted = {**cur, "uptime_s": 3.0}
    assert session_rates(prev, restarted) == {}
    other_node = {**prev, "node_id": "someone-else"}
    assert session_rates(other_node, cur) == {}
    reset = copy.deepcopy(cur)
    reset["connections"][0]["packets_in"] = 5  # a new session at the same address
    assert ("initiator", "ws://192.168.1.20:7467") not in session_rates(prev, reset)


def test_waiting_targets_say_why(recorded):
    reasons = {t["url"]: t["reason"] for t in waiting_targets(recorded["current"])}
    assert reasons == {
        "ws://192.168.1.31:7467": "blocked by peer",
        "ws://10.0.0.7:7467": "[Errno 111] Connect call failed ('10.0.0.7', 7467)",
        "ws://lab.example:7467": "not dialled yet",
    }


def test_peers_held_by_an_alert_are_listed_with_the_time_left(recorded):
    from rich.console import Console

    held = {"peer": "qe4xodvipulv6vvdkrtmgtd6ztfy3curwtxdpis56yhvxd6jwoka", "until": recorded["now"] + 1800,
            "accusers": ["a" * 52], "alerts": ["ab" * 32]}
    status = {**recorded["current"], "quarantines": [held]}
    console = Console(width=100, record=True, force_terminal=False)
    console.print(render(status, now=recorded["now"]))
    text = console.export_text()
    assert "quarantined peers (alerts)" in text and "qe4xodvipulv" in text and "30m" in text
    assert "quarantined_peers=1" in plain_line(status, now=recorded["now"])


def test_recent_alerts_are_listed_newest_first_as_plain_text(recorded):
    from rich.console import Console

    alert = {"received_at": int((recorded["now"] - 90) * 1000), "severity": "critical",
             "author": "sree5i2gbi5tcfnm", "about": "mcw36f4txwxcmoum", "message": "c is [bold]exfiltrating"}
    status = {**recorded["current"], "alerts": [alert]}
    console = Console(width=100, record=True, force_terminal=False)
    console.print(render(status, now=recorded["now"]))
    text = console.export_text()
    assert "recent alerts" in text and "critical" in text and "mcw36f4t" in text
    assert "[bold]" in text  # a peer's text is never console markup
    assert "alerts=1" in plain_line(status, now=recorded["now"])
