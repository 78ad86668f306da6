"""``ark-lattice ledger``: read, verify, anchor and back up the tamper-evident ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, open_node, run

app = typer.Typer(help="Inspect and prove the integrity of the ledger.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("log")
def log(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Show this many, newest first.")] = 20,
    kind: Annotated[str | None, typer.Option(help="Only events of this kind.")] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Then print new events as they are appended, until Ctrl-C (oldest first)."
        ),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Show the newest ledger events."""
    application: Application = ctx.obj
    if follow:
        _follow(application, limit, kind, json_)
        return

    async def go() -> Any:
        async with await open_node(application) as node:
            return await node.store.events(limit=limit, kind=kind)

    events = run(go())
    from ark_lattice.cli.output import listing, local_time, table

    if json_:
        application.print_json(listing("events", [event_json(e) for e in events]))
        return
    rows = (
        (e.seq, local_time(e.ts / 1000, offset=False), e.kind, e.subject[:16],
         ", ".join(f"{k}={_short(v)}" for k, v in e.fields.items()))
        for e in events
    )
    application.console.print(
        table(("seq", "time", "kind", "subject", "data"), rows, title=f"newest {len(events)} event(s)")
    )


def event_json(event: Any) -> dict[str, Any]:
    """A ledger event as JSON data: ``ts`` in RFC 3339."""
    from ark_lattice.cli.output import stamp

    return stamp(event.to_json(), ms=["ts"])


@app.command("verify")
def verify(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Recompute every hash, link, signature and checkpoint; exit non-zero naming the first bad entry."""
    from ark_lattice import ledger
    from ark_lattice.cli.progress import ProgressBar, progress_bar

    application: Application = ctx.obj

    async def go(bar: ProgressBar) -> Any:
        async with await open_node(application) as node:
            if bar.shown:  # counting costs a scan: only for a bar someone sees
                bar.update(total=await node.store.event_count())
            report = await ledger.verify(
                node.store, node.node_id, progress=lambda seq: bar.update(completed=seq)
            )
            bar.update(completed=report.events)  # verify reports every 5000 events, not the last
            return report

    with progress_bar("verifying the ledger", quiet=json_) as bar:
        report = run(go(bar))
    if json_:
        application.print_json(report.to_json())
        return
    application.console.print(
        f"ledger OK: {report.events} events, {report.packets} packets, {report.peers} peers, "
        f"{report.checkpoints} checkpoints; root {report.root.hex()[:16]} ({report.seconds:.2f} s)"
    )


@app.command("anchor")
def anchor(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Sign a checkpoint (RFC 6962 root, C2SP tlog-checkpoint note) over the ledger so far."""
    from ark_lattice import ledger

    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application, unlock=True) as node:
            return await ledger.anchor(node.store, node.identity)

    checkpoint, new = run(go())
    doc = {"size": checkpoint.size, "root": checkpoint.root_hash.hex(), "new": new}
    if json_:
        application.print_json(doc)
        return
    state = "new checkpoint" if new else "unchanged since the last checkpoint"
    application.console.print(f"{state}: {checkpoint.size} events, root {checkpoint.root_hash.hex()}")


@app.command("backup")
def backup(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="Where to write the copy (must not exist).")],
    json_: JsonOption = False,
) -> None:
    """Copy the ledger with SQLite's online backup API, then verify the copy."""
    from ark_lattice import ledger
    from ark_lattice.errors import UsageError
    from ark_lattice.store.store import Store

    application: Application = ctx.obj
    target = Path(path).expanduser().absolute()
    if target.exists():
        raise UsageError(f"{target} already exists; choose a new path")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a directory")

    async def go() -> Any:
        async with await open_node(application) as node:
            await node.store.backup_to(target)
            node_id = node.node_id
        try:
            async with await Store.open(target) as copy:
                return await ledger.verify(copy, node_id)
        except BaseException:
            target.unlink(missing_ok=True)  # never leave a copy that did not verify
            raise

    report = run(go())
    if json_:
        application.print_json({"path": str(target), **report.to_json()})
        return
    application.console.print(f"backup written to {target} and verified ({report.events} events)")


def _follow(application: Application, limit: int, kind: str | None, json_: bool) -> None:
    """The newest ``limit`` events, oldest first, then each new one as it is appended."""
    import json

    from ark_lattice import tail
    from ark_lattice.cli.stream import emit, streaming
    from ark_lattice.store.events import Event

    def show(e: Event) -> None:
        if json_:
            emit(json.dumps(event_json(e), sort_keys=True))
            return
        from ark_lattice.cli.output import local_time

        when = local_time(e.ts / 1000)
        data = ", ".join(f"{k}={_short(v)}" for k, v in e.fields.items())
        emit(f"{e.seq:>6}  {when}  {e.kind:<18} {e.subject[:16]:<16}  {data}")

    async def go() -> None:
        async with await open_node(application) as node:
            top = await node.store.event_count()  # what is listed first; later events are followed
            newest = await node.store.events(limit=limit, kind=kind)
            for event in reversed([e for e in newest if e.seq <= top]):
                show(event)
            async for event in tail.follow(node.store, top, kind=kind):
                show(event)

    with streaming():
        run(go())


def _short(value: Any) -> str:
    from ark_lattice.cli.output import text

    if isinstance(value, bytes):
        return value.hex()[:16]
    return text(value)
