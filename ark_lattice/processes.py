"""Real node processes, for the multi-node tests and the benches (STYLE rule 7).

Both start ``ark-lattice federation start`` as a child process, drive it over its control socket or
through the CLI, and wait for what they expect by polling a condition under a deadline: never a
fixed sleep, never an unbounded wait.

- :func:`wait_for` polls any condition until it holds or the deadline passes;
- :func:`cli_command` / :func:`run_cli` run the real console entry point against a home;
- :class:`NodeProcess` is one running node: started, asked, waited for, stopped, cleaned up.

This module ships in the wheel (the benches need it) and imports only the standard library and
:mod:`ark_lattice.home` up front, so a bench's ``--help`` stays fast.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ark_lattice.home import Home

__all__ = ["NodeProcess", "NodeProcessError", "cli_command", "run_cli", "wait_for"]

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    what: str = "condition",
    max_interval: float = 0.2,
) -> T:
    """Poll ``condition`` until it returns a truthy value, and return that value.

    Polls at once, then after 10 ms, doubling up to ``max_interval``; raises :class:`TimeoutError`
    once ``timeout`` seconds have passed without it holding. Exceptions from ``condition`` propagate:
    a condition that can fail while it waits says so by returning a falsy value.
    """
    deadline = time.monotonic() + timeout
    delay = min(0.01, max_interval)
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(min(delay, left))
        delay = min(delay * 2, max_interval)


def cli_command(home: Path | None, *args: str, prefix: Sequence[str] = ()) -> list[str]:
    """The argv of ``ark-lattice [--home HOME] ARGS…`` with this interpreter, after ``prefix``
    (such as ``ip netns exec NS``)."""
    home_args = ["--home", str(home)] if home is not None else []
    return [*prefix, sys.executable, "-m", "ark_lattice", *home_args, *args]


def run_cli(
    home: Path,
    *args: str,
    input: bytes | None = None,
    timeout: float = 60,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run the real console entry point in a subprocess to completion; output is captured."""
    command = cli_command(home, *args, prefix=prefix)
    return subprocess.run(command, input=input, capture_output=True, timeout=timeout)


class NodeProcessError(RuntimeError):
    """A node process exited before it was asked to, or would not stop when asked."""


class NodeProcess:
    """A real ``ark-lattice federation start`` process.

    Its output goes to ``log`` (by default ``HOME.out`` beside the home), which :meth:`output`
    reads and every :class:`NodeProcessError` quotes. As a context manager it is stopped on exit.
    """

    def __init__(
        self,
        home: Path,
        *extra: str,
        bind: str = "127.0.0.1",
        port: int = 0,
        prefix: Sequence[str] = (),
        log: Path | None = None,
        wait: bool = True,
        timeout: float = 60,
    ) -> None:
        """Start the node; ``extra`` are more ``federation start`` options.

        ``prefix`` runs it elsewhere (``ip netns exec NS``). ``wait`` blocks until it serves (see
        :meth:`wait_started`), and kills it if it does not within ``timeout`` seconds; without it,
        nodes can start side by side and be waited for after.
        """
        self.home = home
        self.control_path = Home(home).control_path
        self.status: dict[str, Any] = {}
        home.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log if log is not None else home.parent / f"{home.name}.out"
        self.log = open(self.log_path, "wb")
        command = cli_command(
            home, "federation", "start", "--bind", bind, "--port", str(port), *extra, prefix=prefix
        )
        try:
            self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        except BaseException:
            self.log.close()
            raise
        if wait:
            try:
                self.wait_started(timeout=timeout)
            except BaseException:
                self.close(grace=0)  # nobody else holds it yet
                raise

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- asking it ------------------------------------------------------------------------------

    def ask(self, cmd: str, args: dict[str, Any] | None = None, *, timeout: float = 5.0) -> Any:
        """The node's answer to a control command, or None while it does not answer (not serving
        yet, or too busy to answer within ``timeout``).

        Raises :class:`NodeProcessError` if the process has exited, so a wait on a dead node fails
        at once with its output; a request the node refuses raises as in the CLI.
        """
        from ark_lattice.errors import NodeNotRunning
        from ark_lattice.runtime.control import call, is_running

        self._check_running()
        if not is_running(self.control_path):
            return None
        try:
            return call(self.control_path, cmd, args, timeout=timeout)
        except NodeNotRunning:
            self._check_running()
            return None

    def current_status(self) -> dict[str, Any] | None:
        """What ``federation status --json`` shows now, or None while the node does not answer."""
        doc = self.ask("status")
        return None if doc is None else {**doc, "running": True}

    def wait_started(self, *, timeout: float = 60) -> dict[str, Any]:
        """Wait until the node serves; keep and return its status then (also :attr:`status`)."""
        self.status = wait_for(self.current_status, timeout=timeout, what=f"the node in {self.home} to start")
        return self.status

    @property
    def url(self) -> str:
        """The WebSocket URL it listens on, as it reported when it started."""
        return str(self.status["listen"])

    def output(self) -> str:
        """Everything the node has written so far (stdout and stderr)."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    # -- stopping it ----------------------------------------------------------------------------

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit code; a node still running after ``timeout`` seconds
        is killed and :class:`NodeProcessError` raised."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                raise NodeProcessError(f"node did not stop on signal {sig}: {self.output()}") from None
        self.log.close()
        return self.proc.returncode

    def close(self, *, grace: float = 30) -> None:
        """Make sure the process is gone and its log closed; never raises.

        A running node gets SIGTERM and ``grace`` seconds to stop, then SIGKILL (``grace=0``:
        SIGKILL at once, for a test's clean-up).
        """
        if self.proc.poll() is None:
            if grace > 0:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def _check_running(self) -> None:
        if self.proc.poll() is not None:
            raise NodeProcessError(f"node exited with {self.proc.returncode}: {self.output()}")
