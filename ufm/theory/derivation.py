r"""Symbolic derivation (SymPy) of the mixup-UFM optimum with a simplex-ETF classifier.

Each function derives one step of docs/theory.md sections 2-3 and returns SymPy objects; the
``check_*`` functions return ``True`` when SymPy proves the claimed identity (the
difference simplifies to zero). ``notebooks/01_derivation.ipynb`` walks through them and
compares each result with :mod:`ufm.theory` numerically.

Reference: Q. Fisher, H. Meng, V. Papyan, "Pushing Boundaries: Mixup's Influence on Neural
Collapse", ICLR 2024, arXiv:2402.06171.

Steps
-----
1. :func:`ce_gradient` -- the gradient of :math:`\mathrm{CE}(Wh, y) + \frac{\lambda_H}{2}\|h\|^2`
   is :math:`W^\top(\operatorname{softmax}(Wh) - y) + \lambda_H h` (explicit small K, d).
2. :func:`ansatz_logits` -- with ETF Gram :math:`\langle w_j, w_k\rangle = g(\delta_{jk} - 1/K)`
   and :math:`h = a w_c + b w_{c'}`, the logits are :math:`ga - g(a+b)/K`, :math:`gb - g(a+b)/K`
   and :math:`-g(a+b)/K` for the :math:`K-2` others.
3. :func:`reduced_objective` / :func:`check_gradient_identity` -- the objective restricted to
   the ansatz, :math:`f(a, b)`, has
   :math:`\partial_a f = \frac gK\bigl((K-1)R_a - R_b\bigr)`,
   :math:`\partial_b f = \frac gK\bigl((K-1)R_b - R_a\bigr)` with the THEORY residuals
   :math:`R_a = \lambda_H a - \lambda + (e^{ga}-1)/D`, :math:`R_b = \lambda_H b - (1-\lambda) + (e^{gb}-1)/D`.
   The matrix has determinant :math:`K(K-2)`, so for :math:`K \ge 3` stationarity is exactly
   :math:`R_a = R_b = 0`; for :math:`K = 2` only :math:`R_a - R_b = 0`, i.e. only
   :math:`a - b` is determined.
4. :func:`check_swap_symmetry`, :func:`check_half_is_boundary`, :func:`check_amplified` --
   :math:`b(\lambda) = a(1-\lambda)`; at :math:`\lambda=1/2`, :math:`a = b` solves both
   equations, so :math:`z_c = z_{c'}`; and :math:`a(1/2) > a_\text{same}/2`.
5. :func:`same_class_equation` -- for :math:`c = c'` the target is :math:`e_c` for every
   :math:`\lambda` and :math:`\lambda_H a(e^{ga}+K-1) = K`.
6. :func:`mse_features` -- squared error: :math:`h = W^\top y/(g+\lambda_H)`, a convex
   combination of :math:`h_c = w_c/(g+\lambda_H)` and :math:`h_{c'}`.
7. :func:`log_q_form` -- the well-conditioned form used by :mod:`ufm.theory.reduced_equations`: with
   :math:`q = 1/D` each equation involves one unknown, and their sum gives :math:`t(u+v) = Kq`.
8. :func:`same_class_leading_order`, :func:`margin_limit` -- asymptotics as
   :math:`\lambda_H\to 0`.
9. Mixtures of :math:`m` classes (docs/theory.md section 9; Chaudhry et al. 2022 study mixup of more
   than two points): the steps of :mod:`ufm.theory.mixture_derivation`, re-exported here, and
   :func:`check_mixture_is_pair` (for :math:`m = 2` they are the residuals above).
10. Minority collapse with a learned classifier (docs/theory.md section 13): the steps of
    :mod:`ufm.theory.minority_derivation`, re-exported here.
"""

from __future__ import annotations

from types import SimpleNamespace

import sympy as sp

from . import minority_derivation, mixture_derivation
from ._sympy_common import is_zero, scalar_symbols
from .minority_derivation import *  # noqa: F403 - step 10, listed in its own __all__
from .mixture_derivation import *  # noqa: F403 - step 9, listed in its own __all__

