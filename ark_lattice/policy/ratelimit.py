"""Token-bucket rate limits (DESIGN §9: "rate limits per peer and per topic are policy too").

A limit counts per peer (who sent it to us), per topic, per (peer, topic), or per author (who
signed it: an alert flood relayed by many peers still drains one author's bucket).

Pure: the caller passes ``now`` in seconds (any monotonic origin). A bucket holds at most ``burst``
tokens and refills at ``rate`` per second; a request takes ``cost`` tokens or is refused without
taking any. A bucket that has refilled to full is indistinguishable from one never created, so
such buckets are dropped as they go idle, and the number of keys is capped: past the cap the least
recently used bucket goes, which at worst forgives a key its debt (the price of bounded memory
against a peer that invents topics).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable

from ark_lattice.errors import UsageError
from ark_lattice.policy.engine import Hook, RateLimit, Scope

__all__ = ["TokenBuckets", "RateLimiter", "MAX_KEYS"]

MAX_KEYS = 10_000


class TokenBuckets:
    """One token bucket per key, all with the same rate and burst."""

    __slots__ = ("rate", "burst", "max_keys", "_buckets")

    def __init__(self, rate: float, burst: float, *, max_keys: int = MAX_KEYS) -> None:
        if not 0 < rate < math.inf:
            raise UsageError(f"a rate limit needs a positive finite rate, not {rate!r}")
        if not 0 < burst < math.inf:
            raise UsageError(f"a rate limit needs a positive finite burst, not {burst!r}")
        if max_keys < 1:
            raise UsageError("a rate limit must keep at least one key")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> [tokens, time of that level]; insertion order is least recently used first.
        self._buckets: dict[Hashable, list[float]] = {}

    def take(self, key: Hashable, now: float, cost: float = 1) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket at ``now``; False, taking none, if short."""
        if cost < 0:
            raise UsageError(f"a rate-limited request cannot cost {cost!r} tokens")
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            tokens, stamp = self.burst, now
        else:
            tokens, stamp = self._level(bucket, now), max(now, bucket[1])
        allowed = cost <= tokens
        if allowed:
            tokens -= cost
        self._forget_idle(now)
        self._buckets[key] = [tokens, stamp]
        while len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        return allowed

    def available(self, key: Hashable, now: float) -> float:
        """The tokens ``key`` could take at ``now``, without taking any."""
        bucket = self._buckets.get(key)
        return self.burst if bucket is None else self._level(bucket, now)

    def prune(self, now: float) -> int:
        """Drop every bucket that is full again at ``now``; returns how many went."""
        full = [k for k, bucket in self._buckets.items() if self._level(bucket, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def _level(self, bucket: list[float], now: float) -> float:
        tokens, stamp = bucket
        if now > stamp:  # a clock that steps back refills nothing, and takes nothing back
            tokens += (now - stamp) * self.rate
        return min(tokens, self.burst)

    def _forget_idle(self, now: float) -> None:
        # Amortised sweep: look at the two least recently used buckets on every take, so idle
        # keys drain away without a full scan (two, so the sweep outpaces one new key per take).
        for _ in range(2):
            oldest = next(iter(self._buckets), None)
            if oldest is None or self._level(self._buckets[oldest], now) < self.burst:
                return
            del self._buckets[oldest]


class RateLimiter:
    """The ``[[rate_limit]]`` entries of a policy, each with its buckets."""

    __slots__ = ("limits", "_by_hook")

    def __init__(self, limits: Iterable[RateLimit], *, max_keys: int = MAX_KEYS) -> None:
        self.limits = tuple(limits)
        pairs = [
            (limit, TokenBuckets(limit.rate, limit.burst, max_keys=max_keys))
            for limit in self.limits
        ]
        self._by_hook: dict[str, tuple[tuple[RateLimit, TokenBuckets], ...]] = {
            hook.value: tuple(pair for pair in pairs if hook in pair[0].hooks) for hook in Hook
        }

    def check(
        self,
        hook: Hook | str,
        now: float,
        *,
        peer_id: str = "",
        topic: str = "",
        author: str = "",
        cost: float = 1,
    ) -> str | None:
        """The id of the first limit (file order) this request exceeds, or None.

        All or nothing: a refused request takes no tokens from any bucket, so a flood that one
        limit stops does not also drain the others.
        """
        if cost < 0:
            raise UsageError(f"a rate-limited request cannot cost {cost!r} tokens")
        pairs = self._by_hook.get(hook)
        if pairs is None:
            names = ", ".join(h.value for h in Hook)
            raise UsageError(f"unknown policy hook {hook!r}; choose one of {names}")
        keyed = [
            (limit, buckets, _key(limit.scope, peer_id, topic, author)) for limit, buckets in pairs
        ]
        for limit, buckets, key in keyed:
            if buckets.available(key, now) < cost:
                return limit.id
        for _, buckets, key in keyed:
            buckets.take(key, now, cost)
        return None

    def prune(self, now: float) -> int:
        """Drop every full bucket of every limit; for the runtime to call now and then."""
        seen = {id(b): b for pairs in self._by_hook.values() for _, b in pairs}
        return sum(buckets.prune(now) for buckets in seen.values())


def _key(scope: Scope, peer_id: str, topic: str, author: str) -> Hashable:
    if scope is Scope.PEER:
        return peer_id
    if scope is Scope.TOPIC:
        return topic
    if scope is Scope.AUTHOR:
        return author
    return (peer_id, topic)
