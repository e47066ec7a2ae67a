r"""Minority collapse under mixup: the exact optimum of the learned-classifier UFM under step
imbalance, reduced to three numbers.

The problem is the learned-classifier objective of docs/theory.md section 1 with the
imbalance weights of section 11: the last :math:`k_B` of :math:`K` classes (the minority,
group B) have :math:`1/\rho` of the samples of the other :math:`k_A = K - k_B` (group A), a
mixed sample of classes :math:`(c, c')` at :math:`\lambda` carries the weight
:math:`n_c n_{c'}` ("sample" pairing, both partners from the imbalanced set) or :math:`n_c`
("class" pairing, the partner class drawn uniformly), every ordered class pair at every
:math:`\lambda` of a grid, no bias:

.. math:: F(H, W) = \frac{\sum_s \omega_s\,[\ell(Wh_s; y_s) + \frac{\lambda_H}{2}\|h_s\|^2]}
                         {\sum_s \omega_s} + \frac{\lambda_W}{2}\|W\|_F^2 .

Plain training is the grid :math:`\lambda \in \{1\}`. The reduction (docs/theory.md
section 13; each step checked symbolically in :mod:`.minority_derivation`):

1. **The features go.** For a fixed W the best feature of a sample is the minimiser of
   :math:`\ell(z) + \frac{\lambda_H}{2} z^\top G^+ z` over logits :math:`z = Wh` in the
   range of :math:`G = WW^\top` (the least-norm h with :math:`Wh = z` has
   :math:`\|h\|^2 = z^\top G^+ z`), so the objective depends on W only through G, and
   :math:`F(G) = \sum_s \bar\omega_s f_s(G) + \frac{\lambda_W}{2}\operatorname{tr} G`.
2. **F is convex in G**: :math:`(z, G) \mapsto z^\top G^+ z` is jointly convex (the matrix
   fractional function), and a partial minimum of a jointly convex function is convex.
   So for :math:`d \ge K - 1` the learned problem's minimum is that of a convex problem,
   and averaging any optimal G over the permutations within each group gives an optimal G
   invariant under them.
3. **Three eigenvalues.** A softmax-family loss is unchanged by a common logit shift, so
   :math:`\mathbf 1^\top W = 0` at the optimum, and a G invariant under permutations within
   A and within B, with :math:`G\mathbf 1 = 0`, is

   .. math:: G = \mu_A P_A + \mu_B P_B + \mu_0\, e e^\top,

   :math:`P_A` (:math:`P_B`) the projector onto vectors supported on A (B) that sum to zero,
   :math:`e \propto k_B \mathbf 1_A - k_A \mathbf 1_B` the unit vector between the groups.
   :math:`\mu_A, \mu_B, \mu_0 \ge 0` are the unknowns, :math:`\operatorname{tr} G =
   (k_A - 1)\mu_A + (k_B - 1)\mu_B + \mu_0`.
4. **A handful of logits per sample.** A sample's optimal logits are equal on the classes
   its target treats alike: :math:`\{c\}`, :math:`\{c'\}` and the remaining classes of A and
   of B, at most four *cells*. With the cell indicator S (K x 4),
   :math:`z^\top G^+ z = \sum_i \zeta^\top Q_i \zeta / \mu_i` with
   :math:`Q_i = S^\top \Pi_i S` (:math:`\Pi_i` the three projectors above), and the
   per-sample problem is a convex problem in at most four numbers, solved by Newton's
   method to rounding. Only six sample types (A-A same, A-A different, A-B, B-A, B-B same
   and different) times the grid of :math:`\lambda` are distinct.
5. **The envelope theorem** gives the exact gradient
   :math:`\partial F/\partial\mu_i = \frac{\lambda_W}{2} d_i - \frac{\lambda_H}{2}
   E_i/\mu_i^2`, :math:`E_i = \sum_s \bar\omega_s \zeta_s^\top Q_i \zeta_s`, so at the
   optimum :math:`\mu_i = \sqrt{\lambda_H E_i / (\lambda_W d_i)}`; implicit
   differentiation of the per-sample optima gives the exact Hessian, and Newton's method
   on the three unknowns converges to rounding.

The balanced problem (:math:`\rho = 1`) gives :math:`\mu_A = \mu_B = \mu_0`, a simplex ETF.
The minority cosine is the cosine between two minority rows,
:math:`(\mu_0 k_A/(k_B K) - \mu_B/k_B)/(\mu_B(1 - 1/k_B) + \mu_0 k_A/(k_B K))`:
:math:`-1/(K-1)` for an ETF, 1 once the minority rows coincide (minority collapse, Fang et
al., "Exploring deep neural networks via layer-peeled model: minority collapse in imbalanced
training", PNAS 2021). ``imbalance_ratio = inf`` is the limit of vanishing minorities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._checks import check_float, check_int
from ..imbalance import PAIRINGS, class_sizes

__all__ = [
    "CELL_GROUPS",
    "KINDS",
    "CellAmplification",
    "ImbalanceTheory",
    "MinorityThreshold",
    "cell_amplification",
    "check_imbalance_problem",
    "exact_collapse_ratio",
    "imbalance_theory",
    "kind_arguments",
    "minority_collapse_threshold",
]

KINDS = {"mixup, sample pairing": "sample", "mixup, class pairing": "class",
         "plain training": "plain"}
"""The three ways of training the theory compares: the label of each and its ``kind``."""


def kind_arguments(kind: str, lams) -> dict[str, Any]:
    """The ``lams`` and ``pairing`` of :func:`imbalance_theory` for a kind of :data:`KINDS`:
    plain training is the grid {1} (the partner then carries no weight), mixup the given grid."""
    if kind == "plain":
        return {"lams": [1.0], "pairing": "sample"}
    return {"lams": list(lams), "pairing": kind}

_NEWTON_STEPS = 200
_FEATURE_TOL = 1e-13
_OUTER_TOL = 1e-13
_ROUNDING_FLOOR = 1e-8
_TRUST_NEWTON = 1e-12
_LARGEST_RATIO = 1e30
_SNAP = 1e-12
_OUTER_STEPS = 100


@dataclass(frozen=True)
class ImbalanceTheory:
    """The exact optimum of the learned-classifier mixup UFM under step imbalance.

    Attributes
    ----------
    K, minority_classes, imbalance_ratio, lam_H, lam_W, lams, pairing, loss
        The problem (:func:`imbalance_theory`).
    eigenvalues : dict
        ``majority`` :math:`\\mu_A`, ``minority`` :math:`\\mu_B`, ``between``
        :math:`\\mu_0` (None for a group of one class, whose eigenspace is empty).
    norm2_majority, norm2_minority : float
        Squared row norms :math:`\\|w_a\\|^2` (a in A) and :math:`\\|w_b\\|^2` (b in B).
    majority_cosine, minority_cosine, cross_cosine : float or None
        Cosines between two distinct majority rows, two distinct minority rows (None with
        one minority class), a majority and a minority row; None where a row is zero (the
        minority rows vanish when their samples weigh too little, and all rows when the
        penalties are too large for any class to be worth separating).
    objective : float
        The minimum of the objective (loss and penalties, weights of mean 1).
    gradient_norm : float
        How far the returned eigenvalues are from optimal: the norm of the reduced gradient,
        with a non-negative derivative counted as 0 for an eigenvalue at 0.
    iterations : int
        Newton steps on the eigenvalues.
    """

    K: int
    minority_classes: int
    imbalance_ratio: float
    lam_H: float
    lam_W: float
    lams: tuple[float, ...]
    pairing: str
    loss: str
    eigenvalues: dict[str, float | None]
    norm2_majority: float
    norm2_minority: float
    majority_cosine: float | None
    minority_cosine: float | None
    cross_cosine: float | None
    objective: float
    gradient_norm: float
    iterations: int
    loss_params: dict[str, Any] = field(default_factory=dict)

    def gram(self) -> torch.Tensor:
        """The optimal Gram matrix :math:`G = WW^\\top` (K, K), float64."""
        proj = _projectors(self.K - self.minority_classes, self.minority_classes)
        mu = [v for v in (self.eigenvalues["majority"], self.eigenvalues["minority"],
                          self.eigenvalues["between"])]
        G = sum((m or 0.0) * P for m, P in zip(mu, proj))
        return torch.as_tensor(G, dtype=torch.float64)

    def classifier(self, d: int | None = None) -> torch.Tensor:
        """An optimal classifier W (K, d) with :math:`WW^\\top` = :meth:`gram` (its symmetric
        square root padded with zero columns; any rotation :math:`WU` is optimal too).
        ``d`` >= K - 1 (default K)."""
        d = self.K if d is None else check_int("d", d, self.K - 1)
        values, vectors = torch.linalg.eigh(self.gram())
        root = vectors * values.clamp(min=0).sqrt()
        root = root[:, values.argsort(descending=True)][:, : min(d, self.K)]
        return torch.cat([root, root.new_zeros(self.K, max(0, d - self.K))], dim=1)

    def as_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["lams"] = list(self.lams)
        out["imbalance_ratio"] = None if math.isinf(self.imbalance_ratio) else self.imbalance_ratio
        return out


def _projectors(k_A: int, k_B: int) -> list[np.ndarray]:
    """The (K, K) projectors of the three eigenspaces (for :meth:`gram`)."""
    K = k_A + k_B
    in_A = np.r_[np.ones(k_A), np.zeros(k_B)]
    in_B = 1.0 - in_A
    P_A = np.diag(in_A) - np.outer(in_A, in_A) / k_A
    P_B = np.diag(in_B) - np.outer(in_B, in_B) / k_B
    e = (k_B * in_A - k_A * in_B) / math.sqrt(k_A * k_B * K)
    return [P_A, P_B, np.outer(e, e)]


@dataclass(frozen=True)
class _SampleTypes:
    """The distinct samples: cells (sizes and groups), target mass per cell, logit shift per
    cell, and normalised weight, one row per (type, lam)."""

    sizes: np.ndarray  # (N, 4) cell sizes (0 for an absent cell)
    in_A: np.ndarray  # (N, 4) 1.0 for a cell of majority classes
    target: np.ndarray  # (N, 4) total target mass of the cell
    shift: np.ndarray  # (N, 4) logit shift of the cell's classes
    weight: np.ndarray  # (N,) weights summing to 1
    Q: np.ndarray  # (3, N, 4, 4) cell forms of the three projectors


def _sample_types(k_A: int, k_B: int, ratio: float, lams: np.ndarray, pairing: str,
                  scale: float, uniform: float, shifts: tuple[float, float]) -> _SampleTypes:
    size = {"A": 1.0, "B": 0.0 if math.isinf(ratio) else 1.0 / ratio}
    count = {"A": k_A, "B": k_B}
    rows = []
    for X in "AB":
        for Y in "AB":
            raw = size[X] * (size[Y] if pairing == "sample" else 1.0)
            for same in (True, False):
                if same and X != Y:
                    continue
                n_pairs = count[X] if same else count[X] * (count[Y] - (X == Y))
                if n_pairs == 0:
                    continue
                for lam in lams:
                    rows.append(_cells(X, Y, same, lam, k_A, k_B) + (n_pairs * raw,))
    return _assemble(rows, k_A, k_B, scale, uniform, shifts)


def _assemble(rows: list, k_A: int, k_B: int, scale: float, uniform: float,
              shifts: tuple[float, float]) -> _SampleTypes:
    """The sample types of ``rows``, each (cell sizes, groups, target masses, weight) of
    :func:`_cells` with its weight; rows of weight 0 are left out."""
    K = k_A + k_B
    sizes = np.array([r[0] for r in rows], dtype=np.float64)
    groups = np.array([r[1] for r in rows], dtype=np.float64)
    mass = np.array([r[2] for r in rows], dtype=np.float64)
    weight = np.array([r[3] for r in rows], dtype=np.float64)
    keep = weight > 0  # samples of vanishing classes (imbalance_ratio = inf) drop out
    sizes, groups, mass, weight = sizes[keep], groups[keep], mass[keep], weight[keep]
    total = weight.sum()
    if not total > 0:
        raise ValueError("the imbalance leaves no sample with positive weight")
    target = scale * mass + uniform * sizes / K
    shift = np.where(groups == 1.0, shifts[0], shifts[1]) * (sizes > 0)
    a, b = groups * sizes, (1.0 - groups) * sizes
    Q_A = _centred_form(a, k_A)
    Q_B = _centred_form(b, k_B)
    e = (k_B * a - k_A * b) / math.sqrt(k_A * k_B * K)
    Q_0 = e[:, :, None] * e[:, None, :]
    return _SampleTypes(sizes, groups, target, shift, weight / total, np.stack([Q_A, Q_B, Q_0]))


def _centred_form(counts: np.ndarray, k: int) -> np.ndarray:
    r""":math:`S^\top P S` for the projector P onto zero-sum vectors of a group of k classes,
    ``counts`` (N, 4) the number of the group's classes in each cell."""
    return np.einsum("nj,jl->njl", counts, np.eye(4)) - counts[:, :, None] * counts[:, None, :] / k


