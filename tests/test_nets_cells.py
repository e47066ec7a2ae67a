"""The cell-mean comparison on synthetic features whose answer is known.

Features are built from the exact optimum (``ufm.theory``) plus isotropic Gaussian noise of
standard deviation sigma per coordinate, around a global mean. The precision claimed is that
of the statistics: an estimate lies within 4 of its reported standard errors of the truth
(a normal deviate beyond 4 sd has probability 6e-5; the seeds are fixed, so the tests are
deterministic), and the reported standard errors match the ones computed here independently
from sigma and the classifier (to 10%, while the relative error of an estimated standard
error from ~900 pairs is about 2.4%).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nets_support import one_torch_thread  # noqa: F401  (autouse fixture)

from ufm.etf import simplex_etf
from ufm.nets.cell_comparison import compare_cells
from ufm.nets.coefficient_curves import null_curves
from ufm.nets.own_classifier import own_classifier_optimum
from ufm.theory import optimal_coefficients, optimal_features

K, D, SCALE, LAM_H, PAIRS = 6, 12, 1.3, 5e-3, 60
LAMS = np.linspace(0.0, 1.0, 11)
LAMS[5] = 0.5


def synthetic(loss="ce", sigma=0.1, signal=1.0, seed=0, pairs=PAIRS, lams=LAMS):
    """Features (P, L, d) of ``pairs`` pairs per cell c <= c': signal x optimum + mu + noise."""
    W = simplex_etf(K, D, scale=SCALE, seed=seed)
    c, c_prime = np.triu_indices(K)
    c, c_prime = np.repeat(c, pairs), np.repeat(c_prime, pairs)
    optimum = optimal_features(W, c[:, None], c_prime[:, None], lams[None, :], LAM_H, loss=loss)
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=D)
    features = signal * optimum.numpy() + mu + sigma * rng.normal(size=optimum.shape)
    return features, c, c_prime, W.numpy(), mu


def independent_se(W, sigma, pairs):
    """Standard errors of a_hat(lam) and of a_same from sigma: per pair the coefficients have
    covariance sigma^2 (A^T A)^-1 (A = [w_c, w_c'], any cell of the ETF); averaged over the
    pairs of all cells."""
    A = np.stack([W[0], W[1]], axis=1)
    var_a = sigma**2 * np.linalg.inv(A.T @ A)[0, 0]
    different, same = K * (K - 1) // 2, K
    se_a = math.sqrt(var_a / (pairs * different))
    # same-class coefficient of one pair: <h, w_c>/|w_c|^2, variance sigma^2/|w_c|^2 per lam;
    # the lam average of one pair is of independent noise at each lam: / L.
    se_same = math.sqrt(sigma**2 / (W[0] @ W[0]) / len(LAMS) / (pairs * same))
    return se_a, se_same


