r"""Coefficient curves of a network against the cross-entropy optimum and the squared-error null.

From the cell statistics of :mod:`ufm.nets.cell_means`, per :math:`\lambda`: the mean over the
different-class cells of :math:`\hat a(\lambda)` and :math:`\hat b(\lambda)`, normalised by
:math:`\bar a_\text{same}`, the mean same-class coefficient over all same-class cells and lams
(:func:`coefficient_curves`). Two predictions of these normalised curves (docs/theory.md
sections 2, 3 and 8), for a simplex-ETF classifier with the network's gain
:math:`g = \operatorname{tr}(WW^\top)/(K-1)`:

* **cross-entropy**: :math:`a(\lambda)/a_\text{same}` and :math:`b(\lambda)/a_\text{same}` of
  the exact optimum (:func:`ufm.theory.optimal_coefficients`), with one free parameter, the
  effective :math:`\lambda_H`, fitted by least squares on these very curves
  (:func:`fit_curve_lam_H`; the curves depend on :math:`\lambda_H/g` only);
* **squared-error null**: exact convex combinations of the class features,
  :math:`a/a_\text{same} = \lambda`, :math:`b/a_\text{same} = 1-\lambda`. The squared-error
  optimum gives exactly these curves at every :math:`\lambda_H`
  (:math:`h = (W^\top W + \lambda_H I)^{-1}W^\top y`), so the null has no free parameter: its
  best-fitting :math:`\lambda_H` is any.

Amplification :math:`(\hat a + \hat b)(1/2)/\bar a_\text{same}`: the cross-entropy optimum
makes it greater than 1 (about 1.6 at K = 10, :math:`\lambda_H/g = 4.5\cdot10^{-3}`), the
null exactly 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..etf import row_norm
from ..theory import optimal_coefficients
from .cell_means import CellStatistics, half_index
from .ufm_comparison import fit_log_lam_H

CURVE_FIT_POINTS = 31
"""Grid points in log lam_H (over 12 decades) that bracket the curve fit before Brent."""

__all__ = ["Curves", "ce_curves", "coefficient_curves", "fit_curve_lam_H", "null_curves"]


def _ratio_se(num, num_se, den, den_se):
    """Standard error of num/den for independent num and den (first order)."""
    return np.sqrt((num_se / den) ** 2 + (num * den_se / den**2) ** 2)


@dataclass
class Curves:
    r"""Per-lam averages over cells (module docstring); arrays of shape (L,).

    ``a``, ``b`` (different-class cells) and ``a_same`` (same-class cells) with standard
    errors ``*_se`` and the spread across cells ``*_sd``; ``same_mean`` :math:`\bar a_\text{same}`
    and its ``same_mean_se``; ``a_norm``, ``b_norm`` and their ``*_norm_se``: the curves over
    :math:`\bar a_\text{same}`; ``residual`` and ``same_residual``: mean relative residual of the
    cell means off their span; ``amplification`` and ``amplification_se`` (from the pairs'
    scatter inside the cells); ``amplification_se_cells``: the delete-one-cell jackknife over
    all cells, which also covers which class pairs were measured (NaN with fewer than two
    cells of a kind).
    """

    lam: np.ndarray
    a: np.ndarray
    a_se: np.ndarray
    a_sd: np.ndarray
    b: np.ndarray
    b_se: np.ndarray
    b_sd: np.ndarray
    a_same: np.ndarray
    a_same_se: np.ndarray
    same_mean: float
    same_mean_se: float
    a_norm: np.ndarray
    a_norm_se: np.ndarray
    b_norm: np.ndarray
    b_norm_se: np.ndarray
    residual: np.ndarray
    same_residual: np.ndarray
    amplification: float
    amplification_se: float
    amplification_se_cells: float


def _average(values: np.ndarray, se: np.ndarray):
    """Mean over the cells present (axis 0; NaN entries are absent cells), its standard error
    (independent cells) and the spread across cells."""
    present = ~np.isnan(values)
    count = present.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, values, 0.0).sum(0) / count
        squared_se = np.where(present, se**2, 0.0).sum(0)
        spread = np.sqrt(np.where(present, (values - mean) ** 2, 0.0).sum(0) / count)
        return mean, np.sqrt(squared_se) / count, spread


def _mean_present(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the entries that are not NaN; NaN where there is none."""
    present = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, values, 0.0).sum(0) / present.sum(0)


def jackknife_ratio_se(numerators: np.ndarray, denominators: np.ndarray) -> float:
    r"""Delete-one jackknife standard error of :math:`\bar x/\bar y` over the units of two
    independent groups (stratified: each group's jackknife variance, then their sum), the values :math:`x_i` (``numerators``) and :math:`y_j`
    (``denominators``); NaN entries are absent units, and fewer than two units in a group give
    NaN. The amplification is such a ratio: pair sums of different-class cells over lam-averaged
    same-class coefficients, so this covers which cells (class pairs) happen to be measured."""
    x = numerators[~np.isnan(numerators)]
    y = denominators[~np.isnan(denominators)]
    if len(x) < 2 or len(y) < 2:
        return math.nan
    x_mean, y_mean = x.mean(), y.mean()
    # Stratified: each group's delete-one variance with its own (n - 1)/n, then added.
    variance = 0.0
    for replicates in (((x.sum() - x) / (len(x) - 1)) / y_mean,
                       x_mean / ((y.sum() - y) / (len(y) - 1))):  # fmt: skip
        n = len(replicates)
        variance += (n - 1) / n * float(((replicates - replicates.mean()) ** 2).sum())
    return math.sqrt(variance)


