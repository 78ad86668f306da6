"""Audit without amplification: a policy decision already in the audit trail is counted, not
written again.

Every policy decision is audited (DESIGN §9), but some are taken again and again about the same
thing: while a peer is sandboxed, each sync round it offers the packets it holds that we got from
someone else, we want them (our set for a sandbox peer is only what it sent us), and the policy
decides each one again — one ~45 KB ``policy.decision`` event every two seconds about packets we
already hold. A decision identical to one already written (same hook, peer, subject, outcome and
rules) adds nothing to the trail but the fact that it happened again; :class:`RepeatedDecisions`
lets the first one through and counts the rest, per peer, into summary records written once per
interval (``[limits] audit_summary_s``): "N decisions already audited were taken again between
first and last". So a peer that syncs forever grows the ledger by one summary per interval, not by
one record per packet per round.

The same goes for a flood: a packet refused by a rate limit (rules ``rate:<id>``) is news the first
:data:`FLOOD_WRITTEN` times in a peer's interval; past that, each one only adds a packet id nobody
asked to see, so the rest are counted into the summary too (the strikes they earn are still one
ledger event each, and isolate the peer).

A summary is shaped like a decision record (hook, peer, subject, allowed, rules, reason) plus
``repeats``, ``first`` and ``last`` (the decision times, seconds), so ``ark-lattice audit`` lists it
with the rest. The memory of what was written is bounded (:data:`MEMORY` keys, least recently
seen forgotten first, approximately, in arrays of a fixed size: policy/recent.py): a forgotten
decision is simply written again. Pure: time is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ark_lattice.policy.recent import RecentKeys

__all__ = ["RepeatedDecisions", "MEMORY", "DEFAULT_INTERVAL", "FLOOD_WRITTEN"]

MEMORY = 65_536  # decisions remembered as written (~20 bytes each, allocated at once: recent.py)
DEFAULT_INTERVAL = 300.0  # seconds between two summaries of one peer's repeats
FLOOD_WRITTEN = 16  # rate-limit refusals of one peer written one by one per interval
_REPEAT, _FLOOD = "repeat", "flood"


@dataclass
class _Tally:
    repeats: int
    first: float
    last: float


class RepeatedDecisions:
    """Sifts decision records: new ones go to the ledger, repeats into per-peer summaries."""

    def __init__(self, *, memory: int = MEMORY) -> None:
        if memory < 1:
            raise ValueError("the memory of written decisions must hold at least one")
        self.memory = memory
        # hashes of (hook, peer, subject, allowed, rules), least recently seen forgotten first. The
        # hash is salted per process, so a peer cannot choose subjects that collide; a collision
        # would only count one decision as a repeat, never hide that it was taken.
        self._written = RecentKeys(memory)
        # peer -> (kind, hook, allowed, rules) -> tally, and when the peer's current interval began
        self._tallies: dict[str, dict[tuple[str, str, bool, tuple[str, ...]], _Tally]] = {}
        self._since: dict[str, float] = {}
        self._floods: dict[str, int] = {}  # rate-limit refusals written in the peer's interval

    def sift(self, records: Iterable[Mapping[str, Any]], now: float) -> list[Mapping[str, Any]]:
        """The records to write now; the rest were written before and are counted."""
        fresh: list[Mapping[str, Any]] = []
        written = self._written
        for record in records:
            rules = tuple(record.get("rules") or ())
            hook, peer = str(record.get("hook")), str(record.get("peer"))
            allowed = bool(record.get("allowed"))
            key = hash((hook, peer, str(record.get("subject")), allowed, rules))
            if written.touch(key):
                self._count(peer, (_REPEAT, hook, allowed, rules), now)
                continue
            if not allowed and any(rule.startswith("rate:") for rule in rules):
                floods = self._floods.get(peer, 0)
                if floods >= FLOOD_WRITTEN:
                    self._count(peer, (_FLOOD, hook, allowed, rules), now)
                    continue
                self._floods[peer] = floods + 1
            written.add(key)
            fresh.append(record)
        return fresh

    def _count(self, peer: str, group_key: tuple[str, str, bool, tuple[str, ...]], now: float) -> None:
        group = self._tallies.setdefault(peer, {})
        self._since.setdefault(peer, now)
        tally = group.get(group_key)
        if tally is None:
            group[group_key] = _Tally(1, now, now)
        else:
            tally.repeats += 1
            tally.last = max(tally.last, now)

    def due(self, now: float, interval: float = DEFAULT_INTERVAL) -> list[dict[str, Any]]:
        """Summaries of the peers whose interval has passed at ``now`` (their tallies restart)."""
        ready = [peer for peer, since in self._since.items() if now - since >= interval]
        return [summary for peer in ready for summary in self._take(peer)]

    def drain(self) -> list[dict[str, Any]]:
        """Every summary still pending (the node is stopping)."""
        return [summary for peer in list(self._since) for summary in self._take(peer)]

    @property
    def pending(self) -> int:
        """Repeats counted and not yet summarised."""
        return sum(t.repeats for group in self._tallies.values() for t in group.values())

    def _take(self, peer: str) -> list[dict[str, Any]]:
        del self._since[peer]
        self._floods.pop(peer, None)
        out = []
        for (kind, hook, allowed, rules), tally in sorted(self._tallies.pop(peer, {}).items()):
            verb = "allowed" if allowed else "denied"
            if kind == _REPEAT:
                reason = (f"{tally.repeats} decisions already audited were taken again ({verb}, "
                          "same subjects and rules)")
            else:
                reason = (f"{tally.repeats} more packets refused by rate limit "
                          f"{', '.join(r.removeprefix('rate:') for r in rules)} past the first "
                          f"{FLOOD_WRITTEN} of the interval")
            out.append({
                "hook": hook,
                "peer": peer,
                "subject": "",
                "allowed": allowed,
                "rules": list(rules),
                "reason": reason,
                "repeats": tally.repeats,
                "first": int(tally.first),
                "last": int(tally.last),
            })
        return out