def _cells(X: str, Y: str, same: bool, lam: float, k_A: int, k_B: int):
    """Cell sizes, groups (1 = majority) and target masses of one sample type: the classes
    c, c' (if distinct and both weighted), the rest of A, the rest of B. At lam = 1 (lam = 0)
    a pair of distinct classes has the target of c (c') alone, and c' (c) is one more class
    of its group's rest: its logit equals theirs at the optimum."""
    if not same and lam in (0.0, 1.0):
        X, same = (X if lam == 1.0 else Y), True
    taken = {"A": 0, "B": 0}
    taken[X] += 1
    if not same:
        taken[Y] += 1
    if same:
        sizes = [1, 0, k_A - taken["A"], k_B - taken["B"]]
        mass = [1.0, 0.0, 0.0, 0.0]
    else:
        sizes = [1, 1, k_A - taken["A"], k_B - taken["B"]]
        mass = [lam, 1.0 - lam, 0.0, 0.0]
    groups = [float(X == "A"), float(Y == "A"), 1.0, 0.0]
    return sizes, groups, mass


def check_imbalance_problem(K, minority_classes, imbalance_ratio, lam_H, lam_W, lams, pairing,
                            loss, loss_params):
    """The inputs of :func:`imbalance_theory` validated (a ValueError naming the value and
    its allowed range otherwise), with the loss's target scale, uniform mass and per-group
    logit shifts."""
    K = check_int("K", K, 2)
    k_B = check_int("minority_classes", minority_classes, 1, K - 1)
    if isinstance(imbalance_ratio, (int, float)) and imbalance_ratio == math.inf:
        ratio = math.inf
    else:
        ratio = check_float("imbalance_ratio", imbalance_ratio, 1.0, None)
    lam_H = check_float("lam_H", lam_H, 0.0, None, low_open=True)
    lam_W = check_float("lam_W", lam_W, 0.0, None, low_open=True)
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    lams = np.atleast_1d(np.asarray(lams if lams is not None else np.linspace(0, 1, 21),
                                    dtype=np.float64))
    if lams.ndim != 1 or lams.size == 0 or not np.all((lams >= 0) & (lams <= 1)):
        raise ValueError(f"lams must be a non-empty list of numbers in [0, 1], got {lams.tolist()}")
    from ..losses import get_loss

    # the class sizes a loss may read its priors from; vanishing minorities as a tiny size
    sizes = class_sizes(K, min(ratio, 1e300), k_B)
    made = get_loss(loss, **dict(loss_params or {})).for_classes(sizes)
    target = made.softmax_target(K, torch.float64)
    if not made.shift_invariant or target is None:
        raise ValueError(f"the imbalance theory needs a softmax-family loss; loss {loss!r} is not")
    shifts = (0.0, 0.0)
    if target.shift is not None:
        shift = target.shift.to(torch.float64)
        first_A, first_B = float(shift[0]), float(shift[-1])
        if not (torch.all(shift[: K - k_B] == first_A) and torch.all(shift[K - k_B:] == first_B)):
            raise ValueError(f"loss {loss!r} shifts the logits of one group unequally; the "
                             "imbalance theory needs a shift constant within each group")
        shifts = (first_A, first_B)
        if math.isinf(ratio) and first_A != first_B:
            raise ValueError(f"loss {loss!r} shifts the logits by the class frequencies, and a "
                             "minority frequency of 0 has no finite shift: give a finite "
                             "imbalance_ratio")
    return K, k_B, ratio, lam_H, lam_W, lams, float(target.scale), float(target.uniform), shifts


