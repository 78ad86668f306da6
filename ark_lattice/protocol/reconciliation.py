"""One session's reconciliation runs: the bookkeeping around ``reconcile.py``'s two parties.

:mod:`ark_lattice.protocol.reconcile` computes one run of negentropy between two sets and keeps no
state between runs. A session reconciles many times (after the terms, after each tier change,
on auto-sync and ``sync now``), and the node must hand over a fresh snapshot of our set before
each run. :class:`Reconciliation` keeps what spans those runs (docs/protocol.md §8):

- whether a ``SyncReady`` is out and the node has not answered it with ``start_sync`` yet;
- the initiator's run in progress, its round number and what it offered and wanted so far;
- the responder's snapshot of our set, dropped at ``synced`` so the next run starts fresh;
- the responder's first message of a run that arrived before the node gave us our set (held,
  since answering it needs the set);
- a request to run again that came while a run was in progress (terms changed mid-run);
- the initiator's next message while the ids it wanted are far from all arrived
  (:data:`RECON_AHEAD`): rounds go at the pace of the transfer, so memory stays bounded.

It is pure bookkeeping: it returns what to send in a :class:`ReconStep` and the session sends it,
wants through its transfer window, and emits the events. It never sees the clock or the channel:
the time of each message is an argument, for the reconciliation budget (budget.py) that every
message from the peer is checked against before it is read — at most ``recon_max_ranges`` ranges,
and the peer's work metered per second — and charged after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ark_lattice.errors import ErrorCode, RemoteProtocolError
from ark_lattice.protocol import reconcile
from ark_lattice.protocol.budget import DEFAULT_BUDGET, CostMeter, MemberBudget
from ark_lattice.protocol.frames import MAX_IDS, OfferFrame, ReconFrame, SyncedFrame

__all__ = ["Reconciliation", "ReconStep", "RECON_AHEAD"]

#: The initiator's next message waits while at least this many ids it wanted are still to arrive.
#: Each round learns up to ~1,800 more (a frame of ids), far faster than they arrive, so without
#: this a 100k-packet sync held all 100k ids at once — queued, and remembered as reported — and
#: the receiver's memory grew with the size of the difference. Pacing the rounds by the transfer
#: keeps it near this bound; the messages, and what the run finds, are the same.
RECON_AHEAD = 4096  # twice the default window in flight (4 wants of 512): the transfer never starves


@dataclass(frozen=True)
class ReconStep:
    """What the session does after a ``recon`` frame, in this order (the wire order matters).

    ``offers`` go out first, then the session wants ``want`` from the peer, then ``reply`` (the
    next ``recon`` frame, or ``synced`` when the initiator's run is over: the session then reports
    ``SyncCompleted``), then, if ``ready``, it asks the node for a fresh set (``SyncReady``).
    """

    offers: tuple[OfferFrame, ...] = ()
    want: Sequence[bytes] = ()
    reply: ReconFrame | SyncedFrame | None = None
    ready: bool = False


class Reconciliation:
    """The reconciliation runs of one session, on the initiator's or the responder's side."""

    def __init__(self, *, initiator: bool, frame_size_limit: int) -> None:
        self.initiator = initiator
        self.frame_size_limit = frame_size_limit
        # A SyncReady is out and start_sync() has not answered it.
        self.awaiting_items = False
        self._run: reconcile.Initiator | None = None
        self._round = 0
        self._offered = 0
        self._wanted = 0
        self._snapshot: reconcile.Responder | None = None
        self._held: ReconFrame | None = None
        self._again = False
        self._meter = CostMeter()
        self._paced: ReconFrame | None = None  # the initiator's next message, waiting (RECON_AHEAD)

    @property
    def running(self) -> bool:
        """The initiator has a run in progress. Always false for the responder: it answers each
        message as it comes and does not track runs."""
        return self._run is not None

    def asked(self) -> None:
        """The session asked the node for a set (emitted ``SyncReady``)."""
        self.awaiting_items = True

    def defer(self) -> bool:
        """Terms let packets flow: if a run is in progress, run again once it ends instead.

        Returns whether it deferred; if not, the session asks the node for a set now.
        """
        if self.initiator and self._run is not None:
            self._again = True
            return True
        return False

    def start(self, items: reconcile.ItemSet, budget: MemberBudget = DEFAULT_BUDGET) -> ReconFrame | None:
        """The node gave us our set. The initiator opens a run (returns its first message); the
        responder keeps the snapshot to answer with (see :meth:`take_held`)."""
        self.awaiting_items = False
        ranges = budget.recon_max_ranges
        if self.initiator:
            self._run = reconcile.Initiator(
                items, frame_size_limit=self.frame_size_limit, max_ranges=ranges
            )
            self._round = 0
            self._offered = self._wanted = 0
            return ReconFrame(0, self._run.initiate())
        self._snapshot = reconcile.Responder(
            items, frame_size_limit=self.frame_size_limit, max_ranges=ranges
        )
        return None

    def pace(self, reply: ReconFrame | SyncedFrame, pending: int) -> ReconFrame | SyncedFrame | None:
        """``reply`` to send now, or None: it waits, because ``pending`` ids we wanted are still to
        arrive (at least :data:`RECON_AHEAD`); :meth:`resume` gives it back. ``synced`` never waits."""
        if isinstance(reply, ReconFrame) and self.initiator and pending >= RECON_AHEAD:
            self._paced = reply
            return None
        return reply

    def resume(self, pending: int) -> ReconFrame | None:
        """The message :meth:`pace` held, once fewer than :data:`RECON_AHEAD` wanted ids are pending."""
        paced = self._paced
        if paced is None or pending >= RECON_AHEAD:
            return None
        self._paced = None
        return paced

    def take_held(self) -> ReconFrame | None:
        """The responder's held first message, to answer now that the snapshot is there."""
        held, self._held = self._held, None
        return held

    def receive(
        self,
        frame: ReconFrame,
        *,
        send: bool,
        receive: bool,
        now: float = 0.0,
        budget: MemberBudget = DEFAULT_BUDGET,
        meter: CostMeter | None = None,
    ) -> ReconStep:
        """A ``recon`` frame from the peer at ``now``, with the flows as they are now.

        Raises ``RemoteProtocolError`` if the frame is out of turn or its message malformed, or
        (``over_budget``) if the message holds more ranges than ``budget`` allows or, on the
        responder's side (which a peer could flood with messages), the reconciliation budget of
        ``meter`` (the peer's, across its sessions; else this session's own) is spent; neither
        reads more of the message than the budget.
        """
        if not self.initiator:
            return self._answer(frame, now, budget, meter or self._meter)
        if self._run is None or frame.round != self._round:
            raise RemoteProtocolError(ErrorCode.UNSOLICITED, "reconciliation reply nobody asked for")
        # Our own replies pace the responder (one message per round, checked above), so only the
        # per-message range limit applies here; a reply we refuse ends the run, so that the next
        # sync starts afresh instead of waiting for a round that will not come.
        try:
            message, have, need = self._run.reconcile(frame.message)
        except RemoteProtocolError:
            self._run = None
            self._again = False
            raise
        offers: tuple[OfferFrame, ...] = ()
        if send and have:
            self._offered += len(have)
            offers = tuple(OfferFrame(tuple(have[i : i + MAX_IDS])) for i in range(0, len(have), MAX_IDS))
        want: Sequence[bytes] = ()
        if receive and need:
            self._wanted += len(need)
            want = need
        if message is not None:
            self._round += 1
            return ReconStep(offers, want, ReconFrame(self._round, message))
        self._run = None
        again, self._again = self._again, False
        return ReconStep(offers, want, SyncedFrame(self._offered, self._wanted), ready=again)

    def synced(self) -> None:
        """The initiator ended the run (``synced``); only the responder receives that."""
        if self.initiator:
            raise RemoteProtocolError(ErrorCode.OUT_OF_ORDER, "only the initiator ends a reconciliation")
        self._snapshot = None  # the next run starts from a fresh snapshot

    def _answer(
        self, frame: ReconFrame, now: float, budget: MemberBudget, meter: CostMeter
    ) -> ReconStep:
        snapshot = self._snapshot
        if snapshot is not None:
            meter.admit(budget, now)
            try:
                reply = snapshot.reconcile(frame.message)
            finally:
                meter.spend(snapshot.last_cost, budget, now)
            return ReconStep(reply=ReconFrame(frame.round, reply))
        if self._held is not None:
            raise RemoteProtocolError(ErrorCode.OUT_OF_ORDER, "reconciliation messages not paired")
        self._held = frame  # the node is still preparing our set
        # A new run after an earlier one ended (auto-sync, sync now): the node must give a fresh
        # snapshot of our set before we can answer; unless a SyncReady is already out.
        return ReconStep(ready=not self.awaiting_items)
