"""The one timestamp format of machine-readable output (docs/operator.md, "Output").

RFC 3339, UTC, with milliseconds and ``Z`` (``2026-12-01T13:15:22.123Z``). It lives here, below
the CLI, because the node itself answers with such documents too (the endpoints of
``federation endpoints``, invites); ``cli/output.py`` builds the rest of the output contract on it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["RFC3339", "rfc3339"]

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def rfc3339(seconds: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC with milliseconds and ``Z``; None stays None (JSON null)."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
