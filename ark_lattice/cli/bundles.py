"""``ark-lattice packets export | import``: packets carried on a signed bundle file (bundle.py).

Export signs with the running node's key when it runs (a sealed key stays unlocked there), else with
the key in the home. Import verifies the exporter's signature and every packet's, then stores what is
new: as shared when the exporter is this node or one of its core peers, in quarantine otherwise
(`packets promote` releases them), and not at all from a blocked exporter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, open_node, run

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def export(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="FILE", help="The bundle to write (must not exist).")],
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Only these packets (ids or prefixes).")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Only this topic.")] = None,
    json_: JsonOption = False,
) -> None:
    """Write packets to a signed bundle file, to carry to a node on no shared network."""
    from ark_lattice import bundle
    from ark_lattice.cli.livenode import node_running, request
    from ark_lattice.encoding import Purpose
    from ark_lattice.errors import UsageError
    from ark_lattice.identity import NodeId
    from ark_lattice.privatefile import write_private

    application: Application = ctx.obj
    target = Path(path)
    if target.exists():
        raise UsageError(f"{target} already exists; choose a new file name")
    through_node = node_running(application)

    async def go() -> tuple[bytes, int, Any]:
        async with await open_node(application, unlock=not through_node) as node:
            if ids:
                chosen = [await node.store.get_packet(await node.store.resolve_packet(i)) for i in ids]
            else:
                chosen = await node.store.list_packets(topic=topic)
            chosen = [
                s for s in chosen if not s.quarantined and topic in (None, s.packet.header.topic)
            ]
            chosen.sort(key=lambda s: (s.packet.header.created_at, s.packet.id))
            packets = [s.packet for s in chosen]
            payload = bundle.payload_of(packets, NodeId.parse(node.config.node_id))
            if through_node:
                def sign(digest: bytes) -> bytes:
                    answer = request(application, "sign_bundle", {"digest": digest.hex()})
                    return bytes.fromhex(answer["signature"])
            else:
                identity = node.identity

                def sign(digest: bytes) -> bytes:
                    return identity.sign(Purpose.BUNDLE, digest)
            return bundle.seal(payload, sign), len(packets), node.config.node_id

    data, count, exporter = run(go())
    if count == 0:
        raise UsageError("no packets to export (quarantined packets are never exported)")
    try:
        write_private(target, data)
    except FileExistsError:
        raise UsageError(f"{target} already exists; choose a new file name") from None
    doc = {"path": str(target), "packets": count, "bytes": len(data), "exporter": exporter,
           "signed_by": "node" if through_node else "local"}
    if json_:
        application.print_json(doc)
    else:
        application.console.print(f"exported {count} packet(s) to {target} ({len(data):,} bytes)")


def import_(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="FILE", help="A bundle written by `packets export`.")],
    json_: JsonOption = False,
) -> None:
    """Verify a bundle and store the packets this node does not hold yet."""
    from ark_lattice import bundle
    from ark_lattice.errors import BadSignature, Malformed, UsageError
    from ark_lattice.tiers import TrustTier

    application: Application = ctx.obj
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        carried = bundle.open_bundle(data)
    except (Malformed, BadSignature) as exc:
        raise type(exc)(f"{path} is refused, nothing imported: {exc}") from None

    async def go() -> tuple[int, bool]:
        async with await open_node(application) as node:
            exporter = str(carried.exporter)
            peer = await node.store.find_peer(exporter)
            if peer is not None and peer.tier is TrustTier.BLOCKED:
                raise UsageError(f"the exporter {exporter[:16]} is blocked; nothing imported")
            trusted = exporter == node.config.node_id or (peer is not None and peer.tier is TrustTier.CORE)
            stored = await node.store.put_packets(carried.packets, source=exporter, quarantined=not trusted)
            return len(stored), not trusted

    new, quarantined = run(go())
    from ark_lattice.cli.livenode import nudge

    if new:
        nudge(application, "packets_changed")
    doc = {"path": path, "exporter": str(carried.exporter), "packets": len(carried.packets), "new": new,
           "held": len(carried.packets) - new, "quarantined": quarantined}
    if json_:
        application.print_json(doc)
        return
    where = ""
    if quarantined and new:
        where = " in quarantine (the exporter is not a core peer; `packets promote ID`)"
    application.console.print(
        f"imported {new} new packet(s){where}, {doc['held']} already held, "
        f"from {str(carried.exporter)[:16]}"
    )
