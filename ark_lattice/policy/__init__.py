"""Local policy (DESIGN §9): CEL rules on each hook, and the rate limits the file declares."""

from __future__ import annotations

from ark_lattice.policy.engine import (
    DEFAULT_POLICY_TEXT,
    POLICY_VERSION,
    PUBLIC_TOPIC_PREFIX,
    VARIABLES,
    Decision,
    Effect,
    FailedCondition,
    Hook,
    Limits,
    Policy,
    RateLimit,
    Rule,
    Scope,
    Variable,
    bench_decisions,
)
from ark_lattice.policy.ratelimit import RateLimiter, TokenBuckets

__all__ = [
    "Policy",
    "Decision",
    "FailedCondition",
    "Rule",
    "RateLimit",
    "Limits",
    "Hook",
    "Effect",
    "Scope",
    "Variable",
    "VARIABLES",
    "POLICY_VERSION",
    "PUBLIC_TOPIC_PREFIX",
    "DEFAULT_POLICY_TEXT",
    "bench_decisions",
    "TokenBuckets",
    "RateLimiter",
]
