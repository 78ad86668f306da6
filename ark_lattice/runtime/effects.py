"""Carrying out the coordinator's actions: what touches the store, and the dispatch of the rest.

The coordinator (protocol/coordinator.py) decides; this module only does. :class:`Effects`
performs the actions that read or write the ledger and hands each answer back to the coordinator
(whose reply may be more actions). :class:`Driver` is the loop every node driver shares: it takes a
list of actions, sends link actions to the link's session, dials, sets the wake-up timer, queues
ingests and performs the rest through :class:`Effects`, until nothing is left.

Two drivers subclass :class:`Driver`: the node runtime (runtime/peering.py, over WebSockets and
aiosqlite) and the simulator (sim/mesh.py, over a virtual network and an inline SQLite store).
Nothing here awaits anything but the store, so the simulator runs it without an event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any

from ark_lattice import __version__
from ark_lattice.alerts import alert_packet
from ark_lattice.errors import LedgerError, NotFound
from ark_lattice.identity import Identity
from ark_lattice.manifest import DEFAULT_LIFETIME, PeerManifest, SignedManifest
from ark_lattice.packet import Packet
from ark_lattice.policy.repeats import DEFAULT_INTERVAL, RepeatedDecisions
from ark_lattice.protocol import actions as act
from ark_lattice.protocol.coordinator import Coordinator
from ark_lattice.protocol.intake import Intake
from ark_lattice.protocol.reconcile import ItemSet
from ark_lattice.protocol.session import Session
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import NewEvent, Store

if TYPE_CHECKING:
    from ark_lattice.runtime.metrics import Counters

__all__ = ["Effects", "Driver", "LINK_ACTIONS", "apply_to_session", "our_manifest"]

AUDIT_CHUNK = 1000  # policy decisions per ledger event

# Actions carried out on one link's session, by whoever owns that session.
LINK_ACTIONS = (
    act.Admit,
    act.Reconcile,
    act.SendPackets,
    act.AnswerQuery,
    act.Push,
    act.Want,
    act.RequestSync,
    act.SetTier,
    act.Close,
    act.Query,
    act.SendAlert,
    act.SendAlertIds,
    act.SendWitnessRequest,
    act.SendWitnessReply,
)


async def our_manifest(
    store: Store, identity: Identity, name: str, endpoints: Sequence[str], now: float
) -> SignedManifest:
    """This run's signed manifest, with the next sequence number (peers refuse a rollback)."""
    seq = await store.next_counter("manifest_seq")
    issued = int(now)
    return PeerManifest(
        identity.node_id,
        name[:64],
        seq,
        issued,
        issued + DEFAULT_LIFETIME,
        tuple(endpoints),
        ("sync/1", "query/1"),
        __version__,
    ).sign(identity)


def apply_to_session(session: Session, action: Any, now: float, items: ItemSet | None = None) -> int | None:
    """Carry out one link action on its session (``items``: the loaded set, for Reconcile).

    Returns the query id for :class:`~ark_lattice.protocol.coordinator.Query`, else None.
    """
    if isinstance(action, act.Admit):
        session.admit(action.tier, now, held_seq=action.held_seq, strikes=action.strikes)
    elif isinstance(action, act.Reconcile):
        assert items is not None
        session.start_sync(items, now)
    elif isinstance(action, act.SendPackets):
        session.send_packets(action.packets, now)
    elif isinstance(action, act.AnswerQuery):
        session.answer_query(action.query_id, action.packets, now)
    elif isinstance(action, act.Push):
        session.push(action.packets, now)
    elif isinstance(action, act.Want):
        session.want(action.ids, now, first=True)
    elif isinstance(action, act.RequestSync):
        session.request_sync()
    elif isinstance(action, act.SetTier):
        session.set_tier(action.tier, now)
    elif isinstance(action, act.Close):
        session.close(action.code, action.reason, now)
    elif isinstance(action, act.Query):
        return session.query(action.topic, action.limit, now)
    elif isinstance(action, act.SendAlert):
        session.send_alert(action.packet, action.hops, now)
    elif isinstance(action, act.SendAlertIds):
        session.send_alert_ids(action.ids, now)
    elif isinstance(action, act.SendWitnessRequest):
        session.send_witness_request(action.request, now)
    elif isinstance(action, act.SendWitnessReply):
        session.send_witness_reply(action.status, action.body, action.note, now)
    else:
        raise TypeError(f"not a link action: {action!r}")
    return None


