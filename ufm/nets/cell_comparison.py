r"""The cell-mean comparison of a network's mixed features with the theory.

docs/theory.md sections 8 and 12 state what is compared and how.

:func:`compare_cells` ties together the cell statistics (:mod:`ufm.nets.cell_means`), the
coefficient curves and their two predictions (:mod:`ufm.nets.coefficient_curves`) and the
exact optimum for the network's own classifier (:mod:`ufm.nets.own_classifier`). It returns
scalars (``summary.json``), a per-lam table (``coefficients_vs_lam.csv``) and the cell
statistics as arrays (``cells.npz``).

**Signal or noise.** A cell mean of n pairs carries noise of expected squared norm
:math:`s^2/n` (:math:`s` the within-cell scatter). ``cell_signal_rms`` is the root of
:math:`\operatorname{mean}_\text{cells}(\|m\|^2 - s^2/n)` (0 when negative), the noise-free
size of the cell means; ``scatter_to_signal`` = ``cell_scatter_rms`` / ``cell_signal_rms``
(how far single pairs scatter around their cell mean, in units of the signal; infinite for
pure noise). ``signal_detected`` holds when
:math:`R = \operatorname{mean}\|m\|^2/\operatorname{mean}(s^2/n)` exceeds
:math:`1 + 6\sqrt{2/(N r)}` (N cells times lams, r the rank of :math:`W`): under pure noise
:math:`R` is 1 with standard deviation about :math:`\sqrt{2/(N r)}`. Without a detected
signal ``better_fit`` is ``"noise"``.

**Same-class cells** (theory: :math:`\tilde h = a_\text{same} w_c` at every lam), two
separate numbers, each relative to the rms norm of the cells' lam-averaged means:
``same_class_lam_dependence``, the rms movement of a cell mean with lam above its noise (the
root of the mean squared movement minus its expected noise, ``same_class_lam_dependence_noise``
squared, 0 when negative), and ``same_class_scatter``, the rms within-cell scatter of single
pairs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .cell_means import CellStatistics, cell_statistics, check_cells, half_index
from .coefficient_curves import (
    binned_ce_curves,
    coefficient_curves,
    curve_misfit,
    fit_curve_lam_H,
    null_curves,
)
from .own_classifier import own_classifier_optimum
from .ufm_comparison import logit_offset

__all__ = ["CellComparison", "compare_cell_statistics", "compare_cells", "signal_summary"]

NULL_SD = 6.0
"""Standard deviations above the pure-noise value of R that count as a signal."""
CHI2_PER_PARAMETER = 9.0
"""How much the cross-entropy fit, with its one free parameter, must lower the chi-square of
the normalised curves below the null's (no parameter) to count as the better fit: 3 standard
errors' worth. The cross-entropy curves tend to the null's as lam_H grows, so without this
rule a fit at a huge lam_H would "win" on noise."""


@dataclass
class CellComparison:
    """Scalars, per-lam rows and arrays of :func:`compare_cells`; ``exact_optimum``, kept in
    memory only, is the exact optimum for the classifier's own W
    (:func:`ufm.nets.own_classifier.own_classifier_optimum`) with the ``lams`` and ``lam_H`` it
    was solved at, so that other consumers (the three-class figure's theory) need not solve it
    again; None when it was not solved."""

    scalars: dict[str, object] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    exact_optimum: dict | None = None


def signal_summary(means: np.ndarray, scatter: np.ndarray, counts: np.ndarray, rank: int):
    """``cell_signal_rms``, ``cell_scatter_rms``, ``scatter_to_signal``, ``signal_detected``
    of the module docstring, from cell means (C, L, d), scatter (C, L) and counts (C, L) or
    (C,); NaN entries (cells without enough samples) are left out."""
    counts = counts if counts.ndim == 2 else counts[:, None]
    present = ~np.isnan(scatter)
    noise = (scatter**2 / counts)[present]
    squared = (means**2).sum(-1)[present]
    signal = math.sqrt(max(float(squared.mean() - noise.mean()), 0.0))
    scatter_rms = float(np.sqrt((scatter[present] ** 2).mean()))
    ratio = float(squared.mean() / noise.mean()) if noise.mean() > 0 else math.inf
    threshold = 1.0 + NULL_SD * math.sqrt(2.0 / (squared.size * max(rank, 1)))
    return {
        "cell_signal_rms": signal,
        "cell_scatter_rms": scatter_rms,
        "scatter_to_signal": scatter_rms / signal if signal > 0 else math.inf,
        "signal_detected": bool(ratio > threshold),
    }


def _same_class_split(means: np.ndarray, scatter: np.ndarray, noise: np.ndarray):
    """(lam dependence above its noise, its noise floor, within-cell scatter) of same-class cell
    means (C, L, d), with scatter (C, L) and the movement noise (C,) of the cells; cells and
    lams without samples (NaN) are left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: NaN, said by the value
        return _same_class_numbers(means, scatter, noise)


def _same_class_numbers(means, scatter, noise):
    centre = np.nanmean(means, axis=1, keepdims=True)
    size = math.sqrt(float(np.nanmean((centre**2).sum(-1))))
    moving = float(np.nanmean(((means - centre) ** 2).sum(-1)))
    floor = float(np.nanmean(noise))
    return (
        math.sqrt(max(moving - floor, 0.0)) / size,
        math.sqrt(floor) / size,
        math.sqrt(float(np.nanmean(scatter**2))) / size,
    )


def compare_cells(
    features: np.ndarray,
    c: np.ndarray,
    c_prime: np.ndarray,
    lams: np.ndarray,
    weight: np.ndarray,
    global_mean: np.ndarray,
    exact_classifier: bool = True,
    bias: np.ndarray | None = None,
) -> CellComparison:
    r"""Compare the cell means of mixed-pair features with the theory.

    Parameters
    ----------
    features : (P, L, d) features of P training pairs (classes ``c``, ``c_prime`` (P,)) mixed
        at the L values of ``lams`` (weight of class c); the grid must hold 0, 1/2 and 1, and
        there must be same-class and different-class pairs (checked first, ValueError).
    weight : (K, d) classifier; global_mean : (d,) :math:`\mu_G` (the centre).
    exact_classifier : also solve the UFM for this very ``weight``
        (:func:`ufm.nets.own_classifier.own_classifier_optimum`), with the network's logit
        offset :math:`W\mu_G + b` (``bias``: (K,) or None) as its fixed bias.

    Returns
    -------
    :class:`CellComparison`. Scalars: ``amplification`` and ``amplification_se`` (pairs inside
    the cells), ``amplification_se_cells`` (jackknife over the cells: also which class pairs);
    ``amplification_theory`` (cross-entropy at ``curve_fitted_lam_H``, fitted on the
    normalised curves); ``amplification_null`` (1); ``ce_curve_rms`` and
    ``squared_error_curve_rms`` (rms misfit of the normalised curves) with ``*_in_se`` (the
    same in standard errors, over the finite points); ``better_fit`` ("cross_entropy",
    "squared_error", "noise" or "undetermined": the null unless the cross-entropy fit lowers
    the chi-square of the curves by more than :data:`CHI2_PER_PARAMETER`; "noise" without a
    detected signal; "undetermined" when the chi-squares cannot be formed);
    ``a_same`` and ``a_same_se``; ``off_span_residual_half``; ``pairs_per_cell``; the signal
    numbers and the same-class split of the module docstring; ``amplification_exact_W``,
    ``exact_W_feature_distance``, ``exact_W_curve_distance`` (exact optimum for this W
    against the ETF approximation) and ``exact_W_curve_rms`` (the network's curves against
    the exact-W curves).
    """
    check_cells(c, c_prime, lams)
    cells = cell_statistics(features, c, c_prime, lams, weight, global_mean)
    return compare_cell_statistics(cells, weight, global_mean, exact_classifier, bias)


def compare_cell_statistics(
    cells: CellStatistics,
    weight: np.ndarray,
    global_mean: np.ndarray,
    exact_classifier: bool = True,
    bias: np.ndarray | None = None,
) -> CellComparison:
    """:func:`compare_cells` from cell statistics already computed, paired
    (:func:`ufm.nets.cell_means.cell_statistics`) or binned
    (:func:`ufm.nets.cell_means.binned_cell_statistics`); same arguments and result."""
    W = np.asarray(weight, dtype=np.float64)
    K = W.shape[0]
    curves = coefficient_curves(cells)
    gain = float(np.trace(W @ W.T) / (K - 1))
    half = half_index(cells.lam)
    signal = signal_summary(cells.means, cells.scatter, cells.counts, cells.span_rank)

    # Binned samples: the theory averaged over each bin's lams (cell_means.CellStatistics);
    # the exact optimum for this W at each bin's mean lam (1/2 in the middle bin, where the
    # amplification is read).
    theory_lams = cells.lam if cells.theory_lams is None else cells.theory_lams
    mean_lams = np.array(theory_lams if theory_lams.ndim == 1 else theory_lams.mean(axis=1))
    mean_lams[half] = 0.5
    lam_H = fit_curve_lam_H(curves, K, gain, theory_lams)
    if math.isfinite(lam_H):
        ce_a, ce_b = binned_ce_curves(K, gain, theory_lams, lam_H)
    else:
        ce_a = ce_b = np.full(len(cells.lam), np.nan)
    null_a, null_b = null_curves(theory_lams)
    ce_rms, ce_in_se = curve_misfit(curves, ce_a, ce_b)
    null_rms, null_in_se = curve_misfit(curves, null_a, null_b)
    points = int(np.isfinite(np.concatenate([curves.a_norm, curves.b_norm])).sum())
    improvement = points * (null_in_se**2 - ce_in_se**2)  # chi-square of the null minus CE's
    if not signal["signal_detected"]:
        better = "noise"
    elif not math.isfinite(improvement):
        better = "undetermined"
    else:
        better = "cross_entropy" if improvement > CHI2_PER_PARAMETER else "squared_error"

    offset = logit_offset(W, bias, np.asarray(global_mean, dtype=np.float64))
    exact = (
        own_classifier_optimum(W, mean_lams, lam_H, offset=offset)
        if exact_classifier
        else own_classifier_optimum(W, mean_lams, math.nan)
    )
    exact_rms, _ = curve_misfit(curves, exact["a_norm"], exact["b_norm"])
    same = cells.same
    lam_dependence, lam_noise, same_scatter = _same_class_split(
        cells.means[same], cells.scatter[same], cells.movement_noise[same]
    )
    scalars = {
        "amplification": curves.amplification,
        "amplification_se": curves.amplification_se,
        "amplification_se_cells": curves.amplification_se_cells,
        "amplification_theory": float(ce_a[half] + ce_b[half]),
        "amplification_null": 1.0,
        "curve_fitted_lam_H": lam_H,
        "ce_curve_rms": ce_rms,
        "ce_curve_rms_in_se": ce_in_se,
        "squared_error_curve_rms": null_rms,
        "squared_error_curve_rms_in_se": null_in_se,
        "better_fit": better,
        "a_same": curves.same_mean,
        "a_same_se": curves.same_mean_se,
        "off_span_residual_half": float(curves.residual[half]),
        "pairs_per_cell": int(cells.counts[~np.isnan(cells.scatter)].min()),
        **signal,
        "same_class_lam_dependence": lam_dependence,
        "same_class_lam_dependence_noise": lam_noise,
        "same_class_scatter": same_scatter,
        "amplification_exact_W": exact["amplification"],
        "exact_W_feature_distance": exact["feature_distance"],
        "exact_W_curve_distance": exact["curve_distance"],
        "exact_W_curve_rms": exact_rms,
    }
    rows = []
    for l, lam in enumerate(cells.lam):
        rows.append(
            {
                "lam": float(lam), "theory_lam": float(mean_lams[l]),
                "a": float(curves.a[l]), "a_se": float(curves.a_se[l]),
                "a_cell_sd": float(curves.a_sd[l]),
                "b": float(curves.b[l]), "b_se": float(curves.b_se[l]),
                "b_cell_sd": float(curves.b_sd[l]),
                "a_same": float(curves.a_same[l]), "a_same_se": float(curves.a_same_se[l]),
                "a_norm": float(curves.a_norm[l]), "a_norm_se": float(curves.a_norm_se[l]),
                "b_norm": float(curves.b_norm[l]), "b_norm_se": float(curves.b_norm_se[l]),
                "residual": float(curves.residual[l]),
                "same_class_residual": float(curves.same_residual[l]),
                "ce_a_norm": float(ce_a[l]), "ce_b_norm": float(ce_b[l]),
                "null_a_norm": float(null_a[l]), "null_b_norm": float(null_b[l]),
                "exact_W_a_norm": float(exact["a_norm"][l]),
                "exact_W_b_norm": float(exact["b_norm"][l]),
            }
        )  # fmt: skip
    solved = None if exact["features"] is None else {**exact, "lams": mean_lams, "lam_H": lam_H}
    return CellComparison(scalars, rows, cells.arrays(), solved)
