"""Activation observers: explicit, serializable statistics with init / update / finalize.

An observer is a frozen dataclass (its settings). Its *state* is a dict of fixed-size arrays
(a JAX pytree) so the calibration engine can update it inside the jitted, vmapped forward and
save it with `np.savez`. `update` is traceable JAX; `finalize` is plain numpy and returns the
real range (lo, hi) to quantize into; `merge` combines two states (shared-scale groups).

Values at or below `ignore_below` (default -1e4) are additive attention-mask fill (−inf,
float-min, −10000) and never set a range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from edgeq.errors import InputError
from edgeq.quant.qtypes import QDType, choose_qparams

State = dict[str, Any]
MASK_FILL = -1e4

_OBSERVERS: dict[str, type[Observer]] = {}


def register_observer(name: str) -> Callable[[type[Observer]], type[Observer]]:
    def wrap(cls: type[Observer]) -> type[Observer]:
        cls.name = name
        _OBSERVERS[name] = cls
        return cls

    return wrap


def observer_names() -> list[str]:
    return sorted(_OBSERVERS)


def make_observer(name: str, **settings: Any) -> Observer:
    if name not in _OBSERVERS:
        raise InputError(f"unknown observer '{name}'", f"observers: {', '.join(observer_names())}")
    cls = _OBSERVERS[name]
    fields = set(cls.__dataclass_fields__)
    return cls(**{k: v for k, v in settings.items() if k in fields})


@dataclass(frozen=True)
class Observer:
    """Base class. Subclasses set `name` through @register_observer."""

    name: ClassVar[str] = "base"
    # True when a batch's min and max are all `fold` needs (no per-value statistics): the
    # calibration engine then folds every such observer of a kind in one vectorized step
    extremes_suffice: ClassVar[bool] = False
    ignore_below: float = MASK_FILL

    def init(self) -> State:
        raise NotImplementedError

    def update(self, state: State, x: Any) -> State:
        """Fold one batch into the state, ignoring NaN, ±inf and mask fill (≤ ignore_below)."""
        return self.fold(state, *self.extremes(x, filtering=True))

    def update_unfiltered(self, state: State, x: Any) -> tuple[State, Any]:
        """`update` for a batch in which every value counts. Returns (state, exact): `exact`
        is False when the batch held a value `update` would ignore; then the state is wrong
        and the caller redoes the batch with `update`."""
        x, ok, lo, hi = self.extremes(x, filtering=False)
        return self.fold(state, x, ok, lo, hi), self.counts_all(lo, hi)

    def extremes(self, x: Any, filtering: bool) -> tuple[Any, Any, Any, Any]:
        """(x as float32, mask of the values that count or None, their min, their max; ±inf
        when none count). Without `filtering` every value counts and the reductions are XLA's
        plain ones: on CPU they run as library kernels, 2x faster to run and to compile than
        reductions with a select fused into them."""
        if not filtering:
            x = jnp.asarray(x, jnp.float32)
            return x, None, jnp.min(x, initial=jnp.inf), jnp.max(x, initial=-jnp.inf)
        x, ok = self._valid(x)
        lo = jnp.min(jnp.where(ok, x, jnp.inf), initial=jnp.inf)  # initial: zero-size x
        hi = jnp.max(jnp.where(ok, x, -jnp.inf), initial=-jnp.inf)
        return x, ok, lo, hi

    def counts_all(self, lo: Any, hi: Any) -> Any:
        """Do unfiltered extremes (lo, hi) show a batch in which every value counts? NaN
        propagates through XLA's min/max, so it shows in them as well as ±inf and mask fill."""
        return (lo > self.ignore_below) & (hi < jnp.inf)

    def fold(self, state: State, x: Any, ok: Any, lo: Any, hi: Any) -> State:
        """The new state from a batch `x` (float32), its valid-value mask `ok` (None: all
        valid) and the min/max of its valid values (±inf when there are none). Observers with
        `extremes_suffice` never read x or ok (the engine passes None)."""
        raise NotImplementedError

    def merge(self, a: State, b: State) -> State:
        raise NotImplementedError

    def finalize(self, state: State, q: QDType, symmetric: bool) -> tuple[float, float]:
        raise NotImplementedError

    # helpers -------------------------------------------------------------------------------
    def _valid(self, x: Any) -> tuple[Any, Any]:
        """(x as float32, mask of values that count: finite and above the mask fill)."""
        x = jnp.asarray(x, jnp.float32)
        return x, jnp.isfinite(x) & (x > self.ignore_below)


