"""``bench reconcile``: bytes and round trips for two sets of n ids differing by d (DESIGN §15)."""

from __future__ import annotations

import random
import time

from ark_lattice.bench import SILENT, Measurement, Progress
from ark_lattice.protocol.reconcile import ItemSet, sync_in_memory
from ark_lattice.protocol.session import SessionConfig

__all__ = ["run"]


def run(
    size: int = 100_000,
    differences: tuple[int, ...] = (1, 10, 100, 1000),
    seed: int = 1,
    *,
    progress: Progress = SILENT,
) -> list[Measurement]:
    rng = random.Random(seed)
    base_ms = 1_700_000_000_000
    # (timestamp, id) as a node's store holds them: HLC stamps a few ms apart, SHA-256-like ids.
    shared = [((base_ms + i * 3) << 16, rng.randbytes(32)) for i in range(size)]
    out: list[Measurement] = []
    progress.update(total=len(differences))
    for d in differences:
        progress.update(description=f"reconcile n={size:,}, d={d:,}")
        only_a = d // 2
        only_b = d - only_a
        extra = [((base_ms + rng.randrange(size * 3)) << 16, rng.randbytes(32)) for _ in range(d)]
        a = ItemSet(shared + extra[:only_a])
        b = ItemSet(shared + extra[only_a:])
        started = time.perf_counter()
        stats = sync_in_memory(a, b, frame_size_limit=SessionConfig().recon_frame_limit)
        elapsed = time.perf_counter() - started
        assert len(stats.have) + len(stats.need) == d, "reconciliation missed a difference"
        total = stats.bytes_sent + stats.bytes_received
        note = f"n={size}, d={d}: {only_a} only on one side, {only_b} only on the other"
        out += [
            Measurement(f"reconcile.d{d}.round_trips", stats.rounds, "round trips", note=note),
            Measurement(f"reconcile.d{d}.bytes", total, "bytes", note=note),
            Measurement(f"reconcile.d{d}.bytes_per_difference", total / d, "bytes/difference"),
            Measurement(f"reconcile.d{d}.seconds", elapsed, "s"),
        ]
        progress.advance()
    return out
