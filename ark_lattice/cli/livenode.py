"""CLI access to a running node over its control socket."""

from __future__ import annotations

from typing import Any

from ark_lattice.cli.context import Application
from ark_lattice.errors import ArkLatticeError

__all__ = ["request", "nudge", "peer_session", "node_running"]


def request(application: Application, cmd: str, args: dict[str, Any] | None = None) -> Any:
    from ark_lattice.runtime.control import call

    return call(application.home.control_path, cmd, args)


def node_running(application: Application) -> bool:
    """Whether a node serves this home's control socket (in the home, or its fallback)."""
    from ark_lattice.runtime.control import is_running

    return is_running(application.home.control_path)


def nudge(application: Application, cmd: str) -> None:
    """Tell a running node that local state changed; nothing to do when no node runs."""
    if not node_running(application):
        return
    try:
        request(application, cmd)
    except ArkLatticeError:
        pass  # the change is in the ledger; the node picks it up at its next sync anyway


def peer_session(application: Application, peer_id: str) -> dict[str, Any] | None:
    """The live session with ``peer_id`` as the running node sees it, or None."""
    if not node_running(application):
        return None
    try:
        status = request(application, "status")
    except ArkLatticeError:
        return None
    for conn in status.get("connections", []):
        if conn.get("peer") == peer_id:
            return conn
    return None
