"""``bench aggregate``: FedAvg against numpy's own weighted mean, and the robust rules' times (issue 14).

``updates`` core updates of ``params`` float32 parameters each (one array, seeded normal values,
sample counts 100..1000, all under ``Params.max_samples`` so no weight is capped), the same inputs
for every measurement:

- ``aggregate.fedavg``: our :func:`~ark_lattice.aggregation.methods.aggregate` with ``fedavg`` and
  no clipping, in updates/s; the bound is ``np.average(stacked, axis=0, weights=w)`` over the same
  arrays already stacked into one ``(updates, params)`` float32 matrix — bare numpy, which may sum
  in any order; ours sums row by row in float64 in a fixed order so that every node gets the same
  bits. The ratio is numpy's time ÷ ours (target ≥ 0.5, reported, never asserted).
- ``aggregate.fedavg.time``, and ``aggregate.<rule>.time`` (ms) for ``krum``, ``median`` and
  ``trimmed-mean`` (f = 2, trim = f/n; with fewer than 7 updates f is lowered to what Krum's
  n >= 2f + 3 allows), with no bound.

Each time is the best of :data:`REPEATS` runs. After timing, our FedAvg output is checked against
numpy's (float32 tolerance): a bench of a wrong result would be no bench.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np

from ark_lattice.bench import SILENT, Measurement, Progress

__all__ = ["run", "REPEATS", "F"]

REPEATS = 3
F = 2  # byzantine updates the Krum family and the trimmed mean allow for
SEED = 14


def _best(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def run(
    updates: int = 20, params: int = 1_000_000, *, repeats: int = REPEATS, progress: Progress = SILENT
) -> list[Measurement]:
    from ark_lattice.aggregation.methods import Params, Update, aggregate

    if updates < 3 or params < 1:
        raise ValueError("bench aggregate needs at least three updates (Krum) of one parameter")
    rng = np.random.default_rng(SEED)
    progress.update(total=6, description=f"preparing {updates} updates of {params:,} float32 parameters")
    arrays = [rng.standard_normal(params, dtype=np.float32) for _ in range(updates)]
    samples = [int(s) for s in rng.integers(100, 1001, size=updates)]
    batch = [
        Update(id=i.to_bytes(32, "big"), author=f"bench-{i:03d}", samples=s, arrays={"w": a})
        for i, (a, s) in enumerate(zip(arrays, samples, strict=True))
    ]
    stacked = np.stack(arrays)
    weights = np.array(samples, dtype=np.float64)
    progress.advance()

    progress.update(description=f"fedavg: ours, best of {repeats}")
    fedavg = Params("fedavg")
    ours_s = _best(lambda: aggregate(batch, fedavg), repeats)
    progress.advance()
    progress.update(description=f"fedavg: np.average, best of {repeats}")
    numpy_s = _best(lambda: np.average(stacked, axis=0, weights=weights), repeats)
    ours = np.asarray(aggregate(batch, fedavg).arrays["w"], dtype=np.float64)
    reference = np.average(stacked, axis=0, weights=weights)
    if not np.allclose(ours, reference, rtol=1e-5, atol=1e-6):
        raise RuntimeError("bench aggregate: our FedAvg differs from numpy's weighted mean")
    progress.advance()

    size = f"{updates} updates of {params:,} float32 parameters"
    rows = [
        Measurement(
            "aggregate.fedavg", updates / ours_s, "updates/s", bound=updates / numpy_s,
            note=f"{size}, core, no clipping, best of {repeats}; bound: np.average(stacked, axis=0, "
            "weights=samples) on the same arrays pre-stacked into one float32 matrix (ratio: numpy's "
            "time / ours; target >= 0.5, not asserted). Ours sums row by row in float64 in a fixed "
            "order, for identical bytes on every node",
        ),
        Measurement("aggregate.fedavg.time", ours_s * 1000, "ms", note=size),
    ]
    f = max(0, min(F, (updates - 3) // 2))  # Krum needs n >= 2f + 3: fewer at a tiny size
    for method, rule in (
        ("krum", Params("krum", f=f)),
        ("median", Params("median")),
        ("trimmed-mean", Params("trimmed-mean", trim=f / updates)),
    ):
        progress.update(description=f"{method}: best of {repeats}")
        seconds = _best(partial(aggregate, batch, rule), repeats)
        rows.append(Measurement(
            f"aggregate.{method.replace('-', '_')}.time", seconds * 1000, "ms",
            note=f"{size}, f={f}" + (f", trim={f}/{updates}" if method == "trimmed-mean" else "")
            + f", best of {repeats}",
        ))
        progress.advance()
    return rows
