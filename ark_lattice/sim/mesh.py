"""The simulated mesh: many nodes in one process, each one the node's own code, in virtual time.

Every simulated node is the node's own protocol core — its
:class:`~ark_lattice.protocol.coordinator.Coordinator` and real sessions (reconciliation, transfer,
live push, strikes, dialling with backoff) — carried out by the same action loop and store effects
as a real node (runtime/effects.py) over a real :class:`~ark_lattice.store.store.Store` (the SQLite
ledger, in memory, run inline), with the policy gate a real node uses. Only what lies outside a node
process is replaced: the clock (virtual, see clock.py), the network (network.py) and the random
sources (seeded). There is no event loop: the store never waits, so its coroutines run inline
(``store.inline.run``). Nothing of the protocol is re-implemented here; this module builds the
federation a scenario describes, applies its workload and faults at their times, and watches the
ledgers to report convergence and, for a node made to misbehave (it forges packets through its own
sessions' live push), how soon each honest node isolated it and what the alerts cost.

Determinism: identities, federation key, link latencies, losses, handshake ephemeral keys, backoff
jitter, topology, workload, fault choices and forged packets all come from generators seeded by
(seed, purpose, node); the scheduler runs callbacks in the order they were scheduled and never
consults a wall clock; the report is canonical JSON with integers for times. The same scenario and
seed therefore give byte-identical reports, under any ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import json
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ark_lattice import __version__
from ark_lattice.alerts import ALERT_KIND
from ark_lattice.encoding import decode
from ark_lattice.errors import ConfigError, NotFound
from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.sim.clock import Scheduler
from ark_lattice.sim.convergence import FlowGraph, dials, flows, merkle_root
from ark_lattice.sim.governance import PROPOSE_AT, SimGovernance
from ark_lattice.sim.network import Network
from ark_lattice.sim.node import SimNode
from ark_lattice.sim.scenario import Fault, Scenario, Selection, Workload
from ark_lattice.store import inline
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store

__all__ = ["Simulation", "EPOCH_START", "REPORT_FORMAT", "report_bytes"]

EPOCH_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: virtual time 0 on the nodes' clocks
REPORT_FORMAT = 1
PUBLISH_WINDOW = 0.5  # packets of an epoch are published in its first half, leaving time to spread

log = logging.getLogger("ark_lattice.sim")


def report_bytes(report: Mapping[str, Any]) -> bytes:
    """The canonical encoding of a report: equal reports are equal bytes."""
    return (json.dumps(report, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode()


@dataclass(order=True)
class _Action:
    at: float
    seq: int
    kind: str = field(compare=False)
    arg: Any = field(compare=False, default=None)


class _LogCount(logging.Handler):
    """Counts warnings and errors the nodes log during a run (the report carries the counts)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts = {"warning": 0, "error": 0}
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.counts["error"] += 1
            if len(self.errors) < 20:
                self.errors.append(self.format(record))
        else:
            self.counts["warning"] += 1


