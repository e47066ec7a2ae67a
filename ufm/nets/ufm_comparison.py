r"""Comparison of a network's mixed-pair activations with the unconstrained-features model.

This module holds everything that relates a trained network to the theory (THEORY.md
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

from ..etf import etf_distance, etf_gain, row_norm, row_space
from ..losses import MixupLoss
from ..theory import has_exact_theory, optimal_coefficients

__all__ = [
    "LAM_H_RANGE",
    "Agreement",
    "fit_lam_H",
    "logit_offset",
    "theory_agreement",
    "ufm_margins",
]

LAM_H_RANGE = (1e-8, 1e4)


def ufm_margins(K: int, gain: float, lams: np.ndarray, lam_H: float, loss: MixupLoss):
    r"""UFM logit margin :math:`z_c - z_{c'} = g\,(a(\lambda) - b(\lambda))` for a simplex-ETF
    classifier of gain :math:`g` (:func:`ufm.theory.optimal_coefficients`), and (a, b)."""
    scale = row_norm(K, gain)
    a, b = optimal_coefficients(K, lams, lam_H, scale, loss)
    return gain * (a - b), a, b


def fit_log_lam_H(objective, points: int = 61) -> float:
    r"""The :math:`\lambda_H` minimising ``objective(log lam_H)`` over :data:`LAM_H_RANGE`: a grid
    of ``points`` points in :math:`\log\lambda_H` locates the best bracket, bounded Brent refines
    it (``scipy.optimize.minimize_scalar``); the grid point is kept if Brent does no better."""
    grid = np.linspace(math.log(LAM_H_RANGE[0]), math.log(LAM_H_RANGE[1]), points)
    values = [objective(t) for t in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    result = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return float(math.exp(result.x if result.fun <= values[best] else grid[best]))


def fit_lam_H(margins: np.ndarray, lams: np.ndarray, K: int, gain: float, loss: MixupLoss) -> float:
    r"""Least-squares effective :math:`\lambda_H`: minimises
    :math:`\sum_{p,l}\bigl(m_{pl} - g(a-b)(\lambda_l;\lambda_H)\bigr)^2` over
    :math:`\log\lambda_H\in[\log 10^{-8}, \log 10^4]`: a grid of 31 points locates the best
    bracket, bounded Brent refines it (``scipy.optimize.minimize_scalar``).
    ``margins`` (P, L) are the network's margins at the lam grid ``lams`` (L,).
    """
    mean, count = margins.mean(axis=0), margins.shape[0]
    # sum_p (m_pl - t_l)^2 = sum_p (m_pl - mean_l)^2 + P (mean_l - t_l)^2: only the mean matters.

    def objective(log_lam_H: float) -> float:
        theory, _, _ = ufm_margins(K, gain, lams, math.exp(log_lam_H), loss)
        return float(count * ((mean - theory) ** 2).sum())

    return fit_log_lam_H(objective, points=31)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def _check_agreement_inputs(activations: dict[str, np.ndarray]) -> None:
    lams = np.asarray(activations["lam"])
    if not {0.0, 0.5, 1.0} <= set(lams.tolist()):
        raise ValueError(f"the lam grid must contain 0, 1/2 and 1, got {lams.tolist()}")
    same = np.asarray(activations["c"]) == np.asarray(activations["c_prime"])
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
      features the classifier cannot see.
    * Confidence (top softmax probability of the network's logits) per lam over the
      different-class pairs, and :math:`p_c`, :math:`p_{c'}`, beside the softmax of
      :math:`Wh^\star` (theory, no offset); ``confidence_half`` is the mean confidence of the
      different-class :math:`\lambda=1/2` mixtures.

    For a loss without exact theory (focal) the theory entries are NaN. ``activations`` are
    as from :func:`mixed_activations`; the lam grid must hold 0, 1/2 and 1, and there must be
    same-class and different-class pairs.
    """
    _check_agreement_inputs(activations)
    mu = global_mean.cpu().numpy()
    H = activations["features"].astype(np.float64) - mu
    Z = activations["logits"].astype(np.float64)
    c, c_prime, lams = activations["c"], activations["c_prime"], activations["lam"]
    W = weight.cpu().numpy()
    K = W.shape[0]
    offset = logit_offset(W, None if bias is None else bias.cpu().numpy(), mu)
    same = c == c_prime
    different = ~same
    half = int(np.flatnonzero(lams == 0.5)[0])
    endpoints = np.flatnonzero((lams == 0.0) | (lams == 1.0))

    # Same-class pairs.
    H_same = H[same]
    w_same = W[c[same]][:, None, :]
    norms_same = np.linalg.norm(H_same, axis=-1)
    cosine_same = (H_same * w_same).sum(-1) / (norms_same * np.linalg.norm(w_same, axis=-1))

    # Different-class pairs: margins (centred and raw) and boundary distances.
    pairs = np.flatnonzero(different)
    raw_margins = Z[pairs, :, c[pairs]] - Z[pairs, :, c_prime[pairs]]
    margins = raw_margins - (offset[c[pairs]] - offset[c_prime[pairs]])[:, None]
    boundary = np.linalg.norm(W[c[pairs]] - W[c_prime[pairs]], axis=-1)[:, None]
    distances = np.abs(raw_margins) / boundary
    probabilities = _softmax(Z)
    p_c = probabilities[pairs, :, c[pairs]]
    p_c_prime = probabilities[pairs, :, c_prime[pairs]]
    confidence = probabilities[pairs].max(-1)  # (pairs, L): different-class pairs only

    gain = etf_gain(weight)
    span = row_space(W)
    scalars = {
        "classifier_gain": gain,
        "classifier_etf_distance": etf_distance(weight),
        "logit_offset": float(np.sqrt((offset**2).mean())),
        "same_class_cosine": float(cosine_same.mean()),
        "boundary_distance_half": float(distances[:, half].mean()),
        "boundary_distance_half_relative": float(
            distances[:, half].mean() / distances[:, endpoints].mean()
        ),
        "fitted_lam_H": math.nan,
        "margin_fit_rms": math.nan,
        "out_of_span_fraction": float(np.linalg.norm(H - H @ span @ span.T) / np.linalg.norm(H)),
        "confidence_half": float(confidence[:, half].mean()),
    }
    theory_margin = theory_p_c = theory_confidence = np.full(len(lams), np.nan)
    if has_exact_theory(loss):
        lam_H = fit_lam_H(margins, lams, K, gain, loss)
        theory_margin, a, b = ufm_margins(K, gain, lams, lam_H, loss)
        optimum = (
            a[None, :, None] * W[c[pairs]][:, None, :]
            + b[None, :, None] * W[c_prime[pairs]][:, None, :]
        )
        theory_probabilities = _softmax(optimum @ W.T)
        theory_p_c = theory_probabilities[np.arange(len(pairs)), :, c[pairs]].mean(axis=0)
        theory_confidence = theory_probabilities.max(-1).mean(axis=0)
        scalars.update(
            fitted_lam_H=lam_H,
            margin_fit_rms=float(np.sqrt(((margins - theory_margin) ** 2).mean())),
        )

    rows = []
    for l, lam in enumerate(lams):
        rows.append(
            {
                "lam": float(lam),
                "same_class_cosine": float(cosine_same[:, l].mean()),
                "same_class_norm": float(norms_same[:, l].mean()),
                "margin_mean": float(margins[:, l].mean()),
                "margin_std": float(margins[:, l].std()),
                "margin_raw_mean": float(raw_margins[:, l].mean()),
                "margin_theory": float(theory_margin[l]),
                "boundary_distance": float(distances[:, l].mean()),
                "confidence_mean": float(confidence[:, l].mean()),
                "p_c_mean": float(p_c[:, l].mean()),
                "p_c_prime_mean": float(p_c_prime[:, l].mean()),
                "theory_p_c": float(theory_p_c[l]),
                "theory_confidence": float(theory_confidence[l]),
            }
        )
    return Agreement(scalars, rows)
