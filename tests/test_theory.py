"""The exact theory against independent computations (docs/theory.md sections 2-3).

Precision claims: against a 40-digit mpmath solution of the original reduced equations
<= 1e-12 of the same-class feature norm (observed ~4e-16); against CVXPY <= 1e-6; against a
direct float64 L-BFGS minimisation of the full d-dimensional problem <= 1e-8.
"""

import mpmath as mp
import numpy as np
import pytest
import torch

from reference import (
    direct_minimize,
    feature_error,
    mp_coefficients,
    mp_same_class,
    stationarity_residual,
)
from ufm.theory.certificate import certify
from ufm.etf import simplex_etf
from ufm.losses import get_loss, mixup_target
from ufm.theory import (
    ce_coefficients,
    gain,
    mse_coefficients,
    optimal_coefficients,
    optimal_features,
    same_class_coefficient,
)


def test_theory_md_test_values():
    # docs/theory.md section 2: K = 10, s = 1, lam_H = 5e-3 (15 significant digits given).
    # Agreement to those digits: within one unit of the 15th (1e-14 for values in [1, 10)); the
    # literal is rounded (up to half a unit) and the float64 value carries a few ulps (< 5e-15).
    # (A bare rel= would let pytest's default abs=1e-12 decide instead.)
    assert same_class_coefficient(10, 5e-3) == pytest.approx(5.31546456274407, rel=0, abs=1e-14)
    a, b = ce_coefficients(10, [0.1, 0.5], 5e-3)
    assert a[0] == pytest.approx(2.83152056224835, rel=0, abs=1e-14)
    assert b[0] == pytest.approx(4.88603027008176, rel=0, abs=1e-14)
    assert a[1] == pytest.approx(4.25802933095782, rel=0, abs=1e-14)
    assert b[1] == a[1]  # alpha = beta at lam = 1/2: the same solve on identical inputs


def _grid_cases(n, seed):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        K = int(rng.choice([2, 3, 4, 10, 100, 1000, int(rng.integers(2, 1001))]))
        lam_H = float(10 ** rng.uniform(-8, 1))
        scale = float(10 ** rng.uniform(-1, 1))
        lam = float(rng.choice([0.0, 0.5, 1.0, rng.uniform(), rng.uniform() ** 8, 1e-12]))
        cases.append((K, lam_H, scale, lam))
    corners = [(K, lH, s, lam) for K in (2, 1000) for lH in (1e-8, 10.0) for s in (0.1, 10.0)
               for lam in (0.0, 0.5, 1.0, 0.3)]
    return cases + corners


@pytest.mark.parametrize("K,lam_H,scale,lam", _grid_cases(120, seed=1))
def test_against_40_digit_mpmath(K, lam_H, scale, lam):
    (a,), (b,) = ce_coefficients(K, [lam], lam_H, scale)
    a_same = same_class_coefficient(K, lam_H, scale)
    ref_a, ref_b = mp_coefficients(K, lam, lam_H, scale, start=(a, b))
    ref_same = mp_same_class(K, lam_H, scale, start=a_same)
    same_norm = scale * float(ref_same)
    error = feature_error(K, scale, mp.mpf(float(a)) - ref_a, mp.mpf(float(b)) - ref_b)
    assert error <= 1e-12 * same_norm
    assert abs(a_same - float(ref_same)) <= 1e-12 * float(ref_same)


def test_solution_is_independent_of_the_float64_start():
    # The reference converges to the same root from a crude start: it is not just polishing.
    K, lam_H, scale, lam = 10, 5e-3, 1.0, 0.3
    (a,), (b,) = ce_coefficients(K, [lam], lam_H, scale)
    crude_a, crude_b = mp_coefficients(K, lam, lam_H, scale, start=(2.0, 2.0))
    assert abs(float(crude_a) - a) < 1e-14 * a and abs(float(crude_b) - b) < 1e-14 * b


