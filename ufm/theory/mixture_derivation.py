r"""Symbolic derivation (SymPy) of the optimum for mixtures of m classes (docs/theory.md section 9).

A sample mixing :math:`m` distinct classes (here the first :math:`m` of :math:`K`) with weights
:math:`y_1..y_m` on the simplex has the soft target :math:`y = \sum_k y_k e_{c_k}`. For a fixed
simplex ETF of gain :math:`g` and no bias, each function below derives one step and returns
SymPy objects; the ``check_*`` functions return ``True`` when SymPy proves the identity (the
difference simplifies to zero). They are re-exported by :mod:`ufm.theory.derivation`
(``ufm.symbolic``), which holds the pair case (Fisher, Meng & Papyan, "Pushing Boundaries:
Mixup's Influence on Neural Collapse", ICLR 2024, arXiv:2402.06171); mixup of more than two
points is the setting of Chaudhry et al., "When does mixup promote local linearity in learned
representations?" (2022). ``notebooks/04_mixtures.ipynb`` checks every step numerically.

Steps
-----
1. :func:`check_mixture_logits`: under :math:`h = \sum_k a_k w_{c_k}` the logits are
   :math:`z_k = g(a_k - A/K)`, :math:`A = \sum_k a_k`, and :math:`-gA/K` for every other class.
2. :func:`check_mixture_full_gradient`: at such :math:`h` the gradient of the full problem is
   :math:`W^\top(p - y) + \lambda_H h = \sum_k R_k w_{c_k}` with the residuals
   (docs/theory.md section 9)
   :math:`R_k = \lambda_H a_k - (1-\varepsilon)y_k + (e^{ga_k}-1)/D`,
   :math:`D = \sum_j e^{ga_j} + K - m`
   (:func:`mixture_residuals`): :math:`R = 0` gives the unique minimiser, and for :math:`m < K`
   (independent :math:`w_{c_k}`) it is also necessary.
3. :func:`check_mixture_gradient_identity`: the reduced objective :func:`mixture_objective` has
   :math:`\nabla f = g(I_m - \mathbf 1\mathbf 1^\top/K)R`, with determinant
   :math:`(K-m)/K` (:func:`mixture_gradient_determinant`), with and without label smoothing
   (which replaces :math:`y_k` by :math:`(1-\varepsilon)y_k`).
4. :func:`check_zero_weight_drops_out`, :func:`check_equal_weights_on_every_boundary`,
   :func:`check_full_mixture_shift`: a zero weight has :math:`a_k = 0` and removes its class;
   equal weights give equal coefficients and equal logits; for :math:`m = K` only :math:`h` is
   determined, and equal weights give :math:`h = 0`.
5. :func:`check_mixture_mse`: squared error gives :math:`h = \sum_k y_k w_{c_k}/(g + \lambda_H)`.
6. :func:`check_mixture_log_q_form`: the form solved by
   :func:`ufm.theory.reduced_equations.solve_reduced_mixture`.
"""

from __future__ import annotations

import sympy as sp

from ._sympy_common import is_zero, scalar_symbols

__all__ = [
    "mixture_symbols",
    "mixture_objective",
    "mixture_residuals",
    "mixture_gradient_determinant",
    "check_mixture_logits",
    "check_mixture_full_gradient",
    "check_mixture_gradient_identity",
    "check_zero_weight_drops_out",
    "check_equal_weights_on_every_boundary",
    "check_full_mixture_shift",
    "check_mixture_mse",
    "check_mixture_log_q_form",
]


def mixture_symbols(m: int):
    r"""Symbols :math:`a_1..a_m` and weights :math:`y_1..y_m`, :math:`y_m = 1-\sum_{k<m}y_k`."""
    a = sp.symbols(f"a_1:{m + 1}", real=True)
    free = sp.symbols(f"y_1:{m}", nonnegative=True)
    return a, (*free, 1 - sum(free))


def _etf(K: int):
    r"""The canonical K-class ETF in :math:`\mathbb{R}^K` with row norm :math:`s`, and its gain."""
    s = scalar_symbols().s
    W = s * sp.sqrt(sp.Rational(K, K - 1)) * (sp.eye(K) - sp.ones(K, K) / K)
    return W, s**2 * sp.Rational(K, K - 1)


def _combination(coefficients, W):
    r""":math:`\sum_k c_k w_k` (column) for the first ``len(coefficients)`` rows of ``W``."""
    return sum((c * W[k, :].T for k, c in enumerate(coefficients)), sp.zeros(W.shape[1], 1))


# -- 1-2. logits under the ansatz, and the full gradient ------------------------------------


def check_mixture_logits(K: int = 5, m: int = 3) -> bool:
    r"""The logits :math:`z_k = g(a_k - A/K)`, :math:`z_o = -gA/K` against an explicit ETF."""
    W, g = _etf(K)
    a, _ = mixture_symbols(m)
    z = W * _combination(a, W)
    claim = [g * (a[i] - sum(a) / K) if i < m else -g * sum(a) / K for i in range(K)]
    return all(sp.simplify(z[i] - claim[i]) == 0 for i in range(K))


