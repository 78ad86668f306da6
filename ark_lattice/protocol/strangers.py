"""What a stranger may cost us before it proves it holds the federation key, sans-I/O.

A connection is a stranger's from its first byte until its handshake authenticates the peer. A
stranger has not shown the federation key, so it gets only what a stranger cannot grow
(docs/protocol.md, "Budgets before the handshake"):

- **connections**: at most :attr:`StrangerBudget.per_source` unauthenticated connections at once
  from one address and :attr:`StrangerBudget.total` in all; the driver asks :meth:`Strangers.arrive`
  as it accepts a TCP connection, and drops one over either cap before reading a byte of it;
- **audit**: a failure before the handshake (a refused connection, a bad or oversized handshake
  message, a setup that timed out) is not one ledger event each — a stranger would append them as
  fast as it can connect. :meth:`Strangers.failed` counts them per source address, and
  :meth:`Strangers.due` gives at most one summary per source per
  :attr:`StrangerBudget.summary_interval` (count, the codes, the first and the last reason). At
  most :attr:`StrangerBudget.summary_sources` addresses are named per interval; the failures of
  any others are summed under ``*``. So strangers add at most ``summary_sources + 1`` events to the
  ledger per interval, however many they are and however fast they connect.

Misbehaviour after the handshake is a known peer's and stays one audited strike each (coordinator).
Time is an input: every method that needs it takes ``now``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from ark_lattice.errors import ErrorCode

__all__ = ["StrangerBudget", "Strangers", "OTHERS", "source_of"]

OTHERS = "*"  # the source that stands for every address past summary_sources in one interval


@dataclass(frozen=True)
class StrangerBudget:
    per_source: int = 16  # unauthenticated connections at once from one address
    total: int = 256  # unauthenticated connections at once, from all addresses
    summary_interval: float = 60.0  # seconds: at most one summary event per source in this time
    summary_sources: int = 16  # addresses named per interval; the others are summed under "*"


@dataclass
class _Tally:
    count: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None

    def add(self, code: str, reason: str, now: float) -> None:
        self.count += 1
        self.codes[code] += 1
        entry = {"code": code, "reason": reason[:200], "at": now}
        if self.first is None:
            self.first = entry
        self.last = entry


class Strangers:
    """Unauthenticated connections and pre-handshake failures of one node (module docstring)."""

    def __init__(self, budget: StrangerBudget | None = None) -> None:
        self.budget = budget or StrangerBudget()
        self._open: dict[Hashable, str] = {}  # connection key -> source, until known or gone
        self._per_source: Counter[str] = Counter()
        self._pending: dict[str, _Tally] = {}  # failures not yet summarised, by source
        self._written: dict[str, float] = {}  # source -> when its last summary was due

    # -- connections ------------------------------------------------------------------------

    def arrive(self, key: Hashable, source: str, now: float) -> str | None:
        """A connection from ``source`` (an address, no port) was accepted; ``key`` names it.

        Returns None when it may go on (it counts as a stranger until :meth:`known` or
        :meth:`left`), else why it is refused — counted as a failure of that source.
        """
        if self._per_source[source] >= self.budget.per_source:
            reason = f"over {self.budget.per_source} connections before the handshake from this address"
        elif len(self._open) >= self.budget.total:
            reason = f"over {self.budget.total} connections before the handshake in all"
        else:
            self._open[key] = source
            self._per_source[source] += 1
            return None
        self.failed(source, ErrorCode.RATE_LIMITED, reason, now)
        return reason

    def known(self, key: Hashable) -> None:
        """The connection's peer authenticated: it is no stranger any more."""
        self._forget(key)

    def left(self, key: Hashable) -> None:
        """The connection ended (whatever its state)."""
        self._forget(key)

    def holds(self, key: Hashable) -> bool:
        """Whether ``key`` is an unauthenticated connection we count."""
        return key in self._open

    @property
    def connected(self) -> int:
        """Unauthenticated connections open now."""
        return len(self._open)

    # -- failures ---------------------------------------------------------------------------

    def failed(self, source: str, code: str, reason: str, now: float) -> None:
        """A stranger from ``source`` failed before the handshake (a close, a refusal, a timeout)."""
        if source not in self._pending and source not in self._written:
            named = set(self._pending) | set(self._written)
            named.discard(OTHERS)
            if len(named) >= self.budget.summary_sources:
                source = OTHERS
        self._pending.setdefault(source, _Tally()).add(str(code), reason, now)

    def due(self, now: float) -> list[dict[str, Any]]:
        """The summaries to write now: one per source whose last one is an interval old or more."""
        interval = self.budget.summary_interval
        out = []
        for source in list(self._pending):
            if now >= self._written.get(source, float("-inf")) + interval:
                out.append(self._summary(source, self._pending.pop(source), now))
                self._written[source] = now
        stale = [s for s, at in self._written.items() if at + interval <= now and s not in self._pending]
        for source in stale:
            del self._written[source]  # its slot is free again
        return out

    def next_due(self) -> float | None:
        """When :meth:`due` next has something to give, if ever (it may be in the past: now)."""
        interval = self.budget.summary_interval
        times = [self._written.get(s, float("-inf")) + interval for s in self._pending]
        if not times:
            return None
        return min(times)

    def flush(self, now: float) -> list[dict[str, Any]]:
        """Every pending summary, due or not (the node is stopping)."""
        out = [self._summary(s, tally, now) for s, tally in self._pending.items()]
        self._pending.clear()
        return out

    # -- private ----------------------------------------------------------------------------

    def _forget(self, key: Hashable) -> None:
        source = self._open.pop(key, None)
        if source is not None:
            self._per_source[source] -= 1
            if not self._per_source[source]:
                del self._per_source[source]

    def _summary(self, source: str, tally: _Tally, now: float) -> dict[str, Any]:
        assert tally.first is not None and tally.last is not None
        last = tally.last
        noun = "failure" if tally.count == 1 else "failures"
        return {
            # code/reason/fatal: the shape of every protocol.error event (`federation status`
            # shows the newest per subject); the rest is the summary.
            "subject": source,
            "code": last["code"],
            "reason": f"{tally.count} {noun} before the handshake; last: {last['reason']}",
            "fatal": True,
            "summary": True,
            "count": tally.count,
            "codes": dict(sorted(tally.codes.items())),
            "first": tally.first,
            "last": last,
            "interval": self.budget.summary_interval,
        }


def source_of(remote: str) -> str:
    """The address part of a ``host:port`` remote (``[v6]:port`` too): strangers are counted per
    address, since a port is free to change with every connection."""
    host, sep, port = remote.rpartition(":")
    if not sep or not port.isdigit():
        return remote
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host
