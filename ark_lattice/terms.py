"""Tier terms (DESIGN §5): what we do for a peer of each trust tier, as the terms frame says it.

Beside ``tiers.py`` rather than in it: the terms are a wire frame (``protocol/frames.py``), and
``tiers.py`` stays a leaf that the CLI and the store import without the protocol. The session
sends ``terms_for(tier)`` and holds every inbound frame to it; the coordinator asks
``worth_a_session`` before dialling.
"""

from __future__ import annotations

from ark_lattice.protocol.frames import TermsFrame
from ark_lattice.tiers import TrustTier

__all__ = ["terms_for", "worth_a_session"]


def terms_for(tier: TrustTier) -> TermsFrame:
    """What we do for a peer of ``tier`` — the table of DESIGN §5, in one place."""
    return TermsFrame(
        accepts=tier in (TrustTier.CORE, TrustTier.SANDBOX),
        sends=tier is TrustTier.CORE,
        answers_queries=tier in (TrustTier.CORE, TrustTier.EXTERNAL),
    )


def worth_a_session(tier: TrustTier) -> bool:
    """Whether to keep dialling a peer of ``tier``: only if our terms let something flow."""
    terms = terms_for(tier)
    return terms.accepts or terms.sends or terms.answers_queries
