r"""The mixed-features file: a network's mixup features, saved anywhere, compared here.

A researcher who trained a network elsewhere (a WideResNet on a GPU, say) has its last-layer
features of mixed training samples, their classes and mixing weights, and the classifier.
This module defines the file that holds them (an ``.npz``, schema version
:data:`SCHEMA_VERSION`), reads and checks it before any work, and puts the samples on a lam
grid: :func:`ufm.compare_features` and ``ufm compare`` take such a file, and a measurement
of a network writes one (``mixed_features.npz``: every :func:`ufm.measure_network` folder, the
final measurement of every ``ufm train`` run), so any run can be analysed again by ``ufm
compare`` or by anyone's own script.

**Schema, version 1.** N mixed samples, d features, K classes:

============================  =========  =====================================================
key                           shape      meaning
============================  =========  =====================================================
``features`` (required)       (N, d)     input of the classifier for the mixture
                                         :math:`\lambda x_i + (1-\lambda) x_j`
``c``, ``c_prime`` (required) (N,)       classes of :math:`x_i` and :math:`x_j`, in [0, K)
``lam`` (required)            (N,)       :math:`\lambda`, the weight of class ``c``, in [0, 1]
``weight`` (required)         (K, d)     classifier rows :math:`w_k`
``bias``                      (K,)       classifier bias (absent: none)
``global_mean``               (d,)       the centre :math:`\mu_G`, mean of the clean class means
``clean_features``            (M, d)     features of clean (unmixed) training samples, with
``clean_labels``              (M,)       their classes: :math:`\mu_G` and the NC metrics
``test_logits``               (T, K)     logits of clean test samples, with
``test_labels``               (T,)       their classes: accuracy, NLL, ECE, reliability
``pair``                      (N,)       pair identity: rows with the same id are one pair
                                         :math:`(x_i, x_j)` at several lams
``schema_version``            ()         1 (absent: 1)
============================  =========  =====================================================

The centre :math:`\mu_G` is ``global_mean`` when given; otherwise the mean of the class means
of ``clean_features``; otherwise, when every class has same-class mixtures (c = c'), the mean
over classes of their class means ("same_class_mixtures": exact for the UFM's optimum with a
simplex-ETF classifier, whose same-class features are :math:`a_\text{same} w_c` at every
lam and whose rows sum to zero; for a network, same-class mixtures stay close to the clean
class features); otherwise the mean over classes of the class means of all mixed features,
each sample counted for class ``c`` with weight lam and for ``c_prime`` with weight 1 - lam
("mixed_features": exact for the optimum only on a design balanced over classes).
``global_mean_source`` in the summary says which was used.

**Lam on a grid or drawn per sample.** Each sample is first oriented so that
:math:`c \le c'` (a pair :math:`(c, c', \lambda)` is the pair :math:`(c', c, 1-\lambda)`).
When the lams take few distinct values (at most :data:`MAX_GRID_POINTS` and at most half the
number of samples, 0, 1/2 and 1 among them) they are the grid. Otherwise (lam drawn from a Beta distribution per sample) each
sample goes to the nearest of ``lam_bins`` equally spaced bin centres in [0, 1] (odd, so that
1/2 is one), and the theory the bin's cell means are compared with is averaged over the bin's
lams (:class:`LamGroups`). Averaging features over a bin biases curved functions of lam by
about half their second derivative times the bin's lam variance, at most
:math:`(1/(L-1))^2/12` for L bins; ``scripts/lam_binning_bias.py`` measures the effect on
the amplification and the fitted lam_H for features made from the exact theory (-0.04% and
within 1.2% with 11 bins).

**Paired or independent.** When ``pair`` is given, the lams are a grid and every pair holds
every grid lam once with one class pair, the samples are *paired* (as ``ufm train`` measures
them) and their standard errors are taken over pairs
(:func:`ufm.nets.cell_means.cell_statistics`); otherwise each sample is independent
(:func:`ufm.nets.cell_means.binned_cell_statistics`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_int, preview
from ..io import write_npz
from .measure_settings import odd_lam_grid

__all__ = [
    "MAX_GRID_POINTS",
    "SCHEMA_VERSION",
    "LamGroups",
    "MixedFeatures",
    "centre_of",
    "group_lams",
    "read_features",
]

SCHEMA_VERSION = 1
REQUIRED = ("features", "c", "c_prime", "lam", "weight")
OPTIONAL = (
    "bias",
    "global_mean",
    "clean_features",
    "clean_labels",
    "test_logits",
    "test_labels",
    "pair",
    "schema_version",
)
MAX_GRID_POINTS = 101
"""The most distinct lam values that are taken as a grid rather than binned."""
GRID_MERGE_TOL = 1e-9
"""Lam values closer than this are one grid point (1 - lam of a swapped pair may differ from
the grid value by an ulp)."""


@dataclass
class MixedFeatures:
    """The arrays of the features file (module docstring), checked: float64 lams, int64
    classes, every optional entry None when absent."""

    features: np.ndarray
    c: np.ndarray
    c_prime: np.ndarray
    lam: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None = None
    global_mean: np.ndarray | None = None
    clean_features: np.ndarray | None = None
    clean_labels: np.ndarray | None = None
    test_logits: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    pair: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The entries present, with ``schema_version``, for an npz file."""
        present = {f.name: getattr(self, f.name) for f in fields(self)}
        arrays = {name: value for name, value in present.items() if value is not None}
        return {**arrays, "schema_version": np.asarray(SCHEMA_VERSION)}

    def save(self, path: str | Path) -> Path:
        """Write the file (atomically: a failed write leaves no partial file)."""
        return write_npz(path, **self.arrays())