class Simulation:
    """Run one scenario with one seed; :meth:`run` returns the report (a JSON-ready dict)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int = 0,
        identities: Mapping[str, Identity] | None = None,
        initial_packets: Mapping[str, Sequence[Packet]] | None = None,
        federation_key: bytes | None = None,
        start_time: float = EPOCH_START,
        on_progress: Callable[[float, dict[str, Any] | None], None] | None = None,
    ) -> None:
        """``identities`` and ``initial_packets`` (by node name, e.g. ``"local-0003"``) replace the
        seeded ones; with ``federation_key`` and ``start_time`` they let a test mirror real nodes.
        ``on_progress(fraction done, epoch record or None)`` is called as virtual time passes."""
        self.scenario = scenario
        self.seed = seed
        self._identities = dict(identities or {})
        self._initial = {k: list(v) for k, v in (initial_packets or {}).items()}
        self.federation_key = federation_key or _derive(seed, "federation-key")
        self.start_time = float(start_time)
        self._on_progress = on_progress
        self.nodes: list[SimNode] = []
        self.packets: list[bytes] = []  # packet ids by index
        self.packet_index: dict[str, int] = {}  # hex id -> index
        self.authored: list[int] = []  # per node: bitset of packets it published (or started with)
        self.alerts: list[int] = []  # indices of the packets that are alerts the nodes raised
        self._by_id: dict[str, SimNode] = {}
        self.policy: Any = None
        self.log = _LogCount()
        self.scheduler = Scheduler()
        self._queue: list[_Action] = []
        self._seq = 0
        self._rngs = {
            purpose: self.rng(purpose) for purpose in ("network", "topology", "workload", "faults")
        }
        self._epoch_traffic: dict[str, int] = {}
        self._roots: dict[int, str] = {}  # held bitset -> Merkle root (many nodes share a set)
        self._churned: dict[int, int] = {}  # node index -> the churn action that took it down
        self._alerts_before = 0  # alerts seen by the end of the previous epoch
        self._equivocation: list[dict[str, Any]] = []

    # -- public -----------------------------------------------------------------------------

    def rng(self, purpose: str, index: int = -1) -> random.Random:
        return random.Random(int.from_bytes(_derive(self.seed, purpose, index)[:16], "big"))

    def holdings(self) -> dict[str, dict[str, list[str]]]:
        """After (or during) a run, by node name: the hex ids of the packets it holds, of those
        in quarantine, and of those it published (or started with)."""
        return {
            node.name: {
                "held": self._hex_ids(node.held),
                "quarantined": self._hex_ids(node.held & ~node.shared),
                "authored": self._hex_ids(self.authored[node.index]),
            }
            for node in self.nodes
        }

    def alert_seen(self, hex_id: str, store: Store) -> int | None:
        """A packet a node stored that the simulation did not publish: if it is an alert one of
        the nodes raised, it joins the packets (authored by its author) and gets its index."""
        try:
            stored = inline.run(store.get_packet(bytes.fromhex(hex_id)))
        except (ValueError, NotFound):
            return None
        packet = stored.packet
        author = self._by_id.get(str(packet.header.author))
        if packet.header.kind != ALERT_KIND or author is None:
            return None
        self._register(packet, author)
        index = self.packet_index[packet.hex_id]
        self.alerts.append(index)
        return index

    def _hex_ids(self, bits: int) -> list[str]:
        return sorted(self.packets[i].hex() for i in range(bits.bit_length()) if bits >> i & 1)

    def clock(self) -> float:
        return self.start_time + self.scheduler.time()

    def run(self) -> dict[str, Any]:
        logger = logging.getLogger("ark_lattice")
        saved = (logger.handlers[:], logger.propagate, logger.level)
        logger.handlers = [self.log]
        logger.propagate = False
        logger.setLevel(logging.WARNING)
        # A thousand nodes are millions of long-lived objects: the default collector thresholds
        # would sweep them all again and again (a fifth of the run at 1,000 nodes). Collect
        # rarely; what the nodes set up is frozen out of the collector's sight in _main.
        thresholds = gc.get_threshold()
        gc.set_threshold(50_000, 20, 100)
        try:
            return self._main()
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            logger.handlers, logger.propagate = saved[0], saved[1]
            logger.setLevel(saved[2])

    # -- the run ----------------------------------------------------------------------------

    def _main(self) -> dict[str, Any]:
        sc = self.scenario
        if sc.policy == "default":
            from ark_lattice.policy import Policy

            self.policy = Policy.default()
        self.network = Network(self.scheduler, self._rngs["network"], self._profile_of)
        self._build()
        self._check_fault_names()
        for node in self.nodes:
            node.start()
        gc.collect()
        gc.freeze()
        epochs: list[dict[str, Any]] = []
        try:
            for epoch in range(sc.epochs):
                epochs.append(self._run_epoch(epoch))
            self._equivocation = self.governance.equivocation()  # while the nodes still run
            for node in self.nodes:
                if node.state == "up":
                    node.crash()
            ledgers = self._verify_ledgers()
            misbehaviour = self._misbehaviour()
        finally:
            for node in self.nodes:
                if node.state == "up":
                    node.crash()
            for node in self.nodes:
                if node.store is not None:
                    inline.run(node.store.close())
        return self._report(epochs, ledgers, misbehaviour)

    def _verify_ledgers(self) -> dict[str, Any]:
        """`ledger verify` on every node's ledger, crashed ones included (DESIGN §8, §14)."""
        from ark_lattice.errors import ArkLatticeError
        from ark_lattice.ledger import verify

        failed: list[str] = []
        for node in self.nodes:
            assert node.store is not None
            try:
                # No `init` in the simulator: its ledgers start with the first packet or peer.
                inline.run(verify(node.store, node.identity.node_id, owner=False))
            except ArkLatticeError as exc:
                failed.append(f"{node.name}: {exc}")
        return {"verified": len(self.nodes) - len(failed), "failed": failed}

    def _build(self) -> None:
        sc = self.scenario
        sizes = sc.group_sizes()
        for group in sc.groups:
            for i in range(sizes[group.name]):
                index = len(self.nodes)
                name = f"{group.name}-{i:04d}"
                identity = self._identities.pop(name, None) or Identity.from_seed(
                    _derive(self.seed, "identity", index)
                )
                node = SimNode(self, index, name, group.name, identity)
                self.nodes.append(node)
                self._by_id[node.node_id] = node
                self.network.add(node.host)
                self.authored.append(0)
        if self._identities:
            names = sorted(self._identities)
            raise ConfigError(f"identities given for nodes the scenario does not have: {names}")
        by_name = {n.name: n for n in self.nodes}
        unknown = sorted(set(self._initial) - set(by_name))
        if unknown:
            raise ConfigError(f"initial packets given for nodes the scenario does not have: {unknown}")
        edges = self._topology()
        carry: list[list[int]] = [[] for _ in self.nodes]
        terminal: list[list[int]] = [[] for _ in self.nodes]
        for node in self.nodes:
            node.open_store()
        for a, b in edges:
            na, nb = self.nodes[a], self.nodes[b]
            ta, tb = sc.tier(na.group, nb.group), sc.tier(nb.group, na.group)
            assert na.store is not None and nb.store is not None
            # The dialler knows where to reach its peer; the other side learns it from the
            # dialler's manifest at the first session, as with `federation add-peer`.
            inline.run(na.store.add_peer(nb.node_id, tier=ta, endpoints=[nb.url]))
            inline.run(nb.store.add_peer(na.node_id, tier=tb))
            for u, w, tu, tw in ((a, b, ta, tb), (b, a, tb, ta)):
                how = flows(tu, tw)
                if how == "carry":
                    carry[u].append(w)
                elif how == "terminal":
                    terminal[u].append(w)
        if sc.topology.get("peers") == "all":
            # Every node knows every other with its tier (`peers add --tier`, no endpoint), so an
            # alert's author is judged by its tier even when the two are not connected.
            connected = {(min(a, b), max(a, b)) for a, b in edges}
            for na in self.nodes:
                for nb in self.nodes:
                    if na is not nb and (min(na.index, nb.index), max(na.index, nb.index)) not in connected:
                        assert na.store is not None
                        inline.run(na.store.add_peer(nb.node_id, tier=sc.tier(na.group, nb.group)))
        self.edges = edges
        self.graph = FlowGraph(len(self.nodes), carry, terminal)
        self.allowed_graph = FlowGraph(len(self.nodes), carry, terminal)
        for name in sorted(self._initial, key=lambda n: by_name[n].index):
            node = by_name[name]
            assert node.store is not None
            for packet in self._initial[name]:
                self._register(packet, node)
            inline.run(node.store.put_packets(self._initial[name]))
        self.governance = SimGovernance(self)  # the validators' real k-of-n governance
        self.governance.found()

    def publish_packet(self, node: SimNode, packet: Packet) -> None:
        """A packet signed for ``node`` outside its publish (governance): registered, stored, pushed."""
        self._register(packet, node)
        node.store_packet(packet)

    def tier_of(self, node: SimNode, peer: str) -> str | None:
        assert node.store is not None
        record = inline.run(node.store.find_peer(peer))
        return record.tier.value if record is not None else None

    def _topology(self) -> list[tuple[int, int]]:
        """Connections as (dialler, dialled); each pair once; the dialler must dial its tier."""
        sc, rng, nodes = self.scenario, self._rngs["topology"], self.nodes
        pairs: dict[tuple[int, int], tuple[int, int]] = {}

        def want(a: int, b: int) -> None:
            if a == b:
                return
            key = (min(a, b), max(a, b))
            if key in pairs:
                return
            ta = sc.tier(nodes[a].group, nodes[b].group)
            tb = sc.tier(nodes[b].group, nodes[a].group)
            if dials(ta):
                pairs[key] = (a, b)
            elif dials(tb):
                pairs[key] = (b, a)

        if "pairs" in sc.topology:
            members: dict[str, list[int]] = {}
            for n in nodes:
                members.setdefault(n.group, []).append(n.index)
            for ga, gb in sc.topology["pairs"]:
                for a in members.get(ga, []):
                    for b in members.get(gb, []):
                        want(a, b)
        else:
            degree = sc.topology.get("degree", 4)
            count = len(nodes)
            if count <= degree + 1:
                for a in range(count):
                    for b in range(a + 1, count):
                        want(a, b)
            else:
                order = list(range(count))
                rng.shuffle(order)
                for i in range(count):  # a ring through every node keeps the mesh connected
                    want(order[i], order[(i + 1) % count])
                for a in range(count):  # plus chords: short paths across the ring
                    for _ in range(degree // 2 - 1):
                        want(a, rng.randrange(count))
        return [pairs[k] for k in sorted(pairs)]

    def _profile_of(self, a: str, b: str) -> tuple[tuple[float, float], float]:
        p = self.scenario.link(a, b)
        return p.latency_ms, p.loss

    def _register(self, packet: Packet, author: SimNode) -> None:
        if packet.hex_id in self.packet_index:
            return
        index = len(self.packets)
        self.packets.append(packet.id)
        self.packet_index[packet.hex_id] = index
        self.authored[author.index] |= 1 << index

    def _check_fault_names(self) -> None:
        names = {n.name: n for n in self.nodes}
        for i, fault in enumerate(self.scenario.faults):
            if fault.select is None:
                continue
            for name in fault.select.names:
                node = names.get(name)
                if node is None:
                    raise ConfigError(f"{self.scenario.source}: faults[{i}]: no node {name!r} in this run")
                if fault.select.group is not None and node.group != fault.select.group:
                    raise ConfigError(
                        f"{self.scenario.source}: faults[{i}]: {name!r} "
                        f"is not in group {fault.select.group!r}"
                    )

    # -- epochs -----------------------------------------------------------------------------

    def _push(self, at: float, kind: str, arg: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Action(at, self._seq, kind, arg))

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        sc = self.scenario
        t0 = epoch * sc.epoch_seconds
        end = t0 + sc.epoch_seconds
        wrng = self._rngs["workload"]
        last_event = t0
        for fault in sc.faults:
            if fault.epoch == epoch:
                self._push(t0 + fault.at_s, "fault", fault)
                last_event = max(last_event, t0 + fault.at_s)
        for workload in sc.workload:
            if workload.active(epoch):
                for _ in range(workload.packets):
                    at = t0 + round(wrng.uniform(0, sc.epoch_seconds * PUBLISH_WINDOW), 3)
                    self._push(at, "publish", workload)
                    last_event = max(last_event, at)
        if self.governance.active:
            self._push(t0 + PROPOSE_AT * sc.epoch_seconds, "govern", epoch)
        k = 1
        while t0 + k * sc.sample_interval_s < end:
            self._push(t0 + k * sc.sample_interval_s, "sample")
            k += 1
        self._push(end, "end")
        self._epoch: dict[str, Any] = {
            "epoch": epoch,
            "faults": [],
            "published": 0,
            "skipped_publishes": 0,
            "settled_at_ms": None,
        }
        self._settle_after = last_event
        self.network.traffic.take()  # counters start afresh with the epoch
        while True:
            action = heapq.heappop(self._queue)
            self.scheduler.run_until(action.at)
            if action.kind == "end":
                break
            self._do(action)
        status = self._observe()
        if self.governance.active:
            status["quorum"] = self.governance.observe(epoch)
        if self._epoch["settled_at_ms"] is None and status["converged"] == status["up"]:
            self._epoch["settled_at_ms"] = _ms(sc.epoch_seconds)
        record = self._epoch
        record.update(status)
        record.update(self.network.traffic.take())
        record["time_ms"] = _ms(end)
        record["held_messages"] = self.network.held_messages()
        record["roots"] = [self._root(n.held) for n in self.nodes]
        honest = [n for n in self.nodes if n.honest]
        record["distinct_roots"] = len({record["roots"][n.index] for n in honest if n.state == "up"})
        record["down"] = [n.name for n in self.nodes if n.state == "down"]
        record["dropped"] = [n.name for n in self.nodes if n.state == "dropped"]
        record["misbehaving"] = [n.name for n in self.nodes if n.misbehaving and n.state != "dropped"]
        record["alerts_raised"] = len(self.alerts) - self._alerts_before
        self._alerts_before = len(self.alerts)
        if self._on_progress is not None:
            self._on_progress((epoch + 1) / sc.epochs, record)
        return record

    def _do(self, action: _Action) -> None:
        if action.kind == "publish":
            self._publish(action.arg)
        elif action.kind == "sample":
            status = self._observe()
            now = self.scheduler.time()
            if (
                self._epoch["settled_at_ms"] is None
                and now >= self._settle_after
                and status["converged"] == status["up"]
            ):
                self._epoch["settled_at_ms"] = _ms(now - self._epoch["epoch"] * self.scenario.epoch_seconds)
            if self._on_progress is not None:
                self._on_progress(now / (self.scenario.epochs * self.scenario.epoch_seconds), None)
        elif action.kind == "fault":
            self._fault(action.arg)
        elif action.kind == "govern":
            self.governance.propose(action.arg)
        elif action.kind == "churn-crash":
            node, token = action.arg
            if node.state == "up":
                node.crash()
                self._churned[node.index] = token
        elif action.kind == "churn-restart":
            node, token = action.arg
            if node.state == "down" and self._churned.get(node.index) == token:
                del self._churned[node.index]
                node.start()
        else:
            raise AssertionError(action.kind)

    def _publish(self, workload: Workload) -> None:
        rng = self._rngs["workload"]
        authors = [n for n in self.nodes if n.group == workload.group and n.state == "up"]
        body = rng.randbytes(workload.body_bytes)
        if not authors:
            self._epoch["skipped_publishes"] += 1
            return
        author = authors[rng.randrange(len(authors))]
        packet = author.publish(workload.topic, body)
        self._register(packet, author)
        self._epoch["published"] += 1

    def _fault(self, fault: Fault) -> None:
        self._epoch["faults"].append(fault.describe())
        if fault.kind == "partition":
            side_of_group = {g: i for i, side in enumerate(fault.sides) for g in side}
            self.network.partition({n.name: side_of_group.get(n.group, 0) for n in self.nodes})
        elif fault.kind == "heal":
            self.network.heal()
        elif fault.kind == "crash":
            for node in self._select(fault.select, lambda n: n.state == "up"):
                node.crash()
        elif fault.kind == "restart":
            for node in self._select(fault.select, lambda n: n.state == "down"):
                self._churned.pop(node.index, None)
                node.start()
        elif fault.kind == "drop":
            for node in self._select(fault.select, lambda n: n.state in ("up", "down")):
                if node.state == "up":
                    node.crash(final="dropped")
                node.state = "dropped"
                self.graph.remove(node.index)
        elif fault.kind == "misbehave":
            for node in self._select(fault.select, lambda n: n.state == "up" and not n.misbehaving):
                # It still runs the node's code, but is no longer an honest node: it is not
                # expected to converge, and what only it holds is expected nowhere else.
                self.graph.remove(node.index)
                node.misbehave(fault.interval_s)
        elif fault.kind == "equivocate":
            for node in self._select(fault.select, lambda n: n.state == "up" and n.honest):
                self.graph.remove(node.index)  # no longer honest: nothing is expected of it
                node.equivocating = True
                self.governance.equivocate(node)
        elif fault.kind == "churn":
            rng = self._rngs["faults"]
            now = self.scheduler.time()
            end = (fault.epoch + 1) * self.scenario.epoch_seconds
            for node in self._select(fault.select, lambda n: n.state == "up"):
                self._seq += 1
                token = self._seq
                at = round(now + rng.uniform(0, max(0.0, end - now)), 3)
                self._push(at, "churn-crash", (node, token))
                self._push(at + fault.downtime_s, "churn-restart", (node, token))
                # the epoch has not settled before its churn is over
                back = at + fault.downtime_s
                self._settle_after = max(self._settle_after, back if back < end else at)
        else:
            raise AssertionError(fault.kind)

    def _select(self, sel: Selection | None, eligible: Callable[[SimNode], bool]) -> list[SimNode]:
        assert sel is not None
        pool = [n for n in self.nodes if (sel.group is None or n.group == sel.group) and eligible(n)]
        if sel.names:
            return [n for n in pool if n.name in sel.names]
        if sel.everyone:
            return pool
        k = sel.count if sel.count is not None else round((sel.fraction or 0.0) * len(pool))
        k = min(k, len(pool))
        chosen = self._rngs["faults"].sample(range(len(pool)), k)
        return [pool[i] for i in sorted(chosen)]

    # -- observation ------------------------------------------------------------------------

    def _observe(self) -> dict[str, Any]:
        for node in self.nodes:
            if node.store is not None and node.state != "dropped":
                node.read_ledger()
        expected = self.graph.expected([n.shared for n in self.nodes])
        allowed = self.allowed_graph.expected(self.authored)
        up = converged = violations = 0
        quorum_ready = validators = 0
        validator_groups = {g.name for g in self.scenario.groups if g.validators}
        for node in self.nodes:
            violations += (node.held & ~allowed[node.index]).bit_count()
            if not node.honest:
                continue
            is_validator = node.group in validator_groups
            validators += is_validator
            if node.state != "up":
                continue
            up += 1
            if expected[node.index] & ~node.held == 0:
                converged += 1
                quorum_ready += is_validator
        honest = sum(1 for n in self.nodes if n.honest)
        q = self.scenario.quorum
        return {
            "honest": honest,
            "up": up,
            "converged": converged,
            "packets": len(self.packets),
            "violations": violations,
            "quorum": {
                "threshold": q, "validators": validators, "ready": quorum_ready, "met": quorum_ready >= q
            },
        }

    def _root(self, held: int) -> str:
        found = self._roots.get(held)
        if found is None:
            ids = [self.packets[i] for i in range(held.bit_length()) if held >> i & 1]
            found = merkle_root(ids).hex()
            self._roots[held] = found
        return found

    def _misbehaviour(self) -> list[dict[str, Any]]:
        """For each misbehaving node, when each honest node acted against it (from its ledger)."""
        out = []
        for bad in self.nodes:
            if bad.misbehave_every is None:
                continue
            neighbours = {b if a == bad.index else a for a, b in self.edges if bad.index in (a, b)}
            since = None
            if bad.misbehaving_since is not None:  # in the ledger's own unit: whole ms of its clock
                since = int((self.start_time + bad.misbehaving_since) * 1000)
            rows = []
            for node in self.nodes:
                if node.honest:
                    row = self._acted(node, bad.node_id, since)
                    rows.append({"node": node.name, "adjacent": node.index in neighbours, **row})
            acted = [r["isolated_ms"] for r in rows if r["isolated_ms"] is not None]
            blocked = [r["blocked_ms"] for r in rows if r["blocked_ms"] is not None]
            out.append({
                "node": bad.name,
                "since_ms": None if bad.misbehaving_since is None else _ms(bad.misbehaving_since),
                "every_s": bad.misbehave_every,
                "bad_packets": bad.bad_packets,
                "neighbours": [self.nodes[i].name for i in sorted(neighbours)],
                "honest": rows,
                "time_to_isolation_ms": _spread(acted),
                # the alert's part: from the first honest node's isolation of it to each one's
                "after_first_isolation_ms": _spread([t - min(acted) for t in acted]),
                "never_isolated": len(rows) - len(acted),
                "time_to_block_ms": _spread(blocked),
                "never_blocked": len(rows) - len(blocked),
            })
        return out

    def _acted(self, node: SimNode, accused: str, since: int | None) -> dict[str, Any]:
        """When ``node`` blocked ``accused`` (and why) and when it quarantined it, in ms after
        ``since`` (the ledger's time of the first misbehaviour); the earlier is its isolation."""
        assert node.store is not None and accused.isalnum()  # a base32 node id: safe in SQL
        blocked = quarantined = by = None
        if since is not None:
            sql = (
                "SELECT kind, ts, data FROM events WHERE subject = '" + accused + "' AND kind IN "
                f"('{EventKind.PEER_TIER_CHANGED}', '{EventKind.PEER_QUARANTINED}') AND ts >= {since} "
                "ORDER BY seq"
            )
            for kind, ts, data in inline.rows(node.store, sql):
                if kind == EventKind.PEER_QUARANTINED:
                    quarantined = ts - since if quarantined is None else quarantined
                    continue
                change = decode(data, max_size=1 << 16, what="ledger event")
                if blocked is None and change.get("new") == "blocked":
                    blocked = ts - since
                    reason = str(change.get("reason", ""))
                    by = "strikes" if reason.startswith("isolated after") else (
                        "alert" if reason.startswith("alert ") else "other"
                    )
        first = min((t for t in (blocked, quarantined) if t is not None), default=None)
        return {"isolated_ms": first, "blocked_ms": blocked, "blocked_by": by, "quarantined_ms": quarantined}

    def _alert_totals(self, epochs: list[dict[str, Any]], honest: int) -> dict[str, Any]:
        raised = len(self.alerts)
        frames = sum(r["alert_frames"] for r in epochs)
        per_alert = round(frames / raised, 2) if raised else None
        return {
            "raised": raised,
            "frames": frames,
            "id_frames": sum(r["alert_id_frames"] for r in epochs),
            "messages_per_alert": per_alert,
            "messages_per_alert_per_node": round(frames / raised / honest, 3) if raised and honest else None,
        }

    def _report(
        self, epochs: list[dict[str, Any]], ledgers: dict[str, Any], misbehaviour: list[dict[str, Any]]
    ) -> dict[str, Any]:
        since = None
        for record in reversed(epochs):
            if record["converged"] == record["honest"] and record["up"] == record["honest"]:
                since = record["epoch"]
            else:
                break
        converged_at_ms = None
        if since is not None:
            record = epochs[since]
            settled = record["settled_at_ms"]
            start = _ms(since * self.scenario.epoch_seconds)
            converged_at_ms = start + settled if settled is not None else record["time_ms"]
        last = epochs[-1] if epochs else None
        return {
            "format": REPORT_FORMAT,
            "ark_lattice": __version__,
            "seed": self.seed,
            "start_time": int(self.start_time),
            "scenario": self.scenario.to_json(),
            "nodes": [{"name": n.name, "group": n.group, "id": n.node_id} for n in self.nodes],
            "connections": [[self.nodes[a].name, self.nodes[b].name] for a, b in self.edges],
            "epochs": epochs,
            "result": {
                "honest_nodes": last["honest"] if last else 0,
                "packets": len(self.packets),
                "all_converged": since is not None,
                "converged_since_epoch": since,
                "converged_at_ms": converged_at_ms,
                "violations": max((r["violations"] for r in epochs), default=0),
                "ledgers": ledgers,
                "alerts": self._alert_totals(epochs, last["honest"] if last else 0),
                "misbehaviour": misbehaviour,
                "governance": {
                    "validators": len(self.governance.validators) if self.governance.active else 0,
                    "threshold": self.governance.k if self.governance.active else 0,
                    "equivocation": self._equivocation,
                },
                "log": dict(self.log.counts),
            },
        }


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _spread(values: Sequence[int]) -> dict[str, int | None]:
    """p50, p99 (nearest rank) and max of some times in ms; None for each when there are none."""
    ordered = sorted(values)

    def rank(q: float) -> int | None:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else None

    return {"p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1] if ordered else None}


def _derive(seed: int, purpose: str, index: int = -1) -> bytes:
    """32 bytes for (seed, purpose, index): every random source of a run starts from one of these."""
    return hashlib.sha256(f"ark-lattice/sim/{seed}/{purpose}/{index}".encode()).digest()
