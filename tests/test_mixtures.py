"""The exact theory of m-class mixtures against independent computations (docs/theory.md section 3).

Precision claims (each asserted as a bound, never as equality of two rounded numbers):

* against a 40-digit mpmath Newton solution of the ORIGINAL equations
  lam_H a_k = (1-eps) y_k - (e^{g a_k} - 1)/D (``reference.mp_mixture_coefficients``):
  <= 1e-12 of the feature norm (observed ~1e-15), K in [3, 1000], m in [2, min(K-1, 8)],
  lam_H in [1e-6, 10], row norm in [0.3, 4], weights at vertices, on edges, equal, inside;
* m = 2 against ``optimal_features`` (the pair theory, its own solver): <= 1e-13;
* against CVXPY (``certify_targets``, SCS at 1e-10): <= 1e-6 relative;
* against a direct float64 trust-region minimisation of the full d-dimensional problem, no
  symmetry assumed: <= 1e-9 relative (the direct method itself is good to ~eps/lam_H);
* stationarity |lam_H h - W^T (y - softmax(Wh))| <= 1e-12 of the row norm.
"""

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
import torch
from reference import (
    direct_minimize,
    mixture_feature_error,
    mp_mixture_coefficients,
    mp_same_class,
    stationarity_residual,
)

import ufm.theory.derivation as sym
import ufm.theory.mixtures as mixtures_module
from ufm.etf import simplex_etf
from ufm.losses import get_loss, mixup_target
from ufm.theory import (
    gain,
    mixture_coefficients,
    mixture_features,
    mixture_target,
    optimal_features,
    same_class_coefficient,
)
from ufm.theory._sympy_common import is_zero
from ufm.theory.certificate import certify, certify_targets, duality_gap_targets


def _weight_kinds(m, rng):
    """Weights anywhere on the simplex: vertex, edge, centre, interior, next to a vertex."""
    vertex = np.eye(m)[int(rng.integers(m))]
    edge = np.zeros(m)
    edge[rng.permutation(m)[:2]] = rng.dirichlet([1.0, 1.0])
    near = np.full(m, 1e-9 / (m - 1))
    near[0] = 1 - 1e-9
    return [vertex, edge, np.full(m, 1.0 / m), rng.dirichlet(np.ones(m)), near]


def _mp_cases(n, seed):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        K = int(rng.choice([3, 4, 10, 100, 1000, int(rng.integers(3, 1001))]))
        m = int(rng.integers(2, min(K - 1, 8) + 1))
        cases.append((K, m, float(10 ** rng.uniform(-6, 1)), float(10 ** rng.uniform(-0.52, 0.6))))
    corners = [
        (K, min(K - 1, 8), lam_H, s)
        for K in (3, 1000)
        for lam_H in (1e-6, 10.0)
        for s in (0.3, 4.0)
    ]
    return cases + corners + [(1000, 2, 1e-6, 4.0), (9, 8, 1e-6, 4.0)]


@pytest.mark.parametrize("K,m,lam_H,scale", _mp_cases(28, seed=7))
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_against_40_digit_mpmath(K, m, lam_H, scale, eps):
    rng = np.random.default_rng(K * 1000 + m)
    weights = np.stack(_weight_kinds(m, rng))
    loss = get_loss("label_smoothing", eps=eps) if eps else "ce"
    a = mixture_coefficients(K, weights, lam_H, scale, loss=loss)
    assert a.shape == weights.shape
    for row, w in zip(a, weights):
        ref = mp_mixture_coefficients(K, w, lam_H, scale, start=row, smoothing=eps)
        error = mixture_feature_error(K, scale, [mp.mpf(float(x)) - r for x, r in zip(row, ref)])
        assert error <= 1e-12 * mixture_feature_error(K, scale, ref)


