"""``ark-lattice bench``: measured ratios, one JSON object per line with --json."""

from __future__ import annotations

import json
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
            f"{doc['value']:,.1f}",
            doc["unit"],
            f"{doc['bound']:,.1f}" if "bound" in doc else "",
            f"{doc['ratio']:.3f}" if doc.get("ratio") is not None else "",
        )
    application.console.print(table)


@app.command("ledger")
def ledger(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=1000, help="Events to append.")] = 20_000,
    json_: JsonOption = False,
) -> None:
    """Ledger append rate against raw sqlite3 inserts, and verify throughput."""
    from ark_lattice.bench import ledger as bench_ledger

    report(ctx.obj, run(bench_ledger.run(events)), json_)


@app.command("sync")
def sync(
    ctx: typer.Context,
    packets: Annotated[int, typer.Option(min=100, help="Packets to sync.")] = 20_000,
    body_size: Annotated[int, typer.Option(min=1, max=1 << 20, help="Body bytes per packet.")] = 1024,
    json_: JsonOption = False,
) -> None:
    """Two real nodes sync over loopback: packets/s against the raw ingest bound."""
    from ark_lattice.bench import sync as bench_sync

    report(ctx.obj, bench_sync.run(packets, body_size), json_)


@app.command("reconcile")
def reconcile(
    ctx: typer.Context,
    size: Annotated[int, typer.Option(min=100, help="Items on each side.")] = 100_000,
    json_: JsonOption = False,
) -> None:
    """Bytes and round trips of reconciliation for n items differing by d = 1, 10, 100, 1000."""
    from ark_lattice.bench import reconcile as bench_reconcile

    report(ctx.obj, bench_reconcile.run(size), json_)


@app.command("policy")
def policy(
    ctx: typer.Context,
    decisions: Annotated[int, typer.Option(min=1000, help="Decisions to time.")] = 50_000,
    packets: Annotated[int, typer.Option(min=100, help="Packets to sync, each way of the comparison.")] = 10_000,
    json_: JsonOption = False,
) -> None:
    """Policy decisions/s against bare CEL, and sync ingest with the default policy vs permit-all."""
    from ark_lattice.bench import policy as bench_policy

    report(ctx.obj, bench_policy.run(decisions, packets), json_)
