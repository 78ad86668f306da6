"""Alerts between real node processes on loopback (issue 12, "How it is judged").

Every node here runs with LAN discovery off, so the only links are the ones a test makes with
``federation add-peer``. A check that something did *not* travel first sends a marker that takes
the same path after it (frames on one link are handled in order), then looks.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ark_lattice.alerts import NONCE_SIZE, Alert, alert_packet, equivocation_evidence
from ark_lattice.hlc import pack
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest
from ark_lattice.packet import Packet
from ark_lattice.processes import NodeProcess, run_cli, wait_for
from ark_lattice.protocol.events import AlertReceived, Event, PeerReportedError
from ark_lattice.protocol.frames import MAX_HOPS, AlertFrame, WirePacket
from ark_lattice.runtime.metrics import PACKETS_SENT

from conftest import init_federation, packet_ids, quarantined_ids, set_tier
from test_hostile_peers import RoguePeer, protocol_errors

QUIET = ("--no-mdns", "--no-multicast")  # no discovery: only the links a test makes
CALM = (*QUIET, "--sync-interval", "3600")  # and no periodic reconciliation either

Start = Callable[..., NodeProcess]
Homes = Callable[[str], Path]


# --- helpers -------------------------------------------------------------------------------------


def core_links(homes: Homes, ids: dict[str, str], pairs: Iterable[tuple[str, str]]) -> None:
    """Make each pair core to each other (before the nodes start)."""
    for x, y in pairs:
        set_tier(homes(x), ids[y], "core")
        set_tier(homes(y), ids[x], "core")


def dial(homes: Homes, nodes: dict[str, NodeProcess], pairs: Iterable[tuple[str, str]]) -> None:
    """The first of each pair dials the second."""
    for x, y in pairs:
        result = run_cli(homes(x), "federation", "add-peer", nodes[y].url)
        assert result.returncode == 0, result.stderr


def open_sessions(node: NodeProcess, tier: str | None = "core") -> set[str]:
    """Peers the node has an open session with (of this tier, unless None)."""
    status = node.current_status()
    if status is None:
        return set()
    return {
        c["peer"] for c in status["connections"]
        if c["state"] == "open" and c["peer"] and (tier is None or c["tier"] == tier)
    }


def wait_linked(nodes: dict[str, NodeProcess], ids: dict[str, str], pairs: Iterable[tuple[str, str]]) -> None:
    want: dict[str, set[str]] = {name: set() for name in nodes}
    for x, y in pairs:
        want[x].add(ids[y])
        want[y].add(ids[x])
    wait_for(
        lambda: all(want[name] <= open_sessions(node) for name, node in nodes.items()),
        timeout=30, what="the core sessions to open",
    )


def raise_alert(home: Path, *args: str) -> str:
    result = run_cli(home, "alerts", "raise", *args, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["delivered"] == "node", doc
    return str(doc["id"])


def alert_view(home: Path, alert_id: str) -> dict[str, Any]:
    result = run_cli(home, "alerts", "show", alert_id, "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def ledger_events(home: Path, kind: str) -> list[dict[str, Any]]:
    result = run_cli(home, "ledger", "log", "--limit", "500", "--kind", kind, "--json")
    assert result.returncode == 0, result.stderr
    events: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return events


def peer_tier(home: Path, peer: str) -> str | None:
    result = run_cli(home, "peers", "show", peer, "--json")
    return str(json.loads(result.stdout)["tier"]) if result.returncode == 0 else None


def packets_sent(node: NodeProcess) -> float:
    """Packets (alert copies included) the node has sent to all its peers so far."""
    doc = node.ask("metrics")
    assert doc is not None
    family = next(f for f in doc["metrics"] if f["name"] == PACKETS_SENT)
    return float(sum(s["value"] for s in family["samples"]))


def policy_with(home: Path, tmp: Path, **limits: int) -> None:
    """Give a (stopped) node the default policy with these [limits] changed."""
    import re

    from ark_lattice.policy import DEFAULT_POLICY_TEXT

    text = DEFAULT_POLICY_TEXT
    for key, value in limits.items():
        text, found = re.subn(rf"(?m)^{key} = \d+$", f"{key} = {value}", text)
        assert found == 1, key
    path = tmp / f"policy-{home.name}.toml"
    path.write_text(text)
    result = run_cli(home, "policy", "set", str(path))
    assert result.returncode == 0, result.stderr


def equivocation_file(home: Path, out: Path) -> Path:
    """Self-proving evidence against the node in ``home``: two manifests it signed, one seq."""
    who = Identity.load(Home(home).key_path)
    now = int(time.time())

    def signed(name: str) -> bytes:
        return PeerManifest(who.node_id, name, 41, now, now + 3600).sign(who).to_bytes()

    out.write_bytes(equivocation_evidence(signed("honest"), signed("two-faced")))
    return out


def _now() -> float:
    return time.time()


def rogue_alert(identity: Identity, message: str, *, about: str | None = None) -> Packet:
    alert = Alert("warning", message, about, os.urandom(NONCE_SIZE), None)
    return alert_packet(identity, alert, created_at=pack(int(_now() * 1000), 0))


def alert_frame(packet: Packet, hops: int) -> AlertFrame:
    return AlertFrame(WirePacket(packet.header_bytes, packet.signature, packet.body), hops)


async def events_until(
    peer: RoguePeer, done: Callable[[list[Event]], bool], timeout: float = 15
) -> list[Event]:
    """Read what the node sends the rogue (answering its pings) until ``done`` holds."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        data = await asyncio.wait_for(peer.ws.recv(), max(0.01, deadline - time.monotonic()))
        assert isinstance(data, bytes)
        peer.session.receive_data(data, _now())
        events += peer.session.events()
        await peer.flush()
    return events


