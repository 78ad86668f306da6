"""What a running node counts, and the metric set built from it (``federation start --metrics``).

Counting is observation, not decision. The runtime feeds plain counters (:class:`Counters`) at the
points where things already happen: every action passes through ``Driver.carry_out`` (policy
decisions, strikes, isolations), ``Effects.ingest`` says how many packets it stored, a dial either
opens a link or fails, a session reports ``SyncCompleted``, a link ends. Traffic is not counted per
frame at all: each session already keeps its packets and bytes in and out, so a snapshot sums the
live links and adds what ended links (and links before a tier change) left behind, which keeps
every counter from ever going down. Gauges that live in the store (packets stored, ledger events,
the last checkpoint) are read when somebody asks, through the store's own async methods.

:func:`families` turns all of it into metric families — plain data, JSON-friendly — that
``runtime/exposition.py`` renders as Prometheus text with prometheus-client (the optional
``metrics`` extra). Nothing here imports prometheus-client.

The set, in Prometheus conventions and base units (docs/operator.md, "Watching your node"):

=========================================  =======  ====================================================
name                                       type     labels and meaning
=========================================  =======  ====================================================
``ark_lattice_up``                         gauge    always 1 while the node answers
``ark_lattice_uptime_seconds``             gauge    seconds since the node started
``ark_lattice_sessions``                   gauge    {tier, state}: live sessions; tier ``none`` before
                                                    the peer is known
``ark_lattice_packets_received_total``     counter  {tier}: packets peers sent us that verified
``ark_lattice_packets_sent_total``         counter  {tier}: packets we sent
``ark_lattice_bytes_received_total``       counter  {tier}: WebSocket payload bytes in
``ark_lattice_bytes_sent_total``           counter  {tier}: WebSocket payload bytes out
``ark_lattice_reconciliations_total``      counter  {role=initiator|responder}: completed rounds
``ark_lattice_packets_stored``             gauge    {state=shared|quarantined}: packets in the ledger
``ark_lattice_packets_ingested_total``     counter  {state=shared|quarantined}: received packets stored
                                                    (new to us; duplicates are not counted)
``ark_lattice_policy_decisions_total``     counter  {hook, effect=allow|deny}
``ark_lattice_strikes_total``              counter  misbehaviour audited (also before the handshake
                                                    names the peer)
``ark_lattice_isolations_total``           counter  peers blocked for their strikes
``ark_lattice_dials_total``                counter  {result=connected|failed}
``ark_lattice_ledger_events``              gauge    events in the ledger
``ark_lattice_checkpoint_age_seconds``     gauge    seconds since the last signed checkpoint; the
                                                    family has NO sample while there is no checkpoint
                                                    (absent, not NaN: alert with ``absent()``)
=========================================  =======  ====================================================
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ark_lattice.protocol import actions as act

if TYPE_CHECKING:
    from ark_lattice.store.store import Store

__all__ = [
    "Counters",
    "Family",
    "LinkView",
    "StoreGauges",
    "Traffic",
    "EXTRA_HINT",
    "families",
    "families_from_json",
    "parse_address",
    "plain_text",
    "require_prometheus",
]

PREFIX = "ark_lattice_"
NO_TIER = "none"  # the tier label of a session whose peer is not known yet
EXTRA_HINT = "pip install 'ark-lattice[metrics]'"

# -- the metric set ---------------------------------------------------------------------------

UP = PREFIX + "up"
UPTIME = PREFIX + "uptime_seconds"
SESSIONS = PREFIX + "sessions"
PACKETS_RECEIVED = PREFIX + "packets_received_total"
PACKETS_SENT = PREFIX + "packets_sent_total"
BYTES_RECEIVED = PREFIX + "bytes_received_total"
BYTES_SENT = PREFIX + "bytes_sent_total"
RECONCILIATIONS = PREFIX + "reconciliations_total"
PACKETS_STORED = PREFIX + "packets_stored"
PACKETS_INGESTED = PREFIX + "packets_ingested_total"
POLICY_DECISIONS = PREFIX + "policy_decisions_total"
STRIKES = PREFIX + "strikes_total"
ISOLATIONS = PREFIX + "isolations_total"
DIALS = PREFIX + "dials_total"
LEDGER_EVENTS = PREFIX + "ledger_events"
CHECKPOINT_AGE = PREFIX + "checkpoint_age_seconds"

NAMES = (
    UP, UPTIME, SESSIONS, PACKETS_RECEIVED, PACKETS_SENT, BYTES_RECEIVED, BYTES_SENT, RECONCILIATIONS,
    PACKETS_STORED, PACKETS_INGESTED, POLICY_DECISIONS, STRIKES, ISOLATIONS, DIALS, LEDGER_EVENTS,
    CHECKPOINT_AGE,
)

SHARED, QUARANTINED = "shared", "quarantined"
CONNECTED, FAILED = "connected", "failed"
ROLES = ("initiator", "responder")


@dataclass(frozen=True)
class Family:
    """One metric: its name, ``counter`` or ``gauge``, help text, and samples (labels, value)."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    samples: tuple[tuple[tuple[str, ...], float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "help": self.help,
            "samples": [
                {"labels": dict(zip(self.labels, values, strict=True)), "value": value}
                for values, value in self.samples
            ],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Family:
        samples = doc.get("samples") or []
        labels = tuple(samples[0]["labels"]) if samples else ()
        return cls(
            str(doc["name"]),
            str(doc["type"]),
            str(doc.get("help", "")),
            labels,
            tuple((tuple(str(s["labels"][k]) for k in labels), float(s["value"])) for s in samples),
        )

    def value(self, **labels: str) -> float | None:
        """The sample with exactly these labels, or None."""
        want = tuple(labels.get(k) for k in self.labels)
        if set(labels) != set(self.labels):
            return None
        for values, value in self.samples:
            if values == want:
                return value
        return None


