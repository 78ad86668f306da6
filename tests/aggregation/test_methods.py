import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.aggregation.methods import METHODS, Params, Result, Update, aggregate
from ark_lattice.aggregation.tensors import encode_arrays
from ark_lattice.encoding import canonical
from ark_lattice.errors import Malformed, UsageError

SHAPES = {"w": (3, 4), "b": (4,)}


def uid(i: int) -> bytes:
    return hashlib.sha256(b"update %d" % i).digest()


def make_updates(n: int, seed: int = 0, dtype: str = "float64", samples=None) -> list[Update]:
    rng = np.random.default_rng(seed)
    return [
        Update(
            id=uid(i),
            author=f"node-{i:02d}",
            samples=int(rng.integers(1, 500)) if samples is None else samples[i],
            arrays={name: rng.normal(size=shape).astype(dtype) for name, shape in SHAPES.items()},
        )
        for i in range(n)
    ]


def ordered(updates: list[Update]) -> list[Update]:
    return sorted(updates, key=lambda u: (u.author.encode(), u.id))


def matrix(updates: list[Update]) -> np.ndarray:
    """Reference flattening: names in sorted order, float64, one row per update (sorted inputs)."""
    return np.array(
        [
            np.concatenate([np.ravel(u.arrays[k]).astype(np.float64) for k in sorted(u.arrays)])
            for u in updates
        ]
    )


def flat(result: Result) -> np.ndarray:
    return np.concatenate([np.ravel(result.arrays[k]).astype(np.float64) for k in sorted(result.arrays)])


def krum_scores_reference(x: np.ndarray, f: int) -> np.ndarray:
    n = len(x)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    return np.array([np.sort(np.delete(d[i], i))[: n - f - 2].sum() for i in range(n)])


# Each method against a straightforward numpy computation.


def test_fedavg_and_fedprox_are_the_sample_weighted_mean():
    ups = make_updates(9)
    x = matrix(ordered(ups))
    w = np.array([u.samples for u in ordered(ups)], dtype=np.float64)
    for method in ("fedavg", "fedprox"):
        result = aggregate(ups, Params(method, mu=0.01 if method == "fedprox" else None))
        assert np.allclose(flat(result), np.average(x, axis=0, weights=w), rtol=0, atol=1e-12)
        assert result.inputs == tuple(sorted(u.id for u in ups))
        assert result.excluded == ()


