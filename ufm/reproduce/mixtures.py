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

and the same projection of the UFM solver's 3-class run (``solver/mixture_projection_solver.npz``)
and of a network trained with 3-point mixup, its cell means over the sampled triples of
inputs (``networks/mixture_projection_network.npz``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..etf import simplex_etf
from ..theory import optimal_coefficients
from ..theory.mixtures import mixture_coefficients, mixture_features, simplex_grid
from .config import ReproduceConfig
from .projection import project_mixtures


def grid_points(points: int) -> int:
    """Points per edge of a mixture grid: at least ``points``, with the equal-weight mixture
    (1/3, 1/3, 1/3) on the grid (``points - 1`` a multiple of 3)."""
    return 3 * -(-(points - 1) // 3) + 1


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
    weights = simplex_grid(3, grid_points(config.projection_lams))
    classes = np.broadcast_to(np.asarray(config.triple), weights.shape)
    features = mixture_features(W, classes, weights, config.lam_H, "ce")
    return project_mixtures(features.numpy(), weights, W.numpy(), config.triple)


def triple_mixtures(features, classes, weights, triple) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a 3-class solve whose classes are those of ``triple`` (in any order):
    their features (N, d) and their weights (N, 3) on ``triple`` in its order."""
    features, classes, weights = map(np.asarray, (features, classes, weights))
    triple = np.asarray(triple)
    rows = np.flatnonzero((np.sort(classes, axis=1) == np.sort(triple)).all(axis=1))
    if len(rows) == 0:
        raise ValueError(f"no mixture of the classes {triple.tolist()} among the solved samples")
    on_triple = np.stack(
        [(weights[rows] * (classes[rows] == c)).sum(axis=1) for c in triple], axis=1
    )
    return features[rows], on_triple


def network_projection(measurement: Path, triple) -> dict[str, np.ndarray]:
    """Cell means (over the sampled input triples) of a 3-point-mixup network's mixtures,
    projected; the triple of the activations file is the reproduction's."""
    with np.load(measurement / "activations_mixtures3.npz") as data:
        acts = {k: data[k] for k in data.files}
    if list(acts["classes"]) != list(triple):
        raise ValueError(f"activations of classes {list(acts['classes'])}, not {list(triple)}")
    means = acts["features"].astype(np.float64).mean(axis=0)  # (G, d)
    return project_mixtures(
        means, acts["weights"], acts["weight"], triple, centre=acts["global_mean"],
        bias=acts["bias"],
    )