async def waiting(condition: Callable[[], Any], what: str, timeout: float = 20) -> None:
    """wait_for on a thread, so the rogue's connection stays served meanwhile."""
    await asyncio.to_thread(wait_for, condition, timeout=timeout, what=what)


# --- the flood -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["line", "ring"])
def test_five_core_nodes_all_hold_an_alert_raised_at_one_end(
    homes: Homes, start_node: Start, shape: str
) -> None:
    names = ("a", "b", "c", "d", "e")
    ids = init_federation(homes, *names)
    pairs = list(zip(names, names[1:], strict=False))
    if shape == "ring":
        pairs.append(("e", "a"))
    core_links(homes, ids, pairs)
    nodes = {n: start_node(homes(n), *CALM, wait=False) for n in names}
    for node in nodes.values():
        node.wait_started()
    dial(homes, nodes, pairs)
    wait_linked(nodes, ids, pairs)

    raised = raise_alert(homes("a"), "--severity", "warning", "disk failing on a")
    wait_for(lambda: all(raised in packet_ids(homes(n)) for n in names), timeout=15,
             what=f"the alert on every node of the {shape}")
    far = "e" if shape == "line" else "c"
    [listed] = [v for v in json.loads(run_cli(homes(far), "alerts", "list", "--json").stdout)["items"]
                if v["id"] == raised]
    assert (listed["author"], listed["severity"], listed["quarantined"]) == (ids["a"], "warning", False)
    if shape == "line":
        # One path: each node has it from the one before. E is four hops from A, the author's
        # hop limit (3) exactly: it was flooded all the way, not repaired.
        for before, after in pairs:
            assert alert_view(homes(after), raised)["source"] == ids[before]


def test_the_backstop_repairs_a_link_that_was_down(homes: Homes, start_node: Start) -> None:
    ids = init_federation(homes, "a", "b", "c")
    pairs = [("a", "b"), ("c", "b")]
    core_links(homes, ids, pairs)
    nodes = {n: start_node(homes(n), *CALM, wait=False) for n in "abc"}
    for node in nodes.values():
        node.wait_started()
    dial(homes, nodes, pairs)
    wait_linked(nodes, ids, pairs)

    assert nodes["c"].stop() == 0  # B's link to C is cut
    wait_for(lambda: ids["c"] not in open_sessions(nodes["b"]), what="B to see C gone")
    raised = raise_alert(homes("a"), "--severity", "critical", "c is unreachable")
    wait_for(lambda: raised in packet_ids(homes("b")), what="the alert at B")
    assert raised not in packet_ids(homes("c"))

    nodes["c"] = start_node(homes("c"), *CALM)  # C dials B again (a new port: B cannot dial it)
    wait_for(lambda: raised in packet_ids(homes("c")), timeout=20, what="the repair to reach C")
    assert alert_view(homes("c"), raised)["source"] == ids["b"]