def imbalance_theory(K: int, minority_classes: int, imbalance_ratio: float,
                     lam_H: float = 5e-3, lam_W: float = 5e-3, lams=None, pairing: str = "sample",
                     loss: str = "ce", loss_params: dict[str, Any] | None = None,
                     ) -> ImbalanceTheory:
    r"""The exact optimum of the learned-classifier mixup UFM under step imbalance.

    Parameters
    ----------
    K : int
        Number of classes, >= 2.
    minority_classes : int
        :math:`k_B`, the number of minority classes (the last ones), in [1, K - 1].
    imbalance_ratio : float
        :math:`\rho \ge 1`: majority samples per minority sample; ``math.inf`` for the
        limit of vanishing minorities.
    lam_H, lam_W : float
        Feature and classifier penalties, > 0.
    lams : sequence of float, optional
        The grid of :math:`\lambda` in [0, 1] every ordered class pair is mixed at (default
        21 equally spaced points, as :class:`ufm.UFMConfig`); ``[1.0]`` is plain training.
    pairing : {"sample", "class"}
        "sample": both partners from the imbalanced set (weight :math:`n_c n_{c'}`);
        "class": the partner class uniform (weight :math:`n_c`).
    loss : str
        A softmax-family loss ("ce", "ls", "logit_adjusted"), with ``loss_params``.

    Returns
    -------
    ImbalanceTheory
        The three eigenvalues of :math:`G = WW^\top`, the row norms and cosines, the
        objective; :meth:`ImbalanceTheory.gram` and :meth:`ImbalanceTheory.classifier` give
        the optimal G and one optimal W. It is the learned solver's optimum for any
        :math:`d \ge K - 1` (docs/theory.md section 13).

    Raises
    ------
    ValueError
        For K < 2, minority_classes outside [1, K - 1], :math:`\rho < 1`, a non-positive
        penalty, lams outside [0, 1], an unknown pairing, or a loss outside the softmax
        family, before any work.

    Examples
    --------
    >>> import ufm
    >>> balanced = ufm.imbalance_theory(4, 2, 1.0, lams=[0.0, 0.5, 1.0])
    >>> round(balanced.minority_cosine, 12)
    -0.333333333333
    >>> ufm.imbalance_theory(4, 2, 100.0, lams=[i / 10 for i in range(11)]).minority_cosine > 0.7
    True
    """
    K, k_B, ratio, lam_H, lam_W, lam_grid, scale, uniform, shifts = check_imbalance_problem(
        K, minority_classes, imbalance_ratio, lam_H, lam_W, lams, pairing, loss, loss_params)
    k_A = K - k_B
    types = _sample_types(k_A, k_B, ratio, lam_grid, pairing, scale, uniform, shifts)
    dims = np.array([k_A - 1, k_B - 1, 1], dtype=np.float64)
    # An eigenspace no sample's logits can reach (the minority differences once minority
    # samples vanish) gets eigenvalue 0: its penalty would be paid for nothing.
    active = (dims > 0) & np.abs(types.Q).reshape(3, -1).any(axis=1)
    mu, state, iterations, grad = _solve_eigenvalues(types, dims, active, lam_H, lam_W)
    objective = state["F"]
    mu_A, mu_B, mu_0 = (float(v) for v in mu)
    norm2_A = mu_A * (1 - 1 / k_A) + mu_0 * k_B / (k_A * K)
    norm2_B = mu_B * (1 - 1 / k_B) + mu_0 * k_A / (k_B * K)
    off_A = -mu_A / k_A + mu_0 * k_B / (k_A * K)
    off_B = -mu_B / k_B + mu_0 * k_A / (k_B * K)
    cross = -mu_0 / K
    return ImbalanceTheory(
        K=K, minority_classes=k_B, imbalance_ratio=ratio, lam_H=lam_H, lam_W=lam_W,
        lams=tuple(float(v) for v in lam_grid), pairing=pairing, loss=loss,
        eigenvalues={"majority": mu_A if k_A > 1 else None, "minority": mu_B if k_B > 1 else None,
                     "between": mu_0},
        norm2_majority=norm2_A, norm2_minority=norm2_B,
        majority_cosine=off_A / norm2_A if k_A > 1 and norm2_A > 0 else None,
        minority_cosine=off_B / norm2_B if k_B > 1 and norm2_B > 0 else None,
        cross_cosine=cross / math.sqrt(norm2_A * norm2_B) if norm2_A * norm2_B > 0 else None,
        objective=objective, gradient_norm=grad, iterations=iterations,
        loss_params=dict(loss_params or {}),
    )