def test_mpmath_reference_does_not_depend_on_the_float64_start():
    K, lam_H, scale = 10, 5e-3, 1.0
    w = np.array([0.5, 0.3, 0.2])
    a = mixture_coefficients(K, w, lam_H, scale)
    crude = mp_mixture_coefficients(K, w, lam_H, scale, start=[1.0, 1.0, 1.0])
    assert max(abs(float(c) - x) for c, x in zip(crude, a)) <= 1e-14 * a.max()


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "mse"])
@pytest.mark.parametrize(
    "K,lam_H,scale", [(3, 1e-6, 4.0), (10, 5e-3, 1.0), (1000, 1e-4, 0.3), (50, 10.0, 2.0)]
)
def test_pairs_equal_the_pair_theory(loss, K, lam_H, scale):
    W = simplex_etf(K, K + 1, scale=scale, seed=1)
    lam = torch.tensor([0.0, 1e-12, 0.1, 0.37, 0.5, 0.8, 1.0], dtype=torch.float64)
    pair = optimal_features(W, 0, 2, lam, lam_H, loss=loss)
    mixed = mixture_features(W, [0, 2], torch.stack([lam, 1 - lam], -1), lam_H, loss=loss)
    scale_h = pair.norm(dim=-1).max()
    assert (mixed - pair).norm(dim=-1).max() <= 1e-13 * scale_h
    # a repeated class is the same-class pair
    same = optimal_features(W, 1, 1, lam, lam_H, loss=loss)
    merged = mixture_features(W, [1, 1], torch.stack([lam, 1 - lam], -1), lam_H, loss=loss)
    assert (merged - same).norm(dim=-1).max() <= 1e-13 * scale_h


@pytest.mark.parametrize(
    "K,d,lam_H,scale", [(5, 5, 0.1, 1.0), (8, 9, 1e-2, 1.5), (10, 12, 5e-3, 1.0)]
)
@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "mse"])
def test_against_cvxpy_certificate(K, d, lam_H, scale, loss):
    W = simplex_etf(K, d, scale=scale, seed=K)
    classes = np.array([[0, 1, 2, 3], [4, 0, 2, 2], [1, 3, 4, 0], [0, 1, 2, 3]])
    weights = np.array(
        [[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.25, 0.25], [0.25] * 4, [0.0, 0.0, 1.0, 0.0]]
    )
    H = mixture_features(W, classes, weights, lam_H, loss=loss)
    certificate = certify_targets(W, mixture_target(classes, weights, K), lam_H, loss=loss)
    relative = np.linalg.norm(certificate.h - H.numpy(), axis=1) / H.norm(dim=1).numpy()
    assert relative.max() <= 1e-6
    assert (
        np.linalg.norm(certificate.h - H.numpy(), axis=1) <= certificate.feature_error_bound
    ).all()


def test_certify_targets_agrees_with_the_pair_certificate():
    W = simplex_etf(6, 7, seed=0)
    c, cp = torch.tensor([0, 2, 3]), torch.tensor([1, 2, 5])
    lam = torch.tensor([0.3, 0.6, 0.5], dtype=torch.float64)
    by_pairs = certify(W, c, cp, lam, 1e-2)
    by_targets = certify_targets(W, mixup_target(c, cp, lam, 6), 1e-2)
    assert np.abs(by_pairs.h - by_targets.h).max() <= 1e-8 * np.abs(by_pairs.h).max()


@pytest.mark.parametrize(
    "K,d,m,lam_H,scale",
    [
        (4, 4, 4, 1e-2, 1.0),
        (5, 5, 3, 1e-3, 1.0),
        (10, 12, 8, 5e-3, 2.0),
        (6, 7, 6, 0.5, 0.5),
        (20, 25, 5, 1e-4, 3.0),
        (3, 2, 2, 1e-6, 1.0),
        (7, 6, 7, 1e-3, 0.3),
    ],
)
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_against_direct_minimisation(K, d, m, lam_H, scale, eps):
    W = simplex_etf(K, d, scale=scale, seed=3)
    rng = np.random.default_rng(K + m)
    classes = rng.permutation(K)[:m]
    kinds = _weight_kinds(m, rng)
    # for m = K equal weights give h = 0, which has no relative error; see the m = K test
    for w in kinds[1:2] + kinds[3:] if m == K else kinds[1:]:
        loss = get_loss("label_smoothing", eps=eps) if eps else "ce"
        h = mixture_features(W, classes, w, lam_H, loss=loss).numpy()
        y = (1 - eps) * mixture_target(classes, w, K).numpy() + eps / K
        direct = direct_minimize(W.numpy(), y, lam_H)
        assert np.linalg.norm(direct - h) <= 1e-9 * np.linalg.norm(direct)


