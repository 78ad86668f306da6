"""One peer session, sans-I/O: handshake, manifests, terms, reconciliation, transfer, push, queries.

Bytes come in through :meth:`Session.receive_data` (one WebSocket message each) and go out through
:meth:`Session.data_to_send`; what the node must act on comes out of :meth:`Session.events` as
frozen dataclasses (``protocol/events.py``), and the node answers by calling methods (``admit``,
``start_sync``, ``send_packets``, ``answer_query``, …). Time is an argument of every call that
needs it; the session never reads a clock, a socket or the store, and :meth:`Session.next_deadline`
says when it next needs ``tick``. The runtime, the simulator and the tests all drive this same
object.

Flow of a session (docs/protocol.md)::

    handshake (Noise XX, 3 messages)    → PeerAuthenticated   node answers admit(tier, held_seq)
    manifest ⇄ manifest                  → PeerIdentified      (blocked: closed before this)
    terms ⇄ terms                         → SyncReady           node answers start_sync(items)
    recon ⇄ recon … synced                → SyncCompleted
    offer / want / packets                → PacketsWanted, PacketsReceived
    packets (live push), query / answer, ping / pong, error

The states and the only ways between them are the table :data:`TRANSITIONS`; every change of
state goes through it, and one it does not list raises ``LocalProtocolError`` (as h11's
``_state.py``). The session composes three parts that have their own modules: the tier terms
(``terms.py``), the reconciliation runs (``reconciliation.py``) and the transfer window
(``transfer.py``).

Trust tiers (DESIGN §5) are enforced on both sides: :func:`~ark_lattice.terms.terms_for` says what
we do for a peer of a given tier, and every inbound frame is checked against *our* terms, whatever
the peer claims; a frame our terms forbid gets an error frame, a :class:`Misbehaviour` event (the
node audits it and counts a strike) and is dropped.

Errors: what the peer does wrong becomes a ``Misbehaviour`` event and an error frame, never an
exception out of the session; what the node does wrong (a call the state does not allow, an
unknown error code) raises ``LocalProtocolError``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ark_lattice.alerts import ALERT_KIND
from ark_lattice.errors import (
    BadSignature,
    ErrorCode,
    LocalProtocolError,
    Malformed,
    RemoteProtocolError,
    UsageError,
    VerificationError,
)
from ark_lattice.governance.documents import GOVERNANCE_KINDS
from ark_lattice.hlc import unpack
from ark_lattice.identity import Identity, NodeId
from ark_lattice.manifest import MAX_SIGNED_MANIFEST, SignedManifest
from ark_lattice.packet import Packet
from ark_lattice.protocol import handshake, reconcile
from ark_lattice.protocol.budget import DEFAULT_BUDGET, MemberBudget
from ark_lattice.protocol.channel import MAX_FRAME, TAG_SIZE, SecureChannel
from ark_lattice.protocol.events import (
    AlertIdsReceived,
    AlertReceived,
    Audited,
    Closed,
    Event,
    Misbehaviour,
    PacketsReceived,
    PacketsWanted,
    PeerAuthenticated,
    PeerIdentified,
    PeerReportedError,
    QueryAnswered,
    QueryReceived,
    SyncCompleted,
    SyncReady,
    WitnessReplied,
    WitnessRequested,
)
from ark_lattice.protocol.frames import (
    MAX_ALERT_IDS,
    MAX_FRAME_PAYLOAD,
    AlertFrame,
    AlertIdsFrame,
    AnswerFrame,
    ErrorFrame,
    Frame,
    ManifestFrame,
    OfferFrame,
    PacketsFrame,
    PingFrame,
    PongFrame,
    QueryFrame,
    ReconFrame,
    SyncedFrame,
    TermsFrame,
    WantFrame,
    WirePacket,
    WitnessReplyFrame,
    WitnessRequestFrame,
    parse_frame,
)
from ark_lattice.protocol.receipt import Checked, Opened
from ark_lattice.protocol.reconciliation import Reconciliation, ReconStep
from ark_lattice.protocol.transfer import DEFAULT_INFLIGHT_BYTES, TransferWindow, packet_frames, wire_size
from ark_lattice.terms import terms_for
from ark_lattice.tiers import TrustTier

if TYPE_CHECKING:  # the policy engine (CEL) is the node's to load, not the protocol core's
    from ark_lattice.policy.gate import PolicyGate

__all__ = [
    "Session",
    "SessionConfig",
    "Role",
    "State",
    "Transition",
    "TRANSITIONS",
    "SETUP_FRAME_LIMIT",
]


class Role(enum.Enum):
    INITIATOR = "initiator"  # dialled the connection; drives reconciliation
    RESPONDER = "responder"


class State(enum.Enum):
    HANDSHAKE = "handshake"
    AUTHENTICATED = "authenticated"  # peer id known; waiting for the node's admit()
    IDENTIFYING = "identifying"  # manifests in flight
    OPEN = "open"
    CLOSED = "closed"


class Transition(enum.Enum):
    """What moves a session from one state to the next (docs/protocol.md §2)."""

    AUTHENTICATE = "authenticate"  # the handshake proved who the peer is
    ADMIT = "admit"  # the node gave the peer a tier other than blocked; our manifest goes out
    IDENTIFY = "identify"  # the peer's manifest verified
    CLOSE = "close"  # ours, the peer's, a timeout, or the transport ended


#: Every allowed change of state, in one place; anything else is a bug of ours
#: (``LocalProtocolError``). A session only moves forward, and may close from any live state.
TRANSITIONS: Mapping[State, Mapping[Transition, State]] = {
    State.HANDSHAKE: {Transition.AUTHENTICATE: State.AUTHENTICATED, Transition.CLOSE: State.CLOSED},
    State.AUTHENTICATED: {Transition.ADMIT: State.IDENTIFYING, Transition.CLOSE: State.CLOSED},
    State.IDENTIFYING: {Transition.IDENTIFY: State.OPEN, Transition.CLOSE: State.CLOSED},
    State.OPEN: {Transition.CLOSE: State.CLOSED},
    State.CLOSED: {},
}


@dataclass(frozen=True)
class SessionConfig:
    heartbeat_interval: float = 15.0  # seconds of our silence before a ping
    idle_timeout: float = 45.0  # seconds of the peer's silence before the session is stale
    handshake_timeout: float = 10.0
    want_batch: int = 512  # ids per want frame
    max_inflight_wants: int = 4  # want frames outstanding at once (receiver-driven flow control)
    max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES  # and the bytes they may bring (transfer.py)
    max_packets_bytes: int = MAX_FRAME_PAYLOAD - 64 * 1024  # plaintext budget of a packets frame
    future_skew_ms: int = 5 * 60 * 1000  # packets stamped further ahead are refused (DESIGN §6)
    recon_frame_limit: int = 400_000  # under frames.MAX_RECON; fewer rounds when d is large

    def with_idle_timeout(self, seconds: float) -> SessionConfig:
        """This config with another idle timeout, and heartbeats at a third of it.

        A third, so that two lost pings never make a peer stale: a peer that answers any one of
        the three pings sent within an idle timeout stays alive.
        """
        if not 0 < seconds < math.inf:
            raise UsageError(f"the idle timeout must be a positive number of seconds, not {seconds!r}")
        return dataclasses.replace(self, idle_timeout=seconds, heartbeat_interval=seconds / 3)


#: Before a session is authenticated, the largest WebSocket message it accepts is the handshake
#: message it waits for (handshake.py: msg1 48, msg2 197, msg3 165 bytes), so a stranger without
#: the federation key never makes us buffer more than that. A responder that accepted msg1 (proof
#: of the key) may also get the initiator's manifest frame right behind msg3, before it has
#: processed msg3: room for that one frame (a signed manifest at its largest, its CBOR framing and
#: the AEAD tag).
SETUP_FRAME_LIMIT = MAX_SIGNED_MANIFEST + 64 + TAG_SIZE


class Session:
    def __init__(
        self,
        identity: Identity,
        federation_key: bytes,
        role: Role,
        manifest: SignedManifest,
        *,
        now: float,
        config: SessionConfig = SessionConfig(),
        expected_peer: NodeId | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
        gate: PolicyGate | None = None,
    ) -> None:
        """``gate`` is the node's policy gate (policy/gate.py), asked before any packet or query
        crosses; without one only the tier table applies (and external queries are limited to
        public/ topics)."""
        self.role = role
        self.gate = gate
        self.strikes = 0
        self.config = config
        self.state = State.HANDSHAKE
        self.peer: NodeId | None = None
        self.tier: TrustTier | None = None
        self.our_terms: TermsFrame | None = None
        self.their_terms: TermsFrame | None = None
        self.peer_manifest: SignedManifest | None = None
        self.close_code: str | None = None
        self.packets_in = 0
        self.packets_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_sync: float | None = None
        self._identity = identity
        self._manifest = manifest
        self._started = now
        self._last_received = now
        self._last_sent = now
        self._held_seq: int | None = None
        self._pending_manifest: bytes | None = None
        self._outgoing: list[bytes] = []
        self._events: list[Event] = []
        self._channel: SecureChannel | None = None
        self._ping_nonce = 0
        self._handshake_received = 0  # handshake messages the peer sent that we accepted
        self._recon = Reconciliation(
            initiator=role is Role.INITIATOR, frame_size_limit=config.recon_frame_limit
        )
        self._transfer = TransferWindow(
            want_batch=config.want_batch, max_inflight_wants=config.max_inflight_wants,
            max_inflight_bytes=config.max_inflight_bytes,
        )
        # queries we asked
        self._next_query = 1
        self._queries: set[int] = set()
        self._witness_asked = 0  # add-checkpoint requests not answered yet
        if role is Role.INITIATOR:
            self._hs: handshake.Initiator | handshake.Responder | None = handshake.Initiator(
                identity, federation_key, expected_peer=expected_peer, random_bytes=random_bytes
            )
            self._send_raw(self._hs.start(), now)
        else:
            self._hs = handshake.Responder(identity, federation_key, random_bytes=random_bytes)

    # -- I/O surface ------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    @property
    def flows(self) -> tuple[bool, bool]:
        """(we send to them, they send to us) — both sides' terms agree on it."""
        if self.our_terms is None or self.their_terms is None:
            return False, False
        return (
            self.our_terms.sends and self.their_terms.accepts,
            self.our_terms.accepts and self.their_terms.sends,
        )

    @property
    def budget(self) -> MemberBudget:
        """What this peer may make us spend (budget.py): the node's policy, else the defaults."""
        return self.gate.budget if self.gate is not None else DEFAULT_BUDGET

    @property
    def syncing(self) -> bool:
        return self._recon.running or self._transfer.busy

    @property
    def wanting(self) -> int:
        """Packets we asked this peer for that have not arrived yet (a catch-up's remainder)."""
        return self._transfer.pending

    @property
    def receive_limit(self) -> int:
        """The largest message this session can accept next, in bytes (see SETUP_FRAME_LIMIT).

        The driver holds its transport to it (a WebSocket ``max_size``), so a bigger message is
        refused by its length, unread. It only grows: a driver that raises the transport's limit
        before it sends what the session produced never refuses a message an honest peer sends.
        """
        if self.state is not State.HANDSHAKE:
            return MAX_FRAME
        if self.role is Role.INITIATOR:
            return handshake.MSG2_SIZE
        if self._handshake_received == 0:
            return handshake.MSG1_SIZE
        return max(handshake.MSG3_SIZE, SETUP_FRAME_LIMIT)

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed one WebSocket message from the peer: :meth:`open`, then :meth:`deliver`."""
        opened = self.open(data, now)
        if opened is not None:
            self.deliver(opened, now)

    def open(self, data: bytes, now: float) -> Opened | None:
        """Decrypt and parse one WebSocket message, in the order the peer sent them.

        Returns the frame for :meth:`deliver`, which must get every returned frame in the same
        order; in between, a driver may run :meth:`Opened.verify` on another thread
        (protocol/receipt.py). Handshake messages and frames that fail to open are handled here
        at once, and give ``None``.
        """
        if self.state is State.CLOSED:
            return None
        self._last_received = now
        self.bytes_in += len(data)
        try:
            if self.state is State.HANDSHAKE:
                self._receive_handshake(data, now)
                return None
            assert self._channel is not None
            return Opened(parse_frame(self._channel.open(data), self.budget.frame_limits))
        except RemoteProtocolError as exc:
            self._peer_failed(exc, now)
            return None

    def deliver(self, opened: Opened, now: float) -> None:
        """Act on a frame :meth:`open` returned; its packets are verified now if they were not."""
        if self.state is State.CLOSED:
            return  # an earlier frame (or the node) closed the session: the rest is moot
        try:
            self._dispatch(opened, now)
        except RemoteProtocolError as exc:
            self._peer_failed(exc, now)

    def tick(self, now: float) -> None:
        """Timers: handshake deadline, heartbeats, stale detection.

        Call it at :meth:`next_deadline` (or more often: a call before it does nothing).
        """
        if self.state is State.CLOSED:
            return
        # The timeouts are "more than N seconds", the heartbeat "N seconds or more";
        # next_deadline() computes the same sums, so the two never disagree by a rounding.
        if self.state is not State.OPEN and now > self._started + self.config.handshake_timeout:
            self._close(ErrorCode.TIMEOUT, "session setup took too long", now, notify=False)
            return
        if now > self._last_received + self.config.idle_timeout:
            self._close(ErrorCode.TIMEOUT, "peer silent past the idle timeout (stale)", now, notify=False)
            return
        if self.state is State.OPEN and now >= self._last_sent + self.config.heartbeat_interval:
            self._ping_nonce += 1
            self._send(PingFrame(self._ping_nonce), now)

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`tick` does something; ``None`` once closed.

        Exact: ``tick(t)`` for any ``t`` before it does nothing, and ``tick`` at it does what is
        due. Every call into the session can move it (data in or out, ``admit``…), so ask again
        after each. The timeouts fire strictly after their limit, hence the next float past it.
        """
        if self.state is State.CLOSED:
            return None
        deadline = _just_after(self._last_received + self.config.idle_timeout)
        if self.state is not State.OPEN:
            return min(deadline, _just_after(self._started + self.config.handshake_timeout))
        return min(deadline, self._last_sent + self.config.heartbeat_interval)

    def close(self, code: str, reason: str, now: float) -> None:
        """Close from our side with an error frame (e.g. shutdown, duplicate, blocked)."""
        self._close(_our_code(code), reason, now, notify=True)

    def connection_lost(self, now: float, *, peer_code: str | None = None) -> None:
        """The transport ended. ``peer_code`` is the reason the peer gave when it closed (the
        WebSocket close reason, e.g. ``blocked``); it is untrusted text, so it becomes the
        ``Closed`` code only if it is an :class:`ErrorCode` value, else ``connection_lost``."""
        if self.state is State.CLOSED:
            return
        code = _peer_code(peer_code)
        if code is ErrorCode.CONNECTION_LOST:
            reason = "the connection dropped"
        else:
            reason = f"the peer closed the connection ({code.value})"
        self._close(code, reason, now, notify=False, by_peer=True)

    # -- node decisions ---------------------------------------------------------------------

    def admit(
        self, tier: TrustTier, now: float, *, held_seq: int | None = None, strikes: int = 0
    ) -> None:
        """The node's answer to :class:`PeerAuthenticated`: the tier it gives this peer."""
        if Transition.ADMIT not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"admit() in state {self.state.value}")
        self.tier = tier
        self.strikes = strikes
        self._held_seq = held_seq
        if tier is TrustTier.BLOCKED:
            # DESIGN §5: nothing for a blocked peer, not even our manifest.
            self._close(ErrorCode.BLOCKED, "blocked", now, notify=False)
            return
        self._transition(Transition.ADMIT)
        self._send(ManifestFrame(self._manifest.to_bytes()), now)
        if self._pending_manifest is not None:
            pending, self._pending_manifest = self._pending_manifest, None
            self._replay(lambda: self._on_manifest(pending, now), now)

    def set_tier(self, tier: TrustTier, now: float) -> None:
        """The operator or policy changed this peer's tier during the session."""
        if self.state is State.CLOSED:
            return
        if self.state in (State.HANDSHAKE, State.AUTHENTICATED):
            self.tier = tier
            return
        self.tier = tier
        if tier is TrustTier.BLOCKED:
            self._close(ErrorCode.BLOCKED, "blocked", now, notify=False)
            return
        if self.state is State.OPEN:
            self._send_terms(now)

    def start_sync(self, items: reconcile.ItemSet, now: float) -> None:
        """The node's answer to :class:`SyncReady`: the set this session reconciles over."""
        first = self._recon.start(items, self.budget)
        if first is not None:
            self._send(first, now)
            return
        held = self._recon.take_held()
        if held is not None:
            self._replay(lambda: self._on_recon(held, now), now)

    def request_sync(self) -> bool:
        """Ask for a fresh reconciliation (auto-sync); the node then gets :class:`SyncReady`."""
        if self.state is not State.OPEN or self.role is not Role.INITIATOR or not any(self.flows):
            return False
        if self._recon.running:
            return False  # one already running
        self._ready()
        return True

    def send_packets(self, packets: Sequence[Packet], now: float) -> None:
        """Answer a :class:`PacketsWanted` with the packets we hold (in any order)."""
        send, _ = self.flows
        if not send:
            packets = ()  # the tier changed since they asked: send nothing, end the answer
        ordered = sorted(self._outbound(packets, now), key=lambda p: (p.header.created_at, p.id))
        self._send_packet_frames(ordered, now, live=False)  # dependencies first

    def push(self, packets: Sequence[Packet], now: float) -> int:
        """Live push of new packets to a peer we send to; returns how many were sent."""
        send, _ = self.flows
        if not send or self.state is not State.OPEN or not packets:
            return 0
        ordered = sorted(self._outbound(packets, now), key=lambda p: (p.header.created_at, p.id))
        if ordered:
            self._send_packet_frames(ordered, now, live=True)
        return len(ordered)

    def send_alert(self, packet: Packet, hops: int, now: float) -> bool:
        """Flood an alert to a peer we send to, ahead of anything queued after it; True if sent."""
        send, _ = self.flows
        if not send or self.state is not State.OPEN:
            return False
        if not self._outbound([packet], now):
            return False  # our policy keeps it from this peer (audited)
        self._send(AlertFrame(WirePacket(packet.header_bytes, packet.signature, packet.body), hops), now)
        self.packets_out += 1
        return True

    def send_alert_ids(self, ids: Sequence[bytes], now: float) -> None:
        """Tell a peer we send to which recent alerts we hold (the flood's backstop)."""
        send, _ = self.flows
        if send and self.state is State.OPEN and ids:
            self._send(AlertIdsFrame(tuple(ids[:MAX_ALERT_IDS])), now)

    def send_witness_request(self, request: bytes, now: float) -> None:
        """Ask the peer to cosign our checkpoint (witness.py); its answer is WitnessReplied."""
        if self.state is State.OPEN:
            self._witness_asked += 1
            self._send(WitnessRequestFrame(request), now)

    def send_witness_reply(self, status: int, body: bytes, note: bytes, now: float) -> None:
        if self.state is State.OPEN:
            self._send(WitnessReplyFrame(status, body, note), now)

    def want(self, ids: Iterable[bytes], now: float, *, first: bool = False) -> None:
        """Fetch more ids from this peer (missing dependencies go ``first``)."""
        self._transfer.want(ids, first=first)
        self._pump_wants(now)

    def query(self, topic: str, limit: int, now: float) -> int:
        """Send a read-only query; the answer arrives as :class:`QueryAnswered`.

        Raises ``LocalProtocolError`` if the session is not open or the peer's terms say it
        answers none of our queries: asking would only earn us a strike.
        """
        if self.state is not State.OPEN or self.their_terms is None:
            raise LocalProtocolError("the session with this peer is not open yet")
        if not self.their_terms.answers_queries:
            raise LocalProtocolError("this peer does not answer our queries (its tier for us forbids it)")
        qid = self._next_query
        self._next_query += 1
        self._queries.add(qid)
        self._send(QueryFrame(qid, topic, limit), now)
        return qid

    def answer_query(self, query_id: int, packets: Sequence[Packet], now: float) -> None:
        if self.our_terms is None or not self.our_terms.answers_queries:
            packets = ()
        chosen: list[WirePacket] = []
        budget = self.config.max_packets_bytes
        more = False
        for p in packets:
            wire = WirePacket(p.header_bytes, p.signature, p.body)
            if wire.size > budget:
                more = True
                break
            budget -= wire.size
            chosen.append(wire)
        self._send(AnswerFrame(query_id, tuple(chosen), more), now)

    def refuse(self, code: str, reason: str, now: float, *, fatal: bool = False) -> None:
        """Tell the peer the node refused something (policy, rate limit) and count it."""
        self._misbehaved(_our_code(code), reason, now, fatal=fatal)

    # -- state ------------------------------------------------------------------------------

    def _transition(self, transition: Transition) -> None:
        """The one place the state changes; only along :data:`TRANSITIONS`."""
        target = TRANSITIONS[self.state].get(transition)
        if target is None:
            raise LocalProtocolError(f"cannot {transition.value} a session in state {self.state.value}")
        self.state = target

    # -- handshake --------------------------------------------------------------------------

    def _receive_handshake(self, data: bytes, now: float) -> None:
        assert self._hs is not None
        reply = self._hs.receive(data)
        self._handshake_received += 1
        if reply:
            self._send_raw(reply, now)
        if not self._hs.complete:
            return
        result = self._hs.result
        self._hs = None
        self._channel = SecureChannel.from_handshake(result)
        self.peer = result.peer
        if self.peer == self._identity.node_id:
            self._close(ErrorCode.DUPLICATE_SESSION, "connected to ourselves", now, notify=True)
            return
        self._transition(Transition.AUTHENTICATE)
        self._events.append(PeerAuthenticated(result.peer))

    # -- frames -----------------------------------------------------------------------------

    def _dispatch(self, opened: Opened, now: float) -> None:
        frame = opened.frame
        if isinstance(frame, ErrorFrame):
            self._events.append(PeerReportedError(frame.code, frame.reason, frame.fatal))
            if frame.fatal:
                self._close(frame.code, frame.reason, now, notify=False, by_peer=True)
            return
        if isinstance(frame, PingFrame) and not isinstance(frame, PongFrame):
            self._send(PongFrame(frame.nonce), now)
            return
        if isinstance(frame, PongFrame):
            return
        if isinstance(frame, ManifestFrame):
            if self.state is State.AUTHENTICATED:
                self._pending_manifest = frame.signed_manifest  # wait for the node's admit()
                return
            if self.state is not State.IDENTIFYING:
                raise RemoteProtocolError(ErrorCode.OUT_OF_ORDER, "manifest after identification")
            self._on_manifest(frame.signed_manifest, now)
            return
        if self.state is not State.OPEN:
            raise RemoteProtocolError(ErrorCode.OUT_OF_ORDER, f"{frame.TYPE} before identification")
        # The frames that carry signed packets get them checked (protocol/receipt.py).
        if isinstance(frame, PacketsFrame):
            self._on_packets(frame, opened.checked(), now)
            return
        if isinstance(frame, AnswerFrame):
            self._on_answer(frame, opened.checked(), now)
            return
        if isinstance(frame, AlertFrame):
            self._on_alert(frame, opened.checked()[0], now)
            return
        handler = {
            TermsFrame: self._on_terms,
            ReconFrame: self._on_recon,
            SyncedFrame: self._on_synced,
            OfferFrame: self._on_offer,
            WantFrame: self._on_want,
            QueryFrame: self._on_query,
            AlertIdsFrame: self._on_alert_ids,
            WitnessRequestFrame: self._on_witness_request,
            WitnessReplyFrame: self._on_witness_reply,
        }[type(frame)]
        handler(frame, now)  # type: ignore[operator]

    def _on_manifest(self, data: bytes, now: float) -> None:
        assert self.peer is not None
        try:
            signed = SignedManifest.from_bytes(data)
            if signed.manifest.node_id != self.peer:
                raise Malformed("the manifest describes another node than the one authenticated")
            signed.check_fresh(int(now), self._held_seq)
        except VerificationError as exc:
            raise RemoteProtocolError(ErrorCode.BAD_MANIFEST, str(exc)) from None
        self.peer_manifest = signed
        self._transition(Transition.IDENTIFY)
        self._events.append(PeerIdentified(self.peer, signed))
        self._send_terms(now)

    def _send_terms(self, now: float) -> None:
        assert self.tier is not None
        self.our_terms = terms_for(self.tier)
        self._send(self.our_terms, now)
        self._maybe_ready()

    def _on_terms(self, frame: TermsFrame, now: float) -> None:
        self.their_terms = frame
        if not self.flows[1]:
            self._transfer.drop_queue()  # they no longer send to us: forget what we wanted
            self._pump_wants(now)  # a round waiting for those ids goes now
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        if self.our_terms is None or self.their_terms is None or not any(self.flows):
            return
        if self._recon.defer():
            return  # terms changed mid-run: reconcile again afterwards
        self._ready()

    def _ready(self) -> None:
        self._recon.asked()
        self._events.append(SyncReady(*self.flows))

    def _on_recon(self, frame: ReconFrame, now: float) -> None:
        if not any(self.flows):
            raise RemoteProtocolError(ErrorCode.FORBIDDEN, "reconciliation while no packets may flow")
        send, receive = self.flows
        meter = self.gate.recon_meter(str(self.peer)) if self.gate is not None else None
        step = self._recon.receive(
            frame, send=send, receive=receive, now=now, budget=self.budget, meter=meter
        )
        self._apply(step, now)

    def _apply(self, step: ReconStep, now: float) -> None:
        for offer in step.offers:
            self._send(offer, now)
        if step.want:
            self.want(step.want, now)
        if step.reply is not None:
            # The next round waits while many wanted ids are still to arrive (RECON_AHEAD);
            # _pump_wants sends it once they have.
            reply = self._recon.pace(step.reply, self._transfer.pending)
            if reply is not None:
                self._send(reply, now)
        if isinstance(step.reply, SyncedFrame):
            self.last_sync = now
            self._events.append(SyncCompleted(step.reply.offered, step.reply.wanted))
        if step.ready:
            self._ready()

    def _on_synced(self, frame: SyncedFrame, now: float) -> None:
        self._recon.synced()
        self.last_sync = now
        self._events.append(SyncCompleted(frame.offered, frame.wanted))

    def _on_offer(self, frame: OfferFrame, now: float) -> None:
        if not self.flows[1]:
            raise RemoteProtocolError(ErrorCode.FORBIDDEN, "an offer while our tier for you accepts nothing")
        self.want(frame.ids, now)

    def _on_want(self, frame: WantFrame, now: float) -> None:
        if not self.flows[0]:
            # Answer with an empty, final batch so an honest peer's flow control moves on.
            self._send(PacketsFrame((), live=False, last=True), now)
            raise RemoteProtocolError(ErrorCode.FORBIDDEN, "a want while our tier for you sends nothing")
        self._events.append(PacketsWanted(frame.ids))

    def _on_packets(self, frame: PacketsFrame, checked: Sequence[Checked], now: float) -> None:
        solicited = not frame.live
        if solicited and not self._transfer.answering:
            raise RemoteProtocolError(ErrorCode.UNSOLICITED, "packets nobody asked for")
        accepted = self.our_terms is not None and self.our_terms.accepts and self.flows[1]
        good: list[Packet] = []
        problems: list[tuple[str, str]] = []
        for packet in checked:
            if isinstance(packet, BadSignature):
                problems.append((ErrorCode.BAD_SIGNATURE, str(packet)))
                continue
            if isinstance(packet, VerificationError):
                problems.append((ErrorCode.BAD_PACKET, str(packet)))
                continue
            if solicited and not self._transfer.arrived(packet.id, wire_size(packet)):
                problems.append((ErrorCode.UNSOLICITED, f"packet {packet.hex_id[:16]} was not wanted"))
                continue
            physical_ms, _ = unpack(packet.header.created_at)
            if physical_ms > now * 1000 + self.config.future_skew_ms:
                reason = f"packet {packet.hex_id[:16]} is stamped in the future"
                problems.append((ErrorCode.FUTURE_TIMESTAMP, reason))
                continue
            good.append(packet)
        if solicited and frame.last:
            self._transfer.answered()  # ids the peer did not send: not again
        if good and accepted and self.gate is not None:
            assert self.tier is not None
            verdicts = self.gate.packets(
                "inbound_packet", good, peer_id=str(self.peer), peer_tier=self.tier.value,
                strikes=self.strikes, now=now, solicited=solicited,
            )
            good = list(verdicts.allowed)
            self._transfer.skip(p.id for p in verdicts.denied)
            self._events.append(Audited(verdicts.records))
            if verdicts.rate_limit is not None:
                problems.append((ErrorCode.RATE_LIMITED, f"rate limit {verdicts.rate_limit} exceeded"))
        if not accepted:
            # Enforced on receipt whatever the peer believes our terms are (DESIGN §5).
            if frame.packets:
                self._misbehaved(ErrorCode.FORBIDDEN, "packets while our tier for you accepts none", now)
        else:
            self.packets_in += len(good)
            if good:
                self._events.append(
                    PacketsReceived(tuple(good), quarantine=self.tier is TrustTier.SANDBOX, live=frame.live)
                )
        for code, reason in problems:
            self._misbehaved(code, reason, now)
        self._pump_wants(now)

    def _on_alert(self, frame: AlertFrame, packet: Checked, now: float) -> None:
        if self.our_terms is None or not self.our_terms.accepts or not self.flows[1]:
            raise RemoteProtocolError(ErrorCode.FORBIDDEN, "an alert while our tier for you accepts nothing")
        if isinstance(packet, BadSignature):
            raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, str(packet))
        if isinstance(packet, VerificationError):
            raise RemoteProtocolError(ErrorCode.BAD_PACKET, str(packet))
        if packet.header.kind != ALERT_KIND and packet.header.kind not in GOVERNANCE_KINDS:
            # Governance packets ride the alert flood too (DESIGN §10: adoption in well under a second).
            reason = "an alert frame carries only alerts and governance packets"
            raise RemoteProtocolError(ErrorCode.BAD_PACKET, reason)
        physical_ms, _ = unpack(packet.header.created_at)
        if physical_ms > now * 1000 + self.config.future_skew_ms:
            reason = f"alert {packet.hex_id[:16]} is stamped in the future"
            raise RemoteProtocolError(ErrorCode.FUTURE_TIMESTAMP, reason)
        assert self.tier is not None
        if self.gate is not None:
            verdicts = self.gate.packets(
                "inbound_packet", [packet], peer_id=str(self.peer), peer_tier=self.tier.value,
                strikes=self.strikes, now=now,
            )
            self._events.append(Audited(verdicts.records))
            if verdicts.rate_limit is not None:
                reason = f"rate limit {verdicts.rate_limit} exceeded"
                raise RemoteProtocolError(ErrorCode.RATE_LIMITED, reason)
            if not verdicts.allowed:
                return  # refused by our policy, audited; not the peer's fault
        self.packets_in += 1
        self._events.append(AlertReceived(packet, frame.hops, quarantine=self.tier is TrustTier.SANDBOX))

    def _on_alert_ids(self, frame: AlertIdsFrame, now: float) -> None:
        if not self.flows[1]:
            raise RemoteProtocolError(ErrorCode.FORBIDDEN, "alert ids while our tier for you accepts nothing")
        self._events.append(AlertIdsReceived(frame.ids))

    def _on_witness_request(self, frame: WitnessRequestFrame, now: float) -> None:
        # Whether we witness this peer's log is the coordinator's call (core peers only).
        self._events.append(WitnessRequested(frame.request))

    def _on_witness_reply(self, frame: WitnessReplyFrame, now: float) -> None:
        if not self._witness_asked:
            raise RemoteProtocolError(ErrorCode.UNSOLICITED, "a witness reply nobody asked for")
        self._witness_asked -= 1
        self._events.append(WitnessReplied(frame.status, frame.body, frame.note))

    def _on_query(self, frame: QueryFrame, now: float) -> None:
        if self.our_terms is None or not self.our_terms.answers_queries:
            self._send(AnswerFrame(frame.query_id, (), False), now)
            raise RemoteProtocolError(ErrorCode.FORBIDDEN, "a query while our tier for you answers none")
        assert self.tier is not None
        if self.gate is not None:
            decision, exceeded, record = self.gate.query(
                frame.topic, peer_id=str(self.peer), peer_tier=self.tier.value, strikes=self.strikes, now=now
            )
            self._events.append(Audited((record,)))
            if exceeded is not None:
                self._send(AnswerFrame(frame.query_id, (), False), now)
                raise RemoteProtocolError(ErrorCode.RATE_LIMITED, f"rate limit {exceeded} exceeded")
            assert decision is not None  # the gate decides whenever no rate limit was exceeded
            allowed, reason = decision.allowed, decision.reason
        else:  # no policy: the tier table's own rule for external peers (DESIGN §5)
            allowed = self.tier is not TrustTier.EXTERNAL or frame.topic.startswith("public/")
            reason = "external peers may only query public/ topics"
        if not allowed:
            # Refused by our choice, not the peer's fault: an error frame, no strike.
            self._send(AnswerFrame(frame.query_id, (), False), now)
            self._send(ErrorFrame(ErrorCode.POLICY_DENIED, reason), now)
            return
        self._events.append(QueryReceived(frame.query_id, frame.topic, frame.limit))

    def _on_answer(self, frame: AnswerFrame, checked: Sequence[Checked], now: float) -> None:
        if frame.query_id not in self._queries:
            raise RemoteProtocolError(ErrorCode.UNSOLICITED, "an answer to a query we did not ask")
        self._queries.discard(frame.query_id)
        good = []
        for packet in checked:
            if isinstance(packet, VerificationError):
                self._misbehaved(ErrorCode.BAD_PACKET, str(packet), now)
            else:
                good.append(packet)
        self._events.append(QueryAnswered(frame.query_id, tuple(good), frame.more))

    # -- transfer ---------------------------------------------------------------------------

    def _pump_wants(self, now: float) -> None:
        if self.flows[1]:
            for frame in self._transfer.pump():
                self._send(frame, now)
        paced = self._recon.resume(self._transfer.pending)
        if paced is not None:
            self._send(paced, now)

    def _send_packet_frames(self, packets: Sequence[Packet], now: float, *, live: bool) -> None:
        for frame in packet_frames(packets, budget=self.config.max_packets_bytes, live=live):
            self._send(frame, now)
        self.packets_out += len(packets)

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, frame: Frame, now: float) -> None:
        if self.state is State.CLOSED:
            return  # the node may still answer an event after the session ended
        assert self._channel is not None
        self._send_raw(self._channel.seal(frame.serialize()), now)

    def _send_raw(self, data: bytes, now: float) -> None:
        self._last_sent = now
        self.bytes_out += len(data)
        self._outgoing.append(data)

    def _outbound(self, packets: Sequence[Packet], now: float) -> Sequence[Packet]:
        """What our policy lets us send this peer; every decision is audited."""
        if self.gate is None or not packets:
            return packets
        assert self.tier is not None
        verdicts = self.gate.packets(
            "outbound_packet", packets, peer_id=str(self.peer), peer_tier=self.tier.value,
            strikes=self.strikes, now=now,
        )
        self._events.append(Audited(verdicts.records))
        allowed: Sequence[Packet] = verdicts.allowed
        return allowed

    def _replay(self, handle: Callable[[], None], now: float) -> None:
        """Handle peer input that waited for the node (a manifest before admit(), a recon
        message before start_sync()): its faults are the peer's, so they must not escape into the
        node's call as exceptions."""
        try:
            handle()
        except RemoteProtocolError as exc:
            self._peer_failed(exc, now)

    def _peer_failed(self, exc: RemoteProtocolError, now: float) -> None:
        # A channel that refused a frame refuses all later ones, so that failure ends the session too.
        fatal = exc.code in _FATAL_CODES or self._channel is None or self._channel.closed
        self._misbehaved(exc.code, exc.reason, now, fatal=fatal)

    def _misbehaved(self, code: str, reason: str, now: float, *, fatal: bool = False) -> None:
        self.strikes += 1
        self._events.append(Misbehaviour(code, reason, fatal))
        if self._channel is not None and self.state is not State.CLOSED:
            self._send(ErrorFrame(code, reason, fatal), now)
        if fatal:
            self._close(code, reason, now, notify=False)

    def _close(self, code: str, reason: str, now: float, *, notify: bool, by_peer: bool = False) -> None:
        if self.state is State.CLOSED:
            return
        if notify and self._channel is not None:
            self._send(ErrorFrame(code, reason, True), now)
        self._transition(Transition.CLOSE)
        self.close_code = code
        self._events.append(Closed(code, reason, by_peer))


_FATAL_CODES = frozenset(
    {
        ErrorCode.DECRYPT_FAILED,
        ErrorCode.HANDSHAKE_FAILED,
        ErrorCode.FOREIGN_FEDERATION,
        ErrorCode.TOO_LARGE,
        ErrorCode.BAD_MANIFEST,
    }
)


def _just_after(limit: float) -> float:
    """The first time past ``limit``: when a "more than N seconds" timeout fires."""
    return math.nextafter(limit, math.inf)


def _our_code(code: str) -> ErrorCode:
    """The node's own error code; anything but an ``ErrorCode`` value is a bug of ours."""
    try:
        return ErrorCode(code)
    except ValueError:
        raise LocalProtocolError(f"{code!r} is not an error code") from None


def _peer_code(text: str | None) -> ErrorCode:
    """The code a peer gave for closing (untrusted text), or ``connection_lost``."""
    if text is None:
        return ErrorCode.CONNECTION_LOST
    try:
        return ErrorCode(text)
    except ValueError:
        return ErrorCode.CONNECTION_LOST
