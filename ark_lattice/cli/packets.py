"""``ark-lattice packets``: publish, list, show and promote knowledge packets."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, open_node, run

app = typer.Typer(help="Publish and browse knowledge packets.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("publish")
def publish(
    ctx: typer.Context,
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE|DIR|-...",
            help="Body file, or - for stdin. Several files, or a directory (every file under it, "
            "hidden ones skipped), give one packet per file, in sorted order.",
        ),
    ],
    topic: Annotated[str, typer.Option(help="Topic, e.g. notes/field or public/alerts.")],
    kind: Annotated[str, typer.Option(help="Packet kind.")] = "note",
    depends: Annotated[
        list[str] | None, typer.Option("--depends", help="Id (or prefix) this packet builds on.")
    ] = None,
    supersedes: Annotated[str | None, typer.Option(help="Id of the version this replaces.")] = None,
    json_: JsonOption = False,
) -> None:
    """Sign a packet with this node's key and store it in the ledger (one per file for several)."""
    from ark_lattice.errors import UsageError

    application: Application = ctx.obj
    if len(sources) > 1 or (sources[0] != "-" and Path(sources[0]).is_dir()):
        _publish_many(application, _files(sources), topic, kind, depends, supersedes, json_)
        return
    source = sources[0]
    if source == "-":
        body = sys.stdin.buffer.read()
    else:
        try:
            body = Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None

    async def go() -> Any:
        async with await open_node(application, unlock=True) as node:
            deps = [await node.store.resolve_packet(d) for d in depends or []]
            sup = await node.store.resolve_packet(supersedes) if supersedes else None
            return await node.publish(
                topic=topic, kind=kind, body=body, depends=deps, supersedes=sup
            )

    packet = run(go())
    from ark_lattice.cli.livenode import nudge

    nudge(application, "packets_changed")
    if json_:
        application.print_json({"id": packet.hex_id, "topic": topic, "size": len(body)})
    else:
        application.console.print(packet.hex_id)


def _publish_many(
    application: Application,
    files: list[Path],
    topic: str,
    kind: str,
    depends: list[str] | None,
    supersedes: str | None,
    json_: bool,
) -> None:
    """One packet per file, all with the same options, under one bar on a terminal.

    Stored in batches (publishing.py): the ledger's write lock is held for one batch at a time,
    so a running node's own writes never wait long for a big publish.
    """
    from ark_lattice.cli.progress import progress_bar
    from ark_lattice.publishing import Published, publish_files

    published: list[dict[str, Any]] = []

    async def go() -> None:
        async with await open_node(application, unlock=True) as node:
            deps = [await node.store.resolve_packet(d) for d in depends or []]
            sup = await node.store.resolve_packet(supersedes) if supersedes else None
            # Opened first: a passphrase prompt must not share the terminal with a live bar.
            with progress_bar("publishing", total=len(files), quiet=json_) as bar:

                def stored(item: Published) -> None:
                    published.append(
                        {"id": item.packet.hex_id, "topic": topic, "size": item.size, "path": str(item.path)}
                    )
                    bar.advance()

                await publish_files(
                    node, files, topic=topic, kind=kind, depends=deps, supersedes=sup,
                    on_reading=lambda path: bar.update(description=f"publishing {path.name}"),
                    on_published=stored,
                )

    try:
        run(go())
    finally:
        if published:  # also those stored before a failure: they are in the ledger
            from ark_lattice.cli.livenode import nudge

            nudge(application, "packets_changed")
    if json_:
        application.print_json(published)
        return
    for doc in published:
        application.console.print(f"{doc['id']}  {doc['path']}")


def _files(sources: list[str]) -> list[Path]:
    """The files named and the files under the directories named, sorted, each once."""
    from ark_lattice.errors import UsageError

    if "-" in sources:
        raise UsageError("- (stdin) is one packet on its own; it cannot be given with files")
    found: dict[Path, Path] = {}  # resolved -> as the operator named it
    for source in sources:
        path = Path(source)
        if path.is_dir():
            candidates = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            try:
                path.stat()
            except OSError as exc:
                raise UsageError(f"cannot read {source}: {exc.strerror}") from None
            if not path.is_file():
                raise UsageError(f"cannot read {source}: not a regular file")
            candidates = [path]
        for candidate in candidates:
            found.setdefault(candidate.resolve(), candidate)
    if not found:
        raise UsageError(f"no files to publish in {', '.join(sources)}")
    return sorted(found.values())


@app.command("list")
def list_(
    ctx: typer.Context,
    topic: Annotated[str | None, typer.Option(help="Only this topic.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many, newest first.")] = None,
    json_: JsonOption = False,
) -> None:
    """List stored packets, newest first."""
    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            return await node.store.list_packets(topic=topic, limit=limit)

    rows = run(go())
    if json_:
        application.print_json([r.to_json() for r in rows])
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} packet(s)")
    for col in ("id", "topic", "kind", "author", "created", "size", "state"):
        table.add_column(col)
    for r in rows:
        h = r.packet.header
        table.add_row(
            r.packet.hex_id[:16],
            h.topic,
            h.kind,
            h.author.short,
            _hlc_time(h.created_at),
            str(h.body_size),
            "quarantined" if r.quarantined else "",
        )
    application.console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    packet_id: Annotated[str, typer.Argument(metavar="ID", help="Packet id or unique prefix.")],
    body: Annotated[bool, typer.Option("--body", help="Write the raw body to stdout.")] = False,
    json_: JsonOption = False,
) -> None:
    """Show one packet's header, or its raw body with --body."""
    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            return await node.store.get_packet(await node.store.resolve_packet(packet_id))

    stored = run(go())
    if body:
        sys.stdout.buffer.write(stored.packet.body)
        sys.stdout.flush()
        return
    doc = stored.to_json()
    application.print_record(doc, json_)


@app.command("promote")
def promote(
    ctx: typer.Context,
    packet_id: Annotated[str, typer.Argument(metavar="ID", help="Packet id or unique prefix.")],
) -> None:
    """Move a quarantined packet (from a sandbox peer) into the shared set."""
    application: Application = ctx.obj

    async def go() -> bytes:
        async with await open_node(application) as node:
            pid = await node.store.resolve_packet(packet_id)
            await node.store.promote(pid)
            return pid

    pid = run(go())
    application.console.print(f"promoted {pid.hex()}")


def _hlc_time(stamp: int) -> str:
    from ark_lattice.hlc import unpack

    ms, _ = unpack(stamp)
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("query")
def query(
    ctx: typer.Context,
    peer: Annotated[str, typer.Option(help="Peer id or prefix (an external or core peer).")],
    topic: Annotated[str, typer.Option(help="Topic to ask for (public/… for external peers).")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many packets.")] = 100,
    save: Annotated[bool, typer.Option("--save", help="Store the answers in the ledger.")] = False,
    json_: JsonOption = False,
) -> None:
    """Ask a connected peer a read-only query; answers are shown, and stored only with --save."""
    from ark_lattice.cli.livenode import request

    application: Application = ctx.obj
    result = request(application, "query", {"peer": peer, "topic": topic, "limit": limit, "save": save})
    if json_:
        application.print_json(result)
        return
    for p in result["packets"]:
        application.console.print(f"{p['id'][:16]}  {p['topic']}  {p['size']} bytes  {p['body'][:60]!r}")
    note = " (saved)" if result["saved"] else ""
    application.console.print(f"{len(result['packets'])} packet(s){note}")
