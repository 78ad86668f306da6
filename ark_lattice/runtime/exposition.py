"""Prometheus text for the node's metric set, and the ``/metrics`` endpoint on the node's loop.

Needs prometheus-client (the optional ``metrics`` extra); nothing imports this module unless the
operator asked for metrics. The text is prometheus-client's own exposition (``generate_latest``)
of a custom collector that builds the families from a snapshot (runtime/metrics.py).

The endpoint is a small HTTP/1.1 handler on the node's own event loop (``asyncio.start_server``):
a scrape takes the snapshot where the counters and the store live, with no thread and no lock, and
never blocks the loop (the store is read through its async methods).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ark_lattice.errors import UsageError
from ark_lattice.runtime.metrics import Family

__all__ = ["CONTENT_TYPE", "MetricsServer", "SnapshotCollector", "prometheus_text"]

log = logging.getLogger("ark_lattice.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
REQUEST_SECONDS = 10.0  # a client gets this long to send its request
MAX_HEADER_LINES = 100
MAX_LINE = 8 * 1024


class SnapshotCollector:
    """A prometheus-client collector over one snapshot's families."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for fam in self.families:
            metric: CounterMetricFamily | GaugeMetricFamily
            if fam.kind == "counter":
                metric = CounterMetricFamily(fam.name, fam.help, labels=fam.labels)
            else:
                metric = GaugeMetricFamily(fam.name, fam.help, labels=fam.labels)
            for values, value in fam.samples:
                metric.add_metric(list(values), value)
            yield metric


def prometheus_text(families: Iterable[Family]) -> bytes:
    """The families in the Prometheus text format (0.0.4), as prometheus-client writes it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(list(families)))
    return generate_latest(registry)


class MetricsServer:
    """Serves ``GET /metrics`` on ``host:port``; each scrape awaits ``snapshot()``."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], Awaitable[Sequence[Family]]]) -> None:
        self.host = host
        self.port = port
        self._snapshot = snapshot
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_LINE)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's text repeats the address
            raise UsageError(f"cannot serve metrics on {self.host}:{self.port}: {reason}") from None
        self.port = self._server.sockets[0].getsockname()[1]  # the real one when asked for port 0
        log.info("serving metrics on %s", self.url)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                request = await reader.readline()
                for _ in range(MAX_HEADER_LINES):  # headers: read and ignore
                    if (await reader.readline()).strip() == b"":
                        break
            parts = request.split()
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
                await _respond(writer, 400, b"bad request\n")
            elif parts[0] not in (b"GET", b"HEAD"):
                await _respond(writer, 405, b"only GET\n", extra=b"Allow: GET, HEAD\r\n")
            elif parts[1].split(b"?")[0] != b"/metrics":
                await _respond(writer, 404, b"see /metrics\n")
            else:
                body = prometheus_text(await self._snapshot())
                await _respond(writer, 200, body, content_type=CONTENT_TYPE, head=parts[0] == b"HEAD")
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass  # a slow, vanished or over-long client: nothing to answer
        except Exception:
            log.exception("a metrics scrape failed")
            try:
                await _respond(writer, 500, b"internal error; see the node's log\n")
            except Exception:
                pass
        finally:
            writer.close()


_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"
}


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    extra: bytes = b"",
    head: bool = False,
) -> None:
    header = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode() + extra + b"\r\n"
    writer.write(header if head else header + body)
    await writer.drain()
