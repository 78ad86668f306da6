"""``ark-lattice ledger``: read, verify, anchor, back up and compact the tamper-evident ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, open_node, run
from ark_lattice.errors import LedgerCorrupt, NotInitialised

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
def verify(
    ctx: typer.Context,
    against: Annotated[
        str | None,
        typer.Option(
            "--against", metavar="NOTE",
            help="Also check the ledger against this signed checkpoint held elsewhere (ledger anchor --out).",
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Recompute every hash, link, signature and checkpoint and the signed head, and check what
    witnesses cosigned; exit 1 naming the first bad entry (or the missing range of a truncated
    ledger). Read-only: the ledger is never created, migrated or written."""
    from ark_lattice import ledger
    from ark_lattice.cli.progress import ProgressBar, progress_bar
    from ark_lattice.errors import ArkLatticeError, LedgerError, LedgerMissing, Unfinished
    from ark_lattice.identity import NodeId
    from ark_lattice.node import check_ledger
    from ark_lattice.store.store import Store

    application: Application = ctx.obj
    note = _read_note(against) if against is not None else None

    async def go(bar: ProgressBar) -> Any:
        home = application.home
        if not home.is_initialised():
            raise NotInitialised(f"no node in {home.root}; run `ark-lattice init`")
        node_id = NodeId.parse(home.load_config().node_id)
        check_ledger(home)  # gone or zero bytes: the exit code of a missing ledger, as everywhere
        async with await Store.open_readonly(home.ledger_path) as store:
            events = packets = 0
            if bar.shown:  # counting costs a scan: only for a bar someone sees
                try:
                    events, packets = await store.event_count(), await store.packet_count()
                    bar.update(total=events)
                except sqlite3.Error:
                    pass  # verify names what is wrong with the events and packets tables
            extra = [_expected(note, node_id, against)] if note is not None and against else []
            report = await ledger.verify(
                store, node_id, progress=lambda seq: bar.update(completed=seq), against=extra,
                # The packet pass (signatures on every core) is the longer one: its own count.
                packet_progress=lambda n: bar.update(
                    description="verifying packet signatures", total=packets, completed=n
                ),
            )
            bar.update(description="verifying the ledger", total=events or None, completed=report.events)
            return report

    try:
        with progress_bar("verifying the ledger", quiet=json_) as bar:
            report = run(go(bar))
    except ArkLatticeError as exc:
        failure: ArkLatticeError = exc
        if isinstance(exc, LedgerError) and not isinstance(exc, (LedgerCorrupt, LedgerMissing)):
            failure = LedgerCorrupt("the ledger file", str(exc))
        if json_:
            if isinstance(failure, LedgerCorrupt):
                entry, reason = failure.entry, failure.reason
            elif isinstance(failure, LedgerMissing):
                entry, reason = "the ledger file", str(failure)
            elif isinstance(failure, Unfinished):  # nothing found wrong, and nothing known
                entry, reason = None, str(failure)
            else:
                entry, reason = "the node's home", str(failure)
            application.print_json({"ok": False, "entry": entry, "reason": reason})
        raise failure from None  # one line on stderr and the error's exit code (cli/app.py)
    if json_:
        application.print_json(report.to_json())
        return
    application.console.print(
        f"ledger OK: {report.events} events, {report.packets} packets, {report.peers} peers, "
        f"{report.checkpoints} checkpoints, {report.cosignatures} cosignatures"
        + (f", consistent with {against}" if against else "")
        + f"; root {report.root.hex()[:16]} ({report.seconds:.2f} s)"
        + (f"; {report.orphan_bodies} body file(s) no packet names (a write in progress or "
           "interrupted; removed when the ledger is next opened for writing)" if report.orphan_bodies else "")
    )


