"""The audit trail (DESIGN §9): every policy decision, read back from the ledger.

Decisions are written in batches (one ``policy.decision`` event holds many, so auditing stays
cheap on the sync path); this module expands them again, newest first, with their event's time.
"""

from __future__ import annotations

from typing import Any

from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store

__all__ = ["decisions"]


async def decisions(
    store: Store,
    *,
    peer: str | None = None,
    allowed: bool | None = None,
    hook: str | None = None,
    since_ms: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for event in await store.events(kind=EventKind.POLICY_DECISION, since_ms=since_ms):
        records = event.fields.get("decisions") or []
        for record in reversed(records):  # newest first, like the events
            if peer is not None and record.get("peer") != peer:
                continue
            if allowed is not None and record.get("allowed") is not allowed:
                continue
            if hook is not None and record.get("hook") != hook:
                continue
            out.append({"seq": event.seq, "ts": event.ts, **record})
            if limit is not None and len(out) >= limit:
                return out
    return out