def _array(arrays: Mapping[str, Any], name: str, ndim: int) -> np.ndarray:
    value = np.asarray(arrays[name])
    if value.ndim != ndim:
        raise ValueError(
            f"features file: {name!r} must have {ndim} dimension(s), got shape {value.shape}"
        )
    return value


def _floats(arrays, name: str, ndim: int) -> np.ndarray:
    value = _array(arrays, name, ndim)
    if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"features file: {name!r} must hold numbers, got dtype {value.dtype}")
    finite = np.isfinite(value)
    if not finite.all():
        raise ValueError(f"features file: {name!r} must be finite, found {value[~finite][0]}")
    return value


def _classes(arrays, name: str, K: int) -> np.ndarray:
    value = _array(arrays, name, 1)
    if np.issubdtype(value.dtype, np.floating):
        if not (np.isfinite(value).all() and (value == np.round(value)).all()):
            raise ValueError(f"features file: {name!r} must hold integer class indices")
    elif not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"features file: {name!r} must hold class indices, got {value.dtype}")
    value = value.astype(np.int64)
    bad = (value < 0) | (value >= K)
    if bad.any():
        raise ValueError(
            f"features file: {name!r} holds class {int(value[bad][0])} outside [0, {K - 1}] "
            f"(K = {K}, the rows of 'weight'); {int(bad.sum())} such entries"
        )
    return value


def _pair_ids(arrays) -> np.ndarray:
    pair = _array(arrays, "pair", 1)
    if not np.issubdtype(pair.dtype, np.integer) or (pair < 0).any():
        raise ValueError("features file: 'pair' must hold non-negative integer pair ids")
    return pair.astype(np.int64)


def _same_length(name: str, value: np.ndarray, other: str, length: int) -> None:
    if len(value) != length:
        raise ValueError(
            f"features file: {name!r} has {len(value)} rows but {other!r} has {length}"
        )


def _check_width(name: str, value: np.ndarray, axis_size: int, what: str) -> None:
    if value.shape[-1] != axis_size:
        raise ValueError(
            f"features file: {name!r} has shape {value.shape}, its last axis must be {what} "
            f"= {axis_size}"
        )