CELL_GROUPS = ("majority_majority", "minority_majority", "minority_minority")
"""The groups of different-class cells (c, c') by how many of c, c' are minorities: 0, 1, 2."""


@dataclass(frozen=True)
class CellAmplification:
    r"""The optimum's features at :math:`\lambda = 1/2` per group of cells, read as a network's
    are (:func:`cell_amplification`).

    Attributes
    ----------
    a_same : dict
        ``majority``, ``minority``: the coefficient :math:`a_\text{same}` of a clean sample's
        centred feature on its own row.
    coefficients : dict
        Per group of :data:`CELL_GROUPS`, (a, b): the coefficients of a different-class
        sample's centred feature on the rows of its classes (c the majority one in the
        minority-majority group).
    amplification : dict
        Per group, :math:`(a + b)/\bar a_\text{same}`, the normaliser the mean over the
        same-class cells of the group's classes (:math:`(k_A a_A + k_B a_B)/K` for
        minority-majority); None where a group has no cell (one class in a group) or a row
        of its classes is zero.
    """

    a_same: dict[str, float | None]
    coefficients: dict[str, tuple[float, float] | None]
    amplification: dict[str, float | None]


def cell_amplification(theory: ImbalanceTheory) -> CellAmplification:
    r"""The amplification of the exact optimum's cells per group, defined as the networks'
    is measured (:mod:`ufm.nets.cell_groups`).

    At the optimum of ``theory`` (its G), each sample type's feature is the least-norm h with
    :math:`Wh = z`, z its optimal logits (the per-sample problem of step 1 of the module
    docstring at :math:`\lambda = 1/2`); as the measurement does with a network's features,
    it is centred by the mean over the classes of the clean features, and its coefficients
    are the least-squares ones on the rows of its classes:
    :math:`(a, b) = G_{cc'}^{+}\,(P(z - \bar z))_{c,c'}` with :math:`G_{cc'}` the 2 x 2 block
    of G, P the projector onto its range and :math:`\bar z` the clean logits' class mean
    (a same-class sample: :math:`a = (P(z - \bar z))_c/G_{cc}`). By the symmetry within the
    groups every cell of a group has the same numbers.

    Parameters
    ----------
    theory : ImbalanceTheory
        A solved problem (:func:`imbalance_theory`) of mixup (a lam strictly between 0
        and 1 in its grid) at a finite imbalance ratio.

    Returns
    -------
    CellAmplification
        ``a_same``, ``coefficients`` and ``amplification`` per group.

    Raises
    ------
    ValueError
        For plain training (no mixed sample is trained, so the UFM gives a mixed sample no
        feature) or ``imbalance_ratio = inf`` (no minority sample is trained).

    Examples
    --------
    Balanced, the three groups are one simplex ETF, and their amplification is the balanced
    optimum's :math:`(a + b)(1/2)/a_\text{same}`:

    >>> import ufm
    >>> from ufm.theory.minority import cell_amplification
    >>> found = cell_amplification(ufm.imbalance_theory(4, 2, 1.0, lams=[0.0, 0.5, 1.0]))
    >>> values = list(found.amplification.values())
    >>> max(values) - min(values) < 1e-9, round(values[0], 6) > 1
    (True, True)
    """
    K, k_B = theory.K, theory.minority_classes
    lams = np.asarray(theory.lams, dtype=np.float64)
    if not np.any((lams > 0) & (lams < 1)):
        raise ValueError("plain training (no lam strictly between 0 and 1) trains no mixed "
                         "sample: the UFM gives a mixed sample no feature to measure")
    if math.isinf(theory.imbalance_ratio):
        raise ValueError("at imbalance_ratio = inf no minority sample is trained: the UFM "
                         "gives it no feature to measure")
    _, _, _, lam_H, _, _, scale, uniform, shifts = check_imbalance_problem(
        K, k_B, theory.imbalance_ratio, theory.lam_H, theory.lam_W, theory.lams,
        theory.pairing, theory.loss, theory.loss_params)
    k_A = K - k_B
    size = {"A": k_A, "B": k_B}
    kinds = [("A", "A", True), ("B", "B", True), ("A", "A", False), ("A", "B", False),
             ("B", "B", False)]
    kinds = [(X, Y, same) for X, Y, same in kinds if same or X != Y or size[X] > 1]
    types = _assemble([_cells(X, Y, same, 0.5, k_A, k_B) + (1.0,) for X, Y, same in kinds],
                      k_A, k_B, scale, uniform, shifts)
    mu = np.array([theory.eigenvalues[key] or 0.0 for key in ("majority", "minority",
                                                                "between")])
    dims = np.array([k_A - 1, k_B - 1, 1])
    zeta = _feature_optima(types, mu, mu > 0, (mu == 0) & (dims > 0), lam_H)
    first = {"A": 0, "B": k_A}
    optimal = dict(zip(kinds, zeta))
    logits = {}  # per kind: one sample of it (c, c') and its logits (K,)
    for X, Y, same in kinds:
        c = first[X]
        c_prime = c if same else first[Y] + (X == Y)
        logits[X, Y, same] = (c, c_prime, _class_logits(optimal[X, Y, same], c, c_prime, k_A, K))
    # the mean over the classes of the clean logits (every class's own clean sample)
    mean = np.mean([_class_logits(optimal[X, X, True], c, c, k_A, K)
                    for X in "AB" for c in range(first[X], first[X] + size[X])], axis=0)
    G = theory.gram().numpy()
    centred = {key: G @ np.linalg.pinv(G, hermitian=True) @ (z - mean)
               for key, (_, _, z) in logits.items()}
    a_same, coefficients, amplification = {}, {}, {}
    for X, name in (("A", "majority"), ("B", "minority")):
        c = first[X]
        a_same[name] = float(centred[X, X, True][c] / G[c, c]) if G[c, c] > 0 else None
    for (X, Y), name in zip((("A", "A"), ("A", "B"), ("B", "B")), CELL_GROUPS):
        c, c_prime, _ = logits.get((X, Y, False), (None, None, None))
        if c is None:
            coefficients[name] = amplification[name] = None
            continue
        block = G[np.ix_([c, c_prime], [c, c_prime])]
        a, b = np.linalg.pinv(block, hermitian=True) @ centred[X, Y, False][[c, c_prime]]
        coefficients[name] = (float(a), float(b))
        ends = [a_same["majority" if g == "A" else "minority"] for g in (X, Y)]
        if None in ends or G[c, c] == 0 or G[c_prime, c_prime] == 0:
            amplification[name] = None
            continue
        normaliser = ends[0] if X == Y else (k_A * ends[0] + k_B * ends[1]) / K
        amplification[name] = float((a + b) / normaliser)
    return CellAmplification(a_same, coefficients, amplification)