def mixture_residuals(m: int, smoothing: bool = False):
    r"""Residuals :math:`R_k = \lambda_H a_k - (1-\varepsilon)y_k + (e^{ga_k}-1)/D`.

    :math:`D = \sum_j e^{ga_j} + K - m`; :math:`\varepsilon = 0` unless ``smoothing``
    (docs/theory.md section 9).
    """
    S = scalar_symbols()
    a, y = mixture_symbols(m)
    eps = S.eps if smoothing else 0
    D = sum(sp.exp(S.g * a_k) for a_k in a) + S.K - m
    return [S.lam_H * a_k - (1 - eps) * y_k + (sp.exp(S.g * a_k) - 1) / D for a_k, y_k in zip(a, y)]


def check_mixture_full_gradient(K: int = 4, m: int = 3, smoothing: bool = False) -> bool:
    r"""At :math:`h = \sum_k a_k w_k` the full gradient is :math:`\sum_k R_k w_k`.

    That is, :math:`W^\top(\operatorname{softmax}(Wh) - y) + \lambda_H h = \sum_k R_k w_k`, for an

    explicit ETF and the target :math:`y` or :math:`(1-\varepsilon)y + \varepsilon\mathbf 1/K`. So
    :math:`R = 0` makes :math:`h` a stationary point, hence the unique minimiser, of the strictly
    convex problem; for :math:`m < K` the :math:`w_k` are independent and :math:`R = 0` is also
    necessary. No symmetry is assumed here: the check covers the ansatz itself.
    """
    S = scalar_symbols()
    W, g = _etf(K)
    a, y = mixture_symbols(m)
    eps = S.eps if smoothing else 0
    h = _combination(a, W)
    z = W * h
    target = sp.Matrix([(1 - eps) * (y[i] if i < m else 0) + eps / K for i in range(K)])
    gradient = W.T * (z.applyfunc(sp.exp) / sum(sp.exp(z_i) for z_i in z) - target) + S.lam_H * h
    R = [R_k.subs({S.K: K, S.g: g}) for R_k in mixture_residuals(m, smoothing)]
    return all(is_zero(e) for e in gradient - _combination(R, W))


# -- 3. the reduced objective and its gradient ----------------------------------------------


def mixture_objective(m: int, smoothing: bool = False):
    r"""The objective restricted to :math:`h = \sum_k a_k w_{c_k}`.

    With :math:`A = \sum_k a_k`: :math:`z_k = g(a_k - A/K)`, :math:`z_o = -gA/K` for the
    :math:`K-m` others, :math:`\|h\|^2 = g(\sum_k a_k^2 - A^2/K)`, and
    :math:`f = \operatorname{lse}(z) - t^\top z + \frac{\lambda_H}{2}\|h\|^2` with the target
    :math:`t = y` or :math:`(1-\varepsilon)y + \varepsilon\mathbf 1/K` (``smoothing``).
    """
    S = scalar_symbols()
    a, y = mixture_symbols(m)
    eps = S.eps if smoothing else 0
    A = sum(a)
    z = [S.g * (a_k - A / S.K) for a_k in a]
    z_o = -S.g * A / S.K
    lse = sp.log(sum(sp.exp(z_k) for z_k in z) + (S.K - m) * sp.exp(z_o))
    fit = sum(((1 - eps) * y_k + eps / S.K) * z_k for y_k, z_k in zip(y, z))
    fit += (S.K - m) * eps / S.K * z_o
    return lse - fit + S.lam_H / 2 * S.g * (sum(a_k**2 for a_k in a) - A**2 / S.K)


def check_mixture_gradient_identity(m: int = 3, smoothing: bool = False) -> bool:
    r"""Prove :math:`\nabla f = g\,(I_m - \mathbf 1\mathbf 1^\top/K)\,R` for the reduced objective.

    So for :math:`m < K` stationarity of :math:`f` is exactly :math:`R = 0`.
    """
    S = scalar_symbols()
    a, _ = mixture_symbols(m)
    f, R = mixture_objective(m, smoothing), mixture_residuals(m, smoothing)
    return all(is_zero(sp.diff(f, a_j) - S.g * (R_j - sum(R) / S.K)) for a_j, R_j in zip(a, R))


def mixture_gradient_determinant(m: int):
    r""":math:`\det(I_m - \mathbf 1\mathbf 1^\top/K) = (K-m)/K`, non-zero just when :math:`m<K`."""
    K = scalar_symbols().K
    return sp.factor((sp.eye(m) - sp.ones(m, m) / K).det())


# -- 4. zero weights, equal weights, full mixtures --------------------------------------------


