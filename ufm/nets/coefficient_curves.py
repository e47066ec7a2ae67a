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

**Two sources of error** (docs/theory.md section 12). Every curve point and scalar has a
standard error from the pairs inside the cells (``*_se``: the noise of re-drawing training
pairs for the same class pairs) and a stratified delete-one-cell jackknife (``*_se_cells``:
it also covers how the class pairs differ, which the pairs' error does not see). The error
quoted, ``*_error``, is the larger of the two.

**Goodness of fit** (:func:`curve_chi_square`): each prediction's chi-square over the finite
curve points in the quoted errors, its degrees of freedom and p-value; a fit of
:math:`\lambda_H` that ends within a grid step of an end of its search range
(:func:`ufm.nets.triple_choice.curve_fit_status`) has determined nothing and counts no fitted parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from ..etf import row_norm
from ..theory import optimal_coefficients
from ..theory.optimum import optimal_coefficients_over_lam_H
from .cell_means import CellStatistics, half_index
from .triple_choice import CURVE_FIT_POINTS
from .ufm_comparison import fit_log_lam_H

__all__ = [
    "ChiSquare",
    "Curves",
    "binned_ce_curves_over_lam_H",
    "ce_curves",
    "coefficient_curves",
    "curve_chi_square",
    "fit_curve_lam_H",
    "jackknife_curve_se",
    "jackknife_mean_se",
    "jackknife_ratio_se",
    "null_curves",
    "quoted_error",
]


def _ratio_se(num, num_se, den, den_se):
    """Standard error of num/den for independent num and den (first order)."""
    return np.sqrt((num_se / den) ** 2 + (num * den_se / den**2) ** 2)


@dataclass
class Curves:
    r"""Per-lam averages over cells (module docstring); arrays of shape (L,).

    ``a``, ``b`` (different-class cells) and ``a_same`` (same-class cells) with standard
    errors ``*_se`` and the spread across cells ``*_sd``; ``same_mean`` :math:`\bar a_\text{same}`
    (the mean over the same-class cells of their lam-averaged coefficient) with its
    ``same_mean_se`` (pairs), ``same_mean_se_cells`` (jackknife over the same-class cells)
    and ``same_mean_error`` (the larger); ``a_norm``, ``b_norm``: the curves over
    :math:`\bar a_\text{same}`, with ``*_norm_se`` (pairs), ``*_norm_se_cells`` (stratified
    delete-one-cell jackknife over the different-class cells and the same-class cells of the
    normaliser) and ``*_norm_error`` (the larger: the error quoted and used in the
    chi-squares); ``residual`` and ``same_residual``: mean relative residual of the cell means
    off their span; ``amplification`` with ``amplification_se`` (pairs),
    ``amplification_se_cells`` (jackknife over the cells, NaN with fewer than two cells of a
    kind) and ``amplification_error`` (the larger); ``amplification_by_lam`` (L,): the
    amplification normalised instead by the same-class coefficient at each lam,
    :math:`(\hat a + \hat b)(\tfrac12)/\hat a_\text{same}(\lambda)`, and
    ``amplification_systematic``: its largest distance from ``amplification`` over the lams
    (the sensitivity to the choice of normaliser, a systematic error beside the statistical
    one).
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
    same_mean_se_cells: float
    same_mean_error: float
    a_norm: np.ndarray
    a_norm_se: np.ndarray
    a_norm_se_cells: np.ndarray
    a_norm_error: np.ndarray
    b_norm: np.ndarray
    b_norm_se: np.ndarray
    b_norm_se_cells: np.ndarray
    b_norm_error: np.ndarray
    residual: np.ndarray
    same_residual: np.ndarray
    amplification: float
    amplification_se: float
    amplification_se_cells: float
    amplification_error: float
    amplification_by_lam: np.ndarray
    amplification_systematic: float


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
    independent groups (stratified: each group's jackknife variance, then their sum), the
    values :math:`x_i` (``numerators``) and :math:`y_j` (``denominators``); NaN entries are
    absent units, and fewer than two units in a group give NaN. The amplification is such a
    ratio: pair sums of different-class cells over lam-averaged same-class coefficients, so
    this covers which cells (class pairs) happen to be measured."""
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


def jackknife_curve_se(numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    r""":func:`jackknife_ratio_se` at every lam: ``numerators`` (C, L), one row per
    different-class cell (NaN where a cell has no samples at a lam), over the common
    ``denominators`` (C',), the same-class cells' lam-averaged coefficients; (L,)."""
    return np.array([jackknife_ratio_se(numerators[:, l], denominators)
                     for l in range(numerators.shape[1])])  # fmt: skip


def jackknife_mean_se(values: np.ndarray) -> float:
    """Delete-one jackknife standard error of the mean of the values that are not NaN; for a
    mean it equals the sample standard deviation over the root of the count. NaN with fewer
    than two values."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(len(values)))


def quoted_error(se, se_cells):
    """The error quoted for an estimate: the larger of its pair standard error ``se`` and
    its class-pair (cell jackknife) standard error ``se_cells``; where one of them is NaN
    (the jackknife needs two cells of each kind), the other. Arrays elementwise."""
    quoted = np.fmax(np.asarray(se, dtype=np.float64), np.asarray(se_cells, dtype=np.float64))
    return float(quoted) if quoted.ndim == 0 else quoted


def coefficient_curves(cells: CellStatistics) -> Curves:
    """The curves of :class:`Curves` from the cell statistics."""
    same = cells.same
    half = half_index(cells.lam)
    a, a_se, a_sd = _average(cells.coefficients[~same, :, 0], cells.coefficient_se[~same, :, 0])
    b, b_se, b_sd = _average(cells.coefficients[~same, :, 1], cells.coefficient_se[~same, :, 1])
    a_same, a_same_se, _ = _average(
        cells.coefficients[same, :, 0], cells.coefficient_se[same, :, 0]
    )
    same_lam_means = cells.same_lam_mean[same]
    same_mean, same_mean_se, _ = _average(same_lam_means, cells.same_lam_mean_se[same])
    same_mean_se_cells = jackknife_mean_se(same_lam_means)
    pair_sum = cells.coefficients[~same, half].sum(-1)
    total, total_se, _ = _average(pair_sum, cells.pair_sum_se[~same, half])
    a_norm_se = _ratio_se(a, a_se, same_mean, same_mean_se)
    b_norm_se = _ratio_se(b, b_se, same_mean, same_mean_se)
    a_norm_se_cells = jackknife_curve_se(cells.coefficients[~same, :, 0], same_lam_means)
    b_norm_se_cells = jackknife_curve_se(cells.coefficients[~same, :, 1], same_lam_means)
    amplification = float(total / same_mean)
    amplification_se = float(_ratio_se(total, total_se, same_mean, same_mean_se))
    amplification_se_cells = jackknife_ratio_se(pair_sum, same_lam_means)
    with np.errstate(invalid="ignore", divide="ignore"):
        by_lam = total / a_same
    deviations = np.abs(by_lam - amplification)
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
        same_mean_se_cells=same_mean_se_cells,
        same_mean_error=quoted_error(same_mean_se, same_mean_se_cells),
        a_norm=a / same_mean,
        a_norm_se=a_norm_se,
        a_norm_se_cells=a_norm_se_cells,
        a_norm_error=quoted_error(a_norm_se, a_norm_se_cells),
        b_norm=b / same_mean,
        b_norm_se=b_norm_se,
        b_norm_se_cells=b_norm_se_cells,
        b_norm_error=quoted_error(b_norm_se, b_norm_se_cells),
        residual=_mean_present(cells.residual[~same]),
        same_residual=_mean_present(cells.residual[same]),
        amplification=amplification,
        amplification_se=amplification_se,
        amplification_se_cells=amplification_se_cells,
        amplification_error=quoted_error(amplification_se, amplification_se_cells),
        amplification_by_lam=by_lam,
        amplification_systematic=(
            float(np.nanmax(deviations)) if np.isfinite(deviations).any() else math.nan
        ),
    )


def ce_curves(K: int, gain: float, lams: np.ndarray, lam_H: float):
    r"""Cross-entropy optimum for a simplex ETF of gain ``gain``: (a/a_same, b/a_same) (L,).

    When the grid holds lam = 1, a_same is read there (the different-class optimum at lam = 1
    is the same-class optimum, docs/theory.md section 2), which halves the work of a fit."""
    scale = row_norm(K, gain)
    lams = np.asarray(lams, dtype=np.float64)
    a, b = optimal_coefficients(K, lams, lam_H, scale, "ce")
    return _normalised(K, lams, lam_H, scale, a, b)


def _normalised(K: int, lams: np.ndarray, lam_H: float, scale: float, a, b):
    """(a/a_same, b/a_same) of :func:`ce_curves` from its coefficients (a, b) at ``lams``."""
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
    return _bin_means(points, a, b)


def _bin_means(points: np.ndarray, a: np.ndarray, b: np.ndarray):
    """The curves (a, b) at ``points.ravel()`` averaged over each row of ``points`` (L, Q)."""
    return a.reshape(points.shape).mean(axis=1), b.reshape(points.shape).mean(axis=1)


def binned_ce_curves_over_lam_H(K: int, gain: float, points: np.ndarray, lam_H_values):
    """:func:`binned_ce_curves` for each of the ridges ``lam_H_values``, the theory solved for
    all of them at once (:func:`ufm.theory.optimum.optimal_coefficients_over_lam_H`); a list
    of (a, b), entry k bit for bit ``binned_ce_curves(K, gain, points, lam_H_values[k])``."""
    scale = row_norm(K, gain)
    points = np.asarray(points, dtype=np.float64)
    lams = points.ravel() if points.ndim == 2 else points
    a, b = optimal_coefficients_over_lam_H(K, lams, lam_H_values, scale, "ce")
    curves = [_normalised(K, lams, lam_H, scale, a_k, b_k)
              for lam_H, a_k, b_k in zip(lam_H_values, a, b)]  # fmt: skip
    return curves if points.ndim == 1 else [_bin_means(points, *curve) for curve in curves]


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

    points = curves.lam if lams is None else lams

    def misfit(a: np.ndarray, b: np.ndarray) -> float:
        return float(((curves.a_norm - a)[finite] ** 2).sum()
                     + ((curves.b_norm - b)[finite] ** 2).sum())  # fmt: skip

    def objective(log_lam_H: float) -> float:
        return misfit(*binned_ce_curves(K, gain, points, math.exp(log_lam_H)))

    def grid_objective(grid: np.ndarray) -> list[float]:
        solved = binned_ce_curves_over_lam_H(K, gain, points, [math.exp(t) for t in grid])
        return [misfit(a, b) for a, b in solved]

    return fit_log_lam_H(objective, points=CURVE_FIT_POINTS, grid_objective=grid_objective)


@dataclass
class ChiSquare:
    """Goodness of fit of a prediction to the normalised curves (:func:`curve_chi_square`):
    ``chi2`` over ``points`` finite curve points, ``dof`` = points minus fitted
    ``parameters``, ``per_dof`` = chi2/dof and ``p_value`` (NaN without degrees of freedom)."""

    chi2: float
    points: int
    parameters: int
    dof: int
    per_dof: float
    p_value: float


def _curve_residuals(curves: Curves, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Differences of both curves from a prediction in units of the quoted errors, over the
    points where curve, error and prediction are finite and the error positive."""
    difference = np.concatenate([curves.a_norm - a, curves.b_norm - b])
    error = np.concatenate([curves.a_norm_error, curves.b_norm_error])
    finite = np.isfinite(difference) & np.isfinite(error) & (error > 0)
    return difference[finite] / error[finite]


def curve_chi_square(curves: Curves, a: np.ndarray, b: np.ndarray, parameters: int) -> ChiSquare:
    r""":class:`ChiSquare` of the prediction (``a``, ``b``) (L,) of the normalised curves:
    :math:`\chi^2 = \sum (\text{curve} - \text{prediction})^2/\sigma^2` over the finite
    points of both curves, :math:`\sigma` the quoted error (the larger of the pairs' and the
    class pairs' standard errors), ``parameters`` the number fitted on these curves (1 for the
    cross-entropy optimum with its fitted lam_H, 0 for the null or a fit at its bound). The
    points share cells and the normaliser, and their correlations are ignored, so the
    chi-square distribution and its p-value are approximate (docs/theory.md section 12)."""
    residuals = _curve_residuals(curves, a, b)
    points = len(residuals)
    value = float((residuals**2).sum()) if points else math.nan
    dof = points - parameters
    if dof < 1:
        return ChiSquare(value, points, parameters, dof, math.nan, math.nan)
    return ChiSquare(value, points, parameters, dof, value / dof, float(chi2.sf(value, dof)))


def curve_misfit(curves: Curves, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(rms of the differences over both curves, rms of the same in quoted errors), over the
    points where the curve, its quoted error and the prediction are finite (NaN if none)."""
    difference = np.concatenate([curves.a_norm - a, curves.b_norm - b])
    error = np.concatenate([curves.a_norm_error, curves.b_norm_error])
    finite = np.isfinite(difference) & np.isfinite(error) & (error > 0)
    if not finite.any():
        return math.nan, math.nan
    residuals = _curve_residuals(curves, a, b)
    return float(np.sqrt((difference[finite] ** 2).mean())), float(np.sqrt((residuals**2).mean()))
