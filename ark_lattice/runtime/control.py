"""The control socket: how CLI commands talk to a running node.

A Unix socket in the node's home, mode 0600, so only the node's owner can drive it. One JSON object
per line each way: ``{"cmd": NAME, "args": {...}}`` → ``{"ok": true, "result": …}`` or
``{"ok": false, "error": "one sentence"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ark_lattice.errors import ArkLatticeError, NodeNotRunning, UsageError

__all__ = ["ControlServer", "call", "MAX_REQUEST"]

MAX_REQUEST = 64 * 1024
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
        _check_path_length(self.path)
        if self.path.exists():
            if _is_live(self.path):
                raise UsageError(f"a node is already running in {self.path.parent}")
            self.path.unlink()  # left behind by a killed node
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can connect
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

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
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # keep serving; the log has the details
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"internal error in {cmd}: {exc.__class__.__name__}"}


def call(path: Path, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """Send one request to the node listening on ``path`` (blocking; for the CLI)."""
    _check_path_length(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NodeNotRunning(
                f"the node is not running in {path.parent}; start it with `ark-lattice federation start`"
            ) from None
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
        raise UsageError(response.get("error") or "the node refused the request")
    return response.get("result")


def _is_live(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _check_path_length(path: Path) -> None:
    if len(os.fsencode(str(path))) > _SUN_PATH_MAX:
        raise UsageError(
            f"the home path is too long for a control socket ({path}); choose a shorter --home"
        )
