r"""Symbolic derivation (SymPy) of the reduced theory of minority collapse (docs/theory.md
section 13, computed by :mod:`ufm.theory.minority`).

Each ``check_*`` function proves one step for given group sizes :math:`k_A, k_B` (the
identities hold for every size; SymPy checks them one size at a time, with the eigenvalues,
penalties and logits as symbols) and returns ``True`` when the difference simplifies to zero.
They are re-exported by :mod:`ufm.theory.derivation` (``ufm.symbolic``).
``notebooks/06_minority_collapse.ipynb`` runs every step and then checks the numbers.

Steps
-----
1. :func:`check_gram_spectrum`: :math:`G = \mu_A P_A + \mu_B P_B + \mu_0 ee^\top` has the three
   projectors as orthogonal eigenspaces summing to :math:`I - \mathbf 1\mathbf 1^\top/K`, so
   :math:`G\mathbf 1 = 0`, :math:`\operatorname{tr} G = (k_A-1)\mu_A + (k_B-1)\mu_B + \mu_0`,
   and :math:`G^+ = \sum_i \Pi_i/\mu_i` satisfies :math:`GG^+G = G`.
2. :func:`check_gram_entries`: the entries of G (row norms and the three cosines' numerators),
   and the minority cosine :math:`-1/(K-1)` at equal eigenvalues.
3. :func:`check_feature_norm`: for :math:`h = W^\top u`, :math:`\|h\|^2 = z^\top G^+ z` with
   :math:`z = Wh = Gu`: the penalty depends on W only through G.
4. :func:`check_cell_forms`: for every kind of sample, :math:`S^\top \Pi_i S` equals the cell
   formula the solver uses (:math:`\operatorname{diag}(a) - aa^\top/k`, and the outer product
   of :math:`S^\top e`).
5. :func:`check_envelope`: on a model per-sample problem (a quadratic loss in the logit of one
   eigenspace) the derivative of the optimal value in :math:`\mu` is
   :math:`-\frac{\lambda_H}2 \zeta^{*2}/\mu^2`, its limit at :math:`\mu \to 0^+` is
   :math:`-\gamma^2/(2\lambda_H)` with :math:`\gamma` the loss gradient at zero logit, and the
   balance :math:`\mu = \sqrt{\lambda_H E/(\lambda_W d)}` solves
   :math:`\partial F/\partial\mu = 0`.
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "check_cell_forms",
    "check_envelope",
    "check_feature_norm",
    "check_gram_entries",
    "check_gram_spectrum",
    "minority_gram",
]


def _eigen_symbols():
    return sp.symbols("mu_A mu_B mu_0", positive=True)


def _projectors(k_A: int, k_B: int):
    """P_A, P_B and e e^T as exact K x K SymPy matrices."""
    K = k_A + k_B
    one_A = sp.Matrix([1] * k_A + [0] * k_B)
    one_B = sp.Matrix([0] * k_A + [1] * k_B)
    P_A = sp.diag(*one_A) - one_A * one_A.T / k_A
    P_B = sp.diag(*one_B) - one_B * one_B.T / k_B
    e = (k_B * one_A - k_A * one_B) / sp.sqrt(k_A * k_B * K)
    return P_A, P_B, e * e.T


def minority_gram(k_A: int, k_B: int):
    r"""The invariant Gram matrix :math:`\mu_A P_A + \mu_B P_B + \mu_0 ee^\top` (symbolic)."""
    mu_A, mu_B, mu_0 = _eigen_symbols()
    P_A, P_B, E = _projectors(k_A, k_B)
    return mu_A * P_A + mu_B * P_B + mu_0 * E


def _zero(matrix) -> bool:
    return all(sp.simplify(entry) == 0 for entry in matrix)


def check_gram_spectrum(k_A: int, k_B: int) -> bool:
    """Step 1: orthogonal projectors, G 1 = 0, the trace, and the pseudo-inverse."""
    K = k_A + k_B
    mu = _eigen_symbols()
    projectors = _projectors(k_A, k_B)
    G = minority_gram(k_A, k_B)
    ones = sp.ones(K, 1)
    pinv = sum((P / m for P, m in zip(projectors, mu)), sp.zeros(K, K))
    checks = [
        _zero(sum(projectors, sp.zeros(K, K)) - (sp.eye(K) - ones * ones.T / K)),
        _zero(G * ones),
        sp.simplify(G.trace() - ((k_A - 1) * mu[0] + (k_B - 1) * mu[1] + mu[2])) == 0,
        _zero(G * pinv * G - G),
    ]
    for i, P in enumerate(projectors):
        checks.append(_zero(P * P - P))
        checks.append(_zero(G * P - mu[i] * P))
        for Q in projectors[i + 1:]:
            checks.append(_zero(P * Q))
    return all(checks)


def check_gram_entries(k_A: int, k_B: int) -> bool:
    """Step 2: the entries of G and the minority cosine at equal eigenvalues."""
    K = k_A + k_B
    mu_A, mu_B, mu_0 = _eigen_symbols()
    G = minority_gram(k_A, k_B)
    a, b = 0, K - 1
    expected = {
        (a, a): mu_A * (1 - sp.Rational(1, k_A)) + mu_0 * sp.Rational(k_B, k_A * K),
        (b, b): mu_B * (1 - sp.Rational(1, k_B)) + mu_0 * sp.Rational(k_A, k_B * K),
        (a, b): -mu_0 / K,
    }
    if k_A > 1:
        expected[(a, 1)] = -mu_A / k_A + mu_0 * sp.Rational(k_B, k_A * K)
    if k_B > 1:
        expected[(b, K - 2)] = -mu_B / k_B + mu_0 * sp.Rational(k_A, k_B * K)
    checks = [sp.simplify(G[i, j] - value) == 0 for (i, j), value in expected.items()]
    if k_B > 1:
        equal = {mu_A: mu_0, mu_B: mu_0}
        cosine = (G[b, K - 2] / G[b, b]).subs(equal)
        checks.append(sp.simplify(cosine + sp.Rational(1, K - 1)) == 0)
    return all(checks)


def check_feature_norm(k_A: int, k_B: int) -> bool:
    r"""Step 3: :math:`u^\top G u = (Gu)^\top G^+ (Gu)` for a symbolic u."""
    K = k_A + k_B
    mu = _eigen_symbols()
    G = minority_gram(k_A, k_B)
    pinv = sum((P / m for P, m in zip(_projectors(k_A, k_B), mu)), sp.zeros(K, K))
    u = sp.Matrix(sp.symbols(f"u_0:{K}", real=True))
    z = G * u
    return sp.simplify((u.T * G * u)[0] - (z.T * pinv * z)[0]) == 0


def _cell_indicator(K: int, k_A: int, cells):
    """S (K x 4) with one column per cell, cells given as lists of class indices."""
    S = sp.zeros(K, 4)
    for j, members in enumerate(cells):
        for k in members:
            S[k, j] = 1
    return S


def _sample_cells(k_A: int, k_B: int):
    """The cells of the six kinds of sample: c, c', the rest of A, the rest of B."""
    K = k_A + k_B
    A, B = list(range(k_A)), list(range(k_A, K))
    kinds = []
    for c_group, cp_group in (("A", "A"), ("A", "B"), ("B", "A"), ("B", "B")):
        for same in (True, False):
            pool = {"A": A, "B": B}
            c = pool[c_group][0]
            if same and c_group != cp_group:
                continue
            if same:
                taken = [c]
                cp_cell = []
            else:
                options = [k for k in pool[cp_group] if k != c]
                if not options:
                    continue
                taken = [c, options[0]]
                cp_cell = [options[0]]
            kinds.append([[c], cp_cell, [k for k in A if k not in taken],
                          [k for k in B if k not in taken]])
    return kinds


