"""What the running node's `discovered` answer says of each sighting: member, foreign, unchecked.

In-process, on 127.0.0.1: the LAN carriers are replaced by a fixed snapshot (real multicast needs
the namespace lab), while the foreign caller comes through the node's own coordinator and session.
"""

import asyncio
import shutil
import tempfile
from pathlib import Path

from ark_lattice.discovery import DiscoveryConfig
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.node import LocalNode
from ark_lattice.protocol import handshake
from ark_lattice.protocol.session import Role
from ark_lattice.runtime.control import call
from ark_lattice.runtime.node import NodeRuntime


class Heard:
    """Stands in for discovery/lan.py: what the carriers heard, fixed."""

    def __init__(self, rows):
        self.rows = rows

    def snapshot(self):
        return {"running": True, "mdns": "on", "beacon": "on", "seen": self.rows}

    async def stop(self):
        return None


def sighting(node_id, url):
    return {"node_id": node_id, "name": "x", "endpoints": [url], "source": "beacon", "sender": "s",
            "verified": True, "reason": None, "present": True, "first_seen": 0.0, "last_seen": 0.0}


async def test_a_sighting_from_a_host_that_dialled_us_with_another_key_is_foreign():
    root = Path(tempfile.mkdtemp(prefix="ark-"))
    try:
        node = await LocalNode.init(Home(root / "n"), name="n")
        member = Identity.generate()
        await node.store.add_peer(str(member.node_id))
        await node.store.record_manifest(str(member.node_id), b"m", 1, "member", ["ws://192.0.2.5:7467"])
        quiet = DiscoveryConfig(mdns=False, beacon=False)
        runtime = NodeRuntime(node, bind="127.0.0.1", port=0, discovery=quiet)
        await runtime.start()
        try:
            runtime.discovery = Heard([
                sighting(str(member.node_id), "ws://192.0.2.5:7467"),
                sighting(str(Identity.generate().node_id), "ws://192.0.2.9:7467"),
                sighting(str(Identity.generate().node_id), "ws://192.0.2.10:7467"),
            ])
            core = runtime.federation.core
            assert core is not None
            link, session = core.open_link(Role.RESPONDER, "192.0.2.9:50000", 1.0)
            session.receive_data(handshake.Initiator(Identity.generate(), b"\x07" * 32).start(), 1.0)
            core.session_events(link, session.events(), 1.0)
            doc = await asyncio.to_thread(call, node.home.control_path, "discovered")
            assert [r["federation"] for r in doc["seen"]] == ["member", "foreign", "unchecked"]
            status = await asyncio.to_thread(call, node.home.control_path, "status")
            assert [f["address"] for f in status["foreign"]] == ["192.0.2.9"]
        finally:
            await runtime.stop()
            await node.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