def test_a_copy_at_the_hop_limit_goes_on_by_the_digest_within_seconds(
    homes: Homes, start_node: Start
) -> None:
    """A copy that arrives with no hops left is stored, not flooded; the once-a-second digest of
    recent ids carries it on (reconciliation is off: sync interval one hour)."""
    ids = init_federation(homes, "h", "c")
    h, c = homes("h"), homes("c")
    core_links(homes, ids, [("h", "c")])
    rogue_id = Identity.generate()
    set_tier(h, str(rogue_id.node_id), "core")
    nodes = {"h": start_node(h, *CALM), "c": start_node(c, *CALM)}
    dial(homes, nodes, [("c", "h")])
    wait_linked(nodes, ids, [("c", "h")])
    fed_key = (h / "federation.key").read_bytes()

    async def go() -> str:
        rogue = await RoguePeer(fed_key, rogue_id).connect(nodes["h"].url)
        # H re-reads its peers now, so its next routine wake-up (30 s on) cannot be what sends
        # the digest within the wait below.
        await asyncio.to_thread(nodes["h"].ask, "peers_changed")
        spent = rogue_alert(rogue.identity, "sent with no hops left")
        await rogue.send_frame(alert_frame(spent, 0))
        await waiting(lambda: spent.hex_id in packet_ids(h), "the spent copy at H")
        # The digest goes every second: a few seconds is plenty.
        await waiting(lambda: spent.hex_id in packet_ids(c), "the digest to carry it to C", timeout=8)
        await rogue.ws.close()
        return spent.hex_id

    spent_id = asyncio.run(go())
    assert alert_view(c, spent_id)["source"] == ids["h"]


# --- abuse ---------------------------------------------------------------------------------------


def test_a_non_core_authors_alert_goes_nowhere(homes: Homes, start_node: Start) -> None:
    """D is sandbox for B and raises an alert accusing C; B keeps it apart and acts on nothing."""
    ids = init_federation(homes, "b", "c", "d")
    b, c, d = homes("b"), homes("c"), homes("d")
    core_links(homes, ids, [("b", "c")])
    set_tier(b, ids["d"], "sandbox")
    set_tier(d, ids["b"], "core")  # D would gladly share with B
    nodes = {n: start_node(homes(n), *CALM, wait=False) for n in "bcd"}
    for node in nodes.values():
        node.wait_started()
    dial(homes, nodes, [("c", "b"), ("d", "b")])
    wait_linked(nodes, ids, [("c", "b")])
    wait_for(lambda: ids["d"] in open_sessions(nodes["b"], "sandbox"), what="D's sandbox session")

    raised = raise_alert(d, "--severity", "critical", "--about", ids["c"], "c is compromised")
    wait_for(lambda: raised in quarantined_ids(b), what="D's alert in B's quarantine")
    # A marker from B takes the same link to C after anything B would have sent on; then a full
    # reconciliation, so "C does not have it" is not just "not yet".
    marker = raise_alert(b, "--severity", "info", "marker")
    wait_for(lambda: marker in packet_ids(c), what="B's marker at C")
    synced = run_cli(c, "federation", "sync", "--wait", timeout=60)
    assert synced.returncode == 0, synced.stderr
    assert raised not in packet_ids(c)

    status = nodes["b"].current_status()
    assert status is not None and status["quarantines"] == []  # C is not held on D's word
    assert ids["c"] in open_sessions(nodes["b"])
    alerts = json.loads(run_cli(b, "alerts", "list", "--json").stdout)["items"]
    [listed] = [v for v in alerts if v["id"] == raised]
    assert listed["quarantined"] is True and listed["source"] == ids["d"]

    def audited() -> list[dict[str, Any]]:
        result = run_cli(b, "audit", "--hook", "alert", "--json")
        rows: list[dict[str, Any]] = json.loads(result.stdout)["items"]
        return [r for r in rows if r["subject"] == raised]

    wait_for(lambda: any("not a core peer" in r["reason"] for r in audited()), what="B's audit of D's alert")
    records = audited()
    assert all(r["peer"] == ids["d"] and r["allowed"] is False for r in records), records


