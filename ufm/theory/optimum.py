r"""Exact optimal features of the mixup UFM with a fixed simplex-ETF classifier, no bias.

With :math:`W` fixed, the UFM objective (docs/theory.md section 1)

.. math:: \frac1n\sum_s \ell(W h_s; c_s, c'_s, \lambda_s) + \frac{\lambda_H}{2}\frac1n\sum_s\|h_s\|^2
          + \frac{\lambda_W}{2}\|W\|_F^2

splits into one strictly convex problem per sample,
:math:`\min_h \ell(Wh; c, c', \lambda) + \tfrac{\lambda_H}{2}\|h\|^2`, whose solution is
:math:`h = a\,w_c + b\,w_{c'}` (Fisher, Meng & Papyan, "Pushing Boundaries: Mixup's Influence
on Neural Collapse", ICLR 2024, arXiv:2402.06171). For a simplex ETF with row norm :math:`s`
(gain :math:`g = s^2K/(K-1)`):

* **cross-entropy** (and label smoothing :math:`\varepsilon`, :math:`y_o = \varepsilon/K`):
  :math:`(a, b)` solve :math:`\lambda_H a = (1-\varepsilon)\lambda - (e^{ga}-1)/D`,
  :math:`\lambda_H b = (1-\varepsilon)(1-\lambda) - (e^{gb}-1)/D`, :math:`D = e^{ga}+e^{gb}+K-2`,
  solved to full double precision by :mod:`ufm.theory.reduced_equations`. Same-class pairs have
  :math:`h = a_\text{same}\,w_c` with :math:`\lambda_H a = K/(e^{ga}+K-1) - \varepsilon`
  (the :math:`\lambda = 1` case), independent of :math:`\lambda`.
* **squared error** :math:`\tfrac12\|z-y\|^2`: :math:`h = (W^\top W+\lambda_H I)^{-1}W^\top y`, i.e.
  :math:`a = \lambda/(g+\lambda_H)`, :math:`b = (1-\lambda)/(g+\lambda_H)`: an exact convex
  combination of the two class features.

For :math:`K = 2`, :math:`w_{c'} = -w_c` and only :math:`a - b` is determined; the values
returned are the unique solution of the reduced equations above.
"""

from __future__ import annotations

import numpy as np
import torch

from .._checks import check_float, check_index_tensor, check_int, check_tensor_range
from ..etf import check_simplex_etf, gain, row_norm
from ..losses import CrossEntropy, LabelSmoothing, SquaredError, get_loss, smoothing
from .reduced_equations import solve_reduced

__all__ = [
    "EXACT_THEORY_LOSSES",
    "ce_coefficients",
    "gain",
    "has_exact_theory",
    "mse_coefficients",
    "optimal_coefficients",
    "optimal_coefficients_over_lam_H",
    "optimal_features",
    "same_class_coefficient",
]


EXACT_THEORY_LOSSES = ("ce", "label_smoothing", "mse")


def has_exact_theory(loss) -> bool:
    """Whether :func:`optimal_features` knows the exact optimum for ``loss`` (name or instance)."""
    return get_loss(loss).name in EXACT_THEORY_LOSSES


def _check_common(K, lam_H, scale):
    K = check_int("K", K, minimum=2)
    lam_H = check_float("lam_H", lam_H, 0.0, None, low_open=True)
    scale = check_float("scale", scale, 0.0, None, low_open=True)
    return K, lam_H, scale


def _lam_array(lam) -> np.ndarray:
    if isinstance(lam, torch.Tensor):
        lam = lam.detach().cpu().to(torch.float64).numpy()
    lam = np.asarray(lam, dtype=np.float64)
    if lam.size and not np.isfinite(lam).all():
        raise ValueError(f"lam must be finite, found {lam[~np.isfinite(lam)].ravel()[0]}")
    if lam.size and (lam.min() < 0 or lam.max() > 1):
        bad = lam.min() if lam.min() < 0 else lam.max()
        raise ValueError(f"lam must lie in [0, 1], found {bad!r}")
    return lam


