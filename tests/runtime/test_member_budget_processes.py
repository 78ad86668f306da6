"""Member budgets and audit volume through real node processes: a keyed member throwing hostile
frames and reconciliation floods is struck and isolated; a sandboxed peer syncing over and over
grows the ledger by a bounded amount."""

import asyncio
import json
import struct
from datetime import datetime

from ark_lattice.processes import run_cli, wait_for
from ark_lattice.protocol.frames import ReconFrame

from conftest import fill, init_federation, items, packet_ids, set_tier
from test_hostile_peers import RoguePeer


def _packets_of_empty_arrays(n: int) -> bytes:
    return b"\x84\x01\x67packets\x9a" + struct.pack(">I", n) + b"\x80" * n + b"\xf4\xf5"


HOSTILE = [
    _packets_of_empty_arrays(2_000_000),  # 2 MiB: ~130 MiB and a second or more if decoded
    b"\x83\x01\x65offer" + b"\x81" * 100_000 + b"\x80",  # nested 100,000 deep
    ReconFrame(0, b"\x61" + b"\x01\x00\x00" * 174_000).serialize(),  # 174k ranges in 512 KiB
    _packets_of_empty_arrays(2_000_000),
    ReconFrame(0, b"\x61" + b"\x01\x00\x00" * 174_000).serialize(),
]


def _protocol_errors(home, subject):
    events = items(json.loads(
        run_cli(home, "ledger", "log", "--limit", "500", "--kind", "protocol.error", "--json").stdout
    ))
    return [e["data"]["code"] for e in events if e["subject"] == subject]


def test_a_member_throwing_hostile_frames_is_struck_for_each_and_isolated(homes, start_node):
    init_federation(homes, "h")
    hub = homes("h")
    node = start_node(hub)
    fed_key = (hub / "federation.key").read_bytes()

    async def attack():
        peer = RoguePeer(fed_key)
        set_tier(hub, str(peer.identity.node_id), "sandbox")  # a member whose packets we take
        await peer.connect(node.url)
        channel = peer.session._channel
        assert channel is not None  # the session is open
        for plaintext in HOSTILE:
            await peer.ws.send(channel.seal(plaintext))  # sealed as any frame: only the CBOR is hostile
        return str(peer.identity.node_id), await peer.closed_code()

    peer_id, (code, reason) = asyncio.run(attack())
    assert reason == "blocked"  # the fifth strike isolated it
    assert _protocol_errors(hub, peer_id).count("over_budget") == 5
    peer = json.loads(run_cli(hub, "peers", "show", peer_id[:12], "--json").stdout)
    assert peer["tier"] == "blocked"
    status = run_cli(hub, "federation", "status", "--json")
    assert status.returncode == 0
    assert peer_id in {i["peer"] for i in json.loads(status.stdout)["isolated"]}
    assert "Traceback" not in node.output()


def _decision_events(home):
    return items(json.loads(
        run_cli(home, "ledger", "log", "--limit", "100000", "--kind", "policy.decision", "--json").stdout
    ))


def _link_from(home, peer_id):
    """(packets received, time of the last finished reconciliation) of ``home``'s session with
    ``peer_id`` (the responder's side sets it when the initiator's ``synced`` arrives)."""
    status = json.loads(run_cli(home, "federation", "status", "--json").stdout)
    links = [c for c in status["connections"] if c["peer"] == peer_id and c["state"] == "open"]
    if not links:
        return 0, 0.0
    last_sync = links[0].get("last_sync")  # RFC 3339 (docs/operator.md, "Output")
    return int(links[0].get("packets_in") or 0), (
        datetime.fromisoformat(last_sync).timestamp() if last_sync else 0.0
    )


def test_a_sandboxed_peer_syncing_repeatedly_grows_the_ledger_by_a_bounded_amount(homes, start_node):
    # h holds c's packets (from c); g holds them too and is sandbox at h. h reconciles with g over
    # what g itself sent it (nothing), so g offers c's packets at its first round, h's policy
    # decides each one (audited once) and finds them held. From then on h's set for g includes
    # them (protocol/echoes.py): no packet crosses again, no decision is taken, the ledger is still.
    ids = init_federation(homes, "c", "h", "g")
    c, h, g = homes("c"), homes("h"), homes("g")
    for home, peers in ((c, {"h": "core", "g": "core"}), (h, {"c": "core", "g": "sandbox"}),
                        (g, {"c": "core", "h": "core"})):
        for name, tier in peers.items():
            set_tier(home, ids[name], tier)
    count = 200
    expected = set(fill(c, count, "from/c"))
    node_c = start_node(c)
    node_h = start_node(h, "--sync-interval", "600")  # h never starts a sync itself
    node_g = start_node(g, "--sync-interval", "1")
    for home in (h, g):
        assert run_cli(home, "federation", "add-peer", node_c.url).returncode == 0
    wait_for(lambda: packet_ids(h) == expected == packet_ids(g), timeout=120, what="c's packets at h and g")
    assert run_cli(g, "federation", "add-peer", node_h.url).returncode == 0

    wait_for(lambda: _link_from(h, ids["g"])[0] >= count, timeout=60, what="g's first round at h")
    wait_for(lambda: any(d["peer"] == ids["g"] for e in _decision_events(h) for d in e["data"]["decisions"]),
             timeout=30, what="the first round's decisions in h's ledger")
    first = _link_from(h, ids["g"])[1]
    settled = wait_for(lambda: (link := _link_from(h, ids["g"]))[1] >= first + 3 and link,
                       timeout=60, what="more rounds of g at h")
    events = len(_decision_events(h))
    wait_for(lambda: _link_from(h, ids["g"])[1] >= settled[1] + 6, timeout=60, what="six more rounds")
    packets_in, _ = _link_from(h, ids["g"])
    assert packets_in == settled[0] <= 2 * count  # nothing crossed again
    assert len(_decision_events(h)) == events  # the ledger did not grow

    node_h.stop()
    records = [
        d for e in _decision_events(h) for d in e["data"]["decisions"]
        if d["peer"] == ids["g"] and d["hook"] == "inbound_packet"
    ]
    single = [d for d in records if d["subject"]]
    assert len(single) == len({d["subject"] for d in single}) == count  # each packet audited once
    # A second round that began before the first was stored is counted, not written again.
    assert sum(d.get("repeats", 0) for d in records) == packets_in - count
    assert "Traceback" not in node_g.output() + node_c.output()
