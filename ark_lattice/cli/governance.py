"""``ark-lattice governance``: the federation's membership, proposals and approvals.

Proposals and approvals are signed packets (``governance/documents.py``); a running node floods
them to its core peers at once, and every node adopts a proposal once k distinct members approve
(``protocol/governance.py``). Reading needs no running node and no key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, open_node, run
from ark_lattice.cli.output import listing, local_time, stamp, text

app = typer.Typer(
    help="Membership, proposals and approvals: federation-wide decisions, k-of-n, with no leader.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


async def _deliver(application: Application, node: Any, packet: Any) -> str:
    """Hand the signed packet to the running node (stored and flooded at once), else store it here;
    what the operator is told of it."""
    from ark_lattice.cli.livenode import request
    from ark_lattice.governance.ledger import deliver

    def running(cmd: str, args: dict[str, Any]) -> Any:
        return request(application, cmd, args)

    live = running if application.home.control_path.exists() else None
    if await deliver(node, packet, live):
        return "flooded to core peers by the running node"
    return "stored; it spreads when the node runs"


@app.command("found")
def found(
    ctx: typer.Context,
    member: Annotated[
        list[str] | None, typer.Option("--member", metavar="ID", help="Another member's node ID (repeat).")
    ] = None,
    threshold: Annotated[
        int | None, typer.Option(help="Approvals that adopt a proposal (default ⌊2n/3⌋+1).")
    ] = None,
) -> None:
    """Sign the federation's first membership (version 1): this node and each --member."""
    from ark_lattice.governance.ledger import found as found_

    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application, unlock=True) as node:
            packet = await found_(node, member or [], threshold)
            return packet, await _deliver(application, node, packet)

    packet, where = run(go())
    application.console.print(f"membership version 1 signed ({packet.hex_id[:16]}); {where}")


@app.command("members")
def members(ctx: typer.Context, json_: JsonOption = False) -> None:
    """The membership in force: version, threshold k and the member node IDs."""
    from ark_lattice.governance.ledger import load

    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            return (await load(node.store)).to_json()

    doc = run(go())
    if json_:
        application.print_json(doc)
        return
    m = doc["membership"]
    if m is None:
        application.console.print("no membership yet: the founder creates it with `governance found`")
        return
    application.console.print(
        f"membership version {m['version']}: {m['threshold']} of {len(m['members'])} approvals adopt"
    )
    for node_id in m["members"]:
        application.console.print(f"  {node_id}")
    for kind, halt in doc["halted"].items():
        application.console.print(f"[red]halted[/] {kind}: {halt['reason']}")


@app.command("propose")
def propose(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="Policy TOML, or JSON for tier/members/round.")],
    kind: Annotated[str, typer.Option("--kind", help="policy, tier, members or round.")],
    expires: Annotated[str, typer.Option("--expires", help="How long approvals count: 30s, 10m, 2h, 7d.")],
    not_before: Annotated[
        str | None, typer.Option("--not-before", help="Approvals count only after this.")
    ] = None,
    threshold: Annotated[int | None, typer.Option(help="members: the new threshold k.")] = None,
    json_: JsonOption = False,
) -> None:
    """Sign a proposal against the membership and version in force, and flood it."""
    from ark_lattice.errors import UsageError
    from ark_lattice.governance.ledger import load, parse_duration, payload_from_file
    from ark_lattice.governance.ledger import propose as propose_

    application: Application = ctx.obj
    try:
        text = Path(file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    expires_in = parse_duration(expires)
    after = parse_duration(not_before) if not_before else 0
    if after >= expires_in:
        raise UsageError("the proposal would expire before approvals may count")

    async def go() -> Any:
        async with await open_node(application, unlock=True) as node:
            state = await load(node.store)
            payload = payload_from_file(kind, text, state.membership, threshold)
            packet = await propose_(node, kind, payload, expires_in=expires_in, not_before_in=after)
            return packet, await _deliver(application, node, packet)

    packet, where = run(go())
    if json_:
        application.print_json({"id": packet.hex_id, "kind": kind})
        return
    application.console.print(f"proposal {packet.hex_id} ({kind}) signed; {where}")


@app.command("approve")
def approve(ctx: typer.Context, proposal: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Sign this node's approval of a pending proposal, and flood it."""
    from ark_lattice.governance.ledger import approve as approve_

    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application, unlock=True) as node:
            packet = await approve_(node, proposal)
            return packet, await _deliver(application, node, packet)

    packet, where = run(go())
    application.console.print(f"approval {packet.hex_id[:16]} signed; {where}")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Every proposal held: kind, versions, status and distinct approvals counted."""
    from ark_lattice.governance.ledger import load

    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            state = await load(node.store)
            return [s.to_json() for s in state.proposals()], state.membership

    rows, membership = run(go())
    if json_:
        times = ("created", "not_before", "expires")
        application.print_json(listing("proposals", [stamp(dict(r), seconds=times) for r in rows]))
        return
    if not rows:
        application.console.print("no proposals")
        return
    for r in rows:
        application.console.print(
            f"{r['id'][:16]}  {r['kind']:<8} v{r['base']}→v{r['new']}  {r['status']:<8} "
            f"{r['approvals']}/{r['k']} approvals  expires {local_time(r['expires'])}"
        )


@app.command("show")
def show(
    ctx: typer.Context, proposal: Annotated[str, typer.Argument(metavar="ID")], json_: JsonOption = False
) -> None:
    """One proposal, its payload and its approvals (with --json: the signed packets, in hex)."""
    from ark_lattice.governance.ledger import describe, find_proposal, load

    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            state = await load(node.store)
            return await describe(node.store, state, await find_proposal(node.store, state, proposal))

    doc = run(go())
    if json_:
        application.print_json(doc)
        return
    for key in ("id", "kind", "author", "base", "new", "status", "k"):
        application.console.print(f"{key:<12}{text(doc[key])}")
    for key in ("not_before", "expires"):
        application.console.print(f"{key:<12}{local_time(doc[key])}")
    application.console.print(f"{'approvals':<12}{doc['approvals']} distinct eligible keys")
    for a in doc["approval_packets"]:
        mark = "counted" if a["counted"] else "not counted"
        application.console.print(f"  {a['approver']}  {mark}")
    payload = doc["payload"]
    typer.echo(payload if isinstance(payload, str) else str(payload))


@app.command("verify")
def verify(ctx: typer.Context, proposal: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Re-check an adoption from the ledger alone: every signature strictly, distinct keys, k."""
    from ark_lattice.errors import UsageError
    from ark_lattice.governance.ledger import find_proposal, load

    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            state = await load(node.store)  # a fresh replay: every packet re-verified
            return await find_proposal(node.store, state, proposal), state

    held, state = run(go())
    if held.status != "adopted":
        raise UsageError(f"proposal {held.proposal.id.hex()[:16]} is not adopted here ({held.status})")
    adopted = state.adopted[held.proposal.id]
    application.console.print(
        f"OK: {held.proposal.kind} proposal {held.proposal.id.hex()[:16]} adopted by "
        f"{len(adopted.approvals)} distinct members of membership v{adopted.membership.version} "
        f"(k = {adopted.membership.threshold})"
    )
