"""``ark-lattice simulate``: run a scenario over many simulated nodes, deterministically (DESIGN §11)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application
from ark_lattice.errors import UsageError

__all__ = ["simulate"]


def simulate(
    ctx: typer.Context,
    scenario: Annotated[
        str | None,
        typer.Option("--scenario", "-s", help="A built-in scenario name (see --list) or a JSON file."),
    ] = None,
    nodes: Annotated[
        int | None, typer.Option(min=1, help="Nodes in all (default: the scenario's).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs to run (default: the scenario's).")
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, help="Seed: the same seed gives the same report, byte for byte.")
    ] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the JSON report into this directory.")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the built-in scenarios.")] = False,
) -> None:
    """Simulate a federation: the node's own protocol code, a virtual clock and a virtual network."""
    from ark_lattice.sim.scenario import builtin_names, load_scenario

    application: Application = ctx.obj
    if list_:
        _list(application, json_, [load_scenario(name) for name in builtin_names()])
        return
    if scenario is None:
        raise UsageError(
            "give --scenario NAME|FILE (built-ins: " + ", ".join([*builtin_names(), "poisoning"]) + ")"
        )
    if scenario == "poisoning":  # federated aggregation under attack: no mesh (sim/poisoning.py)
        _poisoning(application, nodes, epochs, seed, out, json_)
        return
    chosen = load_scenario(scenario).with_overrides(nodes=nodes, epochs=epochs)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the report directory {out}: {exc.strerror}") from None
    report, errors = _run(application, chosen, seed, progress=not json_ or out is not None)
    from ark_lattice.sim.mesh import report_bytes

    data = report_bytes(report)
    if out is not None:
        path = out / f"{chosen.name}-{chosen.nodes}n-seed{seed}.json"
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise UsageError(f"cannot write the report {path}: {exc.strerror}") from None
    if json_:
        sys.stdout.write(data.decode())
    else:
        _summary(application, report)
        if out is not None:
            application.console.print(f"report: {path}")
    if errors:
        typer.echo(
            f"warning: the simulated nodes logged {len(errors)} error(s); first: {errors[0]}", err=True
        )


def _poisoning(
    application: Application, nodes: int | None, epochs: int | None, seed: int, out: Path | None, json_: bool
) -> None:
    """``--scenario poisoning``: nodes are the clients, epochs the rounds (docs/simulator.md)."""
    from ark_lattice.sim.poisoning import PoisoningConfig, report_bytes, run, summary_lines

    defaults = PoisoningConfig()
    config = PoisoningConfig(
        clients=nodes or defaults.clients, rounds=epochs or defaults.rounds, seed=seed,
        byzantine=min(defaults.byzantine, (nodes or defaults.clients) - 1),
    )
    data = report_bytes(run(config))
    if out is not None:
        path = out / f"poisoning-{config.clients}n-seed{seed}.json"
        try:
            out.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise UsageError(f"cannot write the report {path}: {exc.strerror}") from None
    if json_:
        sys.stdout.write(data.decode())
        return
    application.console.print("\n".join(summary_lines(json.loads(data))), markup=False, highlight=False)
    if out is not None:
        application.console.print(f"report: {path}")


def _run(
    application: Application, scenario: Any, seed: int, *, progress: bool
) -> tuple[dict[str, Any], list[str]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ark_lattice.sim.mesh import Simulation

    stderr = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=not progress or not stderr.is_terminal,
    ) as bar:
        task = bar.add_task(
            f"{scenario.name}: {scenario.nodes} nodes", total=1.0, status=f"epoch 1/{scenario.epochs}"
        )

        def on_progress(done: float, epoch: dict[str, Any] | None) -> None:
            status = None
            if epoch is not None:
                status = (
                    f"epoch {epoch['epoch'] + 1}/{scenario.epochs}: "
                    f"{epoch['converged']}/{epoch['honest']} converged"
                )
            if status:
                bar.update(task, completed=done, status=status)
            else:
                bar.update(task, completed=done)

        sim = Simulation(scenario, seed=seed, on_progress=on_progress)
        report = sim.run()
    errors = sim.log.errors
    if errors and os.environ.get("ARK_LATTICE_DEBUG"):
        for line in errors:
            typer.echo(line, err=True)
    return report, errors


def _list(application: Application, json_: bool, scenarios: list[Any]) -> None:
    rows = [
        {
            "name": s.name,
            "nodes": s.nodes,
            "epochs": s.epochs,
            "quorum": s.quorum,
            "groups": [g.name for g in s.groups],
            "faults": [f.describe() for f in s.faults],
            "description": s.description,
        }
        for s in scenarios
    ]
    if json_:
        from ark_lattice.cli.output import listing

        application.print_json(listing("scenarios", rows))
        return
    from rich.table import Table

    table = Table(title="built-in scenarios")
    for col in ("name", "nodes", "epochs", "quorum", "faults", "description"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(
            row["name"], str(row["nodes"]), str(row["epochs"]), str(row["quorum"]),
            "; ".join(f"{f}" for f in row["faults"]) or "none", row["description"],
        )
    application.console.print(table)


def _summary(application: Application, report: dict[str, Any]) -> None:
    from rich.table import Table

    sc = report["scenario"]
    table = Table(
        title=f"{sc['name']}: {len(report['nodes'])} nodes, seed {report['seed']}",
        box=None, padding=(0, 1), pad_edge=False, header_style="bold underline",
    )
    # conv: up nodes holding all they should; settled: when all up nodes were, after the epoch's
    # last publish or fault; recon: reconciliations; roots: distinct Merkle roots (docs/simulator.md)
    for col in ("epoch", "up", "conv", "settled", "pub", "msgs", "bytes", "recon", "quorum", "roots"):
        table.add_column(col, justify="right", no_wrap=True)
    for e in report["epochs"]:
        q = e["quorum"]
        quorum = f"{q['ready']}/{q['threshold']} " + ("[green]met[/]" if q["met"] else "[red]not met[/]")
        settled = f"{e['settled_at_ms'] / 1000:g} s" if e["settled_at_ms"] is not None else "[red]no[/]"
        converged = f"{e['converged']}/{e['honest']}"
        if e["converged"] < e["honest"]:
            converged = f"[yellow]{converged}[/]"
        table.add_row(
            str(e["epoch"]), f"{e['up']}/{e['honest']}", converged, settled, str(e["published"]),
            f"{e['messages']:,}", _size(e["bytes"]), f"{e['reconciliations']:,}",
            quorum if q["threshold"] else "", str(e["distinct_roots"]),
        )
    application.console.print(table)
    for e in report["epochs"]:
        if e["faults"]:
            application.console.print(f"epoch {e['epoch']}: " + "; ".join(e["faults"]))
    r = report["result"]
    if r["all_converged"]:
        at = r["converged_at_ms"] / 1000
        application.console.print(
            f"[green]all {r['honest_nodes']} honest nodes converged[/] on {r['packets']} packets "
            f"from epoch {r['converged_since_epoch']} on (virtual t = {at:g} s)"
        )
    else:
        last = report["epochs"][-1]
        application.console.print(
            f"[yellow]not converged:[/] {last['converged']} of {r['honest_nodes']} honest nodes "
            f"hold every packet they should at the end"
        )
    if r["violations"]:
        application.console.print(f"[red]{r['violations']} packet(s) held where the trust tiers forbid it[/]")
    for bad in r.get("governance", {}).get("equivocation", []):
        application.console.print(
            f"equivocator {bad['node']}: caught by {bad['caught_by']} and blocked by {bad['blocked_by']} "
            f"of {bad['honest']} honest nodes"
        )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
