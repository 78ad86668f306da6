"""What a connection may cost the node below the session: the WebSocket connection classes.

The session (protocol/session.py) says how big its next message may be and the strangers' budget
(protocol/strangers.py) says whether a new connection may stay; this module applies both where
the bytes are, in the ``websockets`` connection objects (``serve`` and ``connect`` take them as
``create_connection``), and makes the process fit for many sockets:

- an accepted TCP connection is counted against the strangers' caps before a byte of it is read,
  and dropped (RST) when over one; it stops counting when its peer authenticates or it ends;
- a peer that does not read what we write cannot make us buffer without bound: websockets answers
  every ping with a pong as it reads, and a client that floods pings and never reads the pongs
  would grow our write buffer forever. After each read, a connection whose write buffer passed
  its bound (:data:`STRANGER_WRITE_BUFFER` before the handshake, :data:`WRITE_BUFFER` after) is
  aborted, with one log line;
- a client that pipelines bytes behind its HTTP request (no honest WebSocket client does: it waits
  for the 101) makes websockets fail an internal assertion and log a traceback (websockets 17.4);
  such a connection is dropped before the response instead;
- :func:`raise_open_file_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard limit at start, so
  idle strangers reach the connection caps long before the process runs out of descriptors.
  If it still does, asyncio's accept loop backs off a second per failure and reports it through
  the ``asyncio`` logger, which logfile.py tames into one rate-limited line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ark_lattice.errors import ErrorCode
from ark_lattice.protocol.channel import MAX_FRAME
from ark_lattice.protocol.strangers import Strangers, source_of

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection
    from websockets.asyncio.server import ServerConnection

__all__ = [
    "WRITE_BUFFER",
    "STRANGER_WRITE_BUFFER",
    "STRANGER_READ_BUDGET",
    "server_connection_class",
    "client_connection_class",
    "raise_open_file_limit",
    "install_exception_handler",
    "set_receive_limit",
]

log = logging.getLogger("ark_lattice.guard")

#: Bytes we may hold for a peer that does not read: one frame of ours in full, our pongs and the
#: transport's own high-water mark on top. Past it the peer is not reading, or reads too slowly
#: to be worth a session.
WRITE_BUFFER = 2 * MAX_FRAME
#: The same before the handshake: all a stranger gets from us is one handshake message and pongs.
STRANGER_WRITE_BUFFER = 64 * 1024
#: WebSocket pings a peer may send: a burst, then one a second. Our peers never send any (the
#: session has its own heartbeat), and websockets answers each one it reads, so a flood of them
#: costs us a pong each however fast it comes; past the budget the connection is dropped.
PING_BURST = 16
#: Bytes a connection may send before its peer is authenticated: the HTTP upgrade request, msg1,
#: msg3 and the manifest frame behind it come to about 5 KiB. Past this a stranger is dropped
#: before websockets parses any of it, so a flood costs us one read, not a parse of every frame.
STRANGER_READ_BUDGET = 32 * 1024
PINGS_PER_SECOND = 1.0


def server_connection_class(strangers: Strangers, clock: Callable[[], float]) -> type[ServerConnection]:
    """A ``ServerConnection`` that counts itself against ``strangers`` and bounds its writes;
    ``clock`` is the coordinator's (the time refusals are counted at)."""
    from websockets.asyncio.server import ServerConnection
    from websockets.frames import Opcode
    from websockets.protocol import State

    from ark_lattice.protocol.invites import JOIN_PATH, MAX_JOIN_MESSAGE

    class GuardedServerConnection(ServerConnection):
        pings = _PingBudget()
        stranger_bytes = 0
        failure_counted = False

        def process_event(self, event: Any) -> None:
            super().process_event(event)
            # Events are HTTP requests before the upgrade, frames after.
            if getattr(event, "opcode", None) is Opcode.PING and not self.pings.allow(self.loop.time()):
                self.failed(ErrorCode.RATE_LIMITED, "WebSocket pings past the budget")

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.pings = _PingBudget()
            self.stranger_bytes = 0
            source = source_of(_address(transport.get_extra_info("peername")))
            refused = strangers.arrive(self, source, clock())
            if refused is not None:
                log.debug("dropped a connection from %s: %s", source, refused)
                self.transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            if strangers.holds(self) and not self.request_rcvd.done() and self.transport is not None:
                # A silent socket: websockets gave up waiting for its HTTP request (open_timeout).
                source = source_of(_address(self.transport.get_extra_info("peername")))
                strangers.failed(source, ErrorCode.TIMEOUT, "no HTTP request", clock())
            strangers.left(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            stranger = strangers.holds(self)
            if stranger:
                self.stranger_bytes += len(data)
                if self.stranger_bytes > STRANGER_READ_BUDGET:
                    # What fits the budget is parsed (an oversized message is refused by its header
                    # with close code 1009, which then goes out); the rest never is.
                    left = STRANGER_READ_BUDGET - (self.stranger_bytes - len(data))
                    if left > 0:
                        super().data_received(data[:left])
                    why = f"over {STRANGER_READ_BUDGET} bytes before the handshake"
                    self.failed(ErrorCode.TOO_LARGE, why, graceful=True)
                    return
            super().data_received(data)
            if stranger and self.protocol.state in (State.CLOSING, State.CLOSED):
                # We closed it (a message over the limit, a failed handshake): websockets would
                # read and discard whatever it keeps sending for close_timeout. A stranger gets
                # no closing handshake.
                _drop(self, "it sends on after we closed", quiet=True)
                return
            waiting = _write_buffer(self)
            if waiting > (STRANGER_WRITE_BUFFER if stranger else WRITE_BUFFER):
                self.failed(ErrorCode.RATE_LIMITED, f"{waiting} bytes wait to be written (it does not read)")

        def failed(self, code: ErrorCode, why: str, *, graceful: bool = False) -> None:
            """Drop the connection; a stranger's failure is counted in its address's summary.
            ``graceful``: what we wrote still goes out (a close frame), nothing more is read."""
            stranger = strangers.holds(self)
            if stranger and not self.transport.is_closing():
                source = source_of(_address(self.transport.get_extra_info("peername")))
                strangers.failed(source, code, why, clock())
                self.failure_counted = True  # the link's reader reports a plain loss (peering.py)
            _drop(self, why, quiet=stranger, graceful=graceful)

        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            await asyncio.wait(
                [self.request_rcvd, self.connection_lost_waiter], return_when=asyncio.FIRST_COMPLETED
            )
            if self.protocol.state is State.CONNECTING and self.protocol.eof_sent:
                # websockets parsed bytes after the request as frames and gave up on them; answering
                # now would trip its assertion. The handler sees a connection that never opened.
                log.debug("dropped a connection that pipelined data behind its HTTP request")
                self.transport.abort()
                return
            request = getattr(self, "request", None)
            if request is not None and request.path.split("?")[0] == JOIN_PATH:
                # The join exchange (runtime/joining.py) has its own message bound, in force
                # before the upgrade is answered: the joiner speaks first, right behind it.
                set_receive_limit(self, MAX_JOIN_MESSAGE)
            await super().handshake(*args, **kwargs)

    return GuardedServerConnection


def client_connection_class() -> type[ClientConnection]:
    """A ``ClientConnection`` (our dials) that bounds its writes as the server side does."""
    from websockets.asyncio.client import ClientConnection
    from websockets.frames import Opcode

    class GuardedClientConnection(ClientConnection):
        pings = _PingBudget()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.pings = _PingBudget()

        def process_event(self, event: Any) -> None:
            super().process_event(event)
            if getattr(event, "opcode", None) is Opcode.PING and not self.pings.allow(self.loop.time()):
                _drop(self, "it sends WebSocket pings past the budget", quiet=False)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if _write_buffer(self) > WRITE_BUFFER:
                _drop(self, f"{_write_buffer(self)} bytes wait to be written (it does not read)", quiet=False)

    return GuardedClientConnection


OUT_OF_FILES_EVERY = 60.0  # seconds between two log lines about running out of descriptors


def install_exception_handler(loop: asyncio.AbstractEventLoop, clock: Callable[[], float]) -> None:
    """Say "out of file descriptors" in one line a minute at most (asyncio's accept loop already
    waits a second before it accepts again); anything else goes to asyncio's own handler, whose
    log logfile.py tames."""
    last: list[float] = [float("-inf"), 0]  # when we last said it, failures since

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == "socket.accept() out of system resource" and isinstance(exc, OSError):
            now = clock()
            last[1] += 1
            if now - last[0] >= OUT_OF_FILES_EVERY:
                log.warning(
                    "cannot accept connections: %s (%d times since the last report); "
                    "trying again each second", exc.strerror or exc, last[1],
                )
                last[0], last[1] = now, 0
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


def set_receive_limit(ws: Any, limit: int) -> None:
    """Hold a ``websockets`` connection to messages of at most ``limit`` bytes from now on.

    ``max_size`` is the Sans-I/O protocol's ``max_message_size``; it is read as each frame header
    is parsed, so a bigger message is refused (close code 1009) by its length, unbuffered. A
    transport that is not a websockets connection (a test double) is left alone.
    """
    protocol = getattr(ws, "protocol", None)
    if protocol is not None and hasattr(protocol, "max_message_size"):
        protocol.max_message_size = limit


def raise_open_file_limit() -> tuple[int, int] | None:
    """Lift the soft limit on open files to the hard one; returns (old, new), or None if unchanged."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return None
    return soft, hard


# -- private ------------------------------------------------------------------------------------


class _PingBudget:
    """A token bucket of WebSocket pings (PING_BURST, refilled at PINGS_PER_SECOND)."""

    def __init__(self) -> None:
        self.tokens = float(PING_BURST)
        self.at: float | None = None

    def allow(self, now: float) -> bool:
        if self.at is not None:
            self.tokens = min(float(PING_BURST), self.tokens + (now - self.at) * PINGS_PER_SECOND)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _write_buffer(conn: Any) -> int:
    transport = conn.transport
    if transport is None or transport.is_closing():
        return 0
    return int(transport.get_write_buffer_size())


def _drop(conn: Any, why: str, *, quiet: bool, graceful: bool = False) -> None:
    """Abort the connection (or close it, flushing what we wrote, when ``graceful``); a stranger's
    is a debug line (they are counted), a member's is news."""
    transport = conn.transport
    if transport is None or transport.is_closing():
        return
    log.log(logging.DEBUG if quiet else logging.INFO, "dropped the connection with %s: %s",
            _address(transport.get_extra_info("peername")), why)
    if graceful:
        transport.close()
    else:
        transport.abort()


def _address(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
