"""The garbage collector's settings in a node process (runtime/collector.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from ark_lattice.runtime import collector

# A fresh interpreter, so the test process's own collector is left alone: it keeps 20,000 tuples
# alive (packets in flight) and counts the collections that walk them, before and after
# collect_rarely(); then it checks that a reference cycle is still collected, once enough new
# objects came after it, and that start-up's objects left the oldest generation.
PROBE = textwrap.dedent(
    """
    import gc, weakref
    from ark_lattice.runtime.collector import YOUNG_THRESHOLD, collect_rarely

    runs = []
    gc.callbacks.append(lambda phase, info: phase == "start" and runs.append(info["generation"]))

    def collections_while_holding(n):
        runs.clear()
        held = [(i,) for i in range(n)]
        count = len(runs)
        del held
        return count

    class Node:
        pass

    before = collections_while_holding(20_000)
    old = len(gc.get_objects(generation=2))
    collect_rarely()
    after = collections_while_holding(20_000)
    frozen = gc.get_freeze_count()

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    gone = weakref.ref(a)
    del a, b
    alive_before = gone() is not None
    filler = [[] for _ in range(YOUNG_THRESHOLD + 1)]
    out_of_sight = len(gc.get_objects(generation=2)) < old // 10
    print(before > 10, after, frozen > 0, out_of_sight, alive_before, gone() is None)
    """
)


def test_a_node_process_collects_rarely_but_still_collects_cycles() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
        cwd=Path(collector.__file__).parents[2],  # this checkout's ark_lattice, first on the path
    ).stdout.split()
    # Many young collections before, none after; start-up frozen out of sight; the cycle
    # outlives its last reference, then goes with the next collection.
    assert out == ["True", "0", "True", "True", "True", "True"]