def _ce_scaled(K: int, lam: np.ndarray, t, smoothing: float):
    """(u, v) = g (a, b) for every lam; solves once per distinct max(lam, 1-lam).

    ``t`` is a float, or an array (T,) of values solved together in one call of
    :func:`ufm.theory.reduced_equations.solve_reduced`: (u, v) then have shape (T, *lam.shape),
    and row k equals the result for ``t[k]`` alone bit for bit (the solver works elementwise,
    each entry with its own iterations)."""
    major = np.maximum(lam, 1.0 - lam)
    minor = np.minimum(lam, 1.0 - lam)  # exact: lam itself, or 1 - lam for lam >= 1/2
    keys, inverse = np.unique(np.stack([major.ravel(), minor.ravel()]), axis=1, return_inverse=True)
    scale_t = 1.0 - smoothing
    t_column = np.asarray(t, dtype=np.float64)[..., None]  # (1,) or (T, 1) against the keys
    u_k, v_k, _ = solve_reduced(scale_t * keys[0], scale_t * keys[1], smoothing / K, t_column, K)
    shape = (*np.shape(t), *lam.shape)
    u = u_k[..., inverse.ravel()].reshape(shape)
    v = v_k[..., inverse.ravel()].reshape(shape)
    high = lam >= 0.5
    return np.where(high, u, v), np.where(high, v, u)


def ce_coefficients(K: int, lam, lam_H: float, scale: float = 1.0, smoothing: float = 0.0):
    r"""Coefficients :math:`(a, b)` of the optimal different-class feature :math:`a w_c + b w_{c'}`.

    Cross-entropy (``smoothing = 0``) or label smoothing :math:`\varepsilon` = ``smoothing``,
    simplex ETF with row norm ``scale``, ridge :math:`\lambda_H` = ``lam_H``. ``lam`` may be a
    scalar or an array; one small system is solved per distinct value. Accurate to a few
    units in the last place (see :mod:`ufm.theory.reduced_equations`). Swap symmetry:
    :math:`b(\lambda) = a(1-\lambda)`.

    Parameters
    ----------
    K : number of classes, ``K >= 2``.
    lam : mixing coefficient(s) in [0, 1], the weight of class :math:`c`: a scalar, a
        sequence, an array or a tensor.
    lam_H : feature ridge :math:`\lambda_H > 0`.
    scale : row norm :math:`s > 0` of the simplex ETF (gain :math:`g = s^2K/(K-1)`).
    smoothing : label smoothing :math:`\varepsilon \in [0, 1)`; 0 is cross-entropy.

    Returns
    -------
    a, b : numpy.ndarray
        Two float64 arrays of the shape of ``lam`` (0-d for a scalar): the weights of
        :math:`w_c` and :math:`w_{c'}` in the optimal feature.

    Examples
    --------
    >>> import ufm
    >>> a, b = ufm.ce_coefficients(K=4, lam=[0.0, 0.5, 1.0], lam_H=5e-3)
    >>> a.shape
    (3,)
    >>> [round(x, 4) for x in a.tolist()], [round(x, 4) for x in b.tolist()]
    ([0.0, 3.1108, 3.9684], [3.9684, 3.1108, 0.0])

    At :math:`\lambda = 1/2` both classes weigh the same, and :math:`b(\lambda) = a(1-\lambda)`:

    >>> bool(a[1] == b[1]), bool((a == b[::-1]).all())
    (True, True)
    """
    K, lam_H, scale = _check_common(K, lam_H, scale)
    smoothing = check_float("smoothing", smoothing, 0.0, 1.0, high_open=True)
    lam = _lam_array(lam)
    g = gain(K, scale)
    u, v = _ce_scaled(K, lam, lam_H / g, smoothing)
    return u / g, v / g


