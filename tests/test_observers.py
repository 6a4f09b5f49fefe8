"""Observers: numpy references for every statistic, and the jit / vmap / savez contract."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.errors import InputError
from edgeq.quant.observers import (
    MASK_FILL,
    HistogramObserver,
    Observer,
    State,
    kl_divergences,
    make_observer,
    observer_names,
)
from edgeq.quant.qtypes import QDType, choose_qparams, fake_quant, qdtype

INT8, INT4, UINT8 = qdtype("int8"), qdtype("int4"), qdtype("uint8")

# every registered observer with small settings (test_every_observer_is_covered checks the keys)
ALL: dict[str, dict[str, Any]] = {
    "minmax": {},
    "ema_minmax": {"averaging_constant": 0.1},
    "percentile": {"bins": 64, "percentile": 99.0},
    "mse": {"bins": 64},
    "entropy": {"bins": 512},
}
SPECIALS = [np.nan, np.inf, -np.inf, -1e9, -3.4e38, MASK_FILL, -9999.0, 0.0, -0.0]
WIDTH = 16  # every hypothesis batch is padded with NaN to this many values: one compile


@functools.cache
def jitted(obs: Observer) -> Callable[[State, Any], State]:
    return jax.jit(obs.update)


def stream(obs: Observer, batches: list[np.ndarray], state: State | None = None) -> State:
    state = obs.init() if state is None else state
    for x in batches:
        state = jitted(obs)(state, x)
    return state


def valid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32).ravel()
    return x[np.isfinite(x) & (x > MASK_FILL)]


def pad(values: list[float]) -> np.ndarray:
    out = np.full(WIDTH, np.nan, np.float32)
    out[: len(values)] = values
    return out


def gaussian_stream(n: int, seed: int, chunk: int = 1000, scale: float = 1.0) -> list[np.ndarray]:
    """n N(0, scale²) values in NaN-padded chunks of one shape."""
    data = (np.random.default_rng(seed).normal(size=n) * scale).astype(np.float32)
    padded = np.full(-(-n // chunk) * chunk, np.nan, np.float32)
    padded[:n] = data
    return list(padded.reshape(-1, chunk))


# XLA flushes float32 subnormals to zero (FTZ/DAZ) while numpy keeps them: the references
# would disagree on their sign bin and on min/max, so values are normal floats or zero
value = st.one_of(
    st.floats(-1e6, 1e6, width=32, allow_subnormal=False),
    st.sampled_from(SPECIALS),
    st.floats(-(2.0**-10), 2.0**-10, width=32, allow_subnormal=False),  # near the zero edge
)
batch = st.lists(value, min_size=0, max_size=WIDTH).map(pad)
batches = st.lists(batch, min_size=1, max_size=5)


def test_every_observer_is_covered() -> None:
    assert set(ALL) == set(observer_names())


def test_make_observer_settings() -> None:
    obs = make_observer("percentile", bins=128, percentile=99.9, unknown=3)
    assert (obs.bins, obs.percentile) == (128, 99.9)
    with pytest.raises(InputError):
        make_observer("histogram_of_doom")
    with pytest.raises(InputError):
        make_observer("mse", bins=30)  # not a multiple of 4
    with pytest.raises(InputError):
        make_observer("percentile", percentile=20.0)


# minmax / ema_minmax -------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(batches=batches, shape=st.sampled_from([(16,), (4, 4), (2, 2, 4)]))
def test_minmax_matches_numpy(batches: list[np.ndarray], shape: tuple[int, ...]) -> None:
    obs = make_observer("minmax")
    state = stream(obs, [b.reshape(shape) for b in batches])
    seen = np.concatenate([valid(b) for b in batches])
    expect = (float(seen.min()), float(seen.max())) if seen.size else (0.0, 0.0)
    assert obs.finalize(state, INT8, False) == expect


@settings(max_examples=25, deadline=None)
@given(
    batches=batches,
    shape=st.sampled_from([(16,), (4, 4)]),
    c=st.sampled_from([0.01, 0.1, 0.5, 1.0]),
)
def test_ema_minmax_matches_numpy(batches: list[np.ndarray], shape: tuple[int, ...], c: float):
    obs = make_observer("ema_minmax", averaging_constant=c)
    state = stream(obs, [b.reshape(shape) for b in batches])
    lo = hi = None
    cf = np.float32(c)
    for b in batches:  # reference: numpy loop, float32
        v = valid(b)
        if v.size == 0:
            continue
        if lo is None:
            lo, hi = v.min(), v.max()
        else:
            lo, hi = lo + cf * (v.min() - lo), hi + cf * (v.max() - hi)
    got = obs.finalize(state, INT8, True)
    if lo is None:
        assert got == (0.0, 0.0)
    else:
        np.testing.assert_allclose(got, (lo, hi), rtol=1e-5, atol=1e-6)
    assert int(state["batches"]) == sum(valid(b).size > 0 for b in batches)


# histogram mechanism -------------------------------------------------------------------------
def expected_range(values: np.ndarray) -> float:
    """Smallest power of two ≥ max|x| (at least 2^-20), 0 when there is nothing."""
    if values.size == 0:
        return 0.0
    return float(2.0 ** np.ceil(np.log2(max(np.abs(values).max(), 2.0**-20))))


@settings(max_examples=25, deadline=None)
@given(batches=batches, bins=st.sampled_from([8, 64, 2048]))
def test_histogram_equals_numpy(batches: list[np.ndarray], bins: int) -> None:
    """Streamed with re-binning, the histogram is np.histogram of all values on the final
    [-R, R], exactly: power-of-two bins make binning and merging bin pairs exact."""
    obs = make_observer("percentile", bins=bins)
    state = stream(obs, batches)
    seen = np.concatenate([valid(b) for b in batches]).astype(np.float64)
    r = expected_range(seen)
    assert float(state["range"]) == r
    assert float(np.sum(state["hist"])) == seen.size
    if seen.size:
        ref, _ = np.histogram(seen, bins=bins, range=(-r, r))
        np.testing.assert_array_equal(np.asarray(state["hist"]), ref)
        assert (float(state["min"]), float(state["max"])) == (seen.min(), seen.max())


@settings(max_examples=25, deadline=None)
@given(batches=batches, split=st.integers(0, 5), bins=st.sampled_from([8, 64]))
def test_histogram_merge_equals_concatenated_stream(
    batches: list[np.ndarray], split: int, bins: int
) -> None:
    obs = make_observer("mse", bins=bins)
    whole = stream(obs, batches)
    merged = obs.merge(stream(obs, batches[:split]), stream(obs, batches[split:]))
    for key in whole:
        np.testing.assert_array_equal(np.asarray(merged[key]), np.asarray(whole[key]), key)
        assert np.asarray(merged[key]).dtype == np.asarray(obs.init()[key]).dtype


def test_histogram_growth_rebins_pairs() -> None:
    obs = make_observer("percentile", bins=8)
    state = jitted(obs)(obs.init(), pad([0.3, -0.1]))  # R = 0.5, bin width 0.125
    assert float(state["range"]) == 0.5
    np.testing.assert_array_equal(state["hist"], [0, 0, 0, 1, 0, 0, 1, 0])
    state = jitted(obs)(state, pad([3.0]))  # R = 4: doubled 3 times, width 1
    assert float(state["range"]) == 4.0
    np.testing.assert_array_equal(state["hist"], [0, 0, 0, 1, 1, 0, 0, 1])


def test_histogram_non_power_of_two_bins() -> None:
    """Bins a multiple of 4 but not a power of two: re-binning is still exact, binning rounds
    x·bins/2R once, so a value within an ulp of an edge may land one bin off (not here)."""
    obs = make_observer("entropy", bins=24)
    data = gaussian_stream(3000, seed=3, scale=5.0)
    state = stream(obs, data)
    seen = np.concatenate([valid(b) for b in data]).astype(np.float64)
    r = float(state["range"])
    ref, _ = np.histogram(seen, bins=24, range=(-r, r))
    assert float(np.sum(state["hist"])) == seen.size
    assert np.abs(np.asarray(state["hist"]) - ref).sum() <= 2


def test_histogram_huge_values_stay_finite() -> None:
    obs = make_observer("percentile", bins=64)
    state = jitted(obs)(obs.init(), pad([3.0e38, -3.4e38, 1.0]))  # -3.4e38 is mask fill
    assert float(state["range"]) == 2.0**127
    assert float(np.sum(state["hist"])) == 2
    assert np.all(np.isfinite(np.asarray(state["hist"])))


# percentile ----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    n=st.sampled_from([997, 4999]),  # primes: n·p/100 is never an integer (no rank ties)
    p=st.sampled_from([99.0, 99.9, 99.99, 100.0]),
    seed=st.integers(0, 2**16),
    skew=st.floats(0.2, 5.0),
)
def test_percentile_within_one_bin(n: int, p: float, seed: int, skew: float) -> None:
    """The histogram quantile lies in the bin holding the order statistic that numpy's
    `inverted_cdf` percentile returns, so they differ by at most one bin width."""
    obs = make_observer("percentile", bins=256, percentile=p)
    data = gaussian_stream(n, seed)
    data = [np.where(b > 0, b * skew, b) for b in data]  # different tails on each side
    state = stream(obs, data)
    seen = np.concatenate([valid(b) for b in data]).astype(np.float64)
    width = 2.0 * float(state["range"]) / obs.bins
    lo, hi = obs.finalize(state, INT8, symmetric=False)
    assert abs(lo - np.percentile(seen, 100.0 - p, method="inverted_cdf")) <= width * 1.0001
    assert abs(hi - np.percentile(seen, p, method="inverted_cdf")) <= width * 1.0001
    assert seen.min() <= lo <= hi <= seen.max()
    slo, shi = obs.finalize(state, INT8, symmetric=True)
    amax = max(-slo, shi)
    assert abs(amax - np.percentile(np.abs(seen), p, method="inverted_cdf")) <= width * 1.0001
    assert slo >= seen.min() and shi <= seen.max()


def test_percentile_100_is_minmax() -> None:
    obs = make_observer("percentile", bins=64, percentile=100.0)
    data = gaussian_stream(500, seed=1)
    seen = np.concatenate([valid(b) for b in data])
    assert obs.finalize(stream(obs, data), INT8, False) == (seen.min(), seen.max())


# mse -----------------------------------------------------------------------------------------
def quant_mse(x: np.ndarray, lo: float, hi: float, q: QDType, symmetric: bool) -> float:
    scale, zp = choose_qparams(lo, hi, q, symmetric)
    return float(np.mean((fake_quant(x, scale, zp, q) - x).astype(np.float64) ** 2))


@pytest.fixture(scope="module")
def outlier_data() -> list[np.ndarray]:
    """2^18 N(0, 1) values and a few at ±40 (the bulk's error outweighs clipping them)."""
    data = gaussian_stream(1 << 18, seed=7, chunk=1 << 16)
    data[1][:3] = [40.0, -38.0, 35.0]
    return data


@pytest.mark.parametrize("q", [INT8, INT4], ids=["int8", "int4"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_mse_clips_outliers(outlier_data: list[np.ndarray], q: QDType, symmetric: bool) -> None:
    obs = make_observer("mse")
    state = stream(obs, outlier_data)
    x = np.concatenate(outlier_data)
    x = x[np.isfinite(x)]
    lo, hi = obs.finalize(state, q, symmetric)
    assert x.min() <= lo < 0 < hi <= x.max()
    assert hi - lo < 0.9 * (x.max() - x.min())
    assert quant_mse(x, lo, hi, q, symmetric) <= quant_mse(x, x.min(), x.max(), q, symmetric)


@pytest.mark.parametrize(("q", "close"), [(INT8, 0.95), (INT4, 0.85)], ids=["int8", "int4"])
def test_mse_keeps_uniform_range(q: QDType, close: float) -> None:
    obs = make_observer("mse")
    rng = np.random.default_rng(0)
    data = [rng.uniform(-1.0, 3.0, 4000).astype(np.float32) for _ in range(3)]
    state = stream(obs, data)
    lo, hi = obs.finalize(state, q, symmetric=False)
    assert lo <= close * float(state["min"]) and hi >= close * float(state["max"])
    slo, shi = obs.finalize(state, q, symmetric=True)
    assert shi >= close * float(state["max"]) and slo == float(state["min"])


# entropy -------------------------------------------------------------------------------------
def kl_reference(hist: np.ndarray, levels: int, eps: float = 1e-4) -> np.ndarray:
    """TensorRT's loop, one threshold at a time (no smoothing beyond the empty-last-group eps)."""
    out = []
    for i in range(levels, hist.size + 1):
        p = hist[:i].astype(np.float64)
        p[-1] += hist[i:].sum()
        q = np.zeros(i)
        bounds = (np.arange(levels + 1) * i) // levels
        for a, b in itertools.pairwise(bounds):
            nz = p[a:b] > 0
            if nz.any():
                q[a:b][nz] = max(hist[a:b].sum(), eps if b == i else 0.0) / nz.sum()
        p, q = p / p.sum(), q / q.sum()
        m = p > 0
        out.append(float(np.sum(p[m] * np.log(p[m] / q[m]))))
    return np.array(out)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), levels=st.sampled_from([4, 8, 16]))
def test_kl_divergences_match_loop(seed: int, levels: int) -> None:
    rng = np.random.default_rng(seed)
    hist = rng.poisson(rng.uniform(0, 5, 48)).astype(np.float64)
    hist[rng.integers(0, 48, 8)] = 0.0  # empty bins, possibly right before the outliers
    if hist.sum() == 0:
        hist[0] = 1.0
    np.testing.assert_allclose(kl_divergences(hist, levels), kl_reference(hist, levels), atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 8),
    magnitude=st.floats(8.0, 1000.0),
    sign=st.sampled_from([-1.0, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_entropy_threshold_bounded(k: int, magnitude: float, sign: float, seed: int) -> None:
    """Larger outliers never push the threshold past max|x|; far ones are clipped."""
    obs = make_observer("entropy")
    data = gaussian_stream(8192, seed, chunk=4096)
    data[0][:k] = sign * magnitude * np.linspace(0.8, 1.0, k)
    state = stream(obs, data)
    amax = max(-float(state["min"]), float(state["max"]))
    for q in (INT8, INT4):
        lo, hi = obs.finalize(state, q, symmetric=True)
        threshold = max(-lo, hi)
        assert 0.0 < threshold <= amax
        if magnitude >= 200.0:
            assert threshold < 0.8 * magnitude  # the outliers lie beyond it
        alo, ahi = obs.finalize(state, q, symmetric=False)
        assert float(state["min"]) <= alo < 0.0 < ahi <= float(state["max"])


def test_entropy_gaussian_threshold() -> None:
    obs = make_observer("entropy")
    data = gaussian_stream(1 << 16, seed=5, chunk=1 << 14)
    state = stream(obs, data)
    lo, hi = obs.finalize(state, INT8, symmetric=True)
    assert 2.5 < max(-lo, hi) < max(-float(state["min"]), float(state["max"]))


def test_entropy_one_sided_uses_all_levels() -> None:
    """ReLU-like data, asymmetric uint8: all 256 levels sit on [0, T] (symmetric: 128)."""
    obs = make_observer("entropy")
    data = [np.abs(b) for b in gaussian_stream(1 << 15, seed=2, chunk=1 << 13)]
    state = stream(obs, data)
    positive = np.asarray(state["hist"], np.float64)[obs.bins // 2 :]
    width = float(state["range"]) / positive.size
    lo, hi = obs.finalize(state, UINT8, symmetric=False)
    assert lo == float(state["min"]) >= 0.0
    assert hi == (256 + np.argmin(kl_divergences(positive, 256))) * width
    _, shi = obs.finalize(state, UINT8, symmetric=True)
    assert shi == (128 + np.argmin(kl_divergences(positive, 128))) * width


def test_entropy_sixteen_bit_falls_back_to_minmax() -> None:
    obs = make_observer("entropy", bins=64)
    state = stream(obs, gaussian_stream(500, seed=4))
    assert obs.finalize(state, qdtype("int16"), True) == (
        float(state["min"]),
        float(state["max"]),
    )


# the contract every observer keeps --------------------------------------------------------
def observers() -> list[Observer]:
    return [make_observer(name, **cfg) for name, cfg in ALL.items()]


def spec(state: State) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {k: (np.shape(v), np.asarray(v).dtype) for k, v in state.items()}


@pytest.fixture(params=observers(), ids=list(ALL))
def obs(request: pytest.FixtureRequest) -> Observer:
    return request.param


def test_state_shapes_stable_under_jit(obs: Observer) -> None:
    init = obs.init()
    assert all(isinstance(v, np.ndarray | np.generic) for v in init.values())
    state = init
    for x in gaussian_stream(300, seed=0, chunk=100):
        state = jitted(obs)(state, x * 50.0)  # growing ranges
        assert spec(state) == spec(init)
    eager = obs.init()
    for x in gaussian_stream(300, seed=0, chunk=100):
        eager = obs.update(eager, x * 50.0)  # op by op, no jit
    for key in state:
        np.testing.assert_allclose(np.asarray(state[key]), np.asarray(eager[key]), rtol=1e-6)


def test_state_carries_through_lax_scan(obs: Observer) -> None:
    xs = jnp.asarray(np.stack(gaussian_stream(400, seed=1, chunk=100)))
    final, _ = jax.lax.scan(lambda s, x: (obs.update(s, x), None), obs.init(), xs)
    looped = stream(obs, list(np.asarray(xs)))
    for key in final:
        np.testing.assert_allclose(np.asarray(final[key]), np.asarray(looped[key]), rtol=1e-6)


def test_state_savez_roundtrip(obs: Observer, tmp_path: Path) -> None:
    state = stream(obs, gaussian_stream(500, seed=2, chunk=100))
    path = tmp_path / "state.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in state.items()})
    with np.load(path) as f:
        loaded = dict(f)
    for q in (INT8, UINT8, INT4):
        for symmetric in (True, False):
            assert obs.finalize(loaded, q, symmetric) == obs.finalize(state, q, symmetric)
    assert spec(loaded) == spec(obs.init())


def test_batched_input_is_one_batch(obs: Observer) -> None:
    """A [B, ...] activation updates like its flattened values (one batch, one EMA step)."""
    x = np.random.default_rng(3).normal(size=(4, 3, 5)).astype(np.float32)
    x[0, 0, :2] = [-1e9, np.nan]
    a = jitted(obs)(obs.init(), x)
    b = jitted(obs)(obs.init(), x.reshape(-1))
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_update_under_vmap(obs: Observer) -> None:
    """vmap over per-sample states equals updating each sample's state on its own."""
    xs = np.random.default_rng(4).normal(size=(3, 20)).astype(np.float32) * [[1], [10], [0.01]]
    states = jax.tree.map(lambda *v: np.stack(v), *[obs.init()] * 3)
    got = jax.jit(jax.vmap(obs.update))(states, xs)
    for i in range(3):
        one = jitted(obs)(obs.init(), xs[i])
        for key in one:
            np.testing.assert_array_equal(np.asarray(got[key][i]), np.asarray(one[key]))


def test_nothing_valid_gives_zero_range(obs: Observer) -> None:
    state = jitted(obs)(obs.init(), pad([np.nan, -np.inf, -1e9, MASK_FILL]))
    state = obs.update(state, np.zeros((0, 3), np.float32))
    for q in (INT8, UINT8):
        assert obs.finalize(state, q, True) == (0.0, 0.0)
        assert obs.finalize(obs.init(), q, False) == (0.0, 0.0)


def test_merge_with_empty_and_itself(obs: Observer) -> None:
    state = stream(obs, gaussian_stream(300, seed=5, chunk=100))
    for merged in (obs.merge(obs.init(), state), obs.merge(state, obs.init())):
        assert obs.finalize(merged, INT8, False) == obs.finalize(state, INT8, False)
        assert spec(merged) == spec(obs.init())
    if isinstance(obs, HistogramObserver):
        doubled = obs.merge(state, state)
        np.testing.assert_array_equal(doubled["hist"], 2 * np.asarray(state["hist"]))


def test_finalize_within_observed_range(obs: Observer) -> None:
    state = stream(obs, gaussian_stream(2000, seed=6, chunk=100, scale=3.0))
    for q in (INT8, UINT8, INT4):
        for symmetric in (True, False):
            lo, hi = obs.finalize(state, q, symmetric)
            assert float(state["min"]) <= lo <= hi <= float(state["max"])


@settings(max_examples=20, deadline=None)
@given(batches=batches)
def test_unfiltered_update_is_exact_or_says_so(batches: list[np.ndarray]) -> None:
    """The calibration engine's fast path: same state as `update` on a batch where every value
    counts, and `exact` False on any batch holding NaN, ±inf or mask fill."""
    for obs in observers():
        plain = jax.jit(obs.update_unfiltered)
        state = obs.init()
        for x in batches:
            fast, exact = plain(state, x)
            state = jitted(obs)(state, x)
            assert bool(exact) == (valid(x).size == x.size)
            if exact:
                for key in state:
                    np.testing.assert_array_equal(np.asarray(fast[key]), np.asarray(state[key]))
