"""The systemd unit and every variant it documents (drop-ins) pass ``systemd-analyze verify`` with no
warning, and carry what the node implements: Type=notify with a watchdog (runtime/sdnotify.py) and
the passphrase credential the CLI reads (credentials.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ark_lattice.credentials import PASSPHRASE_CREDENTIAL

UNITS = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
VARIANTS = [(), ("sealed-key.conf",), ("binary.conf",), ("sealed-key.conf", "binary.conf")]


def settings(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A file system root holding the host's stock units, the program where the unit runs it, and
    our unit: verify resolves everything inside it."""
    if shutil.which("systemd-analyze") is None or not SYSTEM_UNITS.is_dir():
        pytest.skip("no systemd-analyze here (apt-get install systemd)")
    shutil.copytree(SYSTEM_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    for program in ("usr/local/bin/ark-lattice", "opt/ark-lattice/ark-lattice"):
        (tmp_path / program).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / program).write_text("#!/bin/sh\n")
        (tmp_path / program).chmod(0o755)
    (tmp_path / "etc/systemd/system/ark-lattice.service.d").mkdir(parents=True)
    shutil.copy(UNITS / "ark-lattice.service", tmp_path / "etc/systemd/system")
    yield tmp_path


@pytest.mark.parametrize("dropins", VARIANTS, ids=lambda d: "+".join(d) or "base")
def test_every_variant_verifies_cleanly(root: Path, dropins: tuple[str, ...]) -> None:
    for name in dropins:
        shutil.copy(UNITS / name, root / "etc/systemd/system/ark-lattice.service.d")
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "ark-lattice.service"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr + done.stdout


def test_verify_would_catch_a_mistake(root: Path) -> None:
    (root / "opt/ark-lattice/ark-lattice").unlink()
    shutil.copy(UNITS / "binary.conf", root / "etc/systemd/system/ark-lattice.service.d")
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "ark-lattice.service"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0 and "/opt/ark-lattice/ark-lattice" in done.stderr


def test_the_unit_asks_for_what_the_node_does() -> None:
    unit = settings(UNITS / "ark-lattice.service")
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["Restart"] == ["on-failure"] and unit["WatchdogSec"] == ["30s"]
    sealed = settings(UNITS / "sealed-key.conf")
    (credential,) = sealed["LoadCredentialEncrypted"]
    assert credential.split(":", 1)[0] == PASSPHRASE_CREDENTIAL
