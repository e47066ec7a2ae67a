r"""The UFM optimum for a network's own classifier, beside the simplex-ETF approximation.

The theory of :mod:`ufm.theory` holds for a simplex-ETF classifier; a network's :math:`W` is
only close to one. With :math:`W` fixed the UFM problem separates into one strictly convex
problem per sample,

.. math:: \min_h\ \mathrm{CE}(Wh, y) + \tfrac{\lambda_H}{2}\|h\|^2,
          \qquad y = \lambda e_c + (1-\lambda) e_{c'},

so one sample per cell :math:`(c, c', \lambda)` gives the exact optimum. :func:`ufm.solve`
computes it (``classifier="fixed"``: all K^2 ordered class pairs on the lam grid, the
network's :math:`W`, per-sample Newton steps to a gradient norm of 1e-10). Its features are
regressed on the cell's rows like the network's cell means (:mod:`ufm.nets.cell_means`),
giving the curves of the exact optimum for this :math:`W`; beside them the ETF approximation
:math:`a(\lambda) w_c + b(\lambda) w_{c'}` with the coefficients of the simplex ETF of the
same gain (:func:`ufm.theory.optimal_coefficients`), and the relative distance of the two
sets of features.

The logits of the centred features are :math:`W\tilde h + o` with the network's offset
:math:`o = W\mu_G + b` (modulo the all-ones vector, which softmax ignores); the solver holds
it as a fixed bias (``b_init``), so the optimum is the exact one for the network's own
:math:`W` and offset. Without an offset it is the optimum of :math:`W` alone.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..etf import row_norm
from ..solver import UFMConfig, solve
from ..theory import optimal_coefficients
from .ufm_comparison import frobenius_norm

__all__ = ["own_classifier_optimum"]

SOLVER_TOL = 1e-10


def _cell_coefficients(H: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Coefficients (K, K, L, 2) of features H (K, K, L, d) on [w_c, w_c'] (same class: on
    w_c, second entry NaN)."""
    K = W.shape[0]
    out = np.full((*H.shape[:3], 2), np.nan)
    for c in range(K):
        for c_prime in range(K):
            if c == c_prime:
                out[c, c, :, 0] = H[c, c] @ W[c] / (W[c] @ W[c])
            else:
                basis = np.stack([W[c], W[c_prime]], axis=1)
                out[c, c_prime] = np.linalg.lstsq(basis, H[c, c_prime].T, rcond=None)[0].T
    return out


def own_classifier_optimum(weight: np.ndarray, lams: np.ndarray, lam_H: float,
                           offset: np.ndarray | None = None) -> dict:
    r"""Exact cross-entropy optimum for ``weight`` (K, d) and the fixed logit ``offset`` (K,)
    (none if None) on the grid ``lams`` at ``lam_H``.

    Returns a dict with ``a_norm``, ``b_norm`` (L,): the mean over the cells c < c' of the
    coefficients of the exact optimum over its mean same-class coefficient;
    ``etf_a_norm``, ``etf_b_norm``: the same for the simplex ETF of the network's gain;
    ``amplification``: :math:`(a + b)(1/2)/a_\text{same}` of the exact optimum;
    ``feature_distance``: :math:`\|H^\star_W - H^\star_\text{ETF}\|_F/\|H^\star_W\|_F` over the
    cells c <= c' (:math:`H^\star_\text{ETF}` built on the network's rows);
    ``curve_distance``: rms difference of the two sets of normalised curves;
    ``features`` (K, K, L, d): the optimum of every ordered cell (c, c', lam);
    ``grad_norm`` and ``stop_reason`` of the solve. NaN entries when ``lam_H`` is not finite.
    """
    W = np.asarray(weight, dtype=np.float64)
    K, d = W.shape
    lams = np.asarray(lams, dtype=np.float64)
    L = len(lams)
    if not math.isfinite(lam_H):
        nan = np.full(L, np.nan)
        return {"a_norm": nan, "b_norm": nan, "etf_a_norm": nan, "etf_b_norm": nan,
                "amplification": math.nan, "feature_distance": math.nan,
                "curve_distance": math.nan, "features": None, "grad_norm": math.nan, "stop_reason": "not solved"}  # fmt: skip
    config = UFMConfig(
        K=K, d=d, pairs="all", lams=tuple(lams.tolist()), loss="ce", lam_H=lam_H,
        classifier="fixed", tol=SOLVER_TOL, max_iters=200, device="cpu", dtype="float64",
    )  # fmt: skip
    b = None if offset is None else torch.as_tensor(np.asarray(offset, dtype=np.float64))
    with warnings.catch_warnings():
        # W is the network's, held fixed: whether some W in d < K - 1 dimensions could be a
        # simplex ETF (the solver's warning) does not concern this optimum.
        warnings.filterwarnings("ignore", message=r"d = \d+ < K - 1")
        result = solve(config, W_init=torch.as_tensor(W), b_init=b)
    H = result.H.cpu().numpy().reshape(K, K, L, d)  # samples are c-major, then c', then lam
    coefficients = _cell_coefficients(H, W)
    upper = np.triu(np.ones((K, K), dtype=bool), 1)
    same_mean = float(np.mean([coefficients[c, c, :, 0] for c in range(K)]))
    a_norm = coefficients[upper][:, :, 0].mean(0) / same_mean
    b_norm = coefficients[upper][:, :, 1].mean(0) / same_mean
    half = int(np.flatnonzero(lams == 0.5)[0])

    gain = float(np.trace(W @ W.T) / (K - 1))
    a, b = optimal_coefficients(K, lams, lam_H, row_norm(K, gain), "ce")
    (a_same,), _ = optimal_coefficients(K, [1.0], lam_H, row_norm(K, gain), "ce", same_class=True)
    c, c_prime = np.triu_indices(K)
    etf = a[None, :, None] * W[c][:, None] + b[None, :, None] * W[c_prime][:, None]
    same = c == c_prime
    etf[same] = a_same * W[c[same]][:, None]
    exact = H[c, c_prime]
    etf_a, etf_b = a / a_same, b / a_same
    return {
        "a_norm": a_norm,
        "b_norm": b_norm,
        "etf_a_norm": etf_a,
        "etf_b_norm": etf_b,
        "amplification": float(a_norm[half] + b_norm[half]),
        "feature_distance": frobenius_norm(exact - etf) / frobenius_norm(exact),
        "curve_distance": float(
            np.sqrt(((np.concatenate([a_norm - etf_a, b_norm - etf_b])) ** 2).mean())
        ),
        "features": H,
        "grad_norm": float(result.summary.get("grad_norm", math.nan)),
        "stop_reason": result.stop_reason,
    }