class Effects:
    """The store side of the coordinator's actions."""

    metrics: Counters | None = None  # told how many packets each ingest stored (observation only)

    def __init__(self, store: Store, core: Coordinator) -> None:
        self.store = store
        self.core = core
        self.decisions: list[Mapping[str, Any]] = []  # policy decisions not yet in the ledger
        # Decisions already in the ledger are counted into per-peer summaries, not written again.
        self.repeats = RepeatedDecisions()
        self._now = 0.0  # the time of the latest decision: when summaries fall due
        # Audit events the ledger refused (locked past the retry budget, disk full): written again,
        # first, by the next write_audit, so an audit event is late at worst, never lost.
        self.kept: list[NewEvent] = []
        self.on_kept: Callable[[LedgerError], None] | None = None  # the driver schedules the retry
        # governance/effects.py: how an adopted policy becomes this node's (None: recorded only)
        self.policy_sink: Callable[[str, str], Awaitable[Any]] | None = None

    def queue_decisions(self, records: Sequence[Mapping[str, Any]], now: float) -> None:
        """Queue policy decisions taken at ``now``; the ones already written are only counted."""
        self._now = max(self._now, now)
        self.decisions.extend(self.repeats.sift(records, now))

    async def perform(self, action: Any, now: float) -> list[act.Action]:
        """Carry out one store action; returns the coordinator's answer to its result."""
        store, core = self.store, self.core
        if isinstance(action, act.ReadDialTargets):
            endpoints = await store.endpoints()
            peers = [(p.id, p.tier, p.endpoints) for p in await store.list_peers()]
            return core.dial_targets_read(endpoints, peers, now)
        if isinstance(action, act.ReadTiers):
            tiers = {}
            for peer in action.peers:
                record = await store.find_peer(peer)
                if record is not None:
                    tiers[peer] = record.tier
            return core.tiers_read(tiers, now)
        if isinstance(action, act.RecordPeer):
            await store.add_peer(action.peer, endpoints=[action.url] if action.url else [])
            if action.url:
                await store.bind_endpoint(action.url, action.peer)
            record = await store.get_peer(action.peer)
            return core.peer_recorded(action.link, record.tier, record.manifest_seq, record.strikes, now)
        if isinstance(action, act.RecordManifest):
            m = action.manifest.manifest
            data = action.manifest.to_bytes()
            await store.record_manifest(action.peer, data, m.seq, m.name, list(m.endpoints))
            return []
        if isinstance(action, act.RecordEndpoints):
            if action.peer is not None:
                await store.add_peer(action.peer, endpoints=list(action.urls))
            for url in action.urls:
                await store.add_endpoint(url, source=action.source, peer_id=action.peer)
            return []
        if isinstance(action, act.LoadWanted):
            return core.wanted_loaded(action.link, await store.get_packets(list(action.ids)))
        if isinstance(action, act.LoadQuery):
            stored = await store.list_packets(topic=action.topic, limit=action.limit)
            return core.query_loaded(action.link, action.query_id, stored)
        if isinstance(action, act.Strike):
            try:
                await store.audit_protocol_error(action.subject, action.code, action.reason, action.fatal)
            except LedgerError as exc:
                error = {"code": action.code, "reason": action.reason, "fatal": action.fatal}
                self.keep((EventKind.PROTOCOL_ERROR, action.subject, error), exc)
            if action.peer is None:
                return []
            try:
                strikes = await store.add_strike(action.peer, action.code, action.reason)
                record = await store.get_peer(action.peer)
            except NotFound:
                return []
            return core.struck(
                action.link, action.peer, strikes, record.tier, action.code, action.reason, now
            )
        if isinstance(action, act.AuditStrangers):
            async with store.transaction():  # one transaction for the interval's summaries
                for summary in action.records:
                    fields = {k: v for k, v in summary.items() if k != "subject"}
                    await store.append_event(EventKind.PROTOCOL_ERROR, str(summary["subject"]), fields)
            return []
        if isinstance(action, act.Isolate):
            async with store.transaction():
                # An alert may name a peer we never met: remember it, blocked, with the reason.
                await store.add_peer(action.peer)
                await store.set_tier(action.peer, action.tier, reason=action.reason)
            return []
        if isinstance(action, act.RaiseAlert):
            return (await self.raise_alert(action, now))[1]
        if isinstance(action, act.RecordQuarantine):
            if action.until is None:
                lifted = {"reason": action.reason}
                await self.audit((EventKind.PEER_QUARANTINE_LIFTED, action.peer, lifted))
            else:
                held = {"until": int(action.until), "reason": action.reason}
                await self.audit((EventKind.PEER_QUARANTINED, action.peer, held))
            return []
        if isinstance(action, (act.RequestCosignature, act.Witness, act.RecordCosignature)):
            return await self.witnessing(action, now)
        if isinstance(action, act.LoadGovernance):
            from ark_lattice.governance.documents import GOVERNANCE_KINDS, TOPIC

            packets = [sp.packet for sp in reversed(await store.list_packets(topic=TOPIC))
                    if not sp.quarantined and sp.packet.header.kind in GOVERNANCE_KINDS]
            return core.governance_loaded(packets, now)
        if isinstance(action, act.Adopt):
            from ark_lattice.governance.effects import carry_out

            new = await carry_out(store, action, self.policy_sink)
            return core.tiers_changed() if new and action.adopted.proposal.kind == "tier" else []
        raise TypeError(f"not a store action: {action!r}")

    async def witnessing(
        self, action: act.RequestCosignature | act.Witness | act.RecordCosignature, now: float
    ) -> list[act.Action]:
        """The store side of witnessing (witness.py); the coordinator decides what follows."""
        from ark_lattice import witness
        from ark_lattice.identity import NodeId

        peer = NodeId.parse(action.peer)
        if isinstance(action, act.RequestCosignature):
            request = await witness.build_request(self.store, peer, action.old)
            return self.core.cosign_request_built(action.link, request)
        if isinstance(action, act.Witness):
            verdict = await witness.witness_request(self.store, self.core.identity, peer, action.request, now)
            return self.core.witnessed(action.link, action.peer, verdict, now)
        outcome = await witness.record_reply(
            self.store, self.core.node_id, peer, action.status, action.body, action.note
        )
        return self.core.cosignature_recorded(action.link, action.peer, outcome, now)

    async def raise_alert(self, action: act.RaiseAlert, now: float) -> tuple[Packet, list[act.Action]]:
        """Sign and store our alert; returns it and the coordinator's flood of it."""
        created_at = await self.store.next_timestamp(self.store.now_ms())
        packet = alert_packet(self.core.identity, action.alert, created_at=created_at, topic=action.topic)
        await self.store.put_packets([packet])
        return packet, self.core.alert_raised(packet, now)

    async def sync_set(self, action: act.Reconcile) -> ItemSet:
        """The items a reconciliation round is over, read from the store a batch at a time: the
        keys of a million packets take ~80 MB, their rows in tuples twice that on top."""
        source = None if action.over is act.SyncSet.SHAREABLE else action.peer
        keys: list[bytes] = []
        async with aclosing(self.store.packet_keys(source=source)) as batches:
            async for rows in batches:
                keys += ItemSet.keys_of(rows)
        if source is not None:
            keys += ItemSet.keys_of(action.also)
        return ItemSet.from_keys(keys)

    async def ingest(self, batch: Sequence[act.Ingest], now: float) -> list[act.Action]:
        """Store received packets, dependencies first, in one transaction for the whole batch.

        The intake orders each item (protocol/intake.py); a packet made ready by an earlier item
        of the batch counts as held for the later ones, since it is stored before them in the same
        transaction. Consecutive items from one source and of one quarantine state are stored by
        one ``put_packets`` (one insert, one run of ledger events hashed in a row), so a batch of
        frames from one peer costs one insert, not one per frame.

        Returns the coordinator's answer: wants for missing dependencies and the relays.
        """
        plans: list[tuple[act.Ingest, list[Packet], set[bytes]]] = []
        new_ids: set[bytes] = set()
        written: list[NewEvent] = []
        async with self._kept_if_rolled_back(written), self.store.transaction():
            await self.write_audit(written)  # the decisions that let these packets in, atomically
            staged: set[bytes] = set()  # ready earlier in this batch: stored before what follows
            for item in batch:
                deps = Intake.dependencies(item.packets)
                unknown = [d for d in deps if d not in staged]
                held = await self.store.held_ids(unknown) if unknown else set()
                admission = self.core.admit_packets(item.packets, held | (deps & staged))
                ready, put = admission.ready, []
                while ready:
                    put += ready
                    ready = self.core.packets_stored(p.id for p in ready)
                staged.update(p.id for p in put)
                plans.append((item, put, admission.missing))
            for (peer, quarantine), group in _runs(plans):
                stored = await self.store.put_packets(
                    [p for _, put, _ in group for p in put], source=peer, quarantined=quarantine
                )
                new_ids.update(p.id for p in stored)
        actions: list[act.Action] = []
        for item, put, missing in plans:
            new, echoed = [], []
            for p in put:
                if p.id in new_ids:
                    new_ids.discard(p.id)  # a packet is new to the first item that brought it only
                    new.append(p)
                else:
                    echoed.append(p)
            self.core.echoed(item.link, echoed)  # held already
            if self.metrics is not None:
                self.metrics.stored(len(new), item.quarantine)
            actions += self.core.ingested(item.link, new, item.quarantine, missing, now)
        return actions

    async def write_audit(
        self, written: list[NewEvent] | None = None, *, final: bool = False
    ) -> list[NewEvent]:
        """Write kept audit events, then pending policy decisions (many decisions per event) with
        the summaries of repeated decisions that are due (all of them if ``final``: stopping).

        Writes what is due when called; decisions queued while it writes wait for the next call.
        Each event leaves the queue before its write (a concurrent call never writes it twice)
        and goes back to the front if the write fails. Returns the events written, also added
        to ``written`` as they go (inside a transaction, they are kept if it rolls back).
        """
        written = [] if written is None else written
        gate = self.core.gate
        interval = float(gate.policy.limits.audit_summary_s) if gate is not None else DEFAULT_INTERVAL
        self.decisions.extend(self.repeats.drain() if final else self.repeats.due(self._now, interval))
        # Only the events due now (all if final): a receiver queues decisions faster than one
        # event per write, so a call that also took those would not end before the sync does and
        # would hold every event it wrote (tens of MB at 100k packets). Later ones are the next
        # call's: queueing them set the driver's audit flag again (audit_queued).
        due = len(self.kept) + -(-len(self.decisions) // AUDIT_CHUNK)
        while (self.kept or self.decisions) and (final or due > 0):
            due -= 1
            if self.kept:
                event = self.kept.pop(0)
            else:
                chunk, self.decisions = self.decisions[:AUDIT_CHUNK], self.decisions[AUDIT_CHUNK:]
                event = (EventKind.POLICY_DECISION, "", {"decisions": chunk})
            try:
                await self.store.append_event(*event)
            except BaseException:
                self.kept.insert(0, event)
                raise
            written.append(event)
        return written

    async def audit(self, event: NewEvent) -> None:
        """Append an audit event now, or keep it for the next audit flush if the ledger refuses."""
        try:
            await self.store.append_event(*event)
        except LedgerError as exc:
            self.keep(event, exc)

    def keep(self, event: NewEvent, error: LedgerError) -> None:
        """An audit event the ledger refused: write it with the next audit flush."""
        self.kept.append(event)
        if self.on_kept is not None:
            self.on_kept(error)

    @asynccontextmanager
    async def _kept_if_rolled_back(self, written: list[NewEvent]) -> AsyncIterator[None]:
        """Audit events written inside a transaction that then rolled back are kept, not lost."""
        try:
            yield
        except BaseException:
            self.kept[:0] = written
            raise


def _runs(
    plans: Sequence[tuple[act.Ingest, list[Packet], set[bytes]]],
) -> list[tuple[tuple[str, bool], list[tuple[act.Ingest, list[Packet], set[bytes]]]]]:
    """The plans cut into runs of consecutive items with one source and one quarantine state."""
    runs: list[tuple[tuple[str, bool], list[tuple[act.Ingest, list[Packet], set[bytes]]]]] = []
    for plan in plans:
        key = (plan[0].peer, plan[0].quarantine)
        if runs and runs[-1][0] == key:
            runs[-1][1].append(plan)
        else:
            runs.append((key, [plan]))
    return runs


class Driver:
    """The dispatch loop a node driver shares; subclasses say how links, dials and time work."""

    effects: Effects
    clock: Callable[[], float]
    metrics: Counters | None = None  # sees every action first; counts, never decides

    async def carry_out(self, actions: Sequence[act.Action]) -> None:
        """Carry out ``actions`` in order, and the actions their answers bring, until none are left."""
        pending: deque[act.Action] = deque(actions)
        metrics = self.metrics
        while pending:
            action = pending.popleft()
            if metrics is not None:
                metrics.saw(action)
            if isinstance(action, LINK_ACTIONS):
                pending.extend(self.on_link(action))
            elif isinstance(action, act.Dial):
                self.dial(action.url)
            elif isinstance(action, act.WakeAt):
                self.wake_at(action.at)
            elif isinstance(action, act.Ingest):
                pending.extend(await self.ingest(action))
            elif isinstance(action, act.QueryResult):
                self.query_answered(action)
            elif isinstance(action, act.Audit):
                self.effects.queue_decisions(action.records, self.clock())
                self.audit_queued()
            else:
                pending.extend(await self.effects.perform(action, self.clock()))

    # -- what a driver provides -------------------------------------------------------------

    def on_link(self, action: Any) -> list[act.Action]:
        """Hand a link action to the owner of that link's session (see :func:`apply_to_session`);
        a driver that carries it out at once returns what the session's events brought."""
        raise NotImplementedError

    def dial(self, url: str) -> None:
        raise NotImplementedError

    def wake_at(self, at: float) -> None:
        """Call the coordinator's ``wake`` at ``at``; replaces the previous wake-up."""
        raise NotImplementedError

    async def ingest(self, action: act.Ingest) -> list[act.Action]:
        """Store received packets (a runtime may batch them); returns the follow-up actions."""
        return await self.effects.ingest([action], self.clock())

    def query_answered(self, result: act.QueryResult) -> None:
        pass

    def audit_queued(self) -> None:
        """Decisions wait in ``effects.decisions``: write them soon (``effects.write_audit``)."""
