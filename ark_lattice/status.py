"""A running node's status as an operator reads it (``federation status``, DESIGN §12).

The node answers the ``status`` control command with one snapshot (runtime/node.py). What only two
snapshots tell — how fast packets and bytes flow on each session — and which dial targets are
waiting rather than connected are worked out here, so the views stay rendering only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CatchUp", "Rates", "catch_up", "dial_result", "session_key", "session_rates", "waiting_targets"]

SessionKey = tuple[str, str]


@dataclass(frozen=True)
class Rates:
    """Per second, between two snapshots."""

    packets_in: float
    packets_out: float
    bytes_in: float
    bytes_out: float


def session_key(conn: Mapping[str, Any]) -> SessionKey:
    """What tells one session from another across snapshots: its role and remote address (the
    peer is unknown while the handshake runs)."""
    return str(conn.get("role", "")), str(conn.get("remote", ""))


def session_rates(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> dict[SessionKey, Rates]:
    """Rates of the sessions present in both snapshots of the same run of the same node.

    Time is the node's uptime (monotonic), not the wall clock; a counter that went down means a
    new session at the same address, which has no rate yet.
    """
    if previous is None or previous.get("node_id") != current.get("node_id"):
        return {}
    elapsed = float(current.get("uptime_s", 0)) - float(previous.get("uptime_s", 0))
    if elapsed <= 0:
        return {}
    before = {session_key(c): c for c in previous.get("connections", [])}
    out: dict[SessionKey, Rates] = {}
    for conn in current.get("connections", []):
        old = before.get(session_key(conn))
        if old is None:
            continue
        deltas = [
            int(conn.get(f, 0)) - int(old.get(f, 0))
            for f in ("packets_in", "packets_out", "bytes_in", "bytes_out")
        ]
        if min(deltas) < 0:
            continue
        out[session_key(conn)] = Rates(*(d / elapsed for d in deltas))
    return out


def waiting_targets(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dial targets with no dial or session under way, each with the ``reason`` in words."""
    out = []
    for target in status.get("dialling", []):
        if target.get("dialling"):
            continue
        reason = dial_result(target)
        if target.get("foreign"):
            reason += ": it holds another federation key"
        out.append({**target, "reason": reason})
    return out


def dial_result(target: Mapping[str, Any]) -> str:
    """How a dial target stands, in words (the coordinator's ``dial_targets`` entry)."""
    if target.get("dialling"):
        return "dialling"
    if target.get("foreign"):
        return "in another federation"
    if target.get("blocked_by_peer"):
        return "blocked by peer"
    if target.get("last_error"):
        return str(target["last_error"])
    if not target.get("dials"):
        return "not dialled yet"
    return "the session ended"


@dataclass(frozen=True)
class CatchUp:
    """How far a sync the operator started has got, from the snapshot taken when it started."""

    received: int  # packets received on the node's sessions since then
    pending: int  # packets asked for and not arrived yet
    done: bool  # every session we initiated has reconciled since then and nothing is pending


def catch_up(first: Mapping[str, Any], current: Mapping[str, Any], since: float) -> CatchUp:
    """Progress of `federation sync --wait`: ``since`` is the node's clock when it started.

    Only sessions we initiated reconcile on request (the peer drives the others), so those are
    the ones that must report a sync at or after ``since``.
    """
    before = {session_key(c): int(c.get("packets_in") or 0) for c in first.get("connections", [])}
    received = pending = 0
    done = True
    for conn in current.get("connections", []):
        received += max(0, int(conn.get("packets_in") or 0) - before.get(session_key(conn), 0))
        pending += int(conn.get("wanting") or 0)
        flows = conn.get("sends") or conn.get("receives")
        if conn.get("role") == "initiator" and conn.get("state") == "open" and flows:
            if conn.get("syncing") or (conn.get("last_sync") or 0) < since:
                done = False
    return CatchUp(received, pending, done and pending == 0)
