"""``ark-lattice federation``: run the node and look at it while it runs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, run
from ark_lattice.discovery import DEFAULT_BEACON_PORT, DEFAULT_GROUP
from ark_lattice.errors import ExitCode
from ark_lattice.logfile import LogFormat

app = typer.Typer(help="Run this node and watch its federation.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("start")
def start(
    ctx: typer.Context,
    bind: Annotated[str | None, typer.Option(help="Address to listen on (default: all).")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port to listen on (0 picks a free one).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Node name, on first run only.")] = None,
    anchor_interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between signed ledger checkpoints.")
    ] = 300.0,
    sync_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between reconciliations with each peer.")
    ] = 60.0,
    mdns: Annotated[bool, typer.Option("--mdns/--no-mdns", help="Announce and browse with mDNS.")] = True,
    multicast: Annotated[
        bool, typer.Option("--multicast/--no-multicast", help="Send and hear the signed UDP beacon.")
    ] = True,
    beacon_group: Annotated[str, typer.Option(help="Multicast group of the beacon.")] = DEFAULT_GROUP,
    beacon_port: Annotated[
        int, typer.Option(min=1, max=65535, help="UDP port of the beacon.")
    ] = DEFAULT_BEACON_PORT,
    idle_timeout: Annotated[
        float, typer.Option(min=3.0, help="Seconds of a peer's silence before its session is stale.")
    ] = 45.0,
    metrics: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9467; a bare "
            "PORT binds loopback). Needs the metrics extra.",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="Log this level and above: debug, info, warning, error.")
    ] = "info",
    log_format: Annotated[
        LogFormat, typer.Option(case_sensitive=False, help="Log lines as text or as JSON objects.")
    ] = LogFormat.TEXT,
) -> None:
    """Run the node in the foreground until SIGINT/SIGTERM; creates it on first run.

    It logs to stderr and to logs/node.log in the home, rotated at 5 MiB with five old files kept
    (read it with `federation logs`).
    """
    from ark_lattice import logfile
    from ark_lattice.discovery import DiscoveryConfig
    from ark_lattice.node import LocalNode
    from ark_lattice.runtime.node import NodeRuntime

    application: Application = ctx.obj
    home = application.home
    level = logfile.parse_level(log_level)
    discovery = DiscoveryConfig(mdns=mdns, beacon=multicast, group=beacon_group, beacon_port=beacon_port)
    metrics_at = _metrics_address(metrics) if metrics is not None else None  # before the node starts

    async def go() -> None:
        if home.is_initialised():
            _check_writable(home)
            node = await LocalNode.open(home, unlock=True, passphrase=application.unlock_passphrase())
        else:
            node = await LocalNode.init(home, name=name)
        try:
            logfile.setup(home.log_dir, level=level, fmt=log_format)
            fed = node.config.federation
            runtime = NodeRuntime(
                node,
                bind=bind or fed.bind,
                port=fed.port if port is None else port,
                anchor_interval=anchor_interval,
                sync_interval=sync_interval,
                discovery=discovery,
                idle_timeout=idle_timeout,
                metrics=metrics_at,
            )
            await runtime.run()
        finally:
            await node.close()

    run(go())


def _check_writable(home: Any) -> None:
    from ark_lattice.errors import HomeUnusable

    if not home.writable():
        raise HomeUnusable(f"the home {home.root} is read-only; a node cannot run from it")


@app.command("status")
def status(
    ctx: typer.Context,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh in place until Ctrl-C (plain lines in a pipe).")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")] = 2.0,
    json_: JsonOption = False,
) -> None:
    """Show the running node: ID, uptime, listen address, sessions, dial targets, denials, ledger."""
    import time

    from ark_lattice.cli.livenode import request
    from ark_lattice.cli.watch import render
    from ark_lattice.cli.watch import watch as watch_node
    from ark_lattice.errors import NodeNotRunning

    application: Application = ctx.obj
    application.home.load_config()  # a clear error for a home with no node at all
    try:
        doc: dict[str, Any] = request(application, "status")
    except NodeNotRunning:
        if json_:
            application.print_json({"running": False, "home": str(application.home.root)})
        else:
            application.console.print(f"the node in {application.home.root} is not running")
        raise typer.Exit(ExitCode.NODE_NOT_RUNNING) from None
    if watch:
        watch_node(application, interval, json_=json_)
        return
    doc["running"] = True
    if json_:
        from ark_lattice.cli.output import status_json

        application.print_json(status_json(doc))
        return
    application.console.print(render(doc, now=time.time()))


@app.command("discover")
def discover(
    ctx: typer.Context,
    timeout: Annotated[
        float, typer.Option(min=0.2, max=300.0, help="Seconds to listen when no node runs.")
    ] = 3.0,
    beacon_group: Annotated[str, typer.Option(help="Multicast group of the beacon.")] = DEFAULT_GROUP,
    beacon_port: Annotated[
        int, typer.Option(min=1, max=65535, help="UDP port of the beacon.")
    ] = DEFAULT_BEACON_PORT,
    json_: JsonOption = False,
) -> None:
    """List the nodes announcing themselves on the LAN, and announcements that were dropped.

    Asks the running node what it has heard; with no node running, listens for mDNS and beacons
    for --timeout seconds without announcing anything.
    """
    from ark_lattice.cli.livenode import request
    from ark_lattice.discovery import DiscoveryConfig
    from ark_lattice.errors import NodeNotRunning

    application: Application = ctx.obj
    config = DiscoveryConfig(group=beacon_group, beacon_port=beacon_port)
    try:
        doc: dict[str, Any] = request(application, "discovered")
    except NodeNotRunning:
        doc = run(_browse(application, config, timeout))
    if json_:
        application.print_json(doc)
        return
    _print_discovered(application, doc)


async def _browse(application: Application, config: Any, timeout: float) -> dict[str, Any]:
    from ark_lattice.discovery.lan import browse
    from ark_lattice.errors import ArkLatticeError
    from ark_lattice.identity import NodeId

    local = None
    try:
        local = NodeId.parse(application.home.load_config().node_id)  # to leave ourselves out
    except ArkLatticeError:
        pass
    return await browse(config, timeout=timeout, local=local)


def _print_discovered(application: Application, doc: dict[str, Any]) -> None:
    from rich.table import Table

    c = application.console
    where = "the running node" if doc.get("running") else "a one-shot browse"
    c.print(f"from {where}: mDNS {doc.get('mdns')}, beacon {doc.get('beacon')} ({doc.get('group', '')})")
    rows = doc.get("seen", [])
    if not rows:
        c.print("nothing heard")
        return
    table = Table()
    for col in ("node", "name", "endpoints", "source", "verified", "last seen"):
        table.add_column(col)
    now = doc.get("now") or 0
    for row in rows:
        verified = "yes" if row["verified"] else f"no: {row['reason']}"
        if row["verified"] and row.get("present") is False:
            verified += " (withdrawn)"
        table.add_row(
            (row["node_id"] or "?")[:16],
            row["name"] or "",
            " ".join(row["endpoints"]),
            f"{row['source']} from {row['sender']}",
            verified,
            f"{max(0.0, now - row['last_seen']):.0f} s ago",
        )
    c.print(table)


@app.command("add-peer")
def add_peer(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="ws://HOST:PORT of the peer.")],
) -> None:
    """Remember a peer's address and connect now if the node runs."""
    from ark_lattice.cli.context import open_node
    from ark_lattice.cli.livenode import request
    from ark_lattice.errors import NodeNotRunning
    from ark_lattice.federation_url import check_peer_url

    application: Application = ctx.obj
    url = check_peer_url(url)
    try:
        request(application, "add_peer", {"url": url})
        application.console.print(f"connecting to {url}")
        return
    except NodeNotRunning:
        pass

    async def go() -> None:
        async with await open_node(application) as node:
            await node.store.add_endpoint(url, source="operator")

    run(go())
    application.console.print(f"remembered {url}; the node connects to it when it starts")