def check_zero_weight_drops_out(m: int = 3) -> bool:
    r"""With :math:`y_m = 0`, :math:`a_m = 0`: :math:`R_m = 0` exactly, and the other residuals are
    the :math:`(m-1)`-class ones (the class adds :math:`e^0 = 1` to :math:`D`, as an other does)."""
    a, y = mixture_symbols(m)
    fewer_a, fewer_y = mixture_symbols(m - 1)
    drop = {a[-1]: 0, **({y[-2]: 1 - sum(y[:-2])} if m > 2 else {y[0]: 1})}
    R = [R_k.subs(drop, simultaneous=True) for R_k in mixture_residuals(m)]
    rename = dict(zip(fewer_a + fewer_y[:-1], a[:-1] + y[:-2]))
    smaller = [R_k.subs(rename, simultaneous=True) for R_k in mixture_residuals(m - 1)]
    return sp.simplify(R[-1]) == 0 and all(sp.simplify(r - s) == 0 for r, s in zip(R, smaller))


def check_equal_weights_on_every_boundary(m: int = 3) -> bool:
    r"""With :math:`y_k = 1/m` and :math:`a_k = a` all :math:`m` residuals are one function of
    :math:`a` (so the unique root has equal coefficients), and all :math:`m` logits are equal."""
    S = scalar_symbols()
    a, y = mixture_symbols(m)
    equal = {**dict.fromkeys(y[:-1], sp.Rational(1, m)), **dict.fromkeys(a, S.a)}
    R = [R_k.subs(equal) for R_k in mixture_residuals(m)]
    z = [(S.g * (a_k - sum(a) / S.K)).subs(equal) for a_k in a]
    same_R = all(sp.simplify(r - R[0]) == 0 for r in R)
    return same_R and all(sp.simplify(z_k - z[0]) == 0 for z_k in z)


def check_full_mixture_shift(m: int = 3) -> bool:
    r"""For :math:`m = K`, :math:`f` is invariant under :math:`a_k \to a_k + \delta` (only :math:`h`
    is determined), and equal coefficients give :math:`h = a\sum_k w_k = 0`."""
    S = scalar_symbols()
    a, _ = mixture_symbols(m)
    delta = sp.Symbol("delta", real=True)
    f = mixture_objective(m).subs(S.K, m)
    shifted = f.subs({a_k: a_k + delta for a_k in a}, simultaneous=True)
    W, _ = _etf(m)
    return is_zero(shifted - f) and _combination([S.a] * m, W) == sp.zeros(m, 1)


# -- 5. squared error ---------------------------------------------------------------------


def check_mixture_mse(K: int = 4, m: int = 3) -> bool:
    r"""Squared error: :math:`(W^\top W + \lambda_H I)^{-1}W^\top y = \sum_k y_k w_k/(g+\lambda_H)`.

    Proved by substitution into the normal equations (their matrix is positive definite).
    """
    S = scalar_symbols()
    W, g = _etf(K)
    _, y = mixture_symbols(m)
    target = sp.Matrix([y[i] if i < m else 0 for i in range(K)])
    claim = _combination(y, W) / (g + S.lam_H)
    residual = (W.T * W + S.lam_H * sp.eye(K)) * claim - W.T * target
    return all(sp.simplify(e) == 0 for e in residual)


# -- 6. the log-q form used numerically -------------------------------------------------------


def check_mixture_log_q_form(m: int = 3) -> bool:
    r"""The equations of :func:`~ufm.theory.reduced_equations.solve_reduced_mixture`.

    With :math:`x_k = ga_k`, :math:`t = \lambda_H/g`, :math:`q = 1/D`, :math:`y_o = \varepsilon/K`,
    each :math:`e_k = tx_k + q(e^{x_k}-1) - (1-\varepsilon)y_k` is :math:`R_k` (one unknown per
    equation once :math:`q` is fixed), and :math:`\sum_k e_k - (tS - K(q - y_o)) = qD - 1`: the
    consistency condition :math:`tS = K(q - y_o)` is :math:`qD = 1`.
    """
    S = scalar_symbols()
    a, y = mixture_symbols(m)
    x = sp.symbols(f"x_1:{m + 1}", real=True)
    D = sum(sp.exp(x_k) for x_k in x) + S.K - m
    eqs = [S.t * x_k + S.q * (sp.exp(x_k) - 1) - (1 - S.eps) * y_k for x_k, y_k in zip(x, y)]
    consistency = S.t * sum(x) - S.K * (S.q - S.eps / S.K)
    first = sp.simplify(sum(eqs) - consistency - (S.q * D - 1)) == 0
    to_a = {x_k: S.g * a_k for x_k, a_k in zip(x, a)}
    back = {S.q: 1 / D.subs(to_a), S.t: S.lam_H / S.g, **to_a}
    R = mixture_residuals(m, smoothing=True)
    return first and all(is_zero(e.subs(back) - R_k) for e, R_k in zip(eqs, R))
