"""The signed UDP multicast beacon, for networks where mDNS is filtered (DESIGN §7).

Runtime: this module owns sockets and timers; what a datagram means is decided in
``announcement.py`` and ``sightings.py``.

- One receiving socket bound to the group and port (so it gets that group's datagrams only), which
  joins the group on every interface we announce on (``IP_ADD_MEMBERSHIP`` per interface address).
- One sending socket per interface: ``IP_MULTICAST_IF`` picks the interface without needing a
  route, ``IP_MULTICAST_TTL`` 1 keeps the beacon on the link, and ``IP_MULTICAST_LOOP`` stays on so
  other nodes (and ``federation discover``) on the same host hear it; our own copy comes back and
  is dropped by node ID.
- The beacon goes out at start and whenever the announcement changes (each time with two repeats,
  1 s and 2 s later), every ``BEACON_INTERVAL`` seconds with jitter, and shortly after a
  solicitation (``SOLICIT_MAGIC``): a node that starts, or a one-shot ``federation discover``, asks
  once and hears everyone within a fraction of a second instead of waiting for the timer. Answers
  to solicitations are spaced at least ``SOLICIT_HOLDOFF`` seconds apart (later solicitations wait
  and share one answer), so the beacon cannot be used as an amplifier.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from ark_lattice.discovery.announcement import BEACON_MAGIC, SOLICIT_MAGIC, SignedAnnouncement

__all__ = ["Beacon", "BEACON_INTERVAL", "SOLICIT_HOLDOFF"]

log = logging.getLogger("ark_lattice.discovery")

BEACON_INTERVAL = 30.0  # seconds, like Syncthing's local announcements; jittered by ±20 %
SOLICIT_HOLDOFF = 1.0
#: After the first beacon (and after each change), two more 1 s and 2 s apart, as RFC 6762 §8.3
#: repeats announcements: one lost datagram must not hide a node for a whole interval.
REPEATS = (1.0, 2.0)
REPLY_DELAY = (0.02, 0.12)  # seconds: RFC 6762 §6's spread for shared answers, against bursts


class Beacon:
    """Send our signed beacon and hand every beacon heard to ``on_beacon(sender, datagram)``."""

    source = "beacon"

    def __init__(
        self,
        group: str,
        port: int,
        on_beacon: Callable[[str, bytes], None],
        *,
        rng: random.Random | None = None,
        interval: float = BEACON_INTERVAL,
    ) -> None:
        self.group = group
        self.port = port
        self._on_beacon = on_beacon
        self._rng = rng or random.Random()
        self._interval = interval
        self._signed: SignedAnnouncement | None = None
        self._datagram: bytes | None = None
        self._receiver: asyncio.DatagramTransport | None = None
        self._recv_sock: socket.socket | None = None
        self._joined: set[str] = set()
        self._senders: dict[str, socket.socket] = {}  # interface address -> socket bound to it
        self._own: set[tuple[str, int]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_reply = float("-inf")
        self._reply_pending = False
        self.sent = 0
        self.received = 0

    async def start(self, interfaces: list[str], signed: SignedAnnouncement | None) -> None:
        loop = asyncio.get_running_loop()
        self._recv_sock = _receiving_socket(self.group, self.port)
        try:
            self._receiver, _ = await loop.create_datagram_endpoint(
                lambda: _Receiver(self), sock=self._recv_sock
            )
        except BaseException:
            self._recv_sock.close()
            raise
        self._set_interfaces(interfaces)
        self._set_signed(signed)
        self.solicit()
        self._timer = asyncio.create_task(self._periodic(), name="beacon")

    async def update(self, interfaces: list[str], signed: SignedAnnouncement | None) -> None:
        self._set_interfaces(interfaces)
        self._set_signed(signed)
        self._wake.set()  # announce the change now, then restart the timer

    def solicit(self) -> None:
        """Ask every node on the link to send its beacon now."""
        self._send(SOLICIT_MAGIC)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        if self._receiver is not None:
            self._receiver.close()
        for sock in self._senders.values():
            sock.close()
        self._senders.clear()

    # -- private ----------------------------------------------------------------------------

    def _set_signed(self, signed: SignedAnnouncement | None) -> None:
        self._signed = signed
        self._datagram = signed.to_datagram() if signed is not None else None

    def _set_interfaces(self, interfaces: list[str]) -> None:
        wanted = {a for a in interfaces if _is_ipv4(a)}
        assert self._recv_sock is not None
        for addr in wanted - self._joined:
            try:
                self._recv_sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreq(self.group, addr)
                )
                self._joined.add(addr)
            except OSError as exc:
                log.warning("beacon: cannot join %s on %s: %s", self.group, addr, exc.strerror)
        for addr in self._joined - wanted:
            try:
                self._recv_sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, _mreq(self.group, addr)
                )
            except OSError:
                pass  # the interface went away, and the membership with it
            self._joined.discard(addr)
        for addr in wanted - set(self._senders):
            try:
                sock = _sending_socket(addr)
            except OSError as exc:
                log.warning("beacon: cannot send from %s: %s", addr, exc.strerror)
                continue
            self._senders[addr] = sock
            self._own.add(sock.getsockname()[:2])
        for addr in set(self._senders) - wanted:
            sock = self._senders.pop(addr)
            self._own.discard(sock.getsockname()[:2])
            sock.close()

    async def _periodic(self) -> None:
        repeats = list(REPEATS)
        while True:
            if self._datagram is not None:
                self._send(self._datagram)
            self._wake.clear()
            delay = repeats.pop(0) if repeats else self._interval * self._rng.uniform(0.8, 1.2)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
                repeats = list(REPEATS)  # a change: announce it again, with its repeats
            except TimeoutError:
                pass

    def _send(self, datagram: bytes) -> None:
        for addr, sock in list(self._senders.items()):
            try:
                sock.sendto(datagram, (self.group, self.port))
                self.sent += 1
            except BlockingIOError:
                pass  # a full send buffer loses one beacon; the next one follows
            except OSError as exc:
                log.debug("beacon: sending from %s failed: %s", addr, exc.strerror)

    def _received(self, data: bytes, addr: Any) -> None:
        if not isinstance(addr, tuple) or tuple(addr[:2]) in self._own:
            return
        if data.startswith(BEACON_MAGIC):
            self.received += 1
            self._on_beacon(str(addr[0]), data)
        elif data.startswith(SOLICIT_MAGIC):
            self._solicited()
        # anything else on our port is not ours to judge: ignored

    def _solicited(self) -> None:
        """Answer a solicitation soon; solicitations that come while one is pending share it."""
        if self._datagram is None or self._reply_pending:
            return
        loop = asyncio.get_running_loop()
        # At most one answer per SOLICIT_HOLDOFF: a later one waits for the holdoff to end rather
        # than being dropped, or a node that asked just after another would not hear us for 30 s.
        wait = max(0.0, self._last_reply + SOLICIT_HOLDOFF - loop.time())
        self._reply_pending = True

        def reply() -> None:
            self._reply_pending = False
            self._last_reply = loop.time()
            if self._datagram is not None:
                self._send(self._datagram)

        loop.call_later(wait + self._rng.uniform(*REPLY_DELAY), reply)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, beacon: Beacon) -> None:
        self._beacon = beacon

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._beacon._received(data, addr)
        except Exception:  # one bad datagram must never stop the receiver
            log.exception("beacon: handling a datagram from %s failed", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("beacon: receive error: %s", exc)


def _receiving_socket(group: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            # Several nodes (or a node and `federation discover`) on one host share the port;
            # multicast datagrams are delivered to every socket bound to it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # On Linux, binding to the group address filters out every other datagram to the port;
        # elsewhere binding to a multicast address is refused, so bind to all addresses.
        sock.bind((group if sys.platform.startswith("linux") else "", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _sending_socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # never past the first router
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.bind((interface, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _mreq(group: str, interface: str) -> bytes:
    return struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))


def _is_ipv4(address: str) -> bool:
    try:
        socket.inet_aton(address)
        return "." in address
    except OSError:
        return False