def _class_logits(cells: np.ndarray, c: int, c_prime: int, k_A: int, K: int) -> np.ndarray:
    """The logits (K,) of a sample of classes c, c' from its four cell logits (c, c', the
    rest of A, the rest of B)."""
    z = np.where(np.arange(K) < k_A, cells[2], cells[3])
    z[c_prime], z[c] = cells[1], cells[0]
    return z


def _loss_terms(types: _SampleTypes, zeta: np.ndarray):
    """Per-sample cell-form loss values, gradients and Hessians (softmax family)."""
    z = zeta + types.shift
    with np.errstate(divide="ignore"):
        log_sizes = np.where(types.sizes > 0, np.log(np.where(types.sizes > 0, types.sizes, 1)),
                             -np.inf)
    a = z + log_sizes
    top = a.max(axis=1, keepdims=True)
    e = np.exp(a - top)
    total = e.sum(axis=1, keepdims=True)
    lse = (top + np.log(total))[:, 0]
    p = e / total
    value = lse - (types.target * z).sum(axis=1)
    grad = p - types.target
    hess = np.einsum("nj,jl->njl", p, np.eye(4)) - p[:, :, None] * p[:, None, :]
    return value, grad, hess


def _penalty_form(types: _SampleTypes, mu: np.ndarray, free: np.ndarray) -> np.ndarray:
    r""":math:`\sum_i Q_i/\mu_i` (N, 4, 4) over the eigenspaces of positive eigenvalue."""
    return sum((types.Q[i] / mu[i] for i in range(3) if free[i]), np.zeros_like(types.Q[0]))


