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

**Goodness of fit.** Each prediction of the normalised curves gets a chi-square in the
quoted errors (:func:`ufm.nets.coefficient_curves.curve_chi_square`), its degrees of freedom
and p-value, and a verdict (:func:`fit_verdicts`) at the significance
:data:`FIT_SIGNIFICANCE`: ``"fits"``, ``"closer_but_rejected"`` or ``"rejected"``.
``better_fit`` names a prediction only when that prediction fits; ``"neither"`` says that
the data reject the one they prefer. A cross-entropy fit whose lam_H ends at its search
bound (``curve_fitted_lam_H_status`` ``"at_bound"``) determined no parameter and is never
the better fit.

**Same-class cells** (theory: :math:`\tilde h = a_\text{same} w_c` at every lam), two
separate numbers, each relative to the rms norm of the cells' lam-averaged means:
``same_class_lam_dependence``, the rms movement of a cell mean with lam above its noise (the
root of the mean squared movement minus its expected noise, ``same_class_lam_dependence_noise``
squared, 0 when negative), and ``same_class_scatter``, the rms within-cell scatter of single
pairs. Beside them, ``same_class_cell_cosine``: the mean cosine of the same-class cell
means, in the row space of :math:`W`, with their own row :math:`w_c` (theory 1); it differs
from ``same_class_cosine`` of :func:`ufm.nets.ufm_comparison.sample_agreement`, the mean
cosine of single samples in the full feature space, which the scatter of the pairs and the
part of the features outside the row space (``same_class_out_of_span_fraction``) lower.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .cell_means import CellStatistics, cell_statistics, check_cells, half_index
from .coefficient_curves import (
    ChiSquare,
    binned_ce_curves,
    coefficient_curves,
    curve_chi_square,
    curve_misfit,
    fit_curve_lam_H,
    null_curves,
)
from .own_classifier import own_classifier_optimum
from .triple_choice import curve_fit_status
from .ufm_comparison import logit_offset

__all__ = [
    "CellComparison",
    "compare_cell_statistics",
    "compare_cells",
    "fit_verdicts",
    "signal_summary",
]

NULL_SD = 6.0
"""Standard deviations above the pure-noise value of R that count as a signal."""
CHI2_PER_PARAMETER = 9.0
"""How much the cross-entropy fit, with its one free parameter, must lower the chi-square of
the normalised curves below the null's (no parameter) to count as the better fit: 3 standard
errors' worth. The cross-entropy curves tend to the null's as lam_H grows, so without this
rule a fit at a huge lam_H would "win" on noise."""
FIT_SIGNIFICANCE = 0.01
"""A prediction whose chi-square p-value is below this is rejected by the curves."""


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


def fit_verdicts(ce: ChiSquare, null: ChiSquare, ce_status: str, signal_detected: bool):
    """(``better_fit``, verdict of the cross-entropy fit, verdict of the null) from their
    chi-squares over the curves (module docstring).

    A prediction *fits* when its p-value is at least :data:`FIT_SIGNIFICANCE`. Of two that
    do not, the one the :data:`CHI2_PER_PARAMETER` rule prefers (cross-entropy when it lowers
    the null's chi-square by more than that, else the null) is ``"closer_but_rejected"``, the
    other (or either, when one chi-square is missing) ``"rejected"``; a verdict is
    ``"undetermined"`` without a p-value. ``better_fit``: ``"noise"`` without a detected
    signal; ``"undetermined"`` when either p-value is missing; ``"cross_entropy"`` when its
    lam_H was fitted inside the range (``ce_status`` "fitted"), it fits and it is the closer
    or the null is rejected; ``"squared_error"`` when the null fits and the cross-entropy fit
    is not the closer; else ``"neither"`` (both rejected, or the preferred prediction
    rejected or at its bound)."""
    comparable = math.isfinite(ce.chi2) and math.isfinite(null.chi2)
    ce_closer = comparable and null.chi2 - ce.chi2 > CHI2_PER_PARAMETER

    def verdict(fit: ChiSquare, closer: bool) -> str:
        if not math.isfinite(fit.p_value):
            return "undetermined"
        if fit.p_value >= FIT_SIGNIFICANCE:
            return "fits"
        return "closer_but_rejected" if closer else "rejected"

    ce_verdict, null_verdict = verdict(ce, ce_closer), verdict(null, comparable and not ce_closer)
    if not signal_detected:
        better = "noise"
    elif "undetermined" in (ce_verdict, null_verdict):
        better = "undetermined"
    elif ce_status == "fitted" and ce_verdict == "fits" and (ce_closer or null_verdict != "fits"):
        better = "cross_entropy"
    elif null_verdict == "fits" and not ce_closer:
        better = "squared_error"
    else:
        better = "neither"
    return better, ce_verdict, null_verdict