@pytest.mark.parametrize(
    "K,lam_H,scale",
    [(3, 1e-6, 4.0), (10, 5e-3, 1.0), (100, 1e-4, 3.0), (1000, 1e-6, 0.3), (30, 10.0, 2.0)],
)
def test_stationarity_residual_for_many_mixtures_at_once(K, lam_H, scale):
    W = simplex_etf(K, K + 2, scale=scale, seed=4)
    rng = np.random.default_rng(K)
    m = min(K, 8)
    classes = np.stack([rng.permutation(K)[:m] for _ in range(400)])
    weights = rng.dirichlet(np.full(m, 0.3), size=400)
    H = mixture_features(W, classes, weights, lam_H)
    y = mixture_target(classes, weights, K)
    assert stationarity_residual(W, H, y, lam_H).max() <= 1e-12 * scale


@pytest.mark.parametrize(
    "K,m,lam_H,scale",
    [
        (3, 2, 1e-6, 4.0),
        (10, 3, 5e-3, 1.0),
        (10, 9, 1e-3, 2.0),
        (1000, 8, 1e-6, 0.3),
        (50, 5, 10.0, 0.5),
    ],
)
def test_equal_weights_lie_on_every_boundary(K, m, lam_H, scale):
    W = simplex_etf(K, K + 1, scale=scale, seed=5)
    classes = np.random.default_rng(m).permutation(K)[:m]
    h = mixture_features(W, classes, np.full(m, 1.0 / m), lam_H)
    z = W[torch.as_tensor(classes)] @ h
    logit_scale = gain(K, scale) * same_class_coefficient(K, lam_H, scale)
    assert (z.max() - z.min()).item() <= 1e-12 * logit_scale
    # and the m classes share the top: every other logit is lower
    others = np.setdiff1d(np.arange(K), classes)
    assert (W[torch.as_tensor(others)] @ h).max() < z.min()


@pytest.mark.parametrize("K,lam_H,scale", [(2, 1e-2, 1.0), (4, 1e-6, 4.0), (12, 5e-3, 1.0)])
def test_full_mixture_determines_the_features_only(K, lam_H, scale):
    W = simplex_etf(K, K, scale=scale, seed=6)
    classes = np.arange(K)
    h_equal = mixture_features(W, classes, np.full(K, 1.0 / K), lam_H)
    a_same = same_class_coefficient(K, lam_H, scale)
    assert h_equal.norm() <= 1e-13 * scale * a_same  # h = a sum_k w_k = 0
    w = np.random.default_rng(K).dirichlet(np.ones(K))
    a = mixture_coefficients(K, w, lam_H, scale)
    # any common shift represents the same feature; the direct minimiser sees only h
    h = mixture_features(W, classes, w, lam_H).numpy()
    shifted = ((torch.as_tensor(a) + 3.0) @ W).numpy()
    direct = direct_minimize(W.numpy(), w, lam_H)
    assert np.linalg.norm(h - direct) <= 1e-9 * np.linalg.norm(direct)
    assert np.linalg.norm(shifted - direct) <= 1e-9 * np.linalg.norm(direct)


