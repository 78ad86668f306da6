"""Peer addresses: ``ws://HOST:PORT`` (or ``wss://``), checked before anything is stored or dialled."""

from __future__ import annotations

from urllib.parse import urlsplit

from ark_lattice.errors import UsageError

__all__ = ["check_peer_url"]


def check_peer_url(url: str) -> str:
    """The URL in normal form, or a clear error."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UsageError(f"{url!r} is not a valid peer address") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname or port is None:
        raise UsageError(f"{url!r} is not a peer address of the form ws://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise UsageError(f"{url!r}: a peer address has only a host and a port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"
