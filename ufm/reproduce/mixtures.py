r"""Mixtures of three and more classes in a reproduction: the files behind the mixtures figure.

A sample that mixes m classes with weights :math:`y` on the simplex has, for a fixed simplex
ETF and cross-entropy, the exact optimum :math:`h = \sum_k a_k w_{c_k}`
(:func:`ufm.mixture_features`; the pair theory of Fisher, Meng & Papyan, ICLR 2024,
arXiv:2402.06171, extended to the multi-point mixup of Chaudhry et al. 2022). Two files of
the theory stage (:mod:`ufm.reproduce.layout`):

* ``mixture_amplification.csv``: per (lam_H, m), m = 1..K-1, the amplification
  :math:`\sum_k a_k / a_\text{same}` of the equal-weight mixture; the squared error's convex
  combinations give exactly 1.
* ``mixture_projection_theory.npz``: the exact features of the triple's mixtures over the
  grid of the weight simplex, in the plane of the triple's classifier vectors
  (:func:`ufm.reproduce.projection.project_mixtures`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..etf import simplex_etf
from ..theory import optimal_coefficients
from ..theory.mixtures import mixture_coefficients, mixture_features, simplex_grid
from .config import ReproduceConfig
from .projection import project_mixtures


def amplification_rows(config: ReproduceConfig) -> list[dict[str, Any]]:
    """Per (lam_H, m): the equal-weight mixture's amplification, cross-entropy and squared error."""
    K, s = config.K, config.scale
    rows = []
    for lam_H in config.all_lam_Hs:
        (a_same,), _ = optimal_coefficients(K, [1.0], lam_H, s, "ce", same_class=True)
        (mse_same,), _ = optimal_coefficients(K, [1.0], lam_H, s, "mse", same_class=True)
        for m in range(1, K):
            equal = np.full((1, m), 1.0 / m)
            ce = mixture_coefficients(K, equal, lam_H, s, "ce")
            mse = mixture_coefficients(K, equal, lam_H, s, "mse")
            rows.append(
                {
                    "lam_H": lam_H,
                    "m": m,
                    "amplification": float(ce.sum() / a_same),
                    "amplification_mse": float(mse.sum() / mse_same),
                    "coefficient": float(ce[0, 0]),
                }
            )
    return rows


def theory_projection(config: ReproduceConfig) -> dict[str, np.ndarray]:
    """The triple's exact cross-entropy mixtures over the simplex grid, projected."""
    W = simplex_etf(config.K, config.K, config.scale)
    weights = simplex_grid(3, config.projection_lams)
    classes = np.broadcast_to(np.asarray(config.triple), weights.shape)
    features = mixture_features(W, classes, weights, config.lam_H, "ce")
    return project_mixtures(features.numpy(), weights, W.numpy(), config.triple)