@register_observer("minmax")
@dataclass(frozen=True)
class MinMaxObserver(Observer):
    """Running minimum and maximum over every value seen."""

    extremes_suffice: ClassVar[bool] = True

    def init(self) -> State:
        return {"min": np.float32(np.inf), "max": np.float32(-np.inf)}

    def fold(self, state: State, x: Any, ok: Any, lo: Any, hi: Any) -> State:
        return {"min": jnp.minimum(state["min"], lo), "max": jnp.maximum(state["max"], hi)}

    def merge(self, a: State, b: State) -> State:
        return {"min": np.minimum(a["min"], b["min"]), "max": np.maximum(a["max"], b["max"])}

    def finalize(self, state: State, q: QDType, symmetric: bool) -> tuple[float, float]:
        lo, hi = float(state["min"]), float(state["max"])
        if not np.isfinite(lo) or not np.isfinite(hi):
            return 0.0, 0.0  # never saw a valid value
        return lo, hi


@register_observer("ema_minmax")
@dataclass(frozen=True)
class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of each batch's min and max (PyTorch's
    MovingAverageMinMaxObserver): m ← m + c·(batch_min − m). The first batch with a valid value
    sets the range directly; batches with none leave the state unchanged."""

    extremes_suffice: ClassVar[bool] = True
    averaging_constant: float = 0.01

    def init(self) -> State:
        return {
            "min": np.float32(np.inf),
            "max": np.float32(-np.inf),
            "batches": np.int32(0),  # batches that had a valid value
        }

    def fold(self, state: State, x: Any, ok: Any, lo: Any, hi: Any) -> State:
        seen, first = lo <= hi, state["batches"] == 0
        c = jnp.float32(self.averaging_constant)
        new_lo = jnp.where(first, lo, state["min"] + c * (lo - state["min"]))
        new_hi = jnp.where(first, hi, state["max"] + c * (hi - state["max"]))
        return {
            "min": jnp.where(seen, new_lo, state["min"]).astype(jnp.float32),
            "max": jnp.where(seen, new_hi, state["max"]).astype(jnp.float32),
            "batches": (state["batches"] + seen.astype(jnp.int32)).astype(jnp.int32),
        }

    def merge(self, a: State, b: State) -> State:
        return {
            "min": np.minimum(a["min"], b["min"]).astype(np.float32),
            "max": np.maximum(a["max"], b["max"]).astype(np.float32),
            "batches": np.int32(a["batches"] + b["batches"]),
        }

    def finalize(self, state: State, q: QDType, symmetric: bool) -> tuple[float, float]:
        if int(state["batches"]) == 0:
            return 0.0, 0.0
        return float(state["min"]), float(state["max"])


# Histogram observers -------------------------------------------------------------------------
MIN_RANGE_EXP = -20  # the histogram covers at least [-2^-20, 2^-20]
MAX_RANGE_EXP = 127  # 2^128 overflows float32; larger values land in the edge bins
MAX_SHIFT = 30  # re-binning by more doublings than log2(bins) changes nothing further


def _pow2_exponent(v: Any) -> Any:
    """Smallest e with 2^e ≥ v (v > 0, float32), exactly, through frexp: v = m·2^k, m ∈ [.5, 1)."""
    m, k = jnp.frexp(v)
    return jnp.where(m == 0.5, k - 1, k).astype(jnp.int32)


def _rebin_index(xp: Any, bins: int, k: Any) -> Any:
    """Where each old bin lands after doubling the range k times.

    One doubling merges adjacent pairs (2j, 2j+1) into bin bins/4 + j (the middle half), i.e.
    i → bins/2 + floor((i − bins/2) / 2); k doublings compose to an arithmetic shift by k. The
    zero edge stays at bins/2, and no old bin straddles a new edge, so re-binning is exact."""
    half = bins // 2
    i = xp.arange(bins, dtype=xp.int32) - half
    return half + xp.right_shift(i, xp.minimum(xp.asarray(k, xp.int32), MAX_SHIFT))


@dataclass(frozen=True)
class HistogramObserver(Observer):
    """Signed histogram of `bins` equal bins over [-R, R], R = 2^e grown on demand, plus the
    exact running min and max.

    The first batch with a valid value sets R to the smallest power of two ≥ max|x| (at least
    2^-20); a later batch beyond R doubles it k times, merging bin pairs (`_rebin_index`). Bin
    of x: floor(x · bins / 2R) + bins/2. With `bins` a power of two that product is a power-of-
    two scaling of x, so binning is exact (matches np.histogram on the final [-R, R] bit for bit;
    XLA flushes float32 subnormals to zero, so those count as 0) and the result does not depend
    on batch order or on merging. Counts are float32: exact to
    2^24 per bin, beyond that a relative rounding of 6e-8 instead of int32 wrap-around."""

    bins: int = 2048

    def __post_init__(self) -> None:
        if self.bins < 8 or self.bins % 4:
            raise InputError(
                f"histogram bins={self.bins} is not usable",
                "use a multiple of 4 that is at least 8 (a power of two such as 2048 is exact)",
            )

    def init(self) -> State:
        return {
            "hist": np.zeros(self.bins, np.float32),
            "range": np.float32(0.0),  # R; 0 until the first valid value
            "min": np.float32(np.inf),
            "max": np.float32(-np.inf),
        }

    def fold(self, state: State, x: Any, ok: Any, lo: Any, hi: Any) -> State:
        x = x.reshape(-1) if ok is None else jnp.where(ok, x, 0.0).reshape(-1)
        seen = lo <= hi
        r_old = jnp.asarray(state["range"], jnp.float32)
        need = jnp.maximum(jnp.where(seen, jnp.maximum(-lo, hi), 0.0), r_old)
        exp = jnp.minimum(_pow2_exponent(jnp.maximum(need, 2.0**MIN_RANGE_EXP)), MAX_RANGE_EXP)
        r_new = jnp.where(seen, jnp.ldexp(jnp.float32(1.0), exp), r_old)
        # old histogram onto the new range (k = 0 keeps it; an empty one has nothing to move)
        k = jnp.clip(exp - jnp.frexp(r_old)[1] + 1, 0, MAX_SHIFT)
        hist = jnp.zeros(self.bins, jnp.float32)
        hist = hist.at[_rebin_index(jnp, self.bins, k)].add(state["hist"])
        counts = jnp.zeros(self.bins, jnp.int32).at[self._bin(x, ok, exp)].add(1, mode="drop")
        return {
            "hist": (hist + counts.astype(jnp.float32)).astype(jnp.float32),
            "range": r_new.astype(jnp.float32),
            "min": jnp.minimum(state["min"], lo),
            "max": jnp.maximum(state["max"], hi),
        }

    def _bin(self, x: Any, ok: Any, exp: Any) -> Any:
        """Bin index of each value on [-2^exp, 2^exp]; `bins` (dropped) where not valid."""
        half = self.bins // 2
        per_unit = jnp.ldexp(jnp.float32(self.bins), -(exp + 1))  # bins / 2R
        idx = jnp.clip(jnp.floor(x * per_unit).astype(jnp.int32) + half, 0, self.bins - 1)
        # keep the sign exact even where x · bins/2R underflows to ±0
        idx = jnp.where(x < 0, jnp.minimum(idx, half - 1), jnp.maximum(idx, half))
        return idx if ok is None else jnp.where(ok.reshape(-1), idx, self.bins)

    def merge(self, a: State, b: State) -> State:
        ra, rb = float(a["range"]), float(b["range"])
        if ra == 0.0 or rb == 0.0:
            out = b if ra == 0.0 else a
            return {key: np.array(v, copy=True) for key, v in out.items()}
        r = max(ra, rb)
        return {
            "hist": (self._np_rebin(a["hist"], r / ra) + self._np_rebin(b["hist"], r / rb)).astype(
                np.float32
            ),
            "range": np.float32(r),
            "min": np.minimum(a["min"], b["min"]).astype(np.float32),
            "max": np.maximum(a["max"], b["max"]).astype(np.float32),
        }

    def _np_rebin(self, hist: Any, ratio: float) -> np.ndarray:
        k = math.frexp(ratio)[1] - 1  # ratio is a power of two
        idx = _rebin_index(np, self.bins, k)
        return np.bincount(idx, weights=np.asarray(hist, np.float64), minlength=self.bins)

    # finalize helpers (numpy, float64) ---------------------------------------------------------
    def _stats(self, state: State) -> tuple[np.ndarray, float, float, float] | None:
        """(counts, R, min, max), or None when nothing valid was seen."""
        hist = np.asarray(state["hist"], np.float64)
        r, lo, hi = float(state["range"]), float(state["min"]), float(state["max"])
        if r == 0.0 or hist.sum() <= 0 or not (np.isfinite(lo) and np.isfinite(hi)):
            return None
        return hist, r, lo, hi

    def _edges(self, r: float) -> np.ndarray:
        return (np.arange(self.bins + 1) - self.bins // 2) * (2.0 * r / self.bins)

    def _folded(self, hist: np.ndarray) -> np.ndarray:
        """Histogram of |x| over [0, R] with bins/2 bins (the signed one folded at 0)."""
        half = self.bins // 2
        return hist[half:] + hist[:half][::-1]


def _quantile(counts: np.ndarray, edges: np.ndarray, frac: float) -> float:
    """Value below which `frac` of the histogram's mass lies, linear within the bin."""
    cum = np.cumsum(counts)
    target = frac * cum[-1]
    i = min(int(np.searchsorted(cum, target, side="left")), counts.size - 1)
    inside = (target - (cum[i] - counts[i])) / counts[i] if counts[i] > 0 else 0.0
    return float(edges[i] + np.clip(inside, 0.0, 1.0) * (edges[i + 1] - edges[i]))


