"""The progress bar: drawn on a terminal, absent from pipes and --json; publishing many files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ark_lattice.cli import progress
from ark_lattice.cli.progress import progress_bar

from conftest import Cli

BAR = "━"


def terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(force_terminal=True, file=screen, width=100), screen


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Make the CLI believe stderr is a terminal, drawing into the returned buffer."""
    console, buffer = terminal()
    monkeypatch.setattr(progress, "stderr_terminal", lambda: console)
    return buffer


def test_a_terminal_gets_a_bar_with_counts_and_eta() -> None:
    console, screen = terminal()
    with progress_bar("verifying", total=4, console=console) as bar:
        assert bar.shown
        for _ in range(4):
            bar.advance()
    drawn = screen.getvalue()
    assert "verifying" in drawn and BAR in drawn
    assert "4/4" in drawn and "ETA" in drawn


def test_a_total_given_later_and_descriptions_are_not_markup() -> None:
    console, screen = terminal()
    with progress_bar("publishing", console=console) as bar:
        bar.update(total=2, description="publishing notes[1].txt")
        bar.update(completed=2)
    assert "publishing notes[1].txt" in screen.getvalue() and "2/2" in screen.getvalue()


def test_nothing_is_drawn_off_a_terminal_or_with_json() -> None:
    pipe = io.StringIO()
    with progress_bar("verifying", total=3, console=Console(file=pipe)) as bar:
        assert not bar.shown
        bar.update(total=5, description="x")
        bar.advance()
    assert pipe.getvalue() == ""
    console, screen = terminal()
    with progress_bar("verifying", total=3, quiet=True, console=console) as bar:
        assert not bar.shown
        bar.advance()
    assert screen.getvalue() == ""


def test_only_a_real_terminal_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # FORCE_COLOR makes rich draw into pipes; the bar must still stay out of them.
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress.stderr_terminal() is None


def published(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / ".git").mkdir()
    (docs / "b.txt").write_bytes(b"bee")
    (docs / "a.txt").write_bytes(b"a")
    (docs / "sub" / "c.md").write_bytes(b"sea!")
    (docs / ".git" / "objects").write_bytes(b"hidden")
    (docs / ".hidden").write_bytes(b"hidden")
    return docs


def test_json_output_has_no_progress_through_the_runner(cli: Cli, tmp_path: Path) -> None:
    cli("init")
    docs = published(tmp_path)
    result = cli("packets", "publish", "--topic", "docs", str(docs), "--json")
    assert result.stderr == ""
    rows = json.loads(result.stdout)["items"]
    assert [Path(r["path"]).relative_to(docs).as_posix() for r in rows] == ["a.txt", "b.txt", "sub/c.md"]
    result = cli("ledger", "verify", "--json")
    assert result.stderr == "" and json.loads(result.stdout)["ok"]
    result = cli("bench", "reconcile", "--size", "100", "--json")
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 16 and all(json.loads(line)["name"].startswith("reconcile.") for line in lines)


def test_json_output_has_no_progress_even_on_a_terminal(
    cli: Cli, tmp_path: Path, screen: io.StringIO
) -> None:
    cli("init")
    docs = published(tmp_path)
    result = cli("packets", "publish", "--topic", "docs", str(docs), "--json")
    assert len(json.loads(result.stdout)["items"]) == 3
    assert json.loads(cli("ledger", "verify", "--json").stdout)["events"] == 4
    bench = cli("bench", "reconcile", "--size", "100", "--json").stdout.splitlines()
    assert len(bench) == 16 and all(json.loads(line) for line in bench)
    assert screen.getvalue() == ""