def _null_projector(types: _SampleTypes, bound: np.ndarray) -> np.ndarray:
    r"""Per sample, the projector (N, 4, 4) onto cell logits with no component in the
    eigenspaces of eigenvalue 0 (``bound``): the logits :math:`z = Wh` lie in the range of G."""
    eye = np.broadcast_to(np.eye(4), types.Q[0].shape)
    if not bound.any():
        return eye.copy()
    Q = sum(types.Q[i] for i in range(3) if bound[i])
    values, vectors = np.linalg.eigh(Q)
    keep = values <= 1e-12 * np.maximum(1.0, np.abs(values).max(axis=1, keepdims=True))
    return np.einsum("njk,nk,nlk->njl", vectors, keep.astype(np.float64), vectors)


def _feature_optima(types: _SampleTypes, mu: np.ndarray, free: np.ndarray, bound: np.ndarray,
                    lam_H: float, zeta: np.ndarray | None = None):
    """Each sample's optimal cell logits by Newton's method with backtracking, within the
    range of G (the problem is strictly convex there once the common shift and absent cells
    are pinned)."""
    M = lam_H * _penalty_form(types, mu, free)
    # A common shift of the logits changes neither the loss nor the penalty; pin it (and
    # each absent cell) with a term that leaves the optimum's value unchanged.
    pin = types.sizes[:, :, None] * types.sizes[:, None, :] / types.sizes.sum(1)[:, None, None] ** 2
    pin = pin + np.einsum("nj,jl->njl", (types.sizes == 0).astype(np.float64), np.eye(4))
    R = _null_projector(types, bound)
    outside = np.eye(4) - R
    zeta = np.zeros_like(types.sizes) if zeta is None else np.einsum("njl,nl->nj", R, zeta)

    def objective(x):
        value, _, _ = _loss_terms(types, x)
        return value + 0.5 * np.einsum("nj,njl,nl->n", x, M + pin, x)

    def projected_hessian(hess):
        return np.einsum("njk,nkm,nml->njl", R, hess + M + pin, R) + outside

    for _ in range(_NEWTON_STEPS):
        value, grad, hess = _loss_terms(types, zeta)
        g = np.einsum("njl,nl->nj", R, grad + np.einsum("njl,nl->nj", M + pin, zeta))
        step = -np.linalg.solve(projected_hessian(hess), g[:, :, None])[:, :, 0]
        size = np.max(np.abs(step) / (1 + np.abs(zeta)), axis=1)
        if size.max() < _FEATURE_TOL:
            zeta = zeta + step  # within rounding of the optimum: a last full step
            break
        f0 = value + 0.5 * np.einsum("nj,njl,nl->n", zeta, M + pin, zeta)
        slope = np.einsum("nj,nj->n", g, step)
        t = np.ones(len(zeta))
        for _ in range(60):
            slack = 1e-4 * t * slope + 8 * np.finfo(np.float64).eps * (np.abs(f0) + 1)
            bad = objective(zeta + t[:, None] * step) > f0 + slack
            bad &= size * t > _FEATURE_TOL  # a step below rounding is taken as it is
            if not bad.any():
                break
            t = np.where(bad, t / 2, t)
        zeta = zeta + t[:, None] * step
    return zeta


def _energies(types: _SampleTypes, zeta: np.ndarray) -> np.ndarray:
    r""":math:`E_i = \sum_s \bar\omega_s \zeta_s^\top Q_i \zeta_s` for the three eigenspaces."""
    return np.einsum("n,nj,injl,nl->i", types.weight, zeta, types.Q, zeta)


class _EigenvalueProblem:
    """The reduced objective in the three eigenvalues, convex on :math:`\\mu \\ge 0`; an
    eigenvalue of 0 (an exactly collapsed group) constrains the logits to the range of G."""

    def __init__(self, types: _SampleTypes, dims: np.ndarray, active: np.ndarray,
                 lam_H: float, lam_W: float):
        self.types, self.dims, self.active = types, dims, active
        self.lam_H, self.lam_W = lam_H, lam_W
        sizes = np.where(types.sizes > 0, types.sizes, 1.0)
        self.inverse_sizes = 1.0 / sizes

    def evaluate(self, mu: np.ndarray, zeta=None) -> dict[str, Any]:
        r"""Objective, feature optima, gradient and Hessian in the active eigenvalues.

        Both come from the per-class logit gradient :math:`\nabla\ell` at the feature
        optima, with no :math:`1/\mu` in them, so they hold at :math:`\mu_i = 0` too:
        :math:`\partial F/\partial\mu_i = \frac{\lambda_W}2 d_i - \frac{1}{2\lambda_H}
        \sum_s \bar\omega_s \|\Pi_i\nabla\ell_s\|^2` (at an interior optimum of the
        features :math:`\Pi_i z = -\mu_i\Pi_i\nabla\ell/\lambda_H`, so this is the
        envelope derivative, and at 0 its right derivative), and differentiating
        :math:`z = -G\nabla\ell(z)/\lambda_H` gives :math:`dz/d\mu_j =
        -(\lambda_H I + G\nabla^2\ell)^{-1}\Pi_j\nabla\ell`, hence the Hessian
        :math:`\frac{1}{\lambda_H}\sum_s\bar\omega_s (\Pi_i\nabla\ell)^\top
        \nabla^2\ell\,(\lambda_H I + G\nabla^2\ell)^{-1}\Pi_j\nabla\ell`, all in the
        four cell coordinates (a class of cell j carries :math:`1/n_j` of its cell's
        gradient)."""
        types, lam_H, index = self.types, self.lam_H, np.flatnonzero(self.active)
        free = self.active & (mu > 0)
        zeta = _feature_optima(types, mu, free, self.active & ~free, lam_H, zeta)
        value, residual, cell_hessian = _loss_terms(types, zeta)
        penalty = 0.5 * lam_H * np.einsum("nj,njl,nl->n", zeta, _penalty_form(types, mu, free),
                                          zeta)
        F = float(types.weight @ (value + penalty)) + 0.5 * self.lam_W * float(
            self.dims[free] @ mu[free])
        per_class = residual * self.inverse_sizes  # (p_j - T_j) / n_j: 0 in an absent cell
        # Pi_i grad in cell coordinates, N^-1 Q_i gamma, and the energies |Pi_i grad|^2
        projected = np.einsum("nj,injl,nl->inj", self.inverse_sizes, types.Q[index], per_class)
        energies = np.einsum("n,nj,injl,nl->i", types.weight, per_class, types.Q[index], per_class)
        grad = 0.5 * self.lam_W * self.dims[index] - 0.5 * energies / lam_H
        # Where mu_i > 0 the same derivative from the logits themselves, lam_H E_i / mu_i^2,
        # is the more precise: p - T loses digits where p is close to its target.
        positive = mu[index] > 1e-6 * mu.max()
        logit_energies = _energies(types, zeta)[index]
        grad[positive] = 0.5 * self.lam_W * self.dims[index][positive] - 0.5 * lam_H * (
            logit_energies[positive] / mu[index][positive] ** 2)
        gram = sum((mu[i] * self.inverse_sizes[:, :, None] * types.Q[i] for i in index
                    if mu[i] > 0), np.zeros_like(types.Q[0]))
        system = lam_H * np.eye(4) + gram @ (self.inverse_sizes[:, :, None] * cell_hessian)
        response = np.linalg.solve(system[None], projected[..., None])[..., 0]
        hess = np.einsum("n,inj,njl,knl->ik", types.weight, projected, cell_hessian,
                         response) / lam_H
        return {"F": F, "zeta": zeta, "grad": grad, "hess": 0.5 * (hess + hess.T)}


