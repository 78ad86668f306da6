"""The node's log: where a running node writes it, in which format, and how it is read back.

A running node logs to the console (systemd captures it) and to ``logs/node.log`` in its home. The
file is rotated by size: past :data:`MAX_BYTES` (5 MiB) it becomes ``node.log.1``, older files
shift up to ``node.log.5`` and the one after is deleted, so the log never takes more than
``(BACKUPS + 1) × MAX_BYTES`` = 30 MiB (docs/operator.md).

Each record is one line, in one of two formats (``federation start --log-format``); the reader
tells them apart line by line, so a file written by runs in both formats reads as one log:

- text: ``2025-01-02T03:04:05.678Z INFO ark_lattice.node: listening on …`` (UTC, RFC 3339);
- JSON: ``{"time": "2025-01-02T03:04:05.678Z", "level": "INFO", "logger": "…", "message": "…"}``.

A text record's continuation lines (a traceback) belong to the record above them. Lines in the
older format (``2025-01-02 03:04:05,678 INFO …``, local time) are read too.

:class:`LogFollower` reads what is appended to the file, as ``tail -F`` does: when the file is
rotated (replaced) it finishes the old one and goes on from the start of the new one; when it is
truncated it starts again from the top.
"""

from __future__ import annotations

import enum
import json
import logging
import logging.handlers
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ark_lattice.errors import UsageError

__all__ = [
    "LogFormat",
    "LogEntry",
    "LogFollower",
    "LEVELS",
    "LOG_NAME",
    "MAX_BYTES",
    "BACKUPS",
    "setup",
    "parse_level",
    "parse_lines",
    "log_files",
    "last_entries",
    "follow",
    "FOLLOW_POLL",
    "LIBRARY_LOGGERS",
]

LOG_NAME = "node.log"
LIBRARY_LOGGERS = ("websockets", "asyncio", "zeroconf")
REPEATS = 5  # records of one library message per REPEAT_WINDOW before the rest are only counted
REPEAT_WINDOW = 60.0
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 5
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FOLLOW_POLL = 0.2  # seconds between looks at the file while following


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True)
class LogEntry:
    """One log record as read back from the file; ``time`` is RFC 3339 in UTC."""

    time: str
    level: str
    logger: str
    message: str

    @property
    def levelno(self) -> int:
        return logging.getLevelName(self.level) if self.level in LEVELS else logging.NOTSET

    def to_json(self) -> dict[str, str]:
        return {"time": self.time, "level": self.level, "logger": self.logger, "message": self.message}

    def to_text(self) -> str:
        if not self.level:  # lines whose record began before what was read
            return self.message
        return f"{self.time} {self.level} {self.logger}: {self.message}"


