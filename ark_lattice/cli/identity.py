"""``ark-lattice identity``: who this node is."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated

import typer

from ark_lattice.cli.context import Application

app = typer.Typer(help="Show or export this node's identity.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("show")
def show(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Print the node ID (full and short), name and creation time."""
    from ark_lattice.identity import Identity, NodeId

    application: Application = ctx.obj
    config = application.home.load_config()
    node_id = NodeId.parse(config.node_id)
    doc = {
        "node_id": str(node_id),
        "short_id": node_id.short,
        "grouped_id": node_id.grouped,
        "name": config.name,
        "created_at": config.created_at,
        "sealed": Identity.is_sealed(application.home.key_path),
        "home": str(application.home.root),
    }
    if json_:
        application.print_json(doc)
        return
    created = datetime.fromtimestamp(config.created_at, tz=UTC).isoformat(timespec="seconds")
    c = application.console
    c.print(f"[bold]{config.name}[/]")
    c.print(f"node ID   {node_id.grouped}")
    c.print(f"short     {node_id.short}")
    c.print(f"created   {created}")
    c.print(f"key       {'sealed with a passphrase' if doc['sealed'] else 'not sealed'}")
    c.print(f"home      {application.home.root}")


@app.command("export")
def export(ctx: typer.Context) -> None:
    """Print the public identity as JSON, for a peer's operator to pin (`peers add`)."""
    from ark_lattice.identity import NodeId

    application: Application = ctx.obj
    config = application.home.load_config()
    node_id = NodeId.parse(config.node_id)
    application.print_json(
        {
            "node_id": str(node_id),
            "name": config.name,
            "public_key": base64.b64encode(node_id.key).decode(),
            "port": config.federation.port,
        }
    )