def _symmetric_range(amax: float, lo: float, hi: float) -> tuple[float, float]:
    """±amax bounded by the observed extremes (the side that reached it keeps amax)."""
    return max(lo, -amax), min(hi, amax)


@register_observer("percentile")
@dataclass(frozen=True)
class PercentileObserver(HistogramObserver):
    """Clip at the p-th percentile of the histogram distribution.

    Asymmetric: lo = the (100−p)-th and hi = the p-th percentile of the signed histogram,
    interpolated linearly inside the bin, clamped to the exact min/max. Symmetric: amax = the
    p-th percentile of |x| (histogram folded at 0), range ±amax within [min, max]."""

    percentile: float = 99.99

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 50.0 < self.percentile <= 100.0:
            raise InputError(
                f"percentile={self.percentile} is out of range", "use a value in (50, 100]"
            )

    def finalize(self, state: State, q: QDType, symmetric: bool) -> tuple[float, float]:
        stats = self._stats(state)
        if stats is None:
            return 0.0, 0.0
        hist, r, lo, hi = stats
        frac = self.percentile / 100.0
        if symmetric:
            half = self.bins // 2
            amax = _quantile(self._folded(hist), self._edges(r)[half:], frac)
            return _symmetric_range(min(amax, max(-lo, hi)), lo, hi)
        edges = self._edges(r)
        p_lo = float(np.clip(_quantile(hist, edges, 1.0 - frac), lo, hi))
        p_hi = float(np.clip(_quantile(hist, edges, frac), lo, hi))
        return p_lo, max(p_lo, p_hi)


