"""Who is in our federation, as far as this node knows, and what it dials: pure functions.

``federation discover`` marks each sighting as a ``member`` (it passed our handshake: we hold its
manifest), ``foreign`` (a dial of one of its endpoints, or a dial from its host, failed because it
holds another federation key) or ``unchecked`` (heard, never connected). ``federation endpoints``
lists every address the node dials or remembers, with its source and what became of the last dial.
Both take plain data — rows from the store and the coordinator's snapshot — and ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ark_lattice.status import dial_result
from ark_lattice.terms import worth_a_session
from ark_lattice.tiers import TrustTier
from ark_lattice.timestamps import rfc3339

__all__ = ["classify_sightings", "endpoint_listing"]


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def classify_sightings(
    rows: Iterable[dict[str, Any]],
    *,
    members: set[str],
    foreign_urls: set[str],
    foreign_hosts: set[str],
) -> list[dict[str, Any]]:
    """Each discovery row with ``federation``: member, foreign or unchecked.

    A node we have had a session with is a member whatever else shares its host; otherwise an
    endpoint we dialled and found foreign, or a host that dialled us with another key, makes it
    foreign. Rejected (unverified) rows stay unchecked: their claims are not trusted.
    """
    out = []
    for row in rows:
        endpoints = row.get("endpoints") or []
        if not row.get("verified"):
            verdict = "unchecked"
        elif row.get("node_id") in members:
            verdict = "member"
        elif any(u in foreign_urls for u in endpoints) or any(_host(u) in foreign_hosts for u in endpoints):
            verdict = "foreign"
        else:
            verdict = "unchecked"
        out.append({**row, "federation": verdict})
    return out


def endpoint_listing(
    rows: Sequence[tuple[str, str | None, str, int]],
    peers: Sequence[Any],
    *,
    targets: Sequence[Mapping[str, Any]] | None,
    connections: Sequence[Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Every address: url, peer, source, dialled, last_result, next_attempt (RFC 3339) and dials.

    ``rows``: the store's endpoints (url, peer id, source, added at ms); ``peers``: PeerRecord-like
    (``id``, ``tier``, ``name``, ``endpoints``); ``targets``/``connections``: the running node's
    dial targets and sessions, or None when it does not run (then nothing is known of dials).
    """
    by_peer = {p.id: p for p in peers}
    items: dict[str, dict[str, Any]] = {}
    for url, peer_id, source, added_at in rows:
        items[url] = {"url": url, "peer": peer_id, "source": source, "added_at": rfc3339(added_at / 1000)}
    for peer in peers:
        for url in peer.endpoints:
            fresh = {"url": url, "peer": peer.id, "source": "manifest", "added_at": None}
            item = items.setdefault(url, fresh)
            item["peer"] = item["peer"] or peer.id
    running = targets is not None
    target_by_url = {str(t["url"]): t for t in targets or ()}
    open_urls = {
        str(c.get("remote")) for c in connections or ()
        if c.get("role") == "initiator" and c.get("state") == "open"
    }
    connected_peers = {str(c.get("peer")) for c in connections or () if c.get("state") == "open"}
    out = []
    for url in sorted(items):
        item = items[url]
        peer = by_peer.get(item["peer"]) if item["peer"] else None
        tier = peer.tier if peer is not None else None
        item["peer_name"] = peer.name if peer is not None else None
        item["tier"] = tier.value if isinstance(tier, TrustTier) else None
        target = target_by_url.get(url)
        item["dialled"] = tier is None or worth_a_session(tier)
        if running and target is None and item["peer"] in connected_peers and url not in open_urls:
            # A peer with a session open (from its side, or at another address) is not dialled again.
            item["last_result"], item["next_attempt"], item["dials"] = "the peer is connected", None, None
        else:
            item["last_result"], item["next_attempt"], item["dials"] = _result(
                item, tier, target, url in open_urls, running
            )
        out.append(item)
    return out


def _result(
    item: Mapping[str, Any], tier: TrustTier | None, target: Mapping[str, Any] | None, connected: bool,
    running: bool,
) -> tuple[str, str | None, int | None]:
    if not item["dialled"]:
        reason = f"not dialled: the peer's tier is {tier.value}" if tier is not None else "not dialled"
        return reason, None, None
    if not running:
        return "the node is not running", None, None
    if connected:
        return "connected", None, int(target["dials"]) if target else None
    if target is None:
        return "not dialled", None, None
    result = dial_result(target)
    nxt = None if target.get("dialling") else rfc3339(float(target.get("next_attempt") or 0) or None)
    return result, nxt, int(target.get("dials") or 0)
