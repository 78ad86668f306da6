"""Aggregation rules for federated model updates (DESIGN §10): pure, deterministic, bit-identical.

``aggregate(updates, params)`` is a pure function. The same updates in any order, on any node, give
the same ``Result`` and so the same ``encode_arrays(result.arrays)`` bytes, which is what lets every
core node check a published ``model`` packet by recomputing it.

What is counted, in this order:

1. updates are sorted by (author as UTF-8 bytes, id) before anything else;
2. an update whose author is not a core peer is excluded ("not a core peer");
3. a repeated id is excluded, and only one update per author counts (the lowest id): one author
   cannot multiply its vote, which would break every rule's ``f``;
4. an update whose arrays break the layout rules (``tensors.array_problem``: no NaN/Inf, float32 or
   float64 only) or whose sample count is not an integer >= 1 is excluded as malformed;
5. all counted updates must share names, shapes and dtypes: the signature held by the most updates
   wins (a tie goes to the signature of the earliest update in the sorted order) and the others are
   excluded as mismatched. No update left is a :class:`UsageError`.

``Result.inputs`` are the ids that entered the rule: calling ``aggregate`` on exactly those updates
gives the same bytes, so a ``model`` packet lists them. An update a rule rejects as a whole (not
selected by Krum, multi-Krum or Bulyan) is also listed in ``Result.excluded``: it was an input of the
selection but its values are not in the output.

Arithmetic: each update is flattened (arrays in name order) to float64; with ``clip``, an update
whose L2 norm is over ``clip`` is scaled down to it, its norm computed with ``math.fsum`` (exactly
rounded, so the same on every platform); sums over updates run row by row in the sorted order, never
through BLAS; the output is cast back to the inputs' dtype.

Rules (n counted updates):

- ``fedavg``: the mean weighted by min(samples, max_samples) — a capped weight, since a self-reported
  count of 10⁹ would otherwise own the average.
- ``fedprox``: server side exactly FedAvg. µ (``Params.mu``) is the clients' proximal term, carried in
  the round config (Li et al. 2020, as in Flower); a server-side blend would be FedAvgM, not FedProx.
- ``trimmed-mean``: coordinate-wise, drop k = floor(trim·n) values at each end and average the rest;
  needs 2k < n.
- ``median``: coordinate-wise median (the mean of the two middle values when n is even).
- ``krum`` (Blanchard et al. 2017): each update's score is the sum of squared distances to its
  n − f − 2 closest others; the lowest score wins (ties: earliest in sorted order); needs n ≥ 2f + 3.
- ``multi-krum``: the uniform mean of the m lowest-scoring updates (default m = n − f, 1 ≤ m ≤ n − f).
  Uniform, not sample-weighted: sample counts are self-reported.
- ``bulyan`` (El Mhamdi et al. 2018): select θ = n − 2f updates the multi-Krum way (the θ lowest Krum
  scores, computed once over all n), then the coordinate-wise trimmed mean of the θ selected, dropping
  f at each end; needs n ≥ 4f + 3. The paper re-runs Krum on the shrinking set instead; once that set
  is under 2f + 3 a tight cluster of attackers scores best, so we score once over everyone.

Krum distances are float64 sums of squares from ``np.sum`` (numpy's pairwise summation, not BLAS).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ark_lattice.aggregation.tensors import array_problem
from ark_lattice.errors import Malformed, UsageError

__all__ = ["METHODS", "Update", "Params", "Result", "aggregate"]

METHODS = ("fedavg", "fedprox", "trimmed-mean", "median", "krum", "multi-krum", "bulyan")

NOT_CORE = "not a core peer"
DUPLICATE_ID = "the same update id appears twice"
SAME_AUTHOR = "another update from the same author is counted (one per author per aggregation)"
MISMATCHED = "its array names, shapes or dtypes differ from the majority's"

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Update:
    """One model update: the ``model_update`` packet id, its author and its arrays."""

    id: bytes
    author: str
    samples: int
    arrays: Mapping[str, npt.NDArray[Any]]
    core: bool = True


@dataclass(frozen=True)
class Params:
    """A rule and its parameters; ``to_json``/``from_json`` give the canonical form a model packet carries."""

    method: str
    f: int = 0
    trim: float = 0.1
    clip: float | None = None
    max_samples: int = 10_000
    m: int | None = None
    mu: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"unknown aggregation method {self.method!r}; use one of {', '.join(METHODS)}")
        if not _is_int(self.f) or self.f < 0:
            raise UsageError("f (the byzantine updates tolerated) must be an integer of at least 0")
        if not _is_real(self.trim) or not 0 <= self.trim < 1:
            raise UsageError("trim must be a fraction from 0 up to (not including) 1")
        if self.clip is not None and (not _is_real(self.clip) or not 0 < self.clip < math.inf):
            raise UsageError("clip must be a positive, finite L2 norm")
        if not _is_int(self.max_samples) or self.max_samples < 1:
            raise UsageError("max_samples must be an integer of at least 1")
        if self.m is not None and (not _is_int(self.m) or self.m < 1):
            raise UsageError("m (the updates multi-krum averages) must be an integer of at least 1")
        if self.mu is not None and (not _is_real(self.mu) or not 0 <= self.mu < math.inf):
            raise UsageError("mu (the FedProx proximal term) must be a finite number of at least 0")

    def to_json(self) -> dict[str, Any]:
        """Every field, floats as floats: ``canonical(params.to_json())`` is the same on every node."""
        return {
            "method": self.method,
            "f": self.f,
            "trim": float(self.trim),
            "clip": None if self.clip is None else float(self.clip),
            "max_samples": self.max_samples,
            "m": self.m,
            "mu": None if self.mu is None else float(self.mu),
        }

    @classmethod
    def from_json(cls, doc: Any) -> Params:
        """Parse a peer's params; anything but exactly ``to_json``'s keys and types is :class:`Malformed`."""
        if not isinstance(doc, Mapping) or set(doc) != _PARAM_KEYS:
            raise Malformed(f"aggregation params must have exactly the keys {', '.join(sorted(_PARAM_KEYS))}")
        for key in ("f", "max_samples", "m"):
            if not (_is_int(doc[key]) or (key == "m" and doc[key] is None)):
                raise Malformed(f"aggregation param {key!r} must be an integer")
        for key in ("trim", "clip", "mu"):
            if not (_is_real(doc[key]) or (key != "trim" and doc[key] is None)):
                raise Malformed(f"aggregation param {key!r} must be a number")
        if not isinstance(doc["method"], str):
            raise Malformed("aggregation param 'method' must be text")
        try:
            return cls(
                method=doc["method"],
                f=doc["f"],
                trim=float(doc["trim"]),
                clip=None if doc["clip"] is None else float(doc["clip"]),
                max_samples=doc["max_samples"],
                m=doc["m"],
                mu=None if doc["mu"] is None else float(doc["mu"]),
            )
        except UsageError as exc:
            raise Malformed(str(exc)) from None


@dataclass(frozen=True)
class Result:
    """The output arrays (inputs' dtype), the ids that entered the rule (sorted), and what was left out."""

    arrays: dict[str, npt.NDArray[Any]]
    inputs: tuple[bytes, ...]
    excluded: tuple[tuple[bytes, str], ...] = field(default=())


def aggregate(updates: Sequence[Update], params: Params) -> Result:
    """Aggregate ``updates`` by ``params.method`` (see the module docstring for every rule)."""
    counted, excluded = _select(updates)
    if not counted:
        raise UsageError("there is no core-peer update to aggregate")
    names = sorted(counted[0].arrays)
    template = {name: counted[0].arrays[name] for name in names}
    rows = [_flatten(update, names) for update in counted]
    if params.clip is not None:
        rows = [_clip(row, params.clip) for row in rows]
    n, f = len(rows), params.f
    method = params.method
    rejected: list[int] = []
    if method in ("fedavg", "fedprox"):
        weights = [min(update.samples, params.max_samples) for update in counted]
        flat = _weighted_mean(rows, weights)
    elif method == "trimmed-mean":
        k = math.floor(params.trim * n)
        if 2 * k >= n:
            raise UsageError(f"trimmed-mean with trim {params.trim} needs 2·floor(trim·n) < n; n is {n}")
        flat = _trimmed_mean(np.stack(rows), k)
    elif method == "median":
        flat = np.median(np.stack(rows), axis=0)
    elif method in ("krum", "multi-krum"):
        if n < 2 * f + 3:
            raise UsageError(
                f"{method} with f={f} needs at least {2 * f + 3} updates (n ≥ 2f+3); there are {n}"
            )
        m = 1 if method == "krum" else (n - f if params.m is None else params.m)
        if m > n - f:
            raise UsageError(f"multi-krum can average at most n − f = {n - f} updates, not m={m}")
        scores = _krum_scores(_distances(rows), list(range(n)), f)
        chosen = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])
        rejected = [i for i in range(n) if i not in chosen]
        flat = _mean([rows[i] for i in chosen])
    elif method == "bulyan":
        if n < 4 * f + 3:
            raise UsageError(
                f"bulyan with f={f} needs at least {4 * f + 3} updates (n ≥ 4f+3); there are {n}"
            )
        scores = _krum_scores(_distances(rows), list(range(n)), f)
        chosen = sorted(sorted(range(n), key=lambda i: (scores[i], i))[: n - 2 * f])
        rejected = [i for i in range(n) if i not in chosen]
        flat = _trimmed_mean(np.stack([rows[i] for i in chosen]), f)
    else:  # pragma: no cover - Params refuses any other method
        raise UsageError(f"unknown aggregation method {method!r}")
    if not bool(np.isfinite(flat).all()):
        raise UsageError("the aggregate overflowed to an infinite value")
    excluded.extend((counted[i].id, f"not selected by {method}") for i in rejected)
    return Result(
        arrays=_unflatten(flat, template),
        inputs=tuple(sorted(update.id for update in counted)),
        excluded=tuple(sorted(excluded)),
    )


