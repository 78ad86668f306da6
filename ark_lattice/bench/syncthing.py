"""``bench compare-syncthing``: the same jobs through Syncthing and through ark-lattice, side by side.

Two jobs (issue 16): many small items (10,000 × 1 KiB) and fewer large ones (1,000 × 1 MiB). Each
goes from one instance to another on 127.0.0.1, through two Syncthing instances and through two
ark-lattice nodes, alternating ark-lattice, Syncthing, ark-lattice, Syncthing … so that neither gets
the quieter machine; each pair gives a ratio (ark-lattice's rate over Syncthing's) and the job
reports their median.

Each job also reports a ceiling (``compare_syncthing.<job>.ceiling``): the items/s that two nodes
sharing this machine's cores could reach if they spent on each item only the CPU of the primitives
DESIGN gives them (the sender reads the body and seals it with XChaCha20-Poly1305; the receiver
opens it and hashes it with SHA-256), split evenly over the cores, with nothing else: no signature
check, no socket, no disk write, no ledger. Against Syncthing's median rate, it is the
most a goal of "k times Syncthing" can be here: under k, no implementation on these primitives
reaches the goal on this machine, however good (issue 16, two runs on the 2-core VM: 2.7 and 2.6
for 1 MiB items, where the goal is 2; 891 and 1,323 for 1 KiB items, where it is 40).

Syncthing runs as it would for a user, with everything that talks beyond this machine off: global
and local discovery, relays, NAT traversal, usage and crash reporting and upgrades; it listens on
``tcp://127.0.0.1`` and serves its REST API on 127.0.0.1, on free ports. ``setLowPriority`` is off
too: by default Syncthing lowers its own CPU priority, which on a shared machine would slow it for
reasons that are not its own.

What is timed, on both sides: from the moment the receiver is told about the sender until it holds
every item. The sender has its items ready before the clock starts: an ark-lattice node has them
signed and stored; Syncthing's send-only folder has been added and scanned (hashed), which is the
same preparation. Syncthing's receive-only folder is in sync when its ``/rest/db/status`` is idle
with nothing needed and ``localFiles`` equal to the item count.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl import bindings as sodium

from ark_lattice.bench import SILENT, Measurement, Progress
from ark_lattice.bench.sync import LARGE_BODY, _fresh_copy, _prepare, _shown, _timed_sync
from ark_lattice.processes import wait_for

__all__ = ["run", "find", "Syncthing"]

FOLDER = "ark-bench"
SMALL_BODY = 1024

#: config.xml options set for the bench: nothing leaves 127.0.0.1, nothing upgrades or reports.
OPTIONS = {
    "globalAnnounceEnabled": "false",
    "localAnnounceEnabled": "false",
    "relaysEnabled": "false",
    "natEnabled": "false",
    "urAccepted": "-1",  # usage reporting declined
    "crashReportingEnabled": "false",
    "autoUpgradeIntervalH": "0",
    "startBrowser": "false",
    "announceLANAddresses": "false",
    "setLowPriority": "false",
}


def find() -> str | None:
    """The ``syncthing`` binary on PATH, or None."""
    return shutil.which("syncthing")


def _free_port() -> int:
    # Syncthing takes fixed ports from its config; the OS names a free one (a small race, on loopback).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Syncthing:
    """One Syncthing instance in its own home, bound to 127.0.0.1: generated, configured, started,
    driven through its REST API and stopped."""

    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.api_key = secrets.token_urlsafe(24)
        self.gui_port = _free_port()
        self.listen_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.device_id = ""

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.listen_port}"

    def start(self) -> Syncthing:
        env = {**os.environ, "STNORESTART": "1", "STNOUPGRADE": "1", "STNODEFAULTFOLDER": "1"}
        home = f"--home={self.home}"
        subprocess.run(
            [self.binary, "generate", home, "--no-default-folder", "--skip-port-probing"],
            env=env, check=True, capture_output=True, timeout=60,
        )
        self._configure(self.home / "config.xml")
        self.device_id = subprocess.run(
            [self.binary, "serve", home, "--device-id"],
            env=env, check=True, capture_output=True, timeout=60, text=True,
        ).stdout.strip()
        with open(self.home / "syncthing.out", "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [self.binary, "serve", home, "--no-browser", "--no-restart", "--no-upgrade"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            wait_for(self._answers, timeout=60, what=f"Syncthing in {self.home} to serve its API")
        except BaseException:
            self.stop()  # a context manager whose start failed is never exited
            raise
        return self

    def _configure(self, path: Path) -> None:
        tree = ET.parse(path)
        root = tree.getroot()
        gui = root.find("gui")
        options = root.find("options")
        if gui is None or options is None:
            raise RuntimeError(f"{path} has no <gui> or <options>: not a Syncthing config")
        _set(gui, "address", f"127.0.0.1:{self.gui_port}")
        _set(gui, "apikey", self.api_key)
        _set(options, "listenAddress", self.address)
        for name, value in OPTIONS.items():
            _set(options, name, value)
        tree.write(path)

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Syncthing exited with {self.proc.returncode}: {self.output()}")
        try:
            return bool(self.rest("GET", "/rest/system/ping").get("ping") == "pong")
        except OSError:
            return False

    def output(self) -> str:
        try:
            return (self.home / "syncthing.out").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.gui_port}{path}", data=data, method=method,
            headers={"X-API-Key": self.api_key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text.strip() else None

    def add_device(self, other: Syncthing) -> None:
        device = self.rest("GET", "/rest/config/defaults/device")
        device.update(deviceID=other.device_id, name=other.home.name, addresses=[other.address])
        self.rest("POST", "/rest/config/devices", device)

    def add_folder(self, path: Path, kind: str, devices: list[Syncthing]) -> None:
        folder = self.rest("GET", "/rest/config/defaults/folder")
        folder.update(
            id=FOLDER, label=FOLDER, path=str(path), type=kind, fsWatcherEnabled=False,
            devices=[{"deviceID": d.device_id} for d in [self, *devices]],
        )
        self.rest("POST", "/rest/config/folders", folder)

    def share_folder(self, devices: list[Syncthing]) -> None:
        self.rest(
            "PATCH", f"/rest/config/folders/{FOLDER}",
            {"devices": [{"deviceID": d.device_id} for d in [self, *devices]]},
        )

    def holds(self, count: int) -> bool:
        """The folder is idle with nothing needed and ``count`` files held locally."""
        status = self.rest("GET", f"/rest/db/status?folder={FOLDER}")
        return bool(
            status.get("state") == "idle"
            and status.get("needFiles") == 0
            and status.get("localFiles") == count
            and status.get("globalFiles") == count
        )

    def held(self) -> int:
        return int(self.rest("GET", f"/rest/db/status?folder={FOLDER}").get("localFiles", 0))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.rest("POST", "/rest/system/shutdown")
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.terminate()  # only the process this object started
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Syncthing:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _set(parent: ET.Element, name: str, value: str) -> None:
    element = parent.find(name)
    if element is None:
        element = ET.SubElement(parent, name)
    element.text = value


def _write_items(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"item-{i:07d}.bin").write_bytes(os.urandom(size))


def syncthing_seconds(
    binary: str, root: Path, source: Path, count: int, synced_so_far: Callable[[int], None] | None = None
) -> float:
    """Seconds for a fresh Syncthing pair to bring ``count`` files of ``source`` from A to B."""
    with Syncthing(binary, root / "st-a") as a, Syncthing(binary, root / "st-b") as b:
        a.add_folder(source, "sendonly", [])
        # A's scan (hashing every file) is its preparation, as signing and storing is a node's.
        wait_for(lambda: a.holds(count), timeout=900, what="Syncthing to scan the source folder")
        target = root / "st-b-folder"
        target.mkdir()
        started = time.perf_counter()
        a.add_device(b)
        a.share_folder([b])
        b.add_device(a)
        b.add_folder(target, "receiveonly", [a])

        def synced() -> bool:
            if synced_so_far is not None:
                synced_so_far(b.held())
            return b.holds(count)

        # Polled every 50 ms at most: a REST call costs Syncthing more than a ledger read costs a node.
        wait_for(synced, timeout=1800, what="Syncthing to sync the folder", max_interval=0.05)
        return time.perf_counter() - started


def run(
    binary: str,
    *,
    small: int = 10_000,
    large: int = 1000,
    pairs: int = 2,
    progress: Progress = SILENT,
) -> list[Measurement]:
    out: list[Measurement] = []
    progress.update(total=2 * (3 + 2 * pairs))
    for job, count, size in (("small", small, SMALL_BODY), ("large", large, LARGE_BODY)):
        with tempfile.TemporaryDirectory(prefix="ark-bench-syncthing-") as tmp:
            root = Path(tmp)
            progress.update(description=f"{job}: signing and storing {count:,} packets of {size:,} B")
            a_home, b_home, _ = asyncio.run(_prepare(root / "ark", count, size, keep=False))
            progress.advance()
            progress.update(description=f"{job}: writing {count:,} files of {size:,} B")
            source = root / "source"
            _write_items(source, count, size)
            progress.advance()
            ratios, syncthing_rates = [], []
            for pair in range(1, pairs + 1):
                label = f"{job}, pair {pair}/{pairs}"
                run_root = root / "run"
                a_run, b_run = _fresh_copy(a_home, b_home, run_root)
                shown = _shown(progress, f"{label}, ark-lattice", count)
                ark_s = _timed_sync(a_run, b_run, count, shown).seconds
                shutil.rmtree(run_root)
                progress.advance()
                run_root.mkdir()
                shown = _shown(progress, f"{label}, Syncthing", count)
                st_s = syncthing_seconds(binary, run_root, source, count, shown)
                shutil.rmtree(run_root)
                progress.advance()
                ratios.append(st_s / ark_s)
                syncthing_rates.append(count / st_s)
                out.append(Measurement(
                    f"compare_syncthing.{job}.pair{pair}", count / ark_s, "items/s", bound=count / st_s,
                    note=f"{count} items of {size} B from one instance to another on 127.0.0.1: ark-lattice "
                    "(value) and Syncthing (bound) in turn",
                ))
            goal = 40 if job == "small" else 2
            out.append(Measurement(
                f"compare_syncthing.{job}.median", statistics.median(ratios), "x Syncthing",
                note=f"median over {pairs} pairs of ark-lattice's rate over Syncthing's; goal >= {goal}",
            ))
            progress.update(description=f"{job}: ceiling, the primitives of {count:,} items alone")
            syncthing_rate = statistics.median(syncthing_rates)
            out.append(_ceiling(root / "bare.bin", job, count, size, syncthing_rate, goal))
            progress.advance()
    return out


def _ceiling(path: Path, job: str, count: int, size: int, syncthing_rate: float, goal: int) -> Measurement:
    """The most items/s any two nodes on this machine could reach with DESIGN's primitives, against
    Syncthing's rate: whether the goal is within reach here at all (module doc)."""
    cores = os.cpu_count() or 1
    cpu = _bare_item_cpu(path, count, size)
    return Measurement(
        f"compare_syncthing.{job}.ceiling", cores * count / cpu, "items/s", bound=syncthing_rate,
        note=f"the most items/s two nodes sharing this machine's {cores} cores could reach if each item "
        "cost them only the CPU of reading it from a cached file, sealing it with XChaCha20-Poly1305, "
        "opening it and hashing it with SHA-256 (no signature check, socket, disk write or ledger), split "
        f"evenly over the cores; bound: Syncthing's median rate; a ratio under {goal} puts the goal out of "
        "reach on this machine",
    )


def _bare_item_cpu(path: Path, count: int, size: int) -> float:
    """CPU seconds of the ceiling's primitives for ``count`` items of ``size`` bytes: each drawn and
    written to ``path`` off the clock, then read back (from the page cache), sealed, opened and
    hashed on it."""
    key = os.urandom(sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    seal = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt
    open_ = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt
    cpu = 0.0
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for i in range(count):
            os.pwrite(fd, os.urandom(size), 0)
            nonce = bytes(16) + i.to_bytes(8, "big")  # the channel's counter nonce
            started = time.process_time()
            body = open_(seal(os.pread(fd, size, 0), None, nonce, key), None, nonce, key)
            hashlib.sha256(body).digest()
            cpu += time.process_time() - started
    finally:
        os.close(fd)
        os.unlink(path)
    return cpu