def test_a_sandbox_copy_first_does_not_stop_a_core_copy_being_acted_on(
    homes: Homes, start_node: Start, tmp_path: Path
) -> None:
    ids = init_federation(homes, "b", "x")  # x is never started
    b = homes("b")
    relay, trusted = Identity.generate(), Identity.generate()
    set_tier(b, str(relay.node_id), "sandbox")
    set_tier(b, str(trusted.node_id), "core")
    node_b = start_node(b, *CALM)
    fed_key = (b / "federation.key").read_bytes()
    proof = equivocation_file(homes("x"), tmp_path / "proof.cbor").read_bytes()
    alert = Alert("critical", "x equivocates", ids["x"], os.urandom(NONCE_SIZE), proof)
    packet = alert_packet(trusted, alert, created_at=pack(int(_now() * 1000), 0))

    async def go() -> None:
        first = await RoguePeer(fed_key, relay).connect(node_b.url)
        await first.send_frame(alert_frame(packet, 3))
        await waiting(lambda: packet.hex_id in quarantined_ids(b), "the sandbox copy stored apart")
        second = await RoguePeer(fed_key, trusted).connect(node_b.url)
        await second.send_frame(alert_frame(packet, 3))
        await waiting(lambda: peer_tier(b, ids["x"]) == "blocked", "B to act on the core copy", timeout=10)
        for peer in (first, second):
            await peer.ws.close()

    asyncio.run(go())


def test_a_forged_alert_is_refused_and_audited(homes: Homes, start_node: Start) -> None:
    """A core peer of H sends an alert in C's name whose signature does not verify."""
    ids = init_federation(homes, "h", "c")
    h, c = homes("h"), homes("c")
    core_links(homes, ids, [("h", "c")])
    rogue_id = Identity.generate()
    set_tier(h, str(rogue_id.node_id), "core")
    nodes = {"h": start_node(h, *CALM), "c": start_node(c, *CALM)}
    dial(homes, nodes, [("c", "h")])
    wait_linked(nodes, ids, [("c", "h")])
    fed_key = (h / "federation.key").read_bytes()
    in_cs_name = rogue_alert(Identity.load(Home(c).key_path), "h is evil", about=ids["h"])
    signature = bytearray(in_cs_name.signature)
    signature[7] ^= 0x01
    forged = AlertFrame(WirePacket(in_cs_name.header_bytes, bytes(signature), in_cs_name.body), 3)

    async def go() -> tuple[list[Event], str]:
        rogue = await RoguePeer(fed_key, rogue_id).connect(nodes["h"].url)
        await rogue.send_frame(forged)
        events = await events_until(rogue, lambda es: any(isinstance(e, PeerReportedError) for e in es))
        marker = rogue_alert(rogue.identity, "marker")
        await rogue.send_frame(alert_frame(marker, 3))
        await waiting(lambda: marker.hex_id in packet_ids(c), "the rogue's marker at C")
        await rogue.ws.close()
        return events, marker.hex_id

    events, marker = asyncio.run(go())
    [refusal] = [e for e in events if isinstance(e, PeerReportedError)]
    assert refusal.code == "bad_signature" and not refusal.fatal
    for home in (h, c):
        assert in_cs_name.hex_id not in packet_ids(home)
    assert marker in packet_ids(h)  # the session went on
    assert "bad_signature" in protocol_errors(h)
    rogue = str(rogue_id.node_id)
    strikes = [e for e in ledger_events(h, "peer.strike") if e["subject"] == rogue]
    assert strikes and strikes[0]["data"]["code"] == "bad_signature"
    status = nodes["h"].current_status()
    assert status is not None and status["quarantines"] == []  # the forgery accused H: no effect anyway


