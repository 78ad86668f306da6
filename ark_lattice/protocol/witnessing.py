"""Witnessing between core peers, sans-I/O: which link asks, which answers, what a verdict does.

The rules themselves (the format, "same size ⇒ same root", the consistency proof) are
:mod:`ark_lattice.witness`'s; this module holds the actions the coordinator returns for them and
the decisions that span sessions:

- we ask each open core peer to cosign our newest checkpoint when we sign one and when a session
  with it opens (:class:`RequestCosignature`, built from the store by the driver);
- we witness only for our core peers: anyone else is told 404 (tlog-witness: not a log we follow);
- a witness that answers 409 with a smaller size than we claimed is asked again from its size,
  once per answer (tlog-witness: a client that does not know the size asks from 0, then retries);
- a fork proof found while witnessing becomes a critical, self-proving alert about the log's node,
  so every node isolates it (coordinator.py's alert machinery, alerts.py's evidence check).
"""

from __future__ import annotations

from dataclasses import dataclass

LinkId = int  # as protocol/actions.py (which imports this module)

__all__ = [
    "RequestCosignature",
    "SendWitnessRequest",
    "Witness",
    "SendWitnessReply",
    "RecordCosignature",
    "NOT_FOLLOWED",
]

NOT_FOLLOWED = 404  # tlog-witness: the origin is not a log this witness follows


@dataclass(frozen=True)
class RequestCosignature:
    """Build our add-checkpoint request for ``peer`` (from ``old``: None means the largest size it
    cosigned that we still hold), and answer with :meth:`Coordinator.cosign_request_built`."""

    link: LinkId
    peer: str
    old: int | None = None


@dataclass(frozen=True)
class SendWitnessRequest:
    link: LinkId
    request: bytes


@dataclass(frozen=True)
class Witness:
    """Judge ``peer``'s add-checkpoint request against our witness state, persist, and answer
    with :meth:`Coordinator.witnessed` (witness.witness_request)."""

    link: LinkId
    peer: str
    request: bytes


@dataclass(frozen=True)
class SendWitnessReply:
    link: LinkId
    status: int
    body: bytes
    note: bytes = b""


@dataclass(frozen=True)
class RecordCosignature:
    """Check and keep what ``peer`` answered as our witness (witness.record_reply), and answer
    with :meth:`Coordinator.cosignature_recorded`."""

    link: LinkId
    peer: str
    status: int
    body: bytes
    note: bytes
