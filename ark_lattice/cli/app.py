"""The root of the command tree, and the one place errors become a line on stderr and an exit code.

Commands parse their options, call the library and render the result; nothing else. Heavy imports
(numpy, zeroconf, websockets) happen inside the commands that need them, so ``--help`` and
``--version`` stay fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ark_lattice import __version__
from ark_lattice.cli import alerts, federation, identity, ledger, models, packets, peers, policy
from ark_lattice.cli import governance as governance_cli
from ark_lattice.cli.audit import audit
from ark_lattice.cli.bench import app as bench_app
from ark_lattice.cli.context import Application, run
from ark_lattice.cli.simulate import simulate
from ark_lattice.errors import ArkLatticeError

__all__ = ["app", "main"]

DEBUG_ENV = "ARK_LATTICE_DEBUG"
EXIT_INTERNAL = 70  # EX_SOFTWARE from sysexits.h
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `ark-lattice … | head`


class _ErrorsToOneLine(TyperGroup):
    """Turns every error into one sentence on stderr and an exit code — never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ArkLatticeError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            _reader_went_away()
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:  # a bug: still one line, the traceback only on request
            if os.environ.get(DEBUG_ENV):
                raise
            _fail(
                f"internal error: {exc.__class__.__name__}: {exc} "
                f"(set {DEBUG_ENV}=1 to see the traceback)",
                EXIT_INTERNAL,
            )


def _reader_went_away() -> None:
    """Whoever read our output (``| head``) has closed the pipe: stop quietly, as Unix tools do.
    stdout goes to /dev/null first, so flushing it at exit cannot fail a second time."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(EXIT_BROKEN_PIPE)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


app = typer.Typer(
    cls=_ErrorsToOneLine,
    name="ark-lattice",
    help="A sovereign peer node: share signed knowledge with the peers you trust.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ark-lattice {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        str | None,
        typer.Option("--home", envvar="ARK_LATTICE_HOME", help="Node home directory (portable mode)."),
    ] = None,
    passphrase_file: Annotated[
        str | None,
        typer.Option(
            "--passphrase-file",
            help="File holding the passphrase of a sealed key (or set ARK_LATTICE_PASSPHRASE).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    ctx.obj = Application(home, passphrase_file)


@app.command("init")
def init_command(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Display name of this node.")] = None,
    seal: Annotated[bool, typer.Option("--seal", help="Seal the key with a passphrase.")] = False,
    federation_key_file: Annotated[
        str | None,
        typer.Option(help="Join an existing federation: its 32-byte key file (default: a new one)."),
    ] = None,
) -> None:
    """Create this node's identity, config and ledger."""
    from ark_lattice.node import LocalNode

    application: Application = ctx.obj
    passphrase = application.passphrase(confirm=True) if seal else None
    fed_key = application.read_federation_key(federation_key_file) if federation_key_file else None

    async def go() -> Any:
        node = await LocalNode.init(
            application.home, name=name, passphrase=passphrase, federation_key=fed_key
        )
        await node.close()
        return node

    node = run(go())
    application.console.print(
        f"created node [bold]{node.config.name}[/] {node.node_id.grouped}\nhome: {application.home.root}"
    )


app.add_typer(identity.app, name="identity")
app.add_typer(packets.app, name="packets")
app.add_typer(alerts.app, name="alerts")
app.add_typer(models.app, name="models")
app.add_typer(peers.app, name="peers")
app.add_typer(ledger.app, name="ledger")
app.add_typer(federation.app, name="federation")
app.add_typer(policy.app, name="policy")
app.add_typer(governance_cli.app, name="governance")
app.command("audit")(audit)
app.add_typer(bench_app, name="bench")
app.command("simulate")(simulate)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # raised outside a command: while printing --help, say
        _reader_went_away()
