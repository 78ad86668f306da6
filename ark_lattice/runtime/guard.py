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

from ark_lattice.protocol.channel import MAX_FRAME
from ark_lattice.protocol.strangers import Strangers, source_of

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection
    from websockets.asyncio.server import ServerConnection

__all__ = [
    "WRITE_BUFFER",
    "STRANGER_WRITE_BUFFER",
    "server_connection_class",
    "client_connection_class",
    "raise_open_file_limit",
    "set_receive_limit",
]

log = logging.getLogger("ark_lattice.guard")

#: Bytes we may hold for a peer that does not read: one frame of ours in full, our pongs and the
#: transport's own high-water mark on top. Past it the peer is not reading, or reads too slowly
#: to be worth a session.
WRITE_BUFFER = 2 * MAX_FRAME
#: The same before the handshake: all a stranger gets from us is one handshake message and pongs.
STRANGER_WRITE_BUFFER = 64 * 1024


def server_connection_class(strangers: Strangers, clock: Callable[[], float]) -> type[ServerConnection]:
    """A ``ServerConnection`` that counts itself against ``strangers`` and bounds its writes;
    ``clock`` is the coordinator's (the time refusals are counted at)."""
    from websockets.asyncio.server import ServerConnection
    from websockets.protocol import State

    class GuardedServerConnection(ServerConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            source = source_of(_address(transport.get_extra_info("peername")))
            refused = strangers.arrive(self, source, clock())
            if refused is not None:
                log.debug("dropped a connection from %s: %s", source, refused)
                self.transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            strangers.left(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            bound = STRANGER_WRITE_BUFFER if strangers.holds(self) else WRITE_BUFFER
            _check_write_buffer(self, bound)

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
            await super().handshake(*args, **kwargs)

    return GuardedServerConnection


def client_connection_class() -> type[ClientConnection]:
    """A ``ClientConnection`` (our dials) that bounds its writes as the server side does."""
    from websockets.asyncio.client import ClientConnection

    class GuardedClientConnection(ClientConnection):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            _check_write_buffer(self, WRITE_BUFFER)

    return GuardedClientConnection


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


def _check_write_buffer(conn: Any, bound: int) -> None:
    transport = conn.transport
    if transport is None or transport.is_closing():
        return
    size = transport.get_write_buffer_size()
    if size > bound:
        log.info(
            "closed the connection with %s: %d bytes waiting to be written, over %d (it does not read)",
            _address(transport.get_extra_info("peername")), size, bound,
        )
        transport.abort()


def _address(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
