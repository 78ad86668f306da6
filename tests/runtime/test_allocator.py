"""The allocator thresholds of a node process (runtime/allocator.py)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ark_lattice.runtime import allocator


def _glibc_with_mallinfo2() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    return hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallinfo2")


# A fresh interpreter: counts the blocks glibc maps on their own (mallinfo2's hblks) while a 3 MiB
# buffer is alive, before and after keep_large_buffers(). 3 MiB: over glibc's starting mmap
# threshold (128 KiB, raised only by freeing a mapped block that big), under MMAP_THRESHOLD.
PROBE = textwrap.dedent(
    """
    import ctypes
    from ark_lattice.runtime.allocator import keep_large_buffers

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2

    def mapped_for_a_buffer():
        before = libc.mallinfo2().hblks
        buffer = bytearray(3 << 20)
        mapped = libc.mallinfo2().hblks - before
        del buffer
        return mapped

    first = mapped_for_a_buffer()
    set_ = keep_large_buffers()
    print(first, set_, mapped_for_a_buffer(), mapped_for_a_buffer())
    """
)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's malloc (2.33 or later) only")
def test_a_large_buffer_comes_from_the_heap_once_the_thresholds_are_set() -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no GLIBC_TUNABLES or MALLOC_* from the test's environment
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env,
        cwd=Path(allocator.__file__).parents[2],  # this checkout's ark_lattice, first on the path
    ).stdout.split()
    assert out == ["1", "True", "0", "0"]  # mapped on its own before; from the heap after


def test_the_operators_own_allocator_settings_are_left_alone(monkeypatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576")
    assert allocator.keep_large_buffers() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert allocator.keep_large_buffers() is False
    assert allocator.give_back() is False


# A fresh interpreter with the node's thresholds: 48 MiB of 64 KiB buffers, all freed but the last,
# which pins the heap's top so that glibc's own trimming at free cannot give anything back. The
# resident anonymous memory (kB) before and after give_back(), and what it returned.
GIVE_BACK_PROBE = textwrap.dedent(
    """
    from ark_lattice.runtime.allocator import give_back, keep_large_buffers

    def anonymous_kb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))

    assert keep_large_buffers()
    buffers = [bytearray(b"x" * (64 << 10)) for _ in range(768)]
    pin = buffers.pop()
    del buffers
    before = anonymous_kb()
    returned = give_back()
    print(before, anonymous_kb(), returned)
    """
)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's malloc only")
def test_free_pages_in_the_middle_of_the_heap_go_back_to_the_kernel() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    before, after, returned = subprocess.run(
        [sys.executable, "-c", GIVE_BACK_PROBE], capture_output=True, text=True, check=True, env=env,
        cwd=Path(allocator.__file__).parents[2],
    ).stdout.split()
    assert returned == "True"
    assert int(before) - int(after) > 40 * 1024, (before, after)  # most of the 48 MiB freed


def test_memory_is_given_back_once_after_each_busy_spell() -> None:
    schedule = allocator.GiveBackSchedule()
    interval = allocator.GIVE_BACK_INTERVAL
    quiet, busy = 0.0, interval  # CPU seconds over an interval: none, one core's worth
    assert schedule.after(quiet, interval)  # the start-up's garbage
    assert not schedule.after(quiet, interval)  # nothing happened since
    assert not schedule.after(busy, interval)  # a sync: its buffers stay warm
    assert not schedule.after(busy, interval)
    assert schedule.after(allocator.QUIET_CPU_SHARE * interval / 2, interval)  # it ended
    assert not schedule.after(quiet, interval)
