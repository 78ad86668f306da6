"""The control socket: how CLI commands talk to a running node.

A Unix socket in the node's home, mode 0600, so only the node's owner can drive it. One JSON object
per line each way: ``{"cmd": NAME, "args": {...}}`` → ``{"ok": true, "result": …}`` or
``{"ok": false, "error": "one sentence"}``.

Some homes cannot hold a socket: a FAT-formatted USB stick refuses one, and a deep path is longer
than ``sun_path`` allows. The node then binds a socket in the user's runtime directory instead
(``$XDG_RUNTIME_DIR/ark-lattice``, else a private ``ark-lattice-UID`` directory in the temp dir),
named by a hash of the home's real path, and says so in its log. Clients need no hint: they try the
home's socket, then that one (:func:`fallback_path`). Either way only the owner's uid may connect.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import socket
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ark_lattice.errors import ArkLatticeError, NodeNotRunning, UsageError

__all__ = ["ControlServer", "call", "fallback_path", "MAX_REQUEST"]

# A request carries at most one packet body (1 MiB, base64 in JSON: `packets publish` through the node).
MAX_REQUEST = 2 * 1024 * 1024
MAX_RESPONSE = 16 * 1024 * 1024
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path on Linux, less the NUL

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
log = logging.getLogger("ark_lattice.control")


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self._handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        home = self.path.parent
        fallback = fallback_path(home)
        for path in (self.path, fallback):
            if path.exists() and _is_live(path):
                raise UsageError(f"a node is already running in {home}")
        if not _fits(self.path):
            log.warning(
                "the home path is too long for a Unix socket; the control socket is %s instead", fallback
            )
            await self._bind(fallback)
            return
        try:
            await self._bind(self.path)
        except OSError as exc:
            if exc.errno not in _NO_SOCKET_HERE:
                raise UsageError(f"cannot create the control socket {self.path}: {exc.strerror}") from None
            log.warning(
                "the file system of %s cannot hold a Unix socket (%s); the control socket is %s instead",
                home, exc.strerror, fallback,
            )
            await self._bind(fallback)

    async def _bind(self, path: Path) -> None:
        if path != self.path:
            _private_dir(path.parent)
        if path.exists():
            path.unlink()  # left behind by a killed node
        if not _fits(path):
            raise UsageError(f"the control socket path is too long ({path}); choose a shorter --home")
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=MAX_REQUEST)
        finally:
            os.umask(old_umask)
        self.path = path
        os.chmod(path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not _same_user(writer.get_extra_info("socket")):
            writer.close()  # belt and braces: the socket's mode already keeps other users out
            return
        try:
            line = await reader.readline()
            response = await self._dispatch(line)
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away or sent an over-long line; nothing to answer
        finally:
            writer.close()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            cmd, args = request["cmd"], request.get("args") or {}
            if not isinstance(args, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "malformed control request"}
        handler = self._handlers.get(cmd)
        if handler is None:
            return {"ok": False, "error": f"unknown control command {cmd!r}"}
        try:
            return {"ok": True, "result": await handler(args)}
        except ArkLatticeError as exc:
            return {"ok": False, "error": str(exc), "exit": int(exc.exit_code)}
        except Exception as exc:  # keep serving; the log has the details
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"internal error in {cmd}: {exc.__class__.__name__}"}


def call(path: Path, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """Send one request to the node of the home whose control socket is ``path`` (blocking; for
    the CLI). The socket in the runtime directory is tried when the home holds none."""
    sock = _connect(path, timeout)
    try:
        sock.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        chunks: list[bytes] = []
        size = 0
        while not chunks or not chunks[-1].endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE:
                raise NodeNotRunning("the node sent an oversize control response")
    except TimeoutError:  # socket.timeout is an alias of it
        raise NodeNotRunning(f"the node in {path.parent} did not answer within {timeout:g} s") from None
    finally:
        sock.close()
    try:
        response = json.loads(b"".join(chunks))
    except ValueError:
        raise NodeNotRunning("the node closed the control connection without an answer") from None
    if not response.get("ok"):
        # The node's error keeps its exit code (errors.ExitCode): the same condition, the same code.
        error = UsageError(response.get("error") or "the node refused the request")
        if isinstance(response.get("exit"), int):
            error.exit_code = response["exit"]
        raise error
    return response.get("result")


def fallback_path(home: Path) -> Path:
    """Where the node of ``home`` binds its control socket when the home cannot hold one."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        base = Path(runtime) / "ark-lattice"
    else:
        base = Path(tempfile.gettempdir()) / f"ark-lattice-{os.getuid()}"
    digest = hashlib.sha256(os.fsencode(os.path.realpath(home))).hexdigest()[:24]
    return base / f"{digest}.sock"


def is_running(path: Path) -> bool:
    """Whether a node answers on the control socket ``path`` or on its fallback."""
    return any(p.exists() and _is_live(p) for p in _candidates(path))


# What bind() says on a file system without sockets: FAT and exFAT (EPERM), some FUSE and network
# file systems (EOPNOTSUPP, ENXIO, EACCES), a name too long (ENAMETOOLONG).
_NO_SOCKET_HERE = {errno.EPERM, errno.EOPNOTSUPP, errno.ENXIO, errno.EACCES, errno.ENAMETOOLONG, errno.EINVAL}


def _candidates(path: Path) -> list[Path]:
    return [p for p in (path, fallback_path(path.parent)) if _fits(p)]


def _connect(path: Path, timeout: float) -> socket.socket:
    for candidate in _candidates(path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(candidate))
            return sock
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            sock.close()
        except TimeoutError:
            sock.close()
            raise NodeNotRunning(
                f"the node in {path.parent} did not answer within {timeout:g} s"
            ) from None
        except OSError as exc:
            sock.close()
            raise NodeNotRunning(
                f"cannot reach the node's control socket {candidate}: {exc.strerror}"
            ) from None
    raise NodeNotRunning(
        f"the node is not running in {path.parent}; start it with `ark-lattice federation start`"
    )


def _private_dir(path: Path) -> None:
    """Make the fallback's directory, private to us, and refuse one anybody else could use."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise UsageError(f"cannot create the control socket directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise UsageError(f"{path} is not a private directory of this user; remove it and start again")


def _same_user(sock: socket.socket | None) -> bool:
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return True
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return True
    _pid, uid, _gid = struct.unpack("3i", raw)
    return uid in (os.getuid(), 0)


def _fits(path: Path) -> bool:
    return len(os.fsencode(str(path))) <= _SUN_PATH_MAX


def _is_live(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()
