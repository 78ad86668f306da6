"""The root of the command tree, and the one place errors become a line on stderr and an exit code.

Commands parse their options, call the library and render the result; nothing else. Heavy imports
(numpy, zeroconf, websockets) happen inside the commands that need them, so ``--help`` and
``--version`` stay fast.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
from typing import Annotated, Any

import typer
from typer._click.exceptions import NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperGroup

from ark_lattice import __version__
from ark_lattice.cli import alerts, federation, identity, ledger, models, packets, peers, policy
from ark_lattice.cli import governance as governance_cli
from ark_lattice.cli.audit import audit
from ark_lattice.cli.bench import app as bench_app
from ark_lattice.cli.context import Application, run
from ark_lattice.cli.simulate import simulate
from ark_lattice.errors import ArkLatticeError, ExitCode

__all__ = ["app", "main"]

DEBUG_ENV = "ARK_LATTICE_DEBUG"
# The table is errors.ExitCode; these names stay for the modules that import them.
EXIT_INTERNAL = ExitCode.INTERNAL
EXIT_INTERRUPTED = ExitCode.INTERRUPTED
EXIT_BROKEN_PIPE = ExitCode.BROKEN_PIPE


class _ErrorsToOneLine(TyperGroup):
    """Turns every error into one sentence on stderr and an exit code — never a traceback."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except ClickUsageError as exc:
            _bad_usage(exc)
            raise  # not reached: _bad_usage exits

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ArkLatticeError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            _reader_went_away()
        except ClickUsageError as exc:  # a bad option or argument of a subcommand
            _bad_usage(exc)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except OSError as exc:  # the file system said no, outside any check: name the file and why
            _fail(_os_error(exc), _os_exit_code(exc))
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc) and "read-only" not in str(exc):
                _internal(exc)
            _fail(
                f"the ledger in {ctx.obj.home.root if ctx.obj else 'the home'} is read-only "
                "(a read-only file system or directory); commands that change it cannot run",
                ExitCode.HOME_UNUSABLE,
            )
        except Exception as exc:  # a bug: still one line, the traceback only on request
            _internal(exc)


def _internal(exc: Exception) -> None:
    if os.environ.get(DEBUG_ENV):
        raise exc
    _fail(
        f"internal error: {exc.__class__.__name__}: {exc} (set {DEBUG_ENV}=1 to see the traceback)",
        EXIT_INTERNAL,
    )


def _bad_usage(exc: ClickUsageError) -> None:
    """Click's usage errors, as one line like every other error (no usage box, no panel)."""
    if isinstance(exc, NoArgsIsHelpError):  # `ark-lattice peers` alone: the help, as asked
        raise exc
    message = exc.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    where = exc.ctx.command_path if exc.ctx is not None else "ark-lattice"
    _fail(f"{message}; see `{where} --help`", ExitCode.USAGE)


# errno values that mean "this place cannot be written", as opposed to a missing file or a bug.
_CANNOT_WRITE = {errno.EROFS, errno.EACCES, errno.EPERM}


def _os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.EROFS:
        return f"cannot write{where}: the file system is read-only"
    if exc.errno in _CANNOT_WRITE:
        return f"cannot write{where}: permission denied"
    if exc.errno == errno.ENOSPC:
        return f"cannot write{where}: no space left on the device"
    return f"cannot use{where}: {exc.strerror or exc}"


def _os_exit_code(exc: OSError) -> int:
    return ExitCode.HOME_UNUSABLE if exc.errno in _CANNOT_WRITE else ExitCode.FAILED


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
    add_completion=True,
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
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
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
    if json_:
        application.print_json(
            {"node_id": node.config.node_id, "name": node.config.name, "home": str(application.home.root),
             "sealed": seal}
        )
        return
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