def test_a_replayed_alert_is_stored_once_and_not_flooded_again(homes: Homes, start_node: Start) -> None:
    """H has two honest core peers, G and C, and a rogue core peer R. G raises; R replays H's copy
    back to H three times, first with the hops H gave it, then with the most a frame can carry
    (hops are not signed); then R sends a marker of its own. H must send on only the marker."""
    ids = init_federation(homes, "h", "g", "c")
    h, g, c = homes("h"), homes("g"), homes("c")
    pairs = [("g", "h"), ("c", "h")]
    core_links(homes, ids, pairs)
    rogue_id = Identity.generate()
    set_tier(h, str(rogue_id.node_id), "core")
    nodes = {n: start_node(homes(n), *CALM, wait=False) for n in "hgc"}
    for node in nodes.values():
        node.wait_started()
    dial(homes, nodes, pairs)
    wait_linked(nodes, ids, pairs)
    fed_key = (h / "federation.key").read_bytes()

    async def replay(rogue: RoguePeer, hops: int | None) -> tuple[str, float]:
        """One round; returns G's alert and what H sent meanwhile, in packets."""
        raised = await asyncio.to_thread(raise_alert, g, "--severity", "warning", "g saw a probe")
        events = await events_until(rogue, lambda es: any(
            isinstance(e, AlertReceived) and e.packet.hex_id == raised for e in es
        ))
        [copy] = [e for e in events if isinstance(e, AlertReceived) and e.packet.hex_id == raised]
        assert copy.hops == 2  # G sent it with 3 hops left, H with one less
        await waiting(lambda: raised in packet_ids(c), "G's alert at C")
        before = await asyncio.to_thread(packets_sent, nodes["h"])
        for _ in range(3):
            await rogue.send_frame(alert_frame(copy.packet, copy.hops if hops is None else hops))
        marker = rogue_alert(rogue.identity, "marker")
        await rogue.send_frame(alert_frame(marker, 3))
        await waiting(lambda: marker.hex_id in packet_ids(g) and marker.hex_id in packet_ids(c),
                      "the rogue's marker at G and C")
        return raised, await asyncio.to_thread(packets_sent, nodes["h"]) - before

    async def go() -> list[tuple[str, float]]:
        rogue = await RoguePeer(fed_key, rogue_id).connect(nodes["h"].url)
        await waiting(lambda: str(rogue_id.node_id) in open_sessions(nodes["h"]), "the rogue's session")
        rounds = [await replay(rogue, None), await replay(rogue, MAX_HOPS)]
        await rogue.ws.close()
        return rounds

    rounds = asyncio.run(go())
    for raised, sent in rounds:
        assert sent == 2  # the marker, to G and C; the replays went nowhere
        alerts = json.loads(run_cli(h, "alerts", "list", "--json").stdout)["items"]
        [stored] = [a for a in alerts if a["id"] == raised]
        assert stored["source"] == ids["g"]  # stored once, from G


# --- quarantine and block ------------------------------------------------------------------------


def test_a_quarantine_without_evidence_expires(homes: Homes, start_node: Start, tmp_path: Path) -> None:
    ids = init_federation(homes, "a", "b", "x")
    b = homes("b")
    pairs = [("a", "b"), ("x", "b")]
    core_links(homes, ids, pairs)
    policy_with(b, tmp_path, alert_quarantine_s=3)
    nodes = {n: start_node(homes(n), *QUIET, wait=False) for n in "abx"}
    for node in nodes.values():
        node.wait_started()
    dial(homes, nodes, pairs)
    wait_linked(nodes, ids, pairs)

    raised = raise_alert(homes("a"), "--severity", "critical", "--about", ids["x"], "x scans ports")

    def held() -> list[dict[str, Any]]:
        status = nodes["b"].current_status()
        return status["quarantines"] if status is not None else []

    [quarantine] = wait_for(held, what="B to quarantine X")
    assert quarantine["peer"] == ids["x"] and quarantine["alerts"] == [raised]
    assert quarantine["accusers"] == [ids["a"]]
    # X's core session is closed at once; if X dials back meanwhile, it is held as sandbox.
    assert ids["x"] not in open_sessions(nodes["b"])
    [event] = [e for e in ledger_events(b, "peer.quarantined") if e["subject"] == ids["x"]]
    assert raised in event["data"]["reason"]

    wait_for(lambda: not held() and ids["x"] in open_sessions(nodes["b"]), timeout=30,
             what="the quarantine to expire and X to be back as core")
    assert peer_tier(b, ids["x"]) == "core"
    [lifted] = [e for e in ledger_events(b, "peer.quarantine_lifted") if e["subject"] == ids["x"]]
    assert "expired" in lifted["data"]["reason"]


def test_the_accused_is_not_shown_evidence_it_cannot_check(
    homes: Homes, start_node: Start, tmp_path: Path
) -> None:
    ids = init_federation(homes, "a", "b", "x")
    b, x = homes("b"), homes("x")
    pairs = [("a", "b"), ("x", "b")]
    core_links(homes, ids, pairs)
    policy_with(b, tmp_path, alert_quarantine_s=3)
    nodes = {n: start_node(homes(n), *CALM, wait=False) for n in "abx"}
    for node in nodes.values():
        node.wait_started()
    dial(homes, nodes, pairs)
    wait_linked(nodes, ids, pairs)
    hearsay = tmp_path / "hearsay.txt"
    hearsay.write_bytes(b"a friend of a friend saw x exfiltrate the ledger\n")
    raised = raise_alert(homes("a"), "--severity", "critical", "--about", ids["x"], "--evidence",
                         str(hearsay), "x exfiltrates")
    wait_for(lambda: raised in packet_ids(b), what="the alert at B")
    assert alert_view(b, raised)["self_proving"] is False
    wait_for(lambda: ids["x"] in open_sessions(nodes["b"]), timeout=30,
             what="the quarantine to expire and X to be back as core")
    synced = run_cli(x, "federation", "sync", "--wait", timeout=60)  # X dialled B: it drives the sync
    assert synced.returncode == 0, synced.stderr
    assert raised not in packet_ids(x)


