"""The USB stick (packaging/usb/make-stick.sh): the node runs from it and writes nothing to the host;
a stick whose file system keeps no permissions (exFAT) refuses a key file in one line.

Needs a built binary ($ARK_LATTICE_BINARY or dist/ark-lattice/ark-lattice); the read-only-HOME
session needs root for a private mount namespace (unshare -m), as CI has; the exFAT test needs a
FUSE exFAT mount (exfat-fuse, exfatprogs) and is skipped without one — tests/test_privatefile.py
covers the same refusal with the conditions simulated.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ark_lattice.federationkey import SEALED_MAGIC

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("ARK_LATTICE_BINARY") or ROOT / "dist" / "ark-lattice" / "ark-lattice")
MAKE_STICK = ROOT / "packaging" / "usb" / "make-stick.sh"
SESSION = Path(__file__).parent / "data" / "stick-session.sh"

pytestmark = pytest.mark.skipif(
    not BINARY.is_file(), reason=f"no binary at {BINARY} (packaging/build-binary.sh builds it)"
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not /tmp: the session hides it behind a fresh tmpfs to see what gets written there.
    path = Path(tempfile.mkdtemp(prefix="ark-stick-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_stick(target: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["sh", str(MAKE_STICK), str(target), str(BINARY.parent)], capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_the_autostart_entry_still_finds_the_launcher_once_copied(scratch: Path) -> None:
    stick = scratch / "ARK NODE"  # a space, as volume labels have
    make_stick(stick)
    autostart = scratch / "host-home" / ".config" / "autostart"
    autostart.mkdir(parents=True)
    entry = autostart / "ark-lattice.desktop"
    shutil.copy(stick / "ark-lattice.desktop", entry)
    lines = dict(line.split("=", 1) for line in entry.read_text().splitlines() if "=" in line)
    assert "%k" not in lines["Exec"]
    argv = shlex.split(lines["Exec"])
    assert argv == [str(stick.resolve() / "start.sh")]
    done = subprocess.run(
        [*argv, "--version"], cwd=autostart, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(scratch / "host-home")},
    )
    assert done.returncode == 0 and done.stdout.startswith("ark-lattice "), done.stderr


def test_a_node_runs_from_the_stick_under_a_read_only_home_and_writes_nothing_outside(
    scratch: Path,
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    stick, home = scratch / "stick", scratch / "host-home"
    make_stick(stick)
    (home / ".config").mkdir(parents=True)
    (home / ".profile").write_text("# the host user's own\n")
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", str(SESSION), str(stick), str(home)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "HOME and /tmp unchanged" in done.stdout
    assert (stick / "home" / "ledger.db").exists() and (stick / "home" / "logs").is_dir()


def test_an_exfat_stick_refuses_a_key_in_the_clear_in_one_line_and_takes_a_sealed_one(scratch: Path) -> None:
    tools = ("mkfs.exfat", "mount.exfat-fuse", "losetup", "umount")
    if os.geteuid() != 0 or not all(shutil.which(t) for t in tools) or not Path("/dev/fuse").exists():
        pytest.skip("no FUSE exFAT here (root, exfat-fuse, exfatprogs, /dev/fuse)")
    image, mount = scratch / "stick.img", scratch / "mnt"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(400 * 1024 * 1024)  # sparse; the binary takes about 150 MB
    subprocess.run(["mkfs.exfat", str(image)], check=True, capture_output=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    device = loop.stdout.strip()
    try:
        mounted = subprocess.run(["mount.exfat-fuse", device, str(mount)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"FUSE exFAT does not mount here: {mounted.stderr.strip()}")
        try:
            made = make_stick(mount / "stick")
            assert "keeps no file permissions" in made.stderr
            env = {"PATH": "/usr/bin:/bin", "ARK_LATTICE_PASSPHRASE": "pw", "HOME": str(scratch)}

            def start(*args: str) -> subprocess.CompletedProcess[str]:
                launcher = str(mount / "stick" / "start.sh")
                return subprocess.run(
                    [launcher, *args], input="x", capture_output=True, text=True, timeout=120, env=env
                )

            done = start("init")  # a key in the clear: refused, in one line, nothing left behind
            assert done.returncode == 1
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "cannot keep a key private" in lines[0], done.stderr
            assert not list((mount / "stick" / "home").glob("*"))
            # Sealed: the identity is encrypted, the federation key sealed to it.
            assert start("init", "--seal").returncode == 0
            assert (mount / "stick" / "home" / "federation.key").read_bytes().startswith(SEALED_MAGIC)
            assert start("packets", "publish", "--topic", "t", "-").returncode == 0
            verified = start("ledger", "verify")
            assert verified.returncode == 0, verified.stderr
        finally:
            subprocess.run(["umount", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