@app.command("witnesses")
def witnesses(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List the cosignatures core peers made on our checkpoints (C2SP tlog-cosignature)."""
    from ark_lattice import witness
    from ark_lattice.cli.output import listing, local_time, stamp

    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            return await witness.held_cosignatures(node.store)

    rows = run(go())
    docs = [
        {
            "witness": r["witness"], "size": r["size"], "root": r["root"].hex(), "timestamp": r["timestamp"],
            "received_at": r["received_at"] / 1000, "note": r["note"],
        }
        for r in rows
    ]
    if json_:
        times = ("timestamp", "received_at")
        application.print_json(listing("witnesses", [stamp(dict(d), seconds=times) for d in docs]))
        return
    if not docs:
        application.console.print("no cosignatures yet: core peers cosign each checkpoint they can check")
        return
    from rich.table import Table

    table = Table(title=f"{len(docs)} cosignature(s) on our checkpoints")
    for col in ("witness", "size", "root", "cosigned at"):
        table.add_column(col)
    for d in docs:
        table.add_row(d["witness"][:16], str(d["size"]), d["root"][:16], local_time(d["timestamp"]))
    application.console.print(table)


@app.command("anchor")
def anchor(
    ctx: typer.Context,
    out: Annotated[
        str | None,
        typer.Option(
            "--out", metavar="FILE", help="Also write the signed note, with its cosignatures, to FILE."
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Sign a checkpoint (RFC 6962 root, C2SP tlog-checkpoint note) over the ledger so far."""
    from ark_lattice import ledger, witness
    from ark_lattice.checkpoint import MAX_SIGNATURES
    from ark_lattice.cli.livenode import nudge
    from ark_lattice.errors import UsageError

    application: Application = ctx.obj
    target = Path(out).expanduser().absolute() if out is not None else None
    if target is not None and not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a directory")

    async def go() -> Any:
        async with await open_node(application, unlock=True) as node:
            checkpoint, new = await ledger.anchor(node.store, node.identity)
            notes = {size: note for size, _, note in await node.store.checkpoints()}
            lines = [
                r["note"].rsplit("\n", 2)[-2] for r in await witness.held_cosignatures(node.store)
                if r["size"] == checkpoint.size and r["root"] == checkpoint.root_hash
            ]
            # A signed note carries at most MAX_SIGNATURES lines (the log's own is one of them).
            kept = lines[: MAX_SIGNATURES - 1]
            return checkpoint, new, witness.cosigned_note(notes[checkpoint.size], kept)

    checkpoint, new, note = run(go())
    if new:
        nudge(application, "checkpoint_made")  # a running node asks its core peers to cosign it
    if target is not None:
        try:
            target.write_text(note, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror}") from None
    doc = {"size": checkpoint.size, "root": checkpoint.root_hash.hex(), "new": new}
    if target is not None:
        doc["out"] = str(target)
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
    """Copy the ledger with SQLite's online backup API and its body files to PATH-bodies, then
    verify the copy."""
    import shutil

    from ark_lattice import ledger
    from ark_lattice.errors import UsageError
    from ark_lattice.store.bodies import bodies_dir
    from ark_lattice.store.store import Store

    application: Application = ctx.obj
    target = Path(path).expanduser().absolute()
    target_bodies = bodies_dir(target)
    assert target_bodies is not None
    if target.exists():
        raise UsageError(f"{target} already exists; choose a new path")
    if target_bodies.exists():  # large bodies are copied there (store/bodies.py)
        raise UsageError(f"{target_bodies} already exists; choose a new path")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a directory")

    async def go() -> Any:
        async with await open_node(application) as node:
            node_id = node.node_id
            try:
                await node.store.backup_to(target)
            except BaseException:
                target.unlink(missing_ok=True)
                shutil.rmtree(target_bodies, ignore_errors=True)
                raise
        try:
            async with await Store.open_readonly(target) as copy:
                return await ledger.verify(copy, node_id)
        except BaseException:
            target.unlink(missing_ok=True)  # never leave a copy that did not verify
            shutil.rmtree(target_bodies, ignore_errors=True)
            raise

    report = run(go())
    if json_:
        application.print_json({"path": str(target), **report.to_json()})
        return
    files = f", {report.body_files} body files in {target_bodies}" if report.body_files else ""
    application.console.print(f"backup written to {target} and verified ({report.events} events{files})")


@app.command("compact")
def compact(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Give the ledger's free pages back to the disk (SQLite VACUUM), with the node stopped.

    A migration that rebuilds a table, or deleted rows, leave pages SQLite keeps for reuse and the
    file never shrinks. No row changes: the hash chain, the signed head and the body files stay
    as they are. Needs about twice the ledger's used size free beside it, checked first."""
    import logging

    from ark_lattice.cli.livenode import node_running
    from ark_lattice.cli.progress import progress_bar
    from ark_lattice.errors import UsageError
    from ark_lattice.store.compaction import size_text

    application: Application = ctx.obj
    if node_running(application):
        # The node could store nothing while the copy runs (seconds per GiB of used pages, far
        # longer on a slow stick) and its writes give up after 30 s of waiting for the lock; going
        # through the node would stall it the same way. Compacting is for a stopped node.
        raise UsageError(
            f"a node is running in {application.home.root}; stop it first, since compacting holds "
            "the ledger's write lock for as long as it copies the ledger"
        )

    def not_the_hint(record: logging.LogRecord) -> bool:
        # Opening an old ledger migrates it and suggests `ledger compact`: which runs right now.
        return not getattr(record, "compact_hint", False)

    store_log = logging.getLogger("ark_lattice.store")
    store_log.addFilter(not_the_hint)
    try:
        # The bar counts MiB written (the copy, the WAL, the checkpoint: about three times the
        # used pages), where the count is available; else it pulses.
        with progress_bar("compacting the ledger (MiB written)", quiet=json_) as bar:

            def progress(done: int, total: int | None) -> None:
                bar.update(completed=done >> 20, total=None if total is None else max(1, total >> 20))

            async def go() -> Any:
                async with await open_node(application) as node:
                    return await node.store.compact(progress=progress)

            result = run(go())
    finally:
        store_log.removeFilter(not_the_hint)
    if json_:
        application.print_json({"path": str(application.home.ledger_path), **result.to_json()})
        return
    if result.before.free == 0:
        application.console.print(
            f"nothing to give back: the ledger ({size_text(result.bytes_before)}) has no free pages"
        )
        return
    wal = "" if result.wal_truncated else (
        "; another process was reading the ledger, so the files shrink the rest of the way at its "
        "next checkpoint"
    )
    application.console.print(
        f"compacted the ledger: {size_text(result.bytes_before)} -> {size_text(result.bytes_after)}, "
        f"{result.pages_freed:,} pages ({size_text(result.before.size * result.pages_freed)}) given back "
        f"to the disk in {result.seconds:.1f} s{wal}"
    )


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


def _read_note(path: str) -> str:
    from ark_lattice.errors import UsageError

    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > 64 * 1024:
        raise UsageError(f"{path} is not a signed checkpoint note (too large)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a signed checkpoint note (not UTF-8)") from None


def _expected(note: str, node_id: Any, path: str) -> Any:
    from ark_lattice import witness
    from ark_lattice.errors import UsageError, VerificationError

    try:
        return witness.expected_from_note(note, node_id, f"the checkpoint in {path}")
    except VerificationError as exc:
        raise UsageError(f"{path} is not a checkpoint this node signed: {exc}") from None


def _short(value: Any) -> str:
    from ark_lattice.cli.output import text

    if isinstance(value, bytes):
        return value.hex()[:16]
    return text(value)