def test_self_proving_evidence_blocks_the_accused_on_every_node(
    homes: Homes, start_node: Start, tmp_path: Path
) -> None:
    """X is core to A, B and C (a line); A raises proof that X signed two manifests with one seq."""
    ids = init_federation(homes, "a", "b", "c", "x")
    line = [("a", "b"), ("c", "b")]
    to_x = [("x", "a"), ("x", "b"), ("x", "c")]
    core_links(homes, ids, line + to_x)
    nodes = {n: start_node(homes(n), *QUIET, wait=False) for n in "abcx"}
    for node in nodes.values():
        node.wait_started()
    dial(homes, nodes, line + to_x)
    wait_linked(nodes, ids, line + to_x)

    proof = equivocation_file(homes("x"), tmp_path / "proof.cbor")
    raised = raise_alert(homes("a"), "--severity", "critical", "--about", ids["x"][:10],
                         "--evidence", str(proof), "x signed two manifests for one seq")
    wait_for(lambda: all(peer_tier(homes(n), ids["x"]) == "blocked" for n in "abc"), timeout=20,
             what="every node to block X")
    for n in "abc":
        assert ids["x"] not in open_sessions(nodes[n], tier=None)
        change = next(e for e in ledger_events(homes(n), "peer.tier_changed") if e["subject"] == ids["x"])
        assert change["data"]["new"] == "blocked" and "self-proving" in change["data"]["reason"]
        status = nodes[n].current_status()
        assert status is not None and status["quarantines"] == []  # blocked, not merely held
    assert alert_view(homes("c"), raised)["self_proving"] is True
    assert raised not in packet_ids(homes("x"))  # never sent to the accused


def test_proof_against_a_node_nobody_met_blocks_it_on_the_author_and_the_relay(
    homes: Homes, start_node: Start, tmp_path: Path
) -> None:
    """Neither A nor B has heard of X: A's proof is raised all the same, both record X as blocked,
    and B's session with A (which brought the proof) goes on."""
    ids = init_federation(homes, "a", "b", "x")  # x is never started
    a, b = homes("a"), homes("b")
    core_links(homes, ids, [("a", "b")])
    nodes = {n: start_node(homes(n), *CALM, wait=False) for n in "ab"}
    for node in nodes.values():
        node.wait_started()
    dial(homes, nodes, [("a", "b")])
    wait_linked(nodes, ids, [("a", "b")])
    proof = equivocation_file(homes("x"), tmp_path / "proof.cbor")
    raised = raise_alert(a, "--severity", "critical", "--about", ids["x"], "--evidence", str(proof),
                         "x equivocates")
    wait_for(lambda: raised in packet_ids(b), what="the alert at B")
    wait_for(lambda: peer_tier(b, ids["x"]) == "blocked", timeout=10, what="B to block X")
    assert peer_tier(a, ids["x"]) == "blocked"
    assert ids["a"] in open_sessions(nodes["b"])
    assert "failed" not in nodes["b"].output()


# --- the bench -----------------------------------------------------------------------------------


def test_bench_alerts_runs_small_and_names_its_measurements() -> None:
    import subprocess

    from ark_lattice.processes import cli_command

    command = cli_command(None, "bench", "alerts", "--nodes", "3", "--alerts", "3", "--isolations", "2",
                          "--burst", "30", "--json")
    result = subprocess.run(command, capture_output=True, timeout=240)
    assert result.returncode == 0, result.stderr.decode()
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    names = [row["name"] for row in rows]
    assert names == list(BENCH_NAMES)
    by_name = {row["name"]: row for row in rows}
    assert by_name["alerts.burst.loss"]["value"] == 0
    assert all(row["note"] for row in rows)


BENCH_NAMES: Sequence[str] = (
    "alerts.stored_everywhere.p50",
    "alerts.stored_everywhere.p99",
    "alerts.stored_everywhere.max",
    "alerts.isolated_everywhere.p50",
    "alerts.isolated_everywhere.p99",
    "alerts.isolated_everywhere.max",
    "alerts.messages_per_node",
    "alerts.bytes_per_node",
    "alerts.burst.seconds",
    "alerts.burst.loss",
)
