"""LAN discovery of one node: both carriers, the addresses we announce, and what we heard.

:class:`Discovery` is started by the node runtime after the federation and stopped before it.
It signs our :class:`Announcement` for the endpoints we can be reached at, hands it to the
carriers (mDNS, beacon), re-signs it when those endpoints change (interfaces are polled every
``INTERFACE_POLL`` seconds) and at half its lifetime, and passes every announcement that
:class:`Sightings` lets through to ``on_peer`` — in the node, ``Federation.discovered``, which
records the peer as ``unknown`` and dials it only if its tier says so (DESIGN §7).

Endpoints: a node bound to one address announces ``ws://<that address>:<port>``; a node bound to
all addresses announces one endpoint per interface address (IPv4; IPv6 too when bound to ``::``),
loopback excepted. A node bound to a loopback address is unreachable from the LAN and announces
nothing; it does not listen either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ark_lattice.discovery import DiscoveryConfig
from ark_lattice.discovery.announcement import (
    DEFAULT_LIFETIME,
    MAX_ENDPOINTS,
    Announcement,
    SignedAnnouncement,
)
from ark_lattice.discovery.sightings import Heard, Outcome, Sightings
from ark_lattice.identity import Identity, NodeId

__all__ = ["Discovery", "browse", "lan_addresses", "endpoints_for", "multicast_interfaces", "INTERFACE_POLL"]

log = logging.getLogger("ark_lattice.discovery")

INTERFACE_POLL = 2.0
PASS_ON_GRACE = 5.0  # seconds a stopping node waits for peers being recorded
WILDCARDS = ("0.0.0.0", "::", "")

OnPeer = Callable[[str, list[str], str], Awaitable[None]]


def lan_addresses(bind: str) -> tuple[list[str], str | None]:
    """The addresses a node bound to ``bind`` is reachable at from the LAN, or why there are none."""
    if bind not in WILDCARDS:
        try:
            ip = ipaddress.ip_address(bind)
        except ValueError:
            return [bind], None  # a host name: announced as given
        if ip.is_loopback:
            return [], f"bound to the loopback address {bind}"
        return [bind], None
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            if isinstance(entry.ip, str):  # IPv4; an IPv6 entry is (address, flowinfo, scope_id)
                ip = ipaddress.ip_address(entry.ip)
            elif bind != "0.0.0.0" and isinstance(entry.ip, tuple):
                ip = ipaddress.ip_address(entry.ip[0])
                if ip.is_link_local:  # needs a zone index, which a URL cannot carry portably
                    continue
            else:
                continue
            if not ip.is_loopback and not ip.is_multicast and not ip.is_unspecified:
                found.append(str(ip))
    found = sorted(set(found), key=lambda a: (":" in a, ipaddress.ip_address(a)))
    return found[:MAX_ENDPOINTS], None if found else "no LAN interface has an address"


def endpoints_for(addresses: list[str], port: int) -> list[str]:
    return [f"ws://[{a}]:{port}" if ":" in a else f"ws://{a}:{port}" for a in addresses]


def multicast_interfaces(addresses: list[str]) -> list[str]:
    """The IPv4 interface addresses both carriers join their groups on and send from.

    Those we announce, if any is an IPv4 address; otherwise (bound to a host name or to one IPv6
    address) every IPv4 LAN address, since the announcement still has to travel somewhere.
    """
    own = [a for a in addresses if _is_ipv4(a)]
    return own if own else [a for a in lan_addresses("0.0.0.0")[0] if _is_ipv4(a)]


def _is_ipv4(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 4
    except ValueError:
        return False


class Discovery:
    """Announce this node on the LAN and hear the others (or only hear, for a one-shot browse)."""

    def __init__(
        self,
        *,
        config: DiscoveryConfig,
        bind: str,
        port: int,
        identity: Identity | None = None,
        local: NodeId | None = None,
        name: str = "",
        on_peer: OnPeer | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        lifetime: int = DEFAULT_LIFETIME,
    ) -> None:
        self.config = config
        self.bind = bind
        self.port = port
        self.identity = identity  # None: listen only
        self.name = name
        self.clock = clock
        self.rng = rng or random.Random()
        self.lifetime = lifetime
        self.sightings = Sightings(identity.node_id if identity is not None else local)
        self.started_at: float | None = None
        self.disabled: str | None = None  # why discovery does nothing, if it does nothing
        self._on_peer = on_peer
        self._addresses: list[str] = []
        self._interfaces: list[str] = []
        self._signed: SignedAnnouncement | None = None
        self._carriers: list[Any] = []
        self._state: dict[str, str] = {
            "mdns": "on" if config.mdns else "off",
            "beacon": "on" if config.beacon else "off",
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.started_at = self.clock()
        if not (self.config.mdns or self.config.beacon):
            self.disabled = "switched off"
            log.info("discovery off: --no-mdns and --no-multicast")
            return
        addresses, why = lan_addresses(self.bind)
        if why and self.bind not in WILDCARDS:
            self.disabled = why
            self._state = {k: "off" if v == "off" else f"off: {why}" for k, v in self._state.items()}
            log.info("discovery off: %s", why)
            return
        self._addresses = addresses
        self._interfaces = multicast_interfaces(addresses)
        self._signed = self._sign()
        if self.config.mdns:
            from ark_lattice.discovery.mdns import Mdns

            await self._start_carrier("mdns", Mdns(self._heard_txt, self._gone_txt))
        if self.config.beacon:
            from ark_lattice.discovery.beacon import Beacon

            beacon = Beacon(self.config.group, self.config.beacon_port, self._heard_beacon, rng=self.rng)
            await self._start_carrier("beacon", beacon)
        self._watcher = asyncio.create_task(self._watch(), name="discovery-watch")
        if self._signed is not None:
            log.info(
                "announcing %s on the LAN (%s)",
                ", ".join(self._signed.announcement.endpoints),
                ", ".join(f"{k} {v}" for k, v in self._state.items()),
            )

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for carrier in self._carriers:  # first, so nothing new is heard while we finish
            try:
                await carrier.stop()
            except Exception as exc:  # stopping one carrier must not keep the node from stopping
                log.warning("discovery: stopping %s failed: %s", carrier.source, exc)
        self._carriers.clear()
        if self._tasks:
            # Let peers being recorded finish: cancelling a store write halfway gains nothing.
            await asyncio.wait(list(self._tasks), timeout=PASS_ON_GRACE)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def solicit(self) -> None:
        """Ask the nodes on the link to send their beacons now (if the beacon runs)."""
        for carrier in self._carriers:
            if hasattr(carrier, "solicit"):
                carrier.solicit()

    def snapshot(self) -> dict[str, Any]:
        """What ``federation discover`` prints (the control command ``discovered``)."""
        now = self.clock()
        a = self._signed.announcement if self._signed is not None else None
        return {
            "running": True,
            "mdns": self._state["mdns"],
            "beacon": self._state["beacon"],
            "group": f"{self.config.group}:{self.config.beacon_port}",
            "started_at": self.started_at,
            "now": now,
            "announcing": list(a.endpoints) if a else [],
            "interfaces": list(self._interfaces),
            "seen": self.sightings.rows(now),
        }

    # -- private ----------------------------------------------------------------------------

    async def _start_carrier(self, name: str, carrier: Any) -> None:
        try:
            await carrier.start(list(self._interfaces), self._signed)
        except Exception as exc:  # no discovery is a degraded node, not a dead one
            self._state[name] = f"failed: {exc}"
            log.warning("discovery: %s could not start: %s", name, exc)
            try:
                await carrier.stop()
            except Exception:
                pass
            return
        self._carriers.append(carrier)

    def _sign(self) -> SignedAnnouncement | None:
        if self.identity is None or not self._addresses:
            return None
        announcement = Announcement.build(
            self.identity.node_id,
            endpoints_for(self._addresses, self.port),
            self.port,
            now=self.clock(),
            name=self.name,
            lifetime=self.lifetime,
        )
        return announcement.sign(self.identity)

    async def _watch(self) -> None:
        """Re-announce on a change of address, and before the announcement expires."""
        while True:
            await asyncio.sleep(INTERFACE_POLL)
            try:
                addresses, _ = lan_addresses(self.bind)
            except OSError as exc:
                log.debug("discovery: cannot list interfaces: %s", exc)
                continue
            current = self._signed.announcement if self._signed is not None else None
            half_life = current is not None and self.clock() >= (current.issued_at + current.expires_at) / 2
            if addresses == self._addresses and not half_life:
                continue
            if addresses != self._addresses:
                log.info("LAN addresses changed: %s", ", ".join(addresses) or "none")
            self._addresses = addresses
            self._interfaces = multicast_interfaces(addresses)
            self._signed = self._sign()
            for carrier in self._carriers:
                try:
                    await carrier.update(list(self._interfaces), self._signed)
                except Exception as exc:
                    log.warning("discovery: %s could not re-announce: %s", carrier.source, exc)

    def _heard_beacon(self, sender: str, datagram: bytes) -> None:
        self._heard("beacon", sender, datagram)

    def _heard_txt(self, name: str, properties: Mapping[bytes, bytes | None]) -> None:
        self._heard("mdns", name, properties)

    def _gone_txt(self, name: str) -> None:
        self.sightings.gone("mdns", name)

    def _heard(self, source: str, sender: str, raw: Any) -> None:
        heard = self.sightings.hear(source, sender, raw, self.clock())
        if heard.outcome is Outcome.REJECTED:
            if heard.times == 1 or heard.times % 100 == 0:  # a flood must not flood the log too
                log.warning(
                    "dropped a %s announcement from %s: %s (%d so far)",
                    source, sender, heard.reason, heard.times,
                )
            return
        if not heard.outcome.passes:
            return
        self._report(source, sender, heard)

    def _report(self, source: str, sender: str, heard: Heard) -> None:
        a = heard.announcement
        assert a is not None
        if heard.outcome is not Outcome.REFRESHED:
            log.info(
                "discovered %s (%s) at %s via %s from %s%s",
                a.node_id.short,
                a.name or "no name",
                ", ".join(a.endpoints),
                source,
                sender,
                "" if heard.outcome is Outcome.NEW else " (changed)",
            )
        if self._on_peer is None:
            return
        passing_on = self._pass_on(str(a.node_id), list(a.endpoints), source)
        task = asyncio.get_running_loop().create_task(passing_on)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pass_on(self, peer_id: str, endpoints: list[str], source: str) -> None:
        assert self._on_peer is not None
        try:
            await self._on_peer(peer_id, endpoints, source)
        except Exception as exc:
            log.warning("discovery: recording peer %s failed: %s", peer_id[:8], exc)


async def browse(
    config: DiscoveryConfig, *, timeout: float, local: NodeId | None = None, bind: str = "0.0.0.0"
) -> dict[str, Any]:
    """Listen for ``timeout`` seconds without announcing (``federation discover`` with no node)."""
    discovery = Discovery(config=config, bind=bind, port=0, local=local)
    await discovery.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        # A second solicitation after a short while covers one lost datagram.
        await asyncio.sleep(min(1.0, timeout / 2))
        discovery.solicit()
        await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
        snapshot = discovery.snapshot()
    finally:
        await discovery.stop()
    snapshot["running"] = False
    return snapshot
