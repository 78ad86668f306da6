"""The control socket answers bad requests with one sentence and keeps serving."""

import asyncio
import json
import socket
import stat

import pytest

from ark_lattice.errors import NodeNotRunning, UsageError
from ark_lattice.runtime.control import ControlServer, call


async def test_requests_errors_and_stale_sockets(home):
    home.mkdir(parents=True)
    path = home / "control.sock"
    path.write_text("left behind by a killed node")  # a stale file is replaced

    async def echo(args):
        return {"echo": args}

    async def broken(args):
        raise RuntimeError("bug")

    server = ControlServer(path, {"echo": echo, "broken": broken})
    await server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, call, path, "echo", {"x": 1}) == {"echo": {"x": 1}}
        with pytest.raises(UsageError, match="unknown control command"):
            await loop.run_in_executor(None, call, path, "nope", None)
        with pytest.raises(UsageError, match="internal error in broken"):
            await loop.run_in_executor(None, call, path, "broken", None)

        def raw(data):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(data)
                return json.loads(s.makefile().readline())

        assert await loop.run_in_executor(None, raw, b"not json\n") == {
            "ok": False,
            "error": "malformed control request",
        }
        with pytest.raises(UsageError, match="already running"):
            await ControlServer(path, {}).start()
    finally:
        await server.close()
    assert not path.exists()
    with pytest.raises(NodeNotRunning):
        call(path, "echo")
