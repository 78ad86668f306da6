"""The node's log file: both formats read back alike, rotation bounded, a follower that survives it."""

from __future__ import annotations

import json
import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

import pytest

from ark_lattice import logfile
from ark_lattice.errors import UsageError
from ark_lattice.logfile import LogFollower, LogFormat


@pytest.fixture
def node_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger("ark_lattice")
    saved = (root.handlers[:], root.level, root.propagate)
    yield root
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level, root.propagate = saved


def test_text_json_and_old_lines_read_as_one_log():
    lines = [
        "2025-01-02 03:04:05,678 INFO ark_lattice.node: from before --log-format",
        "2025-01-02T03:04:06.000Z WARNING ark_lattice.peering: peer x misbehaved: malformed: bad",
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        json.dumps({"time": "2025-01-02T03:04:07.000Z", "level": "ERROR", "logger": "ark_lattice.control",
                    "message": "control command status failed\nTraceback …"}),
    ]
    entries = list(logfile.parse_lines(lines))
    assert [e.level for e in entries] == ["INFO", "WARNING", "ERROR"]
    assert entries[0].time.endswith("Z") and entries[0].message == "from before --log-format"
    assert entries[1].message.endswith('bad\nTraceback (most recent call last):\n  File "x.py", line 1')
    assert entries[2].to_json() == {
        "time": "2025-01-02T03:04:07.000Z", "level": "ERROR", "logger": "ark_lattice.control",
        "message": "control command status failed\nTraceback …",
    }
    assert entries[1].to_text().startswith("2025-01-02T03:04:06.000Z WARNING ark_lattice.peering: peer x")


def test_a_tail_that_began_in_an_earlier_read_is_kept_as_is():
    (orphan,) = logfile.parse_lines(["  continued from a record not read"])
    assert orphan.to_text() == "  continued from a record not read" and orphan.levelno == logging.NOTSET


def test_levels():
    assert logfile.parse_level("warn") == logging.WARNING
    assert logfile.parse_level("Debug") == logging.DEBUG
    with pytest.raises(UsageError, match="unknown log level 'loud'"):
        logfile.parse_level("loud")


@pytest.mark.parametrize("fmt", list(LogFormat))
def test_the_node_writes_what_the_reader_reads(tmp_path, node_logger, fmt):
    logfile.setup(tmp_path, level=logging.WARNING, fmt=fmt)
    rotating = [h for h in node_logger.handlers if isinstance(h, logging.handlers.RotatingFileHandler)]
    assert len(rotating) == 1  # size-bounded: 5 MiB a file, five old files kept
    assert (rotating[0].maxBytes, rotating[0].backupCount) == (logfile.MAX_BYTES, logfile.BACKUPS) == (
        5 * 1024 * 1024, 5
    )
    log = logging.getLogger("ark_lattice.test")
    log.info("below the level")
    log.warning("peer %s is slow", "abc")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    for handler in node_logger.handlers:
        handler.flush()
    raw = (tmp_path / "node.log").read_text()
    if fmt is LogFormat.JSON:
        assert all(json.loads(line)["logger"] == "ark_lattice.test" for line in raw.splitlines())
    follower = LogFollower(tmp_path / "node.log")
    entries = logfile.last_entries(tmp_path, current=follower.read())
    follower.close()
    assert [(e.level, e.message.splitlines()[0]) for e in entries] == [
        ("WARNING", "peer abc is slow"), ("ERROR", "it failed")
    ]
    assert "ValueError: boom" in entries[1].message


def write(path: Path, *records: tuple[str, str]) -> None:
    with open(path, "a") as f:
        for level, message in records:
            f.write(f"2025-01-02T03:04:05.000Z {level} ark_lattice.node: {message}\n")


def test_last_entries_reach_into_rotated_files(tmp_path):
    write(tmp_path / "node.log.2", ("INFO", "oldest"), ("ERROR", "old error"))
    write(tmp_path / "node.log.1", ("INFO", "older"), ("WARNING", "older warning"))
    write(tmp_path / "node.log", ("INFO", "newest"))
    follower = LogFollower(tmp_path / "node.log")
    current = follower.read()
    follower.close()
    warnings = logfile.last_entries(tmp_path, level=logging.WARNING, count=5, current=current)
    messages = [e.message for e in warnings]
    assert messages == ["old error", "older warning"]
    every = [e.message for e in logfile.last_entries(tmp_path, count=3, current=current)]
    assert every == ["older", "older warning", "newest"]
    assert logfile.last_entries(tmp_path, count=0, current=current) == []


def test_the_follower_goes_on_across_rotation_and_truncation(tmp_path):
    path = tmp_path / "node.log"
    follower = LogFollower(path)
    assert follower.read() == []  # no file yet: nothing, no error
    write(path, ("INFO", "one"))
    assert [e.message for e in logfile.parse_lines(follower.read())] == ["one"]
    with open(path, "a") as f:
        f.write("2025-01-02T03:04:05.000Z INFO ark_lattice.node: half")
    assert follower.read() == []  # an incomplete line waits for its end
    with open(path, "a") as f:
        f.write(" a line\n")
    assert follower.read() == ["2025-01-02T03:04:05.000Z INFO ark_lattice.node: half a line"]
    # Rotation: what was written to the old file before the rename is still read, then the new one.
    write(path, ("INFO", "last in the old file"))
    path.rename(tmp_path / "node.log.1")
    write(path, ("INFO", "first in the new file"))
    assert [e.message for e in logfile.parse_lines(follower.read())] == [
        "last in the old file", "first in the new file"
    ]
    # Truncation: start again from the top.
    path.write_text("")
    write(path, ("ERROR", "after truncation"))
    assert [e.message for e in logfile.parse_lines(follower.read())] == ["after truncation"]
    follower.close()



def test_library_loggers_reach_the_log_as_one_line_each_at_a_bounded_rate(tmp_path) -> None:
    import io
    import logging

    from ark_lattice import logfile

    logfile.setup(tmp_path, level=logging.INFO)
    console = io.StringIO()
    library = logging.getLogger("websockets.server")
    handlers = logging.getLogger("websockets").handlers
    assert logging.getLogger("asyncio").handlers == handlers == logging.getLogger("ark_lattice").handlers
    handlers[0].setStream(console)  # type: ignore[attr-defined]
    try:
        raise AssertionError("internal state")
    except AssertionError:
        for n in range(200):  # a peer makes the library say the same thing, fast
            library.error("unexpected internal error %d", n, exc_info=True)
    logging.getLogger("ark_lattice.node").warning("ours %d", 1)
    for handler in handlers:
        handler.flush()
    out = console.getvalue()
    assert "Traceback" not in out
    lines = out.splitlines()
    library_lines = [line for line in lines if "websockets.server" in line]
    assert len(library_lines) == logfile.REPEATS
    assert library_lines[0].endswith("unexpected internal error 0 (AssertionError: internal state)")
    assert any("ours 1" in line for line in lines)
    written = (tmp_path / logfile.LOG_NAME).read_text()
    assert "Traceback" not in written and written.count("websockets.server") == logfile.REPEATS
    for handler in handlers:
        handler.close()
    for name in ("ark_lattice", *logfile.LIBRARY_LOGGERS):
        logging.getLogger(name).handlers[:] = []