_PARAM_KEYS = frozenset({"method", "f", "trim", "clip", "max_samples", "m", "mu"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _signature(update: Update) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    return tuple((name, a.dtype.name, tuple(a.shape)) for name, a in sorted(update.arrays.items()))


def _select(updates: Sequence[Update]) -> tuple[list[Update], list[tuple[bytes, str]]]:
    """The updates that enter the rule (sorted), and (id, why) for every other one."""
    for update in updates:
        if not isinstance(update.id, bytes) or not isinstance(update.author, str):
            raise UsageError("an update needs a bytes id and a text author")
    ordered = sorted(updates, key=lambda u: (u.author.encode("utf-8", "surrogatepass"), u.id))
    excluded: list[tuple[bytes, str]] = []
    seen_ids: set[bytes] = set()
    seen_authors: set[str] = set()
    valid: list[Update] = []
    for update in ordered:
        if update.id in seen_ids:
            excluded.append((update.id, DUPLICATE_ID))
            continue
        seen_ids.add(update.id)
        if not update.core:
            excluded.append((update.id, NOT_CORE))
            continue
        if update.author in seen_authors:
            excluded.append((update.id, SAME_AUTHOR))
            continue
        reason = array_problem(update.arrays)
        if reason is None and (not _is_int(update.samples) or update.samples < 1):
            reason = "its sample count is not an integer of at least 1"
        if reason is not None:
            excluded.append((update.id, f"malformed: {reason}"))
            continue
        seen_authors.add(update.author)
        valid.append(update)
    if not valid:
        return [], excluded
    signatures = [_signature(update) for update in valid]
    counts = Counter(signatures)
    best = max(counts.values())
    winner = next(sig for sig in signatures if counts[sig] == best)  # ties: earliest in sorted order
    counted = []
    for update, sig in zip(valid, signatures, strict=True):
        if sig == winner:
            counted.append(update)
        else:
            excluded.append((update.id, MISMATCHED))
    return counted, excluded


def _flatten(update: Update, names: list[str]) -> F64:
    return np.concatenate([np.asarray(update.arrays[name], dtype=np.float64).ravel() for name in names])


def _unflatten(flat: F64, template: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    out: dict[str, npt.NDArray[Any]] = {}
    start = 0
    for name, like in template.items():
        size = int(like.size)
        out[name] = np.ascontiguousarray(
            flat[start : start + size].reshape(like.shape).astype(like.dtype.name)
        )
        start += size
    return out


def _clip(row: F64, bound: float) -> F64:
    norm = math.sqrt(math.fsum((row * row).tolist()))
    if norm <= bound:
        return row
    return row * (bound / norm)


def _weighted_mean(rows: list[F64], weights: list[int]) -> F64:
    total = sum(weights)  # exact: Python integers
    acc = np.zeros_like(rows[0])
    scratch = np.empty_like(rows[0])
    for row, weight in zip(rows, weights, strict=True):
        np.multiply(row, float(weight), out=scratch)
        acc += scratch
    result: F64 = acc / float(total)
    return result


def _mean(rows: list[F64]) -> F64:
    acc = np.zeros_like(rows[0])
    for row in rows:
        acc += row
    result: F64 = acc / float(len(rows))
    return result


def _trimmed_mean(stacked: F64, k: int) -> F64:
    ordered = np.sort(stacked, axis=0)
    kept = ordered[k : stacked.shape[0] - k]
    return _mean(list(kept))


def _distances(rows: list[F64]) -> F64:
    n = len(rows)
    dist = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            diff = rows[i] - rows[j]
            dist[i, j] = dist[j, i] = float(np.sum(diff * diff))
    return dist


def _krum_scores(dist: F64, candidates: list[int], f: int) -> dict[int, float]:
    """Each candidate's sum of squared distances to its len(candidates) − f − 2 closest other candidates."""
    closest = max(len(candidates) - f - 2, 0)
    scores: dict[int, float] = {}
    for i in candidates:
        others = sorted(float(dist[i, j]) for j in candidates if j != i)
        scores[i] = math.fsum(others[:closest])
    return scores
