"""A LAN of network namespaces: hosts joined by one bridge, built and removed with iproute2.

Used by ``bench discovery`` and by the multi-host tests (STYLE: multi-host tests use network
namespaces). Needs root and ``ip``. Every namespace, link and address is created here and removed
by :meth:`NetLab.destroy`; nothing is attached to the namespace this process runs in, and the
addresses are in a private subnet that is never routed anywhere, so no datagram leaves the lab::

    ns <prefix>-br:  br0 (bridge, multicast snooping off so every port hears every group)
                       ├─ p1 ══ veth ══ lan0 in ns <prefix>-h1   10.231.0.1/24
                       ├─ p2 ══ veth ══ lan0 in ns <prefix>-h2   10.231.0.2/24
                       └─ …

Each host has ``lo`` up and a route for 224.0.0.0/4 on ``lan0`` (a host without one cannot send
multicast without choosing an interface first).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["NetLab", "Host", "unavailable", "SUBNET"]

SUBNET = "10.231.0"
LINK = "lan0"


def unavailable() -> str | None:
    """Why a lab cannot be built here, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is missing"
    return None


@dataclass(frozen=True)
class Host:
    index: int
    netns: str
    address: str
    link: str = LINK

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it on the host."""
        return ["ip", "netns", "exec", self.netns]


class NetLab:
    def __init__(self, hosts: int, *, prefix: str | None = None, subnet: str = SUBNET) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError("a lab has 1 to 200 hosts")
        self.prefix = prefix or f"arkl{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.bridge_ns = f"{self.prefix}-br"
        self.hosts = [Host(i, f"{self.prefix}-h{i}", f"{subnet}.{i}") for i in range(1, hosts + 1)]
        self._made: list[str] = []

    def __enter__(self) -> NetLab:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> None:
        try:
            self._netns_add(self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            for host in self.hosts:
                self._netns_add(host.netns)
                port = f"p{host.index}"
                _ip("link", "add", host.link, "netns", host.netns, "type", "veth",
                    "peer", "name", port, "netns", self.bridge_ns)
                _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
                _ip("-n", self.bridge_ns, "link", "set", port, "up")
                _ip("-n", host.netns, "link", "set", "lo", "up")
                _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.link)
                self.set_link(host, up=True)
        except BaseException:
            self.destroy()
            raise

    def set_link(self, host: Host, *, up: bool) -> None:
        """Take the host's LAN link down or up (up also restores the multicast route)."""
        _ip("-n", host.netns, "link", "set", host.link, "up" if up else "down")
        if up:
            # Taking a link down drops the routes through it; the connected one comes back by
            # itself, the multicast one does not.
            _ip("-n", host.netns, "route", "replace", "224.0.0.0/4", "dev", host.link)

    def address(self, host: Host, address: str, *, add: bool = True) -> None:
        """Give the host's LAN link one more address in the lab subnet, or take it away."""
        _ip("-n", host.netns, "addr", "add" if add else "del", f"{address}/24", "dev", host.link)

    def destroy(self) -> None:
        """Delete every namespace made (their veths and the bridge go with them)."""
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._made.clear()

    def _netns_add(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
