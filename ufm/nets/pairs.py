r"""Mixed training pairs: which pairs a measurement draws, and their features.

:func:`measured_cells` chooses the class pairs (all of them, or a seeded sample when there
are more than ``max_class_pairs``, :mod:`ufm.nets.measure_settings`), :func:`draw_pairs`
the training samples of each, :func:`mixed_activations` runs their mixtures through a
network (:class:`ufm.nets.probe.NetworkProbe`), :func:`as_mixed_features` writes them as the
rows of a features file (:mod:`ufm.nets.features_file`), and :func:`triple_projections` puts
a triple's features into the plane of its classifier rows for the figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..etf import row_space
from .features_file import MixedFeatures
from .measure_settings import MeasureSettings
from .probe import NetworkProbe

__all__ = [
    "as_mixed_features",
    "class_pairs",
    "draw_pairs",
    "measured_cells",
    "mixed_activations",
    "triple_projections",
]


def _members(labels: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
    members = {c: np.flatnonzero(labels == c) for c in classes}
    for c, indices in members.items():
        if len(indices) < 2:
            raise ValueError(
                f"class {c} has {len(indices)} training sample(s); the pair measurements need "
                "at least two of every class measured"
            )
    return members


def draw_pairs(
    labels: np.ndarray, cells: Sequence[tuple[int, int]], per_pair: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``per_pair`` random training pairs (i, j) for every class pair (c, c') of ``cells``:
    sample i of class c and j of class c'; for c = c', j differs from i."""
    labels = np.asarray(labels)
    members = _members(labels, sorted({c for cell in cells for c in cell}))
    first, second = [], []
    for c, c_prime in cells:
        i_pos = rng.integers(len(members[c]), size=per_pair)
        if c == c_prime:
            # Any position but i's own: shift by 1 .. n-1 around the class.
            n = len(members[c])
            j_pos = (i_pos + 1 + rng.integers(n - 1, size=per_pair)) % n
        else:
            j_pos = rng.integers(len(members[c_prime]), size=per_pair)
        first.append(members[c][i_pos])
        second.append(members[c_prime][j_pos])
    return np.concatenate(first), np.concatenate(second)


def class_pairs(
    labels: np.ndarray, classes: Sequence[int], per_pair: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``per_pair`` random training pairs (i, j) for every class pair c <= c' of ``classes``
    (:func:`draw_pairs`)."""
    cells = [(c, c_prime) for k, c in enumerate(classes) for c_prime in classes[k:]]
    return draw_pairs(labels, cells, per_pair, rng)


def measured_cells(
    num_classes: int,
    settings: MeasureSettings,
    rng: np.random.Generator,
    include: Sequence[int] = (),
) -> list[tuple[int, int]]:
    """The class pairs c <= c' of the all-classes comparison, in order: all of them, or as
    many as ``max_class_pairs`` allows, drawn (:mod:`ufm.nets.measure_settings`), together
    with every class pair among the classes ``include`` (the figure's triple, so that its
    three-class figure has the samples it draws)."""
    K = num_classes
    same, different = settings.class_pair_counts(K)
    if same + different == K * (K + 1) // 2:
        return [(c, c_prime) for c in range(K) for c_prime in range(c, K)]
    upper = [(c, c_prime) for c in range(K) for c_prime in range(c + 1, K)]
    same_classes = np.sort(rng.choice(K, size=same, replace=False))
    chosen = np.sort(rng.choice(len(upper), size=different, replace=False))
    cells = {(int(c), int(c)) for c in same_classes} | {upper[k] for k in chosen}
    included = sorted(int(c) for c in include)
    cells |= {(c, c_prime) for k, c in enumerate(included) for c_prime in included[k:]}
    return sorted(cells)


def mixed_activations(
    probe: NetworkProbe,
    x: torch.Tensor,
    y: torch.Tensor,
    i: np.ndarray,
    j: np.ndarray,
    lams: np.ndarray,
) -> dict[str, np.ndarray]:
    r"""Features and logits of :math:`\lambda x_i + (1-\lambda) x_j` for every pair and lam,
    mixed where the probe mixes (the inputs, or the outputs of its ``mix_at`` module).

    Returns ``features`` (P, L, d) and ``logits`` (P, L, K) in the network's dtype (saved as
    computed; the comparisons with theory cast them to float64), and ``c`` = y[i],
    ``c_prime`` = y[j], ``lam`` (L,), ``i``, ``j``: lam is the weight of class c.
    """
    lams = np.asarray(lams, dtype=np.float64)
    weights = np.stack([lams, 1.0 - lams], axis=1)
    features, logits = probe.mixtures(x, np.stack([i, j], axis=1), weights)
    return {
        "features": features.numpy(),
        "logits": logits.numpy(),
        "c": y[torch.as_tensor(i)].numpy(),
        "c_prime": y[torch.as_tensor(j)].numpy(),
        "lam": lams,
        "i": np.asarray(i),
        "j": np.asarray(j),
    }


def as_mixed_features(
    activations: dict[str, np.ndarray], weight: np.ndarray, bias: np.ndarray | None,
    global_mean: np.ndarray,
) -> MixedFeatures:  # fmt: skip
    """Paired activations (P, L, d) as the rows of a features file, pair-major, with pair ids."""
    features = activations["features"]
    P, L = features.shape[:2]
    return MixedFeatures(
        features=features.reshape(P * L, -1),
        c=np.repeat(activations["c"].astype(np.int64), L),
        c_prime=np.repeat(activations["c_prime"].astype(np.int64), L),
        lam=np.tile(activations["lam"], P),
        weight=weight,
        bias=np.zeros(len(weight)) if bias is None else bias,
        global_mean=global_mean,
        pair=np.repeat(np.arange(P), L),
    )


def triple_projections(
    weight: torch.Tensor | np.ndarray,
    classes: Sequence[int],
    features: np.ndarray,
    centre: np.ndarray,
) -> dict[str, np.ndarray]:
    r"""Centred features projected for the figures of Fisher et al. (2024).

    With :math:`w_c` the classifier rows of the three ``classes`` and :math:`\bar w` their
    mean, the features are taken relative to ``centre`` and written in two orthonormal
    bases (both from :func:`ufm.etf.row_space`): that of :math:`\operatorname{span}\{w_c\}`
    and that of the plane through the three vectors, :math:`\operatorname{span}\{w_c -
    \bar w\}`; the coordinates are :math:`E^\top(h - \text{centre})` for a basis :math:`E`.
    :func:`ufm.reproduce.projection.project_triple` builds its projection files on this.

    Parameters
    ----------
    weight : torch.Tensor or numpy.ndarray, (K, d), read in float64.
    classes : three class indices.
    features : numpy.ndarray, (..., d), float64.
    centre : numpy.ndarray, (d,).

    Returns
    -------
    dict with ``span_basis`` (d, r), r = 3, or 2 when the three rows are dependent (as for
    K = 3); ``span_coordinates`` (..., r); ``plane_basis`` (d, r'), r' = 2 unless the three
    vectors lie on one line; ``plane_coordinates`` (..., r').
    """
    if isinstance(weight, torch.Tensor):
        weight = weight.cpu().numpy()
    rows = np.asarray(weight, dtype=np.float64)[list(classes)]
    centred = features - centre
    span_basis = row_space(rows)
    plane_basis = row_space(rows - rows.mean(axis=0))
    return {
        "span_basis": span_basis,
        "span_coordinates": centred @ span_basis,
        "plane_basis": plane_basis,
        "plane_coordinates": centred @ plane_basis,
    }
