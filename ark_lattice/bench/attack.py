"""A crowd of hostile clients against one node on loopback, for `bench sync --under-attack` and tests.

Strangers (no federation key), each a loop that starts again when the node drops it:

- ``parked``: a WebSocket whose first message announces 2 MiB − 1 bytes, then parks;
- ``silent``: a TCP connection that never says anything;
- ``pingers``: a WebSocket that sends pings as fast as it can and never reads a pong;
- ``churners``: a WebSocket that sends a msg1 made without the key, over and over;

and, with the federation key, ``members``: a member that completes the handshake and then sends a
tampered frame, again and again (each one a strike, and past the threshold it is blocked).

Strangers connect from other loopback addresses (127.0.0.2 …) when the host has them, as strangers
on a LAN come from addresses of their own; the node and every packet stay on 127.0.0.1. Counts of
what happened come back from :meth:`Attack.stop`; an attacker that fails in an unexpected way is
counted too (``errors``), never raised, so a test can assert there were none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

__all__ = ["Attack", "AttackPlan"]

PAUSE = 0.1  # seconds an attacker waits before it starts again (a refusal, a close)
PING_PAYLOAD = b"p" * 32  # under the size limit before the handshake: the ping budget meets it


@dataclass(frozen=True)
class AttackPlan:
    parked: int = 10
    silent: int = 40
    pingers: int = 2
    churners: int = 4
    members: int = 1  # keyed members; only with a federation key
    sources: int = 8  # loopback source addresses the strangers spread over (127.0.0.2 …)


class Attack:
    """Runs an :class:`AttackPlan` against ``host:port`` until :meth:`stop`.

    :meth:`start` runs it in a child process (``python -m ark_lattice.bench.attack``), so the
    attackers' CPU and GIL are not the measuring process's (the child runs :meth:`run_here`).
    """

    def __init__(
        self, host: str, port: int, plan: AttackPlan | None = None, *, federation_key: bytes | None = None
    ) -> None:
        self.host, self.port = host, port
        self.plan = plan or AttackPlan()
        self.federation_key = federation_key
        self.counts: Counter[str] = Counter()
        self._child: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._sources = _usable_sources(self.plan.sources)

    def start(self) -> Attack:
        """Start the attack in a child process; it reports its counts when :meth:`stop` asks."""
        doc = {"host": self.host, "port": self.port, "plan": dataclasses.asdict(self.plan),
               "key": self.federation_key.hex() if self.federation_key else None}
        # stderr to a file, never a pipe nobody reads while it runs: a full pipe would stop it.
        self._stderr = tempfile.TemporaryFile()
        child = subprocess.Popen(
            [sys.executable, "-m", "ark_lattice.bench.attack", json.dumps(doc)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        self._child = child
        assert child.stdout is not None
        if child.stdout.readline().strip() != b"started":
            child.kill()
            child.wait()
            raise RuntimeError(f"the attack did not start: {self._stderr_text()[-2000:]}")
        return self

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def counts_now(self) -> Counter[str]:
        """The child's counts so far (asks it; only while started)."""
        child = self._child
        assert child is not None and child.stdin is not None and child.stdout is not None
        child.stdin.write(b"counts\n")
        child.stdin.flush()
        return Counter(json.loads(child.stdout.readline()))

    def stop(self) -> Counter[str]:
        """Stop the attack; its final counts (``stderr`` holds anything it printed: ``"stderr"``)."""
        child = self._child
        if child is not None:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.close()
            out = child.stdout.read()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            err = self._stderr_text()
            self._stderr.close()
            self.counts = Counter(json.loads(out.splitlines()[-1])) if out.strip() else Counter()
            if err.strip():
                self.counts["stderr " + err[-200:]] += 1
                self.counts["errors"] += 1
            self._child = None
        return self.counts

    def run_here(self) -> None:
        """Run the attack on this thread until stdin closes, then print the counts and end the
        process (the child's main)."""
        asyncio.run(self._main())

    def __enter__(self) -> Attack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the loops ------------------------------------------------------------------------------

    async def _main(self) -> None:
        plan = self.plan
        jobs = (
            [self._parked] * plan.parked + [self._silent] * plan.silent
            + [self._pinger] * plan.pingers + [self._churner] * plan.churners
        )
        tasks = [asyncio.create_task(self._forever(job, n)) for n, job in enumerate(jobs)]
        if self.federation_key is not None:
            tasks += [asyncio.create_task(self._forever(self._member, n)) for n in range(plan.members)]
        loop = asyncio.get_running_loop()
        print("started", flush=True)
        while True:  # the parent's commands, one a line; the end of stdin stops the attack
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            print(json.dumps(dict(self.counts)), flush=True)
        self._stopped = True
        for task in tasks:
            task.cancel()
        # Bounded: on Python 3.11 a cancellation can be lost in asyncio.wait_for, and a loop that
        # lost it goes round until _stopped is seen.
        await asyncio.wait(tasks, timeout=5)
        # The child's last word is its counts; then it ends at once, whatever an attacker still
        # holds (a lost cancellation, the stdin thread): asyncio.run's shutdown would wait for it.
        print(json.dumps(dict(self.counts)), flush=True)
        os._exit(0)

    async def _forever(self, job: object, n: int) -> None:
        assert callable(job)
        source = self._sources[n % len(self._sources)]
        while not self._stopped:
            try:
                await job(source)
            except asyncio.CancelledError:
                raise
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError):
                self.counts["dropped"] += 1
            except Exception as exc:  # an attacker's own bug: counted, so a test sees it
                self.counts["errors"] += 1
                self.counts[f"error {type(exc).__name__}: {exc}"[:120]] += 1
            await asyncio.sleep(PAUSE)

    async def _open(self, source: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        local = (source, 0) if source else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, local_addr=local), 10
        )
        self.counts["connections"] += 1
        return reader, writer

    async def _upgrade(self, source: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self._open(source)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError("upgrade refused")
        return reader, writer

    async def _parked(self, source: str | None) -> None:
        reader, writer = await self._upgrade(source)
        try:
            writer.write(_frame(0x2, b"\0" * 65536, announced=2 * 1024 * 1024 - 1))
            await writer.drain()
            self.counts["parked"] += 1
            await _until_closed(reader)
        finally:
            writer.close()

    async def _silent(self, source: str | None) -> None:
        reader, writer = await self._open(source)
        try:
            self.counts["silent"] += 1
            await _until_closed(reader)
        finally:
            writer.close()

    async def _pinger(self, source: str | None) -> None:
        _reader, writer = await self._upgrade(source)
        with contextlib.suppress(OSError):  # keep the receive window small: pongs pile up on the node
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ping = _frame(0x9, PING_PAYLOAD) * 64
        try:
            while True:
                writer.write(ping)
                await writer.drain()
                self.counts["pings"] += 64
                await asyncio.sleep(0.001)  # tens of thousands a second, and the attacker's CPU to spare
        finally:
            writer.close()

    async def _churner(self, source: str | None) -> None:
        reader, writer = await self._upgrade(source)
        try:
            writer.write(_frame(0x2, os.urandom(48)))  # msg1's size, without the key
            await writer.drain()
            self.counts["foreign_msg1"] += 1
            await _until_closed(reader)
        finally:
            writer.close()

    async def _member(self, _source: str | None) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        from ark_lattice.identity import Identity
        from ark_lattice.manifest import PeerManifest
        from ark_lattice.protocol import events as ev
        from ark_lattice.protocol.frames import OfferFrame
        from ark_lattice.protocol.session import Role, Session, State
        from ark_lattice.tiers import TrustTier

        assert self.federation_key is not None
        identity = getattr(self, "_member_identity", None) or Identity.generate()
        self._member_identity = identity
        now = time.time()
        manifest = PeerManifest(identity.node_id, "member", 1, int(now), int(now) + 3600).sign(identity)
        url = f"ws://{self.host}:{self.port}"
        async with connect(url, max_size=None, ping_interval=None, open_timeout=10) as ws:
            session = Session(identity, self.federation_key, Role.INITIATOR, manifest, now=time.time())
            try:
                while session.state is not State.CLOSED:
                    for data in session.data_to_send():
                        await ws.send(data)
                    if session.state is State.OPEN:
                        break
                    reply = await asyncio.wait_for(ws.recv(), 10)
                    session.receive_data(reply if isinstance(reply, bytes) else b"", time.time())
                    for event in session.events():
                        if isinstance(event, ev.PeerAuthenticated):
                            session.admit(TrustTier.CORE, time.time())
                if session.state is not State.OPEN:
                    self.counts["member_refused"] += 1
                    return
                session._send(OfferFrame(()), time.time())  # noqa: SLF001 - a frame, then spoil it
                frame = bytearray(session.data_to_send()[-1])
                frame[len(frame) // 2] ^= 0x40
                await ws.send(bytes(frame))
                self.counts["member_tampered"] += 1
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed:
                pass
        await asyncio.sleep(0.2)


def main() -> None:
    import logging

    # Writes to connections the node dropped are the attackers' own business, not an error.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    doc = json.loads(sys.argv[1])
    key = bytes.fromhex(doc["key"]) if doc["key"] else None
    attack = Attack(doc["host"], int(doc["port"]), AttackPlan(**doc["plan"]), federation_key=key)
    attack.run_here()  # ends the process when stdin closes


def _frame(opcode: int, payload: bytes, *, announced: int | None = None) -> bytes:
    """A masked client frame; ``announced``: the length its header claims (a lie, for parking)."""
    length = len(payload) if announced is None else announced
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if announced is None else payload
    return header + mask + body


async def _until_closed(reader: asyncio.StreamReader) -> None:
    while await asyncio.wait_for(reader.read(65536), 60):
        pass


def _usable_sources(count: int) -> list[str | None]:
    """Loopback source addresses other than 127.0.0.1 that this host lets us bind (Linux: all of
    127/8); without them the strangers share the node's own address."""
    found: list[str | None] = []
    for n in range(2, 2 + count):
        address = f"127.0.0.{n}"
        with socket.socket() as s:
            try:
                s.bind((address, 0))
            except OSError:
                break
        found.append(address)
    return found or [None]


if __name__ == "__main__":
    main()
