"""``ark-lattice packets``: publish, list, show and promote knowledge packets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ark_lattice.cli import bundles
from ark_lattice.cli.context import Application, open_node, run
from ark_lattice.cli.output import listing, local_time, stamp

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
    """Sign a packet with this node's key and store it in the ledger (one per file for several).

    When the node runs, the body goes to it over the control socket and the node signs it with the
    key it unlocked at start: no passphrase here, no key derivation per publish.
    """
    from ark_lattice.cli.livenode import node_running
    from ark_lattice.errors import UsageError

    application: Application = ctx.obj
    if len(sources) > 1 or (sources[0] != "-" and Path(sources[0]).is_dir()):
        files = _files(sources)
        if node_running(application):
            _publish_many_through_node(application, files, topic, kind, depends, supersedes, json_)
        else:
            _publish_many(application, files, topic, kind, depends, supersedes, json_)
        return
    source = sources[0]
    if source == "-":
        body = sys.stdin.buffer.read()
    else:
        try:
            body = Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    _check_size(body, source)
    if node_running(application):
        from ark_lattice.cli.livenode import request
        from ark_lattice.errors import NodeNotRunning
        from ark_lattice.runtime.publishing import encode_request

        try:
            result = request(
                application,
                "publish",
                encode_request(topic=topic, kind=kind, body=body, depends=depends, supersedes=supersedes),
            )
        except NodeNotRunning:
            if node_running(application):
                raise  # it runs but did not answer: signing here too could publish twice
            # it stopped just now: sign here instead
        else:
            _print_published(application, result["id"], topic, len(body), "node", json_)
            return

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
    _print_published(application, packet.hex_id, topic, len(body), "local", json_)


def _check_size(body: bytes, source: str | Path) -> None:
    """Refuse an oversize body before it goes anywhere (and before a passphrase is asked)."""
    from ark_lattice.errors import UsageError
    from ark_lattice.packet import MAX_BODY

    if len(body) > MAX_BODY:
        raise UsageError(f"{source} is {len(body):,} bytes, over the packet limit of {MAX_BODY:,}")


def _print_published(
    application: Application, packet_id: str, topic: str, size: int, delivered: str, json_: bool
) -> None:
    if json_:
        application.print_json({"id": packet_id, "topic": topic, "size": size, "delivered": delivered})
    else:
        application.console.print(packet_id)


def _publish_many_through_node(
    application: Application,
    files: list[Path],
    topic: str,
    kind: str,
    depends: list[str] | None,
    supersedes: str | None,
    json_: bool,
) -> None:
    """Each file to the running node, which signs it; one bar over them all on a terminal."""
    from ark_lattice.cli.livenode import request
    from ark_lattice.cli.progress import progress_bar
    from ark_lattice.errors import ArkLatticeError, UsageError
    from ark_lattice.runtime.publishing import encode_request

    published: list[dict[str, Any]] = []
    with progress_bar("publishing", total=len(files), quiet=json_) as bar:
        for path in files:
            bar.update(description=f"publishing {path.name}")
            before = f"({len(published)} of {len(files)} file(s) published before it)"
            try:
                body = path.read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror} {before}") from None
            _check_size(body, path)
            args = encode_request(topic=topic, kind=kind, body=body, depends=depends, supersedes=supersedes)
            try:
                result = request(application, "publish", args)
            except ArkLatticeError as exc:
                exc.args = (f"{exc} {before}",)
                raise
            published.append(
                {"id": result["id"], "topic": topic, "size": len(body), "path": str(path),
                 "delivered": "node"}
            )
            bar.advance()
    _print_many(application, published, json_)


def _print_many(application: Application, published: list[dict[str, Any]], json_: bool) -> None:
    if json_:
        application.print_json(listing("published", published))
        return
    for doc in published:
        application.console.print(f"{doc['id']}  {doc['path']}")


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
                        {"id": item.packet.hex_id, "topic": topic, "size": item.size, "path": str(item.path),
                         "delivered": "local"}
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
    _print_many(application, published, json_)


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
    no_pager: Annotated[
        bool, typer.Option("--no-pager", help="Never page (a pager reads the table only on a terminal).")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """List stored packets, newest first; the table is paged on a terminal ($PAGER, less)."""
    from ark_lattice.cli.paging import StreamedTable, paged, write_listing

    application: Application = ctx.obj

    async def go() -> None:
        async with await open_node(application) as node:
            # Streamed from keyset pages of the store: the first row is written before the
            # second page is read, and memory holds one page whatever the ledger's size.
            rows = node.store.iter_packets(topic=topic, limit=limit)
            if json_:
                with paged(no_pager=True) as out:  # data for machines: never a pager
                    await write_listing(out, "packets", (packet_json(r) async for r in rows))
                return
            with paged(no_pager) as out:
                table = StreamedTable(
                    out, ("id", "topic", "kind", "author", "created", "size", "state"),
                    width=application.console.width,
                )
                async for r in rows:
                    table.add(
                        (
                            r.packet.hex_id[:16],
                            r.packet.header.topic,
                            r.packet.header.kind,
                            r.packet.header.author.short,
                            _hlc_time(r.packet.header.created_at),
                            r.packet.header.body_size,
                            "quarantined" if r.quarantined else "",
                        )
                    )
                table.close(f"{table.count} packet(s)")

    run(go())


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
    application.print_record(packet_json(stored), json_)


@app.command("promote")
def promote(
    ctx: typer.Context,
    packet_id: Annotated[str, typer.Argument(metavar="ID", help="Packet id or unique prefix.")],
    json_: JsonOption = False,
) -> None:
    """Move a quarantined packet (from a sandbox peer) into the shared set."""
    application: Application = ctx.obj

    async def go() -> bytes:
        async with await open_node(application) as node:
            pid = await node.store.resolve_packet(packet_id)
            await node.store.promote(pid)
            return pid

    pid = run(go())
    if json_:
        application.print_json({"id": pid.hex(), "quarantined": False})
        return
    application.console.print(f"promoted {pid.hex()}")


def _hlc_time(stamp: int) -> str:
    from ark_lattice.hlc import unpack

    ms, _ = unpack(stamp)
    return local_time(ms / 1000, offset=False)


def packet_json(stored: Any) -> dict[str, Any]:
    """A stored packet as JSON data: RFC 3339 times, the raw HLC beside ``created_at``."""
    return stamp(stored.to_json(), hlc=["created_at"], ms=["received_at"])


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
        packets = [stamp(dict(p), hlc=["created_at"]) for p in result["packets"]]
        application.print_json(listing("query", packets, more=result["more"], saved=result["saved"]))
        return
    from rich.text import Text

    for p in result["packets"]:
        preview = " ".join(p["body"].split())[:60]  # another node's words, on one line, never markup
        application.console.print(Text(f"{p['id'][:16]}  {p['topic']}  {p['size']} bytes  {preview}"))
    note = " (saved)" if result["saved"] else ""
    application.console.print(f"{len(result['packets'])} packet(s){note}")


# Signed bundles for carrying packets by hand live in their own module (cli/bundles.py).
app.command("export")(bundles.export)
app.command("import")(bundles.import_)