@pytest.mark.parametrize(
    "K,d,lam_H,scale",
    [(3, 3, 0.1, 1.0), (4, 6, 1e-2, 2.0), (10, 12, 5e-3, 1.0), (7, 6, 0.5, 0.7)],
)
def test_against_cvxpy_certificate(K, d, lam_H, scale):
    W = simplex_etf(K, d, scale=scale, seed=K)
    c = torch.tensor([0, 1, 2, 0])
    cp = torch.tensor([1, 2, 2, 2])
    lam = torch.tensor([0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
    H = optimal_features(W, c, cp, lam, lam_H)
    certificate = certify(W, c, cp, lam, lam_H)
    relative = np.linalg.norm(certificate.h - H.numpy(), axis=1) / H.norm(dim=1).numpy()
    assert relative.max() <= 1e-6


@pytest.mark.parametrize(
    "K,d,lam_H,scale,lam",
    [(2, 3, 0.05, 1.0, 0.3), (3, 2, 1e-2, 1.0, 0.7), (5, 8, 1e-3, 1.0, 0.5),
     (10, 10, 5e-3, 1.0, 0.1), (20, 25, 0.2, 3.0, 0.9), (6, 6, 2.0, 0.5, 0.0)],
)
def test_against_direct_minimisation(K, d, lam_H, scale, lam):
    W = simplex_etf(K, d, scale=scale, seed=2)
    c, cp = 1, 0
    h = optimal_features(W, c, cp, lam, lam_H)
    y = mixup_target(torch.tensor(c), torch.tensor(cp), torch.tensor(lam, dtype=torch.float64), K)
    y = y.numpy()
    direct = direct_minimize(W.numpy(), y, lam_H)
    assert np.linalg.norm(direct - h.numpy()) <= 1e-8 * np.linalg.norm(h.numpy())


@pytest.mark.parametrize("K,lam_H,scale", [(2, 1e-3, 1.0), (10, 5e-3, 1.0), (1000, 1e-8, 10.0),
                                           (50, 10.0, 0.1), (3, 1e-6, 2.0)])
def test_half_lies_on_the_decision_boundary(K, lam_H, scale):
    W = simplex_etf(K, K + 1, scale=scale, seed=5)
    h = optimal_features(W, 0, 1, 0.5, lam_H)
    z = W @ h
    # relative to the same-class logit scale g a_same (for K = 2 the feature itself is 0)
    scale_z = gain(K, scale) * same_class_coefficient(K, lam_H, scale)
    assert abs(z[0] - z[1]) <= 1e-12 * scale_z
    # amplified: beyond the midpoint of the two class features
    a_half = ce_coefficients(K, 0.5, lam_H, scale)[0]
    assert a_half > 0.5 * same_class_coefficient(K, lam_H, scale)


def test_same_class_features_do_not_depend_on_lam():
    W = simplex_etf(6, 9, seed=1)
    lams = torch.linspace(0, 1, 11, dtype=torch.float64)
    H = optimal_features(W, 2, 2, lams, 1e-2)
    assert torch.equal(H, H[:1].expand_as(H))
    a = same_class_coefficient(6, 1e-2)
    # optimal_features reads the row norm back from the rotated W (its gain is a sum of K d
    # rounded squares, a few eps off 6/5) and d log a / d log s is about 2: a few tens of eps
    assert torch.allclose(H[0], a * W[2], rtol=1e-14, atol=0)


def test_continuity_at_lam_zero_and_one():
    K, lam_H = 8, 1e-2
    a, b = ce_coefficients(K, [0.0, 1.0], lam_H)
    a_same = same_class_coefficient(K, lam_H)
    assert (a[0], b[0]) == (0.0, a_same) and (a[1], b[1]) == (a_same, 0.0)
    a_near, _ = ce_coefficients(K, [1 - 1e-9], lam_H)
    assert abs(a_near[0] - a_same) < 1e-6


def test_swap_symmetry():
    lams = np.linspace(0, 1, 41)
    a, b = ce_coefficients(12, lams, 3e-3, 1.3)
    a_rev, b_rev = ce_coefficients(12, 1 - lams, 3e-3, 1.3)
    # Two separate solves, each within about two ulps of the exact coefficient, and 1 - lams is
    # off the exact complement by up to 2^-54 (well under an ulp here): a few ulps apart.
    np.testing.assert_allclose(b, a_rev, rtol=1e-15, atol=0)


@pytest.mark.parametrize("K,d,lam_H,scale", [(3, 3, 0.1, 1.0), (10, 16, 5e-3, 2.0), (2, 2, 1.0, 0.5)])
def test_mse_features_are_exact_convex_combinations(K, d, lam_H, scale):
    W = simplex_etf(K, d, scale=scale, seed=9)
    lams = torch.linspace(0, 1, 9, dtype=torch.float64)
    H = optimal_features(W, 0, 1, lams, lam_H, loss="mse")
    h_c, h_cp = H[-1], H[0]  # lam = 1 and lam = 0
    combination = lams[:, None] * h_c + (1 - lams[:, None]) * h_cp
    # exact up to rounding: each side rounds about five times, on terms no larger than |h_c|
    assert torch.allclose(H, combination, rtol=0, atol=2e-15 * h_c.norm())
    # the ridge formula (W^T W + lam_H I)^{-1} W^T y, solved as a linear system
    y = mixup_target(torch.zeros(9, dtype=torch.long), torch.ones(9, dtype=torch.long), lams, K)
    A = W.T @ W + lam_H * torch.eye(d, dtype=torch.float64)
    solved = torch.linalg.solve(A, W.T @ y.T).T
    # a backward-stable solve is good to a small multiple of cond(A) eps |h|, with
    # cond(A) = (g + lam_H) / lam_H (about 900 for K = 10, lam_H = 5e-3)
    cond_eps = (gain(K, scale) + lam_H) / lam_H * np.finfo(np.float64).eps
    assert torch.allclose(H, solved, rtol=0, atol=10 * cond_eps * h_c.norm())
    a, b = mse_coefficients(K, lams.numpy(), lam_H, scale)
    assert a[-1] == pytest.approx(1 / (gain(K, scale) + lam_H), rel=1e-15, abs=0) and b[-1] == 0


@pytest.mark.parametrize("K,lam_H,scale", [(2, 1e-2, 1.0), (10, 5e-3, 1.0), (100, 1e-4, 3.0),
                                           (1000, 1e-8, 10.0), (30, 10.0, 0.1)])
def test_stationarity_residual(K, lam_H, scale):
    W = simplex_etf(K, K + 3, scale=scale, seed=4)
    lams = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.77, 1.0], dtype=torch.float64)
    c = torch.zeros(6, dtype=torch.long)
    cp = torch.ones(6, dtype=torch.long)
    for pair in ((c, cp), (c, c)):
        H = optimal_features(W, *pair, lams, lam_H)
        y = mixup_target(*pair, lams, K)
        # |lam_H h - W^T(y - p)| in units of the row norm: rounding level
        assert stationarity_residual(W, H, y, lam_H).max() <= 1e-12 * scale


