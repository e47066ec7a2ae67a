r"""Comparison of a network's mixed-pair activations with the unconstrained-features model.

This module holds everything that relates a trained network to the theory (docs/theory.md
sections 2 and 6): the UFM logit margins :func:`ufm_margins` for a simplex-ETF classifier of
the network's gain, the least-squares effective :math:`\lambda_H` (:func:`fit_lam_H`), and
:func:`theory_agreement`, which compares same-class cosines and spread, margins, decision-
boundary distances and confidences with their theoretical values. The comparison of the
features themselves is on cell means, in :mod:`ufm.nets.cell_comparison`. It only reads
arrays; producing them is :mod:`ufm.nets.measure`'s business.

``ufm_distance`` (the relative distance of all centred features to the optimum up to one
scale) is retired: it split exactly as :math:`D^2 = o^2 + (1-o^2)D_\text{span}^2`
(:math:`o` = ``out_of_span_fraction``), and most of :math:`D_\text{span}` was the
pair-to-pair scatter inside a cell, which no function of :math:`(c, c', \lambda)` can fit.

Interface. :func:`ufm.nets.measure.measure` calls :func:`theory_agreement` once, with the
all-classes activations of :func:`ufm.nets.measure.mixed_activations` (``features`` (P, L, d),
``logits`` (P, L, K), ``c``, ``c_prime`` (P,), ``lam`` (L,)), the classifier ``weight`` (K, d)
and ``bias`` (K,) or None in float64, the global mean :math:`\mu_G` (d,) of the clean training
class means and the training loss. It gets back an :class:`Agreement`: ``scalars`` join the
measurement's scalars (``summary.json``), ``rows`` become its ``theory_vs_lam`` table, one row
per lam.

References: Fisher, Meng & Papyan, "Pushing boundaries: mixup's influence on neural
collapse", ICLR 2024 (arXiv:2402.06171).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from .._checks import preview
from ..etf import etf_distance, etf_gain, row_norm, row_space
from ..losses import MixupLoss
from ..theory import has_exact_theory, optimal_coefficients
from ..theory.optimum import optimal_coefficients_over_lam_H
from .triple_choice import LAM_H_RANGE

__all__ = [
    "LAM_H_RANGE",
    "Agreement",
    "fit_lam_H",
    "frobenius_norm",
    "logit_offset",
    "sample_agreement",
    "theory_agreement",
    "ufm_margins",
    "ufm_margins_over_lam_H",
]



def ufm_margins(K: int, gain: float, lams: np.ndarray, lam_H: float, loss: MixupLoss):
    r"""UFM logit margin :math:`z_c - z_{c'} = g\,(a(\lambda) - b(\lambda))` for a simplex-ETF
    classifier of gain :math:`g` (:func:`ufm.theory.optimal_coefficients`), and (a, b);
    ``lams`` (L, Q) gives each averaged over a row (the lams of a bin)."""
    scale = row_norm(K, gain)
    lams = np.asarray(lams, dtype=np.float64)
    a, b = optimal_coefficients(K, lams.ravel(), lam_H, scale, loss)
    return _margins_from(gain, lams, a, b)


def _margins_from(gain: float, lams: np.ndarray, a: np.ndarray, b: np.ndarray):
    """(margins, a, b) of :func:`ufm_margins` from the coefficients at ``lams.ravel()``."""
    if lams.ndim == 2:
        a, b = a.reshape(lams.shape).mean(axis=1), b.reshape(lams.shape).mean(axis=1)
    return gain * (a - b), a, b


def ufm_margins_over_lam_H(K: int, gain: float, lams: np.ndarray, lam_H_values, loss: MixupLoss):
    """:func:`ufm_margins` for each of the ridges ``lam_H_values``, the theory solved for all of
    them at once (:func:`ufm.theory.optimum.optimal_coefficients_over_lam_H`); a list of its
    (margins, a, b), entry k bit for bit ``ufm_margins(K, gain, lams, lam_H_values[k], loss)``."""
    scale = row_norm(K, gain)
    lams = np.asarray(lams, dtype=np.float64)
    a, b = optimal_coefficients_over_lam_H(K, lams.ravel(), lam_H_values, scale, loss)
    return [_margins_from(gain, lams, a_k, b_k) for a_k, b_k in zip(a, b)]


def fit_log_lam_H(objective, points: int = 61, grid_objective=None) -> float:
    r"""The :math:`\lambda_H` minimising ``objective(log lam_H)`` over :data:`LAM_H_RANGE`: a grid
    of ``points`` points in :math:`\log\lambda_H` locates the best bracket, bounded Brent refines
    it (``scipy.optimize.minimize_scalar``); the grid point is kept if Brent does no better.

    ``grid_objective``, if given, takes the whole grid (an array) and returns the objective at
    each of its points, all at once; it must give exactly the values of ``objective`` (a
    vectorised evaluation of the same theory, :func:`ufm_margins_over_lam_H`), so that the fit
    is the same, only cheaper: the grid is most of a fit's evaluations."""
    grid = np.linspace(math.log(LAM_H_RANGE[0]), math.log(LAM_H_RANGE[1]), points)
    values = [objective(t) for t in grid] if grid_objective is None else list(grid_objective(grid))
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    result = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return float(math.exp(result.x if result.fun <= values[best] else grid[best]))