__all__ = [
    "symbols",
    "ce_gradient",
    "check_ce_gradient",
    "ansatz_logits",
    "check_ansatz_logits",
    "reduced_objective",
    "residuals",
    "check_gradient_identity",
    "gradient_matrix_determinant",
    "check_swap_symmetry",
    "check_half_is_boundary",
    "check_amplified",
    "same_class_equation",
    "check_same_class_lam_independent",
    "mse_features",
    "check_mse_convex_combination",
    "log_q_form",
    "check_log_q_form",
    "same_class_leading_order",
    "margin_limit",
    "check_mixture_is_pair",
    *mixture_derivation.__all__,
    *minority_derivation.__all__,
]


def symbols() -> SimpleNamespace:
    """The symbols of the derivation (all positive where that is true)."""
    S = scalar_symbols()
    lam = sp.Symbol("lambda", nonnegative=True)
    b, u, v, x = sp.symbols("b u v x", real=True)
    return SimpleNamespace(
        K=S.K, g=S.g, lam_H=S.lam_H, s=S.s, t=S.t, q=S.q, lam=lam, a=S.a, b=b, u=u, v=v, x=x
    )


# -- 1. gradient of the per-sample objective ------------------------------------------------


def ce_gradient(K: int = 3, d: int = 2):
    r"""Gradient of :math:`\mathrm{CE}(Wh,y)+\frac{\lambda_H}{2}\|h\|^2` for symbolic W (K, d), h, y.

    Returns ``(gradient, claimed)`` with claimed :math:`= W^\top(\operatorname{softmax}(Wh)-y)+\lambda_H h`.
    """
    W = sp.Matrix(K, d, lambda i, j: sp.Symbol(f"w_{i}{j}", real=True))
    h = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"h_{i}", real=True))
    y = sp.Matrix(K, 1, lambda i, _: sp.Symbol(f"y_{i}", real=True))
    lam_H = symbols().lam_H
    z = W * h
    lse = sp.log(sum(sp.exp(z[i]) for i in range(K)))
    # CE against a target that sums to one: lse(z) sum(y) - y.z
    objective = lse * sum(y) - (y.T * z)[0] + lam_H / 2 * (h.T * h)[0]
    gradient = sp.Matrix([sp.diff(objective, h[i]) for i in range(d)])
    p = sp.Matrix([sp.exp(z[i]) for i in range(K)]) / sum(sp.exp(z[i]) for i in range(K))
    claimed = W.T * (p * sum(y) - y) + lam_H * h
    return gradient, claimed


def check_ce_gradient(K: int = 3, d: int = 2) -> bool:
    gradient, claimed = ce_gradient(K, d)
    return all(sp.simplify(e) == 0 for e in gradient - claimed)


# -- 2. logits under the symmetric ansatz --------------------------------------------------


def ansatz_logits():
    r"""Logits :math:`(z_c, z_{c'}, z_o)` of :math:`h = a w_c + b w_{c'}` for a simplex ETF.

    Derived from the Gram entries :math:`\langle w_j, w_k\rangle = g(\delta_{jk} - 1/K)`.
    """
    S = symbols()

    def gram(same: bool):
        return S.g * ((1 if same else 0) - 1 / S.K)

    z_c = S.a * gram(True) + S.b * gram(False)
    z_cp = S.a * gram(False) + S.b * gram(True)
    z_o = S.a * gram(False) + S.b * gram(False)
    return z_c, z_cp, z_o


def check_ansatz_logits() -> bool:
    r"""Check the logits against an explicit 4-class ETF in :math:`\mathbb{R}^4`."""
    S = symbols()
    K = 4
    s = sp.Symbol("s", positive=True)
    W = s * sp.sqrt(sp.Rational(K, K - 1)) * (sp.eye(K) - sp.ones(K, K) / K)
    h = S.a * W[0, :].T + S.b * W[1, :].T
    z = W * h
    g = s**2 * sp.Rational(K, K - 1)
    claimed = [e.subs({S.K: K, S.g: g}) for e in ansatz_logits()]
    return all(
        sp.simplify(z[i] - claimed[j]) == 0 for i, j in ((0, 0), (1, 1), (2, 2), (3, 2))
    )


