r"""Features of a class triple projected onto the plane of its classifier vectors.

The figures of Fisher, Meng & Papyan (ICLR 2024, arXiv:2402.06171) show last-layer features
of mixed samples of three classes :math:`c_1, c_2, c_3` in the plane spanned by
:math:`w_{c_k} - \bar w` (:math:`\bar w` the mean of the three rows): an orthonormal basis
:math:`E\in\mathbb R^{d\times 2}` of that plane gives the coordinates
:math:`y = E^\top(h - \text{centre})`. The projection itself is
:func:`ufm.nets.pairs.triple_projections` (the basis from the SVD,
:func:`ufm.etf.row_space`), shared with the network measurements; this module adds the pairs
of a triple, the gathering of solver samples into (pair, lam) order, and the projection file
described in :mod:`ufm.reproduce.layout`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..etf import row_space
from ..io import write_npz
from ..nets.pairs import triple_projections


def triple_pairs(triple) -> tuple[np.ndarray, np.ndarray]:
    """Class pairs (c, c') with c <= c' in the order of ``triple``: three same, three different."""
    c, c_prime = [], []
    for k, first in enumerate(triple):
        for second in triple[k:]:
            c.append(first)
            c_prime.append(second)
    return np.asarray(c), np.asarray(c_prime)


def gather_pairs(features, c, c_prime, lam, pairs_c, pairs_cp, grid) -> np.ndarray:
    """Features (P, L, d) of the samples with class pair (pairs_c[p], pairs_cp[p]) at grid[l].

    ``features`` (n, d) with ``c``, ``c_prime``, ``lam`` (n,) as a solver result holds them;
    every (pair, lam) must occur exactly once, else ValueError.
    """
    features, c, c_prime, lam = map(np.asarray, (features, c, c_prime, lam))
    out = np.empty((len(pairs_c), len(grid), features.shape[1]))
    for p, (first, second) in enumerate(zip(pairs_c, pairs_cp)):
        for l, value in enumerate(grid):
            rows = np.flatnonzero((c == first) & (c_prime == second) & (lam == value))
            if len(rows) != 1:
                raise ValueError(
                    f"expected one sample of pair ({first}, {second}) at lam={value}, "
                    f"found {len(rows)}"
                )
            out[p, l] = features[rows[0]]
    return out


def plane_projection(features, weight, triple, centre=None, bias=None) -> dict[str, np.ndarray]:
    r"""Features (..., d) in the plane of the classifier vectors of the three classes ``triple``.

    The coordinates are the ``plane_coordinates`` of
    :func:`ufm.nets.pairs.triple_projections`, :math:`E^\top(h - \text{centre})`; the
    classifier rows are projected likewise, :math:`E^\top w_c`, and the offsets are
    :math:`w_c^\top\text{centre} + b_c`, so that the logit of class :math:`c` is
    :math:`\langle E^\top w_c, y\rangle` + offset for a feature in the plane.

    Returns a dict with ``coordinates`` (..., 2), ``norms`` (...): the length
    :math:`\|P_W(h - \text{centre})\|` of each feature in the row space of the whole
    ``weight`` (its true length for features of the UFM, which lie there; the plane hides
    part of it), ``classes`` (3,), ``classifier`` (3, 2) and ``offsets`` (3,). Raises ValueError when the three centred classifier rows do not span a
    plane.
    """
    weight = np.asarray(weight, dtype=np.float64)
    features = np.asarray(features, dtype=np.float64)
    centre = np.zeros(weight.shape[1]) if centre is None else np.asarray(centre, np.float64)
    rows = weight[list(triple)]
    projected = triple_projections(weight, triple, features, centre)
    basis = projected["plane_basis"]
    if basis.shape[1] != 2:
        raise ValueError(
            f"the classifier rows of classes {list(triple)} span a plane of dimension "
            f"{basis.shape[1]} after centring, not 2: they cannot be projected"
        )
    offsets = rows @ centre
    if bias is not None:
        offsets = offsets + np.asarray(bias, np.float64)[list(triple)]
    # The true length in the row space of the whole classifier (the plane hides part of it).
    norms = np.linalg.norm((features - centre) @ row_space(weight), axis=-1)
    return {
        "coordinates": projected["plane_coordinates"],
        "norms": norms,
        "classes": np.asarray(triple),
        "classifier": rows @ basis,
        "offsets": offsets,
    }


def project_triple(
    features: np.ndarray,
    c: np.ndarray,
    c_prime: np.ndarray,
    lam: np.ndarray,
    weight: np.ndarray,
    triple,
    centre: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    r"""Projection arrays (see :mod:`ufm.reproduce.layout`) of mixed pairs of a triple.

    Parameters
    ----------
    features : (P, L, d) features of the pairs ``c``, ``c_prime`` (P,) at ``lam`` (L,).
    c, c_prime, lam : the pairs' classes and the lam grid, stored as they are.
    weight : (K, d) classifier.
    triple : the three classes whose plane is used.
    centre : (d,) origin of the features; default zero.
    bias : (K,) classifier bias; default none.

    Returns
    -------
    dict with ``coordinates`` (P, L, 2), ``c``, ``c_prime``, ``lam`` and the ``classes``
    (3,), ``classifier`` (3, 2) and ``offsets`` (3,) of :func:`plane_projection`.
    """
    projection = plane_projection(features, weight, triple, centre, bias)
    projection.update(
        c=np.asarray(c), c_prime=np.asarray(c_prime), lam=np.asarray(lam, dtype=np.float64)
    )
    return projection


def project_mixtures(features, weights, weight, triple, centre=None, bias=None):
    """Projection arrays of mixtures of the three classes ``triple``: ``features`` (N, d)
    with ``weights`` (N, 3) on ``triple`` in its order; the arrays of
    :func:`plane_projection` and ``weights``."""
    projection = plane_projection(features, weight, triple, centre, bias)
    projection["weights"] = np.asarray(weights, dtype=np.float64)
    return projection


def write_projection(path: str | Path, projection: dict[str, np.ndarray]) -> Path:
    return write_npz(path, **projection)
