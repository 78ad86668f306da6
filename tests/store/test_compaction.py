"""store/compaction.py: ``ledger compact`` gives free pages back to the disk and changes no row.

Free pages are made the way migration 0004 makes them: a copy of the packets table, dropped. The
real migration of an old home is exercised through the CLI (tests/cli/test_ledger_compact.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ark_lattice import ledger
from ark_lattice.bench.home import build_home
from ark_lattice.errors import NotEnoughSpace
from ark_lattice.home import Home
from ark_lattice.identity import NodeId
from ark_lattice.node import LocalNode
from ark_lattice.processes import run_cli
from ark_lattice.store import compaction
from ark_lattice.store.compaction import Pages, space_needed
from ark_lattice.store.store import Store

FIXTURE = Path(__file__).parent / "data" / "home-0003.tar.gz"
MiB = 1024 * 1024


def pages(path: Path) -> Pages:
    conn = sqlite3.connect(path)
    try:
        return Pages(*conn.execute(
            "SELECT * FROM pragma_page_size(), pragma_page_count(), pragma_freelist_count()"
        ).fetchone())
    finally:
        conn.close()


def rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, in key order: what no compaction may change."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2').fetchall() for t in tables}
    finally:
        conn.close()


def leave_free_pages(path: Path) -> None:
    """What migration 0004 leaves: a table as large as the packets table, rebuilt and dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE scratch AS SELECT * FROM packets")
        conn.execute("DROP TABLE scratch")
    finally:
        conn.close()


def body_files(home: Path) -> dict[Path, tuple[int, int]]:
    root = home / "ledger.db-bodies"
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


async def build(home: Path, packets: int) -> None:
    """A verified home of ``packets`` 1 KiB packets and three bodies large enough for files."""
    await build_home(home, packets, 1024)
    async with await LocalNode.open(Home(home), unlock=True) as node:
        for i in range(3):
            await node.publish(topic="files", kind="document", body=bytes([i]) * (96 * 1024))
        await ledger.anchor(node.store, node.identity)


async def verify(home: Path) -> ledger.VerifyReport:
    node_id = NodeId.parse(Home(home).load_config().node_id)
    async with await Store.open_readonly(home / "ledger.db") as store:
        return await ledger.verify(store, node_id)


def test_worth_compacting_needs_a_quarter_of_the_file_and_64_mib():
    page = 4096
    big = compaction.RECLAIM_MIN_BYTES // page
    assert Pages(page, 4 * big, big).worth_compacting  # exactly both lines
    assert not Pages(page, 4 * big, big - 1).worth_compacting  # under 64 MiB
    assert not Pages(page, 4 * big + 4, big).worth_compacting  # under a quarter
    assert not Pages(page, 1000, 900).worth_compacting  # most of a small file: not worth a VACUUM
    # The compacted copy and the WAL each hold the used pages.
    assert space_needed(Pages(page, 1000, 400)) >= 2 * 600 * page


def test_compacting_gives_the_free_pages_back_and_changes_no_row(home):
    asyncio.run(build(home, 3000))
    path = home / "ledger.db"
    leave_free_pages(path)
    before, kept, files = pages(path), rows(path), body_files(home)
    assert before.free > 0 and len(files) == 3
    size_before = path.stat().st_size

    async def go() -> compaction.Compaction:
        async with await Store.open(path) as store:
            return await store.compact()

    result = asyncio.run(go())
    after = pages(path)
    assert after.free == 0 and result.after.free == 0
    assert (result.before.count, result.before.free) == (before.count, before.free)
    assert after.count == result.after.count <= before.count - before.free
    assert path.stat().st_size == after.count * after.size < size_before
    assert result.bytes_after < result.bytes_before and result.wal_truncated
    assert not (home / "ledger.db-wal").exists() or (home / "ledger.db-wal").stat().st_size == 0
    assert rows(path) == kept  # the chain, the signed head, packets, peers, checkpoints
    assert body_files(home) == files  # the very same files, never rewritten
    report = asyncio.run(verify(home))
    assert (report.packets, report.body_files) == (3003, 3)


def test_too_little_free_space_is_refused_before_anything_is_written(home):
    asyncio.run(build(home, 500))
    path = home / "ledger.db"
    leave_free_pages(path)
    before, kept = pages(path), rows(path)
    asked: list[Path] = []

    def free_space(directory: Path) -> int:
        asked.append(directory)
        return space_needed(before) - 1

    async def go() -> None:
        async with await Store.open(path) as store:
            await store.compact(free_space=free_space)

    with pytest.raises(NotEnoughSpace, match="needs about .* free in .* nothing was changed"):
        asyncio.run(go())
    assert asked == [home.absolute()]  # the ledger's own file system: the temporary copy goes there
    assert pages(path) == before and rows(path) == kept


def test_nothing_to_give_back_runs_no_vacuum(home):
    asyncio.run(build(home, 10))
    path = home / "ledger.db"

    async def go() -> compaction.Compaction:
        async with await Store.open(path) as store:
            # Asked for space only if it would VACUUM.
            return await store.compact(free_space=lambda _: pytest.fail("no VACUUM expected"))

    before = pages(path)
    assert before.free == 0
    result = asyncio.run(go())
    assert result.pages_freed == 0 and pages(path) == before


