"""The node coordinator: every protocol decision that spans sessions, sans-I/O.

A :class:`~ark_lattice.protocol.session.Session` decides what one connection may carry. The
coordinator decides one level up, across all of a node's sessions (DESIGN §2):

- which packet set a session reconciles over, and that quarantined packets never leave;
- relay fan-out: a packet stored from one peer is pushed to the others whose tier lets us send,
  never back to its source, and never when it came from a sandbox peer;
- the dependency loop: packets wait in the intake until what they build on is stored, and
  missing dependencies are wanted from the peer that sent the dependant;
- strikes and isolation: misbehaviour is audited, and past the policy's threshold the peer is
  blocked (if policy allows the tier change) — the defence-first rule of DESIGN §5;
- duplicate sessions: when two connections reach the same peer, both sides keep the same one;
- dialling: which endpoints are worth a session, exponential backoff with jitter, a rate limit
  per wake-up, and a long, growing backoff for a peer that closes us as ``blocked``;
- periodic reconciliation (auto-sync);
- alerts (DESIGN §10): the eager flood to core peers with its hop limit and backstop digest
  (gossip.py), the policy's verdict on an accusation, and quarantines — reversible, made
  permanent only by self-proving evidence or enough distinct core accusers.

It never awaits and never reads a clock, a socket or the store. Inputs are method calls: session
events, answers from the store, ``now`` and a seeded random generator. Outputs are
:data:`Action` values — frozen dataclasses the driver carries out in order (the node runtime over
WebSockets and SQLite, the simulator over its virtual network and clock). Actions that read the
store name the method to call with the answer (``…_read``, ``…_loaded``, ``struck``…), so the
rule that uses the answer stays here too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ark_lattice.alerts import ALERT_KIND, DEFAULT_TOPIC, NONCE_SIZE, Alert
from ark_lattice.errors import ErrorCode, LocalProtocolError, Malformed
from ark_lattice.identity import Identity, NodeId
from ark_lattice.manifest import SignedManifest
from ark_lattice.packet import Packet
from ark_lattice.protocol import events as ev
from ark_lattice.protocol.actions import (
    Action,
    Admit,
    Adopt,
    AnswerQuery,
    Audit,
    AuditStrangers,
    Close,
    Dial,
    Ingest,
    Isolate,
    LinkId,
    LoadGovernance,
    LoadQuery,
    LoadWanted,
    Push,
    Query,
    QueryResult,
    RaiseAlert,
    ReadDialTargets,
    ReadTiers,
    Reconcile,
    RecordEndpoints,
    RecordManifest,
    RecordPeer,
    RecordQuarantine,
    RequestSync,
    SendAlert,
    SendAlertIds,
    SendPackets,
    SetTier,
    Strike,
    SyncSet,
    WakeAt,
    Want,
)
from ark_lattice.protocol.echoes import Echoes
from ark_lattice.protocol.gossip import Flood, Quarantines, hop_limit
from ark_lattice.protocol.governance import (
    GOVERNANCE_KINDS,
    Adopted,
    Equivocated,
    Governance,
    Halted,
    Outcome,
    adoption_verdict,
    equivocation_message,
    halt_message,
)
from ark_lattice.protocol.intake import Admission, Intake
from ark_lattice.protocol.session import Role, Session, SessionConfig
from ark_lattice.protocol.strangers import Strangers, source_of
from ark_lattice.protocol.witnessing import (
    NOT_FOLLOWED,
    RecordCosignature,
    RequestCosignature,
    SendWitnessReply,
    SendWitnessRequest,
    Witness,
)
from ark_lattice.terms import terms_for, worth_a_session
from ark_lattice.tiers import TrustTier
from ark_lattice.witness import ReplyOutcome, Status, Verdict

if TYPE_CHECKING:  # the policy engine (CEL) is the node's to load, not the protocol core's
    from ark_lattice.policy.gate import PolicyGate

__all__ = [
    "Coordinator",
    "DialPolicy",
    "keep_existing_session",
]

log = logging.getLogger("ark_lattice.peering")

STRIKES_TO_BLOCK = 5  # without a policy gate; with one, the policy's own threshold
DIALS_PER_WAKE = 8  # a flood of announcements cannot make us dial a crowd at once
DIAL_PACE = 1.0  # seconds between two rounds of at most DIALS_PER_WAKE dials
ENDED_LINKS_REMEMBERED = 1024  # ingests queued behind a link's end are far fewer
REFRESH_SECONDS = 30.0  # dial targets are re-read after a change, or this often as a safety net
ALERT_HOPS = 3  # the fewest hops our alerts start with (gossip.hop_limit: up to ten nodes)
ALERT_DIGEST_SECONDS = 1.0  # the backstop: a core peer hears of our recent alerts within a second
QUARANTINE_SECONDS = 3600.0  # without a policy gate: how long an unproven accusation holds a peer
ACCUSERS_TO_BLOCK = 2  # without a policy gate: distinct core accusers that make it permanent
FOREIGN_REMEMBERED = 64  # hosts of another federation that dialled us, for `federation status`


@dataclass(frozen=True)
class DialPolicy:
    """Backoff between dials of one endpoint (seconds); jitter is ×[0.5, 1.5) from the rng."""

    base: float = 1.0
    maximum: float = 60.0
    # A peer that closed us as `blocked` has decided; asking again every minute only costs it a
    # handshake. Minutes, doubling, up to an hour: an operator who unblocks us is found soon enough.
    blocked_base: float = 300.0
    blocked_maximum: float = 3600.0

    def delay(self, failures: int, blocked: int, rng: random.Random) -> float:
        if blocked:
            step = min(self.blocked_maximum, self.blocked_base * 2 ** min(blocked - 1, 10))
        else:
            step = min(self.maximum, self.base * 2 ** min(failures, 10))
        return float(step * rng.uniform(0.5, 1.5))


def keep_existing_session(
    my_id: NodeId,
    peer: NodeId,
    existing_role: Role,
    new_role: Role,
    *,
    existing_open: bool = True,
    existing_gone: bool = False,
) -> bool:
    """When two connections reach the same peer, which one both sides keep.

    An existing session whose transport is gone (the reader saw the connection end before its
    owner got to it) is never kept: it can carry nothing, and keeping it would refuse the peer.
    Both nodes dialled each other (different roles): keep the session the smaller node id
    initiated; both sides evaluate this with the same inputs mirrored, so they keep the same one.
    The peer dialled again (same role): keep the existing session only if it is open — one that
    never opened is one the peer has given up on, and keeping it would refuse every redial.
    """
    if existing_gone:
        return False
    if existing_role is new_role:
        return existing_open
    smaller_is_me = my_id.key < peer.key
    winning_role = Role.INITIATOR if smaller_is_me else Role.RESPONDER
    return existing_role is winning_role


# -- state ------------------------------------------------------------------------------------


@dataclass
class _Link:
    id: LinkId
    role: Role
    remote: str
    url: str | None  # the URL we dialled, for links we initiated
    peer: str | None = None
    tier: TrustTier | None = None
    open: bool = False
    closed: bool = False
    sends: bool = False  # both sides' terms let packets (and alerts) flow from us to the peer
    gone: bool = False  # the driver saw the transport end; the session may not know yet
    digested: set[bytes] = field(default_factory=set)  # recent alert ids this link was told of


@dataclass
class _Target:
    url: str
    failures: int = 0
    blocked: int = 0  # consecutive sessions the peer closed as `blocked` or `foreign_federation`
    foreign: bool = False  # the last one: the peer holds another federation key
    next_attempt: float = 0.0
    dialling: bool = False  # a dial or a session from it is under way
    dials: int = 0  # since we started: what an operator (and a test) can hold the backoff to
    last_error: str | None = None


@dataclass
class _Isolation:
    peer: str
    strikes: int
    last: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"peer": self.peer, "strikes": self.strikes, "last": self.last, "at": self.at}


@dataclass
class Coordinator:
    """Decisions across one node's sessions; see the module docstring.

    ``gate`` is the node's policy gate (policy/gate.py): its strike threshold and tier-change
    decisions apply; without one, :data:`STRIKES_TO_BLOCK` and no tier-change check.
    """

    identity: Identity
    federation_key: bytes
    manifest: SignedManifest
    rng: random.Random
    config: SessionConfig = field(default_factory=SessionConfig)
    gate: PolicyGate | None = None
    random_bytes: Callable[[int], bytes] | None = None
    sync_interval: float = 60.0
    auto_sync: bool = True
    dial_policy: DialPolicy = field(default_factory=DialPolicy)
    alert_hops: int | None = None  # None: from the federation's size as we know it (hop_limit)
    # Unauthenticated connections and their failures, summarised (protocol/strangers.py); the
    # driver shares it, since it counts connections before a session exists.
    strangers: Strangers = field(default_factory=Strangers)

    def __post_init__(self) -> None:
        self.node_id = self.identity.node_id
        self.intake = Intake()
        self.isolated: list[_Isolation] = []  # peers we blocked while running, newest last
        self._links: dict[LinkId, _Link] = {}
        self._ended: dict[LinkId, str | None] = {}  # peers of recently ended links, oldest first
        self._pace: tuple[float, int] = (float("-inf"), 0)  # (start of this pace step, dials in it)
        self._next_link = 1
        self._cosign_retried: set[LinkId] = set()  # links asked again after a 409 (witnessing.py)
        self._targets: dict[str, _Target] = {}
        self._targets_stale = True
        self._targets_read_at: float | None = None
        self._last_sync: float | None = None
        self._closing = False
        self.flood = Flood()
        self.quarantines = Quarantines()
        self._tiers: dict[str, TrustTier] = {}  # our tier for every known peer, from the store
        self._last_digest: float | None = None
        self._foreign: dict[str, dict[str, Any]] = {}  # host -> a caller of another federation
        self.echoes = Echoes()  # what peers we only receive from sent us that we already held
        self.governance = Governance()  # leaderless adoption (protocol/governance.py)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        self._last_sync = now
        return [ReadDialTargets()]

    def stop(self, now: float) -> list[Action]:
        """No more dials; every live session is told we are leaving."""
        self._closing = True
        actions: list[Action] = [
            Close(link.id, ErrorCode.SHUTDOWN, "node shutting down") for link in self._live()
        ]
        summaries = self.strangers.flush(now)
        return actions + ([AuditStrangers(tuple(summaries))] if summaries else [])

    def set_auto_sync(self, enabled: bool, interval: float | None, now: float) -> list[Action]:
        self.auto_sync = enabled
        if interval is not None:
            self.sync_interval = interval
        return self.wake(now)

    # -- links ------------------------------------------------------------------------------

    def open_link(
        self, role: Role, remote: str, now: float, *, url: str | None = None
    ) -> tuple[LinkId, Session]:
        """A connection exists (we accepted it, or our dial of ``url`` connected): its session.

        The driver owns the returned session: it feeds it bytes and ticks, sends what it says,
        hands its events to :meth:`session_events` and carries out link actions on it.
        """
        link = _Link(self._next_link, role, remote, url)
        self._next_link += 1
        self._links[link.id] = link
        session = Session(
            self.identity,
            self.federation_key,
            role,
            self.manifest,
            now=now,
            config=self.config,
            gate=self.gate,
            random_bytes=self.random_bytes,
        )
        return link.id, session

    def dial_failed(self, url: str, reason: str, now: float) -> list[Action]:
        target = self._targets.get(url)
        if target is not None:
            target.dialling = False
            target.failures += 1
            target.last_error = reason
            self._backoff(target, now, blocked=False)
        return self.wake(now)

    def transport_gone(self, link_id: LinkId) -> None:
        """The driver saw the link's connection end (its session may not have been told yet).

        From now on the link never blocks a new session with the same peer (keep_existing_session).
        """
        link = self._links.get(link_id)
        if link is not None:
            link.gone = True

    def link_ended(self, link_id: LinkId, now: float) -> list[Action]:
        """The driver let go of the link (its session closed and the transport is gone)."""
        link = self._links.get(link_id)
        if link is None:
            return []
        if not link.closed:  # the session never said it closed: count it as a lost connection
            self._closed(link, ev.Closed(ErrorCode.CONNECTION_LOST, "the connection ended", True), now)
        del self._links[link_id]
        # Packets it sent may still be waiting for the writer: remember whose they are, so they
        # are never pushed back to the same peer's next session.
        self._ended[link_id] = link.peer
        while len(self._ended) > ENDED_LINKS_REMEMBERED:
            del self._ended[next(iter(self._ended))]
        self._targets_stale = True  # a peer without a session may be worth dialling again
        return self.wake(now)

    def session_events(self, link_id: LinkId, events: Iterable[ev.Event], now: float) -> list[Action]:
        actions: list[Action] = []
        for event in events:
            actions += self._on_event(link_id, event, now)
        return actions

    # -- answers from the store -------------------------------------------------------------

    def peer_recorded(
        self, link_id: LinkId, tier: TrustTier, held_seq: int | None, strikes: int, now: float
    ) -> list[Action]:
        link = self._links.get(link_id)
        if link is None or link.closed:
            return []
        self._tiers[link.peer or ""] = tier
        link.tier = self._effective(link.peer, tier)
        return [Admit(link_id, link.tier, held_seq, strikes)]

    def wanted_loaded(self, link_id: LinkId, stored: Sequence[Any]) -> list[Action]:
        """``stored``: StoredPacket-like (``.packet``, ``.quarantined``) for the wanted ids."""
        return [SendPackets(link_id, self._shareable_with(link_id, stored))]

    def query_loaded(self, link_id: LinkId, query_id: int, stored: Sequence[Any]) -> list[Action]:
        return [AnswerQuery(link_id, query_id, self._shareable_with(link_id, stored))]

    def admit_packets(self, packets: Sequence[Packet], held: set[bytes]) -> Admission:
        """The intake's split of a received batch: ready now (in order) or waiting."""
        return self.intake.admit(packets, held)

    def packets_stored(self, ids: Iterable[bytes]) -> list[Packet]:
        """Waiting packets that became ready because ``ids`` are now stored."""
        return self.intake.stored(ids)

    def ingested(
        self, link_id: LinkId, stored: Sequence[Packet], quarantined: bool, missing: set[bytes], now: float
    ) -> list[Action]:
        """What an Ingest stored (new to us) and which dependencies are still missing."""
        actions: list[Action] = []
        link = self._links.get(link_id)
        if missing and link is not None and not link.closed:
            # sorted: the wire order must not depend on the hash seed (the simulator's reports)
            actions.append(Want(link_id, tuple(sorted(missing))))
        source = link.peer if link is not None else self._ended.get(link_id)
        if stored and not quarantined:
            # Sandbox packets are never re-shared (DESIGN §5); the rest flows on.
            actions += self._relay(stored, source=source)
        for packet in stored:
            # An alert that came by reconciliation or the backstop is acted on like a flooded
            # one, but not flooded again: the peers that lack it repair it the same way.
            # A sandbox peer's copy was judged (and refused) when it came: stored apart, it is not
            # seen, so a core peer's copy is still acted on.
            if packet.header.kind == ALERT_KIND and not quarantined and self.flood.stored(
                packet.id, now, author=str(packet.header.author), accused=_accused(packet)
            ):
                tier = link.tier if link is not None and link.tier is not None else TrustTier.UNKNOWN
                actions += self._judge(packet, source, TrustTier.SANDBOX if quarantined else tier, now)[0]
                actions += self._digest_soon(now)  # its other peers may lack it too
            elif packet.header.kind in GOVERNANCE_KINDS and not quarantined:
                self.flood.stored(packet.id, now, author=str(packet.header.author))
                actions += self._governed(self.governance.add(packet), now) + self._digest_soon(now)
        return actions

    def echoed(self, link_id: LinkId, packets: Sequence[Packet]) -> None:
        """An Ingest found ``packets`` already held. If we only receive from this link's peer,
        they join our set for its next reconciliation, so it stops sending them every round
        (protocol/echoes.py)."""
        link = self._links.get(link_id)
        if packets and link is not None and link.peer is not None and not link.sends:
            self.echoes.add(link.peer, packets)

    def local_packets(self, stored: Sequence[Any], now: float) -> list[Action]:
        """Packets the operator published since the last call (StoredPacket-like): push them."""
        fresh = [sp.packet for sp in stored if not sp.quarantined and sp.source == "local"]
        actions = self._relay(fresh, source=None)
        for packet in fresh:
            if packet.header.kind == ALERT_KIND:  # published offline (`alerts raise`): flood it now
                actions += self.alert_raised(packet, now)
            elif packet.header.kind in GOVERNANCE_KINDS:  # `governance propose|approve`: flood it
                onward = self.flood.copy_arrived(
                    packet.id, self.hop_limit(), None, now, author=str(self.node_id)
                )
                actions += self._forward(packet, onward) + self._digest_soon(now)
                actions += self._governed(self.governance.add(packet), now)
        return actions

    # -- governance -------------------------------------------------------------------------

    def load_governance(self) -> list[Action]:
        """What a driver does once at start, after :meth:`start`: replay the governance held."""
        return [LoadGovernance()]

    def governance_loaded(self, packets: Sequence[Packet], now: float) -> list[Action]:
        """The governance packets held at start, oldest first: replayed without alerting again
        (they were raised when the packets came); adoptions are recorded once by the driver."""
        return self._governed(self.governance.add_all(packets), now, alert=False)

    def _governed(self, outcomes: Sequence[Outcome], now: float, *, alert: bool = True) -> list[Action]:
        """What governance decided, as actions: adopt (policy permitting), or alert and demote."""
        actions: list[Action] = []
        # The members speak for the federation: their alerts (self-proving) reach and convince
        # every node, which needs no alert of its own from each of a thousand nodes.
        m = self.governance.membership
        alert = alert and m is not None and self.node_id.key in m.members
        for outcome in outcomes:
            if isinstance(outcome, Adopted):
                author = str(NodeId(outcome.proposal.author))
                ours = author == str(self.node_id)
                tier = TrustTier.CORE if ours else self._tiers.get(author, TrustTier.UNKNOWN)
                apply, reason, records = adoption_verdict(
                    self.gate, outcome, author_tier=tier.value, self_id=str(self.node_id), now=now,
                    tier_of=lambda peer: self._tiers.get(peer, TrustTier.UNKNOWN).value,
                )
                if records:
                    actions.append(Audit(tuple(records)))
                p = outcome.proposal
                log.info("governance: %s proposal %s adopted (v%d), %s", p.kind,
                         outcome.packet.hex_id[:16], p.new, "applied" if apply else "not applied")
                actions.append(Adopt(outcome, apply, reason))
            elif alert and isinstance(outcome, Equivocated) and outcome.node != str(self.node_id):
                # Self-proving: every node that holds both approvals blocks the key (by policy).
                from ark_lattice.governance.documents import approval_evidence

                actions += self.raise_alert(
                    "critical", equivocation_message(outcome), about=outcome.node,
                    evidence=approval_evidence(outcome.first, outcome.second), now=now,
                )
            elif alert and isinstance(outcome, Halted):
                actions += self.raise_alert("critical", halt_message(outcome)[:1024], now=now)
        return actions

    def struck(
        self,
        link_id: LinkId,
        peer: str,
        strikes: int,
        old_tier: TrustTier,
        code: str,
        reason: str,
        now: float,
    ) -> list[Action]:
        """A strike was counted; past the threshold the peer is isolated (if policy agrees)."""
        threshold = self.strikes_to_block
        if not threshold or strikes < threshold:
            return []
        actions: list[Action] = []
        if self.gate is not None:
            decision, record = self.gate.tier_change(
                peer_id=peer, old_tier=old_tier.value, new_tier=TrustTier.BLOCKED.value,
                actor="policy", strikes=strikes, now=now,
            )
            actions.append(Audit((record,)))
            if not decision.allowed:
                return actions
        actions.append(Isolate(peer, f"isolated after {strikes} strikes; last: {code}: {reason}"))
        self._tiers[peer] = TrustTier.BLOCKED  # our own alert about it must not quarantine it again
        if old_tier is not TrustTier.BLOCKED and all(i.peer != peer for i in self.isolated):
            self.isolated.append(_Isolation(peer, strikes, code, now))
            log.warning("isolated peer %s after %d strikes", peer[:16], strikes)
            # Defence first (DESIGN §10): our core peers hear of it within the same second.
            message = f"isolated after {strikes} strikes; last: {code}: {reason}"
            actions += self.raise_alert("critical", message[:1024], about=peer, now=now)
        actions += self._block_links(peer)
        return actions

    def dial_targets_read(
        self,
        endpoints: Iterable[tuple[str, str | None]],
        peers: Iterable[tuple[str, TrustTier, Sequence[str]]],
        now: float,
    ) -> list[Action]:
        """Dial endpoints never identified yet, and those of peers whose tier gives a session work.

        ``endpoints``: (url, peer id or None); ``peers``: (peer id, tier, endpoints).
        """
        self._targets_stale, self._targets_read_at = False, now
        wanted = {url for url, peer in endpoints if peer is None}
        # A session still being set up counts: dialling its peer again now would only be refused
        # as a duplicate. If the setup fails, the link's end makes us read the targets again.
        connected = {link.peer for link in self._live() if link.peer is not None}
        for peer, tier, urls in peers:
            self._tiers[peer] = tier
            if worth_a_session(tier) and peer not in connected and peer not in self.quarantines:
                wanted.update(urls)
        for url in sorted(wanted):  # dial order must not depend on the hash seed
            self._targets.setdefault(url, _Target(url))
        for url in list(self._targets):
            if url not in wanted and not self._targets[url].dialling:
                del self._targets[url]
        return self._dials(now) + self._next_wake(now)

    def tiers_read(self, tiers: dict[str, TrustTier], now: float) -> list[Action]:
        """The operator changed tiers: apply them to live sessions."""
        actions: list[Action] = []
        for link in self._live():
            if link.peer is None or link.tier is None:
                continue
            stored = tiers.get(link.peer, TrustTier.UNKNOWN)
            self._tiers[link.peer] = stored
            tier = self._effective(link.peer, stored)
            if tier != link.tier:
                link.tier = tier
                actions.append(SetTier(link.id, tier))
        self._targets_stale = True
        return actions + self.wake(now)

    # -- the operator -----------------------------------------------------------------------

    def add_peer(self, url: str, now: float) -> list[Action]:
        """Remember ``url`` and dial it now."""
        target = self._targets.setdefault(url, _Target(url))
        target.next_attempt = now
        target.failures = target.blocked = 0
        self._targets_stale = True
        return [RecordEndpoints((url,), "operator"), *self.wake(now)]

    def discovered(self, peer: str, urls: Sequence[str], source: str, now: float) -> list[Action]:
        """A verified announcement (mDNS, beacon) named a peer: remember it; its tier decides
        whether it is dialled (DESIGN §7)."""
        if peer == str(self.node_id) or not urls:
            return []
        self._targets_stale = True
        return [RecordEndpoints(tuple(urls), source, peer), *self.wake(now)]

    def tiers_changed(self) -> list[Action]:
        peers = sorted({link.peer for link in self._live() if link.peer is not None})
        self._targets_stale = True
        return [ReadTiers(tuple(peers))]

    def sync_now(self, now: float) -> list[Action]:
        """A fresh reconciliation on every open session we initiated and where packets flow."""
        self._last_sync = now
        actions: list[Action] = []
        for link in self._live():
            initiated = link.open and link.role is Role.INITIATOR
            if initiated and link.tier is not None and _flows_at_all(link.tier):
                actions.append(RequestSync(link.id))
        return actions

    def query(self, peer: str, topic: str, limit: int) -> list[Action]:
        for link in self._live():
            if link.peer == peer and link.open:
                return [Query(link.id, peer, topic, limit)]
        raise LocalProtocolError(f"no open session with peer {peer[:16]}")

    # -- alerts -----------------------------------------------------------------------------

    def raise_alert(
        self,
        severity: str,
        message: str,
        *,
        about: str | None = None,
        topic: str = DEFAULT_TOPIC,
        evidence: bytes | None = None,
        now: float,
    ) -> list[Action]:
        """Raise an alert of ours: signed and stored by the driver, then flooded (alert_raised).

        Raises ``Malformed`` for a bad field (the operator's input: say so before anything)."""
        alert = Alert(severity, message, about, self.rng.randbytes(NONCE_SIZE), evidence)
        alert.check()
        return [RaiseAlert(alert, topic)]

    def alert_raised(self, packet: Packet, now: float) -> list[Action]:
        """Our alert is stored: flood it to every core peer, and act on it here too."""
        onward = self.flood.copy_arrived(
            packet.id, self.hop_limit(), None, now, author=str(self.node_id), accused=_accused(packet)
        )
        actions = self._forward(packet, onward)
        return actions + self._judge(packet, None, TrustTier.CORE, now)[0] + self._digest_soon(now)

    def lift_quarantine(
        self, peer: str, now: float, *, reason: str = "lifted by the operator"
    ) -> list[Action]:
        """End a quarantine now (the operator's call); its sessions get their stored tier back."""
        if self.quarantines.lift(peer) is None:
            raise LocalProtocolError(f"peer {peer[:16]} is not in quarantine")
        log.warning("quarantine of %s lifted: %s", peer[:16], reason)
        self._targets_stale = True
        return [RecordQuarantine(peer, None, reason), *self._retier(peer), *self.wake(now)]

    def hop_limit(self) -> int:
        """The hops our alerts start with: 3 up to ten nodes, more for a larger federation (as
        far as our own peer list shows it) so the flood alone reaches it (gossip.hop_limit)."""
        if self.alert_hops is not None:
            return self.alert_hops
        core = sum(1 for tier in self._tiers.values() if tier is TrustTier.CORE)
        return max(ALERT_HOPS, hop_limit(core + 1, max(len(self._core_links()), 3)))

    def quarantined(self) -> list[dict[str, Any]]:
        """What `federation status` shows: each held peer, until when, accused by whom."""
        return [q.to_json() for q in self.quarantines]

    # -- witnessing (protocol/witnessing.py, witness.py) -------------------------------------

    def checkpoint_made(self, now: float) -> list[Action]:
        """We signed a new checkpoint: every open core peer is asked to cosign it."""
        return [a for link in self._core_links() for a in self._ask_cosign(link)]

    def cosign_request_built(self, link_id: LinkId, request: bytes | None) -> list[Action]:
        link = self._links.get(link_id)
        if request is None or link is None or link.closed or not link.open:
            return []
        return [SendWitnessRequest(link_id, request)]

    def witnessed(self, link_id: LinkId, peer: str, verdict: Verdict, now: float) -> list[Action]:
        """Our verdict on a peer's checkpoint, persisted: answer it; a fork proof is an alert."""
        actions: list[Action] = []
        if verdict.status is Status.OK and verdict.cosignature is not None:
            body = verdict.cosignature.encode("utf-8")  # tlog-witness: the cosignature lines
        elif verdict.status is Status.CONFLICT and verdict.known_size is not None:
            body = f"{verdict.known_size}\n".encode("ascii")  # text/x.tlog.size
        else:
            body = verdict.reason.encode("utf-8")[:1024]
        note = (verdict.known_note or "").encode("utf-8") if verdict.status is Status.CONFLICT else b""
        link = self._links.get(link_id)
        if link is not None and not link.closed:
            actions.append(SendWitnessReply(link_id, int(verdict.status), body, note))
        if verdict.status is not Status.OK:
            size = verdict.checkpoint.size if verdict.checkpoint is not None else None
            subject = f"checkpoint of size {size}" if size is not None else "checkpoint"
            actions.append(Audit((_record("witness", peer, subject, False, verdict.reason[:256]),)))
        if verdict.fork and verdict.evidence is not None and peer not in self.quarantines:
            if self._tiers.get(peer) is not TrustTier.BLOCKED:
                log.warning("peer %s signed two roots for one ledger size: fork proof", peer[:16])
                message = f"fork: {verdict.reason}; both signed notes are the evidence"
                actions += self.raise_alert(
                    "critical", message[:1024], about=peer, evidence=verdict.evidence, now=now
                )
        return actions

    def cosignature_recorded(
        self, link_id: LinkId, peer: str, outcome: ReplyOutcome, now: float
    ) -> list[Action]:
        """A witness answered: after a 409 naming a size we hold, ask once more from there."""
        link = self._links.get(link_id)
        if outcome.bad:  # bad input from a peer is audited, never silently dropped
            log.warning("witness %s: %s", peer[:16], outcome.message)
            return [Audit((_record("witness_reply", peer, "cosignature", False, outcome.message[:256]),))]
        if outcome.retry_from is None or link is None or link.closed:
            self._cosign_retried.discard(link_id)
            return []
        if link_id in self._cosign_retried:
            log.warning("witness %s keeps refusing our checkpoint: %s", peer[:16], outcome.message)
            return []
        self._cosign_retried.add(link_id)
        return [RequestCosignature(link_id, peer, outcome.retry_from)]

    def _ask_cosign(self, link: _Link) -> list[Action]:
        if link.peer is None or link.tier is not TrustTier.CORE or not link.open or link.closed:
            return []
        return [RequestCosignature(link.id, link.peer)]

    def _witness_requested(self, link: _Link, event: ev.WitnessRequested) -> list[Action]:
        # We witness the logs of our core peers only: to anyone else the log is unknown (404).
        if link.peer is None or link.tier is not TrustTier.CORE:
            return [SendWitnessReply(link.id, NOT_FOLLOWED, b"not a core peer of this witness")]
        return [Witness(link.id, link.peer, event.request)]

    # -- timers -----------------------------------------------------------------------------

    def wake(self, now: float) -> list[Action]:
        """Due dials and auto-sync; the answer always ends with the next WakeAt (if any)."""
        actions: list[Action] = []
        if self._closing:
            return actions
        due = self._targets_read_at is None or now - self._targets_read_at >= REFRESH_SECONDS
        if self._targets_stale or due:
            actions.append(ReadDialTargets())  # its answer dials what is due
        else:
            actions += self._dials(now)
        if self.auto_sync and self._last_sync is not None and now - self._last_sync >= self.sync_interval:
            actions += self.sync_now(now)
        for peer in self.quarantines.expired(now):
            actions += self.lift_quarantine(peer, now, reason="expired without proof")[:-1]
        summaries = self.strangers.due(now)
        if summaries:
            actions.append(AuditStrangers(tuple(summaries)))
        if self._last_digest is None or now - self._last_digest >= ALERT_DIGEST_SECONDS:
            actions += self._digests(now)
        actions += self._next_wake(now)
        return actions

    # -- status -----------------------------------------------------------------------------

    @property
    def strikes_to_block(self) -> int:
        return self.gate.strikes_to_block if self.gate is not None else STRIKES_TO_BLOCK

    def dial_targets(self) -> list[dict[str, Any]]:
        """What `federation status` shows of our dialling: each endpoint, when next and why."""
        return [
            {
                "url": t.url,
                "dialling": t.dialling,
                "dials": t.dials,
                "failures": t.failures,
                "blocked_by_peer": t.blocked > 0 and not t.foreign,
                "foreign": t.foreign,
                "next_attempt": t.next_attempt,
                "last_error": t.last_error,
            }
            for t in sorted(self._targets.values(), key=lambda t: t.url)
        ]

    def foreign_callers(self) -> list[dict[str, Any]]:
        """Addresses that dialled us holding another federation key (`federation status`)."""
        return [dict(v) for v in self._foreign.values()]

    def _foreign_caller(self, remote: str, now: float) -> None:
        host = remote.rsplit(":", 1)[0] if ":" in remote else remote  # "HOST:PORT": the port is ephemeral
        seen = self._foreign.pop(host, None)
        if seen is None:
            log.warning("a node at %s dialled us from another federation (it holds another federation "
                        "key); it needs an invite or this federation's key", host)
            seen = {"address": host, "first_seen": now, "last_seen": now, "count": 0}
        seen["last_seen"], seen["count"] = now, seen["count"] + 1
        self._foreign[host] = seen  # most recent last
        while len(self._foreign) > FOREIGN_REMEMBERED:
            del self._foreign[next(iter(self._foreign))]

    def isolations(self) -> list[dict[str, Any]]:
        return [i.to_json() for i in self.isolated]

    # -- events -----------------------------------------------------------------------------

    def _on_event(self, link_id: LinkId, event: ev.Event, now: float) -> list[Action]:
        link = self._links.get(link_id)
        if link is None:
            return []
        if isinstance(event, ev.PeerAuthenticated):
            return self._authenticated(link, event.peer)
        if isinstance(event, ev.PeerIdentified):
            link.open = True
            target = self._targets.get(link.url) if link.url else None
            if target is not None:
                # Only a session that opened proves the endpoint works: a peer that closes us
                # right after the handshake (it has us blocked) must not reset the backoff.
                target.failures = target.blocked = 0
                target.foreign = False
                target.last_error = None
            m = event.manifest.manifest
            log.info("session with %s (%s) open as %s", event.peer.short, m.name, link.tier)
            # A core peer that was away hears of our recent alerts at the next digest.
            # A core peer witnesses our ledger: it cosigns our newest checkpoint (witnessing.py).
            return [RecordManifest(str(event.peer), event.manifest), *self._ask_cosign(link)]
        if isinstance(event, ev.SyncReady):
            assert link.peer is not None
            link.sends = event.send
            over = SyncSet.SHAREABLE if event.send else SyncSet.FROM_PEER
            also = self.echoes.keys(link.peer) if over is SyncSet.FROM_PEER else ()
            # A core peer that was away hears of our recent alerts at the next digest.
            return [Reconcile(link.id, over, link.peer, also), *self._digest_soon(now)]
        if isinstance(event, ev.PacketsWanted):
            return [LoadWanted(link.id, event.ids)]
        if isinstance(event, ev.PacketsReceived):
            assert link.peer is not None
            return [Ingest(link.id, link.peer, event.packets, event.quarantine)]
        if isinstance(event, ev.QueryReceived):
            return [LoadQuery(link.id, event.query_id, event.topic, event.limit)]
        if isinstance(event, ev.QueryAnswered):
            assert link.peer is not None
            return [QueryResult(link.peer, event.query_id, event.packets, event.more)]
        if isinstance(event, ev.Audited):
            return [Audit(event.records)]
        if isinstance(event, ev.Misbehaviour):
            if link.peer is None and link.role is Role.RESPONDER:
                # A stranger that connected to us: counted and summarised, never one event each.
                # (A node we dialled is audited as before: our dials are paced and backed off.)
                if event.code == ErrorCode.FOREIGN_FEDERATION:
                    self._foreign_caller(link.remote, now)  # named in status, one log line per host
                self.strangers.failed(source_of(link.remote), event.code, event.reason, now)
                return self._stranger_summaries(now)
            subject = link.peer or link.remote
            log.warning("peer %s misbehaved: %s: %s", subject[:16], event.code, event.reason)
            return [Strike(link.id, link.peer, subject, event.code, event.reason, event.fatal)]
        if isinstance(event, ev.PeerReportedError):
            # A peer leaving, or keeping the other of two sessions, is news, not trouble; anything
            # else it reports may be our bug.
            routine = event.code in (ErrorCode.SHUTDOWN, ErrorCode.DUPLICATE_SESSION)
            level = logging.INFO if routine else logging.WARNING
            log.log(level, "peer %s reported %s: %s", link.peer and link.peer[:8], event.code, event.reason)
            return []
        if isinstance(event, ev.SyncCompleted):
            log.info("synced with %s: offered %d, wanted %d",
                     link.peer and link.peer[:8], event.offered, event.wanted)
            return []
        if isinstance(event, ev.Closed):
            if link.peer is None and link.role is Role.RESPONDER and event.code == ErrorCode.TIMEOUT:
                # A silent or slow stranger.
                self.strangers.failed(source_of(link.remote), event.code, event.reason, now)
                return self._closed(link, event, now) + self._stranger_summaries(now)
            return self._closed(link, event, now)
        if isinstance(event, ev.AlertReceived):
            return self._alert_received(link, event, now)
        if isinstance(event, ev.WitnessRequested):
            return self._witness_requested(link, event)
        if isinstance(event, ev.WitnessReplied):
            assert link.peer is not None
            return [RecordCosignature(link.id, link.peer, event.status, event.body, event.note)]
        if isinstance(event, ev.AlertIdsReceived):
            link.digested.update(event.ids)  # it holds these: no need to tell it of them
            missing = self.flood.missing(event.ids)
            return [Want(link.id, tuple(missing))] if missing else []
        return []

    def _stranger_summaries(self, now: float) -> list[Action]:
        """Summaries due now, and the wake-up for the next (protocol/strangers.py)."""
        summaries = self.strangers.due(now)
        actions: list[Action] = [AuditStrangers(tuple(summaries))] if summaries else []
        return actions + self._next_wake(now)

    def _authenticated(self, link: _Link, peer: NodeId) -> list[Action]:
        peer_id = str(peer)
        link.peer = peer_id
        actions: list[Action] = []
        for other in self._live():
            if other is link or other.peer != peer_id:
                continue
            if keep_existing_session(
                self.node_id, peer, other.role, link.role, existing_open=other.open, existing_gone=other.gone
            ):
                link.closed = True
                reason = (
                    "a session with this peer is already open" if other.open
                    else "a session with this peer is being set up"  # both dialled: the tie-break
                )
                return [Close(link.id, ErrorCode.DUPLICATE_SESSION, reason)]
            other.closed = True
            actions.append(Close(other.id, ErrorCode.DUPLICATE_SESSION, _replaced_because(other, link)))
        actions.append(RecordPeer(link.id, peer_id, link.url))
        return actions

    def _closed(self, link: _Link, event: ev.Closed, now: float) -> list[Action]:
        was_open, link.closed, link.open = link.open, True, False
        who = link.peer[:8] if link.peer else link.remote
        # A stranger's close is counted in its summary (strangers.py): one line each would let it
        # write our log as fast as it connects.
        level = logging.INFO if link.peer else logging.DEBUG
        log.log(level, "session with %s closed: %s (%s)", who, event.code, event.reason)
        target = self._targets.get(link.url) if link.url else None
        if target is None or not target.dialling:
            return []
        target.dialling = False
        if was_open:
            target.last_error = None
            self._backoff(target, now, blocked=False)  # failures were reset when it opened
        elif event.by_peer and event.code in (ErrorCode.BLOCKED, ErrorCode.FOREIGN_FEDERATION):
            # Either way the peer has decided, and asking again soon only costs it a handshake:
            # the long backoff. Another federation needs its key (or an invite), not retries.
            target.blocked += 1
            if event.code == ErrorCode.FOREIGN_FEDERATION and not target.foreign:
                log.warning("peer at %s is in another federation (it holds another federation key); "
                            "join it with an invite, or give this node its key", target.url)
            target.foreign = event.code == ErrorCode.FOREIGN_FEDERATION
            target.last_error = (
                "the peer is in another federation (it holds another federation key)"
                if target.foreign else "the peer has us blocked"
            )
            self._backoff(target, now, blocked=True)
        else:
            target.failures += 1
            target.last_error = f"{event.code}: {event.reason}"
            self._backoff(target, now, blocked=False)
        return []

    # -- rules ------------------------------------------------------------------------------

    def _relay(self, packets: Sequence[Packet], *, source: str | None) -> list[Action]:
        flooded = GOVERNANCE_KINDS | {ALERT_KIND}  # alerts and governance packets are flooded
        batch = tuple(p for p in packets if p.header.kind not in flooded)
        if not batch:
            return []
        return [
            Push(link.id, batch)
            for link in self._live()
            if link.open and link.peer is not None and link.peer != source
            and link.tier is not None and terms_for(link.tier).sends
        ]

    def _alert_received(self, link: _Link, event: ev.AlertReceived, now: float) -> list[Action]:
        """A flooded copy: store the first, forward any copy with more hops left, judge the first."""
        assert link.peer is not None
        packet = event.packet
        if packet.header.kind in GOVERNANCE_KINDS:
            return self._governance_received(link, event, now)
        try:
            alert = Alert.from_packet(packet)
        except Malformed as exc:
            return [Strike(link.id, link.peer, link.peer, ErrorCode.BAD_PACKET, f"alert: {exc}", False)]
        tier = TrustTier.SANDBOX if event.quarantine else (link.tier or TrustTier.UNKNOWN)
        if tier is not TrustTier.CORE:
            # Only core peers' alerts travel on (DESIGN §10); a sandbox peer's is kept apart. It
            # does not count as seen: a core peer's copy of it is still forwarded and acted on.
            reason = "not forwarded: the sender is not a core peer"
            return [
                Ingest(link.id, link.peer, (packet,), event.quarantine),
                Audit((_record("alert", link.peer, packet.hex_id, False, reason),)),
            ]
        actions: list[Action] = []
        if packet.id not in self.flood:
            actions.append(Ingest(link.id, link.peer, (packet,), False))
            judged, limited = self._judge(packet, link.peer, tier, now)
            actions += judged
            if limited:
                self.flood.refuse(packet.id, now)
                return actions  # over its author's rate limit: neither forwarded nor acted on
        # The hops are not signed: a copy never goes further than our own alerts would.
        hops = min(event.hops, self.hop_limit())
        onward = self.flood.copy_arrived(
            packet.id, hops, link.peer, now, author=str(packet.header.author), accused=alert.about
        )
        return actions + self._forward(packet, onward) + self._digest_soon(now)

    def _governance_received(self, link: _Link, event: ev.AlertReceived, now: float) -> list[Action]:
        """A flooded governance packet: stored, and sent on at once if a core peer brought it; it
        decides only once stored (ingested), so every node decides from what it holds."""
        assert link.peer is not None
        packet = event.packet
        tier = TrustTier.SANDBOX if event.quarantine else (link.tier or TrustTier.UNKNOWN)
        actions: list[Action] = []
        if packet.id not in self.flood:
            actions.append(Ingest(link.id, link.peer, (packet,), event.quarantine))
        if tier is not TrustTier.CORE:
            return actions
        hops = min(event.hops, self.hop_limit())
        onward = self.flood.copy_arrived(packet.id, hops, link.peer, now, author=str(packet.header.author))
        return actions + self._forward(packet, onward) + self._digest_soon(now)

    def _judge(
        self, packet: Packet, sender: str | None, sender_tier: TrustTier, now: float
    ) -> tuple[list[Action], bool]:
        """The policy's verdict on an alert new to us; an accusation it allows holds the peer.

        Returns the actions and whether the alert was over its author's rate limit."""
        alert = Alert.from_packet(packet)
        author = str(packet.header.author)
        ours = author == str(self.node_id)
        author_tier = TrustTier.CORE if ours else self._tiers.get(author, TrustTier.UNKNOWN)
        proven = alert.self_proving()
        actions: list[Action] = []
        if self.gate is not None:
            decision, exceeded, record = self.gate.alert(
                packet, alert, peer_id=sender or str(self.node_id), peer_tier=sender_tier.value,
                author_tier=author_tier.value, self_proving=proven, now=now,
            )
            actions.append(Audit((record,)))
            if exceeded is not None:
                link = next((x for x in self._live() if x.peer == sender), None)
                if link is not None and sender == author:  # the author itself floods us: a strike
                    reason = f"alert rate limit {exceeded} exceeded"
                    actions.append(Strike(link.id, sender, sender, ErrorCode.RATE_LIMITED, reason, False))
                return actions, True
            allowed = decision is not None and decision.allowed
        else:
            core = sender_tier is TrustTier.CORE and author_tier is TrustTier.CORE
            allowed = core and alert.severity != "info"
        accused = alert.about
        if not allowed or accused is None or accused == str(self.node_id):
            return actions, False
        if self._tiers.get(accused) is TrustTier.BLOCKED:
            return actions, False  # already cut off for good
        if self.gate is not None:
            duration, needed = float(self.gate.alert_quarantine_s), self.gate.alert_accusers_to_block
        else:
            duration, needed = QUARANTINE_SECONDS, ACCUSERS_TO_BLOCK
        held, new = self.quarantines.accuse(
            accused, alert=packet.hex_id, author=author if author_tier is TrustTier.CORE else None,
            until=now + duration,
        )
        if proven or (needed and len(held.accusers) >= needed):
            self.quarantines.lift(accused)
            why = "self-proving evidence" if proven else f"{len(held.accusers)} core accusers"
            log.warning("peer %s blocked on alert %s: %s", accused[:16], packet.hex_id[:16], why)
            self._tiers[accused] = TrustTier.BLOCKED
            return [
                *actions,
                Isolate(accused, f"alert {packet.hex_id}: {why}: {alert.message[:200]}"),
                *self._block_links(accused),
            ], False
        if new:
            log.warning("peer %s quarantined on alert %s until it expires or is proven", accused[:16],
                        packet.hex_id[:16])
            self._targets_stale = True
            why = f"alert {packet.hex_id}: {alert.message[:200]}"
            actions.append(RecordQuarantine(accused, held.until, why))
            # Its sessions end now; if it comes back before the quarantine ends, it is held as
            # a sandbox peer (see _effective) and we do not dial it.
            actions += [
                Close(link.id, ErrorCode.QUARANTINED, f"quarantined on alert {packet.hex_id[:16]}")
                for link in self._live() if link.peer == accused
            ]
        return actions, False

    def _forward(self, packet: Packet, hops: int | None) -> list[Action]:
        """Send a copy to every core peer that has not sent us one, never to the accused."""
        if hops is None:
            return []
        skip = self.flood.served(packet.id, hops) | {str(packet.header.author)}
        accused = self.flood.accused(packet.id)
        if accused is not None:
            skip.add(accused)
        targets = [link for link in self._core_links() if link.peer not in skip]
        for link in targets:
            link.digested.add(packet.id)  # the session carries it: no digest needed on it
        return [SendAlert(link.id, packet, hops) for link in targets]

    def _digests(self, now: float) -> list[Action]:
        """The backstop (DESIGN §10): each second, tell each core peer the ids of recent alerts
        its session has not carried either way (not flooded on it, not listed on it, not sent by
        it), once the flood of each has had a second to settle. A session is a reliable ordered
        stream: what went on it arrives unless the session dies, and a new session starts with
        nothing carried, so it is told again. That repairs an alert that could not cross a cut
        link or went past the hop limit, at one message per session per alert instead of one per
        second for minutes; reconciliation on reconnect catches the rest (docs/protocol.md)."""
        recent = self.flood.recent(now)
        keep = set(recent)
        actions: list[Action] = []
        for link, ids in self._undigested(recent, now):
            link.digested.update(ids)
            actions.append(SendAlertIds(link.id, tuple(ids)))
        for link in self._live():
            link.digested &= keep  # only ids still in the window are worth remembering
        if actions:
            self._last_digest = now
        return actions

    def _undigested(self, recent: Sequence[bytes], now: float) -> list[tuple[_Link, list[bytes]]]:
        """(core link, settled recent ids it has not carried), for each link that has any."""
        out = []
        for link, ids in self._uncarried(recent):
            settled = self._settled(ids, now)
            if settled:
                out.append((link, settled))
        return out

    def _uncarried(self, recent: Sequence[bytes]) -> list[tuple[_Link, list[bytes]]]:
        if not recent:
            return []
        out = []
        for link in self._core_links():
            ids = [
                i for i in recent
                if i not in link.digested
                and not self.flood.holds(i, link.peer)
                and link.peer != self.flood.accused(i)  # the accused is never shown it
            ]
            if ids:
                out.append((link, ids))
        return out

    def _settled(self, ids: list[bytes], now: float) -> list[bytes]:
        return [i for i in ids if (self.flood.first_seen(i) or now) + ALERT_DIGEST_SECONDS <= now]

    def _digest_due(self, now: float) -> float | None:
        """When the next digest has something to say, if ever (paced to one round a second)."""
        firsts = [
            (self.flood.first_seen(i) or now) + ALERT_DIGEST_SECONDS
            for _, ids in self._uncarried(self.flood.recent(now)) for i in ids
        ]
        if not firsts:
            return None
        due = min(firsts)
        if self._last_digest is not None:
            due = max(due, self._last_digest + ALERT_DIGEST_SECONDS)
        return due

    def _digest_soon(self, now: float) -> list[Action]:
        """A WakeAt for the next digest, when some core session has recent alerts to be told of."""
        return self._next_wake(now) if self._digest_due(now) is not None else []

    def _shareable_with(self, link_id: LinkId, stored: Sequence[Any]) -> tuple[Packet, ...]:
        """What we may hand this link's peer: nothing quarantined, and no alert accusing it —
        the accused is never shown an alert's evidence (DESIGN §10), by reconciliation either."""
        link = self._links.get(link_id)
        peer = link.peer if link is not None else None
        return tuple(p for p in _shareable(stored) if peer is None or not _accuses(p, peer))

    def _core_links(self) -> list[_Link]:
        """Sessions alerts go on: open, with a core peer, and past the terms (a session drops
        what is sent to it before both sides' terms let packets flow)."""
        return [link for link in self._live() if link.open and link.sends and link.tier is TrustTier.CORE]

    def _effective(self, peer: str | None, tier: TrustTier) -> TrustTier:
        """A quarantined peer is treated as sandbox while it lasts: what it sends is held apart,
        it gets nothing (DESIGN §10: "its new packets held")."""
        if peer in self.quarantines and tier in (TrustTier.CORE, TrustTier.EXTERNAL):
            return TrustTier.SANDBOX
        return tier

    def _retier(self, peer: str) -> list[Action]:
        """Apply a quarantine put on or lifted to the peer's live sessions."""
        actions: list[Action] = []
        for link in self._live():
            if link.peer == peer and link.tier is not None:
                tier = self._effective(peer, self._tiers.get(peer, link.tier))
                if tier != link.tier:
                    link.tier = tier
                    actions.append(SetTier(link.id, tier))
        return actions

    def _block_links(self, peer: str) -> list[Action]:
        actions: list[Action] = []
        for link in self._live():
            if link.peer == peer:
                link.tier = TrustTier.BLOCKED
                actions.append(SetTier(link.id, TrustTier.BLOCKED))
        self._targets_stale = True
        return actions

    def _dials(self, now: float) -> list[Action]:
        if self._closing:
            return []
        # At most DIALS_PER_WAKE dials per DIAL_PACE seconds, however often we are woken or told
        # of new peers: a flood of announcements cannot make us dial a crowd at once.
        start, spent = self._pace
        if now - start >= DIAL_PACE:
            start, spent = now, 0
        actions: list[Action] = []
        for target in self._targets.values():
            if spent + len(actions) == DIALS_PER_WAKE:
                break
            if not target.dialling and now >= target.next_attempt:
                target.dialling = True
                target.dials += 1
                actions.append(Dial(target.url))
        self._pace = (start, spent + len(actions))
        return actions

    def _backoff(self, target: _Target, now: float, *, blocked: bool) -> None:
        delay = self.dial_policy.delay(target.failures, target.blocked if blocked else 0, self.rng)
        target.next_attempt = now + delay
        self._targets_stale = True

    def _next_wake(self, now: float) -> list[Action]:
        # A due target left over by the dial rate limit is dialled at the next pace step.
        pace_end = self._pace[0] + DIAL_PACE
        times = [max(t.next_attempt, pace_end) for t in self._targets.values() if not t.dialling]
        if self._targets_read_at is not None:
            times.append(self._targets_read_at + REFRESH_SECONDS)
        if self.auto_sync and self._last_sync is not None:
            times.append(self._last_sync + self.sync_interval)
        expiry = self.quarantines.next_expiry()
        if expiry is not None:
            times.append(expiry)
        summary = self.strangers.next_due()
        if summary is not None:
            times.append(max(summary, now + 1e-3))  # due now: the wake-up just after writes it
        future = [t for t in times if t > now]
        digest = self._digest_due(now)
        if digest is not None:
            if digest <= now:
                return [WakeAt(now)]  # a digest is due: wake at once (wake() sends it)
            future.append(digest)
        return [WakeAt(min(future))] if future else []

    def _live(self) -> list[_Link]:
        return [link for link in self._links.values() if not link.closed]


