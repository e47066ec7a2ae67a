r"""The exact UFM optimum for a network's own classifier on the cells of three classes.

The three-class figure of Fisher, Meng & Papyan (ICLR 2024) sets a network's mixed features
beside the theory's. Here the theory is drawn for the network's *own* classifier rows and
logit offset :math:`o = W\mu_G + b` (not a randomly rotated simplex ETF), so the two panels
share one plane and one orientation. A measurement computes it once, for the triple and lam_H
of :mod:`ufm.nets.triple_choice`, and writes it beside its features (``theory_triple.npz``);
the figures only read it. :func:`own_classifier_triple`: for every pair c <= c' of the triple
and every lam, the centred feature minimising :math:`\mathrm{CE}(Wh + o;\ \lambda e_c +
(1-\lambda)e_{c'}) + \tfrac{\lambda_H}{2}\|h\|^2`
(:func:`ufm.nets.own_classifier.own_classifier_optimum`, solved in the row space of W, where
the optimum lies).
"""

from __future__ import annotations

import numpy as np

from ..etf import row_space
from .own_classifier import own_classifier_optimum
from .triple_choice import check_lam_H, check_triple
from .ufm_comparison import logit_offset

__all__ = ["own_classifier_triple"]


def own_classifier_triple(
    weight: np.ndarray,
    bias: np.ndarray | None,
    global_mean: np.ndarray,
    triple,
    lam_H: float,
    lams: np.ndarray,
    solved: dict | None = None,
) -> dict[str, np.ndarray]:
    """The exact optimum of the module docstring for the classifier ``weight`` (K, d),
    ``bias`` (K,) or None and the centre ``global_mean`` (d,), on the cells c <= c' of
    ``triple`` (in its order) at ``lams``.

    ``solved``: the optimum for every class pair already found for this very classifier and
    offset (:attr:`ufm.nets.cell_comparison.CellComparison.exact_optimum`: ``features``
    (K, K, G, d) at its ``lams`` (G,), its ``lam_H`` and ``grad_norm``); taken as it is when
    it was solved at ``lam_H`` and holds every lam of ``lams``, else the optimum is solved
    here.

    Returns ``features`` (n, d) (centred: the logits are :math:`Wh + o`), ``c``, ``c_prime``,
    ``lam`` (n,), ``triple`` (3,), ``lam_H`` and the solve's ``grad_norm``.
    """
    W = np.asarray(weight, dtype=np.float64)
    triple = check_triple(triple, W.shape[0])
    lam_H = check_lam_H(lam_H)
    lams = np.asarray(lams, dtype=np.float64)
    if lams.ndim != 1 or not len(lams) or ((lams < 0) | (lams > 1)).any():
        raise ValueError(f"lams must be values in [0, 1], got {lams.tolist()[:8]}")
    reusable = (solved is not None and solved["lam_H"] == lam_H
                and np.isin(lams, solved["lams"]).all())  # fmt: skip
    if reusable:
        grid, optimum, back = np.asarray(solved["lams"]), solved, None
    else:
        back = row_space(W)  # (d, r): the optimum h = back x, logits W h = (W back) x
        grid = np.union1d(lams, [0.5])  # own_classifier_optimum reads its amplification at 1/2
        offset = logit_offset(W, None if bias is None else np.asarray(bias, np.float64),
                              np.asarray(global_mean, np.float64))  # fmt: skip
        optimum = own_classifier_optimum(W @ back, grid, lam_H, offset=offset)
    where = np.array([np.flatnonzero(grid == value)[0] for value in lams])
    c, c_prime, lam, features = [], [], [], []
    for k, first in enumerate(triple):
        for second in triple[k:]:
            cell = optimum["features"][first, second, where]
            features.append(cell if back is None else cell @ back.T)
            c += [first] * len(lams)
            c_prime += [second] * len(lams)
            lam.append(lams)
    return {
        "features": np.concatenate(features),
        "c": np.asarray(c),
        "c_prime": np.asarray(c_prime),
        "lam": np.concatenate(lam),
        "triple": np.asarray(triple),
        "lam_H": np.asarray(lam_H),
        "grad_norm": np.asarray(optimum["grad_norm"]),
    }
