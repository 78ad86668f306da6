"""mDNS/DNS-SD with python-zeroconf (DESIGN §7): register our signed TXT record, browse for others.

Runtime: this module owns the zeroconf instance; what a TXT record means is decided in
``announcement.py`` and ``sightings.py``. zeroconf is imported here only, never at CLI import time.

- Service type ``_ark-lattice._tcp.local.``; instance ``<short node ID>._ark-lattice._tcp.local.``
  on host ``ark-<short node ID>.local.``, with the addresses we announce and the signed TXT record.
- No probing (RFC 6762 §8.1): the instance name is derived from our public key, so it collides by
  accident with odds of 2^-40, and a deliberate squatter answers probes too — the signature, not the
  name, says who is who. Skipping it saves about 1.5 s (zeroconf probes three times 500 ms apart)
  before the first announcement.
- A change of address or announcement is published with ``async_update_service`` (and
  ``async_update_interfaces``), a clean stop sends goodbyes (``async_close`` unregisters).
- Browsing: every added or updated instance is resolved (one resolution per name at a time) and its
  TXT properties are handed to ``on_txt(name, properties)``; a goodbye to ``on_gone(name)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ark_lattice.discovery import SERVICE_TYPE
from ark_lattice.discovery.announcement import SignedAnnouncement

__all__ = ["Mdns", "RESOLVE_TIMEOUT_MS"]

log = logging.getLogger("ark_lattice.discovery")

RESOLVE_TIMEOUT_MS = 3000
CLOSE_TIMEOUT = 5.0


class Mdns:
    source = "mdns"

    def __init__(
        self,
        on_txt: Callable[[str, Mapping[bytes, bytes | None]], None],
        on_gone: Callable[[str], None],
    ) -> None:
        self._on_txt = on_txt
        self._on_gone = on_gone
        self._aiozc: Any = None
        self._browser: Any = None
        self._info: Any = None
        self._interfaces: list[str] = []
        self._resolving: dict[str, bool] = {}  # name -> asked again while resolving
        self._tasks: set[asyncio.Task[Any]] = set()
        self.own_name: str | None = None

    async def start(self, interfaces: list[str], signed: SignedAnnouncement | None) -> None:
        self._interfaces = [a for a in interfaces if ":" not in a]
        if not self._interfaces:
            log.info("mdns: no LAN interface yet; waiting for one")
            return
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        self._aiozc = AsyncZeroconf(interfaces=list(self._interfaces), ip_version=IPVersion.V4Only)
        try:
            if signed is not None:
                self._info = self._service_info(signed)
                self.own_name = self._info.name
                await self._aiozc.async_register_service(self._info, cooperating_responders=True)
            self._browser = AsyncServiceBrowser(
                self._aiozc.zeroconf, SERVICE_TYPE, handlers=[self._state_changed]
            )
        except BaseException:
            await self._close()
            raise

    async def update(self, interfaces: list[str], signed: SignedAnnouncement | None) -> None:
        wanted = [a for a in interfaces if ":" not in a]
        if self._aiozc is None:
            if wanted:
                await self.start(wanted, signed)
            return
        if wanted and wanted != self._interfaces:
            self._interfaces = wanted
            await self._aiozc.async_update_interfaces(interfaces=list(wanted))
        if signed is not None and self._info is not None:
            self._info = self._service_info(signed)
            await self._aiozc.async_update_service(self._info)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close()

    # -- private ----------------------------------------------------------------------------

    def _service_info(self, signed: SignedAnnouncement) -> Any:
        from zeroconf.asyncio import AsyncServiceInfo

        a = signed.announcement
        short = a.node_id.short
        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"{short}.{SERVICE_TYPE}",
            port=a.port,
            properties=signed.to_txt(),
            server=f"ark-{short}.local.",
            parsed_addresses=list(self._interfaces),
        )

    async def _close(self) -> None:
        if self._aiozc is None:
            return
        aiozc, self._aiozc = self._aiozc, None
        try:
            if self._browser is not None:
                await self._browser.async_cancel()
            # Unregisters (goodbye packets, RFC 6762 §10.1) and closes the sockets.
            await asyncio.wait_for(aiozc.async_close(), CLOSE_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            log.warning("mdns: closing was not clean: %s", exc)
        finally:
            self._browser = None

    def _state_changed(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        if name == self.own_name:
            return
        if state_change is ServiceStateChange.Removed:
            self._on_gone(name)
            return
        if name in self._resolving:
            self._resolving[name] = True  # resolve once more when the running one ends
            return
        self._resolving[name] = False
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, zeroconf: Any, service_type: str, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        try:
            while True:
                self._resolving[name] = False
                info = AsyncServiceInfo(service_type, name)
                if await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS) and info.properties is not None:
                    self._on_txt(name, info.properties)
                if not self._resolving.get(name):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a resolution failing is one peer unheard, not a node down
            log.info("mdns: resolving %s failed: %s", name, exc)
        finally:
            self._resolving.pop(name, None)