def _same_class_cell_cosine(means: np.ndarray, rows: np.ndarray) -> float:
    """Mean cosine of same-class cell means (C, L, d), already in the row space, with their
    own classifier rows (C, d), over the cells and lams with samples (NaN: left out)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (means * rows[:, None, :]).sum(-1) / (
            np.linalg.norm(means, axis=-1) * np.linalg.norm(rows, axis=-1)[:, None]
        )
    present = np.isfinite(cosine)
    return float(cosine[present].mean()) if present.any() else math.nan


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


def _chi_square_scalars(name: str, fit: ChiSquare, verdict: str) -> dict[str, object]:
    """The summary keys of one prediction's goodness of fit, prefixed by ``name``."""
    return {
        f"{name}_chi2": fit.chi2,
        f"{name}_dof": fit.dof,
        f"{name}_chi2_per_dof": fit.per_dof,
        f"{name}_p_value": fit.p_value,
        f"{name}_verdict": verdict,
    }


def compare_cells(
    features: np.ndarray,
    c: np.ndarray,
    c_prime: np.ndarray,
    lams: np.ndarray,
    weight: np.ndarray,
    global_mean: np.ndarray,
    exact_classifier: bool = True,
    bias: np.ndarray | None = None,
    fit_lam_H: bool = True,
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
    fit_lam_H : fit lam_H on the curves; False skips the fit and so the cross-entropy
        prediction and the exact optimum, which need it (their numbers NaN, the status
        "not_fitted": the light measurement of :class:`ufm.nets.MeasureSettings`).

    Returns
    -------
    :class:`CellComparison`. Scalars: ``amplification`` with ``amplification_se`` (pairs inside
    the cells), ``amplification_se_cells`` (jackknife over the cells: also which class pairs)
    and ``amplification_error`` (the larger, the one quoted); ``amplification_same_half``,
    ``amplification_same_0``, ``amplification_same_1`` (normalised by the same-class
    coefficient at lam = 1/2, 0, 1 instead of its lam mean) and ``amplification_systematic``
    (the largest such change over all lams of the grid);
    ``amplification_theory`` (cross-entropy at ``curve_fitted_lam_H``, fitted on the
    normalised curves, with ``curve_fitted_lam_H_status`` "fitted", "at_bound" or
    "not_fitted", :func:`ufm.nets.triple_choice.curve_fit_status`);
    ``amplification_null`` (1); ``ce_curve_rms`` and ``squared_error_curve_rms`` (rms misfit
    of the normalised curves) with ``*_in_se`` (the same in quoted errors, over the finite
    points); per prediction (``ce_``, ``squared_error_``) ``chi2``, ``dof``,
    ``chi2_per_dof``, ``p_value`` and ``verdict`` ("fits", "closer_but_rejected",
    "rejected", "undetermined") at ``fit_significance``; ``better_fit`` ("cross_entropy",
    "squared_error", "neither", "noise" or "undetermined", :func:`fit_verdicts`);
    ``a_same`` with ``a_same_se``, ``a_same_se_cells``, ``a_same_error``;
    ``off_span_residual_half``; ``pairs_per_cell``; the signal numbers, the same-class split
    and ``same_class_cell_cosine`` of the module docstring; ``amplification_exact_W``,
    ``exact_W_feature_distance``, ``exact_W_curve_distance`` (exact optimum for this W
    against the ETF approximation) and ``exact_W_curve_rms`` (the network's curves against
    the exact-W curves).
    """
    check_cells(c, c_prime, lams)
    cells = cell_statistics(features, c, c_prime, lams, weight, global_mean)
    return compare_cell_statistics(cells, weight, global_mean, exact_classifier, bias, fit_lam_H)


def compare_cell_statistics(
    cells: CellStatistics,
    weight: np.ndarray,
    global_mean: np.ndarray,
    exact_classifier: bool = True,
    bias: np.ndarray | None = None,
    fit_lam_H: bool = True,
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
    lam_H = fit_curve_lam_H(curves, K, gain, theory_lams) if fit_lam_H else math.nan
    if math.isfinite(lam_H):
        ce_a, ce_b = binned_ce_curves(K, gain, theory_lams, lam_H)
    else:
        ce_a = ce_b = np.full(len(cells.lam), np.nan)
    null_a, null_b = null_curves(theory_lams)
    ce_rms, ce_in_se = curve_misfit(curves, ce_a, ce_b)
    null_rms, null_in_se = curve_misfit(curves, null_a, null_b)
    lam_H_status = curve_fit_status(lam_H)
    ce_fit = curve_chi_square(curves, ce_a, ce_b, parameters=int(lam_H_status == "fitted"))
    null_fit = curve_chi_square(curves, null_a, null_b, parameters=0)
    better, ce_verdict, null_verdict = fit_verdicts(
        ce_fit, null_fit, lam_H_status, signal["signal_detected"]
    )

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
    by_lam = dict(zip(cells.lam.tolist(), curves.amplification_by_lam.tolist()))
    scalars = {
        "amplification": curves.amplification,
        "amplification_se": curves.amplification_se,
        "amplification_se_cells": curves.amplification_se_cells,
        "amplification_error": curves.amplification_error,
        "amplification_same_half": by_lam[0.5],
        "amplification_same_0": by_lam[0.0],
        "amplification_same_1": by_lam[1.0],
        "amplification_systematic": curves.amplification_systematic,
        "amplification_theory": float(ce_a[half] + ce_b[half]),
        "amplification_null": 1.0,
        "curve_fitted_lam_H": lam_H,
        "curve_fitted_lam_H_status": lam_H_status,
        "ce_curve_rms": ce_rms,
        "ce_curve_rms_in_se": ce_in_se,
        "squared_error_curve_rms": null_rms,
        "squared_error_curve_rms_in_se": null_in_se,
        **_chi_square_scalars("ce", ce_fit, ce_verdict),
        **_chi_square_scalars("squared_error", null_fit, null_verdict),
        "fit_significance": FIT_SIGNIFICANCE,
        "better_fit": better,
        "a_same": curves.same_mean,
        "a_same_se": curves.same_mean_se,
        "a_same_se_cells": curves.same_mean_se_cells,
        "a_same_error": curves.same_mean_error,
        "off_span_residual_half": float(curves.residual[half]),
        "pairs_per_cell": int(cells.counts[~np.isnan(cells.scatter)].min()),
        **signal,
        "same_class_lam_dependence": lam_dependence,
        "same_class_lam_dependence_noise": lam_noise,
        "same_class_scatter": same_scatter,
        "same_class_cell_cosine": _same_class_cell_cosine(cells.means[same], W[cells.c[same]]),
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
                "a_same_norm": float(curves.a_same[l] / curves.same_mean),
                "amplification_same_at_lam": float(curves.amplification_by_lam[l]),
                "a_norm": float(curves.a_norm[l]), "a_norm_se": float(curves.a_norm_se[l]),
                "a_norm_se_cells": float(curves.a_norm_se_cells[l]),
                "a_norm_error": float(curves.a_norm_error[l]),
                "b_norm": float(curves.b_norm[l]), "b_norm_se": float(curves.b_norm_se[l]),
                "b_norm_se_cells": float(curves.b_norm_se_cells[l]),
                "b_norm_error": float(curves.b_norm_error[l]),
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
