"""The policy gate: what a node asks before a packet, query or alert crosses, and what gets audited.

Pure (``now`` is an argument): it turns a packet, a peer and a hook into the flat inputs of the
policy (policy/engine.py), applies the rate limits the policy declares, and returns the decision
together with the audit record the node writes to the ledger — one record for every decision,
allowed or denied (DESIGN §9). The tier table (terms.py ``terms_for``) is checked before
the gate is asked, so policy can narrow what flows but never widen it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from ark_lattice.hlc import unpack
from ark_lattice.packet import Packet
from ark_lattice.policy.engine import Decision, Hook, Policy
from ark_lattice.policy.ratelimit import RateLimiter
from ark_lattice.protocol.budget import CostMeter, MemberBudget

if TYPE_CHECKING:
    from ark_lattice.alerts import Alert

__all__ = ["PolicyGate", "PacketVerdicts", "AuditRecord"]


class AuditRecord(TypedDict):
    """One policy decision as the node writes it to the ledger (a ``policy_decision`` event)."""

    hook: str
    peer: str
    subject: str  # the packet's (or alert's) hex id, the query's topic, or the tier asked for
    allowed: bool
    rules: list[str]  # ids of the rules that fired; ``rate:<limit id>`` for a rate limit
    reason: str


_RATE_WINDOW = 10.0  # seconds: the time constant of the rate_peer / rate_topic averages
_MAX_RATE_KEYS = 10_000


@dataclass(frozen=True)
class PacketVerdicts:
    allowed: tuple[Packet, ...]
    denied: tuple[Packet, ...]
    rate_limit: str | None  # id of the limit a part of the batch exceeded, if any
    records: tuple[AuditRecord, ...]


class PolicyGate:
    def __init__(self, policy: Policy, self_id: str) -> None:
        self.self_id = self_id
        self.replace(policy)

    def replace(self, policy: Policy) -> None:
        """Swap in a new policy (a running node reloading); the rate buckets start afresh."""
        self.policy = policy
        self.budget: MemberBudget = policy.limits.budget  # asked by every session at each frame
        self._limiter = RateLimiter(policy.rate_limits)
        self._rates: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._meters: OrderedDict[str, CostMeter] = OrderedDict()

    def recon_meter(self, peer_id: str) -> CostMeter:
        """The peer's reconciliation work meter (protocol/budget.py), shared by all its sessions,
        so that reconnecting does not buy a fresh burst. Only peers with a flow reconcile (core
        and sandbox: the operator chose them), so the LRU bound is never what stops a flood."""
        meter = self._meters.pop(peer_id, None) or CostMeter()
        self._meters[peer_id] = meter
        if len(self._meters) > _MAX_RATE_KEYS:
            self._meters.popitem(last=False)
        return meter

    @property
    def strikes_to_block(self) -> int:
        return self.policy.limits.strikes_to_block

    @property
    def alert_quarantine_s(self) -> int:
        """Seconds a quarantine on an accusation without self-proving evidence lasts."""
        return self.policy.limits.alert_quarantine_s

    @property
    def alert_accusers_to_block(self) -> int:
        """Distinct core authors accusing one peer that make its quarantine a permanent block."""
        return self.policy.limits.alert_accusers_to_block

    def packets(
        self,
        hook: Hook | str,
        packets: Sequence[Packet],
        *,
        peer_id: str,
        peer_tier: str,
        strikes: int,
        now: float,
        solicited: bool = False,
    ) -> PacketVerdicts:
        """Decide each packet. ``solicited`` packets answer our own wants: our flow control
        already bounds them, so the rate limits (flood protection) apply only to the rest."""
        allowed: list[Packet] = []
        denied: list[Packet] = []
        records: list[AuditRecord] = []
        limited: str | None = None
        # The two rates are state (each decision counts into them) that only a condition reading
        # them can see, and replace() starts them afresh: with a policy that reads neither, they
        # are not kept (they cost as much as the rest of the inputs together).
        reads = self.policy.reads(hook)
        rate_peer, rate_topic = "rate_peer" in reads, "rate_topic" in reads
        peer_key, whole_now = f"p:{peer_id}", int(now)
        decide, check = self.policy.decide, self._limiter.check
        for packet in packets:
            h = packet.header
            exceeded = None if solicited else check(
                hook, now, peer_id=peer_id, topic=h.topic, author=str(h.author)
            )
            if exceeded is not None:
                limited = limited or exceeded
                denied.append(packet)
                records.append(_record(hook, peer_id, packet.hex_id, False, (f"rate:{exceeded}",),
                                       f"rate limit {exceeded} exceeded"))
                continue
            created_s = unpack(h.created_at)[0] // 1000
            decision = decide(
                hook,
                {
                    "now": whole_now,
                    "self_id": self.self_id,
                    "peer_id": peer_id,
                    "peer_tier": peer_tier,
                    "strikes": strikes,
                    "rate_peer": self._rate(peer_key, now) if rate_peer else 0.0,
                    "rate_topic": self._rate(f"t:{h.topic}", now) if rate_topic else 0.0,
                    "topic": h.topic,
                    "kind": h.kind,
                    "author": str(h.author),
                    "size": h.body_size,
                    "age_s": whole_now - created_s,
                },
            )
            (allowed if decision.allowed else denied).append(packet)
            records.append(_decided(hook, peer_id, packet.hex_id, decision))
        return PacketVerdicts(tuple(allowed), tuple(denied), limited, tuple(records))

    def query(
        self, topic: str, *, peer_id: str, peer_tier: str, strikes: int, now: float
    ) -> tuple[Decision | None, str | None, AuditRecord]:
        """(decision, exceeded rate limit, record) for a query a peer sent us."""
        exceeded = self._limiter.check(Hook.QUERY, now, peer_id=peer_id, topic=topic)
        if exceeded is not None:
            return None, exceeded, _record(Hook.QUERY, peer_id, topic, False, (f"rate:{exceeded}",),
                                           f"rate limit {exceeded} exceeded")
        decision = self.policy.decide(
            Hook.QUERY,
            {"now": int(now), "self_id": self.self_id, "peer_id": peer_id, "peer_tier": peer_tier,
             "strikes": strikes, "topic": topic, "direction": "inbound"},
        )
        return decision, None, _decided(Hook.QUERY, peer_id, topic, decision)

    def alert(
        self,
        packet: Packet,
        alert: Alert,
        *,
        peer_id: str,
        peer_tier: str,
        author_tier: str,
        self_proving: bool,
        now: float,
        hops: int = 0,
    ) -> tuple[Decision | None, str | None, AuditRecord]:
        """(decision, exceeded rate limit, record) for an alert ``peer_id`` sent us.

        ``alert`` is what ``packet`` carries (``Alert.from_packet``); ``self_proving`` is
        ``alert.self_proving()``, computed once by the caller. An allowed decision means the peer
        the alert accuses may be quarantined at once. The decision is None when a rate limit
        (scopes peer, topic, peer_topic or author) refused the alert first.
        """
        h = packet.header
        author = str(h.author)
        exceeded = self._limiter.check(Hook.ALERT, now, peer_id=peer_id, topic=h.topic, author=author)
        if exceeded is not None:
            return None, exceeded, _record(Hook.ALERT, peer_id, packet.hex_id, False,
                                           (f"rate:{exceeded}",), f"rate limit {exceeded} exceeded")
        created_s = unpack(h.created_at)[0] // 1000
        decision = self.policy.decide(
            Hook.ALERT,
            {
                "now": int(now),
                "self_id": self.self_id,
                "peer_id": peer_id,
                "peer_tier": peer_tier,
                "direction": "inbound",
                "topic": h.topic,
                "kind": h.kind,
                "author": author,
                "author_tier": author_tier,
                "size": h.body_size,
                "age_s": int(now) - created_s,
                "hops": hops,
                "severity": alert.severity,
                "accused": alert.about or "",
                "has_evidence": self_proving,
            },
        )
        return decision, None, _decided(Hook.ALERT, peer_id, packet.hex_id, decision)

    def tier_change(
        self, *, peer_id: str, old_tier: str, new_tier: str, actor: str, strikes: int, now: float
    ) -> tuple[Decision, AuditRecord]:
        decision = self.policy.decide(
            Hook.TIER_CHANGE,
            {"now": int(now), "self_id": self.self_id, "peer_id": peer_id, "peer_tier": old_tier,
             "new_tier": new_tier, "actor": actor, "strikes": strikes},
        )
        return decision, _decided(Hook.TIER_CHANGE, peer_id, new_tier, decision)

    def _rate(self, key: str, now: float) -> float:
        """An exponentially decaying events-per-second average; counts this event."""
        rate, last = self._rates.pop(key, (0.0, now))
        rate = rate * math.exp(-max(0.0, now - last) / _RATE_WINDOW) + 1.0 / _RATE_WINDOW
        self._rates[key] = (rate, now)
        if len(self._rates) > _MAX_RATE_KEYS:
            self._rates.popitem(last=False)
        return rate


def _decided(hook: Hook | str, peer_id: str, subject: str, decision: Decision) -> AuditRecord:
    return _record(hook, peer_id, subject, decision.allowed, decision.fired, decision.reason)


def _record(
    hook: Hook | str, peer_id: str, subject: str, allowed: bool, fired: Sequence[str], reason: str
) -> AuditRecord:
    # The keys in canonical order (the shorter first): one record per packet a sync lets in or
    # out is encoded so, and canonical() then takes cbor2's plain encoder (encoding.py).
    return {
        "hook": str(hook),
        "peer": peer_id,
        "rules": list(fired),
        "reason": reason,
        "allowed": allowed,
        "subject": subject,
    }
