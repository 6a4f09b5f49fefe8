"""Deterministic choice of calibration / evaluation samples by seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import CalibrationDataError, CalibrationSource


def _all_names(source: CalibrationSource | Sequence[str]) -> list[str]:
    names = source.names() if isinstance(source, CalibrationSource) else [str(n) for n in source]
    if not names:
        raise CalibrationDataError("there are no calibration samples", "add samples")
    return names


def _check_count(n: int | None, what: str) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise CalibrationDataError(f"{what} must be a positive integer, got {n!r}", "pass n >= 1")


def _permutation(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(count)


def subset(source: CalibrationSource | Sequence[str], n: int | None, seed: int) -> list[str]:
    """`n` sample names chosen by `seed` (all when `n` is None or >= the number of samples).

    The first `n` of `numpy.random.default_rng(seed).permutation(len)` are kept, returned in
    the source's order (sorted file names), so the same seed always gives the same list.
    """
    _check_count(n, "the number of calibration samples")
    names = _all_names(source)
    if n is None or n >= len(names):
        return names
    chosen = np.sort(_permutation(len(names), seed)[:n])
    return [names[i] for i in chosen]


def disjoint(
    source: CalibrationSource | Sequence[str],
    n_calib: int | None,
    n_eval: int | None,
    seed: int,
) -> tuple[list[str], list[str]]:
    """Split sample names into non-overlapping (calib, eval) lists by `seed`.

    One permutation is drawn as in `subset` (so `calib == subset(source, n_calib, seed)`):
    calib takes its first `n_calib` entries, eval the next `n_eval`. A None count takes all
    the samples the other one leaves (not both None). Each list is in the source's order.
    """
    _check_count(n_calib, "n_calib")
    _check_count(n_eval, "n_eval")
    names = _all_names(source)
    total = len(names)
    if n_calib is None and n_eval is None:
        raise CalibrationDataError(
            "disjoint() needs n_calib or n_eval", "give at least one of the two counts"
        )
    if n_calib is None:
        n_calib = total - (n_eval or 0)
    if n_eval is None:
        n_eval = total - n_calib
    if n_calib < 1 or n_eval < 1 or n_calib + n_eval > total:
        raise CalibrationDataError(
            f"cannot split {total} samples into {n_calib} calibration and {n_eval} evaluation "
            "samples without overlap",
            "add samples or ask for fewer",
        )
    order = _permutation(total, seed)
    calib = np.sort(order[:n_calib])
    evaluation = np.sort(order[n_calib : n_calib + n_eval])
    return [names[i] for i in calib], [names[i] for i in evaluation]