def _solve_eigenvalues(types, dims, active, lam_H, lam_W):
    """Projected Newton's method on the active eigenvalues over :math:`\\mu \\ge 0` (the
    reduced objective is convex there), started from the balance fixed point of the simplex
    ETF; exact gradient and Hessian (:meth:`_EigenvalueProblem.evaluate`)."""
    problem = _EigenvalueProblem(types, dims, active, lam_H, lam_W)
    index = np.flatnonzero(active)
    mu = np.where(active, 1.0, 0.0)
    zeta = None
    for _ in range(3):  # balance steps mu_i = sqrt(lam_H E_i / (lam_W d_i)) to start
        zeta = _feature_optima(types, mu, active, active & False, lam_H, zeta)
        E = _energies(types, zeta)
        mu[active] = np.sqrt(np.maximum(lam_H * E[active] / (lam_W * dims[active]), 1e-300))
    state = problem.evaluate(mu, zeta)
    scale = 0.5 * lam_W * float(dims[index].max())  # the size of the gradient's two terms
    violation = math.inf
    for iterations in range(1, _OUTER_STEPS + 1):
        x, g = mu[index], state["grad"]
        at_zero = (x == 0) & (g >= -_OUTER_TOL * scale)  # optimal at the bound: stays there
        previous, violation = violation, float(np.linalg.norm(np.where(x > 0, g, np.minimum(g, 0.0))))
        if violation <= _OUTER_TOL * scale:
            break
        if violation <= _ROUNDING_FLOOR * scale and violation > 0.5 * previous:
            break  # Newton no longer gains: the gradient is at its rounding floor
        move = ~at_zero
        step = np.zeros_like(x)
        step[move] = _descent_step(state["hess"][np.ix_(move, move)], g[move])
        predicted = -float(g @ step)
        t = 1.0
        while True:
            trial = mu.copy()
            moved = x + t * step
            # an eigenvalue this far below the largest is 0 to working precision (its 1/mu
            # would swamp the feature problems): set it to 0, where the bound handles it
            trial[index] = np.where(moved > _SNAP * moved.max(), moved, 0.0)
            if predicted < _TRUST_NEWTON * max(abs(state["F"]), scale):
                # below what F can resolve: in the region of quadratic convergence, the full
                # (projected) step is taken without a line search
                state, mu = problem.evaluate(trial, state["zeta"]), trial
                break
            candidate = problem.evaluate(trial, state["zeta"])
            decrease = float(g @ (trial[index] - x))
            if candidate["F"] <= state["F"] + 1e-4 * decrease + 8 * np.finfo(float).eps * abs(
                    state["F"]):
                state, mu = candidate, trial
                break
            if t < 1e-12:
                if violation <= _ROUNDING_FLOOR * scale:
                    return mu, state, iterations, violation
                raise RuntimeError("the imbalance theory's Newton iteration stalled at "
                                   f"eigenvalues {mu.tolist()} (optimality {violation:.3g})")
            t /= 2
    else:
        if violation > _ROUNDING_FLOOR * scale:
            raise RuntimeError(f"the imbalance theory's Newton iteration did not converge in "
                               f"{_OUTER_STEPS} steps (optimality {violation:.3g})")
    return mu, state, iterations, violation


