"""``ark-lattice bench``: measured ratios, one JSON object per line with --json.

On a terminal each bench draws a progress bar on stderr, step by step; with --json or in a pipe it
draws nothing (cli/progress.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, run

app = typer.Typer(help="Measure speed against bounds taken in the same run.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def report(application: Application, rows: list[Any], json_: bool) -> None:
    if json_:
        for row in rows:
            print(json.dumps(row.to_json()))
        return
    from rich.table import Table

    table = Table()
    for col in ("name", "value", "unit", "bound", "ratio"):
        table.add_column(col)
    for row in rows:
        doc = row.to_json()
        table.add_row(
            doc["name"],
            _figure(doc["value"]),
            doc["unit"],
            f"{doc['bound']:,.1f}" if "bound" in doc else "",
            f"{doc['ratio']:.3f}" if doc.get("ratio") is not None else "",
        )
    application.console.print(table)


@app.command("ledger")
def ledger(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=1000, help="Events to append.")] = 100_000,
    checkpoints: Annotated[
        int, typer.Option(min=0, help="Checkpoints among them, for verify's second run.")
    ] = 1000,
    json_: JsonOption = False,
) -> None:
    """Ledger append and write rates against raw sqlite3 (with the signed head's cost), and
    verify throughput with and without checkpoints."""
    from ark_lattice.bench import ledger as bench_ledger
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench ledger", quiet=json_) as bar:
        rows = run(bench_ledger.run(events, checkpoints=checkpoints, progress=bar))
    report(ctx.obj, rows, json_)


@app.command("sync")
def sync(
    ctx: typer.Context,
    packets: Annotated[int, typer.Option(min=100, help="Small packets to sync.")] = 20_000,
    body_size: Annotated[
        int, typer.Option(min=1, max=1 << 20, help="Body bytes per small packet.")
    ] = 1024,
    large_packets: Annotated[
        int, typer.Option(min=0, help="Then packets of 1 MiB to sync, against their own bound (0: none).")
    ] = 300,
    under_attack: Annotated[
        bool,
        typer.Option(
            "--under-attack",
            help="Instead: the same sync while hostile clients hit the node, against it clean (ratio).",
        ),
    ] = False,
    rss: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Instead: the receiver's peak RSS after syncing N and 10×N packets, and their ratio.",
        ),
    ] = 0,
    json_: JsonOption = False,
) -> None:
    """Two real nodes sync over loopback: packets/s and the receiver's CPU per packet against bare
    primitives (Ed25519, SHA-256, sqlite3; for 1 MiB packets SHA-256, AEAD and fsynced writes)."""
    from ark_lattice.bench import sync as bench_sync
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench sync", quiet=json_) as bar:
        if under_attack:
            rows = bench_sync.run_under_attack(packets, body_size, progress=bar)
        elif rss:
            rows = bench_sync.run_rss(rss, body_size, progress=bar)
        else:
            rows = bench_sync.run(packets, body_size, large_packets, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("compare-syncthing")
def compare_syncthing(
    ctx: typer.Context,
    small: Annotated[int, typer.Option(min=10, help="Items of 1 KiB in the small job.")] = 10_000,
    large: Annotated[int, typer.Option(min=1, help="Items of 1 MiB in the large job.")] = 1000,
    pairs: Annotated[
        int, typer.Option(min=1, max=20, help="Pairs of runs per job (ark-lattice, then Syncthing).")
    ] = 2,
    json_: JsonOption = False,
) -> None:
    """The same jobs through two Syncthing instances and two ark-lattice nodes on 127.0.0.1,
    alternating, with the ratio of each pair, their median, and the ceiling the primitives allow
    here. Without `syncthing` on PATH it says so in one line on stderr and exits 0 (nothing to
    compare is not an error)."""
    from ark_lattice.bench import syncthing as bench_syncthing

    binary = bench_syncthing.find()
    if binary is None:
        typer.echo("bench compare-syncthing: skipped, syncthing is not on PATH", err=True)
        return
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench compare-syncthing", quiet=json_) as bar:
        rows = bench_syncthing.run(binary, small=small, large=large, pairs=pairs, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("publish")
def publish(
    ctx: typer.Context,
    packets: Annotated[int, typer.Option(min=10, help="Packets to publish through the node.")] = 500,
    body_size: Annotated[int, typer.Option(min=1, max=1 << 19, help="Body bytes per packet.")] = 1024,
    json_: JsonOption = False,
) -> None:
    """Packets/s published through a running node with a sealed key, against bare sign + insert."""
    from ark_lattice.bench import publish as bench_publish
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench publish", quiet=json_) as bar:
        rows = bench_publish.run(packets, body_size, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("reconcile")
def reconcile(
    ctx: typer.Context,
    size: Annotated[int, typer.Option(min=100, help="Items on each side.")] = 100_000,
    json_: JsonOption = False,
) -> None:
    """Bytes and round trips of reconciliation for n items differing by d = 1, 10, 100, 1000."""
    from ark_lattice.bench import reconcile as bench_reconcile
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench reconcile", quiet=json_) as bar:
        rows = bench_reconcile.run(size, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("policy")
def policy(
    ctx: typer.Context,
    decisions: Annotated[int, typer.Option(min=1000, help="Decisions to time.")] = 50_000,
    packets: Annotated[
        int, typer.Option(min=100, help="Packets to sync, each way of the comparison.")
    ] = 10_000,
    json_: JsonOption = False,
) -> None:
    """Policy decisions/s against bare CEL, and sync ingest with the default policy vs permit-all."""
    from ark_lattice.bench import policy as bench_policy
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench policy", quiet=json_) as bar:
        rows = bench_policy.run(decisions, packets, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("simulate")
def simulate(
    ctx: typer.Context,
    sizes: Annotated[
        str, typer.Option(help="Comma-separated node counts, each run in its own process.")
    ] = "100,1000",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the baseline scenario per size.")] = 5,
    json_: JsonOption = False,
) -> None:
    """Simulated node-epochs/s and peak memory of the deterministic simulator (baseline scenario)."""
    from ark_lattice.bench import simulate as bench_simulate
    from ark_lattice.errors import UsageError

    try:
        counts = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--sizes takes node counts such as 100,1000, not {sizes!r}") from None
    if not counts or any(c < 1 for c in counts):
        raise UsageError("--sizes needs at least one positive node count")
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench simulate", quiet=json_) as bar:
        rows = bench_simulate.run(counts, epochs, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("discovery")
def discovery(
    ctx: typer.Context,
    runs: Annotated[int, typer.Option(min=1, max=50, help="Runs per carrier (the median is reported).")] = 5,
    json_: JsonOption = False,
) -> None:
    """Time for two nodes on two namespace hosts to find each other, by mDNS and by beacon (root)."""
    from ark_lattice.bench import discovery as bench_discovery
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench discovery", quiet=json_) as bar:
        rows = bench_discovery.run(runs, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("alerts")
def alerts(
    ctx: typer.Context,
    nodes: Annotated[int, typer.Option(min=3, max=40, help="Node processes in the core mesh.")] = 10,
    alerts_: Annotated[
        int, typer.Option("--alerts", min=1, help="Alerts raised one at a time: raise → stored everywhere.")
    ] = 20,
    isolations: Annotated[
        int, typer.Option(min=1, help="Alerts about an extra node: raise → isolated everywhere.")
    ] = 10,
    burst: Annotated[int, typer.Option(min=1, help="Alerts raised at once from every node.")] = 1000,
    json_: JsonOption = False,
) -> None:
    """Real nodes on 127.0.0.1 in a core mesh: raise → stored and → isolated everywhere, messages
    per alert, and a burst (its time and loss)."""
    from ark_lattice.bench import alerts as bench_alerts
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench alerts", quiet=json_) as bar:
        rows = bench_alerts.run(nodes, alerts=alerts_, isolations=isolations, burst=burst, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("governance")
def governance(
    ctx: typer.Context,
    nodes: Annotated[int, typer.Option(min=3, max=40, help="Node processes in the core mesh.")] = 10,
    proposals: Annotated[int, typer.Option(min=1, help="Proposals: proposed → adopted everywhere.")] = 20,
    policies: Annotated[int, typer.Option(min=1, help="Policy bundles: proposed → in force everywhere.")] = 5,
    json_: JsonOption = False,
) -> None:
    """Real nodes on 127.0.0.1 in a core mesh: k-of-n proposal → adopted everywhere, and a policy
    bundle → in force everywhere."""
    from ark_lattice.bench import governance as bench_governance
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench governance", quiet=json_) as bar:
        rows = bench_governance.run(nodes, proposals=proposals, policies=policies, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("aggregate")
def aggregate(
    ctx: typer.Context,
    updates: Annotated[int, typer.Option(min=3, help="Model updates to aggregate.")] = 20,
    params: Annotated[int, typer.Option(min=1, help="float32 parameters per update.")] = 1_000_000,
    json_: JsonOption = False,
) -> None:
    """FedAvg against numpy's own weighted mean of the same arrays, and Krum/median/trimmed-mean times."""
    from ark_lattice.bench import aggregate as bench_aggregate
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench aggregate", quiet=json_) as bar:
        rows = bench_aggregate.run(updates, params, progress=bar)
    report(ctx.obj, rows, json_)


@app.command("home")
def home(
    ctx: typer.Context,
    home_dir: Annotated[
        Path | None, typer.Option("--home-dir", help="Build the home here, or top up the one there.")
    ] = None,
    packets: Annotated[int, typer.Option(min=1, help="Packets the home holds.")] = 100_000,
    body: Annotated[int, typer.Option(min=8, max=1 << 20, help="Bytes per packet body.")] = 1024,
    json_: JsonOption = False,
) -> None:
    """One node holding many packets: first row and memory of `packets list` (table and JSON),
    `federation status` time, and `ledger verify` against bare Ed25519 verify on every core, with
    the ceiling the bare primitives of its checks allow."""
    from ark_lattice.bench import home as bench_home
    from ark_lattice.cli.progress import progress_bar

    with progress_bar("bench home", quiet=json_) as bar:
        rows = run(bench_home.run(packets, body_size=body, home_dir=home_dir, progress=bar))
    report(ctx.obj, rows, json_)


def _figure(value: float) -> str:
    # Small figures (seconds, round trips) keep three significant digits; large ones one decimal.
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
