"""SymPy proves each step of the derivation; the proven equations agree with the numerics."""

import numpy as np
import pytest
import sympy as sp

import ufm.theory.derivation as sym
from ufm.theory import ce_coefficients, gain, mse_coefficients, same_class_coefficient
from ufm.theory._sympy_common import is_zero


@pytest.mark.parametrize(
    "check",
    [
        sym.check_ce_gradient,
        sym.check_ansatz_logits,
        sym.check_gradient_identity,
        sym.check_swap_symmetry,
        sym.check_half_is_boundary,
        sym.check_amplified,
        sym.check_same_class_lam_independent,
        sym.check_mse_convex_combination,
        sym.check_log_q_form,
    ],
)
def test_symbolic_identity_is_proven(check):
    assert check() is True


def test_a_wrong_identity_is_not_proven():
    # guard against a checker that always says True: perturb the claim
    S = sym.symbols()
    R_a, _ = sym.residuals()
    f = sym.reduced_objective()
    wrong = S.g / S.K * (S.K * R_a)
    assert not is_zero(sp.diff(f, S.a) - wrong)


def test_gradient_matrix_determinant_and_asymptotic_forms():
    S = sym.symbols()
    assert sp.simplify(sym.gradient_matrix_determinant() - S.K * (S.K - 2)) == 0
    assert sym.same_class_leading_order() == sp.LambertW(S.K / S.t)
    assert sp.simplify(sym.margin_limit() - sp.log(S.lam / (1 - S.lam))) == 0


@pytest.mark.parametrize("K,lam_H,scale,lam", [(3, 0.1, 1.0, 0.3), (10, 5e-3, 1.0, 0.1),
                                               (50, 1e-4, 2.0, 0.5), (4, 1.0, 0.5, 0.95)])
def test_symbolic_residuals_vanish_at_numeric_solution(K, lam_H, scale, lam):
    S = sym.symbols()
    R_a, R_b = sym.residuals()
    args = (S.a, S.b, S.g, S.K, S.lam, S.lam_H)
    residual = sp.lambdify(args, [R_a, R_b], "mpmath")
    a, b = ce_coefficients(K, lam, lam_H, scale)
    g = gain(K, scale)
    values = residual(float(a), float(b), g, K, lam, lam_H)
    assert max(abs(float(v)) for v in values) <= 1e-13
    same = sp.lambdify((S.a, S.g, S.K, S.lam_H), sym.same_class_equation(), "mpmath")
    assert abs(float(same(same_class_coefficient(K, lam_H, scale), g, K, lam_H))) <= 1e-12 * K


def test_symbolic_mse_matches_numeric_coefficients():
    S = sym.symbols()
    h, h_c, h_cp = sym.mse_features(3)
    values = {S.s: 1.3, S.lam_H: 0.2, S.lam: 0.35}
    numeric = np.array([float(e.subs(values)) for e in h])
    a, b = mse_coefficients(3, 0.35, 0.2, 1.3)
    s = 1.3 * np.sqrt(3 / 2)
    W = s * (np.eye(3) - 1 / 3)
    np.testing.assert_allclose(numeric, a * W[0] + b * W[1], rtol=1e-13)
