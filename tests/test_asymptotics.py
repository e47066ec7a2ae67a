"""Asymptotic forms: their error estimates predict the true error, which vanishes as lam_H -> 0."""

import numpy as np
import pytest

from ufm.theory.asymptotics import channel_asymptotic, margin_asymptotic, same_class_asymptotic
from ufm.theory import ce_coefficients, gain, same_class_coefficient

LAM_H = [1e-3, 1e-5, 1e-7, 1e-9]


@pytest.mark.parametrize("K,scale", [(2, 1.0), (10, 1.0), (100, 0.5), (1000, 3.0)])
def test_same_class_lambert_w(K, scale):
    ratios, errors = [], []
    for lam_H in LAM_H:
        approx = same_class_asymptotic(K, lam_H, scale)
        exact = same_class_coefficient(K, lam_H, scale)
        errors.append(abs(exact - approx.value) / exact)
        ratios.append((exact - approx.value) / approx.error)
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:]))  # error shrinks with lam_H
    assert abs(ratios[-1] - 1) < 1e-5  # estimate is the leading error term
    assert errors[-1] < 1e-7


@pytest.mark.parametrize("K,lam", [(3, 0.1), (10, 0.3), (10, 0.7), (100, 0.45), (1000, 0.02)])
def test_margin_tends_to_log_odds(K, lam):
    g = gain(K, 1.0)
    ratios, errors = [], []
    for lam_H in LAM_H:
        a, b = ce_coefficients(K, lam, lam_H)
        approx = margin_asymptotic(K, lam, lam_H)
        exact = g * (a - b)
        # log(alpha) - log1p(-alpha) against log(lam / (1 - lam)): the two differ by at most
        # about eps (|log lam| + |log(1 - lam)| + 1 + 1.5 |log-odds|), i.e. < 1e-15 absolute for
        # lam in [0.3, 0.7], more than 1e-15 relative where the log-odds is small (lam = 0.45).
        # (A bare rel= lets pytest's default abs=1e-12 decide.)
        assert approx.value == pytest.approx(np.log(lam / (1 - lam)), rel=1e-15, abs=2e-15)
        errors.append(abs(exact - approx.value))
        ratios.append((exact - approx.value) / approx.error)
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:]))
    assert abs(ratios[-1] - 1) < 1e-4


def test_margin_is_exactly_zero_at_half():
    approx = margin_asymptotic(10, 0.5, 1e-4)
    assert approx.value == 0 and approx.error == 0


@pytest.mark.parametrize("K,lam", [(3, 0.2), (10, 0.5), (1000, 0.9)])
def test_channel_grows_without_bound_and_estimate_is_accurate(K, lam):
    g = gain(K, 1.0)
    sums, ratios = [], []
    for lam_H in LAM_H:
        a, b = ce_coefficients(K, lam, lam_H)
        approx = channel_asymptotic(K, lam, lam_H)
        sums.append(g * (a + b))
        ratios.append((g * (a + b) - approx.value) / approx.error)
    # grows like 2 log(1/lam_H): each factor 100 in lam_H adds about 2 log(100)
    increments = np.diff(sums)
    assert (increments > 0.8 * 2 * np.log(100)).all()
    assert abs(ratios[-1] - 1) < 1e-3


def test_open_interval_is_enforced():
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        margin_asymptotic(10, 1.0, 1e-3)
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        channel_asymptotic(10, [0.2, 0.0], 1e-3)
    with pytest.raises(ValueError, match=r"lam_H must lie in \(0, inf\)"):
        same_class_asymptotic(10, 0.0)


def test_error_estimate_is_inf_outside_the_small_t_regime():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        margin = margin_asymptotic(2, 0.3, 10.0, 0.1)
        channel = channel_asymptotic(2, 0.3, 10.0, 0.1)
    assert np.isinf(margin.error) and np.isinf(channel.error)
    assert np.isfinite(margin_asymptotic(10, 0.3, 1e-4).error)


def test_solve_exp_linear_accepts_scalars_and_arrays():
    from ufm.theory.reduced_equations import solve_exp_linear

    x = solve_exp_linear(0.5, 0.1, 0.01)
    assert np.ndim(x) == 0 and abs(0.01 * x + 0.1 * np.expm1(x) - 0.5) < 1e-15
    assert solve_exp_linear([0.5, 0.2], 0.1, 0.01).shape == (2,)