@pytest.mark.parametrize(
    "K,d,lam_H,scale", [(3, 3, 0.1, 1.0), (10, 16, 5e-3, 2.0), (100, 100, 1e-6, 0.3)]
)
def test_squared_error_gives_exact_convex_combinations(K, d, lam_H, scale):
    W = simplex_etf(K, d, scale=scale, seed=9)
    rng = np.random.default_rng(K)
    classes = np.stack([rng.permutation(K)[:3] for _ in range(20)])
    weights = rng.dirichlet(np.ones(3), size=20)
    H = mixture_features(W, classes, weights, lam_H, loss="mse")
    class_features = optimal_features(W, torch.arange(K), torch.arange(K), 1.0, lam_H, loss="mse")
    combination = torch.einsum("nk,nkd->nd", torch.as_tensor(weights), class_features[classes])
    h_scale = class_features.norm(dim=-1).max()
    assert (H - combination).norm(dim=-1).max() <= 1e-14 * h_scale
    y = mixture_target(classes, weights, K)
    ridge = torch.linalg.solve(W.T @ W + lam_H * torch.eye(d, dtype=torch.float64), W.T @ y.T).T
    # the linear solve itself is good to about eps times the condition number (g + lam_H)/lam_H
    condition = (gain(K, scale) + lam_H) / lam_H
    assert (H - ridge).norm(dim=-1).max() <= 50 * np.finfo(float).eps * condition * h_scale


def test_repeated_classes_merge_and_zero_weights_drop_out():
    W = simplex_etf(7, 8, seed=2)
    lam_H = 1e-3
    repeated = mixture_features(W, [0, 1, 0, 1], [0.2, 0.5, 0.1, 0.2], lam_H)
    zero = mixture_features(W, [0, 1, 5, 6], [0.3, 0.7, 0.0, 0.0], lam_H)
    pair = optimal_features(W, 0, 1, 0.3, lam_H)
    assert (repeated - pair).norm() <= 1e-13 * pair.norm()
    assert (zero - pair).norm() <= 1e-13 * pair.norm()
    direct = direct_minimize(
        W.numpy(), mixture_target([0, 1, 0, 1], [0.2, 0.5, 0.1, 0.2], 7).numpy(), lam_H
    )
    assert np.linalg.norm(repeated.numpy() - direct) <= 1e-9 * np.linalg.norm(direct)
    vertex = mixture_features(W, [3, 4, 2], [0.0, 1.0, 0.0], lam_H)
    a_same = same_class_coefficient(7, lam_H)
    assert (vertex - a_same * W[4]).norm() <= 1e-13 * a_same * W[4].norm()


def test_same_class_coefficient_matches_mpmath_for_a_single_class():
    K, lam_H, scale = 10, 5e-3, 1.0
    (a,) = mixture_coefficients(K, [1.0], lam_H, scale)
    ref = mp_same_class(K, lam_H, scale, start=a)
    assert abs(a - float(ref)) <= 1e-14 * float(ref)


def test_gap_of_the_exact_mixture_optimum_is_at_rounding_level():
    W = simplex_etf(6, 6, seed=2)
    classes = np.array([[0, 1, 2], [3, 4, 5], [0, 0, 5]])
    weights = np.array([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3], [0.4, 0.4, 0.2]])
    H = mixture_features(W, classes, weights, 1e-2)
    y = mixture_target(classes, weights, 6)
    primal, _, gap = duality_gap_targets(W, H, y, 1e-2)
    # P and D are sums of terms as large as the logits (logsumexp z, y . z, ...), so their
    # difference is at the rounding level of the logit scale, not of P
    assert np.abs(gap).max() <= 1e-14 * float((H @ W.T).abs().max())
    _, _, off = duality_gap_targets(W, 1.05 * H, y, 1e-2)
    assert (off > 1e-6).all()


def test_no_overflow_or_nan_at_the_extremes():
    rng = np.random.default_rng(0)
    for K in (2, 3, 1000):
        for lam_H in (1e-12, 1e-6, 10.0, 1e3):
            for scale in (0.05, 4.0, 20.0):
                for m in sorted({1, 2, min(K, 8), K}):
                    w = np.concatenate(
                        [rng.dirichlet(np.ones(m), 20), np.eye(m), np.full((1, m), 1 / m)]
                    )
                    a = mixture_coefficients(K, w, lam_H, scale)
                    assert np.isfinite(a).all() and (a >= 0).all()
    W = simplex_etf(1000, 1000, scale=4.0)
    H = mixture_features(W, np.arange(8), np.full(8, 1 / 8), 1e-6)
    assert torch.isfinite(H).all()