def check_cell_forms(k_A: int, k_B: int) -> bool:
    r"""Step 4: :math:`S^\top P_A S = \operatorname{diag}(a) - aa^\top/k_A` (and for B), and
    :math:`S^\top ee^\top S = (S^\top e)(S^\top e)^\top` with
    :math:`(S^\top e)_j = (k_B a_j - k_A b_j)/\sqrt{k_A k_B K}`, for every kind of sample."""
    K = k_A + k_B
    P_A, P_B, E = _projectors(k_A, k_B)
    checks = []
    for cells in _sample_cells(k_A, k_B):
        S = _cell_indicator(K, k_A, cells)
        a = sp.Matrix([sum(1 for k in cell if k < k_A) for cell in cells])
        b = sp.Matrix([sum(1 for k in cell if k >= k_A) for cell in cells])
        checks.append(_zero(S.T * P_A * S - (sp.diag(*a) - a * a.T / k_A)))
        checks.append(_zero(S.T * P_B * S - (sp.diag(*b) - b * b.T / k_B)))
        v = (k_B * a - k_A * b) / sp.sqrt(k_A * k_B * K)
        checks.append(_zero(S.T * E * S - v * v.T))
    return all(checks)


def check_envelope() -> bool:
    r"""Step 5, on the model problem :math:`\min_\zeta\ \gamma\zeta + \frac{\kappa}{2}\zeta^2
    + \frac{\lambda_H}{2}\zeta^2/\mu` (a loss with gradient :math:`\gamma` and curvature
    :math:`\kappa` at zero logit): the envelope derivative, its limit at 0, and the balance."""
    zeta = sp.Symbol("zeta", real=True)
    gamma = sp.Symbol("gamma", real=True)
    kappa, lam_H, lam_W, mu, E, d = sp.symbols("kappa lambda_H lambda_W mu E d", positive=True)
    inner = gamma * zeta + kappa * zeta**2 / 2 + lam_H * zeta**2 / (2 * mu)
    best = sp.solve(sp.diff(inner, zeta), zeta)[0]
    value = inner.subs(zeta, best)
    envelope = -lam_H * best**2 / (2 * mu**2)
    checks = [
        sp.simplify(sp.diff(value, mu) - envelope) == 0,
        sp.simplify(sp.limit(envelope, mu, 0, "+") + gamma**2 / (2 * lam_H)) == 0,
    ]
    gradient = lam_W * d / 2 - lam_H * E / (2 * mu**2)
    balance = sp.sqrt(lam_H * E / (lam_W * d))
    checks.append(sp.simplify(gradient.subs(mu, balance)) == 0)
    return all(checks)
