"""What every command shares: the resolved home, the console, passphrase and output helpers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from ark_lattice.credentials import PASSPHRASE_CREDENTIAL, systemd_credential
from ark_lattice.errors import UsageError
from ark_lattice.home import Home

__all__ = ["Application", "run", "open_node", "PASSPHRASE_ENV"]

PASSPHRASE_ENV = "ARK_LATTICE_PASSPHRASE"
T = TypeVar("T")


class Application:
    def __init__(self, home: str | None, passphrase_file: str | None) -> None:
        self.home = Home.resolve(home)
        self.home.check()  # a file given as --home is one clear sentence, before any command runs
        self._passphrase_file = passphrase_file
        self.console = Console(highlight=False, soft_wrap=True)

    def passphrase(self, *, confirm: bool = False) -> str:
        """The key passphrase: --passphrase-file, then the environment, then systemd's credential
        ``passphrase`` ($CREDENTIALS_DIRECTORY), then a prompt."""
        if self._passphrase_file:
            try:
                text = Path(self._passphrase_file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise UsageError(f"cannot read the passphrase file: {exc.strerror}") from None
        elif (env := os.environ.get(PASSPHRASE_ENV)) is not None:
            text = env
        elif (credential := systemd_credential(PASSPHRASE_CREDENTIAL)) is not None:
            text = credential  # the unit's LoadCredential[Encrypted]=passphrase:…
        elif sys.stdin.isatty():
            text = typer.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm)
        else:
            raise UsageError(
                f"a passphrase is needed: give --passphrase-file or set {PASSPHRASE_ENV}"
            )
        if not text:
            raise UsageError("the passphrase is empty")
        return text

    def unlock_passphrase(self) -> str | None:
        """The passphrase if the key is sealed, else None (no prompt for an open key)."""
        from ark_lattice.identity import Identity

        if self.home.key_path.exists() and Identity.is_sealed(self.home.key_path):
            return self.passphrase()
        return None

    def read_federation_key(self, path: str) -> bytes:
        from ark_lattice.federationkey import is_sealed

        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the federation key file {path}: {exc.strerror}") from None
        if is_sealed(data):
            raise UsageError(
                f"{path} is sealed to the node whose home holds it (a stick that keeps no file "
                "permissions): copy federation.key from another node of the federation"
            )
        return data

    def print_record(self, doc: dict[str, Any], json_: bool) -> None:
        """One object: JSON, or aligned ``key  value`` lines for people."""
        if json_:
            self.print_json(doc)
            return
        from rich.text import Text

        from ark_lattice.cli.output import record_lines

        for line in record_lines(doc):
            self.console.print(Text(line))  # values are data, never console markup

    def print_json(self, value: Any) -> None:
        # Plain stdout, not rich: JSON output is for machines and must not be re-wrapped.
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def open_node(application: Application, *, unlock: bool = False) -> Any:
    """Open the local node; ``unlock`` asks for the passphrase only if the key is sealed."""
    from ark_lattice.node import LocalNode

    passphrase = application.unlock_passphrase() if unlock else None
    return await LocalNode.open(
        application.home,
        unlock=unlock,
        passphrase=passphrase,
        # A command that writes signs the ledger head: a sealed key is unlocked at its first write.
        passphrase_source=application.unlock_passphrase,
    )
