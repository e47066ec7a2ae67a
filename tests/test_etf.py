import math

import pytest
import torch

from ufm.etf import (
    check_simplex_etf,
    etf_distance,
    etf_gain,
    haar_orthogonal,
    helmert_basis,
    simplex_etf,
)


@pytest.mark.parametrize(
    "K,d,scale,seed",
    [(2, 1, 1.0, None), (2, 5, 0.3, 1), (3, 2, 2.0, None), (4, 4, 1.0, 7), (10, 9, 1.5, 3),
     (10, 32, 1.0, None), (37, 64, 0.1, 11), (100, 128, 10.0, 0)],
)
def test_simplex_etf_gram_and_rows(K, d, scale, seed):
    W = simplex_etf(K, d, scale=scale, seed=seed)
    assert W.shape == (K, d) and W.dtype == torch.float64
    g = scale**2 * K / (K - 1)
    expected = g * (torch.eye(K, dtype=torch.float64) - 1.0 / K)
    assert torch.allclose(W @ W.T, expected, atol=1e-13 * g, rtol=0)
    assert torch.allclose(W.norm(dim=1), torch.full((K,), scale, dtype=torch.float64), rtol=1e-14)
    assert W.sum(0).abs().max() <= 1e-13 * scale
    # Rounding level: each off-diagonal Gram entry is a d-term dot product that cancels down to
    # -s^2/(K-1), so it carries ~sqrt(d) eps s^2 of rounding; K^2 of them in quadrature, against
    # |G| ~ s^2 sqrt(K), give ~sqrt(K d) eps (observed up to 0.8 sqrt(K d) eps at K = 100).
    assert etf_distance(W) <= 10 * math.sqrt(K * d) * torch.finfo(torch.float64).eps
    assert etf_gain(W) == pytest.approx(g, rel=1e-14)


def test_canonical_form_and_seeded_rotation():
    W = simplex_etf(5, 7)
    P = torch.eye(5, dtype=torch.float64) - 0.2
    assert torch.equal(W[:, 5:], torch.zeros(5, 2, dtype=torch.float64))
    assert torch.allclose(W[:, :5], math.sqrt(5 / 4) * P, atol=1e-15)
    W1, W2 = simplex_etf(5, 7, seed=1), simplex_etf(5, 7, seed=1)
    assert torch.equal(W1, W2)
    assert not torch.allclose(W1, simplex_etf(5, 7, seed=2))
    assert not torch.allclose(W1, W)


def test_helmert_and_haar_are_orthonormal():
    Q = helmert_basis(6)
    assert torch.allclose(Q.T @ Q, torch.eye(5, dtype=torch.float64), atol=1e-15)
    assert Q.sum(0).abs().max() < 1e-15
    R = haar_orthogonal(9, 4)
    assert torch.allclose(R.T @ R, torch.eye(9, dtype=torch.float64), atol=1e-14)


def test_dtype_and_device_parameters():
    W = simplex_etf(4, 6, dtype=torch.float32, device="cpu")
    assert W.dtype == torch.float32 and W.device.type == "cpu"
    assert etf_distance(W) < 1e-6


def test_etf_distance_detects_non_etf_and_is_scale_invariant():
    W = torch.randn(6, 8, dtype=torch.float64)
    distance = etf_distance(W)
    assert distance > 0.1
    assert etf_distance(3.7 * W) == pytest.approx(distance, rel=1e-13)
    shifted = simplex_etf(6, 8, seed=1) + 0.5  # rows no longer sum to zero
    assert etf_distance(shifted) > 0.1
    assert etf_distance(shifted, center=True) < 1e-13


def test_etf_distance_matches_naive_formula():
    W = torch.randn(5, 7, dtype=torch.float64)
    G = (W @ W.T).numpy()
    import numpy as np

    P = np.eye(5) - 1 / 5
    naive = np.linalg.norm(G / np.linalg.norm(G) - P / np.sqrt(4))
    assert etf_distance(W) == pytest.approx(naive, rel=1e-13)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(K=1, d=3), "K must be >= 2, got 1"),
        (dict(K=5, d=3), "needs d >= K-1 = 4, got d=3"),
        (dict(K=3, d=3, scale=0.0), "scale must lie in (0, inf), got 0.0"),
        (dict(K=3, d=3, scale=float("nan")), "scale must be finite"),
        (dict(K=3.5, d=3), "K must be an integer"),
        (dict(K=3, d=3, seed=-1), "seed must be >= 0"),
    ],
)
def test_simplex_etf_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError) as info:
        simplex_etf(**kwargs)
    assert message in str(info.value)


def test_check_simplex_etf_refuses_non_etf_with_distance_in_message():
    W = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"not a simplex ETF: etf_distance\(W\) = .* tolerance"):
        check_simplex_etf(W)
    with pytest.raises(ValueError, match="d=2 < K-1=3"):
        check_simplex_etf(torch.zeros(4, 2))
    assert check_simplex_etf(simplex_etf(4, 5, scale=2.0)) == pytest.approx(4 * 4 / 3)