def same_class_coefficient(K: int, lam_H: float, scale: float = 1.0, smoothing: float = 0.0):
    r"""Coefficient :math:`a` of the optimal same-class feature :math:`a\,w_c` (cross-entropy).

    Root of :math:`\lambda_H a\,(e^{ga} + K - 1) = K` for ``smoothing = 0``; it does not
    depend on :math:`\lambda`. It is :func:`ce_coefficients` at :math:`\lambda = 1`: a
    pair of one class is the clean sample.

    Parameters
    ----------
    K : number of classes, ``K >= 2``.
    lam_H : feature ridge :math:`\lambda_H > 0`.
    scale : row norm :math:`s > 0` of the simplex ETF.
    smoothing : label smoothing :math:`\varepsilon \in [0, 1)`; 0 is cross-entropy.

    Returns
    -------
    float
        :math:`a_\text{same}`, so that the optimal feature of every pair :math:`(c, c)` is
        :math:`a_\text{same}\,w_c`.

    Examples
    --------
    >>> import ufm
    >>> a_same = ufm.same_class_coefficient(K=4, lam_H=5e-3)
    >>> round(a_same, 4)
    3.9684
    >>> a, _ = ufm.ce_coefficients(K=4, lam=1.0, lam_H=5e-3)
    >>> bool(a_same == a)
    True
    """
    a, _ = ce_coefficients(K, 1.0, lam_H, scale, smoothing)
    return float(a)


def mse_coefficients(K: int, lam, lam_H: float, scale: float = 1.0):
    r"""Squared-error optimum :math:`a = \lambda/(g+\lambda_H)`, :math:`b = (1-\lambda)/(g+\lambda_H)`.

    The optimal feature :math:`a\,w_c + b\,w_{c'}` is the convex combination of the two
    class features, scaled by :math:`1/(g+\lambda_H)`: mixup is linear for this loss, the
    null against which cross-entropy's amplification is measured.

    Parameters
    ----------
    K : number of classes, ``K >= 2``.
    lam : mixing coefficient(s) in [0, 1], the weight of class :math:`c`.
    lam_H : feature ridge :math:`\lambda_H > 0`.
    scale : row norm :math:`s > 0` of the simplex ETF (gain :math:`g = s^2K/(K-1)`).

    Returns
    -------
    a, b : numpy.ndarray
        Two float64 arrays of the shape of ``lam``.

    Examples
    --------
    >>> import ufm
    >>> a, b = ufm.mse_coefficients(K=4, lam=[0.0, 0.5, 1.0], lam_H=0.5)
    >>> [round(x, 6) for x in a.tolist()], [round(x, 6) for x in b.tolist()]
    ([0.0, 0.272727, 0.545455], [0.545455, 0.272727, 0.0])
    """
    K, lam_H, scale = _check_common(K, lam_H, scale)
    lam = _lam_array(lam)
    denominator = gain(K, scale) + lam_H
    return lam / denominator, (1.0 - lam) / denominator