def fit_lam_H(
    margins: np.ndarray,
    lams: np.ndarray,
    K: int,
    gain: float,
    loss: MixupLoss,
    counts: np.ndarray | None = None,
) -> float:
    r"""Least-squares effective :math:`\lambda_H`: minimises
    :math:`\sum_{p,l}\bigl(m_{pl} - g(a-b)(\lambda_l;\lambda_H)\bigr)^2` over
    :math:`\log\lambda_H\in[\log 10^{-8}, \log 10^4]`: a grid of 31 points locates the best
    bracket, bounded Brent refines it (``scipy.optimize.minimize_scalar``).
    ``margins`` (P, L) are the network's margins at the lam grid ``lams`` (L,); or, with
    ``counts`` (L,), ``margins`` (L,) are the mean margins of ``counts`` samples per lam (NaN
    where none).
    """
    if counts is None:
        mean, weights = margins.mean(axis=0), np.full(len(lams), float(margins.shape[0]))
    else:
        mean, weights = np.nan_to_num(margins), np.asarray(counts, dtype=np.float64)
    # sum_p (m_pl - t_l)^2 = sum_p (m_pl - mean_l)^2 + n_l (mean_l - t_l)^2: only means matter.

    def misfit(theory: np.ndarray) -> float:
        return float((weights * (mean - theory) ** 2).sum())

    def objective(log_lam_H: float) -> float:
        theory, _, _ = ufm_margins(K, gain, lams, math.exp(log_lam_H), loss)
        return misfit(theory)

    def grid_objective(grid: np.ndarray) -> list[float]:
        solved = ufm_margins_over_lam_H(K, gain, lams, [math.exp(t) for t in grid], loss)
        return [misfit(theory) for theory, _, _ in solved]

    return fit_log_lam_H(objective, points=31, grid_objective=grid_objective)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def _check_agreement_inputs(c: np.ndarray, c_prime: np.ndarray, lams: np.ndarray) -> None:
    lams = np.asarray(lams)
    if not {0.0, 0.5, 1.0} <= set(lams.tolist()):
        raise ValueError(f"the lam grid must contain 0, 1/2 and 1, got {preview(lams)}")
    same = np.asarray(c) == np.asarray(c_prime)
    if same.all() or not same.any():
        raise ValueError(
            "theory agreement needs both same-class and different-class pairs, got "
            f"{int(same.sum())} same-class of {same.size}"
        )


@dataclass
class Agreement:
    """Scalars and a per-lam table from :func:`theory_agreement`."""

    scalars: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)


def logit_offset(weight: np.ndarray, bias: np.ndarray | None, global_mean: np.ndarray):
    r"""The logit offset :math:`o = W\mu_G + b` modulo the all-ones vector (softmax ignores
    it): :math:`(I - \mathbf 1\mathbf 1^\top/K)\,o`, shape (K,)."""
    offset = weight @ global_mean + (0.0 if bias is None else bias)
    return offset - offset.mean()


