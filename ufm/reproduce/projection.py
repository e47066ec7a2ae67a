r"""Features of a class triple projected onto the plane of its classifier vectors.

The figures of Fisher, Meng & Papyan (ICLR 2024, arXiv:2402.06171) show last-layer features
of mixed samples of three classes :math:`c_1, c_2, c_3` in the plane spanned by
:math:`w_{c_k} - \bar w` (:math:`\bar w` the mean of the three rows): an orthonormal basis
:math:`E\in\mathbb R^{d\times 2}` of that plane (from the SVD, :func:`ufm.nets.measure.row_space`)
gives the coordinates :math:`y = E^\top(h - \text{centre})`. The result is a projection file
as described in :mod:`ufm.reproduce.layout`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import write_npz
from ..nets.measure import row_space


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
    """Projection arrays (see :mod:`ufm.reproduce.layout`) of ``features`` (P, L, d) for pairs ``c``,
    ``c_prime`` (P,) at ``lam`` (L,), classifier ``weight`` (K, d), optional ``bias`` (K,);
    features are taken relative to ``centre`` (d,) (default: the origin)."""
    weight = np.asarray(weight, dtype=np.float64)
    features = np.asarray(features, dtype=np.float64)
    centre = np.zeros(weight.shape[1]) if centre is None else np.asarray(centre, np.float64)
    rows = weight[list(triple)]
    basis = row_space(rows - rows.mean(axis=0))
    if basis.shape[1] != 2:
        raise ValueError(
            f"the classifier rows of classes {list(triple)} span a plane of dimension "
            f"{basis.shape[1]} after centring, not 2: they cannot be projected"
        )
    offsets = rows @ centre
    if bias is not None:
        offsets = offsets + np.asarray(bias, np.float64)[list(triple)]
    return {
        "coordinates": (features - centre) @ basis,
        "c": np.asarray(c),
        "c_prime": np.asarray(c_prime),
        "lam": np.asarray(lam, dtype=np.float64),
        "classes": np.asarray(triple),
        "classifier": rows @ basis,
        "offsets": offsets,
    }


def write_projection(path: str | Path, projection: dict[str, np.ndarray]) -> Path:
    return write_npz(path, **projection)