# -- counting ---------------------------------------------------------------------------------


@dataclass
class Traffic:
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @classmethod
    def of(cls, session: Any) -> Traffic:
        """A session's own counts (protocol/session.py keeps them for ``federation status``)."""
        return cls(session.packets_in, session.packets_out, session.bytes_in, session.bytes_out)

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.packets_in + other.packets_in,
            self.packets_out + other.packets_out,
            self.bytes_in + other.bytes_in,
            self.bytes_out + other.bytes_out,
        )

    def __sub__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.packets_in - other.packets_in,
            self.packets_out - other.packets_out,
            self.bytes_in - other.bytes_in,
            self.bytes_out - other.bytes_out,
        )


@dataclass(frozen=True)
class LinkView:
    """What a snapshot needs of one live link: its id, tier label, state and traffic so far."""

    id: int
    tier: str
    state: str
    traffic: Traffic


@dataclass
class _Tally:
    """The part of one live link's traffic already counted under a tier (see :meth:`Counters.traffic`)."""

    tier: str
    folded: Traffic  # already added to Counters.ended under an earlier tier
    seen: Traffic  # the link's traffic at the last snapshot


@dataclass
class Counters:
    """Plain counters of one node, fed by the runtime; read by :func:`families`."""

    started: float = field(default_factory=time.monotonic)
    dials: Counter[str] = field(default_factory=Counter)
    reconciliations: Counter[str] = field(default_factory=Counter)
    ingested: Counter[str] = field(default_factory=Counter)
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    strikes: int = 0
    isolations: int = 0
    # Traffic by tier of links that ended, and of live links before their tier changed.
    ended: dict[str, Traffic] = field(default_factory=dict)
    _tallies: dict[int, _Tally] = field(default_factory=dict)
    _session_keys: set[tuple[str, str]] = field(default_factory=set)

    # -- fed by the runtime -----------------------------------------------------------------

    def saw(self, action: act.Action) -> None:
        """Every action ``Driver.carry_out`` takes passes here first; most are not counted."""
        if isinstance(action, act.Audit):
            for record in action.records:
                effect = "allow" if record.get("allowed") else "deny"
                self.decisions[(str(record.get("hook", "")), effect)] += 1
        elif isinstance(action, act.Strike):
            self.strikes += 1
        elif isinstance(action, act.Isolate):
            self.isolations += 1

    def dialled(self, connected: bool) -> None:
        self.dials[CONNECTED if connected else FAILED] += 1

    def stored(self, count: int, quarantined: bool) -> None:
        """An ingest stored ``count`` packets new to us."""
        if count:
            self.ingested[QUARANTINED if quarantined else SHARED] += count

    def synced(self, role: str) -> None:
        """A session reported a completed reconciliation round (``role``: the session's role)."""
        self.reconciliations[role] += 1

    def retiered(self, link_id: int, old: str, new: str, traffic: Traffic) -> None:
        """A live link's tier changes (admitted, or changed by the operator or for its strikes):
        what it carried so far (``traffic``) stays with the ``old`` tier."""
        tally = self._tallies.get(link_id)
        if tally is None:
            tally = self._tallies[link_id] = _Tally(old, Traffic(), traffic)
        self._add(old, traffic - tally.folded)
        tally.tier, tally.folded, tally.seen = new, traffic, traffic

    def link_ended(self, link_id: int, tier: str, traffic: Traffic) -> None:
        """Fold what is left of an ending link's traffic into the totals of its last tier."""
        tally = self._tallies.pop(link_id, None)
        folded = tally.folded if tally is not None else Traffic()
        self._add(tier, traffic - folded)

    # -- read by a snapshot -----------------------------------------------------------------

    def traffic(self, links: Iterable[LinkView]) -> dict[str, Traffic]:
        """Traffic by tier: ended links plus live ones; no tier's counts ever go down.

        A driver that reports tier changes (:meth:`retiered`) gets each packet counted under the
        tier of the moment; without that, a live link found under a new tier counts under it from
        the last snapshot on, and what it carried before stays with the earlier tier.
        """
        live: dict[str, Traffic] = {}
        for link in links:
            tally = self._tallies.get(link.id)
            if tally is None:
                tally = self._tallies[link.id] = _Tally(link.tier, Traffic(), link.traffic)
            elif tally.tier != link.tier:
                self._add(tally.tier, tally.seen - tally.folded)
                tally.tier, tally.folded = link.tier, tally.seen
            tally.seen = link.traffic
            live[link.tier] = live.get(link.tier, Traffic()) + (link.traffic - tally.folded)
        total = dict(self.ended)
        for tier, traffic in live.items():
            total[tier] = total.get(tier, Traffic()) + traffic
        return total

    def sessions(self, links: Iterable[LinkView]) -> dict[tuple[str, str], int]:
        """Live sessions by (tier, state); a pair seen once stays, at 0, so its series does not
        vanish when the last such session ends."""
        counts: Counter[tuple[str, str]] = Counter((link.tier, link.state) for link in links)
        self._session_keys.update(counts)
        return {key: counts.get(key, 0) for key in sorted(self._session_keys)}

    def _add(self, tier: str, traffic: Traffic) -> None:
        self.ended[tier] = self.ended.get(tier, Traffic()) + traffic


