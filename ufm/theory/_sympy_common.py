"""What the two SymPy derivations share: the scalar symbols and the zero test.

:mod:`ufm.theory.derivation` (pairs) and :mod:`ufm.theory.mixture_derivation` (m classes)
spell their symbols alike, so expressions from the two can be compared directly.
"""

from __future__ import annotations

from types import SimpleNamespace

import sympy as sp


def scalar_symbols() -> SimpleNamespace:
    """K, g, lambda_H, s, t, q (positive), epsilon (non-negative) and a (real)."""
    K = sp.Symbol("K", positive=True)
    g, lam_H, s, t, q = sp.symbols("g lambda_H s t q", positive=True)
    eps = sp.Symbol("epsilon", nonnegative=True)
    a = sp.Symbol("a", real=True)
    return SimpleNamespace(K=K, g=g, lam_H=lam_H, s=s, t=t, q=q, eps=eps, a=a)


def is_zero(expr) -> bool:
    r"""Simplify with exponentials combined; SymPy needs help with :math:`e^{ga - g(a+b)/K}`."""
    expr = sp.expand(sp.powsimp(sp.expand(expr), force=True))
    return sp.simplify(sp.together(expr)) == 0
