"""``ark-lattice peers``: the peers this node knows and the tier each one has."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, open_node, run

app = typer.Typer(help="List peers and set their trust tiers.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("list")
def list_(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List known peers with their tiers."""
    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            return await node.store.list_peers()

    peers = run(go())
    from ark_lattice.cli.output import listing, table

    if json_:
        application.print_json(listing("peers", [peer_json(p) for p in peers]))
        return
    application.console.print(
        table(
            ("id", "name", "tier", "endpoints", "strikes"),
            ((p.id[:16], p.name, p.tier.value, " ".join(p.endpoints), p.strikes) for p in peers),
            title=f"{len(peers)} peer(s)",
        )
    )


def peer_json(peer: Any) -> dict[str, Any]:
    from ark_lattice.cli.output import stamp

    return stamp(peer.to_json(), ms=["first_seen", "last_seen"])


@app.command("show")
def show(
    ctx: typer.Context,
    peer_id: Annotated[str, typer.Argument(metavar="ID", help="Node id or unique prefix.")],
    json_: JsonOption = False,
) -> None:
    """Show one peer."""
    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            return await node.store.get_peer(await node.store.resolve_peer(peer_id))

    peer = run(go())
    doc = peer_json(peer)
    from ark_lattice.cli.livenode import peer_session

    doc["session"] = peer_session(application, peer.id)
    application.print_record(doc, json_)


@app.command("add")
def add(
    ctx: typer.Context,
    node_id: Annotated[str, typer.Argument(metavar="NODE_ID", help="The peer's full node ID.")],
    tier: Annotated[str, typer.Option(help="Trust tier to give it.")] = "unknown",
    endpoint: Annotated[
        list[str] | None, typer.Option("--endpoint", help="ws://HOST:PORT where it listens.")
    ] = None,
    name: Annotated[str, typer.Option(help="A name to remember it by.")] = "",
) -> None:
    """Pin a peer by its node ID before it is ever seen (out-of-band trust)."""
    from ark_lattice.errors import Malformed, UsageError
    from ark_lattice.federation_url import check_peer_url
    from ark_lattice.identity import NodeId
    from ark_lattice.tiers import TrustTier

    application: Application = ctx.obj
    try:
        nid = str(NodeId.parse(node_id))
    except Malformed as exc:
        raise UsageError(str(exc)) from None
    level = TrustTier.parse(tier)
    urls = [check_peer_url(u) for u in endpoint or ()]  # exactly what `federation add-peer` accepts

    async def go() -> bool:
        async with await open_node(application) as node:
            if nid == node.config.node_id:
                raise UsageError("that is this node's own ID")
            added = await node.store.add_peer(nid, endpoints=urls, name=name)
            for url in urls:
                await node.store.add_endpoint(url, source="operator", peer_id=nid)
            await node.change_tier(nid, level)
            return added

    added = run(go())
    application.console.print(f"{'added' if added else 'updated'} peer {nid[:16]} as {level.value}")


@app.command("trust-tier")
def trust_tier(
    ctx: typer.Context,
    peer_id: Annotated[str, typer.Argument(metavar="ID", help="Node id or unique prefix.")],
    tier: Annotated[str, typer.Argument(metavar="TIER", help="core|sandbox|external|unknown|blocked")],
    json_: JsonOption = False,
) -> None:
    """Set a peer's trust tier (recorded in the ledger)."""
    from ark_lattice.tiers import TrustTier

    application: Application = ctx.obj
    level = TrustTier.parse(tier)

    async def go() -> tuple[str, Any]:
        async with await open_node(application) as node:
            pid = await node.store.resolve_peer(peer_id)
            return pid, await node.change_tier(pid, level)

    pid, old = run(go())
    from ark_lattice.cli.livenode import nudge

    nudge(application, "peers_changed")
    if json_:
        application.print_json({"id": pid, "old_tier": old.value, "tier": level.value})
        return
    application.console.print(f"peer {pid[:16]}: {old.value} -> {level.value}")


@app.command("remove")
def remove(
    ctx: typer.Context,
    peer_id: Annotated[str, typer.Argument(metavar="ID", help="Node id or unique prefix.")],
    json_: JsonOption = False,
) -> None:
    """Forget a peer (its packets stay; the removal is recorded in the ledger)."""
    application: Application = ctx.obj

    async def go() -> str:
        async with await open_node(application) as node:
            pid = await node.store.resolve_peer(peer_id)
            await node.store.remove_peer(pid)
            return pid

    pid = run(go())
    from ark_lattice.cli.livenode import nudge

    nudge(application, "peers_changed")
    if json_:
        application.print_json({"id": pid, "removed": True})
        return
    application.console.print(f"removed peer {pid[:16]}")


