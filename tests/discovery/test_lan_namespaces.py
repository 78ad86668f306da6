"""LAN discovery between real nodes on hosts built from network namespaces.

The lab (ark_lattice/bench/netns.py) is four namespaces on one bridge, 10.231.0.0/24: a node on each
of h1, h2, h3 and an attacker on h4. Everything the tests send stays inside those namespaces. The
nodes' control sockets are Unix sockets in their homes, so the CLI drives them from here.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ark_lattice.bench.netns import NetLab, unavailable
from ark_lattice.discovery import DEFAULT_BEACON_PORT, DEFAULT_GROUP
from ark_lattice.discovery.announcement import Announcement, SignedAnnouncement
from ark_lattice.encoding import Purpose
from ark_lattice.identity import Identity
from ark_lattice.processes import NodeProcess, cli_command, run_cli, wait_for

from conftest import init_federation, packet_ids, set_tier

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"LAN lab unavailable: {unavailable()}")

PORT = 7467
EVIL = "10.231.0.4"
EVIL_URL = f"ws://{EVIL}:{PORT}"


@pytest.fixture(scope="module")
def lab():
    with NetLab(4) as built:
        yield built


class LanNode(NodeProcess):
    """`ark-lattice federation start --bind 0.0.0.0` inside one namespace."""

    def __init__(self, host, home: Path, *extra: str) -> None:
        self.host = host
        # Not waited for here: the nodes of a test start side by side, then wait_started().
        super().__init__(
            home, *extra, bind="0.0.0.0", port=PORT, prefix=tuple(host.exec_prefix()), wait=False
        )

    def seen(self) -> list[dict]:
        result = run_cli(self.home, "federation", "discover", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["seen"]

    def verified(self, source: str) -> set[str]:
        return {r["node_id"] for r in self.seen() if r["verified"] and r["source"] == source}

    def rejected(self, source: str) -> list[dict]:
        return [r for r in self.seen() if not r["verified"] and r["source"] == source]

    def open_peers(self) -> set[str]:
        status = self.current_status() or {"connections": []}
        return {c["peer"] for c in status["connections"] if c["state"] == "open"}

    def peers(self) -> dict[str, dict]:
        result = run_cli(self.home, "peers", "list", "--json")
        assert result.returncode == 0, result.stderr
        return {p["id"]: p for p in json.loads(result.stdout)["items"]}


@pytest.fixture
def lan(lab):
    started: list[LanNode] = []

    def start(homes_and_hosts, *extra: str) -> list[LanNode]:
        nodes = [LanNode(host, home, *extra) for home, host in homes_and_hosts]
        started.extend(nodes)
        for node in nodes:
            node.wait_started()
        return nodes

    yield start
    for node in started:
        node.close(grace=0)


ATTACKER = textwrap.dedent(
    """
    import asyncio, base64, json, socket, sys

    plan = json.loads(sys.argv[1])

    async def main():
        async def dialled(reader, writer):
            print("DIALLED", writer.get_extra_info("peername"), flush=True)
            writer.close()

        # Listen where the forged announcements point, to catch any node dialling them.
        await asyncio.start_server(dialled, "0.0.0.0", plan["port"])
        if plan["records"]:
            from zeroconf import IPVersion
            from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

            zc = AsyncZeroconf(interfaces=[plan["address"]], ip_version=IPVersion.V4Only)
            for i, props in enumerate(plan["records"]):
                info = AsyncServiceInfo(
                    "_ark-lattice._tcp.local.", f"forged{i}._ark-lattice._tcp.local.", port=plan["port"],
                    properties={k: base64.b64decode(v) for k, v in props.items()},
                    server=f"forged{i}.local.", parsed_addresses=[plan["address"]],
                )
                await zc.async_register_service(info, cooperating_responders=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(plan["address"]))
        print("READY", flush=True)
        while True:
            for datagram in plan["datagrams"]:
                sock.sendto(base64.b64decode(datagram), (plan["group"], plan["beacon_port"]))
            await asyncio.sleep(0.5)

    asyncio.run(main())
    """
)


@pytest.fixture
def attacker(lab):
    procs: list[subprocess.Popen] = []

    def start(*, records=(), datagrams=()) -> subprocess.Popen:
        plan = {
            "address": EVIL, "port": PORT, "group": DEFAULT_GROUP, "beacon_port": DEFAULT_BEACON_PORT,
            "records": [{k: base64.b64encode(v).decode() for k, v in r.items()} for r in records],
            "datagrams": [base64.b64encode(d).decode() for d in datagrams],
        }
        proc = subprocess.Popen(
            [*lab.hosts[3].exec_prefix(), sys.executable, "-c", ATTACKER, json.dumps(plan)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY", proc.stdout.read()
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def forgeries(victim_trusts: Identity) -> tuple[Identity, list[SignedAnnouncement]]:
    """Right format, wrong signature: (1) a new ID signed by another key; (2) a real, trusted
    node's announcement (as captured off the LAN) with its endpoint swapped for the attacker's."""
    import time

    now = time.time()
    stranger, other = Identity.generate(), Identity.generate()
    claim = Announcement.build(stranger.node_id, [EVIL_URL], PORT, now=now, name="stranger")
    forged = SignedAnnouncement(claim, other.sign(Purpose.BEACON, claim.encode()))
    real = Announcement.build(
        victim_trusts.node_id, [f"ws://10.231.0.2:{PORT}"], PORT, now=now, name="b"
    ).sign(victim_trusts)
    swapped = SignedAnnouncement(
        Announcement.build(victim_trusts.node_id, [EVIL_URL], PORT, now=now, name="b"), real.signature
    )
    return stranger, [forged, swapped]


def three_nodes(homes, lab) -> tuple[dict[str, str], list[tuple[Path, object]]]:
    ids = init_federation(homes, "a", "b", "c")
    # lab.hosts[3] is the attacker's.
    return ids, [(homes(n), host) for n, host in zip("abc", lab.hosts, strict=False)]


def check_forgeries_dropped(a: LanNode, source: str, stranger: Identity, ids: dict, attacker_proc) -> None:
    def both_forgeries_rejected() -> list[dict] | None:
        rejected = a.rejected(source)
        return rejected if len({r["node_id"] for r in rejected}) >= 2 else None

    rejected = wait_for(
        both_forgeries_rejected, timeout=30, what=f"the forged {source} announcements to be rejected"
    )
    assert {r["node_id"] for r in rejected} == {str(stranger.node_id), ids["b"]}
    assert all(r["reason"] == "bad beacon signature" for r in rejected)
    assert f"dropped a {source} announcement" in a.output()
    # B is core for A, so A dials B — at B's real address, never at the attacker's.
    wait_for(lambda: ids["b"] in a.open_peers(), timeout=30, what="A to dial B")
    peers = a.peers()
    assert str(stranger.node_id) not in peers
    assert EVIL_URL not in peers[ids["b"]]["endpoints"]
    assert str(stranger.node_id) not in a.verified(source)
    attacker_proc.kill()
    assert "DIALLED" not in attacker_proc.communicate()[0]


def test_mdns_alone_finds_both_others_and_drops_forged_txt_records(lab, homes, lan, attacker):
    ids, placed = three_nodes(homes, lab)
    set_tier(homes("a"), ids["b"], "core")
    stranger, forged = forgeries(Identity.load(homes("b") / "identity.key"))
    evil = attacker(records=[f.to_txt() for f in forged])
    nodes = lan(placed, "--no-multicast")
    for node, me in zip(nodes, "abc", strict=True):
        others = {ids[n] for n in "abc" if n != me}
        # wait_for calls the condition before the loop moves on: the late binding (B023) is harmless.
        wait_for(lambda: others <= node.verified("mdns"),  # noqa: B023 (called at once)
                 timeout=30, what=f"{me} to find {others} over mDNS")
        assert not node.verified("beacon")
        peers = node.peers()
        for other, host in zip("abc", lab.hosts, strict=False):
            if other != me:
                assert f"ws://{host.address}:{PORT}" in peers[ids[other]]["endpoints"]
                if not (me == "a" and other == "b"):
                    assert peers[ids[other]]["tier"] == "unknown"
    check_forgeries_dropped(nodes[0], "mdns", stranger, ids, evil)
    for node in nodes:
        assert node.stop() == 0
        assert "discovered" in node.output()


def test_beacon_alone_finds_both_others_and_drops_forged_beacons(lab, homes, lan, attacker):
    ids, placed = three_nodes(homes, lab)
    set_tier(homes("a"), ids["b"], "core")
    stranger, forged = forgeries(Identity.load(homes("b") / "identity.key"))
    nodes = lan(placed, "--no-mdns")
    evil = attacker(datagrams=[f.to_datagram() for f in forged])
    for node, me in zip(nodes, "abc", strict=True):
        others = {ids[n] for n in "abc" if n != me}
        wait_for(lambda: others <= node.verified("beacon"),  # noqa: B023 (called at once)
                 timeout=30, what=f"{me} to find {others} by beacon")
        assert not node.verified("mdns")
        assert {ids[n] for n in "abc" if n != me} <= set(node.peers())
    check_forgeries_dropped(nodes[0], "beacon", stranger, ids, evil)
    for node in nodes:
        assert node.stop() == 0


def test_core_peers_found_on_the_lan_sync_and_catch_up_after_a_link_flap(lab, homes, lan):
    ids, placed = three_nodes(homes, lab)
    for me in "abc":
        for other in "abc":
            if other != me:
                set_tier(homes(me), ids[other], "core")
    # Heartbeats every 2 s, stale after 6 s of silence, so a dead link is noticed within the test.
    a, b, c = lan(placed, "--idle-timeout", "6")
    for node, me in zip((a, b, c), "abc", strict=True):
        others = {ids[n] for n in "abc" if n != me}
        wait_for(lambda: node.open_peers() == others,  # noqa: B023 (called at once)
                 timeout=60, what=f"{me} to hold sessions with {others}")

    publish = ("packets", "publish", "--topic", "lan", "-")
    first = run_cli(homes("a"), *publish, input=b"first").stdout.decode().strip()
    wait_for(lambda: first in packet_ids(homes("b")) and first in packet_ids(homes("c")),
             timeout=30, what="the packet to reach B and C")

    lab.set_link(lab.hosts[2], up=False)  # C drops off the LAN
    wait_for(lambda: ids["c"] not in a.open_peers() and ids["c"] not in b.open_peers(),
             timeout=40, what="A and B to mark C stale")
    second = run_cli(homes("a"), *publish, input=b"second").stdout.decode().strip()
    wait_for(lambda: second in packet_ids(homes("b")), timeout=30, what="the second packet to reach B")
    assert second not in packet_ids(homes("c"))

    lab.set_link(lab.hosts[2], up=True)
    wait_for(lambda: second in packet_ids(homes("c")), timeout=90,
             what="C to catch up after the link is back")
    wait_for(lambda: c.open_peers() == {ids["a"], ids["b"]}, timeout=60, what="C to reconnect to A and B")
    assert "stale" in a.output() or "stale" in c.output()
    for node in (a, b, c):
        assert node.stop() == 0


def test_one_shot_discover_with_no_node_running_hears_the_lan(lab, homes, lan):
    ids = init_federation(homes, "b")
    lan([(homes("b"), lab.hosts[1])])
    result = run_cli(homes("nobody"), "federation", "discover", "--timeout", "2", "--json",
                     prefix=lab.hosts[0].exec_prefix())
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["running"] is False and doc["announcing"] == []
    found = {(r["node_id"], r["source"]) for r in doc["seen"] if r["verified"]}
    # mDNS answers the browse query; the beacon answers the solicitation instead of its 30 s timer.
    assert found == {(ids["b"], "mdns"), (ids["b"], "beacon")}


def test_bench_discovery_reports_medians_against_the_one_second_target():
    result = subprocess.run(cli_command(None, "bench", "discovery", "--runs", "1", "--json"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    for carrier in ("mdns", "beacon"):
        for key in ("found_running", "found_by_running"):
            row = rows[f"discovery.{carrier}.{key}"]
            assert row["unit"] == "s" and row["bound"] == 1.0 and row["value"] > 0
        assert f"discovery.{carrier}.from_process_start" in rows


def test_a_new_address_is_announced_at_once_on_both_carriers(lab, homes, lan):
    ids = init_federation(homes, "a", "b")
    a, b = lan([(homes("a"), lab.hosts[0]), (homes("b"), lab.hosts[1])])
    wait_for(lambda: {"mdns", "beacon"} <= {r["source"] for r in b.seen() if r["node_id"] == ids["a"]},
             timeout=30, what="B to hear A on both carriers")
    extra = "10.231.0.21"
    url = f"ws://{extra}:{PORT}"

    def endpoints_of_a(source: str) -> list[str]:
        heard = (r["endpoints"] for r in b.seen() if r["node_id"] == ids["a"] and r["source"] == source)
        return next(heard, [])

    lab.address(lab.hosts[0], extra)
    try:
        for source in ("mdns", "beacon"):
            wait_for(lambda: url in endpoints_of_a(source),  # noqa: B023 (called at once)
                     timeout=30, what=f"the new address over {source}")
        assert url in b.peers()[ids["a"]]["endpoints"]
    finally:
        lab.address(lab.hosts[0], extra, add=False)
    wait_for(lambda: url not in endpoints_of_a("beacon"), timeout=30, what="the address to be withdrawn")
    assert "LAN addresses changed" in a.output()
