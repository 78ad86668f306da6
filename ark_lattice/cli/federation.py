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
        doc["seen"] = run(_members_only(application, doc.get("seen", [])))
    if json_:
        application.print_json(doc)
        return
    _print_discovered(application, doc)


async def _members_only(application: Application, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A one-shot browse knows no dials: only the peers we have had a session with are marked."""
    from ark_lattice.cli.context import open_node
    from ark_lattice.errors import ArkLatticeError
    from ark_lattice.membership import classify_sightings

    members: set[str] = set()
    try:
        async with await open_node(application) as node:
            members = {p.id for p in await node.store.list_peers() if p.last_seen is not None}
    except ArkLatticeError:
        pass  # no node here: every sighting is unchecked
    return classify_sightings(rows, members=members, foreign_urls=set(), foreign_hosts=set())


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
    for col in ("node", "name", "endpoints", "source", "verified", "federation", "last seen"):
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
            # foreign: it holds another federation key; it needs an invite, not a dial
            str(row.get("federation") or "unchecked"),
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


# -- joining --------------------------------------------------------------------------------------


def _parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``2d`` (or bare seconds) in seconds; one sentence if not."""
    from ark_lattice.errors import UsageError

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in units else "s"
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise UsageError(f"{text!r} is not a duration like 30m, 1h or 2d") from None
    if not 0 < value <= 30 * 86400:
        raise UsageError(f"{text!r}: an invite expires after more than 0 s and at most 30 days")
    return value


def _local_time(ts: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


@app.command("invite")
def invite(
    ctx: typer.Context,
    expires: Annotated[str, typer.Option(help="How long the invite is good for: 30m, 1h, 2d.")] = "1h",
    uses: Annotated[int, typer.Option(min=1, max=1000, help="How many nodes may join with it.")] = 1,
    tier: Annotated[
        str, typer.Option(help="The tier a node that joins with it gets: core, sandbox, external, unknown.")
    ] = "core",
    endpoint: Annotated[
        list[str] | None,
        typer.Option("--endpoint", help="ws://HOST:PORT where the newcomer reaches this node (default: "
                     "the running node's listen addresses)."),
    ] = None,
    qr: Annotated[
        bool | None, typer.Option("--qr/--no-qr", help="Print a QR code too (default: on a terminal).")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Print an invite for a newcomer: a short string (and a QR code) for `federation join`.

    The invite holds a one-off secret, this node's ID and addresses and an expiry — not the
    federation key, which the newcomer gets over an authenticated, encrypted join session. It is
    good for --uses joins until it expires; the node must run to answer the join.
    """
    import sys

    from ark_lattice.cli.livenode import request
    from ark_lattice.errors import NodeNotRunning
    from ark_lattice.federation_url import check_peer_url
    from ark_lattice.tiers import TrustTier

    application: Application = ctx.obj
    application.home.load_config()  # a clear error for a home with no node at all
    seconds = _parse_duration(expires)
    level = TrustTier.parse(tier)
    urls = [check_peer_url(u) for u in endpoint or ()]
    args = {"expires_in": seconds, "uses": uses, "tier": level.value, "endpoints": urls}
    running = True
    try:
        result = request(application, "invite", args)
    except NodeNotRunning:
        running = False
        result = run(_invite_offline(application, args))
    if json_:
        application.print_json({
            "schema": "ark-lattice.invite/1", "invite": result["invite"], "id": result["id"],
            "expires_at": _rfc3339(result["expires_at"]), "uses": uses, "tier": level.value,
            "endpoints": result["endpoints"], "node_running": running,
        })
        return
    c = application.console
    c.print(f"invite {result['id'][:8]}: good for {uses} join(s) until {_local_time(result['expires_at'])}; "
            f"a node that joins gets the tier {level.value}")
    c.print(f"it dials {', '.join(result['endpoints'])}")
    if not running:
        c.print("the node is not running: start it (`federation start`) so it can answer the join")
    c.print("on the new node, run:  ark-lattice federation join INVITE")
    sys.stdout.flush()
    print(result["invite"])  # on a line of its own, unwrapped: a pipe or a copy takes it whole
    if qr if qr is not None else sys.stdout.isatty():
        import segno

        sys.stdout.flush()
        segno.make(result["invite"], error="l").terminal(compact=True)


def _rfc3339(ts: float) -> str | None:
    from ark_lattice.timestamps import rfc3339

    return rfc3339(ts)


async def _invite_offline(application: Application, args: dict[str, Any]) -> dict[str, Any]:
    from ark_lattice.cli.context import open_node
    from ark_lattice.runtime.joining import advertised_endpoints, issue_invite, load_book
    from ark_lattice.tiers import TrustTier

    async with await open_node(application) as node:
        fed = node.config.federation
        endpoints = args["endpoints"] or advertised_endpoints(fed.bind, fed.port)
        book = load_book(node.home)
        invite = await issue_invite(
            node, book, endpoints, expires_in=args["expires_in"], uses=args["uses"],
            tier=TrustTier(args["tier"]),
        )
    return {"invite": invite.to_text(), "id": invite.hex_id, "expires_at": invite.expires_at,
            "endpoints": list(invite.endpoints)}


@app.command("join")
def join(
    ctx: typer.Context,
    invite_text: Annotated[
        str, typer.Argument(metavar="INVITE", help="The invite `federation invite` printed.")
    ],
    tier: Annotated[str, typer.Option(help="The tier to give the inviter.")] = "core",
    json_: JsonOption = False,
) -> None:
    """Join the inviter's federation: get its key over an authenticated session, then connect.

    The node's own federation key is replaced (the old one is kept as federation.key.before-join-*);
    the inviter is recorded as a peer at --tier, and the introduction is in both ledgers.
    """
    from ark_lattice.errors import NodeNotRunning
    from ark_lattice.protocol.invites import Invite
    from ark_lattice.tiers import TrustTier

    application: Application = ctx.obj
    application.home.load_config()
    parsed = Invite.parse(invite_text)  # a damaged invite says so before anything else
    level = TrustTier.parse(tier)
    running = True
    from ark_lattice.runtime.control import call
    from ark_lattice.runtime.joining import JOIN_TIMEOUT

    # Each endpoint of the invite may take a connect timeout and the exchange's steps.
    patience = 30.0 + len(parsed.endpoints) * (10.0 + 2 * JOIN_TIMEOUT)
    try:
        result = call(application.home.control_path, "join", {"invite": invite_text, "tier": level.value},
                      timeout=patience)
    except NodeNotRunning:
        running = False
        result = run(_join_offline(application, parsed, level))
    if json_:
        application.print_json({"schema": "ark-lattice.join/1", **result, "node_running": running})
        return
    c = application.console
    c.print(f"joined the federation of {result['name']} ({result['inviter'][:16]}), "
            f"recorded as a {level.value} peer; it gave this node the tier {result['given_tier']}")
    if result["left_behind"]:
        c.print(f"this node left its old federation: {len(result['left_behind'])} peer(s) there hold the "
                "old key and cannot connect any more (it is kept as federation.key.before-join-*)")
    if running:
        c.print(f"connecting to {', '.join(result['endpoints'])}")
    else:
        c.print("start the node (`federation start`) and it connects to the inviter")


async def _join_offline(application: Application, invite: Any, tier: Any) -> dict[str, Any]:
    from ark_lattice.cli.context import open_node
    from ark_lattice.runtime.joining import apply_welcome
    from ark_lattice.runtime.joining import join as join_federation

    async with await open_node(application, unlock=True) as node:
        welcome = await join_federation(node.identity, invite)
        result: dict[str, Any] = await apply_welcome(node, invite, welcome, tier=tier)
    return result


invites_app = typer.Typer(
    help="The invites this node made: list them, or revoke one before it is used.",
    invoke_without_command=True,
)
app.add_typer(invites_app, name="invites")


@invites_app.callback()
def invites(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List the invites this node made: expiry, uses left, tier, who joined with each."""
    if ctx.invoked_subcommand is not None:
        return
    import time

    from ark_lattice.cli.livenode import request
    from ark_lattice.errors import NodeNotRunning
    from ark_lattice.runtime.joining import load_book

    application: Application = ctx.obj
    application.home.load_config()
    try:
        items: list[dict[str, Any]] = request(application, "invites")
    except NodeNotRunning:
        items = [i.public_json(time.time()) for i in load_book(application.home)]
    if json_:
        from ark_lattice.cli.output import listing

        application.print_json(listing("invites", items))
        return
    if not items:
        application.console.print("this node has made no invite (`federation invite`)")
        return
    from datetime import datetime

    from rich.table import Table

    def local(text: str) -> str:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone().isoformat(timespec="seconds")

    table = Table(title=f"{len(items)} invite(s)")
    table.add_column("id", no_wrap=True)
    for col in ("state", "expires", "uses left", "tier", "joined"):
        table.add_column(col)
    for item in items:
        joined = " ".join(j[:12] for j in item["joined"]) or "-"
        table.add_row(item["id"][:8], item["state"], local(item["expires_at"]),
                      f"{item['uses_left']} of {item['uses']}", item["tier"], joined)
    application.console.print(table)


@invites_app.command("revoke")
def invites_revoke(
    ctx: typer.Context,
    invite_id: Annotated[str, typer.Argument(metavar="ID", help="The invite's id or a unique prefix.")],
) -> None:
    """Withdraw an invite: nobody can join with it from now on (recorded in the ledger)."""
    from ark_lattice.cli.livenode import request
    from ark_lattice.errors import NodeNotRunning

    application: Application = ctx.obj
    application.home.load_config()
    try:
        revoked = request(application, "revoke_invite", {"id": invite_id})
    except NodeNotRunning:
        revoked = run(_revoke_offline(application, invite_id))
    application.console.print(f"revoked invite {revoked[:8]}")


async def _revoke_offline(application: Application, invite_id: str) -> str:
    from ark_lattice.cli.context import open_node
    from ark_lattice.runtime.joining import load_book, revoke_invite

    async with await open_node(application) as node:
        return await revoke_invite(node, load_book(node.home), invite_id)


# -- dial targets ---------------------------------------------------------------------------------

endpoints_app = typer.Typer(
    help="The addresses this node dials: list them, or remove one.", invoke_without_command=True
)
app.add_typer(endpoints_app, name="endpoints")


@endpoints_app.callback()
def endpoints(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List every address the node dials or remembers: source, last result, next attempt."""
    if ctx.invoked_subcommand is not None:
        return
    from ark_lattice.cli.livenode import request
    from ark_lattice.cli.output import listing
    from ark_lattice.errors import NodeNotRunning
    from ark_lattice.membership import endpoint_listing

    application: Application = ctx.obj
    application.home.load_config()
    try:
        items: list[dict[str, Any]] = request(application, "endpoints")
    except NodeNotRunning:
        from ark_lattice.cli.context import open_node

        async def go() -> list[dict[str, Any]]:
            async with await open_node(application) as node:
                rows, peers = await node.store.endpoint_rows(), await node.store.list_peers()
            return endpoint_listing(rows, peers, targets=None, connections=None)

        items = run(go())
    if json_:
        application.print_json(listing("endpoints", items))
        return
    _print_endpoints(application, items)


def _print_endpoints(application: Application, items: list[dict[str, Any]]) -> None:
    from datetime import datetime

    from rich.table import Table

    if not items:
        application.console.print("this node dials no address yet (`federation add-peer URL`, or an invite)")
        return
    table = Table(title=f"{len(items)} address(es)")
    table.add_column("address", no_wrap=True)
    for col in ("peer", "source", "last result", "next attempt"):
        table.add_column(col)
    for item in items:
        peer = (item["peer_name"] or item["peer"][:12]) if item["peer"] else "-"
        if item["peer"] and item["tier"]:
            peer += f" ({item['tier']})"
        nxt = item["next_attempt"]
        when = datetime.fromisoformat(nxt.replace("Z", "+00:00")).astimezone().isoformat(timespec="seconds") \
            if nxt else "-"
        table.add_row(item["url"], peer, item["source"], item["last_result"], when)
    application.console.print(table)


@endpoints_app.command("remove")
def endpoints_remove(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="The ws://HOST:PORT to stop dialling.")],
    json_: JsonOption = False,
) -> None:
    """Stop dialling an address and forget it (recorded in the ledger)."""
    from ark_lattice.cli.context import open_node
    from ark_lattice.cli.livenode import nudge
    from ark_lattice.federation_url import check_peer_url

    application: Application = ctx.obj
    url = check_peer_url(url)

    async def go() -> list[str]:
        async with await open_node(application) as node:
            return await node.store.remove_endpoint(url)

    peers = run(go())
    nudge(application, "peers_changed")  # the running node re-reads its dial targets
    if json_:
        application.print_json({"schema": "ark-lattice.endpoint-removed/1", "url": url, "peers": peers})
        return
    application.console.print(f"removed {url}; this node no longer dials it")


# -- the federation key, by hand ------------------------------------------------------------------

key_app = typer.Typer(
    help="Move the federation key yourself (an invite does it for you).", no_args_is_help=True
)
app.add_typer(key_app, name="key")


@key_app.command("export")
def key_export(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="FILE", help="Where to write the key (created 0600).")],
) -> None:
    """Write this node's federation key to FILE, for `init --federation-key-file` or `key import`."""
    from ark_lattice.cli.context import open_node
    from ark_lattice.errors import UsageError
    from ark_lattice.privatefile import write_private

    application: Application = ctx.obj

    async def go() -> bytes:
        async with await open_node(application) as node:
            return node.federation_key()

    key = run(go())
    try:
        write_private(path, key)
    except FileExistsError:
        raise UsageError(f"{path} exists; the key is never written over a file") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    application.console.print(f"wrote the federation key to {path}: keep it as secret as the node's key")


@key_app.command("import")
def key_import(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="FILE", help="A 32-byte federation key file.")],
) -> None:
    """Make the key in FILE this node's federation key (the old one is kept beside it)."""
    import os
    import time

    from ark_lattice.cli.livenode import nudge
    from ark_lattice.errors import UsageError
    from ark_lattice.privatefile import write_private

    application: Application = ctx.obj
    application.home.load_config()
    key = application.read_federation_key(path)
    if len(key) != 32:
        raise UsageError(f"{path} is not a federation key: it has {len(key)} bytes, not 32")
    current = application.home.federation_key_path
    if current.exists() and current.read_bytes() == key:
        application.console.print("this node already holds that federation key")
        return
    if current.exists():
        os.replace(current, current.with_name(f"federation.key.before-import-{int(time.time())}"))
    write_private(current, key)
    nudge(application, "federation_key_changed")  # a running node uses it for its next sessions
    application.console.print("imported the federation key; the old one is kept beside it")
