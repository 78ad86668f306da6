"""Build the fixture ``data/home-0003.tar.gz``: a real home whose ledger has today's layout at
migration 0003 (``packets`` a WITHOUT ROWID table, every body in its row).

Run at commit 8fb63ad (the last commit before migration 0004) to regenerate:

    git worktree add /tmp/old 8fb63ad
    cd /tmp/old && PYTHONPATH=$PWD python /path/to/tests/store/make_old_home.py OUT.tar.gz

The home: ``init`` without a passphrase (CLI); notes published through the CLI, one of them with a
body of 128 KiB (over the 64 KiB line where later layouts keep bodies in files); packets from a
sandbox peer stored in quarantine the way the node stores them (``put_packets(…, quarantined=True)``),
one of them promoted; peers at three tiers; two signed checkpoints (``ledger anchor``). The contents
are listed in ``home/fixture.json`` inside the archive so the migration test knows what must survive.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.node import LocalNode
from ark_lattice.packet import Packet
from ark_lattice.processes import run_cli
from ark_lattice.tiers import TrustTier

LARGE = 128 * 1024


def cli(home: Path, *args: str) -> str:
    result = run_cli(home, *args)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr.decode()}")
    return result.stdout.decode()


async def quarantine(home: Path) -> tuple[str, list[str]]:
    """Store packets of a sandbox peer as the node does: verified, then held in quarantine."""
    stranger = Identity.generate()
    node = await LocalNode.open(Home(home), unlock=True)
    try:
        peer = str(stranger.node_id)
        await node.store.add_peer(peer, tier=TrustTier.SANDBOX)
        base = await node.store.next_timestamp(node.store.now_ms())
        packets = [
            Packet.create(stranger, topic="sandbox", kind="note", body=b"from a sandbox peer %d" % i,
                          created_at=base + i)
            for i in range(4)
        ]
        packets.append(
            Packet.create(stranger, topic="sandbox", kind="note", body=bytes(range(256)) * 320,
                          created_at=base + 10)  # 80 KiB, in quarantine
        )
        await node.store.put_packets(packets, source=peer, quarantined=True)
        await node.store.promote(packets[0].id)
        await node.store.add_peer(str(Identity.generate().node_id), tier=TrustTier.CORE)
        return peer, [p.hex_id for p in packets]
    finally:
        await node.close()


def build(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="ark-old-") as tmp:
        home = Path(tmp) / "home"
        cli(home, "init", "--name", "old")
        published = []
        for i in range(6):
            body = Path(tmp) / f"note{i}.txt"
            body.write_bytes(b"an old note %d\n" % i)
            published.append(json.loads(cli(home, "packets", "publish", "--topic", "notes", "--kind", "note",
                                             str(body), "--json"))["id"])
        cli(home, "ledger", "anchor")
        large = Path(tmp) / "large.bin"
        large.write_bytes((b"a large body of an old ledger\n" * (LARGE // 30 + 1))[:LARGE])
        published.append(json.loads(cli(home, "packets", "publish", "--topic", "files", "--kind", "document",
                                        str(large), "--json"))["id"])
        peer, quarantined = asyncio.run(quarantine(home))
        cli(home, "peers", "add", str(Identity.generate().node_id), "--tier", "external")
        cli(home, "ledger", "anchor")
        cli(home, "ledger", "verify")
        manifest = {
            "node_id": json.loads(cli(home, "identity", "show", "--json"))["node_id"],
            "published": published,
            "large": published[-1],
            "sandbox_peer": peer,
            "quarantined": quarantined[1:],  # the first was promoted
            "promoted": quarantined[0],
            "checkpoints": 2,
        }
        (home / "fixture.json").write_text(json.dumps(manifest, indent=1) + "\n")
        with tarfile.open(out, "w:gz") as tar:
            # The -wal and -shm files are empty or rebuilt by SQLite: the ledger file is the state.
            tar.add(home, arcname="home",
                    filter=lambda info: None if info.name.endswith(("-wal", "-shm")) else info)


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data" / "home-0003.tar.gz")
    subprocess.run(["ls", "-l", sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "data")])
