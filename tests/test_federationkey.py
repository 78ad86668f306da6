"""The federation key where the file system keeps no modes (FAT/exFAT sticks, simulated as in
test_privatefile.py): sealed to a sealed node's key, refused for an open one."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ark_lattice.errors import IdentityError
from ark_lattice.federationkey import SEALED_MAGIC
from ark_lattice.home import Home
from ark_lattice.node import LocalNode

from conftest import Cli


@pytest.fixture
def fat_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fstat

    def fstat(fd: int) -> os.stat_result:
        st = real(fd)
        return os.stat_result((stat.S_IFMT(st.st_mode) | 0o777, *tuple(st)[1:]))

    monkeypatch.setattr(os, "fstat", fstat)


def test_where_modes_hold_the_key_stays_32_raw_bytes(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARK_LATTICE_PASSPHRASE", "correct horse")
    cli("init", "--seal")
    assert len((home / "federation.key").read_bytes()) == 32


def test_a_sealed_node_seals_its_federation_key_where_modes_are_not_kept(
    cli: Cli, home: Path, homes: Callable[[str], Path], fat_modes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARK_LATTICE_PASSPHRASE", "correct horse")
    cli("init", "--seal", "--name", "stick")
    data = (home / "federation.key").read_bytes()
    assert data.startswith(SEALED_MAGIC) and len(data) > 32
    cli("packets", "publish", "--topic", "t", "-", input=b"x")

    async def key() -> bytes:
        async with await LocalNode.open(Home(home)) as node:  # locked: the key stays sealed
            with pytest.raises(IdentityError, match="sealed to the node's key"):
                node.federation_key()
        async with await LocalNode.open(Home(home), unlock=True, passphrase="correct horse") as node:
            return node.federation_key()

    assert len(asyncio.run(key())) == 32

    # Another node cannot join with the sealed file: one line saying where to get the key.
    other = Cli(homes("other"))
    result = other("init", "--federation-key-file", str(home / "federation.key"), ok=False)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is sealed to the node" in lines[0], result.stderr
