"""What the kernel says of a bench's processes (proc(5)): CPU seconds and peak resident memory."""

from __future__ import annotations

import os

__all__ = ["cpu_seconds", "peak_rss", "tree_cpu"]

_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a live process and of each of its live descendants, by pid.

    The descendants count too: a receiver may verify on a pool of worker processes (issue 16), and
    their work is its work. A worker that exits inside the window takes its CPU with it.
    """
    found: dict[int, float] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            found[current] = cpu_seconds(current)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(child) for child in f.read().split()]
        except FileNotFoundError:  # it exited between two reads
            found.pop(current, None)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (proc(5): fields 14 and 15 of stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


def peak_rss(pid: int, *, gone: int | None = None) -> int:
    """Peak resident set size of a live process in bytes (``VmHWM`` in /proc/<pid>/status); ``gone``
    if it has exited (when given)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        if gone is None:
            raise
        return gone
    if gone is None:
        raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
    return gone  # a zombie: exited, not yet waited for, its memory gone
