r"""Step class imbalance: which classes are minorities, their relative sizes, what W does.

With ``imbalance_ratio`` :math:`\rho \ge 1` and ``minority_classes`` :math:`k`, the last
:math:`k` of :math:`K` classes have :math:`1/\rho` of the samples of the others (step
imbalance, as in the minority-collapse study of Fang et al., PNAS 2021); :math:`\rho = 1`
(or :math:`k = 0`) is the balanced problem. Under sample-proportional mixup pairing both
partners are drawn from the imbalanced training set, so a mixture of classes
:math:`(c, c')` carries weight :math:`n_c n_{c'}`.

:func:`classifier_imbalance` measures the classifier: the mean cosine between distinct
minority rows (:math:`-1/(K-1)` for a simplex ETF, 1 once they have collapsed onto one
direction), the row norms, and the ETF distance of the majority and the minority rows to the
matching block of a simplex ETF.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._checks import check_float, check_int

PAIRINGS = ("sample", "class")


def check_imbalance(ratio, minority, K: int) -> tuple[float, int]:
    """``(imbalance_ratio, minority_classes)`` validated for K classes.

    The ratio must be >= 1 and the number of minority classes in [0, K - 1] (at least one
    class must be a majority).
    """
    ratio = check_float("imbalance_ratio", ratio, 1.0, None)
    minority = check_int("minority_classes", minority, 0, K - 1)
    return ratio, minority


def class_sizes(K: int, ratio: float, minority: int) -> torch.Tensor:
    """Relative class sizes (K,) in float64: 1 for the majority, 1/ratio for the last ``minority``."""
    ratio, minority = check_imbalance(ratio, minority, K)
    sizes = torch.ones(K, dtype=torch.float64)
    if minority:
        sizes[K - minority:] = 1.0 / ratio
    return sizes


def is_balanced(ratio: float, minority: int) -> bool:
    """Whether the step imbalance is no imbalance at all (ratio 1 or no minority class)."""
    return ratio == 1.0 or minority == 0


def minority_cosine(W: torch.Tensor, minority: int) -> float | None:
    """Mean cosine between the distinct minority rows (the last ``minority`` of W).

    -1/(K-1) for a simplex ETF, 1 when the minority rows have collapsed onto one direction
    (minority collapse); None with fewer than two minority classes or a zero row.
    """
    if minority < 2:
        return None
    rows = W[W.shape[0] - minority:].to(torch.float64)
    norms = rows.norm(dim=1)
    if bool((norms == 0).any()):
        return None
    unit = rows / norms[:, None]
    cosines = unit @ unit.T
    off = ~torch.eye(minority, dtype=torch.bool, device=W.device)
    return float(cosines[off].mean())


def block_etf_distance(W: torch.Tensor, rows: torch.Tensor) -> float | None:
    r"""Distance of the Gram of ``W[rows]`` to the same block of a K-class simplex ETF.

    .. math:: \Bigl\| \frac{G_S}{\|G_S\|_F} - \frac{B_S}{\|B_S\|_F} \Bigr\|_F, \qquad
              B = I_K - \mathbf 1\mathbf 1^\top/K,

    zero iff the rows in S have equal norms and pairwise cosines -1/(K-1), as in a simplex
    ETF of all K classes (for all K rows it is :func:`ufm.etf.etf_distance`). None for an
    empty S or zero rows.
    """
    if rows.numel() == 0:
        return None
    K = W.shape[0]
    sub = W[rows].to(torch.float64)
    G = sub @ sub.T
    scale = float(G.norm())
    if scale == 0:
        return None
    m = int(rows.numel())
    B = torch.eye(m, dtype=torch.float64, device=W.device) - 1.0 / K
    return float((G / scale - B / B.norm()).norm())


def classifier_imbalance(W: torch.Tensor, minority: int) -> dict[str, Any]:
    """Summary entries of a classifier under imbalance (``minority`` = k last classes).

    ``minority_cosine`` (:func:`minority_cosine`), ``row_norms`` (per class),
    ``etf_distance_majority`` and ``etf_distance_minority`` (:func:`block_etf_distance`;
    None without minority classes) and the ETF value ``etf_cosine`` = -1/(K-1) to read them
    against.
    """
    K = W.shape[0]
    classes = torch.arange(K, device=W.device)
    majority = classes[: K - minority]
    return {
        "minority_cosine": minority_cosine(W, minority),
        "etf_cosine": -1.0 / (K - 1),
        "row_norms": [float(v) for v in W.to(torch.float64).norm(dim=1)],
        "etf_distance_majority": block_etf_distance(W, majority),
        "etf_distance_minority": block_etf_distance(W, classes[K - minority:]) if minority else None,
    }


def pair_weight(sizes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Weight of each sample, the product of its classes' sizes, scaled to mean 1.

    ``classes`` is (n,) for one class per sample, or (n, m) for m partners; a mean of 1
    keeps the objective's 1/n normalisation, so balanced sizes give weights of exactly 1.
    """
    weight = sizes[classes]
    if weight.ndim == 2:
        weight = weight.prod(dim=1)
    total = float(weight.sum())
    if not math.isfinite(total) or total <= 0:
        raise ValueError("the class sizes give no positive total weight")
    return weight * (weight.numel() / total)
