r"""The amplification of a network's cells split by class group under step imbalance.

With the last ``minority`` of K classes the minority (group B) and the others the majority
(group A), a different-class cell :math:`(c, c')` belongs to one of three groups by how many
of its two classes are minorities: *majority-majority* (A-A), *minority-majority* (A-B) and
*minority-minority* (B-B). Each group's amplification is the one of
:mod:`ufm.nets.coefficient_curves`, :math:`(\hat a + \hat b)(\tfrac12)/\bar a_\text{same}`,
on that group's cells alone (:meth:`ufm.nets.cell_means.CellStatistics.select`), with the
same errors: over the pairs inside the cells (``se``), a stratified jackknife over the cells
(``se_cells``) and the larger of the two (``error``).

**The normaliser** :math:`\bar a_\text{same}` is the mean over the same-class cells of the
classes the group's cells hold: those of A for A-A, of B for B-B, and of all K classes for
A-B. So a group whose mixtures are exact convex combinations of their classes' features
(the squared-error null) has amplification 1 whatever the two groups' same-class
coefficients, for A-B exactly when the two groups are of equal size (the A-B cells' mean
endpoint is :math:`(\bar a_A + \bar a_B)/2`, the normaliser
:math:`(k_A\bar a_A + k_B\bar a_B)/K`). :func:`ufm.theory.minority.cell_amplification`
computes the reduced theory's numbers with this very definition.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_int
from ..theory.minority import CELL_GROUPS
from .cell_means import CellStatistics
from .coefficient_curves import coefficient_curves

__all__ = ["GROUPS", "cell_groups", "group_amplification"]

GROUPS = CELL_GROUPS
"""The three groups of different-class cells, by the number (0, 1, 2) of minority classes
(the theory's names, :data:`ufm.theory.minority.CELL_GROUPS`)."""


def cell_groups(c, c_prime, K: int, minority: int) -> np.ndarray:
    """Per cell, the number of its two classes (``c``, ``c_prime``, either order) that are
    minorities, the last ``minority`` of ``K`` classes: 0, 1 or 2 (a same-class cell: 0 or
    2). ValueError for a minority outside [1, K - 1] or a class outside [0, K)."""
    K = check_int("K", K, 2)
    minority = check_int("minority", minority, 1, K - 1)
    c, c_prime = np.asarray(c), np.asarray(c_prime)
    if c.shape != c_prime.shape:
        raise ValueError(f"c and c_prime must have one shape, got {c.shape} and {c_prime.shape}")
    outside = [int(v) for v in np.concatenate([c.ravel(), c_prime.ravel()]) if not 0 <= v < K]
    if outside:
        raise ValueError(f"classes must lie in [0, {K}), got {outside[:4]}")
    first = K - minority
    return (c >= first).astype(int) + (c_prime >= first).astype(int)


def group_amplification(cells: CellStatistics, K: int, minority: int) -> dict[str, dict[str, Any]]:
    """Per group of :data:`GROUPS` (module docstring): ``amplification``, ``se`` (pairs),
    ``se_cells`` (cell jackknife; NaN with fewer than two cells on a side), ``error`` (the
    larger), ``a_same`` (the normaliser), ``cells`` and ``same_cells`` (how many of each were
    measured). A group without a measured different-class cell or same-class normaliser cell
    has NaN numbers. ValueError as :func:`cell_groups`."""
    count = cell_groups(cells.c, cells.c_prime, K, minority)
    same = cells.same
    result = {}
    for k, name in enumerate(GROUPS):
        different = ~same & (count == k)
        # the same-class cells of the classes the group holds: all of them for A-B
        normaliser = same if k == 1 else same & (count == k)
        keep = different | normaliser
        entry = {"cells": int(different.sum()), "same_cells": int(normaliser.sum())}
        if different.any() and normaliser.any():
            curves = coefficient_curves(cells.select(keep))
            entry.update(amplification=curves.amplification, se=curves.amplification_se,
                         se_cells=curves.amplification_se_cells, error=curves.amplification_error,
                         a_same=curves.same_mean)
        else:
            entry.update(amplification=np.nan, se=np.nan, se_cells=np.nan, error=np.nan,
                         a_same=np.nan)
        result[name] = {key: v if isinstance(v, int) else float(v) for key, v in entry.items()}
    return result