def test_ce_optimum_with_noise_recovers_the_theory_within_standard_errors():
    sigma = 0.15
    features, c, c_prime, W, mu = synthetic(sigma=sigma)
    # the bias of a network whose logits are those of the centred features (offset 0)
    result = compare_cells(features, c, c_prime, LAMS, W, mu, bias=-W @ mu)
    s, rows = result.scalars, result.rows
    a, b = optimal_coefficients(K, LAMS, LAM_H, SCALE, "ce")
    (a_same,), _ = optimal_coefficients(K, [1.0], LAM_H, SCALE, "ce", same_class=True)
    se_a, se_same = independent_se(W, sigma, PAIRS)
    for row, a_l, b_l in zip(rows, a, b):
        assert abs(row["a"] - a_l) < 4 * row["a_se"] and abs(row["b"] - b_l) < 4 * row["b_se"]
        assert row["a_se"] == pytest.approx(se_a, rel=0.1)
        # An exact simplex ETF: every cell has the same coefficients, the spread is noise.
        assert row["a_cell_sd"] < 5 * se_a * math.sqrt(K * (K - 1) / 2)
    assert abs(s["a_same"] - a_same) < 4 * s["a_same_se"]
    assert s["a_same_se"] == pytest.approx(se_same, rel=0.1)
    amplification = (a[5] + b[5]) / a_same
    assert amplification > 1.3  # the effect tested: far above the null's 1
    assert abs(s["amplification"] - amplification) < 4 * s["amplification_se"]
    assert s["amplification_se"] < 0.02 * amplification
    # The fitted cross-entropy curves reproduce the amplification as well as the data allow.
    assert abs(s["amplification_theory"] - amplification) < 4 * s["amplification_se"]
    assert s["better_fit"] == "cross_entropy" and s["signal_detected"]
    assert s["ce_curve_rms"] < s["squared_error_curve_rms"] / 5
    assert s["ce_curve_rms_in_se"] < 2.0  # misfit of the order of the noise
    # W is an exact ETF: the solver's optimum for this W is the ETF theory (gradient 1e-10).
    assert s["exact_W_feature_distance"] < 1e-8
    assert abs(s["amplification_exact_W"] - s["amplification_theory"]) < 1e-8
    # Same-class cells: noise alone moves the cell means with lam by about sigma sqrt(r/n)
    # (r = K - 1 in-span dimensions, less the lam average); above that floor nothing is left.
    floor = sigma * math.sqrt((K - 1) / PAIRS * (1 - 1 / len(LAMS))) / (a_same * SCALE)
    assert s["same_class_lam_dependence_noise"] == pytest.approx(floor, rel=0.15)
    assert s["same_class_lam_dependence"] < 0.5 * floor
    assert s["same_class_scatter"] == pytest.approx(
        sigma * math.sqrt(K - 1) / (a_same * SCALE), rel=0.1
    )


def test_squared_error_optimum_gives_amplification_one_and_the_better_fit():
    features, c, c_prime, W, mu = synthetic(loss="mse", sigma=0.01)
    s = compare_cells(features, c, c_prime, LAMS, W, mu, exact_classifier=False).scalars
    assert abs(s["amplification"] - 1.0) < 4 * s["amplification_se"]
    assert s["amplification_se"] < 0.02
    assert s["better_fit"] == "squared_error"
    assert s["squared_error_curve_rms_in_se"] < 2.0
    # The cross-entropy curves tend to the null's as lam_H/g grows: its best fit sits there
    # and gains nothing over the parameter-free null beyond the noise (chi-square below 9).
    assert s["curve_fitted_lam_H"] > 5 * SCALE**2 * K / (K - 1)
    chi2_gain = (
        2 * len(LAMS) * (s["squared_error_curve_rms_in_se"] ** 2 - s["ce_curve_rms_in_se"] ** 2)
    )
    assert chi2_gain < 9.0
    assert abs(s["amplification_theory"] - 1.0) < 4 * s["amplification_se"]


def test_the_null_is_the_squared_error_optimum_at_every_lam_H():
    """The null's curves (lam, 1 - lam) against ufm.theory's squared-error coefficients."""
    a_null, b_null = null_curves(LAMS)
    for lam_H in (1e-4, 0.3, 30.0):
        a, b = optimal_coefficients(K, LAMS, lam_H, SCALE, "mse")
        (a_same,), _ = optimal_coefficients(K, [1.0], lam_H, SCALE, "mse", same_class=True)
        # a/a_same = lam up to the rounding of two divisions of O(1) numbers.
        np.testing.assert_allclose(a / a_same, a_null, atol=1e-14)
        np.testing.assert_allclose(b / a_same, b_null, atol=1e-14)


def test_pure_noise_is_reported_as_noise():
    features, c, c_prime, W, mu = synthetic(signal=0.0, sigma=0.5, pairs=20)
    s = compare_cells(features, c, c_prime, LAMS, W, mu, exact_classifier=False).scalars
    assert not s["signal_detected"] and s["better_fit"] == "noise"
    assert s["scatter_to_signal"] > 3  # scatter above the signal (inf when none is left)
    assert s["amplification_se"] > 0.3 or not math.isfinite(s["amplification"])


