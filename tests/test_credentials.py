"""A sealed key's passphrase from systemd's credentials directory (LoadCredentialEncrypted=)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ark_lattice.credentials import systemd_credential

from conftest import Cli


def test_no_directory_no_credential(tmp_path: Path) -> None:
    assert systemd_credential("passphrase", {}) is None
    assert systemd_credential("passphrase", {"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None


def test_the_credential_loses_its_newline(tmp_path: Path) -> None:
    (tmp_path / "passphrase").write_text("correct horse\n")
    assert systemd_credential("passphrase", {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "correct horse"


def test_a_sealed_node_unlocks_with_the_credential(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARK_LATTICE_PASSPHRASE", raising=False)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "passphrase").write_text("correct horse\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    cli("init", "--seal")
    assert cli.json("identity", "show")["sealed"] is True
    cli("packets", "publish", "--topic", "t", "-", input=b"x")

    (credentials / "passphrase").write_text("wrong\n")
    result = cli("packets", "publish", "--topic", "t", "-", input=b"x", ok=False)
    assert result.exit_code == 1 and result.stderr.strip() == "error: wrong passphrase for the node key"

    (credentials / "passphrase").unlink()  # no credential, no terminal: say what is missing
    result = cli("packets", "publish", "--topic", "t", "-", input=b"x", ok=False)
    assert result.exit_code == 2 and "a passphrase is needed" in result.stderr
