r"""Exact optimal features for mixtures of m classes with a fixed simplex-ETF classifier.

A mixed sample of :math:`m` distinct classes :math:`c_1,\dots,c_m` with weights
:math:`y_1,\dots,y_m` (:math:`y_k \ge 0`, :math:`\sum_k y_k = 1`; Dirichlet or multi-point
mixup) has the soft target :math:`y = \sum_k y_k e_{c_k}`. With a simplex ETF of row norm
:math:`s` (gain :math:`g = s^2K/(K-1)`, :math:`\sum_k w_k = 0`) and no bias, the per-sample
problem :math:`\min_h \ell(Wh; y) + \frac{\lambda_H}{2}\|h\|^2` (docs/theory.md section 1;
this module is its section 9) has a
unique solution, and:

* **cross-entropy**: stationarity :math:`\lambda_H h = W^\top(y - \operatorname{softmax}(Wh))`
  and symmetry among the :math:`K - m` other classes give :math:`h = \sum_k a_k w_{c_k}` with

  .. math:: \lambda_H a_k = y_k - \frac{e^{g a_k} - 1}{D}, \qquad
            D = \sum_{j=1}^m e^{g a_j} + K - m, \qquad k = 1..m,

  the pair equations of Fisher, Meng & Papyan ("Pushing Boundaries: Mixup's Influence on
  Neural Collapse", ICLR 2024, arXiv:2402.06171) for :math:`m = 2`. The gradient of the
  reduced objective is :math:`g(I_m - \mathbf 1\mathbf 1^\top/K)` times the residuals, whose
  determinant :math:`1 - m/K` is non-zero for :math:`m < K`. For :math:`m = K` the common
  shift of all :math:`a_k` leaves :math:`h` unchanged; the system above still has exactly one
  solution, which is returned, and only the features are meaningful. Equal weights give
  equal :math:`a_k`, hence equal logits: the feature lies on every decision boundary among
  its :math:`m` classes (and :math:`h = 0` for :math:`m = K`). Solved for all mixtures at once
  by :func:`ufm.theory.reduced_equations.solve_reduced_mixture`.
* **label smoothing** :math:`\varepsilon`: the target
  :math:`(1-\varepsilon)y + \varepsilon\mathbf 1/K` replaces :math:`y_k` by
  :math:`(1-\varepsilon)y_k` in the equations above.
* **squared error** :math:`\frac12\|z - y\|^2`: :math:`h = W^\top y/(g + \lambda_H)`, i.e.
  :math:`a_k = y_k/(g+\lambda_H)`, an exact convex combination of the class features.

Repeated classes in one mixture are merged (their weights added): the target is the same.
A class of weight 0 gets :math:`a_k = 0`, which solves its equation exactly and leaves
:math:`D` as it would be without the class, so zero weights simply drop their class.
Mixup of more than two points is studied by Chaudhry et al., "When does mixup promote local
linearity in learned representations?" (2022).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import SIMPLEX_SUM_TOL, check_float, check_int, check_simplex_rows
from ..etf import check_simplex_etf, gain, row_norm
from ..losses import CrossEntropy, LabelSmoothing, SquaredError, get_loss
from .reduced_equations import solve_reduced_mixture

__all__ = [
    "WEIGHT_SUM_TOL",
    "mixture_coefficients",
    "mixture_features",
    "mixture_target",
    "simplex_grid",
]

WEIGHT_SUM_TOL = SIMPLEX_SUM_TOL
r"""Allowed :math:`|\sum_k y_k - 1|`; weights within it are divided by their sum."""


def _as_numpy(name: str, values, dtype) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array of numbers, got {values!r}") from error
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name} must be an array of numbers, got dtype {array.dtype}")
    return array if dtype is None else array.astype(dtype, copy=False)


def _check_weights(weights, K: int) -> np.ndarray:
    """Validated weights (..., m) as float64, divided by their sums."""
    weights = _as_numpy("weights", weights, np.float64)
    if weights.ndim == 0:
        raise ValueError("weights must have shape (..., m) with m >= 1, got a scalar")
    m = weights.shape[-1]
    if m < 1 or m > K:
        raise ValueError(
            f"the number of classes per mixture m = weights.shape[-1] must lie in "
            f"[1, K={K}], got m={m}"
        )
    return check_simplex_rows("weights", weights)


def _check_classes(classes, K: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated int64 classes and the weights, both broadcast to one shape (..., m)."""
    raw = _as_numpy("classes", classes, None)
    if not np.issubdtype(raw.dtype, np.integer):
        whole = raw.dtype != bool and np.isfinite(raw).all() and (raw == np.round(raw)).all()
        if not whole:
            raise ValueError(f"classes must hold integer class indices, got dtype {raw.dtype}")
    classes = raw.astype(np.int64, copy=False)
    shape = None
    if classes.ndim and classes.shape[-1] == weights.shape[-1]:
        try:
            shape = np.broadcast_shapes(classes.shape, weights.shape)
        except ValueError:
            shape = None
    if shape is None:
        raise ValueError(
            f"classes of shape {tuple(classes.shape)} and weights of shape "
            f"{tuple(weights.shape)} disagree: both must be (..., m) with the same m and "
            "broadcastable leading axes"
        )
    if classes.size and (classes.min() < 0 or classes.max() > K - 1):
        bad = classes.min() if classes.min() < 0 else classes.max()
        raise ValueError(f"classes must lie in [0, {K - 1}], found {bad}")
    return np.broadcast_to(classes, shape), np.broadcast_to(weights, shape)