@pytest.fixture
def old_home(home: Path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(home.parent, filter="data")
    return home.parent / "home"


def test_a_migration_that_leaves_many_free_pages_says_so_once(old_home, caplog, monkeypatch):
    path = old_home / "ledger.db"

    async def open_and_close() -> None:
        async with await Store.open(path):
            pass

    # The fixture is small: its migration frees a few pages, under the real lines.
    monkeypatch.setattr(compaction, "RECLAIM_MIN_BYTES", 64 * 1024)
    monkeypatch.setattr(compaction, "RECLAIM_MIN_SHARE", 0.2)
    with caplog.at_level(logging.WARNING, logger="ark_lattice.store"):
        asyncio.run(open_and_close())  # migrates 0003 -> 0005
        notices = [r.getMessage() for r in caplog.records if "ledger compact" in r.getMessage()]
        assert len(notices) == 1
        assert "after migration 0005_events_subject_partial" in notices[0] and str(path) in notices[0]
        caplog.clear()
        asyncio.run(open_and_close())  # nothing migrates: nothing said, however many free pages
        assert not [r for r in caplog.records if "ledger compact" in r.getMessage()]
    assert pages(path).free > 0


def test_the_notice_stays_quiet_under_the_lines(old_home, caplog):
    async def open_and_close() -> None:
        async with await Store.open(old_home / "ledger.db"):
            pass

    with caplog.at_level(logging.WARNING, logger="ark_lattice.store"):
        asyncio.run(open_and_close())
    assert not [r for r in caplog.records if "ledger compact" in r.getMessage()]


def test_kill_9_in_the_middle_of_compacting_loses_nothing(home):
    """Killed while the compacted pages go into the WAL (uncommitted): the ledger opens, verifies
    and holds every row, and a second compaction finishes the job."""
    asyncio.run(build(home, 12000))
    path, wal = home / "ledger.db", home / "ledger.db-wal"
    leave_free_pages(path)
    before, kept = pages(path), rows(path)
    child = subprocess.Popen(
        [sys.executable, "-m", "ark_lattice", "--home", str(home), "ledger", "compact"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        # The copy-back writes the used pages to the WAL; kill once a quarter of them are there.
        while child.poll() is None:
            if wal.exists() and wal.stat().st_size > before.used_bytes // 4:
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.001)  # a poll interval, not a wait for time to pass
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, "compaction ended before the kill: make the ledger larger"
    assert rows(path) == kept and pages(path) == before  # the uncommitted frames count for nothing
    assert run_cli(home, "ledger", "verify").returncode == 0
    done = run_cli(home, "ledger", "compact")
    assert done.returncode == 0, done.stderr
    assert pages(path).free == 0 and rows(path) == kept
    assert run_cli(home, "ledger", "verify").returncode == 0


# Killed once the VACUUM has committed: before any checkpoint (the compacted ledger only in the WAL),
# or after the checkpoint SQLite runs at commit but before ours empties the WAL.
_KILLED_AFTER_COMMIT = """
import asyncio, os, signal, sys
from pathlib import Path
from ark_lattice.store import compaction
from ark_lattice.store.store import Store

committed = compaction.retry_busy

async def vacuum_then_die(*args, **kwargs):
    await committed(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

compaction.retry_busy = vacuum_then_die

async def main():
    async with await Store.open(Path(sys.argv[1])) as store:
        await store._writer.execute(f"PRAGMA wal_autocheckpoint = {sys.argv[2]}")
        await store.compact()

asyncio.run(main())
"""


@pytest.mark.parametrize("autocheckpoint", [0, 1000], ids=["before-any-checkpoint", "before-truncate"])
def test_kill_9_after_the_vacuum_committed_keeps_the_compacted_ledger(home, autocheckpoint):
    asyncio.run(build(home, 2000))
    path, wal = home / "ledger.db", home / "ledger.db-wal"
    leave_free_pages(path)
    kept = rows(path)
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_COMMIT, str(path), str(autocheckpoint)],
        capture_output=True, timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert wal.stat().st_size > 0  # the WAL was not emptied: the state this test is about
    assert rows(path) == kept and pages(path).free == 0  # committed, compacted, every row
    assert run_cli(home, "ledger", "verify").returncode == 0
    done = run_cli(home, "ledger", "compact", "--json")
    assert done.returncode == 0, done.stderr
    assert pages(path).free == 0 and path.stat().st_size == pages(path).file_bytes


def test_a_reader_on_an_older_snapshot_delays_only_the_shrinking(home):
    """Another process reading (``ledger log --follow``, a backup) keeps its snapshot: the VACUUM
    still commits, and the WAL and the file shrink at a checkpoint after the reader is done."""
    asyncio.run(build(home, 500))
    path = home / "ledger.db"
    leave_free_pages(path)
    kept = rows(path)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    events = reader.execute("SELECT count(*) FROM events").fetchone()[0]  # the snapshot starts here

    async def go() -> compaction.Compaction:
        async with await Store.open(path) as store:
            return await store.compact()

    try:
        result = asyncio.run(go())
        assert not result.wal_truncated and result.after.free == 0
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == events  # unharmed
    finally:
        reader.close()
    assert rows(path) == kept  # the last connection to close checkpoints the WAL into the file
    assert pages(path).free == 0 and path.stat().st_size == pages(path).file_bytes