@app.command("lift")
def lift(
    ctx: typer.Context,
    peer_id: Annotated[str, typer.Argument(metavar="ID", help="Node id or unique prefix.")],
    json_: JsonOption = False,
) -> None:
    """End an alert's quarantine of a peer now, on the running node (recorded in the ledger)."""
    from ark_lattice.cli.livenode import request

    application: Application = ctx.obj
    result = request(application, "lift_quarantine", {"peer": peer_id})
    if json_:
        application.print_json(result)
    else:
        application.console.print(f"quarantine of peer {result['peer'][:16]} lifted")


# -- first contact --------------------------------------------------------------------------------


@app.command("pending")
def pending(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Peers that made first contact (passed the handshake) and wait for an answer: accept or deny."""
    from ark_lattice.cli.output import listing
    from ark_lattice.timestamps import rfc3339

    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            return await node.store.pending_peers()

    peers = run(go())
    items = [
        {
            "id": p.id, "name": p.name, "endpoints": list(p.endpoints),
            "first_seen": rfc3339(p.first_seen / 1000),
            "last_seen": rfc3339(p.last_seen / 1000) if p.last_seen is not None else None,
        }
        for p in peers
    ]
    if json_:
        application.print_json(listing("pending", items))
        return
    if not peers:
        application.console.print("no peer waits for an answer")
        return
    from datetime import datetime

    from rich.table import Table

    answer = "`peers accept ID --tier T` or `peers deny ID`"
    table = Table(title=f"{len(peers)} peer(s) wait for an answer: {answer}")
    table.add_column("id", no_wrap=True)
    for col in ("name", "address", "first seen"):
        table.add_column(col)
    for p in peers:
        first = datetime.fromtimestamp(p.first_seen / 1000).astimezone().isoformat(timespec="seconds")
        table.add_row(p.id[:16], p.name, " ".join(p.endpoints) or "-", first)
    application.console.print(table)


def _answer(application: Application, peer_id: str, tier: Any, actor: str) -> tuple[str, Any]:
    async def go() -> tuple[str, Any]:
        async with await open_node(application) as node:
            pid = await node.store.resolve_peer(peer_id)
            return pid, await node.change_tier(pid, tier, actor=actor)

    result = run(go())
    from ark_lattice.cli.livenode import nudge

    nudge(application, "peers_changed")
    return result


@app.command("accept")
def accept(
    ctx: typer.Context,
    peer_id: Annotated[str, typer.Argument(metavar="ID", help="Node id or unique prefix.")],
    tier: Annotated[str, typer.Option(help="core|sandbox|external (sandbox: its packets are quarantined).")]
    = "sandbox",
    json_: JsonOption = False,
) -> None:
    """Answer a first contact: give the peer a tier (recorded in the ledger)."""
    from ark_lattice.errors import UsageError
    from ark_lattice.tiers import TrustTier

    application: Application = ctx.obj
    level = TrustTier.parse(tier)
    if level in (TrustTier.UNKNOWN, TrustTier.BLOCKED):
        raise UsageError(
            f"accept gives core, sandbox or external; to refuse the peer, `peers deny {peer_id}`"
        )
    pid, old = _answer(application, peer_id, level, "operator")
    if json_:
        application.print_json({"schema": "ark-lattice.peer-answer/1", "id": pid, "old": old.value,
                                "tier": level.value})
        return
    application.console.print(f"accepted peer {pid[:16]} as {level.value}")


@app.command("deny")
def deny(
    ctx: typer.Context,
    peer_id: Annotated[str, typer.Argument(metavar="ID", help="Node id or unique prefix.")],
    json_: JsonOption = False,
) -> None:
    """Answer a first contact with no: the peer is blocked (recorded in the ledger)."""
    from ark_lattice.tiers import TrustTier

    application: Application = ctx.obj
    pid, old = _answer(application, peer_id, TrustTier.BLOCKED, "operator")
    if json_:
        application.print_json({"schema": "ark-lattice.peer-answer/1", "id": pid, "old": old.value,
                                "tier": TrustTier.BLOCKED.value})
        return
    application.console.print(f"denied peer {pid[:16]}: blocked, its sessions are closed")