def test_shapes_broadcasting_dtypes_and_the_input_is_not_modified():
    K, d = 6, 7
    W = simplex_etf(K, d, seed=3)
    before = W.clone()
    weights = np.random.default_rng(1).dirichlet(np.ones(3), size=(4, 5))
    H = mixture_features(W, np.array([0, 3, 5]), weights, 1e-2)  # classes broadcast
    assert H.shape == (4, 5, d) and H.dtype == torch.float64 and torch.equal(W, before)
    single = mixture_features(W, [0, 3, 5], weights[2, 1], 1e-2)
    assert single.shape == (d,)
    assert (H[2, 1] - single).norm() <= 1e-15 * single.norm() * 4
    H32 = mixture_features(W.float(), [0, 3, 5], torch.as_tensor(weights[2, 1]), 1e-2)
    assert H32.dtype == torch.float32 and (H32.double() - single).norm() <= 1e-6 * single.norm()
    assert mixture_features(W, np.zeros((0, 3), int), np.zeros((0, 3)), 1e-2).shape == (0, d)
    assert mixture_target([[1, 2]], [[0.25, 0.75]], K).shape == (1, K)


def _refuse(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "classes,weights,message",
    [
        ([0, 1, 2], [0.5, 0.6, -0.1], "weights must be >= 0, found -0.1"),
        ([0, 1, 2], [0.5, np.nan, 0.5], "weights must be finite, found nan"),
        ([0, 1, 2], [0.5, np.inf, 0.5], "weights must be finite, found inf"),
        (
            [0, 1, 2],
            [0.5, 0.3, 0.1],
            "weights must sum to 1 along the last axis (to within 1e-09), found a sum of 0.9",
        ),
        ([0, 1], [0.5, 0.5 + 2e-9], "found a sum of 1.000000002"),
        ([0, 1, 2], [0.5, 0.5], "classes of shape (3,) and weights of shape (2,) disagree"),
        ([[0, 1], [2, 3], [1, 2]], [[0.5, 0.5], [0.5, 0.5]], "disagree"),
        ([0, 5], [0.5, 0.5], "classes must lie in [0, 4], found 5"),
        ([-1, 2], [0.5, 0.5], "classes must lie in [0, 4], found -1"),
        ([0.5, 2], [0.5, 0.5], "classes must hold integer class indices"),
        (np.zeros((2, 0), int), np.zeros((2, 0)), "must lie in [1, K=5], got m=0"),
        (list(range(6)), np.full(6, 1 / 6), "must lie in [1, K=5], got m=6"),
        (0, 1.0, "weights must have shape (..., m) with m >= 1, got a scalar"),
    ],
)
def test_bad_input_is_refused_before_any_work(monkeypatch, classes, weights, message):
    def no_work(*args, **kwargs):
        raise AssertionError("the solver ran before the input was checked")

    monkeypatch.setattr(mixtures_module, "solve_reduced_mixture", no_work)
    W = simplex_etf(5, 5, seed=0)
    _refuse(lambda: mixture_features(W, classes, weights, 1e-2), message)


