"""What one authenticated peer may make us spend: decoding limits and reconciliation cost.

A member holds the federation key, so the handshake does not keep it out; what it sends is still
untrusted. Two inputs cost us far more than they cost the sender, so each has a budget:

- a frame's CBOR: decoding builds Python objects, so a 2 MiB frame of two million empty arrays
  costs ~130 MiB and a second. Every frame is checked against the decoding limits (depth, items,
  memory) before it is decoded (``cbor_limits.py``), and refused with ``over_budget`` if over.
- a negentropy message: every range costs a bisect and often a fingerprint, so a 512 KiB message of
  174k one-byte Skip ranges costs ~0.4 s. A message may hold at most ``recon_max_ranges`` ranges
  (reading stops at the first one over), and a peer's reconciliation work is metered by
  :class:`CostMeter`, a token bucket of ``recon_cost_burst`` units refilled at
  ``recon_cost_per_s``: a message that arrives while the bucket is empty is refused unread. The
  node's policy gate keeps one meter per peer for all its sessions (policy/gate.py), so that a
  reconnect buys no fresh burst; a session without a gate meters itself.

Either refusal is an error frame and a strike (``over_budget``), so a member that keeps at it is
isolated by the strike machinery (policy ``strikes_to_block``). The defaults leave an honest peer
far inside every budget: the largest honest frame is 3 levels deep with ~4,100 items, the largest
honest reconciliation message (400 kB frame limit) holds ~8k ranges, and an honest run that
settles a 200,000-packet difference costs ~280k units. The node's policy sets them (``[limits]``,
policy/engine.py; docs/operator.md); without a policy the defaults here apply.

Sans-I/O: time is an argument, as everywhere in protocol/.
"""

from __future__ import annotations

from dataclasses import dataclass

from ark_lattice.cbor_limits import DecodeLimits
from ark_lattice.errors import ErrorCode, RemoteProtocolError

__all__ = ["MemberBudget", "CostMeter", "DEFAULT_BUDGET"]


@dataclass(frozen=True, slots=True)
class MemberBudget:
    """Per-peer budgets; every field has the name of its policy ``[limits]`` key."""

    decode_max_depth: int = 8  # arrays, maps and tags nested in one frame
    decode_max_items: int = 16_384  # CBOR data items in one frame
    decode_max_alloc: int = 8 * 1024 * 1024  # estimated bytes of Python objects one frame builds
    recon_max_ranges: int = 20_000  # ranges in one reconciliation message
    recon_cost_per_s: int = 50_000  # reconciliation work refilled per second (ranges; 16 ids = 1)
    recon_cost_burst: int = 400_000  # reconciliation work a peer may spend at once

    @property
    def frame_limits(self) -> DecodeLimits:
        """The decoding limits of one session frame (no tags or indefinite lengths in frames)."""
        return DecodeLimits(
            max_depth=self.decode_max_depth,
            max_items=self.decode_max_items,
            max_alloc=self.decode_max_alloc,
            allow_tags=False,
            allow_indefinite=False,
        )


DEFAULT_BUDGET = MemberBudget()


class CostMeter:
    """A token bucket of reconciliation work for one peer (or one session without a gate).

    :meth:`admit` before a message is read refuses it if the bucket is empty (or in debt);
    :meth:`spend` after charges what the message really cost, which may take the bucket below
    zero: the debt is bounded by one message's work (``recon_max_ranges`` plus its ids), and the
    peer's next message waits for it to be repaid.
    """

    __slots__ = ("_tokens", "_at")

    def __init__(self) -> None:
        self._tokens: float | None = None  # None: full (never used)
        self._at = 0.0

    def level(self, budget: MemberBudget, now: float) -> float:
        """The units available at ``now`` (negative while in debt)."""
        if self._tokens is None:
            return float(budget.recon_cost_burst)
        refill = max(0.0, now - self._at) * budget.recon_cost_per_s  # a clock stepping back adds none
        return min(float(budget.recon_cost_burst), self._tokens + refill)

    def admit(self, budget: MemberBudget, now: float) -> None:
        """Raise ``RemoteProtocolError(over_budget)`` if the bucket is empty at ``now``."""
        if self.level(budget, now) <= 0:
            raise RemoteProtocolError(
                ErrorCode.OVER_BUDGET,
                f"reconciliation over {budget.recon_cost_per_s} ranges per second "
                f"(burst {budget.recon_cost_burst})",
            )

    def spend(self, cost: int, budget: MemberBudget, now: float) -> None:
        self._tokens = self.level(budget, now) - cost
        self._at = max(now, self._at)
