"""The C allocator's thresholds in a node process: megabyte buffers are reused, not mapped anew.

A node that syncs large packets (1 MiB bodies, frames of up to 2 MiB) allocates and frees several
buffers of a megabyte or more per packet on its way in and out: socket reads, the WebSocket
message, the sealed or opened frame, the CBOR body, the body file read for a peer. glibc maps any
block over its mmap threshold (128 KiB to start with, raised only after such a block is freed) with
its own ``mmap`` and unmaps it on free, and gives the top of a heap back to the kernel once more
than twice that threshold is free; either way the next buffer faults in fresh zeroed pages, one
fault per 4 KiB. On this machine (a VM, where a fault is dear) that was a third of the sender's CPU
per 1 MiB packet and a tenth of the receiver's: ``bench sync --large-packets 300``, in the same
run, sender 2.6 -> 1.6 ms and receiver 7.4 -> 6.2 ms per packet, ingest 138 -> 167 packets/s
(issue 16). Raising the two thresholds keeps those blocks in the heap, reused warm.

The cost is memory kept: up to :data:`TRIM_THRESHOLD` of freed heap per arena stays with the
process instead of going back to the kernel (the peak, VmHWM, moved by about 6 MB in that run).
Nor does glibc ever give back free pages in the middle of a heap, below a block still in use: a
node that synced 100k 1 KiB packets held 24 MB free in its heaps (``malloc_info``) against 11 MB
after 10k, its live blocks the same (issue 16). So :func:`give_back` (``malloc_trim(0)``) hands
every free page of every heap back, once each time the node goes quiet (:class:`GiveBackSchedule`):
a sync's buffers stay warm while it runs, and what it freed leaves the process within seconds of its
end (after a 100k-packet sync: 98-99 MB resident before, 80-83 MB after).

An operator's own settings (``GLIBC_TUNABLES``, ``MALLOC_*_`` variables) win: then nothing is
changed and nothing given back. Other C libraries than glibc are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = [
    "keep_large_buffers", "give_back", "GiveBackSchedule", "MMAP_THRESHOLD", "TRIM_THRESHOLD",
    "GIVE_BACK_INTERVAL", "QUIET_CPU_SHARE",
]

#: Blocks below this come from the heap: a 2 MiB frame and its copies, with room to spare.
MMAP_THRESHOLD = 4 << 20
#: Free memory at the top of a heap kept for reuse: a few frames in flight (transfer.py's
#: window is 32 MiB of packets; the reader, the verifier and the writer hold a handful each).
TRIM_THRESHOLD = 32 << 20
#: Seconds between two looks at whether the node went quiet (:class:`GiveBackSchedule`).
GIVE_BACK_INTERVAL = 2.0
#: A process that used less CPU than this share of one core over an interval is quiet. Given back
#: during a sync, the pages come back at a fault each (4 KiB): with a hand-back every two seconds,
#: a 1 MiB-packet sync took 4.43 against 4.13 ms of the receiver's CPU a packet (medians of three
#: pairs, bench sync --large-packets 300), within its noise but not worth the risk.
QUIET_CPU_SHARE = 0.1


class GiveBackSchedule:
    """When to give back: once after each busy spell, at its first quiet interval. Pure: the
    caller measures the CPU its process used over each interval."""

    def __init__(self) -> None:
        self._busy = True  # a process that just started has its start-up's garbage to give back

    def after(self, cpu_seconds: float, interval: float = GIVE_BACK_INTERVAL) -> bool:
        """The process used ``cpu_seconds`` over the last ``interval``: give back now?"""
        if cpu_seconds > QUIET_CPU_SHARE * interval:
            self._busy = True
            return False
        due, self._busy = self._busy, False
        return due

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_OPERATOR_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_large_buffers() -> bool:
    """Set the thresholds (see the module doc); True if they were set, False if left alone
    (not glibc, or the operator tuned the allocator)."""
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Each returns 1 on success. Setting the mmap threshold also ends glibc's own adjustment of it.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def give_back() -> bool:
    """Hand the free pages of every heap back to the kernel (see the module doc); False if left
    alone as :func:`keep_large_buffers` is, else whether glibc released any memory."""
    libc = _glibc()
    if libc is None:
        return False
    trim = libc.malloc_trim
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return bool(trim(0))


def _glibc() -> ctypes.CDLL | None:
    """This process's C library if it is glibc's and the operator left its malloc untuned."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _OPERATOR_SETTINGS):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: not glibc's malloc
        return None
    return libc
