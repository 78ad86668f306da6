"""Policy on the sync path, through real sessions between real node processes."""

import asyncio
import json

from ark_lattice.hlc import pack
from ark_lattice.packet import Packet
from ark_lattice.policy import DEFAULT_POLICY_TEXT
from ark_lattice.processes import run_cli, wait_for
from ark_lattice.protocol.frames import PacketsFrame, WirePacket

from conftest import fill, init_federation, packet_ids, set_tier
from test_hostile_peers import RoguePeer, _now

DENY_SECRET = DEFAULT_POLICY_TEXT + '''
[[rule]]
id = "no-secrets"
effect = "deny"
hooks = ["inbound_packet", "outbound_packet"]
condition = 'topic.startsWith("secret/")'
'''


def audit(home, *args):
    return json.loads(run_cli(home, "audit", "--limit", "100000", "--json", *args).stdout)["items"]


def set_policy(home, text, tmp):
    path = tmp / f"policy-{abs(hash(text))}.toml"
    path.write_text(text)
    result = run_cli(home, "policy", "set", str(path))
    assert result.returncode == 0, result.stderr


def test_a_denied_topic_stops_in_both_directions_and_every_decision_is_audited(homes, start_node, tmp_path):
    ids = init_federation(homes, "a", "b")
    a, b = homes("a"), homes("b")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    set_policy(a, DENY_SECRET, tmp_path)
    a_open, a_secret = set(fill(a, 40, "notes/a")), set(fill(a, 10, "secret/a", start=100))
    b_open, b_secret = set(fill(b, 40, "notes/b")), set(fill(b, 10, "secret/b", start=100))
    node_a = start_node(a)
    start_node(b)
    run_cli(b, "federation", "add-peer", node_a.url)
    wait_for(lambda: a_open | b_open <= packet_ids(a) and a_open | b_open | b_secret <= packet_ids(b),
             timeout=60, what="the open topics to cross")
    wait_for(lambda: len(audit(a, "--hook", "inbound_packet")) == len(b_open | b_secret), timeout=30,
             what="A's inbound decisions to be written")
    assert not (a_secret & packet_ids(b)), "A sent a topic its policy denies outbound"
    assert not (b_secret & packet_ids(a)), "A stored a topic its policy denies inbound"
    inbound = audit(a, "--hook", "inbound_packet")
    assert {d["subject"] for d in inbound if not d["allowed"]} == b_secret
    assert all(d["rules"][-1] == "no-secrets" for d in inbound if not d["allowed"])
    assert {d["subject"] for d in inbound if d["allowed"]} == b_open
    outbound = audit(a, "--hook", "outbound_packet")
    assert {d["subject"] for d in outbound} == a_open | a_secret  # each decision, once
    assert len(outbound) == len(a_open | a_secret)
    assert {d["subject"] for d in outbound if not d["allowed"]} == a_secret
    assert len(audit(a, "--decision", "deny")) == len(a_secret) + len(b_secret)


def test_a_policy_swapped_on_a_running_node_takes_effect_on_the_next_packet(homes, start_node, tmp_path):
    ids = init_federation(homes, "a", "b")
    a, b = homes("a"), homes("b")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    node_a = start_node(a)
    start_node(b)
    run_cli(b, "federation", "add-peer", node_a.url)
    wait_for(lambda: any(c["state"] == "open" for c in
                         json.loads(run_cli(a, "federation", "status", "--json").stdout)["connections"]),
             what="the session to open")

    def publish(topic, body):
        return run_cli(b, "packets", "publish", "--topic", topic, "-", input=body).stdout.decode().strip()

    first = publish("secret/x", b"before")
    wait_for(lambda: first in packet_ids(a), what="the first packet under the old policy")
    set_policy(a, DENY_SECRET, tmp_path)
    second = publish("secret/x", b"after")
    marker = publish("notes/x", b"marker")  # pushed after `second`, on the same session
    wait_for(lambda: marker in packet_ids(a), what="the marker packet")
    wait_for(lambda: any(d["subject"] == second and not d["allowed"] for d in audit(a)),
             what="the refusal in the audit trail")
    assert second not in packet_ids(a)
    set_policy(a, DEFAULT_POLICY_TEXT, tmp_path)
    third = publish("secret/x", b"allowed again")
    wait_for(lambda: third in packet_ids(a), what="the packet under the restored policy")


FLOOD = DEFAULT_POLICY_TEXT.replace("strikes_to_block = 5", "strikes_to_block = 3").replace(
    "rate = 200.0\nburst = 2000", "rate = 0.1\nburst = 3"
)


def test_a_flooding_peer_is_throttled_then_isolated(homes, start_node, tmp_path):
    init_federation(homes, "h")
    hub = homes("h")
    set_policy(hub, FLOOD, tmp_path)
    node = start_node(hub)
    fed_key = (hub / "federation.key").read_bytes()

    async def flood():
        peer = RoguePeer(fed_key)
        set_tier(hub, str(peer.identity.node_id), "core")
        await peer.connect(node.url)
        sent = []
        for i in range(10):
            p = Packet.create(peer.identity, topic="flood", kind="note", body=b"%d" % i,
                              created_at=pack(int(_now() * 1000), i))
            sent.append(p.hex_id)
            try:
                wire = WirePacket(p.header_bytes, p.signature, p.body)
                await peer.send_frame(PacketsFrame((wire,), live=True))
            except Exception:
                break  # the hub closed on us: isolated
        return str(peer.identity.node_id), sent

    peer_id, sent = asyncio.run(flood())
    wait_for(
        lambda: json.loads(run_cli(hub, "peers", "show", peer_id[:12], "--json").stdout)["tier"] == "blocked",
        what="the flooding peer to be isolated",
    )
    held = packet_ids(hub)
    assert set(sent[:3]) <= held  # the burst was allowed
    assert len(set(sent) & held) == 3  # then throttled
    denied = [
        d for d in audit(hub, "--peer", peer_id[:12], "--decision", "deny") if d["hook"] == "inbound_packet"
    ]
    assert denied and all(d["rules"] == ["rate:peer-flood"] for d in denied)
    status = json.loads(run_cli(hub, "federation", "status", "--json").stdout)
    assert [i["peer"] for i in status["isolated"]] == [peer_id]
    human = run_cli(hub, "federation", "status").stdout.decode()
    assert "isolated" in human