@pytest.mark.parametrize("n, trim", [(10, 0.1), (10, 0.25), (7, 0.2), (5, 0.0), (11, 0.45)])
def test_trimmed_mean_drops_floor_beta_n_at_each_end(n, trim):
    ups = make_updates(n, seed=n)
    x = matrix(ordered(ups))
    k = int(np.floor(trim * n))
    expected = np.sort(x, axis=0)[k : n - k].mean(axis=0)
    result = aggregate(ups, Params("trimmed-mean", trim=trim))
    assert np.allclose(flat(result), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_median_is_coordinate_wise(n):
    ups = make_updates(n, seed=n)
    result = aggregate(ups, Params("median"))
    assert np.allclose(flat(result), np.median(matrix(ups), axis=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n, f", [(5, 1), (9, 2), (12, 3), (3, 0)])
def test_krum_picks_the_update_with_the_lowest_score(n, f):
    ups = ordered(make_updates(n, seed=n))
    x = matrix(ups)
    best = int(np.argmin(krum_scores_reference(x, f)))
    result = aggregate(ups, Params("krum", f=f))
    assert np.allclose(flat(result), x[best], rtol=0, atol=1e-12)
    assert np.array_equal(result.arrays["w"], ups[best].arrays["w"])  # a Krum output is one of its inputs
    assert result.inputs == tuple(sorted(u.id for u in ups))
    assert sorted(i for i, _ in result.excluded) == sorted(u.id for j, u in enumerate(ups) if j != best)
    assert all(why == "not selected by krum" for _, why in result.excluded)


@pytest.mark.parametrize("n, f, m", [(9, 2, None), (9, 2, 3), (7, 1, 1), (10, 3, 7)])
def test_multi_krum_averages_the_m_best(n, f, m):
    ups = ordered(make_updates(n, seed=100 + n))
    x = matrix(ups)
    scores = krum_scores_reference(x, f)
    chosen = np.argsort(scores, kind="stable")[: n - f if m is None else m]
    result = aggregate(ups, Params("multi-krum", f=f, m=m))
    assert np.allclose(flat(result), x[chosen].mean(axis=0), rtol=0, atol=1e-12)
    assert len(result.excluded) == n - len(chosen)


@pytest.mark.parametrize("n, f", [(7, 1), (11, 2), (12, 2), (15, 3), (3, 0)])
def test_bulyan_is_a_multi_krum_selection_then_a_trimmed_mean(n, f):
    ups = ordered(make_updates(n, seed=200 + n))
    x = matrix(ups)
    chosen = np.sort(np.argsort(krum_scores_reference(x, f), kind="stable")[: n - 2 * f])
    expected = np.sort(x[chosen], axis=0)[f : len(chosen) - f].mean(axis=0)
    result = aggregate(ups, Params("bulyan", f=f))
    assert np.allclose(flat(result), expected, rtol=0, atol=1e-12)
    assert len(result.excluded) == 2 * f


@pytest.mark.parametrize("method", METHODS)
def test_output_keeps_the_inputs_names_shapes_and_dtype(method):
    for dtype in ("float32", "float64"):
        result = aggregate(make_updates(7, dtype=dtype), Params(method, f=1))
        assert {k: (a.shape, a.dtype.name) for k, a in result.arrays.items()} == {
            k: (s, dtype) for k, s in SHAPES.items()
        }


def test_float32_inputs_are_averaged_in_float64_then_cast():
    ups = make_updates(6, dtype="float32")
    x = matrix(ordered(ups))
    w = np.array([u.samples for u in ordered(ups)], dtype=np.float64)
    expected = np.average(x, axis=0, weights=w).astype(np.float32)
    assert np.array_equal(flat(aggregate(ups, Params("fedavg"))).astype(np.float32), expected)


# Determinism: any order gives the same bytes.


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(METHODS),
    st.sampled_from(["float32", "float64"]),
    st.integers(0, 2**32 - 1),
    st.randoms(use_true_random=False),
    st.booleans(),
)
def test_any_input_order_gives_identical_bytes(method, dtype, seed, random, clip):
    ups = make_updates(11, seed=seed, dtype=dtype)
    ups += [  # and some that are left out, which must not change anything either
        Update(uid(40), "sandbox", 5, ups[0].arrays, core=False),
        Update(uid(41), "other-shape", 5, {"w": np.ones((2, 2), dtype=dtype)}),
        Update(uid(42), "node-03", 5, ups[1].arrays),
    ]
    params = Params(method, f=2, clip=1.5 if clip else None)
    expected = aggregate(ups, params)
    shuffled = list(ups)
    random.shuffle(shuffled)
    again = aggregate(shuffled, params)
    assert encode_arrays(again.arrays) == encode_arrays(expected.arrays)
    assert again.inputs == expected.inputs
    assert again.excluded == expected.excluded


@pytest.mark.parametrize("method", METHODS)
def test_the_listed_inputs_alone_reproduce_the_bytes(method):
    ups = make_updates(9, seed=3)
    ups.append(Update(uid(50), "sandbox", 10, ups[0].arrays, core=False))
    ups.append(Update(uid(51), "odd-shape", 10, {"w": np.ones((2, 2))}))
    params = Params(method, f=1)
    result = aggregate(ups, params)
    again = aggregate([u for u in ups if u.id in result.inputs], params)
    assert encode_arrays(again.arrays) == encode_arrays(result.arrays)
    assert again.inputs == result.inputs


# Robustness against poisoning.


def poisoned(n_honest: int, f: int, attack: str, seed: int = 1):
    rng = np.random.default_rng(seed)
    center = rng.normal(size=20)
    honest = [center + 0.05 * rng.normal(size=20) for _ in range(n_honest)]
    honest_mean = np.mean(honest, axis=0)
    bad = -100.0 * honest_mean if attack == "flip-scale" else 100.0 * honest_mean
    ups = [Update(uid(i), f"honest-{i:02d}", 100, {"w": v}) for i, v in enumerate(honest)]
    ups += [Update(uid(100 + j), f"byz-{j}", 100, {"w": bad + 0.01 * j}) for j in range(f)]
    return ups, honest_mean


@pytest.mark.parametrize("attack", ["flip-scale", "scale"])
@pytest.mark.parametrize("f", [1, 2, 3])
def test_robust_rules_stay_near_the_honest_mean_where_fedavg_does_not(attack, f):
    n_honest = 4 * f + 3
    ups, honest_mean = poisoned(n_honest, f, attack)
    norm = np.linalg.norm(honest_mean)

    def distance(method: str) -> float:
        params = Params(method, f=f, trim=(f + 0.5) / (n_honest + f))
        return float(np.linalg.norm(aggregate(ups, params).arrays["w"] - honest_mean) / norm)

    assert distance("fedavg") > 1.0
    for method in ("krum", "multi-krum", "trimmed-mean", "median", "bulyan"):
        assert distance(method) < 0.1, method


def test_krum_never_selects_an_attacker():
    ups, _ = poisoned(9, 2, "flip-scale")
    for method in ("krum", "multi-krum", "bulyan"):
        result = aggregate(ups, Params(method, f=2))
        rejected = {i for i, _ in result.excluded}
        assert {uid(100), uid(101)} <= rejected


def test_a_lying_sample_count_is_capped():
    honest = [Update(uid(i), f"h{i}", 100, {"w": np.zeros(4)}) for i in range(9)]
    liar = Update(uid(9), "liar", 10**9, {"w": np.full(4, 10.0)})
    result = aggregate([*honest, liar], Params("fedavg", max_samples=100))
    assert np.allclose(result.arrays["w"], np.full(4, 1.0))  # weight 100 of 1000, not 10⁹ of 10⁹+900
    default = aggregate([*honest, liar], Params("fedavg"))
    assert np.allclose(default.arrays["w"], np.full(4, 10.0 * 10_000 / 10_900))


def test_a_sandbox_update_is_never_counted():
    ups = make_updates(5)
    outsider = Update(
        uid(77), "sandbox-peer", 10_000, {k: np.full(s, 1e6) for k, s in SHAPES.items()}, core=False
    )
    for method in METHODS:
        result = aggregate([*ups, outsider], Params(method, f=0))
        assert uid(77) not in result.inputs
        assert (uid(77), "not a core peer") in result.excluded
        plain = aggregate(ups, Params(method, f=0))
        assert encode_arrays(result.arrays) == encode_arrays(plain.arrays)
    with pytest.raises(UsageError, match="no core-peer update"):
        aggregate([outsider], Params("fedavg"))


def test_clipping_bounds_each_update_norm_in_float64():
    big = Update(uid(1), "a", 1, {"w": np.array([30.0, 40.0])})  # norm 50
    small = Update(uid(2), "b", 1, {"w": np.array([0.3, 0.4])})  # norm 0.5, untouched
    result = aggregate([big, small], Params("fedavg", clip=5.0))
    assert np.allclose(result.arrays["w"], (np.array([3.0, 4.0]) + np.array([0.3, 0.4])) / 2, atol=1e-15)
    # The norm covers all arrays of an update together.
    split = Update(uid(3), "c", 1, {"a": np.array([3.0]), "b": np.array([4.0])})
    clipped = aggregate([split], Params("median", clip=1.0))
    assert np.allclose([clipped.arrays["a"][0], clipped.arrays["b"][0]], [0.6, 0.8], atol=1e-15)


# What is left out, and why.


def test_mismatched_updates_are_excluded_and_the_majority_shape_wins():
    ups = make_updates(5)
    odd = [
        Update(uid(10), "x1", 5, {"w": np.ones((4, 3)), "b": np.ones(4)}),
        Update(uid(11), "x2", 5, {"w": np.ones((3, 4), dtype=np.float32), "b": np.ones(4, dtype=np.float32)}),
        Update(uid(12), "x3", 5, {"w": np.ones((3, 4))}),
    ]
    result = aggregate([*odd, *ups], Params("fedavg"))
    assert result.inputs == tuple(sorted(u.id for u in ups))
    assert {i for i, why in result.excluded if "differ from the majority" in why} == {
        uid(10),
        uid(11),
        uid(12),
    }


def test_a_tie_between_shapes_goes_to_the_earliest_in_sorted_order():
    a = Update(uid(1), "bbb", 1, {"w": np.ones(2)})
    b = Update(uid(2), "aaa", 1, {"w": np.ones(3)})
    for order in ([a, b], [b, a]):
        assert aggregate(order, Params("fedavg")).inputs == (uid(2),)


def test_malformed_updates_are_excluded_with_a_reason():
    ups = make_updates(4)
    bad = [
        Update(uid(20), "nan", 5, {"w": np.full((3, 4), np.nan), "b": np.ones(4)}),
        Update(uid(21), "int", 5, {"w": np.ones((3, 4), dtype=np.int64), "b": np.ones(4)}),
        Update(uid(22), "zero", 0, {"w": np.ones((3, 4)), "b": np.ones(4)}),
        Update(uid(23), "empty", 5, {}),
    ]
    result = aggregate([*ups, *bad], Params("median"))
    reasons = dict(result.excluded)
    assert set(reasons) == {uid(20), uid(21), uid(22), uid(23)}
    assert all(why.startswith("malformed: ") for why in reasons.values())
    assert "NaN" in reasons[uid(20)] and "dtype" in reasons[uid(21)] and "sample" in reasons[uid(22)]


def test_one_author_counts_once_and_a_repeated_id_once():
    ups = make_updates(3)
    again = Update(uid(0), "node-00", 5, ups[0].arrays)
    second = Update(b"\xff" * 32, "node-01", 5, ups[1].arrays)
    result = aggregate([second, *ups, again], Params("fedavg"))
    assert result.inputs == tuple(sorted(u.id for u in ups))
    reasons = dict(result.excluded)
    assert "twice" in reasons[uid(0)] and "same author" in reasons[b"\xff" * 32]


# Each rule's limits.


@pytest.mark.parametrize(
    "n, params, words",
    [
        (4, Params("krum", f=1), "n ≥ 2f\\+3"),
        (6, Params("krum", f=2), "at least 7"),
        (4, Params("multi-krum", f=1), "n ≥ 2f\\+3"),
        (6, Params("bulyan", f=1), "n ≥ 4f\\+3"),
        (10, Params("bulyan", f=2), "at least 11"),
        (7, Params("multi-krum", f=1, m=7), "at most n − f = 6"),
        (2, Params("trimmed-mean", trim=0.5), "2·floor\\(trim·n\\) < n"),
        (4, Params("trimmed-mean", trim=0.6), "n is 4"),
    ],
)
def test_rule_limits_are_a_usage_error(n, params, words):
    with pytest.raises(UsageError, match=words):
        aggregate(make_updates(n), params)


def test_rule_limits_at_the_boundary_pass():
    aggregate(make_updates(5), Params("krum", f=1))
    aggregate(make_updates(7), Params("bulyan", f=1))
    aggregate(make_updates(3), Params("trimmed-mean", trim=0.6))  # floor(1.8) = 1, 2 < 3


def test_limits_count_only_what_is_counted():
    ups = make_updates(5)
    ups[4] = Update(ups[4].id, ups[4].author, 1, ups[4].arrays, core=False)
    with pytest.raises(UsageError, match="there are 4"):
        aggregate(ups, Params("krum", f=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "fedsgd"},
        {"method": "krum", "f": -1},
        {"method": "trimmed-mean", "trim": 1.0},
        {"method": "trimmed-mean", "trim": -0.1},
        {"method": "fedavg", "clip": 0.0},
        {"method": "fedavg", "clip": float("inf")},
        {"method": "fedavg", "max_samples": 0},
        {"method": "multi-krum", "m": 0},
        {"method": "fedprox", "mu": -1.0},
        {"method": "fedprox", "mu": float("nan")},
    ],
)
def test_bad_params_are_a_usage_error(kwargs):
    with pytest.raises(UsageError):
        Params(**kwargs)


# Params in a model packet.


def test_params_json_round_trip_is_canonical():
    for params in (Params("fedavg"), Params("fedprox", mu=0.01), Params("multi-krum", f=2, m=3, clip=4.0)):
        doc = params.to_json()
        assert Params.from_json(doc) == params
        assert canonical(Params.from_json(doc).to_json()) == canonical(doc)
    assert Params("trimmed-mean", trim=0).to_json()["trim"] == 0.0


@pytest.mark.parametrize(
    "change",
    [
        {"method": "nope"},
        {"method": 3},
        {"f": "1"},
        {"f": True},
        {"f": 1.0},
        {"trim": None},
        {"trim": "0.1"},
        {"clip": float("nan")},
        {"m": 2.5},
        {"extra": 1},
    ],
)
def test_params_from_a_peer_are_checked(change):
    doc = {**Params("krum", f=1).to_json(), **change}
    with pytest.raises(Malformed):
        Params.from_json(doc)
    with pytest.raises(Malformed):
        Params.from_json([1, 2])
    missing = Params("krum").to_json()
    del missing["mu"]
    with pytest.raises(Malformed):
        Params.from_json(missing)