def optimal_coefficients(
    K: int, lam, lam_H: float, scale: float = 1.0, loss="ce", same_class: bool = False
):
    r"""Coefficients (a, b) for the named loss ("ce", "label_smoothing", "mse").

    With ``same_class=True`` the pair is (c, c): b is 0 and a is the lam-independent
    same-class coefficient (for "mse", a = 1/(g + lam_H)). One entry point for every loss
    with an exact theory (:data:`EXACT_THEORY_LOSSES`), so callers need not branch on it.

    Parameters
    ----------
    K : number of classes, ``K >= 2``.
    lam : mixing coefficient(s) in [0, 1], the weight of class :math:`c`.
    lam_H : feature ridge :math:`\lambda_H > 0`.
    scale : row norm :math:`s > 0` of the simplex ETF.
    loss : "ce", "label_smoothing", "mse", or such a :class:`~ufm.losses.MixupLoss`
        instance (:func:`ufm.get_loss`; label smoothing with another ``eps``, say). Other
        losses raise ``ValueError``.
    same_class : the pair (c, c) instead of two different classes.

    Returns
    -------
    a, b : numpy.ndarray
        Two float64 arrays of the shape of ``lam``; ``b`` is zero for ``same_class``.

    Examples
    --------
    >>> import ufm
    >>> a, b = ufm.optimal_coefficients(K=4, lam=[0.25, 0.75], lam_H=5e-3, loss="label_smoothing")
    >>> [round(x, 4) for x in a.tolist()], [round(x, 4) for x in b.tolist()]
    ([1.5831, 2.3569], [2.3569, 1.5831])
    >>> a, b = ufm.optimal_coefficients(K=4, lam=[0.25, 0.75], lam_H=5e-3, same_class=True)
    >>> [round(x, 4) for x in a.tolist()], b.tolist()
    ([3.9684, 3.9684], [0.0, 0.0])
    """
    loss = get_loss(loss)
    lam = _lam_array(lam)
    if same_class:
        lam = np.ones_like(lam)
    if isinstance(loss, SquaredError):
        return mse_coefficients(K, lam, lam_H, scale)
    if isinstance(loss, (CrossEntropy, LabelSmoothing)):
        return ce_coefficients(K, lam, lam_H, scale, smoothing(loss))
    raise ValueError(
        f"no exact theory for loss {loss.name!r}; exact theory exists for 'ce', "
        "'label_smoothing' and 'mse' (use ufm.theory.certificate or the solver for other losses)"
    )


def optimal_coefficients_over_lam_H(K: int, lam, lam_H_values, scale: float = 1.0, loss="ce"):
    r""":func:`optimal_coefficients` at many ridges at once: (a, b) of shape (T, *lam.shape)
    for the T values of ``lam_H_values``, row k bit for bit that of
    ``optimal_coefficients(K, lam, lam_H_values[k], scale, loss)``.

    Fits of an effective :math:`\lambda_H` (:func:`ufm.nets.ufm_comparison.fit_log_lam_H`)
    first evaluate the theory on a grid of ridges; for cross-entropy and label smoothing this
    solves the whole grid in one vectorised call of the reduced-equation solver instead of one
    call per ridge, which costs about as much as a single one. Every ridge is checked as
    :func:`optimal_coefficients` checks it.

    Parameters
    ----------
    K, lam, scale, loss : as :func:`optimal_coefficients` (different-class pairs).
    lam_H_values : sequence of T feature ridges :math:`\lambda_H > 0`.

    Returns
    -------
    a, b : numpy.ndarray
        Two float64 arrays of shape (T, *lam.shape).

    Examples
    --------
    >>> import numpy as np, ufm
    >>> from ufm.theory.optimum import optimal_coefficients_over_lam_H
    >>> a, b = optimal_coefficients_over_lam_H(4, [0.25, 0.75], [5e-3, 0.1])
    >>> a.shape
    (2, 2)
    >>> bool((a[0] == ufm.optimal_coefficients(4, [0.25, 0.75], 5e-3)[0]).all())
    True
    """
    loss = get_loss(loss)
    lam = _lam_array(lam)
    values = [_check_common(K, lam_H, scale)[1] for lam_H in np.ravel(lam_H_values).tolist()]
    if not values:
        raise ValueError("lam_H_values must hold at least one ridge")
    if isinstance(loss, (CrossEntropy, LabelSmoothing)):
        K = check_int("K", K, minimum=2)
        eps = smoothing(loss)
        g = gain(K, check_float("scale", scale, 0.0, None, low_open=True))
        u, v = _ce_scaled(K, lam, np.array([lam_H / g for lam_H in values]), eps)
        return u / g, v / g
    rows = [optimal_coefficients(K, lam, lam_H, scale, loss) for lam_H in values]
    return np.stack([a for a, _ in rows]), np.stack([b for _, b in rows])


