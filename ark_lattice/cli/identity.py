"""``ark-lattice identity``: who this node is."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer

from ark_lattice.cli.context import Application
from ark_lattice.cli.output import local_time, rfc3339

app = typer.Typer(help="Show, export and back up this node's identity.", no_args_is_help=True)

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
        "created_at": rfc3339(config.created_at),
        "sealed": Identity.is_sealed(application.home.key_path),
        "home": str(application.home.root),
    }
    if json_:
        application.print_json(doc)
        return
    created = local_time(config.created_at)
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


NEW_PASSPHRASE_ENV = "ARK_LATTICE_NEW_PASSPHRASE"


@app.command("backup")
def backup(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="Where to write the copy (must not exist).")],
    json_: JsonOption = False,
) -> None:
    """Copy the node's key file, as it is (a sealed key stays sealed), with mode 0600.

    Restore by copying it back as identity.key in a home that holds the rest (config.toml,
    federation.key and a ledger from `ledger backup`). The copy is checked before this says done.
    """
    from ark_lattice.errors import UsageError
    from ark_lattice.identity import Identity
    from ark_lattice.privatefile import write_private

    application: Application = ctx.obj
    home = application.home
    config = home.load_config()
    sealed = Identity.is_sealed(home.key_path)  # also: a key file that is not one fails here
    raw = home.key_path.read_bytes()
    target = Path(path)
    try:
        write_private(target, raw)
    except FileExistsError:
        raise UsageError(f"{target} already exists; choose a new file name") from None
    if target.read_bytes() != raw:
        raise UsageError(f"the copy at {target} does not read back the same; do not rely on it")
    doc = {"path": str(target), "node_id": config.node_id, "sealed": sealed}
    if json_:
        application.print_json(doc)
        return
    application.console.print(f"backed up the key of {config.name} to {target}")
    if not sealed:
        typer.echo(
            "note: the key is not sealed; the copy holds it in the clear, so keep it as safe as the "
            "home (`identity change-passphrase` seals it)",
            err=True,
        )


@app.command("change-passphrase")
def change_passphrase(
    ctx: typer.Context,
    new_passphrase_file: Annotated[
        str | None,
        typer.Option(help=f"File holding the new passphrase (or set {NEW_PASSPHRASE_ENV}; else a prompt)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Seal the key with a new passphrase (an open key gets sealed). The old one comes from
    --passphrase-file, ARK_LATTICE_PASSPHRASE or a prompt; a running node keeps its unlocked key."""
    import os

    from ark_lattice.errors import IdentityError
    from ark_lattice.identity import Identity

    application: Application = ctx.obj
    home = application.home
    config = home.load_config()
    old = application.unlock_passphrase()
    identity = Identity.load(home.key_path, old)  # a wrong old passphrase stops here
    new = _new_passphrase(new_passphrase_file)
    fresh = home.key_path.with_name(home.key_path.name + ".new")
    fresh.unlink(missing_ok=True)  # left by an interrupted change; the key file itself is intact
    identity.save(fresh, new)
    if str(Identity.load(fresh, new).node_id) != config.node_id:  # read back before replacing
        fresh.unlink()
        raise IdentityError(f"the new key file did not read back; {home.key_path} is unchanged")
    os.replace(fresh, home.key_path)
    if json_:
        application.print_json({"node_id": config.node_id, "sealed": True})
        return
    application.console.print(f"the key of {config.name} is sealed with the new passphrase")


def _new_passphrase(path: str | None) -> str:
    import os
    import sys

    from ark_lattice.errors import UsageError

    if path:
        try:
            text = Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read the new passphrase file: {exc.strerror}") from None
    elif (env := os.environ.get(NEW_PASSPHRASE_ENV)) is not None:
        text = env
    elif sys.stdin.isatty():
        text = typer.prompt("New key passphrase", hide_input=True, confirmation_prompt=True)
    else:
        raise UsageError(
            f"a new passphrase is needed: give --new-passphrase-file or set {NEW_PASSPHRASE_ENV}"
        )
    if not text:
        raise UsageError("the new passphrase is empty")
    return text
