"""Long listings stream, and page only for a person at a terminal (cli/paging.py)."""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ark_lattice.cli import paging
from ark_lattice.cli.output import listing
from ark_lattice.cli.paging import pager_command, write_listing


def test_a_pager_only_on_a_terminal_and_never_with_no_pager() -> None:
    assert pager_command(stdout_tty=False, no_pager=False, environ={}) is None
    assert pager_command(stdout_tty=False, no_pager=False, environ={"PAGER": "less"}) is None
    assert pager_command(stdout_tty=True, no_pager=True, environ={"PAGER": "less"}) is None
    assert pager_command(stdout_tty=True, no_pager=False, environ={}) == ["less"]
    assert pager_command(stdout_tty=True, no_pager=False, environ={"PAGER": "most -s"}) == ["most", "-s"]
    for none in ("", "  ", "cat", "'unbalanced"):
        assert pager_command(stdout_tty=True, no_pager=False, environ={"PAGER": none}) is None


class _Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)


async def _aiter(values: list[Any]) -> Any:
    for value in values:
        yield value


@pytest.mark.parametrize("n", [0, 1, 3])
def test_a_streamed_listing_is_byte_for_byte_the_whole_one(n: int) -> None:
    docs = [{"id": f"{i:064x}", "meta": {"k": [1, {"z": None}]}, "topic": "t/ü\n"} for i in range(n)]
    for extra in ({}, {"more": True, "saved": False}):
        out = _Out()
        assert asyncio.run(write_listing(out, "packets", _aiter(docs), **extra)) == n  # type: ignore[arg-type]
        assert out.text == json.dumps(listing("packets", docs, **extra), indent=2, sort_keys=True) + "\n"


def test_packets_list_json_is_what_it_was(cli: Any) -> None:
    """The streamed JSON is the document the whole-list code printed, byte for byte."""
    from ark_lattice.cli.packets import packet_json
    from ark_lattice.home import Home
    from ark_lattice.store.store import Store

    cli("init")
    for i in range(5):
        cli("packets", "publish", "--topic", f"t/{i % 2}", "-", input=b"body %d" % i)

    async def before(**options: Any) -> str:
        async with await Store.open(Home(cli.home).ledger_path) as store:
            rows = await store.list_packets(**options)
        return json.dumps(listing("packets", [packet_json(r) for r in rows]), indent=2, sort_keys=True) + "\n"

    assert cli("packets", "list", "--json").stdout == asyncio.run(before())
    assert cli("packets", "list", "--json", "--topic", "t/1").stdout == asyncio.run(before(topic="t/1"))
    assert cli("packets", "list", "--json", "--limit", "2").stdout == asyncio.run(before(limit=2))
    table = cli("packets", "list", "--limit", "2").stdout
    assert table.splitlines()[-1] == "2 packet(s)"
    assert max(len(line) for line in table.splitlines()) <= 80


def test_the_table_goes_to_the_pager_on_a_terminal(cli: Any, monkeypatch: Any, tmp_path: Path) -> None:
    cli("init")
    cli("packets", "publish", "--topic", "t", "-", input=b"x")
    seen = tmp_path / "paged.txt"
    pager = f"{sys.executable} -c 'import sys; open(sys.argv[1], \"w\").write(sys.stdin.read())' {seen}"
    monkeypatch.setenv("PAGER", pager)
    monkeypatch.setattr(paging, "_stdout_tty", lambda: True)
    out = cli("packets", "list").stdout
    assert out == "" and "1 packet(s)" in seen.read_text()
    seen.unlink()
    assert "1 packet(s)" in cli("packets", "list", "--no-pager").stdout and not seen.exists()
    assert json.loads(cli("packets", "list", "--json").stdout)["items"] and not seen.exists()