def theory_agreement(
    activations: dict[str, np.ndarray],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    global_mean: torch.Tensor,
    loss: MixupLoss,
) -> Agreement:
    r"""Compare mixed-pair logits with the UFM optimum for a simplex ETF of the network's gain.

    Features are centred, :math:`\tilde h = h - \mu_G` with :math:`\mu_G` the mean of the
    clean training class means (the UFM has no feature offset), so the logits split as
    :math:`z = W\tilde h + o` with the offset :math:`o = W\mu_G + b`. The UFM of the theory
    has no offset; its margins are compared with the **centred** margins
    :math:`(W\tilde h)_c - (W\tilde h)_{c'}`, and ``logit_offset`` (rms over classes of
    :math:`o` modulo the all-ones vector, :func:`logit_offset`) says how much the network's
    own margins (``margin_raw_mean`` in the table) differ by.

    * Same-class pairs (:math:`c=c'`): mean :math:`\cos(\tilde h, w_c)` per lam (theory: 1).
      (Their movement with lam and their scatter are ``same_class_lam_dependence`` and
      ``same_class_scatter`` of :func:`ufm.nets.cell_comparison.compare_cells`.)
    * Different-class pairs: the centred margin per lam beside the UFM margin
      :math:`g(a-b)`. **Approximation:** the theory holds for a simplex ETF; the network's
      :math:`W` is replaced by the ETF with the same gain
      :math:`g = \operatorname{tr}(WW^\top)/(K-1)` (:func:`ufm.etf.etf_gain`), and
      ``classifier_etf_distance`` (:func:`ufm.etf.etf_distance` of :math:`W`) says how far
      that is from the truth. The one free parameter, an effective :math:`\lambda_H`, is
      fitted by least squares on these margins (:func:`fit_lam_H`) and reported as
      ``fitted_lam_H`` with the rms misfit ``margin_fit_rms``.
    * ``boundary_distance_half``: mean distance :math:`|z_c-z_{c'}|/\|w_c-w_{c'}\|` of the
      :math:`\lambda=1/2` features from the c/c' decision boundary of the network (offset
      included; theory: 0), and ``boundary_distance_half_relative``: the same divided by the
      mean distance of the clean endpoints (:math:`\lambda\in\{0,1\}`) from that boundary.
    * ``out_of_span_fraction`` :math:`=\|\tilde H - P\tilde H\|_F/\|\tilde H\|_F` with
      :math:`P` the projection onto the row space of :math:`W`: the part of the centred
      features the classifier cannot see; ``same_class_out_of_span_fraction`` the same over
      the same-class samples only. With the scatter of single samples it is why
      ``same_class_cosine`` (single samples, full space) falls below the cosine of the
      same-class cell means in the row space (``same_class_cell_cosine`` of
      :func:`ufm.nets.cell_comparison.compare_cells`).
    * Confidence (top softmax probability of the network's logits) per lam over the
      different-class pairs, and :math:`p_c`, :math:`p_{c'}`, beside the softmax of
      :math:`Wh^\star` (theory, no offset); ``confidence_half`` is the mean confidence of the
      different-class :math:`\lambda=1/2` mixtures.

    For a loss without exact theory (focal) the theory entries are NaN. ``activations`` are
    paired, as from :func:`ufm.nets.measure.mixed_activations`; the lam grid must hold 0, 1/2
    and 1, and there must be same-class and different-class pairs. The per-lam means are over
    the samples at that lam (:func:`sample_agreement`, which takes any samples).
    """
    c, c_prime, lams = activations["c"], activations["c_prime"], activations["lam"]
    _check_agreement_inputs(c, c_prime, lams)
    features = activations["features"]
    P, L = features.shape[:2]
    return sample_agreement(
        features.reshape(P * L, -1),
        np.repeat(c, L),
        np.repeat(c_prime, L),
        np.tile(np.arange(L), P),
        lams,
        weight.cpu().numpy(),
        None if bias is None else bias.cpu().numpy(),
        global_mean.cpu().numpy(),
        loss,
        logits=activations["logits"].reshape(P * L, -1),
    )


def _mean_or_nan(values: np.ndarray) -> float:
    """The mean of ``values``, NaN (without a warning) when there are none (a lam bin without
    samples)."""
    return float(values.mean()) if values.size else math.nan