def test_a_terminal_sees_the_bar_and_stdout_only_the_result(
    cli: Cli, tmp_path: Path, screen: io.StringIO
) -> None:
    cli("init")
    docs = published(tmp_path)
    out = cli("packets", "publish", "--topic", "docs", str(docs)).stdout
    assert [line.split("  ")[1] for line in out.splitlines()] == [
        str(docs / "a.txt"), str(docs / "b.txt"), str(docs / "sub" / "c.md")
    ]
    assert "publishing c.md" in screen.getvalue() and "3/3" in screen.getvalue() and "ETA" not in out
    screen.seek(0)
    screen.truncate()
    out = cli("ledger", "verify").stdout
    assert out.startswith("ledger OK: 4 events") and "ETA" not in out
    assert "verifying the ledger" in screen.getvalue() and "4/4" in screen.getvalue()
    screen.seek(0)
    screen.truncate()
    out = cli("bench", "reconcile", "--size", "100").stdout
    assert "reconcile.d1000.bytes" in out and "ETA" not in out
    assert "reconcile n=100, d=1,000" in screen.getvalue() and "4/4" in screen.getvalue()


def test_one_file_or_stdin_publishes_as_before(cli: Cli, tmp_path: Path) -> None:
    cli("init")
    src = tmp_path / "one.txt"
    src.write_bytes(b"hello")
    out = cli("packets", "publish", "--topic", "t", str(src)).stdout
    assert len(out.strip()) == 64 and out.count("\n") == 1
    assert set(cli.json("packets", "publish", "--topic", "t", "-")) == {"id", "topic", "size", "delivered"}


def test_several_files_share_the_options_and_each_is_one_packet(cli: Cli, tmp_path: Path) -> None:
    cli("init")
    base = cli("packets", "publish", "--topic", "t", "-", input=b"base").stdout.strip()
    docs = published(tmp_path)
    rows = cli.json(
        "packets", "publish", "--topic", "docs/x", "--kind", "document", "--depends", base[:12],
        str(docs / "sub"), str(docs / "b.txt"), str(docs / "sub" / "c.md"),
    )
    assert [(Path(r["path"]).name, r["size"]) for r in rows] == [("b.txt", 3), ("c.md", 4)]
    for row in rows:
        shown = cli.json("packets", "show", row["id"])
        assert shown["topic"] == "docs/x" and shown["kind"] == "document" and shown["depends"] == [base]


def one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return str(lines[0])


def test_publishing_many_refuses_what_it_cannot_publish(cli: Cli, tmp_path: Path) -> None:
    cli("init")
    docs = published(tmp_path)
    publish = ("packets", "publish", "--topic", "t")
    assert "stdin" in one_line_error(cli(*publish, str(docs / "a.txt"), "-", ok=False), 2)
    line = one_line_error(cli(*publish, str(docs / "a.txt"), str(tmp_path / "missing"), ok=False), 2)
    assert "cannot read" in line and "missing" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no files" in one_line_error(cli(*publish, str(empty), ok=False), 2)
    assert cli.json("packets", "list") == []  # nothing half-published


def test_verify_shows_no_progress_in_a_pipe_and_its_packet_pass_on_a_terminal(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    from contextlib import contextmanager

    from ark_lattice.bench.home import build_home

    asyncio.run(build_home(cli.home, 1500, 16))  # a valid home: signed, stored through the store
    result = cli("ledger", "verify")
    assert result.stdout.startswith("ledger OK: 1501 events, 1500 packets") and result.stderr == ""

    updates: list[dict[str, Any]] = []

    class Recorder:  # what a terminal's bar is told (its drawing is rich's, at 5 Hz)
        shown = True

        def update(self, **change: Any) -> None:
            updates.append(change)

    @contextmanager
    def recorded(description: str, **_: Any) -> Any:
        yield Recorder()

    monkeypatch.setattr(progress, "progress_bar", recorded)
    assert cli("ledger", "verify").stdout.startswith("ledger OK: 1501 events")
    assert updates[0] == {"total": 1501}
    assert {"description": "verifying packet signatures", "total": 1500, "completed": 1000} in updates
    assert updates[-1] == {"description": "verifying the ledger", "total": 1501, "completed": 1501}