def setup(log_dir: Path, *, level: int = logging.INFO, fmt: LogFormat = LogFormat.TEXT) -> None:
    """Send the ``ark_lattice`` loggers to stderr and to the rotating file in ``log_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    formatter: logging.Formatter = _JsonFormatter() if fmt is LogFormat.JSON else _TextFormatter()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    rotating = logging.handlers.RotatingFileHandler(
        log_dir / LOG_NAME, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
    )
    rotating.setFormatter(formatter)
    tame = _Tame()
    for handler in (console, rotating):
        handler.addFilter(tame)
    root = logging.getLogger("ark_lattice")
    for old in root.handlers:
        old.close()
    root.handlers[:] = [console, rotating]
    root.setLevel(level)
    root.propagate = False
    # The libraries' loggers write to the same places (not Python's last-resort stderr), at
    # WARNING and above: what a peer makes them say is one line, and a repeat is rate-limited.
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers[:] = [console, rotating]
        library.setLevel(max(level, logging.WARNING))
        library.propagate = False


def parse_level(name: str) -> int:
    """``info`` → ``logging.INFO``; one clear error for a name that is not a level."""
    upper = name.strip().upper()
    if upper == "WARN":
        upper = "WARNING"
    if upper not in LEVELS:
        raise UsageError(f"unknown log level {name!r}; use one of {', '.join(LEVELS).lower()}")
    return int(logging.getLevelName(upper))


def parse_lines(lines: Iterable[str]) -> Iterator[LogEntry]:
    """The records in ``lines`` (without their line ends), continuation lines joined to theirs."""
    pending: LogEntry | None = None
    for line in lines:
        entry = _parse_line(line)
        if entry is None:
            if pending is not None:
                pending = LogEntry(pending.time, pending.level, pending.logger, f"{pending.message}\n{line}")
            elif line.strip():
                pending = LogEntry("", "", "", line)  # the tail of a record that began before
            continue
        if pending is not None:
            yield pending
        pending = entry
    if pending is not None:
        yield pending


def log_files(log_dir: Path) -> list[Path]:
    """The log files that exist, oldest first (``node.log.5`` … ``node.log.1``, ``node.log``)."""
    names = [f"{LOG_NAME}.{n}" for n in range(BACKUPS, 0, -1)] + [LOG_NAME]
    return [log_dir / name for name in names if (log_dir / name).is_file()]


def last_entries(
    log_dir: Path, *, level: int = logging.NOTSET, count: int | None = None, current: Iterable[str] = ()
) -> list[LogEntry]:
    """The last ``count`` records at ``level`` or above, oldest first, from the rotated files and
    then ``current`` — the lines of ``node.log`` itself, as a :class:`LogFollower` read them (so
    a follower goes on exactly where this stopped)."""
    kept: deque[LogEntry] = deque(maxlen=count)
    if count == 0:
        return []
    for path in log_files(log_dir)[:-1] if (log_dir / LOG_NAME).is_file() else log_files(log_dir):
        with open(path, encoding="utf-8", errors="replace") as f:
            kept.extend(e for e in parse_lines(line.rstrip("\n") for line in f) if e.levelno >= level)
    kept.extend(e for e in parse_lines(current) if e.levelno >= level)
    return list(kept)


def follow(
    follower: LogFollower, *, level: int = logging.NOTSET, poll: float = FOLLOW_POLL
) -> Iterator[LogEntry]:
    """The records at ``level`` or above appended from now on, as they are; never ends."""
    while True:
        lines = follower.read()
        if not lines:
            time.sleep(poll)
            continue
        # A record is written in one go, so its continuation lines come in the same read.
        yield from (e for e in parse_lines(lines) if e.levelno >= level)


class LogFollower:
    """The lines appended to one file, read without blocking (call :meth:`read` to poll)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._identity: tuple[int, int] | None = None
        self._partial = b""

    def read(self) -> list[str]:
        """Complete lines written since the last call; the whole file on the first one."""
        if self._file is None and not self._open():
            return []
        lines = self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return lines  # between a rotation's rename and the new file: the next call sees it
        assert self._file is not None
        if (st.st_dev, st.st_ino) != self._identity:
            lines += self._drain()  # what was written to the old file before it was replaced
            self._flush_partial(lines)
            self.close()
            if self._open():
                lines += self._drain()
        elif st.st_size < self._file.tell():
            self._file.seek(0)
            self._partial = b""
            lines += self._drain()
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> bool:
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            return False
        st = os.fstat(self._file.fileno())
        self._identity = (st.st_dev, st.st_ino)
        self._partial = b""
        return True

    def _drain(self) -> list[str]:
        assert self._file is not None
        data = self._partial + self._file.read()
        *complete, self._partial = data.split(b"\n")
        return [line.decode("utf-8", errors="replace").rstrip("\r") for line in complete]

    def _flush_partial(self, lines: list[str]) -> None:
        if self._partial:
            lines.append(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""


# -- private ------------------------------------------------------------------------------------

_TEXT = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (?P<level>[A-Z]+) (?P<logger>\S+): (?P<message>.*)"
)
# The format before --log-format: asctime in local time with a comma before the milliseconds.
_OLD_TEXT = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>[A-Z]+) (?P<logger>\S+): (?P<message>.*)"
)


def _parse_line(line: str) -> LogEntry | None:
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            return None
        if isinstance(doc, dict) and {"time", "level", "logger", "message"} <= doc.keys():
            return LogEntry(str(doc["time"]), str(doc["level"]), str(doc["logger"]), str(doc["message"]))
        return None
    if m := _TEXT.fullmatch(line):
        return LogEntry(m["time"], m["level"], m["logger"], m["message"])
    if m := _OLD_TEXT.fullmatch(line):
        local = datetime.strptime(m["time"], "%Y-%m-%d %H:%M:%S,%f").astimezone()
        return LogEntry(_rfc3339(local.timestamp()), m["level"], m["logger"], m["message"])
    return None


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Tame(logging.Filter):
    """What the libraries log reaches the log as one line each, at a bounded rate.

    A peer can make websockets, asyncio or zeroconf log as often as it can connect (a refused
    handshake, a failed accept): their tracebacks are not ours to debug, so a record's exception
    becomes ``(Type: message)`` at the end of its line, and past :data:`REPEATS` records of one
    message (logger and format string) in :data:`REPEAT_WINDOW` seconds the rest are counted and
    said in one line with the next that passes. The node's own records pass unchanged. A record
    goes through both handlers: the verdict is taken once and kept on it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}  # (start, passed, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, "_ark_tame", None)
        if verdict is None:
            verdict = self._judge(record)
            record._ark_tame = verdict
        return bool(verdict)

    def _judge(self, record: logging.LogRecord) -> bool:
        if record.name == "ark_lattice" or record.name.startswith("ark_lattice."):
            return True
        key = (record.name, str(record.msg))  # the format string: one message, whatever its args
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})".replace("\n", " ")
            record.args = None
            record.exc_info = record.exc_text = None
        record.stack_info = None
        start, passed, dropped = self._seen.get(key, (record.created, 0, 0))
        if record.created - start >= REPEAT_WINDOW:
            start, passed = record.created, 0
        if passed >= REPEATS:
            self._seen[key] = (start, passed, dropped + 1)
            return False
        if dropped:
            record.msg = f"{record.getMessage()} [{dropped} more like it not logged]"
            record.args = None
        self._seen[key] = (start, passed + 1, 0)
        if len(self._seen) > 1024:  # messages that vary (an address in the text): forget the oldest
            del self._seen[next(iter(self._seen))]
        return True


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _rfc3339(record.created)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        doc: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        return json.dumps(doc, ensure_ascii=False)