def _replaced_because(old: _Link, new: _Link) -> str:
    """The reason a replaced session is closed with: what happened to it, in words."""
    if old.gone:
        return "replaced by a newer session: the connection of this one is gone"
    if old.role is new.role and not old.open:
        return "replaced by a newer session: this one never opened"
    if old.role is not new.role:
        return "replaced by the session the node with the smaller id initiated"
    return "replaced by a newer session"


def _shareable(stored: Sequence[Any]) -> tuple[Packet, ...]:
    """Quarantined packets never leave this node (DESIGN §5)."""
    return tuple(sp.packet for sp in stored if not sp.quarantined)


def _flows_at_all(tier: TrustTier) -> bool:
    terms = terms_for(tier)
    return terms.sends or terms.accepts


def _accused(packet: Packet) -> str | None:
    try:
        return Alert.from_packet(packet).about
    except Malformed:
        return None


def _accuses(packet: Packet, peer: str) -> bool:
    return packet.header.kind == ALERT_KIND and _accused(packet) == peer


def _record(hook: str, peer: str, subject: str, allowed: bool, reason: str) -> dict[str, Any]:
    """An audit record of a decision the coordinator takes itself (the policy gate's shape)."""
    return {"hook": hook, "peer": peer, "subject": subject, "allowed": allowed, "rules": [], "reason": reason}
