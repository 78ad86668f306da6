"""LAN discovery (DESIGN §7): signed mDNS/DNS-SD records and signed UDP multicast beacons.

Layout, sans-I/O core first:

- ``announcement.py`` — the signed announcement and its two carriers (beacon datagram, TXT record);
- ``sightings.py`` — what was heard, what is dropped (flood, forgery, expiry, ours, replay);
- ``mdns.py``, ``beacon.py`` — the runtime carriers (python-zeroconf; an asyncio UDP socket);
- ``lan.py`` — :class:`~ark_lattice.discovery.lan.Discovery`, which the node runtime starts after
  the federation and stops before it, and the one-shot browse of ``federation discover``.

This package root stays light (no zeroconf, no sockets) so the CLI can read the defaults.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ark_lattice.errors import UsageError

__all__ = ["DiscoveryConfig", "SERVICE_TYPE", "DEFAULT_GROUP", "DEFAULT_BEACON_PORT"]

SERVICE_TYPE = "_ark-lattice._tcp.local."
#: Organisation-local scope (RFC 2365 §6.2, 239.255.0.0/16), so routers at the site edge drop it;
#: 70.67 is "FC" in ASCII. The port is the node's default port (7467) plus one.
DEFAULT_GROUP = "239.255.70.67"
DEFAULT_BEACON_PORT = 7468


@dataclass(frozen=True)
class DiscoveryConfig:
    """Which carriers a node runs; both are on unless the operator says otherwise."""

    mdns: bool = True
    beacon: bool = True
    group: str = DEFAULT_GROUP
    beacon_port: int = DEFAULT_BEACON_PORT

    def __post_init__(self) -> None:
        try:
            group = ipaddress.ip_address(self.group)
        except ValueError:
            raise UsageError(f"{self.group!r} is not an IPv4 multicast group") from None
        if group.version != 4 or not group.is_multicast:
            raise UsageError(f"{self.group} is not an IPv4 multicast group (224.0.0.0/4)")
        if not 0 < self.beacon_port < 65536:
            raise UsageError(f"the beacon port must be between 1 and 65535, not {self.beacon_port}")
