"""Trust tiers (DESIGN §5): what flows to and from a peer is decided by the tier we gave it."""

from __future__ import annotations

import enum

from ark_lattice.errors import UsageError

__all__ = ["TrustTier"]


class TrustTier(enum.StrEnum):
    CORE = "core"
    SANDBOX = "sandbox"
    EXTERNAL = "external"
    UNKNOWN = "unknown"
    BLOCKED = "blocked"

    @classmethod
    def parse(cls, text: str) -> TrustTier:
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise UsageError(f"unknown trust tier {text!r}; choose one of {names}") from None
