"""Key files where the file system cannot keep mode 0600 (FAT/exFAT sticks, simulated: every file
reads back as 0777 whatever chmod asked, as the vfat and exfat drivers report them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ark_lattice.privatefile import PermissionsNotKept, write_private

from conftest import Cli


@pytest.fixture
def fat_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fstat

    def fstat(fd: int) -> os.stat_result:
        st = real(fd)
        return os.stat_result((stat.S_IFMT(st.st_mode) | 0o777, *tuple(st)[1:]))

    monkeypatch.setattr(os, "fstat", fstat)


def test_a_key_is_written_0600(tmp_path: Path) -> None:
    write_private(tmp_path / "k", b"secret")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_a_clear_key_is_refused_and_removed_where_modes_are_not_kept(
    tmp_path: Path, fat_modes: None
) -> None:
    with pytest.raises(PermissionsNotKept, match="cannot keep a key private"):
        write_private(tmp_path / "k", b"secret")
    assert not (tmp_path / "k").exists()


def test_a_sealed_key_may_stay_where_modes_are_not_kept(tmp_path: Path, fat_modes: None) -> None:
    write_private(tmp_path / "k", b"sealed box", secret=False)
    assert (tmp_path / "k").read_bytes() == b"sealed box"


def test_init_on_such_a_home_says_so_in_one_line_and_leaves_no_half_node(
    cli: Cli, home: Path, fat_modes: None
) -> None:
    result = cli("init", "--name", "stick", ok=False)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the file system of"), result.stderr
    assert "ext4" in lines[0]
    assert not (home / "identity.key").exists() and not (home / "federation.key").exists()