def check_features(arrays: Mapping[str, Any]) -> MixedFeatures:
    """:class:`MixedFeatures` from a mapping of the schema's entries, every entry checked
    before any work: a clear one-line ValueError names the first problem."""
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise ValueError(
            f"features file: missing required {', '.join(map(repr, missing))}; required: "
            f"{', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)}"
        )
    unknown = sorted(set(arrays) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ValueError(
            f"features file: unknown {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(REQUIRED + OPTIONAL)}"
        )
    if "schema_version" in arrays:
        version = np.asarray(arrays["schema_version"])
        if version.shape != () or int(version) != SCHEMA_VERSION:
            raise ValueError(
                f"features file: schema_version {version.tolist()} is not supported; this "
                f"version of ufm reads schema_version {SCHEMA_VERSION}"
            )
    weight = _floats(arrays, "weight", 2).astype(np.float64)
    K, d = weight.shape
    if K < 3:
        raise ValueError(f"features file: the comparison needs K >= 3 classes, 'weight' has {K}")
    features = _floats(arrays, "features", 2)
    _check_width("features", features, d, "d, the columns of 'weight'")
    N = len(features)
    c, c_prime = _classes(arrays, "c", K), _classes(arrays, "c_prime", K)
    lam = _floats(arrays, "lam", 1).astype(np.float64)
    for name, value in (("c", c), ("c_prime", c_prime), ("lam", lam)):
        _same_length(name, value, "features", N)
    outside = (lam < 0) | (lam > 1)
    if outside.any():
        raise ValueError(
            f"features file: 'lam' must lie in [0, 1] (the weight of class c), found "
            f"{float(lam[outside][0])!r} ({int(outside.sum())} such values)"
        )
    same = c == c_prime
    if same.all() or not same.any():
        raise ValueError(
            "features file: the comparison needs same-class (c == c_prime) and different-class "
            f"samples, got {int(same.sum())} same-class of {N}"
        )
    result = MixedFeatures(features, c, c_prime, lam, weight)
    if "bias" in arrays:
        result.bias = _floats(arrays, "bias", 1).astype(np.float64)
        _same_length("bias", result.bias, "weight", K)
    if "global_mean" in arrays:
        result.global_mean = _floats(arrays, "global_mean", 1).astype(np.float64)
        _check_width("global_mean", result.global_mean, d, "d")
    if "pair" in arrays:
        result.pair = _pair_ids(arrays)
        _same_length("pair", result.pair, "features", N)
    _check_companions(arrays, result, "clean_features", "clean_labels", d, "d")
    _check_companions(arrays, result, "test_logits", "test_labels", K, "K")
    return result


def _check_companions(arrays, result: MixedFeatures, values: str, labels: str, width: int,
                      what: str) -> None:  # fmt: skip
    """Both of ``values`` (M, width) and ``labels`` (M,) or neither."""
    if (values in arrays) != (labels in arrays):
        given, absent = (values, labels) if values in arrays else (labels, values)
        raise ValueError(f"features file: {given!r} needs {absent!r} beside it")
    if values not in arrays:
        return
    matrix = _floats(arrays, values, 2)
    _check_width(values, matrix, width, what)
    classes = _classes(arrays, labels, result.num_classes)
    _same_length(labels, classes, values, len(matrix))
    setattr(result, values, matrix)
    setattr(result, labels, classes)


def read_features(source: str | Path | Mapping[str, Any]) -> MixedFeatures:
    """Read and check a features file (a path to an ``.npz``) or a mapping of its arrays."""
    if isinstance(source, Mapping):
        return check_features(source)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"features file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read features file {str(path)!r} as .npz: {error}") from error
    return check_features(arrays)


def centre_of(mixed: MixedFeatures) -> tuple[np.ndarray, str]:
    r"""The centre :math:`\mu_G` (d,) and where it came from (module docstring):
    "global_mean", "clean_features", "same_class_mixtures" or "mixed_features"."""
    if mixed.global_mean is not None:
        return mixed.global_mean, "global_mean"
    K = mixed.num_classes
    if mixed.clean_features is not None:
        features = mixed.clean_features.astype(np.float64)
        counts = np.bincount(mixed.clean_labels, minlength=K)
        if (counts == 0).any():
            raise ValueError(
                f"features file: clean_labels miss class {int(np.flatnonzero(counts == 0)[0])}; "
                "the class means need every class"
            )
        sums = np.zeros((K, features.shape[1]))
        np.add.at(sums, mixed.clean_labels, features)
        return (sums / counts[:, None]).mean(axis=0), "clean_features"
    features = mixed.features.astype(np.float64)
    same = mixed.c == mixed.c_prime
    same_counts = np.bincount(mixed.c[same], minlength=K)
    if (same_counts > 0).all():
        sums = np.zeros((K, features.shape[1]))
        np.add.at(sums, mixed.c[same], features[same])
        return (sums / same_counts[:, None]).mean(axis=0), "same_class_mixtures"
    weights = np.zeros((K, len(features)))
    rows = np.arange(len(features))
    np.add.at(weights, (mixed.c, rows), mixed.lam)
    np.add.at(weights, (mixed.c_prime, rows), 1.0 - mixed.lam)
    mass = weights.sum(axis=1)
    present = mass > 0
    means = (weights[present] @ features) / mass[present, None]
    return means.mean(axis=0), "mixed_features"


# --------------------------------------------------------------------------------------------
# Lam grid or bins
# --------------------------------------------------------------------------------------------


