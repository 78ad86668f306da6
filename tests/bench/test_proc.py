import os
import subprocess
import sys

import pytest

from ark_lattice.bench.proc import peak_rss, tree_cpu


def test_the_receivers_cpu_and_memory_take_in_its_child_processes() -> None:
    # A receiver may verify on worker processes; their CPU is its CPU. The child waits on its stdin.
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        tree = tree_cpu(os.getpid())
        assert os.getpid() in tree and child.pid in tree
        assert all(seconds >= 0 for seconds in tree.values())
        assert peak_rss(child.pid) > 0
    finally:
        child.communicate(b"", timeout=30)
    assert peak_rss(child.pid, gone=0) == 0
    with pytest.raises(FileNotFoundError):
        peak_rss(child.pid)


def test_an_exited_process_not_yet_waited_for_has_no_peak_to_read() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, still a zombie
        assert peak_rss(child.pid, gone=0) == 0
        with pytest.raises(RuntimeError):
            peak_rss(child.pid)
    finally:
        child.wait(timeout=30)