# candidate shrink factors: geometric down to 2^-10 for heavy outliers, dense near 1
SYM_FACTORS = np.unique(
    np.concatenate([np.geomspace(2.0**-10, 1.0, 128), np.linspace(0.5, 1, 129)])
)
ASYM_FACTORS = np.unique(np.concatenate([np.geomspace(2.0**-8, 1.0, 40), np.linspace(0.5, 1, 33)]))
MSE_CHUNK = 1 << 21  # candidates × bins evaluated at once


def expected_sq_error(
    centers: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, q: QDType,
    symmetric: bool,
) -> np.ndarray:  # fmt: skip
    """Σ count · err(center) for each candidate range (lo[i], hi[i]), with choose_qparams' grid:
    err = Δ²/12 inside the representable range, (distance to its nearest end)² outside."""
    scale, zp = choose_qparams(lo, hi, q, symmetric)
    scale = scale.astype(np.float64)[:, None]
    rmin = (q.qmin - zp.astype(np.float64))[:, None] * scale
    rmax = (q.qmax - zp.astype(np.float64))[:, None] * scale
    clipped = np.clip(centers[None, :], rmin, rmax)
    err = np.where(clipped == centers[None, :], scale**2 / 12.0, (centers[None, :] - clipped) ** 2)
    return err @ counts


