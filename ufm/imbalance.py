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

:func:`label_mass_ratio` says how much of that imbalance a mixup run's *targets* keep: with
class pairing (the partner's class drawn uniformly) the minority classes get far more label
mass than their share of the samples.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._checks import check_choice, check_float, check_int

PAIRINGS = ("sample", "class")
"""How the partner of a mixup pair is drawn: "sample", from the (imbalanced) training set
like the first partner; "class", its class uniform over the K classes."""


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


def label_masses(sizes, pairing: str) -> torch.Tensor:
    r"""The share of the label mass of a mixup run that falls on each class, (K,) float64.

    ``sizes`` (K,) are the class sizes :math:`n_k` (counts, or relative sizes such as
    :func:`class_sizes`; positive), ``pairing`` one of :data:`PAIRINGS`. A pair's target is
    :math:`\lambda e_c + (1-\lambda) e_{c'}`, with the first partner's class :math:`c` drawn
    with the class frequencies :math:`p_k = n_k/N` and :math:`\lambda` independent of the
    classes. For a symmetric distribution of :math:`\lambda` (Beta(alpha, alpha), so
    :math:`E[\lambda] = 1/2`) the expected mass of class :math:`k` in one target is

    .. math:: E[\lambda]\, p_k + E[1-\lambda]\, q_k = \frac{p_k + q_k}{2},

    with :math:`q_k` the distribution of the partner's class: :math:`q_k = p_k` under sample
    pairing (the partner is another training sample, so the mass is :math:`p_k`, as without
    mixup) and :math:`q_k = 1/K` under class pairing. The masses sum to 1.
    """
    pairing = check_choice("pairing", pairing, PAIRINGS)
    sizes = torch.as_tensor(sizes, dtype=torch.float64)
    if sizes.ndim != 1 or sizes.numel() < 2:
        raise ValueError(f"sizes must hold one size per class, K >= 2, got shape {tuple(sizes.shape)}")
    if not bool(torch.isfinite(sizes).all()) or bool((sizes <= 0).any()):
        raise ValueError(f"sizes must be finite and positive, got {sizes.tolist()}")
    p = sizes / sizes.sum()
    q = p if pairing == "sample" else torch.full_like(p, 1.0 / p.numel())
    return (p + q) / 2


def label_mass_ratio(K: int, minority_classes: int, imbalance_ratio: float, pairing: str) -> float:
    r"""Majority-to-minority ratio of the label mass per class in a mixup run.

    Under step imbalance (:func:`class_sizes`: ``minority_classes`` = k of the K classes
    with 1/``imbalance_ratio`` = :math:`1/\rho` of the samples of the others) the class
    frequencies are :math:`p_A = 1/Z` for a majority class and :math:`p_B = 1/(\rho Z)` for
    a minority class, :math:`Z = K - k + k/\rho`. Per class, the label mass of a run whose
    :math:`\lambda` has a symmetric distribution is :math:`(p_k + q_k)/2`
    (:func:`label_masses`), so the ratio is

    * :math:`\rho` under sample pairing (:math:`q = p`): both partners carry the imbalance,
      as plain training does (this is also the ratio of a run without mixup);
    * :math:`(p_A + 1/K)/(p_B + 1/K)` under class pairing (:math:`q_k = 1/K`), which stays
      below :math:`1 + K/(K - k)` however large :math:`\rho` grows: for K = 10, k = 5,
      :math:`\rho = 64` it is 2.8806.

    The minority classes' share of the classifier's gradient, and so their collapse (Fang et
    al., PNAS 2021, minority collapse), follows this mass rather than the sample count; a run
    with sample pairing at :math:`\rho` equal to the class-pairing ratio is the control that
    separates the label mass from the rest of what class pairing changes.

    Raises
    ------
    ValueError
        For K < 2, ``imbalance_ratio`` < 1, ``minority_classes`` outside [1, K - 1] (no
        minority class, or none left as a majority) or an unknown ``pairing``.
    """
    K = check_int("K", K, minimum=2)
    minority = check_int("minority_classes", minority_classes, 1, K - 1)
    ratio = check_float("imbalance_ratio", imbalance_ratio, 1.0, None)
    masses = label_masses(class_sizes(K, ratio, minority), pairing)
    return float(masses[0] / masses[-1])
