"""Edge cases of measuring any network and of features files, each a defect a review found."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nets_support import one_torch_thread  # noqa: F401  (autouse fixture)
from torch import nn

import ufm
from ufm.nets.coefficient_curves import jackknife_ratio_se
from ufm.nets.measure_settings import MeasureSettings

K, D, LAM_H = 6, 12, 5e-3
FAST = {"pairs_per_class_pair": 3, "pairs_all_classes": 4}


def theory_arrays(n=6000, seed=0, low=0.0, high=1.0):
    rng = np.random.default_rng(seed)
    W = ufm.simplex_etf(K, D, seed=seed)
    c, c_prime = rng.integers(K, size=n), rng.integers(K, size=n)
    lam = low + (high - low) * rng.random(n)
    H = ufm.optimal_features(
        W, torch.as_tensor(c), torch.as_tensor(c_prime), torch.as_tensor(lam), LAM_H
    ).numpy()
    H = H + 0.01 * rng.standard_normal(H.shape)
    return {"features": H, "c": c, "c_prime": c_prime, "lam": lam, "weight": W.numpy()}


def test_empty_end_bins_leave_the_verdict_on_the_finite_points():
    summary = ufm.compare_features(theory_arrays(low=0.12, high=0.88)).summary
    assert math.isfinite(summary["ce_curve_rms_in_se"])
    assert summary["better_fit"] == "cross_entropy"
    assert summary["curve_fitted_lam_H"] == pytest.approx(LAM_H, rel=0.1)


def test_a_paired_cell_with_one_pair_is_left_out_not_spread_as_nan():
    W = ufm.simplex_etf(K, D, seed=1)
    lams = np.linspace(0, 1, 5)
    rng = np.random.default_rng(1)
    c = np.repeat(np.arange(K), 4)  # every class, and each different-class pair a few times
    c_prime = rng.integers(K, size=len(c))
    c, c_prime = np.concatenate([c, [0]]), np.concatenate([c_prime, [5]])
    H = ufm.optimal_features(W, torch.as_tensor(c)[:, None], torch.as_tensor(c_prime)[:, None],
                             torch.as_tensor(lams)[None], LAM_H).numpy()  # fmt: skip
    H = H + 0.01 * rng.standard_normal(H.shape)
    P = len(c)
    arrays = {"features": H.reshape(P * 5, D), "c": np.repeat(c, 5),
              "c_prime": np.repeat(c_prime, 5), "lam": np.tile(lams, P), "weight": W.numpy(),
              "pair": np.repeat(np.arange(P), 5)}  # fmt: skip
    summary = ufm.compare_features(arrays).summary
    assert summary["paired"] is True
    assert math.isfinite(summary["amplification_se"]) and math.isfinite(summary["a_same_se"])
    assert summary["pairs_per_cell"] >= 2


def test_incomplete_pair_ids_are_said_to_be_taken_as_independent():
    arrays = theory_arrays(n=3000)
    lams = np.linspace(0, 1, 5)
    arrays["lam"] = lams[np.arange(3000) % 5]
    arrays["pair"] = np.arange(3000) // 5
    arrays = {k: (v[:-1] if k != "weight" else v) for k, v in arrays.items()}
    summary = ufm.compare_features(arrays).summary
    assert summary["paired"] is False and "may be too small" in summary["pairing"]


def test_classes_without_samples_are_reported():
    arrays = theory_arrays(n=4000)
    keep = (arrays["c"] != 5) & (arrays["c_prime"] != 5)
    summary = ufm.compare_features({k: v[keep] if k != "weight" else v
                                    for k, v in arrays.items()}).summary  # fmt: skip
    assert summary["classes_without_samples"] == [5]


def test_a_small_file_with_exact_endpoints_is_binned_not_taken_as_a_grid():
    arrays = theory_arrays(n=400, seed=3)
    arrays["lam"][:3] = [0.0, 0.5, 1.0]
    summary = ufm.compare_features(arrays, lam_bins=5).summary
    assert summary["lam_grouping"].startswith("lam on 5 bins")


def test_class_pairs_drawn_never_exceed_those_that_exist():
    assert MeasureSettings(max_class_pairs=9).class_pair_counts(4) == (2, 6)
    assert MeasureSettings(max_class_pairs=5).class_pair_counts(3) == (1, 3)


def test_the_stratified_jackknife_equals_its_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(2, 1, 7), rng.normal(1, 0.2, 4)
    variance = 0.0
    for group, values in ((0, x), (1, y)):
        replicates = []
        for k in range(len(values)):
            kept = np.delete(values, k)
            replicates.append(kept.mean() / y.mean() if group == 0 else x.mean() / kept.mean())
        replicates = np.array(replicates)
        variance += (len(values) - 1) / len(values) * ((replicates - replicates.mean()) ** 2).sum()
    assert jackknife_ratio_se(x, y) == pytest.approx(math.sqrt(variance), rel=1e-12)
    assert math.isnan(jackknife_ratio_se(x, y[:1]))


def digits_like(n_per_class=12, classes=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.standard_normal((len(y), dim)).astype(np.float32) + y[:, None]
    return x, y


def test_integer_inputs_mixed_at_the_input_are_refused():
    x, y = digits_like()
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    with pytest.raises(ValueError, match="x_train has dtype torch.uint8: mixing at the input"):
        ufm.measure_network(model, (x * 10).clip(0, 255).astype(np.uint8), y, **FAST)


class SkipAround(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.inner(x)) + x)


class TupleBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def pair(self, x):
        return self.block(x), x

    def forward(self, x):
        h, _ = self.pair(x)
        return self.head(h)


class KeywordHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(input=torch.relu(self.body(x)))


def test_mixing_inside_a_residual_branch_is_refused():
    x, y = digits_like()
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="lam = 0 does not give the clean features"):
        ufm.measure_network(SkipAround(), x, y, mix_at="inner", **FAST)


def test_a_head_called_with_a_keyword_is_measured():
    x, y = digits_like()
    torch.manual_seed(0)
    summary = ufm.measure_network(KeywordHead(), x, y, **FAST).summary
    assert summary["head"] == "head" and math.isfinite(summary["nc1"])


def test_a_bfloat16_network_is_measured_in_float32():
    x, y = digits_like()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4)).to(torch.bfloat16)
    result = ufm.measure_network(model, x, y, **FAST)
    assert result.arrays["mixed_features"]["features"].dtype == np.float32
    assert math.isfinite(result.summary["amplification"])