# -- 3. reduced objective and its gradient ---------------------------------------------------


def reduced_objective():
    r""":math:`f(a,b) = \operatorname{lse}(z) - \lambda z_c - (1-\lambda) z_{c'} + \frac{\lambda_H}{2}\|a w_c + b w_{c'}\|^2`.

    Uses :math:`\|h\|^2 = s^2(a^2 + b^2 - 2ab/(K-1))` with :math:`s^2 = g(K-1)/K`.
    """
    S = symbols()
    z_c, z_cp, z_o = ansatz_logits()
    lse = sp.log(sp.exp(z_c) + sp.exp(z_cp) + (S.K - 2) * sp.exp(z_o))
    s2 = S.g * (S.K - 1) / S.K
    norm2 = s2 * (S.a**2 + S.b**2 - 2 * S.a * S.b / (S.K - 1))
    return lse - S.lam * z_c - (1 - S.lam) * z_cp + S.lam_H / 2 * norm2


def residuals():
    r"""The reduced equations (docs/theory.md section 2) as residuals :math:`(R_a, R_b)`, zero there."""
    S = symbols()
    D = sp.exp(S.g * S.a) + sp.exp(S.g * S.b) + S.K - 2
    R_a = S.lam_H * S.a - S.lam + (sp.exp(S.g * S.a) - 1) / D
    R_b = S.lam_H * S.b - (1 - S.lam) + (sp.exp(S.g * S.b) - 1) / D
    return R_a, R_b


def check_gradient_identity() -> bool:
    r"""Prove :math:`\nabla f = \frac gK\begin{pmatrix}K-1&-1\\-1&K-1\end{pmatrix}(R_a, R_b)^\top`."""
    S = symbols()
    f = reduced_objective()
    R_a, R_b = residuals()
    grad_a, grad_b = sp.diff(f, S.a), sp.diff(f, S.b)
    claim_a = S.g / S.K * ((S.K - 1) * R_a - R_b)
    claim_b = S.g / S.K * ((S.K - 1) * R_b - R_a)
    return is_zero(grad_a - claim_a) and is_zero(grad_b - claim_b)


def gradient_matrix_determinant():
    """Determinant of the matrix linking the gradient to the residuals: K (K - 2)."""
    S = symbols()
    return sp.factor(sp.Matrix([[S.K - 1, -1], [-1, S.K - 1]]).det())


# -- 4. symmetry, the boundary at lam = 1/2, amplification ------------------------------------


def check_swap_symmetry() -> bool:
    r""":math:`R_b(\lambda; a, b) = R_a(1-\lambda; b, a)`, hence :math:`b(\lambda) = a(1-\lambda)`."""
    S = symbols()
    R_a, R_b = residuals()
    swapped = R_a.subs({S.lam: 1 - S.lam, S.a: S.b, S.b: S.a}, simultaneous=True)
    return sp.simplify(swapped - R_b) == 0


def check_half_is_boundary() -> bool:
    r"""At :math:`\lambda = 1/2` and :math:`a = b`, :math:`R_a = R_b` and :math:`z_c = z_{c'}`."""
    S = symbols()
    R_a, R_b = residuals()
    on_diagonal = {S.lam: sp.Rational(1, 2), S.b: S.a}
    z_c, z_cp, _ = ansatz_logits()
    return (
        sp.simplify((R_a - R_b).subs(on_diagonal)) == 0
        and sp.simplify((z_c - z_cp).subs(on_diagonal)) == 0
    )