# -- the snapshot -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreGauges:
    packets: int
    quarantined: int
    events: int
    last_checkpoint: float | None  # wall-clock seconds, None without a checkpoint

    @classmethod
    async def read(cls, store: Store) -> StoreGauges:
        """Four indexed reads through the store's own methods (on the node's loop)."""
        from ark_lattice.store.events import EventKind

        newest = await store.events(kind=EventKind.CHECKPOINT, limit=1)
        return cls(
            await store.packet_count(),
            await store.packet_count(quarantined=True),
            await store.event_count(),
            newest[0].ts / 1000 if newest else None,
        )


def families(
    counters: Counters, links: Sequence[LinkView], store: StoreGauges, *, now: float,
    monotonic: float | None = None,
) -> list[Family]:
    """The node's whole metric set at this moment (``now``: wall-clock seconds)."""
    uptime = (time.monotonic() if monotonic is None else monotonic) - counters.started
    traffic = counters.traffic(links)
    tiers = sorted(traffic)

    def by_tier(name: str, help: str, attr: str) -> Family:
        samples = tuple(((tier,), float(getattr(traffic[tier], attr))) for tier in tiers)
        return Family(name, "counter", help, ("tier",), samples)

    def labelled(name: str, kind: str, help: str, label: str, counts: Mapping[str, float],
                 known: Sequence[str]) -> Family:
        keys = sorted(set(known) | set(counts))
        return Family(name, kind, help, (label,), tuple(((k,), float(counts.get(k, 0))) for k in keys))

    age: tuple[tuple[tuple[str, ...], float], ...] = ()
    if store.last_checkpoint is not None:
        age = (((), max(0.0, now - store.last_checkpoint)),)
    stored = {SHARED: store.packets - store.quarantined, QUARANTINED: store.quarantined}
    return [
        Family(UP, "gauge", "1 while the node runs and answers.", (), (((), 1.0),)),
        Family(UPTIME, "gauge", "Seconds since the node started.", (), (((), round(uptime, 3)),)),
        Family(
            SESSIONS, "gauge", "Live peer sessions by the peer's tier (none before it is known) and state.",
            ("tier", "state"), tuple((key, float(n)) for key, n in counters.sessions(links).items()),
        ),
        by_tier(PACKETS_RECEIVED, "Verified packets received from peers, by their tier.", "packets_in"),
        by_tier(PACKETS_SENT, "Packets sent to peers, by their tier.", "packets_out"),
        by_tier(BYTES_RECEIVED, "Bytes received from peers (WebSocket payloads), by their tier.", "bytes_in"),
        by_tier(BYTES_SENT, "Bytes sent to peers (WebSocket payloads), by their tier.", "bytes_out"),
        labelled(RECONCILIATIONS, "counter", "Completed reconciliation rounds, by our role in the session.",
                 "role", counters.reconciliations, ROLES),
        labelled(PACKETS_STORED, "gauge", "Packets in the ledger: shared, or quarantined (sandbox).",
                 "state", stored, (SHARED, QUARANTINED)),
        labelled(PACKETS_INGESTED, "counter", "Received packets stored (new to this node), by state.",
                 "state", counters.ingested, (SHARED, QUARANTINED)),
        Family(
            POLICY_DECISIONS, "counter", "Policy decisions, by hook and effect.", ("hook", "effect"),
            tuple((key, float(n)) for key, n in sorted(counters.decisions.items())),
        ),
        Family(STRIKES, "counter", "Peer misbehaviour audited (strikes).", (),
               (((), float(counters.strikes)),)),
        Family(ISOLATIONS, "counter", "Peers blocked after too many strikes.", (),
               (((), float(counters.isolations)),)),
        labelled(DIALS, "counter", "Outbound connection attempts, by result.", "result", counters.dials,
                 (CONNECTED, FAILED)),
        Family(LEDGER_EVENTS, "gauge", "Events in the ledger.", (), (((), float(store.events)),)),
        Family(CHECKPOINT_AGE, "gauge",
               "Seconds since the last signed ledger checkpoint; no sample without a checkpoint.", (), age),
    ]


