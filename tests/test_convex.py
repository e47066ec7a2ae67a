"""Convex certificate: CVXPY solutions, Fenchel gaps, and general (non-ETF) classifiers."""

import numpy as np
import pytest
import torch

from reference import direct_minimize
from ufm.theory.certificate import certify, duality_gap
from ufm.etf import simplex_etf
from ufm.losses import mixup_target
from ufm.theory import optimal_features


def test_gap_of_exact_theory_is_at_rounding_level_and_positive_elsewhere():
    W = simplex_etf(5, 6, seed=2)
    c, cp = torch.tensor([0, 1, 4]), torch.tensor([1, 1, 2])
    lam = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64)
    H = optimal_features(W, c, cp, lam, 1e-2)
    primal, dual, gap = duality_gap(W, H, c, cp, lam, 1e-2)
    # P and D are sums of terms as large as the logits (logsumexp z, y . z, ...), so their
    # difference is at the rounding level of the logit scale, not of P (here |z| ~ 4, P ~ 0.1-0.7)
    assert np.abs(gap).max() <= 1e-14 * float((H @ W.T).abs().max())
    _, _, gap_off = duality_gap(W, 1.1 * H, c, cp, lam, 1e-2)
    assert (gap_off > 1e-6).all()


def test_gap_bounds_the_distance_to_the_optimum():
    W = simplex_etf(4, 4, seed=0)
    H = optimal_features(W, 0, 1, 0.3, 0.05)
    perturbed = H + 1e-3 * torch.randn(4, dtype=torch.float64)
    _, _, gap = duality_gap(W, perturbed[None], [0], [1], [0.3], 0.05)
    bound = np.sqrt(2 * gap / 0.05)
    assert (perturbed - H).norm().item() <= bound[0]


@pytest.mark.parametrize("loss", ["ce", "mse", "label_smoothing"])
def test_non_etf_classifier_with_bias_against_direct_solve(loss):
    g = torch.Generator().manual_seed(3)
    W = torch.randn(5, 7, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    c, cp = torch.tensor([0, 2, 3]), torch.tensor([1, 2, 4])
    lam = torch.tensor([0.25, 0.6, 0.5], dtype=torch.float64)
    certificate = certify(W, c, cp, lam, 0.1, loss=loss, bias=bias)
    assert (certificate.duality_gap <= 1e-9).all()
    if loss == "mse":
        y = mixup_target(c, cp, lam, 5)
        A = W.T @ W + 0.1 * torch.eye(7, dtype=torch.float64)
        expected = torch.linalg.solve(A, W.T @ (y - bias).T).T.numpy()
    elif loss == "ce":
        y = mixup_target(c, cp, lam, 5).numpy()
        # absorb the bias into an extra constant feature fixed at one is not possible with a
        # ridge on h, so minimise directly over h with the bias added to the logits
        expected = np.stack([_direct_with_bias(W.numpy(), bias.numpy(), y[i], 0.1) for i in range(3)])
    else:
        y = (0.9 * mixup_target(c, cp, lam, 5) + 0.1 / 5).numpy()
        expected = np.stack([_direct_with_bias(W.numpy(), bias.numpy(), y[i], 0.1) for i in range(3)])
    assert np.abs(certificate.h - expected).max() <= 1e-6 * np.abs(expected).max()


def _direct_with_bias(W, bias, y, lam_H):
    # CE(Wh + b, y): shift logits by b via an augmented matrix acting on [h; 1], with the
    # ridge only on h, solved by Newton's method on the gradient.
    h = direct_minimize(W, y, lam_H)  # start without bias
    for _ in range(50):
        z = W @ h + bias
        p = np.exp(z - z.max())
        p /= p.sum()
        grad = W.T @ (p - y) + lam_H * h
        hess = (W.T * p) @ W - np.outer(W.T @ p, W.T @ p) + lam_H * np.eye(len(h))
        h = h - np.linalg.solve(hess, grad)
        if np.linalg.norm(grad) < 1e-14:
            break
    return h


def test_duplicates_share_solution_and_clarabel_option():
    W = simplex_etf(3, 3, seed=1)
    certificate = certify(W, [0, 0, 1], [1, 1, 2], [0.4, 0.4, 0.5], 0.1, solver="clarabel", tol=1e-9)
    np.testing.assert_array_equal(certificate.h[0], certificate.h[1])
    assert certificate.solver == "CLARABEL"
    assert all(s.startswith("optimal") for s in certificate.status)
    H = optimal_features(W, torch.tensor([0, 0, 1]), torch.tensor([1, 1, 2]),
                         torch.tensor([0.4, 0.4, 0.5], dtype=torch.float64), 0.1)
    error = np.linalg.norm(certificate.h - H.numpy(), axis=1)
    # Clarabel's interior point stops near 1e-5 here; the Fenchel bound must cover it
    assert (error <= certificate.feature_error_bound).all() and error.max() < 1e-4


def test_refusals():
    W = simplex_etf(3, 3)
    with pytest.raises(ValueError, match="not convex in the logits"):
        certify(W, [0], [1], [0.5], 0.1, loss="focal")
    with pytest.raises(ValueError, match="solver must be one of 'SCS', 'CLARABEL'; got 'MOSEK'"):
        certify(W, [0], [1], [0.5], 0.1, solver="mosek")
    with pytest.raises(ValueError, match="bias must have shape \\(3,\\)"):
        certify(W, [0], [1], [0.5], 0.1, bias=torch.zeros(2))
    with pytest.raises(ValueError, match="h has 2 rows but there are 1 samples"):
        duality_gap(W, torch.zeros(2, 3), [0], [1], [0.5], 0.1)


def test_feature_error_bound_covers_the_actual_error_even_when_the_gap_rounds_negative():
    W = simplex_etf(10, 10, seed=0)
    c, cp = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([1, 1, 5, 6, 7])
    lam = torch.tensor([0.1, 0.5, 0.3, 0.7, 0.95], dtype=torch.float64)
    certificate = certify(W, c, cp, lam, 5e-3)
    H = optimal_features(W, c, cp, lam, 5e-3).numpy()
    error = np.linalg.norm(certificate.h - H, axis=1)
    assert (certificate.feature_error_bound > 0).all()
    assert (error <= certificate.feature_error_bound).all()