def check_amplified() -> bool:
    r"""The lam = 1/2 feature lies beyond the midpoint of the two class features.

    At :math:`\lambda = 1/2`, :math:`u = ga` solves :math:`2tu(2e^u + K - 2) = K`; the same-class
    :math:`u_s` solves :math:`tu_s(e^{u_s}+K-1) = K`. The left side of the first, at
    :math:`u = u_s/2 = x`, is :math:`tu_s(2e^x + K - 2)`, smaller than :math:`tu_s(e^{2x} + K-1) = K`
    by :math:`tu_s(e^x-1)^2 > 0`; it increases in :math:`u`, so :math:`u > u_s/2`.
    """
    S = symbols()
    K, x = S.K, S.x
    # the lam = 1/2 equation, derived from R_a with b = a: R_a * 2D = (2tu(2e^u+K-2) - K)/1
    R_a, _ = residuals()
    half = R_a.subs({S.lam: sp.Rational(1, 2), S.b: S.a})
    D_half = 2 * sp.exp(S.g * S.a) + K - 2
    scalar = 2 * (S.lam_H / S.g) * (S.g * S.a) * D_half - K
    derived = is_zero(half * 2 * D_half - scalar)
    gap = (sp.exp(2 * x) + K - 1) - (2 * sp.exp(x) + K - 2)
    return derived and sp.simplify(gap - (sp.exp(x) - 1) ** 2) == 0


# -- 5. same-class pairs -----------------------------------------------------------------


def same_class_equation():
    r"""Stationarity for :math:`c = c'`, :math:`h = a w_c`: returns :math:`\lambda_H a (e^{ga}+K-1) - K`.

    Derived from the objective :math:`\operatorname{lse}(z) - z_c + \frac{\lambda_H}{2}s^2a^2`
    (the target :math:`\lambda e_c + (1-\lambda)e_c = e_c` does not contain :math:`\lambda`).
    """
    S = symbols()
    z_c = S.g * S.a * (1 - 1 / S.K)
    z_o = -S.g * S.a / S.K
    target_weight = sp.simplify(S.lam + (1 - S.lam))  # = 1: lam drops out
    s2 = S.g * (S.K - 1) / S.K
    f = sp.log(sp.exp(z_c) + (S.K - 1) * sp.exp(z_o)) - target_weight * z_c
    f += S.lam_H / 2 * s2 * S.a**2
    derivative = sp.diff(f, S.a)
    # derivative = (g (K-1)/K) [ lam_H a - K/(e^{ga} + K - 1) ]
    factor = S.g * (S.K - 1) / S.K
    equation = sp.simplify(derivative / factor * (sp.exp(S.g * S.a) + S.K - 1))
    return sp.simplify(sp.powsimp(sp.expand(equation), force=True))


def check_same_class_lam_independent() -> bool:
    S = symbols()
    expected = S.lam_H * S.a * (sp.exp(S.g * S.a) + S.K - 1) - S.K
    equation = same_class_equation()
    return S.lam not in equation.free_symbols and is_zero(equation - expected)


# -- 6. squared error: an exact convex combination ----------------------------------------


def mse_features(K: int = 3):
    r"""Squared-error optimum :math:`(W^\top W + \lambda_H I)^{-1}W^\top y` for an explicit ETF.

    Returns ``(h, h_c, h_c_prime)`` for the canonical K-class ETF in :math:`\mathbb{R}^K` with
    row norm :math:`s`, classes 0 and 1, soft target :math:`\lambda e_0 + (1-\lambda)e_1`.
    """
    S = symbols()
    W = S.s * sp.sqrt(sp.Rational(K, K - 1)) * (sp.eye(K) - sp.ones(K, K) / K)
    y = sp.zeros(K, 1)
    y[0], y[1] = S.lam, 1 - S.lam
    A = W.T * W + S.lam_H * sp.eye(K)
    h = A.LUsolve(W.T * y)
    g = S.s**2 * sp.Rational(K, K - 1)
    h_c = W[0, :].T / (g + S.lam_H)
    h_cp = W[1, :].T / (g + S.lam_H)
    return sp.simplify(h), h_c, h_cp


