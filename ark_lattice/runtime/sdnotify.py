"""Telling systemd how the node is doing: readiness, the watchdog, stopping (sd_notify(3)).

The protocol is one datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Under ``Type=notify`` the unit
is started once the node says ``READY=1`` — after it listens and serves its control socket — and
with ``WatchdogSec=`` systemd restarts a node whose ``WATCHDOG=1`` pings stop: they are sent from
the event loop, so a wedged loop stops them. Without ``$NOTIFY_SOCKET`` (not under systemd) every
call is a no-op. Only the standard library: the protocol is a few lines, not worth a dependency.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval"]

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # the abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock and other forms: not for a node on a host's systemd


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC`` (as sd_watchdog_enabled(3) advises), or
    None without a watchdog or when ``$WATCHDOG_PID`` names another process."""
    pid, usec = env.get("WATCHDOG_PID"), env.get("WATCHDOG_USEC")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


class Notifier:
    """The node's notification socket, if systemd gave one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.interval = watchdog_interval(env) if self.address is not None else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of ``fields`` (``"READY=1"``, …); True if it went out."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:  # systemd gone or the socket not ours: the node serves on regardless
            log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc.strerror)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")

    async def keep_alive(self) -> None:
        """Ping the watchdog until cancelled; returns at once without one."""
        if self.interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.interval)
