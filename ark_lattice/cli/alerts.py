"""``ark-lattice alerts``: raise an alert, list the alerts the ledger holds, show one.

An alert is a packet of kind ``alert`` (``ark_lattice/alerts.py``). ``raise`` hands it to the
running node, which floods it to every core peer at once; with no node running it is signed and
stored here, and spreads at the next sync. Reading needs no running node and no key.

Alerts come from other nodes: what they say is printed as plain text, never as console markup.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ark_lattice.alertlog import AlertView, follow_alerts, local_time, stored_alerts
from ark_lattice.cli.context import Application, open_node, run

if TYPE_CHECKING:
    from ark_lattice.store.store import Store

app = typer.Typer(
    help="Raise alerts (flooded to every core peer) and browse those the ledger holds.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("raise")
def raise_(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(metavar="MESSAGE", help="What happened, in a sentence.")],
    severity: Annotated[str, typer.Option(help="info, warning or critical.")],
    about: Annotated[
        str | None, typer.Option(metavar="PEER", help="The peer accused: id or unique prefix.")
    ] = None,
    topic: Annotated[str, typer.Option(help="Topic of the alert packet.")] = "alerts",
    evidence: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Evidence against the accused, e.g. two conflicting manifests it signed.",
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Sign an alert and flood it to every core peer (or store it for the next sync)."""
    from ark_lattice.alerts import ALERT_KIND, MAX_EVIDENCE, NONCE_SIZE, Alert
    from ark_lattice.cli.livenode import request
    from ark_lattice.errors import ArkLatticeError, Malformed, NodeNotRunning, UsageError
    from ark_lattice.packet import check_topic

    application: Application = ctx.obj
    _check_severity(severity)
    try:
        check_topic(topic)
    except Malformed as exc:
        raise UsageError(str(exc)) from None
    proof: bytes | None = None
    if evidence is not None:
        try:
            proof = Path(evidence).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the evidence file {evidence}: {exc.strerror}") from None
        if not 0 < len(proof) <= MAX_EVIDENCE:
            raise UsageError(
                f"the evidence file {evidence} holds {len(proof)} bytes; evidence is 1 to "
                f"{MAX_EVIDENCE} bytes"
            )

    async def accused() -> str | None:
        async with await open_node(application) as node:
            if about is None:
                return None
            peer = await resolve_peer(node.store, about)
            if peer == node.config.node_id:
                raise UsageError("--about names this node itself; an alert accuses another peer")
            return peer

    accused_id = run(accused())
    alert = Alert(severity, message, accused_id, os.urandom(NONCE_SIZE), proof)
    try:
        alert.check()
    except Malformed as exc:
        raise UsageError(str(exc)) from None

    packet_id: str | None = None
    delivered = "node"
    from ark_lattice.cli.livenode import node_running

    if node_running(application):
        args = {
            "severity": severity,
            "message": message,
            "about": accused_id,
            "topic": topic,
            "evidence": proof.hex() if proof is not None else None,
        }
        try:
            answer = request(application, "raise_alert", args)
        except NodeNotRunning:
            pass  # a socket left behind by a node that is gone: store the alert here instead
        else:
            if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
                raise ArkLatticeError("the node took the alert but did not answer with its id")
            packet_id = answer["id"]
    if packet_id is None:

        async def publish() -> str:
            async with await open_node(application, unlock=True) as node:
                packet = await node.publish(topic=topic, kind=ALERT_KIND, body=alert.body())
                return packet.hex_id

        packet_id = run(publish())
        delivered = "local"
    if json_:
        application.print_json(
            {"id": packet_id, "severity": severity, "about": accused_id, "topic": topic,
             "delivered": delivered}
        )
        return
    application.console.print(packet_id, markup=False)
    if delivered == "local":
        typer.echo("the node is not running: the alert is stored here and spreads at the next sync",
                   err=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    severity: Annotated[str | None, typer.Option(help="Only this severity.")] = None,
    about: Annotated[
        str | None, typer.Option(metavar="PEER", help="Only alerts accusing this peer.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f",
            help="Then print new alerts as they are stored, until Ctrl-C (oldest first).",
        ),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """List the alerts the ledger holds, newest first (quarantined ones marked)."""
    application: Application = ctx.obj
    if severity is not None:
        _check_severity(severity, option="--severity")
    if follow:
        _follow(application, severity, about, limit, json_)
        return

    async def go() -> list[AlertView]:
        async with await open_node(application) as node:
            accused = await resolve_peer(node.store, about) if about else None
            return await stored_alerts(node.store, severity=severity, about=accused, limit=limit)

    views = run(go())
    if json_:
        from ark_lattice.cli.output import listing

        application.print_json(listing("alerts", [alert_json(v) for v in views]))
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(views)} alert(s)", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("time", "id", "severity", "author", "about"):
        table.add_column(col, no_wrap=True)
    table.add_column("message", ratio=1, overflow="fold")
    for v in views:
        message = f"[{v.state()}] {v.short_message()}" if v.state() else v.short_message()
        table.add_row(
            v.table_time(short=True), v.hex_id[:10], Text(v.severity), v.author[:8],
            Text(v.about[:8] if v.about else "-"), Text(message),
        )
    application.console.print(table)


def _follow(
    application: Application, severity: str | None, about: str | None, limit: int, json_: bool
) -> None:
    """The newest ``limit`` matching alerts, oldest first, then each new one as it is stored."""
    from ark_lattice.cli.stream import emit, streaming

    def show(view: AlertView) -> None:
        emit(json.dumps(alert_json(view), sort_keys=True) if json_ else view.line())

    async def go() -> None:
        async with await open_node(application) as node:
            store = node.store
            accused = await resolve_peer(store, about) if about else None
            top = await store.event_count()  # alerts stored after this are followed
            views = await stored_alerts(store, severity=severity, about=accused, limit=limit)
            shown = {v.hex_id for v in views}
            for view in reversed(views):
                show(view)
            async for view in follow_alerts(store, top, severity=severity, about=accused):
                if view.hex_id not in shown:  # stored between the count and the listing
                    show(view)

    with streaming():
        run(go())


@app.command("show")
def show(
    ctx: typer.Context,
    alert_id: Annotated[str, typer.Argument(metavar="ID", help="Alert (packet) id or unique prefix.")],
    json_: JsonOption = False,
) -> None:
    """Show one alert in full: who raised it, when, about whom, and whether its evidence proves it."""
    from ark_lattice.errors import Malformed, UsageError

    application: Application = ctx.obj

    async def go() -> tuple[AlertView, dict[str, str]]:
        async with await open_node(application) as node:
            stored = await node.store.get_packet(await node.store.resolve_packet(alert_id))
            view = AlertView.of(stored)
            if stored.packet.header.kind != "alert":
                raise UsageError(
                    f"packet {view.hex_id[:16]} is a {stored.packet.header.kind}, not an alert"
                )
            if view.error is not None:
                raise Malformed(f"packet {view.hex_id[:16]} is not a valid alert: {view.error}")
            names: dict[str, str] = {node.config.node_id: "this node"}
            for who in (view.author, view.about, view.source):
                if who and who not in names and (peer := await node.store.find_peer(who)):
                    names[who] = peer.name
            return view, names

    view, names = run(go())
    doc = alert_json(view, evidence=True)
    if json_:
        application.print_json(doc)
        return

    def named(who: str | None) -> str:
        if not who:
            return "-"
        return f"{who} ({names[who]})" if names.get(who) else who

    evidence = "none"
    if view.alert is not None and view.alert.evidence is not None:
        verdict = "self-proving" if doc["self_proving"] else "not self-proving (an accusation)"
        evidence = f"{len(view.alert.evidence)} bytes, {verdict}"
    lines = [
        ("id", view.hex_id),
        ("time", view.local_time("T")),
        ("severity", view.severity),
        ("author", named(view.author)),
        ("about", named(view.about)),
        ("topic", view.stored.packet.header.topic),
        ("evidence", evidence),
        ("source", "this node" if view.source == "local" else named(view.source)),
        ("received", local_time(view.stored.received_at, "T")),
        ("quarantined", "yes" if view.stored.quarantined else "no"),
        ("message", view.message.replace("\n", "\n" + " " * 13)),
    ]
    for key, value in lines:
        application.console.print(f"{key:<13}{value}", markup=False, highlight=False)


# --- reading alerts from the ledger ----------------------------------------------------------------


async def resolve_peer(store: Store, text: str) -> str:
    """The full id of the known peer ``text`` is a unique prefix of; a full node id is taken as
    it is even for a peer this node does not know."""
    from ark_lattice.errors import Malformed, NotFound
    from ark_lattice.identity import NodeId

    try:
        return await store.resolve_peer(text)
    except NotFound:
        try:
            return str(NodeId.parse(text))
        except (Malformed, ValueError):
            raise NotFound(f"no peer matches {text!r}") from None


def _check_severity(severity: str, option: str = "--severity") -> None:
    from ark_lattice.alerts import SEVERITIES
    from ark_lattice.errors import UsageError

    if severity not in SEVERITIES:
        raise UsageError(f"{option} is info, warning or critical, not {severity!r}")


def alert_json(view: AlertView, *, evidence: bool = False) -> dict[str, Any]:
    """An alert as JSON data: ``time`` and ``created_at`` in RFC 3339 (the raw HLC beside it)."""
    from ark_lattice.cli.output import stamp

    doc = stamp(view.to_json(evidence=evidence), hlc=["created_at"], ms=["received_at"])
    doc["time"] = doc["created_at"]
    return doc