def test_no_overflow_or_nan_at_the_extremes():
    lams = np.array([0.0, 1e-300, 1e-12, 0.25, 0.5, 1 - 1e-12, 1.0])
    for K in (2, 3, 1000):
        for lam_H in (1e-12, 1e-8, 10.0, 1e3):
            for scale in (0.05, 0.1, 10.0, 20.0):
                a, b = ce_coefficients(K, lams, lam_H, scale)
                assert np.isfinite(a).all() and np.isfinite(b).all()
                assert (a >= 0).all() and (b >= 0).all()
    W = simplex_etf(1000, 1000, scale=10.0)
    H = optimal_features(W, torch.arange(3), torch.tensor([1, 1, 999]), 0.5, 1e-8)
    assert torch.isfinite(H).all()


def test_input_classifier_is_never_modified():
    W = simplex_etf(4, 5, seed=1)
    before = W.clone()
    optimal_features(W, 1, 0, 0.3, 0.05)
    optimal_features(W, torch.tensor(2), torch.tensor(2), 0.5, 0.05)
    optimal_features(W, [0, 1], [1, 1], [0.2, 0.9], 0.05, loss="mse")
    assert torch.equal(W, before)


def test_broadcasting_types_and_dtypes():
    K, d = 5, 7
    W = simplex_etf(K, d, seed=3)
    c = np.arange(K)[:, None, None]
    cp = torch.arange(K)[None, :, None]
    lams = [0.0, 0.25, 1.0]
    H = optimal_features(W, c, cp, lams, 1e-2)
    assert H.shape == (K, K, 3, d) and H.dtype == torch.float64
    single = optimal_features(W, 3, 1, 0.25, 1e-2)
    assert single.shape == (d,)
    assert torch.equal(H[3, 1, 1], single)
    H32 = optimal_features(W.float(), 3, 1, torch.tensor(0.25, dtype=torch.float32), 1e-2)
    assert H32.dtype == torch.float32
    # float32 precision (eps32 ~ 1.2e-7) relative to the feature: a component where the two
    # terms a w_c and b w_c' cancel carries the rounding of the terms, not of itself
    assert torch.allclose(H32.double(), single, rtol=1e-6, atol=1e-6 * float(single.norm()))


