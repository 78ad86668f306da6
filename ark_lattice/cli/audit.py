"""``ark-lattice audit``: browse every policy decision the node took."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, open_node, run

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def audit(
    ctx: typer.Context,
    peer: Annotated[str | None, typer.Option(help="Only decisions about this peer (id or prefix).")] = None,
    decision: Annotated[str | None, typer.Option(help="allow or deny.")] = None,
    hook: Annotated[str | None, typer.Option(help="Only this hook.")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO time, or an age such as 90s, 15m, 2h, 7d.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Then print new decisions as they are taken, until Ctrl-C (oldest first)."
        ),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Browse the audit trail: every allow and deny, which rules fired and why."""
    from ark_lattice import audit as trail
    from ark_lattice.errors import UsageError

    application: Application = ctx.obj
    if decision not in (None, "allow", "deny"):
        raise UsageError("--decision is allow or deny")
    since_ms = _since(since) if since else None
    if follow:
        _follow(application, peer, decision, hook, since_ms, limit, json_)
        return

    async def go() -> Any:
        async with await open_node(application) as node:
            peer_id = await node.store.resolve_peer(peer) if peer else None
            return await trail.decisions(
                node.store,
                peer=peer_id,
                allowed=None if decision is None else decision == "allow",
                hook=hook,
                since_ms=since_ms,
                limit=limit,
            )

    rows = run(go())
    from ark_lattice.cli.output import listing, local_time, stamp, table

    if json_:
        application.print_json(listing("decisions", [stamp(dict(r), ms=["ts"]) for r in rows]))
        return
    application.console.print(
        table(
            ("time", "hook", "peer", "subject", "decision", "rules", "reason"),
            (
                (local_time(r["ts"] / 1000, offset=False), r["hook"], (r["peer"] or "")[:12] or "-",
                 str(r["subject"])[:16], "allow" if r["allowed"] else "deny", ", ".join(r["rules"]),
                 r["reason"])
                for r in rows
            ),
            title=f"{len(rows)} decision(s)",
        )
    )


def _follow(
    application: Application,
    peer: str | None,
    decision: str | None,
    hook: str | None,
    since_ms: int | None,
    limit: int,
    json_: bool,
) -> None:
    """The newest ``limit`` matching decisions, oldest first, then each new one as it is taken."""
    import json

    from ark_lattice import audit as trail
    from ark_lattice import tail
    from ark_lattice.cli.stream import emit, streaming

    def show(row: dict[str, Any]) -> None:
        from ark_lattice.cli.output import stamp

        emit(json.dumps(stamp(dict(row), ms=["ts"]), sort_keys=True) if json_ else _line(row))

    async def go() -> None:
        async with await open_node(application) as node:
            store = node.store
            which = tail.DecisionFilter(
                peer=await store.resolve_peer(peer) if peer else None,
                allowed=None if decision is None else decision == "allow",
                hook=hook,
                since_ms=since_ms,
            )
            top = await store.event_count()  # what is listed first; later events are followed
            rows = await trail.decisions(
                store, peer=which.peer, allowed=which.allowed, hook=hook, since_ms=since_ms, limit=limit
            )
            for row in reversed([r for r in rows if r["seq"] <= top]):
                show(row)
            async for row in tail.follow_decisions(store, top, which):
                show(row)

    with streaming():
        run(go())


def _line(r: dict[str, Any]) -> str:
    from ark_lattice.cli.output import local_time

    when = local_time(r["ts"] / 1000)
    verdict = "allow" if r.get("allowed") else "deny "
    rules = ",".join(str(x) for x in r.get("rules") or []) or "-"
    return (
        f"{when}  {verdict}  {r.get('hook', '?'):<16} {str(r.get('peer', ''))[:12]:<12}  "
        f"{str(r.get('subject', ''))[:16]:<16}  {rules}  {r.get('reason', '')}"
    )


_AGE = re.compile(r"(\d+)([smhd])")


def _since(text: str) -> int:
    from ark_lattice.errors import UsageError

    if m := _AGE.fullmatch(text.strip()):
        seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return int((time.time() - seconds) * 1000)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is neither an ISO time nor an age like 15m") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