@app.command("auto-sync")
def auto_sync(
    ctx: typer.Context,
    start: Annotated[
        bool | None, typer.Option("--start/--stop", help="Turn periodic reconciliation on or off.")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(min=1.0, help="Seconds between reconciliations.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Turn periodic reconciliation with connected peers on or off (on a running node)."""
    from ark_lattice.cli.livenode import request
    from ark_lattice.errors import UsageError

    application: Application = ctx.obj
    if start is None and interval is None:
        raise UsageError("say --start or --stop (and optionally --interval S)")
    status = request(application, "status")
    enabled = status["auto_sync"] if start is None else start
    result = request(application, "auto_sync", {"enabled": enabled, "interval": interval})
    if json_:
        application.print_json(result)
    else:
        state = "on" if result["auto_sync"] else "off"
        application.console.print(f"auto-sync {state}, every {result['interval']:g} s")


@app.command("sync")
def sync(
    ctx: typer.Context,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the catch-up is done (a progress bar on a terminal).")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait at most, with --wait.")] = 600.0,
    json_: JsonOption = False,
) -> None:
    """Reconcile now with every peer this node connected to."""
    import time

    from ark_lattice.cli.livenode import request
    from ark_lattice.cli.progress import progress_bar
    from ark_lattice.errors import UsageError
    from ark_lattice.status import catch_up

    application: Application = ctx.obj
    first = request(application, "status")
    result = request(application, "sync_now")
    if not wait:
        if json_:
            application.print_json({"started": result["started"]})
        else:
            application.console.print(f"started {result['started']} reconciliation(s)")
        return
    deadline = time.monotonic() + timeout
    with progress_bar("catching up", quiet=json_) as bar:
        while True:
            state = catch_up(first, request(application, "status"), since=first["now"])
            bar.update(completed=state.received, total=state.received + state.pending)
            if state.done:
                break
            if time.monotonic() > deadline:
                raise UsageError(
                    f"the sync did not finish within {timeout:g} s ({state.pending} packets pending)"
                )
            time.sleep(0.2)  # a poll interval: the condition is checked again each time
    if json_:
        application.print_json({"started": result["started"], "received": state.received})
    else:
        application.console.print(
            f"synced: {result['started']} reconciliation(s), {state.received} packet(s) received"
        )


def _metrics_address(text: str) -> tuple[str, int]:
    from ark_lattice.runtime.metrics import parse_address, require_prometheus

    address = parse_address(text)
    require_prometheus("--metrics")
    return address


@app.command("metrics")
def metrics_command(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Print the running node's metrics once: the set `start --metrics` serves, without a scraper.

    Prometheus text when prometheus-client is installed (the metrics extra), else one
    `name{labels} value` line per sample; --json prints the snapshot.
    """
    import sys

    from ark_lattice.cli.livenode import request
    from ark_lattice.runtime.metrics import families_from_json, plain_text

    application: Application = ctx.obj
    doc: dict[str, Any] = request(application, "metrics")
    if json_:
        application.print_json(doc)
        return
    families = families_from_json(doc["metrics"])
    try:
        from ark_lattice.runtime.exposition import prometheus_text
    except ImportError:
        sys.stdout.write(plain_text(families))
        return
    sys.stdout.write(prometheus_text(families).decode())


@app.command("logs")
def logs(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    level: Annotated[
        str | None, typer.Option(help="Only this level and above: debug, info, warning, error.")
    ] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Show this many lines first.")] = 50,
    json_: Annotated[
        bool, typer.Option("--json", help="Print JSON lines (time, level, logger, message).")
    ] = False,
) -> None:
    """Show the node's log: logs/node.log in the home (rotated at 5 MiB, five old files kept).

    Reads text and JSON lines alike (`federation start --log-format`); times are UTC.
    """
    import json
    import logging

    from ark_lattice import logfile
    from ark_lattice.cli.stream import emit, streaming
    from ark_lattice.errors import UsageError

    application: Application = ctx.obj
    application.home.load_config()  # a clear error for a home with no node at all
    minimum = logfile.parse_level(level) if level else logging.NOTSET
    log_dir = application.home.log_dir
    follower = logfile.LogFollower(log_dir / logfile.LOG_NAME)
    try:
        first = logfile.last_entries(log_dir, level=minimum, count=lines, current=follower.read())
        if not follow and not logfile.log_files(log_dir):
            raise UsageError(f"no log in {log_dir} yet; the node writes it once started")

        def show(entry: logfile.LogEntry) -> None:
            emit(json.dumps(entry.to_json(), ensure_ascii=False) if json_ else entry.to_text())

        with streaming():
            for entry in first:
                show(entry)
            if follow:
                for entry in logfile.follow(follower, level=minimum):
                    show(entry)
    finally:
        follower.close()
