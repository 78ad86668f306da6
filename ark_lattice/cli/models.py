"""``ark-lattice models``: submit model updates, aggregate a round, and list, show, export, verify results.

The packets and how they are read live in ``ark_lattice/models.py``; the numeric rules in
``ark_lattice/aggregation/``. This module parses options, calls them and renders what they return.
Names and reasons come from other nodes' packets: they are printed as plain text, never as markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ark_lattice.cli.context import Application, open_node, run

if TYPE_CHECKING:
    from ark_lattice.models import ModelDoc

app = typer.Typer(
    help="Federated model rounds: submit updates, aggregate them, verify published results.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ModelOption = Annotated[str, typer.Option("--model", metavar="NAME", help="Model name.")]
RoundOption = Annotated[int, typer.Option("--round", metavar="R", min=0, help="Round number.")]


def _plain(application: Application, text: str) -> None:
    application.console.print(text, markup=False, highlight=False)


@app.command("submit")
def submit(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help=".npz (named arrays) or .npy (one array).")],
    model: ModelOption,
    round_: RoundOption,
    samples: Annotated[
        int, typer.Option("--samples", metavar="N", min=1, help="Training samples behind this update.")
    ],
    json_: JsonOption = False,
) -> None:
    """Sign this node's update for a round and store it; a running node pushes it to core peers."""
    from ark_lattice.aggregation.tensors import load_file
    from ark_lattice.models import check_model_name, describe_arrays, publish_update

    application: Application = ctx.obj
    check_model_name(model)
    arrays = load_file(file)

    async def go() -> Any:
        async with await open_node(application, unlock=True) as node:
            return await publish_update(node, model, round_, samples, arrays)

    packet = run(go())
    from ark_lattice.cli.livenode import nudge

    nudge(application, "packets_changed")
    if json_:
        application.print_json(
            {
                "id": packet.hex_id,
                "model": model,
                "round": round_,
                "samples": samples,
                "size": packet.header.body_size,
                "arrays": describe_arrays(arrays),
            }
        )
        return
    _plain(application, packet.hex_id)


@app.command("aggregate")
def aggregate_(
    ctx: typer.Context,
    model: ModelOption,
    round_: RoundOption,
    method: Annotated[
        str,
        typer.Option(
            metavar="M",
            help="fedavg, fedprox, trimmed-mean, median, krum, multi-krum or bulyan.",
        ),
    ],
    f: Annotated[int, typer.Option("--f", min=0, help="Byzantine updates to tolerate (krum, bulyan).")] = 0,
    trim: Annotated[float, typer.Option("--trim", metavar="B", help="Trimmed-mean fraction β.")] = 0.1,
    clip: Annotated[
        float | None, typer.Option("--clip", metavar="NORM", help="Clip each update's L2 norm.")
    ] = None,
    max_samples: Annotated[
        int, typer.Option("--max-samples", metavar="N", min=1, help="Cap on a sample weight.")
    ] = 10_000,
    m: Annotated[int | None, typer.Option("--m", metavar="M", help="Updates multi-krum keeps.")] = None,
    mu: Annotated[
        float | None,
        typer.Option("--mu", metavar="MU", help="FedProx proximal term (clients' round config)."),
    ] = None,
    publish: Annotated[bool, typer.Option("--publish", help="Sign and store the result.")] = False,
    json_: JsonOption = False,
) -> None:
    """Aggregate a round's core-peer updates; print a summary, and publish it with --publish."""
    from ark_lattice.aggregation.methods import METHODS, Params, aggregate
    from ark_lattice.aggregation.tensors import output_hash
    from ark_lattice.errors import UsageError
    from ark_lattice.models import check_model_name, describe_arrays, publish_model, round_inputs

    application: Application = ctx.obj
    check_model_name(model)
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    params = Params(method, f=f, trim=trim, clip=clip, max_samples=max_samples, m=m, mu=mu)

    async def go() -> Any:
        async with await open_node(application, unlock=publish) as node:
            found = await round_inputs(node.store, model, round_, me=node.config.node_id)
            if not found.updates:
                raise UsageError(
                    f"no update of model {model} round {round_} counts here "
                    f"({len(found.excluded)} left out)"
                )
            result = aggregate(found.updates, params)
            packet = await publish_model(node, model, round_, params, result) if publish else None
            return found, result, packet

    found, result, packet = run(go())
    if packet is not None:
        from ark_lattice.cli.livenode import nudge

        nudge(application, "packets_changed")
    excluded = [(i.hex(), why) for i, why in [*found.excluded, *result.excluded]]
    doc: dict[str, Any] = {
        "model": model,
        "round": round_,
        "method": method,
        "params": params.to_json(),
        "updates": len(found.updates),
        "inputs": [i.hex() for i in sorted(result.inputs)],
        "excluded": [{"id": i, "reason": why} for i, why in excluded],
        "arrays": describe_arrays(result.arrays),
        "output_hash": output_hash(result.arrays),
        "id": packet.hex_id if packet is not None else None,
    }
    if json_:
        application.print_json(doc)
        return
    _plain(application, f"model {model} round {round_}: {method} over {len(result.inputs)} input(s)")
    for i, why in excluded:
        _plain(application, f"  excluded {i[:16]}: {why}")
    for name, info in doc["arrays"].items():
        _plain(application, f"  {name}  {info['dtype']}  {tuple(info['shape'])}")
    _plain(application, f"output hash {doc['output_hash']}")
    if packet is not None:
        _plain(application, f"published {packet.hex_id}")