def coefficient_curves(cells: CellStatistics) -> Curves:
    """The curves of :class:`Curves` from the cell statistics."""
    same = cells.same
    half = half_index(cells.lam)
    a, a_se, a_sd = _average(cells.coefficients[~same, :, 0], cells.coefficient_se[~same, :, 0])
    b, b_se, b_sd = _average(cells.coefficients[~same, :, 1], cells.coefficient_se[~same, :, 1])
    a_same, a_same_se, _ = _average(
        cells.coefficients[same, :, 0], cells.coefficient_se[same, :, 0]
    )
    same_mean, same_mean_se, _ = _average(cells.same_lam_mean[same], cells.same_lam_mean_se[same])
    pair_sum = cells.coefficients[~same, half].sum(-1)
    total, total_se, _ = _average(pair_sum, cells.pair_sum_se[~same, half])
    return Curves(
        lam=cells.lam,
        a=a,
        a_se=a_se,
        a_sd=a_sd,
        b=b,
        b_se=b_se,
        b_sd=b_sd,
        a_same=a_same,
        a_same_se=a_same_se,
        same_mean=float(same_mean),
        same_mean_se=float(same_mean_se),
        a_norm=a / same_mean,
        a_norm_se=_ratio_se(a, a_se, same_mean, same_mean_se),
        b_norm=b / same_mean,
        b_norm_se=_ratio_se(b, b_se, same_mean, same_mean_se),
        residual=_mean_present(cells.residual[~same]),
        same_residual=_mean_present(cells.residual[same]),
        amplification=float(total / same_mean),
        amplification_se=float(_ratio_se(total, total_se, same_mean, same_mean_se)),
        amplification_se_cells=jackknife_ratio_se(pair_sum, cells.same_lam_mean[same]),
    )


def ce_curves(K: int, gain: float, lams: np.ndarray, lam_H: float):
    r"""Cross-entropy optimum for a simplex ETF of gain ``gain``: (a/a_same, b/a_same) (L,).

    When the grid holds lam = 1, a_same is read there (the different-class optimum at lam = 1
    is the same-class optimum, docs/theory.md section 2), which halves the work of a fit."""
    scale = row_norm(K, gain)
    lams = np.asarray(lams, dtype=np.float64)
    a, b = optimal_coefficients(K, lams, lam_H, scale, "ce")
    ones = np.flatnonzero(lams == 1.0)
    if len(ones):
        a_same = a[ones[0]]
    else:
        (a_same,), _ = optimal_coefficients(K, [1.0], lam_H, scale, "ce", same_class=True)
    return a / a_same, b / a_same


def binned_ce_curves(K: int, gain: float, points: np.ndarray, lam_H: float):
    """:func:`ce_curves` averaged over each row of ``points`` (L, Q), the lams of a bin, as
    the cell means average the samples of a bin; ``points`` (L,) is :func:`ce_curves` itself."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 1:
        return ce_curves(K, gain, points, lam_H)
    a, b = ce_curves(K, gain, points.ravel(), lam_H)
    return a.reshape(points.shape).mean(axis=1), b.reshape(points.shape).mean(axis=1)


def null_curves(lams: np.ndarray):
    """The squared-error null, exact convex combinations: (lam, 1 - lam)."""
    lams = np.asarray(lams, dtype=np.float64)
    if lams.ndim == 2:  # the lams of each bin (binned_ce_curves): the null is linear in lam
        lams = lams.mean(axis=1)
    return lams.copy(), 1.0 - lams


def fit_curve_lam_H(curves: Curves, K: int, gain: float, lams: np.ndarray | None = None) -> float:
    r"""The :math:`\lambda_H` whose cross-entropy curves fit ``a_norm`` and ``b_norm`` best:
    least squares over all lams of both curves (:func:`ufm.nets.ufm_comparison.fit_log_lam_H`),
    the theory evaluated at ``lams`` (default the curves' own; (L, Q): averaged over each row,
    :func:`binned_ce_curves`); over the lams where both curves are finite (a lam without
    cells is left out), NaN with fewer than two such lams."""
    finite = np.isfinite(curves.a_norm) & np.isfinite(curves.b_norm)
    if finite.sum() < 2:
        return math.nan

    def objective(log_lam_H: float) -> float:
        a, b = binned_ce_curves(K, gain, curves.lam if lams is None else lams,
                                math.exp(log_lam_H))  # fmt: skip
        return float(((curves.a_norm - a)[finite] ** 2).sum()
                     + ((curves.b_norm - b)[finite] ** 2).sum())  # fmt: skip

    return fit_log_lam_H(objective, points=CURVE_FIT_POINTS)


def curve_misfit(curves: Curves, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(rms of the differences over both curves, rms of the same in standard errors), over the
    points where the curve, its standard error and the prediction are finite (NaN if none)."""
    difference = np.concatenate([curves.a_norm - a, curves.b_norm - b])
    se = np.concatenate([curves.a_norm_se, curves.b_norm_se])
    finite = np.isfinite(difference) & np.isfinite(se) & (se > 0)
    if not finite.any():
        return math.nan, math.nan
    difference, se = difference[finite], se[finite]
    return float(np.sqrt((difference**2).mean())), float(np.sqrt(((difference / se) ** 2).mean()))
