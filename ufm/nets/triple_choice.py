r"""Which three classes and which feature ridge a three-class figure of one network uses.

Pure choices, shared by the measurement that computes the theory for the figure
(:mod:`ufm.nets.triple_theory`) and the figures that draw it (:mod:`ufm.plots.run_files`),
which must agree on them and compute nothing:

* :func:`choose_triple`: the three classes with the most mixed samples among them, for a
  features file that names none;
* :func:`curve_fit_status`: whether a curve fit of lam_H found its optimum inside the search
  range ("fitted") or ran to an end of it ("at_bound");
* :func:`theory_lam_H`: ``curve_fitted_lam_H`` when it was fitted, else ``fitted_lam_H`` (the
  margins' fit);
* :func:`theory_lams`: the lam grid of the theory.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "CURVE_FIT_POINTS",
    "FIT_AT_BOUND_STEPS",
    "LAM_H_RANGE",
    "check_lam_H",
    "check_triple",
    "choose_triple",
    "curve_fit_status",
    "theory_lam_H",
    "theory_lams",
]

LAM_H_RANGE = (1e-8, 1e4)
"""The search range of every fitted lam_H (:mod:`ufm.nets.ufm_comparison`)."""
MAX_THEORY_LAMS = 41
"""The theory is solved at the samples' own lam values when they are at most this many (a
grid); lam drawn per sample gives :data:`FALLBACK_LAMS` equally spaced values instead."""
FALLBACK_LAMS = 21
CURVE_FIT_POINTS = 31
"""Grid points in log lam_H over :data:`LAM_H_RANGE` that bracket the fit of lam_H on the
coefficient curves before Brent (:func:`ufm.nets.coefficient_curves.fit_curve_lam_H`)."""
FIT_AT_BOUND_STEPS = 1.0
"""A curve fit of lam_H within this many steps of that grid (in log lam_H) of an end of the
range is reported as at the bound, not fitted."""


def choose_triple(c: np.ndarray, c_prime: np.ndarray, num_classes: int) -> tuple[int, int, int]:
    """The three classes with the most mixed samples whose two classes both lie among them
    (same-class samples included); ties go to the lexicographically first triple."""
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (np.asarray(c), np.asarray(c_prime)), 1.0)
    diagonal = np.diag(counts).copy()
    pairs = counts + counts.T  # samples of {i, j}, either order
    np.fill_diagonal(pairs, 0.0)
    base = diagonal[:, None] + diagonal[None, :] + pairs

    def scores(k: int) -> np.ndarray:  # (k, k): triples i < j < k, upper triangle only
        total = base[:k, :k] + pairs[:k, k][:, None] + pairs[:k, k][None, :] + diagonal[k]
        return np.where(np.triu(np.ones((k, k), dtype=bool), 1), total, -1.0)

    best = max(float(scores(k).max()) for k in range(2, num_classes))
    candidates = []
    for k in range(2, num_classes):
        rows, cols = np.nonzero(scores(k) == best)
        candidates += [(int(i), int(j), k) for i, j in zip(rows, cols)]
    return min(candidates)


def check_triple(triple, num_classes: int) -> tuple[int, int, int]:
    """``triple`` as three distinct class indices in [0, num_classes - 1], or ValueError."""
    values = tuple(int(v) for v in triple)
    if len(values) != 3 or len(set(values)) != 3 or min(values) < 0 or max(values) >= num_classes:
        raise ValueError(
            f"triple must be three distinct classes in [0, {num_classes - 1}], got {list(triple)}"
        )
    return values


def check_lam_H(lam_H) -> float:
    """``lam_H`` as a float, or ValueError unless it is a finite positive number."""
    if (
        isinstance(lam_H, bool)
        or not isinstance(lam_H, (numbers.Real, np.floating))
        or not (math.isfinite(lam_H) and lam_H > 0)
    ):
        raise ValueError(f"lam_H must be a finite positive number, got {lam_H!r}")
    return float(lam_H)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def curve_fit_status(lam_H: float) -> str:
    """How far a curve fit of lam_H determined it: "fitted" when it lies inside
    :data:`LAM_H_RANGE` by more than :data:`FIT_AT_BOUND_STEPS` steps of the fit's search grid
    (:data:`CURVE_FIT_POINTS`), "at_bound" when within that of either end (the data push lam_H
    against the range; at the upper end the cross-entropy curves are the squared-error
    null's), "not_fitted" when there was no fit (NaN)."""
    if not math.isfinite(lam_H):
        return "not_fitted"
    low, high = math.log(LAM_H_RANGE[0]), math.log(LAM_H_RANGE[1])
    margin = FIT_AT_BOUND_STEPS * (high - low) / (CURVE_FIT_POINTS - 1)
    return "fitted" if low + margin < math.log(lam_H) < high - margin else "at_bound"


def theory_lam_H(summary: Mapping[str, Any]) -> tuple[float, str]:
    """The lam_H of the theory and the key it comes from: ``curve_fitted_lam_H`` (fitted on
    the coefficient curves) when its ``curve_fitted_lam_H_status`` is "fitted" (a summary from
    before that key: its :func:`curve_fit_status`), else ``fitted_lam_H`` (fitted on the
    margins) when finite and positive, else (NaN, "")."""
    curve = _number(summary.get("curve_fitted_lam_H"))
    if (summary.get("curve_fitted_lam_H_status") or curve_fit_status(curve)) == "fitted":
        return curve, "curve_fitted_lam_H"
    margin = _number(summary.get("fitted_lam_H"))
    if math.isfinite(margin) and margin > 0:
        return margin, "fitted_lam_H"
    return math.nan, ""


def theory_lams(lam: np.ndarray) -> np.ndarray:
    """The lam grid of the theory: the distinct values of ``lam`` if at most
    :data:`MAX_THEORY_LAMS`, else :data:`FALLBACK_LAMS` equally spaced values in [0, 1]."""
    values = np.unique(np.asarray(lam, dtype=np.float64))
    return values if len(values) <= MAX_THEORY_LAMS else np.linspace(0.0, 1.0, FALLBACK_LAMS)
