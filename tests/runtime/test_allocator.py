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
