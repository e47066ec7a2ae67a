r"""Cell means of mixed-pair features and their coefficients on the classifier rows.

A *cell* is a class pair with a mixing weight, :math:`(c, c', \lambda)`: every training pair
:math:`(x_i, x_j)` of classes :math:`(c, c')` mixed with weight :math:`\lambda` on
:math:`x_i` falls into it. The UFM has one feature per cell; a network has one per pair, and
they vary from pair to pair inside a cell. docs/theory.md section 8: average first, then compare.
This module computes, from the features of :func:`ufm.nets.measure.mixed_activations`:

* the centred features projected onto the row space of :math:`W`,
  :math:`\tilde h = P_W(h - \mu_G)` (:math:`\mu_G` the mean of the clean class means; the part
  of :math:`h` outside the row space moves no logit, and the UFM's ridge removes it);
* per cell, their mean :math:`m`, the within-cell scatter
  :math:`s = (\sum_p\|\tilde h_p - m\|^2/(n-1))^{1/2}` (the noise floor: the root of the
  trace of the within-cell covariance) and the standard error :math:`s/\sqrt n` of the mean;
* the least-squares coefficients of the mean on the cell's rows: :math:`m \approx \hat a\,w_c +
  \hat b\,w_{c'}` for :math:`c \ne c'`, :math:`m \approx \hat a\,w_c` for :math:`c = c'`
  (:math:`\hat b` NaN), with their standard errors (the coefficients are linear in the
  features, so they are computed per pair and their mean and standard error taken inside the
  cell), and the residual :math:`\|m - \hat a w_c - \hat b w_{c'}\|/\|m\|` off the span;
* per :math:`\lambda`, the averages over the different-class cells, :math:`\hat a(\lambda)`,
  :math:`\hat b(\lambda)`, and over the same-class cells, :math:`\hat a_\text{same}(\lambda)`,
  each with the standard error propagated from the cells (pairs of different cells are
  independent) and the spread across cells (class-pair heterogeneity, not noise).

Functions of this module only read arrays; :mod:`ufm.nets.cell_comparison` turns them into
the comparison with the theory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .._checks import preview
from ..etf import row_space

__all__ = [
    "CellStatistics",
    "binned_cell_statistics",
    "cell_statistics",
    "check_cells",
    "half_index",
]


def half_index(lams: np.ndarray) -> int:
    """Index of lam = 1/2 in the grid ``lams``; ValueError when the grid lacks it."""
    lams = np.asarray(lams, dtype=np.float64)
    where = np.flatnonzero(lams == 0.5)
    if len(where) == 0:
        raise ValueError(
            f"the lam grid must contain 1/2 (the amplification is read there), got {preview(lams)}"
        )
    return int(where[0])


def check_cells(c: np.ndarray, c_prime: np.ndarray, lams: np.ndarray) -> None:
    """Refuse, before any work, a grid without 1/2, a grid without 0 and 1, or pairs that are
    all same-class or all different-class."""
    half_index(lams)
    if not {0.0, 1.0} <= set(np.asarray(lams, dtype=np.float64).tolist()):
        raise ValueError(f"the lam grid must contain 0, 1/2 and 1, got {preview(lams)}")
    same = np.asarray(c) == np.asarray(c_prime)
    if same.all() or not same.any():
        raise ValueError(
            "the comparison needs both same-class and different-class pairs, got "
            f"{int(same.sum())} same-class of {same.size}"
        )


@dataclass
class CellStatistics:
    """Cell means and their coefficients (module docstring); C cells, L lams, d features.

    ``c``, ``c_prime`` (C,): the cells' classes; ``counts`` (C, L): the pairs (or samples)
    averaged in each cell at each lam; ``lam`` (L,); ``means`` (C, L, d) of :math:`\\tilde h`;
    ``scatter`` (C, L); ``coefficients`` and ``coefficient_se`` (C, L, 2):
    :math:`(\\hat a, \\hat b)` and their standard errors (:math:`\\hat b` NaN for same-class
    cells); ``pair_sum_se`` (C, L): the standard error of :math:`\\hat a + \\hat b` (the two
    are correlated); ``same_lam_mean`` and ``same_lam_mean_se`` (C,): the same-class
    coefficient averaged over lam (NaN for different-class cells); ``residual`` (C, L);
    ``movement_noise`` (C,): the noise in the squared movement of a cell mean with lam, mean
    over lam of the summed squared standard errors of :math:`m(\\lambda) - \\bar m`;
    ``span_rank``: the rank r of :math:`W`. Entries of a (cell, lam) with fewer samples than
    the statistics need are NaN (only binned samples have such cells:
    :func:`binned_cell_statistics`). ``theory_lams`` (L, Q): the lams at which the theory is
    evaluated and averaged for each lam (binned samples: quantiles of each bin's lams,
    :class:`ufm.nets.features_file.LamGroups`); None: at ``lam``.
    """

    c: np.ndarray
    c_prime: np.ndarray
    counts: np.ndarray
    lam: np.ndarray
    means: np.ndarray
    scatter: np.ndarray
    coefficients: np.ndarray
    coefficient_se: np.ndarray
    pair_sum_se: np.ndarray
    same_lam_mean: np.ndarray
    same_lam_mean_se: np.ndarray
    residual: np.ndarray
    movement_noise: np.ndarray
    span_rank: int
    theory_lams: np.ndarray | None = None

    @property
    def same(self) -> np.ndarray:
        return self.c == self.c_prime

    def select(self, keep: np.ndarray) -> CellStatistics:
        """The statistics of the cells ``keep`` (a boolean mask or indices over the C cells)
        alone, every per-cell array indexed alike; the lams, the rank of W and the theory's
        lams are shared. :func:`ufm.nets.coefficient_curves.coefficient_curves` of the
        result is the amplification, with its errors, of those cells only."""
        keep = np.asarray(keep)
        if keep.dtype == bool and keep.shape != self.c.shape:
            raise ValueError(f"keep must be a mask of the {len(self.c)} cells, got shape "
                             f"{keep.shape}")
        per_cell = {name: getattr(self, name)[keep] for name in _PER_CELL}
        return dataclasses.replace(self, **per_cell)

    def arrays(self) -> dict[str, np.ndarray]:
        """The statistics as arrays for an npz file."""
        names = ("c", "c_prime", "counts", "lam", "means", "scatter", "coefficients")
        arrays = {name: getattr(self, name) for name in names}
        arrays.update(coefficient_se=self.coefficient_se, residual=self.residual)
        return arrays


_PER_CELL = ("c", "c_prime", "counts", "means", "scatter", "coefficients", "coefficient_se",
             "pair_sum_se", "same_lam_mean", "same_lam_mean_se", "residual", "movement_noise")
"""The fields of :class:`CellStatistics` with one entry per cell (the first axis)."""


def _mean_and_se(values: np.ndarray, cell: np.ndarray, counts: np.ndarray):
    """Per-group mean and standard error of ``values`` (P, ...) grouped by ``cell`` (P,), with
    ``counts`` (C,) members per group; the sums of squared deviations too. A group of one
    member has NaN standard error, an empty group NaN mean."""
    C = len(counts)
    shape = (C, *values.shape[1:])
    total = np.zeros(shape)
    np.add.at(total, cell, values)
    n = counts.reshape(-1, *[1] * (values.ndim - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        deviation = values - mean[cell]
        squares = np.zeros(shape)
        np.add.at(squares, cell, deviation**2)
        se = np.sqrt(squares / (n - 1) / n)
    return mean, se, squares


def _row_coordinates(features, weight, global_mean):
    """(features centred and in the orthonormal basis of the row space (..., r), that basis
    (d, r), the rows W in it (K, r)): norms and inner products of the coordinates are those of
    the projected features :math:`P_W(h - \\mu_G)`."""
    W = np.asarray(weight, dtype=np.float64)
    span = row_space(W)
    H = (np.asarray(features, dtype=np.float64) - np.asarray(global_mean, np.float64)) @ span
    return H, span, W @ span


def _cell_keys(c: np.ndarray, c_prime: np.ndarray):
    """(cell classes c (C,), c' (C,), cell index of every row (P,)) of the distinct pairs."""
    keys, cell = np.unique(np.stack([c, c_prime], axis=1), axis=0, return_inverse=True)
    return keys[:, 0], keys[:, 1], cell.reshape(-1)


def _cell_pinv(rows: np.ndarray, cell_c: np.ndarray, cell_cp: np.ndarray) -> np.ndarray:
    """Pseudo-inverse (C, 2, r) of [w_c, w_c'] (or w_c, second row NaN) per cell: the
    coefficients are linear in the features."""
    pinv = np.full((len(cell_c), 2, rows.shape[1]), np.nan)
    for k, (c, c_prime) in enumerate(zip(cell_c, cell_cp)):
        if c == c_prime:
            pinv[k, 0] = rows[c] / (rows[c] @ rows[c])
        else:
            pinv[k] = np.linalg.pinv(np.stack([rows[c], rows[c_prime]], axis=1))
    return pinv


def _residual(means, coefficients, rows, cell_c, cell_cp):
    """Relative residual (C, L) of the cell means off the span of their rows."""
    basis = np.stack([rows[cell_c], rows[cell_cp]], axis=1)  # (C, 2, r)
    fitted = np.einsum("clk,ckr->clr", np.nan_to_num(coefficients), basis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.linalg.norm(means - fitted, axis=-1) / np.linalg.norm(means, axis=-1)


MIN_SAMPLES_PER_CELL = 2
"""Samples a (cell, lam bin) needs for its scatter and standard error; sparser ones are left
out (NaN) of the statistics."""


def cell_statistics(
    features: np.ndarray,
    c: np.ndarray,
    c_prime: np.ndarray,
    lams: np.ndarray,
    weight: np.ndarray,
    global_mean: np.ndarray,
) -> CellStatistics:
    """Cell statistics of the module docstring for *paired* features: each pair measured at
    every lam of the grid, so the standard errors are taken over pairs (the lams of one pair
    are not independent).

    Parameters
    ----------
    features : (P, L, d) features of P pairs at the L values of ``lams`` (any float dtype; read
        in float64).
    c, c_prime : (P,) classes of the pairs; lam is the weight of class c.
    weight : (K, d) classifier; global_mean : (d,) :math:`\\mu_G`.

    A cell needs :data:`MIN_SAMPLES_PER_CELL` pairs for its scatter and standard errors; one
    with fewer is NaN throughout (left out of the averages).
    """
    c, c_prime = np.asarray(c), np.asarray(c_prime)
    lams = np.asarray(lams, dtype=np.float64)
    check_cells(c, c_prime, lams)
    H, span, rows = _row_coordinates(features, weight, global_mean)
    cell_c, cell_cp, cell = _cell_keys(c, c_prime)
    counts = np.bincount(cell, minlength=len(cell_c))
    same_cell = cell_c == cell_cp

    # (P, L, 2); b is NaN for same-class cells, whose pseudo-inverse has a NaN second row
    per_pair = np.einsum("pkr,plr->plk", _cell_pinv(rows, cell_c, cell_cp)[cell], H)
    coefficients, coefficient_se, _ = _mean_and_se(per_pair, cell, counts)
    _, pair_sum_se, _ = _mean_and_se(per_pair.sum(-1), cell, counts)
    # How each pair moves with lam about its own lam average; the cell mean of that movement
    # carries noise of squared size sum_d se^2, the floor of the lam dependence of a cell mean.
    movement = H - H.mean(axis=1, keepdims=True)
    _, movement_se, _ = _mean_and_se(movement, cell, counts)
    movement_noise = (movement_se**2).sum(-1).mean(-1)  # (C,)
    same_lam = per_pair[..., 0].mean(axis=1)  # (P,)
    same_lam_mean, same_lam_mean_se, _ = _mean_and_se(same_lam, cell, counts)
    same_lam_mean[~same_cell] = np.nan
    same_lam_mean_se[~same_cell] = np.nan

    means, _, squares = _mean_and_se(H, cell, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        scatter = np.sqrt(squares.sum(-1) / (counts[:, None] - 1))
    sparse = counts < MIN_SAMPLES_PER_CELL  # no scatter, no standard error: left out
    for array in (coefficients, coefficient_se, pair_sum_se, means, scatter, same_lam_mean,
                  same_lam_mean_se, movement_noise):  # fmt: skip
        array[sparse] = np.nan
    return CellStatistics(
        c=cell_c,
        c_prime=cell_cp,
        counts=np.repeat(counts[:, None], len(lams), axis=1),
        lam=lams,
        means=means @ span.T,
        scatter=scatter,
        coefficients=coefficients,
        coefficient_se=coefficient_se,
        pair_sum_se=pair_sum_se,
        same_lam_mean=same_lam_mean,
        same_lam_mean_se=same_lam_mean_se,
        residual=_residual(means, coefficients, rows, cell_c, cell_cp),
        movement_noise=movement_noise,
        span_rank=span.shape[1],
    )


def binned_cell_statistics(
    features: np.ndarray,
    c: np.ndarray,
    c_prime: np.ndarray,
    lam_index: np.ndarray,
    lams: np.ndarray,
    weight: np.ndarray,
    global_mean: np.ndarray,
    theory_lams: np.ndarray | None = None,
) -> CellStatistics:
    """Cell statistics of the module docstring for *independent* samples, each with its own
    lam, grouped into the lam bins ``lams``: every sample is its own unit, so a (cell, lam)
    mean and its standard error are those of the samples in it, and the means at different
    lams are independent.

    Parameters
    ----------
    features : (N, d) features (any float dtype; read in float64).
    c, c_prime : (N,) classes of the samples, lam the weight of class c.
    lam_index : (N,) the bin of every sample in ``lams`` (L,), which must hold 0, 1/2 and 1.
    weight : (K, d) classifier; global_mean : (d,) :math:`\\mu_G`.
    theory_lams : (L, Q) the lams at which the theory is evaluated and averaged for each bin
        (:class:`ufm.nets.features_file.LamGroups`); None: at the centres ``lams``.

    A (cell, lam) with fewer than :data:`MIN_SAMPLES_PER_CELL` samples is NaN throughout; a
    same-class cell's lam average and the movement noise are taken over the bins it has.
    """
    c, c_prime = np.asarray(c), np.asarray(c_prime)
    lams = np.asarray(lams, dtype=np.float64)
    check_cells(c, c_prime, lams)
    H, span, rows = _row_coordinates(features, weight, global_mean)
    cell_c, cell_cp, cell = _cell_keys(c, c_prime)
    C, L, r = len(cell_c), len(lams), span.shape[1]
    group = cell * L + np.asarray(lam_index)
    counts = np.bincount(group, minlength=C * L)
    same_cell = cell_c == cell_cp

    per_sample = np.einsum("nkr,nr->nk", _cell_pinv(rows, cell_c, cell_cp)[cell], H)  # (N, 2)
    coefficients, coefficient_se, _ = _mean_and_se(per_sample, group, counts)
    _, pair_sum_se, _ = _mean_and_se(per_sample.sum(-1), group, counts)
    means, mean_se, squares = _mean_and_se(H, group, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        scatter = np.sqrt(squares.sum(-1) / (counts - 1))
    counts = counts.reshape(C, L)
    sparse = counts < MIN_SAMPLES_PER_CELL
    coefficients = coefficients.reshape(C, L, 2)
    coefficient_se = coefficient_se.reshape(C, L, 2)
    pair_sum_se = pair_sum_se.reshape(C, L)
    means = means.reshape(C, L, r)
    scatter = scatter.reshape(C, L)
    variance = (mean_se**2).sum(-1).reshape(C, L)  # summed over the coordinates
    for array in (coefficients, coefficient_se, pair_sum_se, means, scatter, variance):
        array[sparse] = np.nan

    present = (~sparse).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        same_lam_mean = np.nansum(coefficients[..., 0], axis=1) / present
        same_lam_mean_se = np.sqrt(np.nansum(coefficient_se[..., 0] ** 2, axis=1)) / present
        # m(lam) - mean over lam of m: variance v_l (1 - 2/n) + sum_l' v_l' / n^2 per bin.
        total_variance = np.nansum(variance, axis=1, keepdims=True)
        n = present[:, None]
        movement = variance * (1 - 2 / n) + total_variance / n**2
        movement_noise = np.nansum(movement, axis=1) / present
    same_lam_mean[~same_cell] = np.nan
    same_lam_mean_se[~same_cell] = np.nan
    return CellStatistics(
        c=cell_c,
        c_prime=cell_cp,
        counts=counts,
        lam=lams,
        means=means @ span.T,
        scatter=scatter,
        coefficients=coefficients,
        coefficient_se=coefficient_se,
        pair_sum_se=pair_sum_se,
        same_lam_mean=same_lam_mean,
        same_lam_mean_se=same_lam_mean_se,
        residual=_residual(means, coefficients, rows, cell_c, cell_cp),
        movement_noise=movement_noise,
        span_rank=r,
        theory_lams=None if theory_lams is None else np.asarray(theory_lams, np.float64),
    )