def _group_mean(values: np.ndarray, group: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (N,) per group (G,) of ``group`` (N,); NaN for an empty group."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(group, weights=values, minlength=len(count)) / count


def _theory_probabilities(W, a, b, c, c_prime, lam_index) -> np.ndarray:
    r"""Softmax (N, K) of the logits :math:`Wh^\star` of the optimum
    :math:`h^\star = a_l w_c + b_l w_{c'}` of every sample (classes ``c``, ``c_prime`` (N,),
    lam ``lam_index`` into ``a``, ``b`` (L,)). It depends on the cell (c, c', l) only, so it
    is computed once per distinct cell and given to every sample of it, at a fraction of the
    cost (a network's measurement has ``pairs_all_classes`` samples, 40 by default, in each)."""
    L = len(a)
    key = (c * W.shape[0] + c_prime) * L + lam_index
    cells, sample_cell = np.unique(key, return_inverse=True)
    pair, cell_lam = np.divmod(cells, L)
    cell_c, cell_c_prime = np.divmod(pair, W.shape[0])
    optimum = a[cell_lam, None] * W[cell_c] + b[cell_lam, None] * W[cell_c_prime]
    return _softmax(optimum @ W.T)[sample_cell.reshape(-1)]


def frobenius_norm(x: np.ndarray) -> float:
    """The Frobenius norm of ``x``, summed by numpy itself rather than by BLAS.

    ``np.linalg.norm`` takes a BLAS dot product, which BLAS splits over its threads: the last
    bits then move with the thread count, and a features file would not give back exactly
    the numbers of the measurement that wrote it (``ufm train`` runs BLAS on its ``threads``,
    ``ufm compare`` on the machine's default). numpy's own sum is the same on any thread
    count."""
    return math.sqrt(float(np.square(x).sum()))


def _out_of_span(H: np.ndarray, span: np.ndarray) -> float:
    r""":math:`\|H - HSS^\top\|_F/\|H\|_F` for rows H (N, d) and an orthonormal basis S
    (``span``, (d, r)) of the row space: the fraction of the features' length outside it."""
    return frobenius_norm(H - H @ span @ span.T) / frobenius_norm(H)


def sample_agreement(
    features: np.ndarray,
    c: np.ndarray,
    c_prime: np.ndarray,
    lam_index: np.ndarray,
    lams: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    global_mean: np.ndarray,
    loss: MixupLoss,
    logits: np.ndarray | None = None,
    theory_lams: np.ndarray | None = None,
    fit: bool = True,
) -> Agreement:
    r""":func:`theory_agreement` for any mixed samples: ``features`` (N, d) of mixtures of
    classes ``c``, ``c_prime`` (N,) at lam ``lams[lam_index]`` (``lams`` (L,) a grid holding 0,
    1/2 and 1, or the centres of lam bins), with the classifier ``weight`` (K, d), ``bias``
    (K,) or None and the centre ``global_mean`` (d,), all float64. ``logits`` (N, K) are the
    network's; None computes them as :math:`Wh + b`. Per-lam entries are means over the samples
    at (or binned to) that lam; a lam without samples of a kind gives NaN there.
    ``theory_lams`` (L, Q): the lams at which the theory is evaluated and averaged for each
    lam (binned samples: quantiles of each bin's lams); None: at ``lams``. ``fit``
    False skips the fit of lam_H and so every theory entry, NaN as for a loss without exact
    theory (the light measurement of :class:`ufm.nets.MeasureSettings`).
    """
    _check_agreement_inputs(c, c_prime, lams)
    mu = np.asarray(global_mean, dtype=np.float64)
    W = np.asarray(weight, dtype=np.float64)
    b = None if bias is None else np.asarray(bias, dtype=np.float64)
    raw = np.asarray(features, dtype=np.float64)
    H = raw - mu
    Z = raw @ W.T + (0.0 if b is None else b) if logits is None else logits.astype(np.float64)
    c, c_prime, lam_index = np.asarray(c), np.asarray(c_prime), np.asarray(lam_index)
    lams = np.asarray(lams, dtype=np.float64)
    K, L = W.shape[0], len(lams)
    offset = logit_offset(W, b, mu)
    same = c == c_prime
    different = ~same
    half = int(np.flatnonzero(lams == 0.5)[0])
    endpoint_lams = (lams == 0.0) | (lams == 1.0)

    # Same-class samples.
    H_same, w_same = H[same], W[c[same]]
    norms_same = np.linalg.norm(H_same, axis=-1)
    cosine_same = (H_same * w_same).sum(-1) / (norms_same * np.linalg.norm(w_same, axis=-1))
    same_lam = lam_index[same]
    same_count = np.bincount(same_lam, minlength=L).astype(np.float64)

    # Different-class samples: margins (centred and raw) and boundary distances.
    rows = np.flatnonzero(different)
    c_d, cp_d, lam_d = c[rows], c_prime[rows], lam_index[rows]
    raw_margins = Z[rows, c_d] - Z[rows, cp_d]
    margins = raw_margins - (offset[c_d] - offset[cp_d])
    row_distances = np.linalg.norm(W[:, None] - W[None], axis=-1)  # (K, K), once per pair
    distances = np.abs(raw_margins) / row_distances[c_d, cp_d]
    probabilities = _softmax(Z[rows])
    p_c = probabilities[np.arange(len(rows)), c_d]
    p_c_prime = probabilities[np.arange(len(rows)), cp_d]
    confidence = probabilities.max(-1)
    count = np.bincount(lam_d, minlength=L).astype(np.float64)
    margin_mean = _group_mean(margins, lam_d, count)

    gain = etf_gain(torch.as_tensor(W))
    span = row_space(W)
    at_half, at_ends = lam_d == half, endpoint_lams[lam_d]
    scalars = {
        "classifier_gain": gain,
        "classifier_etf_distance": etf_distance(torch.as_tensor(W)),
        "logit_offset": float(np.sqrt((offset**2).mean())),
        "same_class_cosine": float(cosine_same.mean()),
        "boundary_distance_half": _mean_or_nan(distances[at_half]),
        "boundary_distance_half_relative": _mean_or_nan(distances[at_half])
        / _mean_or_nan(distances[at_ends]),
        "fitted_lam_H": math.nan,
        "margin_fit_rms": math.nan,
        "out_of_span_fraction": _out_of_span(H, span),
        "same_class_out_of_span_fraction": _out_of_span(H_same, span),
        "confidence_half": _mean_or_nan(confidence[at_half]),
    }
    theory_margin = theory_p_c = theory_confidence = np.full(L, np.nan)
    if fit and has_exact_theory(loss):
        at = lams[:, None] if theory_lams is None else np.asarray(theory_lams, np.float64)
        lam_H = fit_lam_H(margin_mean, at, K, gain, loss, count)
        theory_margin, a, b_coef = ufm_margins(K, gain, at, lam_H, loss)
        theory_probabilities = _theory_probabilities(W, a, b_coef, c_d, cp_d, lam_d)
        theory_p_c = _group_mean(
            theory_probabilities[np.arange(len(rows)), c_d], lam_d, count
        )
        theory_confidence = _group_mean(theory_probabilities.max(-1), lam_d, count)
        scalars.update(
            fitted_lam_H=lam_H,
            margin_fit_rms=float(np.sqrt(((margins - theory_margin[lam_d]) ** 2).mean())),
        )

    # Per-lam means, each computed once (same-class ones over the same-class samples).
    margin_square = _group_mean(margins**2, lam_d, count)
    columns = {
        "same_class_cosine": _group_mean(cosine_same, same_lam, same_count),
        "same_class_norm": _group_mean(norms_same, same_lam, same_count),
        "margin_mean": margin_mean,
        "margin_std": np.sqrt(np.maximum(margin_square - margin_mean**2, 0.0)),
        "margin_raw_mean": _group_mean(raw_margins, lam_d, count),
        "margin_theory": theory_margin,
        "boundary_distance": _group_mean(distances, lam_d, count),
        "confidence_mean": _group_mean(confidence, lam_d, count),
        "p_c_mean": _group_mean(p_c, lam_d, count),
        "p_c_prime_mean": _group_mean(p_c_prime, lam_d, count),
        "theory_p_c": theory_p_c,
        "theory_confidence": theory_confidence,
    }
    rows_out = [
        {"lam": float(lam), **{name: float(values[l]) for name, values in columns.items()},
         "samples": int(count[l])}
        for l, lam in enumerate(lams)
    ]  # fmt: skip
    return Agreement(scalars, rows_out)
