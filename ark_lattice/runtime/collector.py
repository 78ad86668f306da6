"""The cyclic garbage collector of a node process: young collections far apart, start-up left out.

CPython collects its youngest generation each time 700 more container objects (tuples, lists,
dicts, instances) are alive than at the last collection, and walks every one of them, the GIL held:
every thread of the node waits meanwhile. A syncing node keeps thousands of packets in flight (the
transfer window asks for 2,048 at once, each a packet, its header, its frame entry and a few
tuples), and nearly none of them is in a reference cycle: reference counting frees them. So each
collection walked the same live packets, moved them to an older generation, and walked them
again there. The receiver of 40k 1 KiB packets spent 412 ms (7.5% of the sync) in 463
collections that freed 732 objects. With the young threshold at :data:`YOUNG_THRESHOLD` and
start-up frozen, none runs during such a sync: it ends with about 9,000 more objects alive than it
began with (issue 16).

``gc.freeze()`` moves what start-up made (modules, classes, the policy's compiled programs: about
50k objects) out of the collector's sight, so the rare full collection no longer walks it. Start-up's
own garbage is collected first: frozen objects are never collected.

Objects in a cycle now wait longer for their collection: until :data:`YOUNG_THRESHOLD` more
container objects are alive, not 700 (the receiver's peak RSS at 100k packets did not move:
`bench sync --rss`).
"""

from __future__ import annotations

import gc

__all__ = ["collect_rarely", "YOUNG_THRESHOLD"]

#: Net new container objects between two young collections (CPython's default is 700).
YOUNG_THRESHOLD = 50_000


def collect_rarely() -> None:
    """Collect once, freeze what is left, and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
