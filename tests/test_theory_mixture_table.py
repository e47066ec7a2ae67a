"""``ufm theory --mixup-points m``: the m-class table against the features it describes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ufm.cli import main
from ufm.etf import simplex_etf
from ufm.io import read_csv
from ufm.losses import get_loss
from ufm.theory.mixtures import simplex_grid
from ufm.theory.table import TheoryConfig, compute, mixture_table


@pytest.mark.parametrize("m,points", [(1, 4), (2, 5), (3, 4), (4, 3), (5, 2)])
def test_simplex_grid_is_every_composition_once(m, points):
    grid = simplex_grid(m, points)
    assert grid.shape == (math.comb(points + m - 2, m - 1), m)
    assert np.abs(grid.sum(1) - 1).max() <= 4 * np.finfo(float).eps
    steps = np.rint(grid * (points - 1))
    assert np.abs(grid * (points - 1) - steps).max() <= 1e-12 and (steps >= 0).all()
    assert len({tuple(row) for row in steps.astype(int)}) == len(grid)  # all distinct


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "mse"])
@pytest.mark.parametrize("K,m", [(4, 3), (6, 4), (10, 3), (4, 4)])
def test_rows_are_the_stationary_features_of_their_weights(K, m, loss):
    """Each row's coefficients, norm and probabilities, rebuilt from an explicit ETF."""
    lam_H, scale = 0.02, 1.3
    loss_fn = get_loss(loss)
    weights = simplex_grid(m, 4)
    table = mixture_table(K, lam_H, scale, loss_fn, weights)
    W = simplex_etf(K, K + 2, scale=scale, seed=1)
    for row, y_m in zip(table["rows"], weights):
        a = torch.tensor([row[f"a_{k + 1}"] for k in range(m)], dtype=torch.float64)
        h = a @ W[:m]
        z = W @ h
        y = torch.zeros(K, dtype=torch.float64)
        y[:m] = torch.as_tensor(y_m)
        # stationarity of ell(Wh; y) + lam_H/2 |h|^2, written out for each loss
        if loss == "mse":
            residual = W.T @ (z - y) + lam_H * h
        else:
            eps = loss_fn.eps if loss == "label_smoothing" else 0.0
            soft = (1 - eps) * y + eps / K
            residual = W.T @ (torch.softmax(z, 0) - soft) + lam_H * h
        assert float(residual.norm()) <= 1e-12 * max(1.0, float(h.norm()))
        assert row["feature_norm"] == pytest.approx(float(h.norm()), rel=1e-12, abs=1e-14)
        if loss != "mse":
            p = torch.softmax(z, 0)
            for k in range(m):
                assert row[f"p_{k + 1}"] == pytest.approx(float(p[k]), rel=1e-12, abs=1e-15)
            assert row["confidence"] == pytest.approx(float(p.max()), rel=1e-12)
    if m == K:  # only the feature is determined: no amplification
        assert all(math.isnan(r["amplification"]) for r in table["rows"])
    elif loss == "mse":  # convex combinations: amplification exactly 1 up to rounding
        assert max(abs(r["amplification"] - 1) for r in table["rows"]) <= 1e-13


def test_norm_keeps_its_digits_when_the_coefficients_nearly_cancel():
    """m = K, nearly equal weights, small lam_H: |h| from the coefficients against |sum a_k w_k|."""
    K = 5
    weights = np.array([[0.2 + 1e-6, 0.2 - 1e-6, 0.2, 0.2, 0.2]])
    row = mixture_table(K, 1e-6, 1.0, "ce", weights)["rows"][0]
    W = simplex_etf(K, K, seed=3)
    a = torch.tensor([row[f"a_{k + 1}"] for k in range(K)], dtype=torch.float64)
    # rows of W sum to 0, so centring a changes nothing in sum_k a_k w_k but avoids cancellation
    exact = float(((a - a.mean()) @ W).norm())
    assert row["feature_norm"] == pytest.approx(exact, rel=1e-8)


def test_equal_weights_amplify_in_cross_entropy_and_not_in_squared_error():
    half = np.full((1, 3), 1 / 3)
    ce = mixture_table(10, 1e-3, 1.0, "ce", half)["rows"][0]
    mse = mixture_table(10, 1e-3, 1.0, "mse", half)["rows"][0]
    assert ce["amplification"] > 1.5  # channels: the mixture runs out along sum_k w_k
    assert abs(mse["amplification"] - 1) <= 1e-13


def test_command_prints_and_writes_the_weight_grid(tmp_path, capsys):
    out = tmp_path / "mixtures"
    code = main(["theory", "--K", "5", "--mixup-points", "3", "--simplex-points", "3",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mixtures of the classes 0..2" in printed
    rows = read_csv(out / "theory.csv")
    assert len(rows) == 6 and {"y_3", "a_3", "p_3", "amplification"} <= set(rows[0])
    expected = compute(TheoryConfig(K=5, mixup_points=3, simplex_points=3))["rows"]
    assert [float(r["a_1"]) for r in rows] == [r["a_1"] for r in expected]  # repr round-trips


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--K", "3", "--mixup-points", "4"], "mixup_points must lie in [2, K=3]"),
        (["--mixup-points", "1"], "mixup_points must lie in [2, K=10]"),
        (["--mixup-points", "8", "--simplex-points", "40"], "at most 1,000,000 are allowed"),
        (["--mixup-points", "3", "--simplex-points", "1"], "simplex_points must be >= 2"),
    ],
)
def test_bad_mixture_settings_are_refused_before_any_file(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["theory", *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
