"""A node under attack keeps serving its honest peers, answers every attack and audits it."""

import asyncio
import json

import pytest

from ark_lattice.hlc import pack
from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest
from ark_lattice.packet import Packet
from ark_lattice.processes import run_cli, wait_for
from ark_lattice.protocol import session as s
from ark_lattice.protocol.events import Event, PeerAuthenticated, PeerReportedError
from ark_lattice.protocol.frames import OfferFrame, PacketsFrame, WirePacket
from ark_lattice.tiers import TrustTier

from conftest import fill, init_federation, packet_ids, set_tier


class RoguePeer:
    """A peer built on the real session core, able to break the rules on purpose."""

    def __init__(self, federation_key: bytes, identity: Identity | None = None) -> None:
        self.identity = identity or Identity.generate()
        now = int(asyncio.get_event_loop().time() * 0) + int(__import__("time").time())
        self.manifest = PeerManifest(self.identity.node_id, "tester", 1, now, now + 3600).sign(self.identity)
        self.federation_key = federation_key
        self.sent: list[bytes] = []
        self.received: list[bytes] = []

    async def connect(self, url: str):
        from websockets.asyncio.client import connect

        self.ws = await connect(url, max_size=None, ping_interval=None)
        self.session = s.Session(
            self.identity, self.federation_key, s.Role.INITIATOR, self.manifest, now=_now()
        )
        await self.flush()
        while self.session.state is not s.State.OPEN:
            await self.step()
        return self

    async def step(self, timeout: float = 10) -> None:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, bytes), "the node sends binary messages only"
        self.received.append(data)
        self.session.receive_data(data, _now())
        for event in self.session.events():
            if isinstance(event, PeerAuthenticated):
                self.session.admit(TrustTier.CORE, _now())
        await self.flush()

    async def flush(self) -> None:
        for data in self.session.data_to_send():
            self.sent.append(data)
            await self.ws.send(data)

    async def send_frame(self, frame) -> None:
        self.session._send(frame, _now())  # bypasses every rule check: that is the point
        await self.flush()

    async def closed_code(self, timeout: float = 10):
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else None


def _now() -> float:
    import time

    return time.time()


def protocol_errors(home):
    events = json.loads(
        run_cli(home, "ledger", "log", "--limit", "500", "--kind", "protocol.error", "--json").stdout
    )["items"]
    codes = []
    for e in events:
        # A stranger's failures are summarised per address and interval (protocol/strangers.py).
        codes += list(e["data"]["codes"]) if e["data"].get("summary") else [e["data"]["code"]]
    return codes


@pytest.fixture
def hub(homes, start_node):
    ids = init_federation(homes, "h", "g")
    h, g = homes("h"), homes("g")
    set_tier(h, ids["g"], "core")
    set_tier(g, ids["h"], "core")
    expected = set(fill(h, 3000, "from/h")) | set(fill(g, 3000, "from/g"))
    node_h = start_node(h)
    start_node(g)  # the honest peer
    return {"h": h, "g": g, "ids": ids, "url": node_h.url, "expected": expected,
            "fed_key": (h / "federation.key").read_bytes(), "node": node_h}


async def _raw(url: str, data: bytes):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, max_size=None, ping_interval=None) as ws:
        try:
            # The node may refuse a big message by its header and stop reading before it is all
            # sent: then the send itself sees the close.
            await ws.send(data)
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