@dataclass
class LamGroups:
    """The samples of a :class:`MixedFeatures` oriented and on a lam grid.

    ``c``, ``c_prime`` (N,): classes with :math:`c \\le c'`; ``lam`` (N,): the weight of class
    ``c`` after orientation; ``lams`` (L,): the grid or the bin centres; ``lam_index`` (N,):
    each sample's grid point or bin; ``binned``: whether the lams were binned; ``paired``:
    the order (P, L) of the rows that makes the samples a complete pair-by-lam array, or None;
    ``theory_lams`` (L, Q): where the theory is evaluated for each group and averaged over, as
    the samples are: the grid itself (Q = 1), or per bin :data:`THEORY_POINTS` quantiles of
    the lams of its different-class samples (the centre where there are none). Evaluating the
    theory at the centres instead would be off to first order in the bin width in the end
    bins, whose lams all lie on one side of the centre, and at each bin's mean lam to second
    order where the curves bend most.
    """

    c: np.ndarray
    c_prime: np.ndarray
    lam: np.ndarray
    lams: np.ndarray
    lam_index: np.ndarray
    binned: bool
    paired: np.ndarray | None
    theory_lams: np.ndarray


def _grid(lam: np.ndarray) -> np.ndarray | None:
    """The distinct values of ``lam`` (merged within :data:`GRID_MERGE_TOL`, snapped to 0, 1/2
    and 1) when they are few and hold 0, 1/2 and 1; else None."""
    values = np.unique(lam)
    if len(values) > 10 * MAX_GRID_POINTS:
        return None
    keep = np.concatenate([[True], np.diff(values) > GRID_MERGE_TOL])
    grid = values[keep]
    if len(grid) > MAX_GRID_POINTS or 2 * len(grid) > len(lam):
        return None  # too many values, or fewer than two samples per value: drawn lams
    for exact in (0.0, 0.5, 1.0):
        near = np.abs(grid - exact) <= GRID_MERGE_TOL
        if not near.any():
            return None
        grid[near] = exact
    return grid


def _paired_order(pair: np.ndarray, lam_index: np.ndarray, c, c_prime, L: int):
    """Row order (P, L) when every pair has each of the L grid points once and one class
    pair; else None."""
    pairs, inverse, counts = np.unique(pair, return_inverse=True, return_counts=True)
    if not (counts == L).all():
        return None
    order = np.lexsort((lam_index, inverse)).reshape(len(pairs), L)
    if not (lam_index[order] == np.arange(L)).all():
        return None
    if not ((c[order] == c[order[:, :1]]).all() and (c_prime[order] == c_prime[order[:, :1]]).all()):
        return None
    return order


def group_lams(mixed: MixedFeatures, lam_bins: int = 11) -> LamGroups:
    """Orient the samples (:math:`c \\le c'`) and put them on a lam grid or into ``lam_bins``
    bins (module docstring)."""
    lam_bins = check_int("lam_bins", lam_bins, minimum=3)
    if lam_bins % 2 == 0:
        raise ValueError(f"lam_bins must be odd so that 1/2 is a bin centre, got {lam_bins}")
    swap = mixed.c > mixed.c_prime
    c = np.where(swap, mixed.c_prime, mixed.c)
    c_prime = np.where(swap, mixed.c, mixed.c_prime)
    lam = np.where(swap, 1.0 - mixed.lam, mixed.lam)
    grid = _grid(lam)
    if grid is not None:
        # each value's grid point: the last grid value at or below it (merged within the tol)
        lam_index = np.searchsorted(grid, lam + GRID_MERGE_TOL, side="right") - 1
        paired = None
        if mixed.pair is not None:
            paired = _paired_order(mixed.pair, lam_index, c, c_prime, len(grid))
        return LamGroups(c, c_prime, lam, grid, lam_index, False, paired, grid[:, None])
    centres = odd_lam_grid(lam_bins)
    lam_index = np.rint(lam * (lam_bins - 1)).astype(np.int64)
    return LamGroups(c, c_prime, lam, centres, lam_index, True, None,
                     _bin_points(lam, lam_index, c != c_prime, centres))  # fmt: skip


THEORY_POINTS = 9
"""Quantiles of each bin's lams at which the theory is evaluated and averaged."""


def _bin_points(lam, lam_index, different, centres) -> np.ndarray:
    """(L, Q) quantiles (k + 1/2)/Q of the lams of the different-class samples of each bin;
    the bin centre where it has none."""
    quantiles = (np.arange(THEORY_POINTS) + 0.5) / THEORY_POINTS
    points = np.repeat(centres[:, None], THEORY_POINTS, axis=1)
    for l in range(len(centres)):
        inside = lam[different & (lam_index == l)]
        if len(inside):
            points[l] = np.quantile(inside, quantiles)
    return points


def describe_lams(groups: LamGroups) -> str:
    """One line on how the lams were grouped, for messages and reports."""
    kind = f"{len(groups.lams)} bins" if groups.binned else f"a grid of {len(groups.lams)}"
    return f"lam on {kind}: {preview(groups.lams)}"
