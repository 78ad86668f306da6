"""``ark-lattice federation``: run the node and look at it while it runs."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from typing import Annotated, Any, Optional

import typer

from ark_lattice.cli.context import Application, run

app = typer.Typer(help="Run this node and watch its federation.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("start")
def start(
    ctx: typer.Context,
    bind: Annotated[Optional[str], typer.Option(help="Address to listen on (default: all).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on (0 picks a free one).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Node name, on first run only.")] = None,
    anchor_interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between signed ledger checkpoints.")
    ] = 300.0,
) -> None:
    """Run the node in the foreground until SIGINT/SIGTERM; creates it on first run."""
    from ark_lattice.node import LocalNode
    from ark_lattice.runtime.node import NodeRuntime

    application: Application = ctx.obj
    home = application.home

    async def go() -> None:
        if home.is_initialised():
            node = await LocalNode.open(home, unlock=True, passphrase=application.unlock_passphrase())
        else:
            node = await LocalNode.init(home, name=name)
        try:
            _setup_logging(home.log_dir)
            fed = node.config.federation
            runtime = NodeRuntime(
                node,
                bind=bind or fed.bind,
                port=fed.port if port is None else port,
                anchor_interval=anchor_interval,
            )
            await runtime.run()
        finally:
            await node.close()

    run(go())


@app.command("status")
def status(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Show the running node: ID, uptime, listen address, counts and connections."""
    from ark_lattice.errors import NodeNotRunning
    from ark_lattice.cli.livenode import request

    application: Application = ctx.obj
    application.home.load_config()  # a clear error for a home with no node at all
    try:
        doc: dict[str, Any] = request(application, "status")
    except NodeNotRunning:
        if json_:
            application.print_json({"running": False, "home": str(application.home.root)})
        else:
            application.console.print(f"the node in {application.home.root} is not running")
        raise typer.Exit(3)
    doc["running"] = True
    if json_:
        application.print_json(doc)
        return
    c = application.console
    c.print(f"[bold]{doc['name']}[/] {doc['node_id']}")
    c.print(f"listening on {doc['listen']}, up {doc['uptime_s']:.0f} s")
    c.print(
        f"{doc['packets']} packets ({doc['quarantined']} quarantined), "
        f"{doc['peers']} peers, {doc['events']} ledger events"
    )
    if doc["connections"]:
        from rich.table import Table

        table = Table(title="connections")
        for col in ("peer", "tier", "state", "in", "out", "last sync"):
            table.add_column(col)
        for conn in doc["connections"]:
            table.add_row(
                conn["peer"][:16],
                conn["tier"],
                conn["state"],
                str(conn["packets_in"]),
                str(conn["packets_out"]),
                str(conn.get("last_sync") or "-"),
            )
        c.print(table)


def _setup_logging(log_dir: Any) -> None:
    """Log to the console and to a rotating file in the home (systemd captures the console)."""
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    rotating = logging.handlers.RotatingFileHandler(
        log_dir / "node.log", maxBytes=5 * 1024 * 1024, backupCount=5
    )
    rotating.setFormatter(fmt)
    root = logging.getLogger("ark_lattice")
    root.handlers[:] = [console, rotating]
    root.setLevel(logging.INFO)
    root.propagate = False