def families_from_json(docs: Iterable[Mapping[str, Any]]) -> list[Family]:
    return [Family.from_json(doc) for doc in docs]


# -- the endpoint's address -------------------------------------------------------------------

DEFAULT_HOST = "127.0.0.1"  # loopback unless the operator names another address


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT`` (the last two on loopback)."""
    from ark_lattice.errors import UsageError

    raw = text.strip()
    host, port = DEFAULT_HOST, raw
    if raw.startswith("["):
        inside, bracket, rest = raw[1:].partition("]")
        host, port = inside, rest[1:] if rest.startswith(":") else ""
        ok = bool(bracket and inside and rest.startswith(":"))
    elif ":" in raw:
        host, _, port = raw.rpartition(":")
        ok = ":" not in host
        host = host or DEFAULT_HOST
    else:
        ok = True
    if not (ok and port.isascii() and port.isdigit() and int(port) <= 65535):
        raise UsageError(f"--metrics takes HOST:PORT such as 127.0.0.1:9467, not {text!r}")
    return host, int(port)


# -- rendering without prometheus-client ------------------------------------------------------


def require_prometheus(what: str) -> None:
    """Raise a one-sentence UsageError (exit 2) if prometheus-client is not installed."""
    from ark_lattice.errors import UsageError

    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UsageError(f"{what} needs the metrics extra: {EXTRA_HINT}") from None


def plain_text(fams: Iterable[Family]) -> str:
    """``name{labels} value`` lines: the set without prometheus-client (same names and values)."""
    lines = []
    for fam in fams:
        for values, value in fam.samples:
            pairs = sorted(zip(fam.labels, values, strict=True))  # in name order, as prometheus-client
            labels = ",".join(f'{k}="{v}"' for k, v in pairs)
            shown = repr(int(value)) if value.is_integer() else repr(value)
            lines.append(f"{fam.name}{{{labels}}} {shown}" if labels else f"{fam.name} {shown}")
    return "\n".join(lines) + "\n"