def optimal_features(
    W: torch.Tensor,
    c,
    c_prime,
    lam,
    lam_H: float,
    loss="ce",
    etf_tol: float = 1e-6,
) -> torch.Tensor:
    r"""Exact optimal features :math:`h^\star(c, c', \lambda)` for a fixed simplex-ETF ``W``.

    Solves :math:`\min_h \ell(Wh; c, c', \lambda) + \tfrac{\lambda_H}{2}\|h\|^2` for every
    broadcast entry of ``c``, ``c_prime``, ``lam`` (scalars, arrays or tensors; Python floats
    are taken as float64) and returns a tensor of shape (..., d) with ``W``'s dtype and
    device. Only one scalar system is solved per distinct value of lam (and one for all
    same-class pairs), so the cost is that of assembling the output.

    Parameters
    ----------
    W : (K, d) simplex ETF (checked: ``etf_distance(W) <= etf_tol``), no bias.
    c, c_prime : class indices in [0, K-1].
    lam : mixing coefficients in [0, 1] (weight of class ``c``).
    lam_H : feature ridge :math:`\lambda_H > 0`.
    loss : "ce" (default), "label_smoothing" (a :class:`~ufm.losses.LabelSmoothing` instance
        for another epsilon) or "mse".
    etf_tol : how far ``W`` may be from a simplex ETF (:func:`ufm.etf.etf_distance`, a
        relative distance of the Gram matrices) before it is refused; the optimum is exact only
        for an ETF.

    Returns
    -------
    torch.Tensor
        (..., d), the broadcast shape of ``c``, ``c_prime`` and ``lam`` followed by d, with
        ``W``'s dtype and device: :math:`h^\star = a\,w_c + b\,w_{c'}` (same-class pairs:
        :math:`a_\text{same} w_c`).

    Examples
    --------
    >>> import torch, ufm
    >>> W = ufm.simplex_etf(K=4, d=3, seed=0)
    >>> ufm.optimal_features(W, c=0, c_prime=1, lam=torch.tensor([0.0, 0.5, 1.0]), lam_H=5e-3).shape
    torch.Size([3, 3])
    """
    g = check_simplex_etf(W, etf_tol)
    K = W.shape[0]
    lam_H = check_float("lam_H", lam_H, 0.0, None, low_open=True)
    loss = get_loss(loss)
    device = W.device
    c = check_index_tensor("c", torch.as_tensor(c, device=device), K)
    c_prime = check_index_tensor("c_prime", torch.as_tensor(c_prime, device=device), K)
    lam_t = torch.as_tensor(lam, dtype=torch.float64)
    check_tensor_range("lam", lam_t, 0.0, 1.0)
    scale = row_norm(K, g)

    # Coefficients for each distinct lam, then gathered; the work does not grow with pairs.
    lam_unique, inverse = torch.unique(lam_t.cpu(), return_inverse=True)
    a_u, b_u = optimal_coefficients(K, lam_unique.numpy(), lam_H, scale, loss)
    (a_same,), _ = optimal_coefficients(K, [1.0], lam_H, scale, loss, same_class=True)
    a = torch.as_tensor(a_u, dtype=W.dtype).to(device)[inverse.to(device)]
    b = torch.as_tensor(b_u, dtype=W.dtype).to(device)[inverse.to(device)]

    shape = torch.broadcast_shapes(c.shape, c_prime.shape, a.shape)
    c, c_prime = c.expand(shape), c_prime.expand(shape)
    same = c == c_prime
    a = torch.where(same, torch.as_tensor(a_same, dtype=W.dtype, device=device), a.expand(shape))
    b = torch.where(same, torch.zeros((), dtype=W.dtype, device=device), b.expand(shape))
    d = W.shape[1]
    # index_select always copies, so the in-place products below never touch W.
    features = torch.index_select(W, 0, c.reshape(-1)).reshape(*shape, d)
    features.mul_(a.unsqueeze(-1))
    features.addcmul_(W[c_prime], b.unsqueeze(-1))
    return features