def check_mse_convex_combination(K: int = 3) -> bool:
    h, h_c, h_cp = mse_features(K)
    S = symbols()
    return all(sp.simplify(e) == 0 for e in h - (S.lam * h_c + (1 - S.lam) * h_cp))


# -- 7. the log-q form used numerically ----------------------------------------------------


def log_q_form():
    r"""Equations of :mod:`ufm.theory.reduced_equations` in :math:`u=ga, v=gb, t=\lambda_H/g, q=1/D`.

    Returns ``(eq_u, eq_v, eq_sum)`` as expressions equal to zero:
    :math:`tu + q(e^u-1) - \lambda`, :math:`tv + q(e^v-1) - (1-\lambda)`, :math:`t(u+v) - Kq`.
    """
    S = symbols()
    eq_u = S.t * S.u + S.q * (sp.exp(S.u) - 1) - S.lam
    eq_v = S.t * S.v + S.q * (sp.exp(S.v) - 1) - (1 - S.lam)
    eq_sum = S.t * (S.u + S.v) - S.K * S.q
    return eq_u, eq_v, eq_sum


def check_log_q_form() -> bool:
    r"""The log-q equations imply :math:`qD = 1` and eq_u is THEORY's first residual.

    From eq_u + eq_v and eq_sum: :math:`q(e^u + e^v + K - 2) - 1 = (\text{eq}_u+\text{eq}_v) - \text{eq}_{sum}`;
    with :math:`q = 1/D`, :math:`t = \lambda_H/g`, :math:`u = ga`, eq_u is exactly :math:`R_a`.
    """
    S = symbols()
    eq_u, eq_v, eq_sum = log_q_form()
    consistency = S.q * (sp.exp(S.u) + sp.exp(S.v) + S.K - 2) - 1
    first = sp.simplify((eq_u + eq_v - eq_sum) - consistency) == 0
    R_a, _ = residuals()
    D = sp.exp(S.u) + sp.exp(S.v) + S.K - 2
    substituted = eq_u.subs(S.q, 1 / D).subs(
        {S.t: S.lam_H / S.g, S.u: S.g * S.a, S.v: S.g * S.b}, simultaneous=True
    )
    second = is_zero(substituted - R_a)
    return first and second


# -- 8. asymptotics --------------------------------------------------------------------------


def same_class_leading_order():
    r"""Leading order of :math:`tu(e^u+K-1) = K` as :math:`t\to 0`: :math:`u e^u = K/t`, so
    :math:`u = W_0(K/t)`. Returns SymPy's solution of :math:`ue^u = K/t`."""
    S = symbols()
    solutions = sp.solve(sp.Eq(S.u * sp.exp(S.u), S.K / S.t), S.u)
    return solutions[0]


def margin_limit():
    r"""Limit of the exact margin identity :math:`\Delta = \log\frac{\lambda - tu + q}{1-\lambda-tv+q}`
    when :math:`tu, tv, q \to 0`: the log-odds :math:`\log(\lambda/(1-\lambda))`."""
    S = symbols()
    eps = sp.Symbol("epsilon", positive=True)
    delta = sp.log((S.lam - eps * S.u + eps) / (1 - S.lam - eps * S.v + eps))
    return sp.limit(delta, eps, 0)


# -- 9. mixtures: the pair is the case m = 2 ---------------------------------------------------


def check_mixture_is_pair() -> bool:
    r"""For :math:`m = 2`, :math:`(a_1, a_2, y_1) = (a, b, \lambda)` turns the m-class residuals
    (:func:`~ufm.theory.mixture_derivation.mixture_residuals`) into :func:`residuals`."""
    S = symbols()
    (a_1, a_2), (y_1, _) = mixture_derivation.mixture_symbols(2)
    pair = {a_1: S.a, a_2: S.b, y_1: S.lam}
    mixed = mixture_derivation.mixture_residuals(2)
    return all(sp.simplify(R.subs(pair) - P) == 0 for R, P in zip(mixed, residuals()))