def test_a_weak_signal_is_detected_above_the_noise():
    """Single pairs scatter further than the signal, yet the cell means of 40 pairs see it."""
    features, c, c_prime, W, mu = synthetic(signal=0.1, sigma=0.5, pairs=40)
    s = compare_cells(features, c, c_prime, LAMS, W, mu, exact_classifier=False).scalars
    assert s["signal_detected"] and s["scatter_to_signal"] > 2
    assert s["better_fit"] == "cross_entropy"
    a, b = optimal_coefficients(K, LAMS, LAM_H, SCALE, "ce")
    (a_same,), _ = optimal_coefficients(K, [1.0], LAM_H, SCALE, "ce", same_class=True)
    assert abs(s["amplification"] - (a[5] + b[5]) / a_same) < 4 * s["amplification_se"]


def test_same_class_lam_dependence_and_scatter_are_reported_apart():
    W = simplex_etf(K, D, scale=1.0, seed=3).numpy()
    c = np.repeat(np.arange(K), 5)
    lams = LAMS
    # Same-class pairs that move with lam but do not scatter: h = (1 + lam) w_c.
    moving = (1 + lams)[None, :, None] * W[c][:, None, :]
    c_all = np.concatenate([c, np.zeros(5, int)])
    cp_all = np.concatenate([c, np.ones(5, int)])
    different = np.broadcast_to(W[0] + W[1], (5, len(lams), D))
    s = compare_cells(
        np.concatenate([moving, different]), c_all, cp_all, lams, W, np.zeros(D), False
    ).scalars
    centre = (1 + lams).mean()
    expected = np.sqrt(((1 + lams - centre) ** 2).mean()) / centre
    assert s["same_class_lam_dependence"] == pytest.approx(expected, rel=1e-9)
    assert s["same_class_scatter"] < 1e-9


@pytest.mark.parametrize("with_offset", [False, True])
def test_own_classifier_optimum_is_stationary_for_a_classifier_that_is_no_etf(with_offset):
    rng = np.random.default_rng(4)
    W = rng.normal(size=(4, 7)) * 0.8
    offset = rng.normal(size=4) if with_offset else np.zeros(4)
    lam_H = 0.02
    out = own_classifier_optimum(W, LAMS, lam_H, offset=offset if with_offset else None)
    H = out["features"]  # (K, K, L, d)
    y = np.zeros((4, 4, len(LAMS), 4))
    for c in range(4):
        for c_prime in range(4):
            y[c, c_prime, :, c] += LAMS
            y[c, c_prime, :, c_prime] += 1 - LAMS
    z = H @ W.T + offset
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    stationarity = lam_H * H - (y - p) @ W
    # Gradient tolerance 1e-10 of the solver, relative to the size of lam_H h.
    assert np.abs(stationarity).max() < 1e-8 * np.abs(lam_H * H).max()
    assert out["feature_distance"] > 1e-3  # no ETF: the approximation differs
    c, c_prime = 0, 2  # the curves: coefficients of one cell, independently by lstsq
    coefficient = np.linalg.lstsq(np.stack([W[c], W[c_prime]], 1), H[c, c_prime].T, rcond=None)
    assert np.isfinite(coefficient[0]).all() and np.isfinite(out["a_norm"]).all()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"lams": np.linspace(0, 1, 10)}, "must contain 1/2"),
        ({"only": "same"}, "both same-class and different-class pairs, got 30 same"),
        ({"only": "different"}, "both same-class and different-class pairs, got 0 same"),
    ],
)
def test_bad_input_is_refused_before_any_work(monkeypatch, change, message):
    features, c, c_prime, W, mu = synthetic(pairs=5)
    lams = change.get("lams", LAMS)
    if "lams" in change:
        features = features[:, :10]
    if change.get("only"):
        keep = (c == c_prime) if change["only"] == "same" else (c != c_prime)
        features, c, c_prime = features[keep], c[keep], c_prime[keep]

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr("ufm.nets.cell_comparison.cell_statistics", no_work)
    with pytest.raises(ValueError, match=message):
        compare_cells(features, c, c_prime, lams, W, mu)


def test_compare_cells_accepts_float32_features_and_torch_free_inputs():
    features, c, c_prime, W, mu = synthetic(pairs=4)
    result = compare_cells(features.astype(np.float32), c, c_prime, LAMS, W, mu, False)
    assert result.arrays["means"].shape == (21, 11, D) and len(result.rows) == 11
    assert torch.is_tensor(torch.as_tensor(result.arrays["coefficients"]))