def test_other_refusals_and_the_stated_sum_tolerance():
    W = simplex_etf(5, 5, seed=0)
    _refuse(
        lambda: mixture_features(W, [0, 1], [0.5, 0.5], 0.0), "lam_H must lie in (0, inf), got 0.0"
    )
    _refuse(lambda: mixture_features(W + 0.1, [0, 1], [0.5, 0.5], 1e-2), "W is not a simplex ETF")
    _refuse(
        lambda: mixture_features(W, [0, 1], [0.5, 0.5], 1e-2, loss="focal"),
        "no exact theory for loss 'focal'",
    )
    _refuse(lambda: mixture_coefficients(1, [1.0], 1e-2), "K must be >= 2, got 1")
    _refuse(
        lambda: mixture_coefficients(4, [0.5, 0.5], 1e-2, scale=-1.0), "scale must lie in (0, inf)"
    )
    _refuse(lambda: mixture_coefficients(2, [0.2, 0.3, 0.5], 1e-2), "[1, K=2], got m=3")
    _refuse(
        lambda: certify_targets(W, [[0.5, 0.6, 0, 0, -0.1]], 1e-2),
        "targets must be >= 0, found -0.1",
    )
    _refuse(
        lambda: certify_targets(W, [[0.5, 0.4, 0, 0, 0]], 1e-2),
        "targets must sum to 1 along the last axis (to within 1e-09), found a sum of 0.9",
    )
    _refuse(
        lambda: certify_targets(W, [[0.5, 0.5]], 1e-2), "targets must have shape (..., K) with K=5"
    )
    _refuse(
        lambda: certify_targets(W, [[1.0, 0, 0, 0, 0]], 1e-2, loss="focal"), "so it has no convex certificate"
    )
    # within the stated tolerance the weights are accepted and divided by their sum
    h = mixture_features(W, [0, 1], [0.3, 0.7 + 5e-10], 1e-2)
    pair = optimal_features(W, 0, 1, 0.3 / (1 + 5e-10), 1e-2)
    assert (h - pair).norm() <= 1e-13 * pair.norm()


# -- the SymPy derivation (ufm.symbolic, step 9) ------------------------------------------------


@pytest.mark.parametrize(
    "check",
    [
        lambda: sym.check_mixture_logits(5, 3),
        lambda: sym.check_mixture_full_gradient(4, 3),
        lambda: sym.check_mixture_full_gradient(3, 3, smoothing=True),
        lambda: sym.check_mixture_gradient_identity(3),
        lambda: sym.check_mixture_gradient_identity(3, smoothing=True),
        lambda: sym.check_mixture_gradient_identity(4),
        sym.check_mixture_is_pair,
        lambda: sym.check_zero_weight_drops_out(3),
        lambda: sym.check_zero_weight_drops_out(2),
        lambda: sym.check_equal_weights_on_every_boundary(4),
        lambda: sym.check_full_mixture_shift(3),
        lambda: sym.check_mixture_mse(4, 3),
        lambda: sym.check_mixture_log_q_form(3),
    ],
)
def test_symbolic_mixture_identity_is_proven(check):
    assert check() is True


def test_symbolic_checks_refuse_a_wrong_identity():
    # the gradient identity without the -sum(R)/K term, and a wrong logit, are not proven
    S = sym.symbols()
    a, _ = sym.mixture_symbols(3)
    f, R = sym.mixture_objective(3), sym.mixture_residuals(3)
    assert not is_zero(sp.diff(f, a[0]) - S.g * R[0])
    assert not is_zero(sp.diff(f, a[0]) - S.g * (R[0] - sum(R) / (S.K + 1)))
    for m in range(1, 7):
        assert sp.simplify(sym.mixture_gradient_determinant(m) - (S.K - m) / S.K) == 0


@pytest.mark.parametrize(
    "K,m,lam_H,scale", [(10, 3, 5e-3, 1.0), (1000, 8, 1e-6, 4.0), (4, 3, 10.0, 0.3)]
)
def test_symbolic_residuals_vanish_at_the_numeric_solution(K, m, lam_H, scale):
    S = sym.symbols()
    a_syms, y_syms = sym.mixture_symbols(m)
    free = [y for y in y_syms if y.is_Symbol]
    residual = sp.lambdify((*a_syms, *free, S.g, S.K, S.lam_H), sym.mixture_residuals(m), "mpmath")
    w = np.random.default_rng(m).dirichlet(np.ones(m))
    a = mixture_coefficients(K, w, lam_H, scale)
    with mp.workdps(40):
        args = [mp.mpf(float(x)) for x in a] + [mp.mpf(float(v)) for v in w[:-1]]
        values = residual(*args, mp.mpf(gain(K, scale)), K, mp.mpf(lam_H))
    # rounding a to float64 moves R_k by at most (lam_H + g) ulp(a); the weights by ulp(y)
    bound = 8 * np.finfo(float).eps * ((lam_H + gain(K, scale)) * a.max() + 1)
    assert max(abs(float(v)) for v in values) <= bound
