"""Saved features, one command: the features file, ufm.compare_features and ufm compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nets_support import FAST_MEASUREMENT, one_torch_thread  # noqa: F401  (autouse fixture)

import ufm
from ufm import cli
from ufm.metrics import calibration_metrics, collapse_metrics
from ufm.nets import TrainConfig, run_training
from ufm.nets.features_file import group_lams, read_features
from ufm.theory import optimal_coefficients

K, D, LAM_H = 10, 24, 5e-3


def theory_amplification(loss: str = "ce") -> float:
    (a,), (b,) = optimal_coefficients(K, [0.5], LAM_H, 1.0, loss)
    (same,), _ = optimal_coefficients(K, [1.0], LAM_H, 1.0, loss, same_class=True)
    return float((a + b) / same)


def theory_file(n=20000, alpha=1.0, noise=0.02, loss="ce", seed=0, shift=None):
    """Features of the exact optimum for a simplex ETF at lam ~ Beta(alpha, alpha) drawn per
    sample, for random ordered class pairs (about 1 in K same-class), plus isotropic noise."""
    rng = np.random.default_rng(seed)
    W = ufm.simplex_etf(K, D, scale=1.0, seed=seed)
    c, c_prime = rng.integers(K, size=n), rng.integers(K, size=n)
    lam = rng.beta(alpha, alpha, size=n)
    H = ufm.optimal_features(
        W, torch.as_tensor(c), torch.as_tensor(c_prime), torch.as_tensor(lam), LAM_H, loss=loss
    ).numpy()
    H = H + noise * rng.standard_normal(H.shape) + (0.0 if shift is None else shift)
    return {"features": H, "c": c, "c_prime": c_prime, "lam": lam, "weight": W.numpy()}


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_beta_drawn_lams_give_the_theory_amplification_within_one_percent(alpha):
    summary = ufm.compare_features(theory_file(alpha=alpha, seed=1)).summary
    want = theory_amplification()
    assert summary["amplification"] == pytest.approx(want, rel=0.01)
    assert summary["lam_grouping"].startswith("lam on 11 bins")
    assert summary["paired"] is False
    assert summary["curve_fitted_lam_H"] == pytest.approx(LAM_H, rel=0.05)  # theory binned too


def test_the_squared_error_optimum_gives_one_within_its_error():
    summary = ufm.compare_features(theory_file(loss="mse", seed=2), loss="mse").summary
    assert theory_amplification("mse") == pytest.approx(1.0, abs=1e-12)
    error = summary["amplification_se_cells"]
    assert 0 < error < 0.01
    assert abs(summary["amplification"] - 1.0) < 3 * error


def test_the_centre_is_estimated_from_the_mixed_features_when_absent():
    shift = np.linspace(-2.0, 3.0, D)
    arrays = theory_file(seed=3, shift=shift)
    mixed = ufm.compare_features(arrays)
    assert mixed.summary["global_mean_source"] == "same_class_mixtures"
    centre = mixed.arrays["mixed_features"]["global_mean"]
    assert np.linalg.norm(centre - shift) < 0.01 * np.linalg.norm(shift)
    keep = (arrays["c"] != arrays["c_prime"]) | (arrays["c"] < 5)  # same-class: 5 classes
    fallback = ufm.compare_features(
        {k: v[keep] if k != "weight" else v for k, v in arrays.items()}
    )
    assert fallback.summary["global_mean_source"] == "mixed_features"
    centre = fallback.arrays["mixed_features"]["global_mean"]
    assert np.linalg.norm(centre - shift) < 0.02 * np.linalg.norm(shift)
    given = ufm.compare_features({**arrays, "global_mean": shift}).summary
    assert given["global_mean_source"] == "global_mean"
    assert mixed.summary["amplification"] == pytest.approx(given["amplification"], rel=0.01)


def test_clean_features_give_the_nc_metrics_and_test_logits_the_calibration():
    arrays = theory_file(n=4000, seed=4)
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(K), 30)
    clean = 3.0 * arrays["weight"][labels] + 0.3 * rng.standard_normal((len(labels), D))
    bias = rng.standard_normal(K)
    logits = rng.standard_normal((200, K)) * 3
    test_labels = rng.integers(K, size=200)
    summary = ufm.compare_features({
        **arrays, "bias": bias, "clean_features": clean, "clean_labels": labels,
        "test_logits": logits, "test_labels": test_labels,
    }).summary  # fmt: skip
    W = torch.as_tensor(arrays["weight"])
    want = collapse_metrics(torch.as_tensor(clean), torch.as_tensor(labels), W,
                            torch.as_tensor(bias))  # fmt: skip
    for key in ("nc1", "nc2_W", "nc2_M", "nc3", "nc4", "bias_collapse"):
        assert summary[key] == pytest.approx(want[key], rel=1e-10), key
    calibration = calibration_metrics(torch.as_tensor(logits), torch.as_tensor(test_labels))
    assert summary["ece"] == pytest.approx(calibration["ece"], rel=1e-12)
    assert summary["global_mean_source"] == "clean_features"


def test_orientation_and_grid_detection():
    """A pair (c, c', lam) is the pair (c', c, 1 - lam): a file with half its rows written
    the other way round, lams on a grid, gives the same comparison."""
    rng = np.random.default_rng(5)
    arrays = theory_file(n=6000, seed=5)
    grid = np.linspace(0, 1, 11)
    arrays["lam"] = grid[rng.integers(11, size=6000)]
    arrays["features"] = ufm.optimal_features(
        torch.as_tensor(arrays["weight"]), torch.as_tensor(arrays["c"]),
        torch.as_tensor(arrays["c_prime"]), torch.as_tensor(arrays["lam"]), LAM_H,
    ).numpy()  # fmt: skip
    flip = rng.random(6000) < 0.5
    flipped = {
        **arrays,
        "c": np.where(flip, arrays["c_prime"], arrays["c"]),
        "c_prime": np.where(flip, arrays["c"], arrays["c_prime"]),
        "lam": np.where(flip, 1.0 - arrays["lam"], arrays["lam"]),
    }
    groups = group_lams(read_features(flipped))
    assert not groups.binned and len(groups.lams) == 11
    nearest = np.rint(groups.lam * 10).astype(int)
    np.testing.assert_array_equal(groups.lam_index, nearest)
    a = ufm.compare_features(arrays).summary
    b = ufm.compare_features(flipped).summary
    assert b["lam_grouping"].startswith("lam on a grid of 11")
    assert b["amplification"] == pytest.approx(a["amplification"], rel=1e-12)
    assert b["amplification"] == pytest.approx(theory_amplification(), rel=1e-9)


def test_a_ufm_train_measurement_file_gives_back_exactly_its_numbers(tmp_path, capsys):
    config = TrainConfig(**FAST_MEASUREMENT, epochs=1, bias=True)
    summary = run_training(config, tmp_path / "run", progress=False)
    folder = tmp_path / "run" / "measurements" / "epoch_0001"
    out = tmp_path / "compared"
    assert cli.main(["compare", "--features", str(folder / "mixed_features.npz"),
                     "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "amplification" in printed and f"wrote {out}/summary.json" in printed
    again = json.loads((out / "summary.json").read_text())
    assert again["paired"] is True and again["global_mean_source"] == "global_mean"
    # The file names no triple: the comparison draws the three classes with the most samples.
    shared = set(again) & set(summary) - {"seconds", "triple"}
    assert {"amplification", "amplification_se_cells", "better_fit", "fitted_lam_H"} <= shared
    for key in shared:
        assert again[key] == summary[key], key
    assert cli.main(["compare", "--features", str(folder / "mixed_features.npz"),
                     "--out", str(out)]) == 2  # fmt: skip
    assert "already holds a complete measurement" in capsys.readouterr().err


@pytest.mark.parametrize("every", [False, True])
def test_the_final_measurement_always_saves_its_features_the_others_when_asked(tmp_path, every):
    config = TrainConfig(**FAST_MEASUREMENT, epochs=2, measure_every=1,
                         features_every_measurement=every)  # fmt: skip
    run_training(config, tmp_path / "run", progress=False)
    measurements = tmp_path / "run" / "measurements"
    assert (measurements / "epoch_0002" / "mixed_features.npz").is_file()
    assert (measurements / "epoch_0001" / "mixed_features.npz").is_file() == every
    assert (measurements / "epoch_0001" / "cells.npz").is_file()


def bad(arrays, **changes):
    return {**arrays, **changes}


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: {k: v for k, v in a.items() if k != "lam"}, "missing required 'lam'; required"),
        (lambda a: bad(a, lam=a["lam"][:-1]), "'lam' has 399 rows but 'features' has 400"),
        (lambda a: bad(a, lam=np.where(np.arange(400) == 7, 1.5, a["lam"])),
         r"'lam' must lie in \[0, 1\].*found 1.5 \(1 such"),
        (lambda a: bad(a, c_prime=np.where(np.arange(400) == 3, 10, a["c_prime"])),
         r"'c_prime' holds class 10 outside \[0, 9\]"),
        (lambda a: bad(a, c=a["c"] + 0.5), "'c' must hold integer class indices"),
        (lambda a: bad(a, c_prime=a["c"]), "needs same-class .* and different-class samples"),
        (lambda a: bad(a, c_prime=(a["c"] + 1) % K),
         "needs same-class .* and different-class samples, got 0 same-class of 400"),
        (lambda a: bad(a, lables=a["c"]), "unknown 'lables'; allowed: features"),
        (lambda a: bad(a, schema_version=np.asarray(2)), "schema_version 2 is not supported"),
        (lambda a: bad(a, clean_features=a["features"]), "'clean_features' needs 'clean_labels'"),
        (lambda a: bad(a, weight=a["weight"][:, :5]), "'features' has shape .*must be d"),
        (lambda a: bad(a, features=np.where(np.arange(400)[:, None] == 0, np.nan, a["features"])),
         "'features' must be finite"),
        (lambda a: bad(a, bias=np.zeros(3)), "'bias' has 3 rows but 'weight' has 10"),
        (lambda a: bad(a, pair=np.arange(400) - 1), "'pair' must hold non-negative integer"),
    ],
)
def test_a_bad_file_is_refused_before_any_work_in_one_short_line(monkeypatch, change, message):
    arrays = theory_file(n=400, seed=6)
    monkeypatch.setattr(
        "ufm.nets.feature_comparison.compare_mixed", lambda *a, **k: pytest.fail("compared")
    )
    with pytest.raises(ValueError, match=message) as error:
        ufm.compare_features(change(arrays))
    assert "\n" not in str(error.value) and len(str(error.value)) < 400


def test_too_few_samples_at_one_half_are_refused_clearly():
    arrays = theory_file(n=200, seed=7)
    with pytest.raises(ValueError, match="different-class cells at lam = 1/2 with at least two"):
        ufm.compare_features(arrays, lam_bins=101)


def test_settings_and_paths_are_checked_first(tmp_path):
    with pytest.raises(ValueError, match="lam_bins must be odd"):
        ufm.compare_features(theory_file(n=400), lam_bins=10)
    with pytest.raises(ValueError, match="compare_features takes the settings .*; got mix_at"):
        ufm.compare_features(theory_file(n=400), mix_at="x")
    with pytest.raises(ValueError, match="features file .*missing.npz' does not exist"):
        ufm.compare_features(tmp_path / "missing.npz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="already holds files"):
        ufm.compare_features(theory_file(n=400), out=tmp_path)


def test_long_value_lists_are_cut_in_error_messages():
    from ufm.nets.cell_means import half_index

    with pytest.raises(ValueError, match=r"405572 values: 0, .*, \.\.\., ") as error:
        half_index(np.linspace(0, 1, 405572))  # an even count of points misses 1/2
    assert len(str(error.value)) < 200