@app.command("list")
def list_(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", metavar="NAME", help="Only this model.")] = None,
    round_: Annotated[
        int | None, typer.Option("--round", metavar="R", min=0, help="Only this round.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """List the published models this node holds, oldest first."""
    from ark_lattice.models import check_model_name, published_models

    application: Application = ctx.obj
    if model is not None:
        check_model_name(model)

    async def go() -> list[ModelDoc]:
        async with await open_node(application) as node:
            return await published_models(node.store, model, round_)

    docs = run(go())
    if json_:
        from ark_lattice.cli.output import listing, stamp

        items = [stamp(d.to_json(shapes=False), hlc=["created_at"]) for d in docs]
        application.print_json(listing("models", items))
        return
    for d in docs:
        state = "  [quarantined]" if d.stored.quarantined else ""
        _plain(
            application,
            f"{d.hex_id[:16]}  {d.name}  round {d.round}  {d.method}  {len(d.inputs)} input(s)  "
            f"by {d.stored.packet.header.author.short}{state}",
        )
    _plain(application, f"{len(docs)} model(s)")


async def _load_model(application: Application, model_id: str) -> ModelDoc:
    from ark_lattice.models import decode_model

    async with await open_node(application) as node:
        stored = await node.store.get_packet(await node.store.resolve_packet(model_id))
        return decode_model(stored)


@app.command("show")
def show(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="ID", help="Model packet id or unique prefix.")],
    json_: JsonOption = False,
) -> None:
    """Show a published model: round, method, parameters, inputs, arrays and output hash."""
    application: Application = ctx.obj
    doc = run(_load_model(application, model_id)).to_json()
    if json_:
        application.print_json(doc)
        return
    for key in ("id", "model", "round", "method", "params", "author", "output_hash", "quarantined"):
        _plain(application, f"{key:<13}{doc[key]}")
    _plain(application, f"{'inputs':<13}{len(doc['inputs'])}")
    for i in doc["inputs"]:
        _plain(application, f"  {i}")
    for name, info in (doc.get("arrays") or {}).items():
        _plain(application, f"  {name}  {info['dtype']}  {tuple(info['shape'])}")
    if doc.get("error"):
        _plain(application, f"{'error':<13}{doc['error']}")


@app.command("export")
def export(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="ID", help="Model packet id or unique prefix.")],
    out: Annotated[Path, typer.Argument(metavar="OUT.npz", help="Where to write the arrays.")],
    json_: JsonOption = False,
) -> None:
    """Write a published model's arrays to an .npz file (no pickle)."""
    import zipfile

    import numpy as np

    from ark_lattice.errors import UsageError

    application: Application = ctx.obj
    arrays = run(_load_model(application, model_id)).arrays()
    try:
        # What np.savez writes (one NAME.npy per array in a zip), with pickling refused outright.
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for name, array in sorted(arrays.items()):
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror}") from None
    if json_:
        application.print_json({"path": str(out), "arrays": len(arrays)})
        return
    _plain(application, f"wrote {len(arrays)} array(s) to {out}")


@app.command("verify")
def verify(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="ID", help="Model packet id or unique prefix.")],
    json_: JsonOption = False,
) -> None:
    """Recompute a published model from its inputs; exit 0 only if the bytes match."""
    from ark_lattice.errors import ArkLatticeError
    from ark_lattice.models import verify_model

    application: Application = ctx.obj

    async def go() -> tuple[str, bool, str]:
        async with await open_node(application) as node:
            stored = await node.store.get_packet(await node.store.resolve_packet(model_id))
            ok, why = await verify_model(node.store, stored.packet)
            return stored.packet.hex_id, ok, why

    pid, ok, why = run(go())
    if json_:
        application.print_json({"id": pid, "verified": ok, "reason": why})
        if not ok:
            raise typer.Exit(1)
        return
    if not ok:
        raise ArkLatticeError(why)
    _plain(application, why)