@register_observer("mse")
@dataclass(frozen=True)
class MSEObserver(HistogramObserver):
    """The clipping range that minimizes the expected squared quantization error of the histogram
    distribution (bin centers weighted by counts, `expected_sq_error`) for the given type.

    Symmetric: amax = f · max|x| for f in `SYM_FACTORS` (256 points, 2^-10 … 1). Asymmetric:
    the grid lo = f_lo · min, hi = f_hi · max over `ASYM_FACTORS` × `ASYM_FACTORS` (72²)."""

    def finalize(self, state: State, q: QDType, symmetric: bool) -> tuple[float, float]:
        stats = self._stats(state)
        if stats is None:
            return 0.0, 0.0
        hist, r, lo, hi = stats
        amax = max(-lo, hi)
        if amax == 0.0:
            return lo, hi
        edges = self._edges(r)
        keep = hist > 0
        centers = np.clip(0.5 * (edges[:-1] + edges[1:]), lo, hi)[keep]
        counts = hist[keep]
        if symmetric:
            cand = SYM_FACTORS * amax
            best = self._argmin(centers, counts, -cand, cand, q, True)
            return _symmetric_range(float(cand[best]), lo, hi)
        cand_lo = np.repeat(ASYM_FACTORS * lo, ASYM_FACTORS.size)
        cand_hi = np.tile(ASYM_FACTORS * hi, ASYM_FACTORS.size)
        best = self._argmin(centers, counts, cand_lo, cand_hi, q, False)
        return float(np.clip(cand_lo[best], lo, hi)), float(np.clip(cand_hi[best], lo, hi))

    @staticmethod
    def _argmin(
        centers: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, q: QDType,
        symmetric: bool,
    ) -> int:  # fmt: skip
        step = max(1, MSE_CHUNK // max(centers.size, 1))
        errs = [
            expected_sq_error(centers, counts, lo[s : s + step], hi[s : s + step], q, symmetric)
            for s in range(0, lo.size, step)
        ]
        return int(np.argmin(np.concatenate(errs)))


def _xlogx(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)


KL_EPS = 1e-4  # ORT/MXNet `smooth_distribution` eps (in counts): Q's mass where only P has some


def kl_divergences(hist: np.ndarray, levels: int) -> np.ndarray:
    """KL(P_i ‖ Q_i) for every threshold bin i in [levels, hist.size] (TensorRT's entropy
    calibration, Migacz 2017, "8-bit Inference with TensorRT"; onnxruntime `get_entropy_threshold`).

    P_i = hist[:i] with the outliers hist[i:] added to bin i−1. Q_i = hist[:i] (without the
    outliers, so clipping costs) merged into `levels` contiguous groups (bin boundaries
    floor(j·i/levels)), each group's sum spread evenly over the group's bins where P_i > 0. Both
    normalized; Q_i is 0 where P_i > 0 only when the last group's slice is empty, then it gets
    KL_EPS. With group sums G_j (Q) and P_j (P), nz_j the non-empty bins, S = Σ P, S_q = Σ Q:
    KL = (Σ p log p − Σ_j P_j log(G_j / nz_j)) / S + log(S_q / S), vectorized with prefix sums."""
    total = hist.sum()
    cum = np.concatenate([[0.0], np.cumsum(hist)])
    nonzero = np.concatenate([[0], np.cumsum(hist > 0)])
    plogp = np.concatenate([[0.0], np.cumsum(_xlogx(hist))])
    i = np.arange(levels, hist.size + 1)
    bounds = (np.arange(levels + 1)[None, :] * i[:, None]) // levels
    q_groups = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
    nz = (nonzero[bounds[:, 1:]] - nonzero[bounds[:, :-1]]).astype(np.float64)
    outliers = total - cum[i]
    p_groups = q_groups.copy()
    p_groups[:, -1] += outliers
    nz[:, -1] += (outliers > 0) & (hist[i - 1] == 0)
    q_groups[:, -1] = np.where(p_groups[:, -1] > 0, np.maximum(q_groups[:, -1], KL_EPS), 0.0)
    p_term = plogp[i - 1] + _xlogx(hist[i - 1] + outliers)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(p_groups > 0, q_groups / np.maximum(nz, 1.0), 1.0)
    q_term = (p_groups * np.log(ratio)).sum(axis=1)
    return (p_term - q_term) / total + np.log(q_groups.sum(axis=1) / total)


@register_observer("entropy")
@dataclass(frozen=True)
class EntropyObserver(HistogramObserver):
    """Threshold T minimizing KL(P ‖ Q) on the histogram of |x| (`kl_divergences`); candidates
    are the folded histogram's edges i·R/(bins/2) for i ≥ the number of levels.

    Levels: q.levels // 2 (128 for 8 bits, 8 for 4 bits): ±T shares the grid between the
    signs. Asymmetric ranges use the same |x| threshold, (max(min, −T), min(max, T)) as
    onnxruntime does, except one-signed data (min ≥ 0 or max ≤ 0, e.g. after ReLU), where the
    whole grid lies on one side and all q.levels levels are used. When the folded histogram has
    fewer bins than levels (16-bit types) there is nothing to choose: the range is [min, max]."""

    def finalize(self, state: State, q: QDType, symmetric: bool) -> tuple[float, float]:
        stats = self._stats(state)
        if stats is None:
            return 0.0, 0.0
        hist, r, lo, hi = stats
        one_sided = not symmetric and (lo >= 0.0 or hi <= 0.0)
        levels = q.levels if one_sided else q.levels // 2
        folded = self._folded(hist)
        if levels > folded.size or levels < 1:
            return lo, hi
        best = levels + int(np.argmin(kl_divergences(folded, levels)))
        threshold = min(best * r / folded.size, max(-lo, hi))
        return _symmetric_range(threshold, lo, hi)