async def _attacks(hub) -> dict:
    url, key = hub["url"], hub["fed_key"]
    results = {}
    results["garbage"] = await _raw(url, b"\x00this is not a handshake")
    results["oversize"] = await _raw(url, b"\x00" * (3 * 1024 * 1024))
    results["text"] = None

    # Replay: record a real session's handshake, then replay msg1 and msg3 to a new responder.
    honest = await RoguePeer(key).connect(url)
    msg1, msg3 = honest.sent[0], honest.sent[1]
    await honest.ws.close()
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, max_size=None, ping_interval=None) as ws:
        await ws.send(msg1)
        await asyncio.wait_for(ws.recv(), 10)  # a fresh msg2 under a new responder ephemeral
        await ws.send(msg3)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as exc:
            results["replay"] = exc.rcvd.reason if exc.rcvd else None

    # Tampered ciphertext inside an established session.
    peer = await RoguePeer(key).connect(url)
    peer.session._send(OfferFrame(()), _now())
    [frame] = peer.session.data_to_send()
    tampered = bytearray(frame)
    tampered[len(tampered) // 2] ^= 0x40
    await peer.ws.send(bytes(tampered))
    results["tampered"] = await peer.closed_code()

    # A peer the hub does not accept from sends packets anyway (it is `unknown` there).
    rogue = await RoguePeer(key).connect(url)
    author = rogue.identity
    for i in range(2):
        p = Packet.create(
            author, topic="rogue", kind="note", body=b"%d" % i, created_at=pack(int(_now() * 1000), i)
        )
        await rogue.send_frame(PacketsFrame((WirePacket(p.header_bytes, p.signature, p.body),), live=True))
    results["rogue_id"] = str(author.node_id)
    results["rogue"] = rogue
    return results


def test_hostile_clients_are_refused_while_an_honest_peer_syncs(hub):
    h, g, url = hub["h"], hub["g"], hub["url"]
    assert run_cli(g, "federation", "add-peer", url).returncode == 0  # the honest sync starts
    results = asyncio.run(_attacks(hub))
    assert results["garbage"] == 4000
    # Refused by its header (1009); the node stops reading a stranger past its read budget, so the
    # close frame can be lost in the reset of the 3 MiB still on its way. The ledger has too_large.
    assert results["oversize"] in (1009, None)
    assert results["replay"] == "handshake_failed"
    assert results["tampered"][1] == "decrypt_failed"
    wait_for(
        lambda: packet_ids(h) == hub["expected"] == packet_ids(g),
        timeout=120,
        what="honest peers to converge",
    )
    assert hub["node"].stop() == 0  # it writes the strangers' summaries still pending
    codes = protocol_errors(h)
    for code in ("handshake_failed", "too_large", "decrypt_failed", "forbidden"):
        assert code in codes, (code, codes)
    assert not any(pid for pid in packet_ids(h) if pid not in hub["expected"])  # nothing of the rogue's
    assert run_cli(h, "ledger", "verify").returncode == 0


def test_a_bad_signature_is_refused_and_repeat_offenders_are_isolated(hub):
    h = hub["h"]

    async def go():
        peer = RoguePeer(hub["fed_key"])
        set_tier(h, str(peer.identity.node_id), "sandbox")  # the hub accepts its packets, quarantined
        await peer.connect(hub["url"])
        stamp = pack(int(_now() * 1000), 0)  # a current time: the default policy refuses stale packets
        good = Packet.create(peer.identity, topic="t", kind="note", body=b"good", created_at=stamp)
        bad = Packet.create(peer.identity, topic="t", kind="note", body=b"bad", created_at=stamp + 1)
        forged = WirePacket(bad.header_bytes, bytes(64), bad.body)
        await peer.send_frame(
            PacketsFrame((forged, WirePacket(good.header_bytes, good.signature, good.body)), live=True)
        )
        events: list[Event] = []
        while not any(isinstance(e, PeerReportedError) for e in events):
            reply = await asyncio.wait_for(peer.ws.recv(), 10)
            assert isinstance(reply, bytes), "the node sends binary messages only"
            peer.session.receive_data(reply, _now())
            events += peer.session.events()
        # Four more offences cross the default threshold of five strikes.
        for _ in range(4):
            await peer.send_frame(PacketsFrame((forged,), live=True))
        code = await peer.closed_code()
        return str(peer.identity.node_id), good.hex_id, events, code

    peer_id, good_id, events, code = asyncio.run(go())
    assert any(isinstance(e, PeerReportedError) and e.code == "bad_signature" for e in events)
    wait_for(lambda: good_id in packet_ids(h), what="the good packet of the frame to be kept")
    peers = {p["id"]: p for p in json.loads(run_cli(h, "peers", "list", "--json").stdout)["items"]}
    assert peers[peer_id]["tier"] == "blocked"
    log = json.loads(run_cli(h, "ledger", "log", "--limit", "50", "--json").stdout)["items"]
    change = next(e for e in log if e["kind"] == "peer.tier_changed" and e["subject"] == peer_id)
    assert change["data"]["new"] == "blocked" and "strikes" in change["data"]["reason"]
    assert sum(1 for e in log if e["kind"] == "peer.strike" and e["subject"] == peer_id) >= 5
    status = json.loads(run_cli(h, "federation", "status", "--json").stdout)
    assert peer_id in {i["peer"] for i in status["isolated"]}