def test_label_smoothing_theory_against_certificate():
    W = simplex_etf(6, 6, seed=0)
    loss = get_loss("label_smoothing", eps=0.2)
    c, cp = torch.tensor([0, 0, 3]), torch.tensor([1, 0, 2])
    lam = torch.tensor([0.3, 0.6, 0.5], dtype=torch.float64)
    H = optimal_features(W, c, cp, lam, 1e-2, loss=loss)
    certificate = certify(W, c, cp, lam, 1e-2, loss=loss)
    assert np.abs(certificate.h - H.numpy()).max() <= 1e-6 * H.norm(dim=1).max().item()


def test_focal_has_no_exact_theory():
    with pytest.raises(ValueError, match="no exact theory for loss 'focal'"):
        optimal_coefficients(4, 0.5, 1e-2, loss="focal")


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda W: optimal_features(W, 0, 1, 1.5, 1e-2), "lam must lie in [0, 1], found 1.5"),
        (lambda W: optimal_features(W, 0, 1, -0.1, 1e-2), "lam must lie in [0, 1], found -0.1"),
        (lambda W: optimal_features(W, 0, 1, float("nan"), 1e-2), "lam must be finite"),
        (lambda W: optimal_features(W, 0, 1, 0.5, 0.0), "lam_H must lie in (0, inf), got 0.0"),
        (lambda W: optimal_features(W, 0, 1, 0.5, -1.0), "lam_H must lie in (0, inf), got -1.0"),
        (lambda W: optimal_features(W, 0, 1, 0.5, float("inf")), "lam_H must be finite"),
        (lambda W: optimal_features(W, 0, 4, 0.5, 1e-2), "c_prime must lie in [0, 3], found 4"),
        (lambda W: optimal_features(W, -1, 1, 0.5, 1e-2), "c must lie in [0, 3], found -1"),
        (lambda W: optimal_features(W + 0.1, 0, 1, 0.5, 1e-2), "W is not a simplex ETF"),
        (lambda W: optimal_features(W[:1], 0, 0, 0.5, 1e-2), "K >= 2"),
        (lambda W: optimal_features(W[:, :2], 0, 1, 0.5, 1e-2), "d=2 < K-1=3"),
        (lambda W: ce_coefficients(1, 0.5, 1e-2), "K must be >= 2, got 1"),
        (lambda W: ce_coefficients(4, 0.5, 1e-2, scale=-1.0), "scale must lie in (0, inf)"),
        (lambda W: ce_coefficients(4, [0.2, np.inf], 1e-2), "lam must be finite"),
    ],
)
def test_bad_input_is_refused(call, message):
    W = simplex_etf(4, 5, seed=0)
    with pytest.raises(ValueError) as info:
        call(W)
    assert message in str(info.value)


@pytest.mark.parametrize("K,lam_H,scale,lam,eps", [(10, 5e-3, 1.0, 0.3, 0.1), (3, 1e-6, 2.0, 0.5, 0.05),
                                                   (100, 1.0, 0.5, 0.9, 0.3), (2, 1e-3, 1.0, 0.2, 0.1),
                                                   (1000, 1e-8, 10.0, 1.0, 0.01)])
def test_label_smoothing_against_40_digit_mpmath(K, lam_H, scale, lam, eps):
    (a,), (b,) = ce_coefficients(K, [lam], lam_H, scale, smoothing=eps)
    ref_a, ref_b = mp_coefficients(K, lam, lam_H, scale, start=(a, b), smoothing=eps)
    a_same = same_class_coefficient(K, lam_H, scale, smoothing=eps)
    error = feature_error(K, scale, mp.mpf(float(a)) - ref_a, mp.mpf(float(b)) - ref_b)
    assert error <= 1e-12 * scale * a_same