def _merge_repeated(classes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    r"""Weights with each repeated class's total moved to its first slot (0 elsewhere)."""
    m = classes.shape[-1]
    columns = [classes[..., k] for k in range(m)]
    if not any((columns[j] == columns[k]).any() for j in range(m) for k in range(j)):
        return weights
    same = classes[..., :, None] == classes[..., None, :]
    first = ~(same & np.tri(m, k=-1, dtype=bool)).any(axis=-1)  # no c_k == c_j with k < j
    totals = (same * weights[..., None, :]).sum(axis=-1)
    return np.where(first, totals, 0.0)


def _loss_kind(loss) -> tuple[str, float]:
    loss = get_loss(loss)
    if isinstance(loss, LabelSmoothing):
        return "ce", loss.eps
    if isinstance(loss, CrossEntropy):
        return "ce", 0.0
    if isinstance(loss, SquaredError):
        return "mse", 0.0
    raise ValueError(
        f"no exact theory for loss {loss.name!r}; exact theory exists for 'ce', "
        "'label_smoothing' and 'mse' (use ufm.theory.certificate.certify_targets otherwise)"
    )


def _coefficients(K: int, weights: np.ndarray, lam_H: float, g: float, kind: str, eps: float):
    if kind == "mse":
        return weights / (g + lam_H)
    x, _ = solve_reduced_mixture((1.0 - eps) * weights, eps / K, lam_H / g, K)
    return x / g


def mixture_coefficients(K: int, weights, lam_H: float, scale: float = 1.0, loss="ce"):
    r"""Coefficients :math:`a_k` of the optimal mixture feature :math:`h = \sum_k a_k w_{c_k}`.

    Solves :math:`\lambda_H a_k = (1-\varepsilon)y_k - (e^{ga_k}-1)/D`,
    :math:`D = \sum_j e^{ga_j} + K - m` for cross-entropy (:math:`\varepsilon = 0`) and label
    smoothing, or returns :math:`a_k = y_k/(g + \lambda_H)` for squared error (see the module
    docstring; Fisher, Meng & Papyan, ICLR 2024, for :math:`m = 2`). The classes are taken
    distinct (:func:`mixture_features` merges repeated ones). Accurate to a few units in the
    last place of the largest coefficient of each mixture; all mixtures are solved together
    by vectorised passes, so the cost grows linearly with their number.

    Parameters
    ----------
    K : number of classes, ``K >= 2``.
    weights : (..., m) weights :math:`y_k \ge 0` summing to 1 (to within
        :data:`WEIGHT_SUM_TOL`, then divided by their sum), ``1 <= m <= K``.
    lam_H : feature ridge :math:`\lambda_H > 0`.
    scale : row norm :math:`s > 0` of the simplex ETF.
    loss : "ce", "label_smoothing" (or a :class:`~ufm.losses.LabelSmoothing` instance), "mse".

    Returns
    -------
    numpy.ndarray
        (..., m) float64, the shape of ``weights``: :math:`a_k` for the k-th weight. For
        ``m = K`` the solution of the system above (all :math:`a_k \ge 0`); other
        representatives differ by a common shift.

    Examples
    --------
    The centroid of three classes weighs them alike; a pair given as two weights has the
    coefficients of :func:`ufm.ce_coefficients`:

    >>> import ufm
    >>> a = ufm.mixture_coefficients(K=3, weights=[[1/3, 1/3, 1/3], [0.5, 0.5, 0.0]], lam_H=5e-3)
    >>> a.shape
    (2, 3)
    >>> [[round(x, 4) for x in row] for row in a.tolist()]
    [[2.2571, 2.2571, 2.2571], [2.6778, 2.6778, 0.0]]
    >>> pair = ufm.mixture_coefficients(K=3, weights=[0.5, 0.5], lam_H=5e-3)
    >>> a_half, _ = ufm.ce_coefficients(K=3, lam=0.5, lam_H=5e-3)
    >>> bool(abs(pair[0] - a_half) < 1e-12)
    True
    """
    K = check_int("K", K, minimum=2)
    lam_H = check_float("lam_H", lam_H, 0.0, None, low_open=True)
    scale = check_float("scale", scale, 0.0, None, low_open=True)
    kind, eps = _loss_kind(loss)
    weights = _check_weights(weights, K)
    return _coefficients(K, weights, lam_H, gain(K, scale), kind, eps)


def mixture_features(W: torch.Tensor, classes, weights, lam_H: float, loss="ce", etf_tol=1e-6):
    r"""Exact optimal features :math:`h^\star = \sum_k a_k w_{c_k}` of m-class mixtures.

    Minimiser of :math:`\ell(Wh;\, y) + \frac{\lambda_H}{2}\|h\|^2` with
    :math:`y = \sum_k y_k e_{c_k}`, for a fixed simplex-ETF ``W`` (checked:
    ``etf_distance(W) <= etf_tol``) and no bias; see :func:`mixture_coefficients` and the
    module docstring (Fisher, Meng & Papyan, ICLR 2024, arXiv:2402.06171; Chaudhry et al.
    2022). Repeated classes are merged. The features are assembled by
    ``torch.nn.functional.embedding_bag``, without (n, m, d) temporaries.

    Parameters
    ----------
    W : (K, d) simplex ETF; the result has its dtype and device.
    classes : (..., m) integer classes in [0, K-1].
    weights : (..., m) weights :math:`\ge 0` summing to 1 (to within :data:`WEIGHT_SUM_TOL`);
        leading axes broadcast against those of ``classes``.
    lam_H : feature ridge :math:`\lambda_H > 0`.
    loss : "ce" (default), "label_smoothing" or "mse".

    Returns
    -------
    torch.Tensor
        (..., d), the broadcast leading shape of ``classes`` and ``weights`` followed by d,
        with ``W``'s dtype and device.

    Examples
    --------
    The centroid of all K classes of an ETF is the origin, since the rows sum to zero; a
    mixture leaning to class 0 lies towards :math:`w_0`:

    >>> import ufm
    >>> W = ufm.simplex_etf(K=3, d=2)
    >>> H = ufm.mixture_features(W, classes=[[0, 1, 2], [0, 1, 2]],
    ...                          weights=[[1/3, 1/3, 1/3], [0.6, 0.2, 0.2]], lam_H=5e-3)
    >>> tuple(H.shape)
    (2, 2)
    >>> [round(x, 4) for x in H.norm(dim=-1).tolist()]
    [0.0, 0.7257]
    >>> bool(H[1] @ W[0] > 0)
    True
    """
    g = check_simplex_etf(W, etf_tol)
    K, d = W.shape
    lam_H = check_float("lam_H", lam_H, 0.0, None, low_open=True)
    kind, eps = _loss_kind(loss)
    weights = _check_weights(weights, K)
    classes, weights = _check_classes(classes, K, weights)
    shape, m = classes.shape[:-1], classes.shape[-1]
    if classes.size == 0:
        return W.new_zeros(*shape, d)
    g = gain(K, row_norm(K, g))  # the round trip optimal_features takes: the same g
    coefficients = _coefficients(K, _merge_repeated(classes, weights), lam_H, g, kind, eps)
    index = torch.tensor(classes.reshape(-1, m), device=W.device)
    per_sample = torch.tensor(coefficients.reshape(-1, m), dtype=W.dtype, device=W.device)
    features = F.embedding_bag(index, W, per_sample_weights=per_sample, mode="sum")
    return features.reshape(*shape, d)


def mixture_target(classes, weights, K: int, dtype=torch.float64) -> torch.Tensor:
    r"""Soft target :math:`y = \sum_k y_k e_{c_k}`, shape (..., K); repeated classes add up.

    The target that the loss of an m-class mixture is taken against. The input checks are
    those of :func:`mixture_features`.

    Parameters
    ----------
    classes : (..., m) integer classes in [0, K-1].
    weights : (..., m) weights :math:`\ge 0` summing to 1 (to within
        :data:`WEIGHT_SUM_TOL`); leading axes broadcast against those of ``classes``.
    K : number of classes, ``K >= 2``.
    dtype : of the result (it is summed in float64).

    Returns
    -------
    torch.Tensor
        (..., K), each row a probability vector.

    Examples
    --------
    >>> import ufm
    >>> y = ufm.mixture_target(classes=[[0, 1], [2, 2]], weights=[[0.25, 0.75], [0.5, 0.5]], K=3)
    >>> tuple(y.shape)
    (2, 3)
    >>> y.tolist()
    [[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]
    """
    K = check_int("K", K, minimum=2)
    weights = _check_weights(weights, K)
    classes, weights = _check_classes(classes, K, weights)
    target = torch.zeros(*classes.shape[:-1], K, dtype=torch.float64)
    target.scatter_add_(-1, torch.tensor(classes), torch.tensor(weights))
    return target.to(dtype)


def simplex_grid(m: int, points: int) -> np.ndarray:
    r"""The regular grid on the probability simplex of dimension ``m - 1``, shape (N, m).

    All weight vectors :math:`(i_1, \dots, i_m)/n` with integers :math:`i_k \ge 0`,
    :math:`\sum_k i_k = n`, :math:`n` = ``points`` - 1 (``points`` per edge):
    :math:`N = \binom{n + m - 1}{m - 1}` rows. Built by stars and bars: the bar positions
    :math:`0 \le b_1 < \dots < b_{m-1} \le n + m - 2` give :math:`i_1 = b_1`,
    :math:`i_k = b_k - b_{k-1} - 1`, :math:`i_m = n + m - 2 - b_{m-1}`, in lexicographic order
    of the bars: the first row is the vertex :math:`e_m`, and for ``m = 2`` the rows are
    :math:`(\lambda, 1 - \lambda)` for ``lam`` in ``linspace(0, 1, points)``. Every row sums
    to 1 to rounding.
    """
    m = check_int("m", m, minimum=1)
    points = check_int("points", points, minimum=2)
    n = points - 1
    combos = list(itertools.combinations(range(n + m - 1), m - 1))
    bars = np.array(combos, dtype=np.int64).reshape(len(combos), m - 1)
    left = np.concatenate([np.full((len(bars), 1), -1), bars], axis=1)
    right = np.concatenate([bars, np.full((len(bars), 1), n + m - 1)], axis=1)
    return (right - left - 1).astype(np.float64) / n