def _descent_step(hess: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """The Newton step, with the Hessian shifted until positive definite."""
    shift = 0.0
    scale = float(np.abs(np.diag(hess)).max()) or 1.0
    while True:
        try:
            factor = np.linalg.cholesky(hess + shift * np.eye(len(grad)))
            break
        except np.linalg.LinAlgError:
            shift = max(2 * shift, 1e-12 * scale)
    return -np.linalg.solve(factor.T, np.linalg.solve(factor, grad))


@dataclass(frozen=True)
class MinorityThreshold:
    """Where the minority rows start to align: the imbalance ratio at which the minority
    cosine crosses 0 (None if it stays below 0 up to the limit), its limit as
    :math:`\\rho \\to \\infty`, and the ratio from which the minority rows are exactly equal
    (eigenvalue :math:`\\mu_B = 0`; None if they never are)."""

    threshold: float | None
    limit_cosine: float | None
    balanced_cosine: float
    exact_collapse: float | None = None


def minority_collapse_threshold(K: int, minority_classes: int, lam_H: float = 5e-3,
                                lam_W: float = 5e-3, lams=None, pairing: str = "sample",
                                loss: str = "ce", loss_params: dict[str, Any] | None = None,
                                xtol: float = 1e-12) -> MinorityThreshold:
    r"""The imbalance ratio :math:`\rho^*` at which the minority cosine of
    :func:`imbalance_theory` crosses 0, and the cosine's limit as :math:`\rho \to \infty`.

    The cosine is :math:`-1/(K-1)` at :math:`\rho = 1`; :math:`\rho^*` is found by Brent's
    method on :math:`\log\rho` (the cosine is continuous in :math:`\rho`; were it not
    monotone, the root found would be one crossing).

    Parameters
    ----------
    K, minority_classes, lam_H, lam_W, lams, pairing, loss, loss_params
        As for :func:`imbalance_theory`; ``minority_classes`` in [2, K - 1] (a cosine needs
        two minority rows).
    xtol : float
        Absolute tolerance on :math:`\log\rho^*`.

    Returns
    -------
    MinorityThreshold
        ``threshold`` (None when the cosine stays <= 0 up to the limit), ``limit_cosine``
        (at ``imbalance_ratio = inf``; None if the minority rows vanish there),
        ``balanced_cosine``, and ``exact_collapse``: the ratio from which the minority rows
        are exactly equal (None if they never are), to relative precision ``xtol``.

    Examples
    --------
    >>> import ufm
    >>> found = ufm.minority_collapse_threshold(4, 2, lams=[i / 10 for i in range(11)])
    >>> 1 < found.threshold < 10, found.limit_cosine
    (True, 1.0)
    """
    from scipy.optimize import brentq

    K = check_int("K", K, 3)
    check_int("minority_classes", minority_classes, 2, K - 1)

    def cosine(ratio):
        return imbalance_theory(K, minority_classes, ratio, lam_H, lam_W, lams, pairing, loss,
                                loss_params).minority_cosine

    def aligned(ratio):  # rows that have vanished count as collapsed
        value = cosine(ratio)
        return 1.0 if value is None else value

    start, limit = cosine(1.0), cosine(math.inf)
    exact = exact_collapse_ratio(K, minority_classes, lam_H, lam_W, lams, pairing, loss,
                                 loss_params)
    if limit is not None and limit <= 0:
        return MinorityThreshold(None, limit, start, exact)
    high = 2.0
    while aligned(high) <= 0:
        high *= 4
        if high > _LARGEST_RATIO:
            return MinorityThreshold(None, limit, start, exact)
    root = brentq(lambda t: aligned(math.exp(t)), 0.0, math.log(high), xtol=xtol, rtol=1e-14)
    return MinorityThreshold(math.exp(root), limit, start, exact)


def exact_collapse_ratio(K: int, minority_classes: int, lam_H: float = 5e-3,
                         lam_W: float = 5e-3, lams=None, pairing: str = "sample",
                         loss: str = "ce", loss_params: dict[str, Any] | None = None,
                         ) -> float | None:
    r"""The imbalance ratio from which the optimal minority rows are exactly equal, in
    closed form (docs/theory.md section 13).

    At :math:`\mu_B = 0` every minority class has the same logit, so the softmax puts equal
    mass on them and :math:`\Pi_B\nabla\ell_s = -s\,\Pi_B y_s` (s the loss's target scale)
    whatever the other eigenvalues: the right derivative of the objective in :math:`\mu_B`
    there is :math:`\frac{\lambda_W}{2}(k_B - 1) - \frac{s^2}{2\lambda_H}\sum_s
    \bar\omega_s \|\Pi_B y_s\|^2`, with :math:`\|\Pi_B y\|^2 = \|y_B\|^2 -
    (\mathbf 1^\top y_B)^2/k_B` for the target's minority part :math:`y_B`. The rows are equal
    exactly when it is >= 0,

    .. math:: \lambda_H\lambda_W (k_B - 1) \ge s^2 \sum_s \bar\omega_s(\rho)
              \|\Pi_B y_s\|^2 ,

    and the right side falls with :math:`\rho` as the minority samples lose weight; this
    returns the ratio where the two sides meet (1.0 if they already do at balance, None if
    they never do, as with class pairing, whose minority partners keep their weight). For
    plain training it is :math:`\rho_c = (1/(\lambda_H\lambda_W) - k_B)/k_A`.

    Examples
    --------
    >>> import ufm.theory.minority as minority
    >>> round(minority.exact_collapse_ratio(10, 5, 5e-3, 5e-3, lams=[1.0]), 9)  # (40000 - 5)/5
    7999.0
    """
    from scipy.optimize import brentq

    K, k_B, _, lam_H, lam_W, lam_grid, scale, _, _ = check_imbalance_problem(
        K, minority_classes, 1.0, lam_H, lam_W, lams, pairing, loss, loss_params)
    if k_B < 2:
        return None
    left = lam_H * lam_W * (k_B - 1)

    def excess(log_ratio):  # right side minus left side: > 0 while the rows stay apart
        ratio = math.inf if log_ratio == math.inf else math.exp(log_ratio)
        types = _sample_types(K - k_B, k_B, ratio, lam_grid, pairing, scale, 0.0, (0.0, 0.0))
        minority_mass = types.target * (1.0 - types.in_A)  # y_B per cell (cells of B classes)
        spread = (minority_mass ** 2 / np.where(types.sizes > 0, types.sizes, 1.0)).sum(1) - (
            minority_mass.sum(1) ** 2 / k_B)
        return float(types.weight @ spread) - left

    if excess(0.0) <= 0:
        return 1.0
    if excess(math.inf) > 0:
        return None
    high = math.log(2.0)
    while excess(high) > 0:
        high += math.log(4.0)
    return math.exp(brentq(excess, 0.0, high, xtol=1e-14, rtol=1e-15))
