"""Neural-collapse and calibration metrics against naive float64 numpy references and torchmetrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)
from torchmetrics.functional.classification.calibration_error import _ce_compute

from ufm.etf import simplex_etf
from ufm.metrics import (
    CalibrationAccumulator,
    CollapseAccumulator,
    NearestClassMeanAccumulator,
    bin_indices,
    calibration_metrics,
    class_moments,
    collapse_metrics,
    equiangularity,
    expected_calibration_error,
    merge_moments,
    nc1,
    nc2_classifier,
    nc2_means,
    reliability_table,
    within_class_covariance,
)

TIGHT = {"rtol": 1e-10, "atol": 1e-12}
# torchmetrics' multiclass ECE casts the confidences to float32 and bins in float32: each bin
# mean is a float32 sum of up to N = 500 confidences, good to about sqrt(N) eps32 ~ 3e-6 (the
# ECE itself can be much smaller than the bin means, so rtol alone does not cover it).
FLOAT32 = {"rtol": 1e-5, "atol": 3e-6}


# ---------------------------------------------------------------------------------------------
# Naive references: explicit loops over samples and classes, numpy float64
# ---------------------------------------------------------------------------------------------


def naive_collapse(h, y, W, b):
    h, W = np.asarray(h, np.float64), np.asarray(W, np.float64)
    b = np.zeros(W.shape[0]) if b is None else np.asarray(b, np.float64)
    K, d = W.shape
    N = len(h)
    means = np.stack([h[y == c].mean(axis=0) for c in range(K)])
    mu_G = means.mean(axis=0)
    M = means - mu_G
    sigma_W = np.zeros((d, d))
    for i in range(N):
        r = h[i] - means[y[i]]
        sigma_W += np.outer(r, r)
    sigma_W /= N
    sigma_B = sum(np.outer(M[c], M[c]) for c in range(K)) / K
    pinv = np.linalg.pinv(sigma_B, rcond=d * np.finfo(np.float64).eps, hermitian=True)
    P = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)

    def etf_dist(G):
        return np.linalg.norm(G / np.linalg.norm(G) - P)

    def cosines(V):
        out = []
        for i in range(K):
            for j in range(i + 1, K):
                out.append(V[i] @ V[j] / np.linalg.norm(V[i]) / np.linalg.norm(V[j]))
        return np.array(out)

    def cov(V):
        norms = np.linalg.norm(V, axis=1)
        return np.std(norms) / np.mean(norms)

    logits = h @ W.T + b
    nearest = np.array(
        [np.argmin([np.linalg.norm(h[i] - means[c]) for c in range(K)]) for i in range(N)]
    )
    return {
        "nc1": np.trace(sigma_W @ pinv) / K,
        "nc2_W": etf_dist(W @ W.T),
        "nc2_M": etf_dist(M @ M.T),
        "nc3": np.linalg.norm(W / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2,
        "nc4": np.mean(logits.argmax(axis=1) != nearest),
        "equinorm_W": cov(W),
        "equinorm_M": cov(M),
        "equiangularity_W": np.std(cosines(W)),
        "equiangularity_M": np.std(cosines(M)),
        "max_equiangularity_W": np.mean(np.abs(cosines(W) + 1 / (K - 1))),
        "max_equiangularity_M": np.mean(np.abs(cosines(M) + 1 / (K - 1))),
        "bias_collapse": np.linalg.norm(W @ mu_G + b),
        "bias_collapse_centred": np.linalg.norm(W @ mu_G + b - np.mean(W @ mu_G + b)),
        "sigma_W": sigma_W,
    }


def naive_ece(conf, correct, n_bins):
    """Bins [k/B, (k+1)/B) with the last one closed at 1; loops over bins and samples."""
    conf = np.asarray(conf, np.float64)
    correct = np.asarray(correct, np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for k in range(n_bins):
        members = [
            i
            for i in range(len(conf))
            if edges[k] <= conf[i] < edges[k + 1] or (k == n_bins - 1 and conf[i] == 1.0)
        ]
        if members:
            gap = np.mean(correct[members]) - np.mean(conf[members])
            total += len(members) / len(conf) * abs(gap)
    return total


def random_problem(seed, K=5, d=8, N=300, bias=True):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(N) % K
    y = y[torch.randperm(N, generator=gen)]
    centres = 3 * torch.randn(K, d, generator=gen, dtype=torch.float64)
    h = centres[y] + torch.randn(N, d, generator=gen, dtype=torch.float64) + 2.0
    W = torch.randn(K, d, generator=gen, dtype=torch.float64)
    b = torch.randn(K, generator=gen, dtype=torch.float64) if bias else None
    return h, y, W, b


# ---------------------------------------------------------------------------------------------
# Neural collapse
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,K,d,bias", [(0, 5, 8, True), (1, 3, 2, False), (2, 7, 20, True)])
def test_collapse_metrics_match_naive_reference(seed, K, d, bias):
    h, y, W, b = random_problem(seed, K, d, bias=bias)
    got = collapse_metrics(h, y, W, b)
    want = naive_collapse(h.numpy(), y.numpy(), W.numpy(), None if b is None else b.numpy())
    for key in got:
        if key != "n":
            np.testing.assert_allclose(got[key], want[key], **TIGHT, err_msg=key)
    assert got["n"] == len(y)
    assert got["nc1"] > 0.01 and got["nc4"] > 0.0  # random data: nothing has collapsed


def test_streaming_in_uneven_batches_equals_one_shot_and_reference():
    h, y, W, b = random_problem(3, K=6, d=10, N=311)
    accumulator = CollapseAccumulator(6, 10)
    # Batches of sizes 1, 7, 50, ...: most of them miss some classes.
    bounds = [0, 1, 8, 58, 59, 200, 311]
    for lo, hi in itertools.pairwise(bounds):
        accumulator.update(h[lo:hi].float(), y[lo:hi])  # float32 input, float64 arithmetic
    streamed = accumulator.compute(W, b)
    want = naive_collapse(h.float().double().numpy(), y.numpy(), W.numpy(), b.numpy())
    for key in streamed:
        if key != "n":
            np.testing.assert_allclose(streamed[key], want[key], **TIGHT, err_msg=key)
    np.testing.assert_allclose(
        within_class_covariance(accumulator.moments).cpu().numpy(), want["sigma_W"], **TIGHT
    )


def test_merged_moments_stay_accurate_for_nearly_collapsed_features_far_from_origin():
    # Features at distance 1e4 with within-class spread 1e-3: sum h h^T - sum n mu mu^T would
    # lose about 14 of 16 digits; merging centred moments must not.
    h, y, W, _ = random_problem(4, K=4, d=5, N=400)
    h = 1e4 + h * 1e-3 + torch.randn(4, 5, dtype=torch.float64)[y]
    accumulator = CollapseAccumulator(4, 5)
    for chunk in range(0, 400, 37):
        accumulator.update(h[chunk : chunk + 37], y[chunk : chunk + 37])
    want = naive_collapse(h.numpy(), y.numpy(), W.numpy(), None)
    np.testing.assert_allclose(accumulator.compute(W)["nc1"], want["nc1"], rtol=1e-7)


def test_merge_moments_is_exact_union():
    h, y, _, _ = random_problem(5, K=3, d=4, N=90)
    whole = class_moments(h, y, 3)
    merged = merge_moments(class_moments(h[:40], y[:40], 3), class_moments(h[40:], y[40:], 3))
    for name in ("counts", "means", "scatter"):
        np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), **TIGHT)


@pytest.mark.parametrize("K,d", [(4, 3), (5, 12), (10, 10)])
def test_perfect_collapse_gives_zero(K, d):
    W = simplex_etf(K, d, scale=2.0, seed=K)
    offset = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    means = 3.0 * W + offset  # class means: an ETF aligned with W, around a global mean
    y = torch.arange(5 * K) % K
    h = means[y]
    bias = -W @ offset  # cancels the global mean's logits
    result = collapse_metrics(h, y, W, bias)
    assert result["nc1"] <= 1e-20
    for key in (
        "nc2_W",
        "nc2_M",
        "nc3",
        "bias_collapse",
        "equinorm_W",
        "equinorm_M",
        "equiangularity_W",
        "equiangularity_M",
        "max_equiangularity_W",
        "max_equiangularity_M",
    ):
        assert abs(result[key]) <= 1e-12, (key, result[key])
    assert result["nc4"] == 0.0


def test_nc2_of_classifier_is_not_centred_but_means_are():
    W = simplex_etf(5, 6)
    shifted = W + torch.ones(6, dtype=torch.float64)
    assert nc2_means(shifted) <= 1e-12
    assert nc2_classifier(shifted) > 0.1


def test_equiangularity_is_zero_for_equal_angles_that_are_not_simplex():
    V = torch.eye(4, dtype=torch.float64)  # pairwise orthogonal: equiangular, not maximal
    assert equiangularity(V) == 0.0
    result = collapse_metrics(V[torch.arange(8) % 4], torch.arange(8) % 4, V)
    np.testing.assert_allclose(result["max_equiangularity_W"], 1 / 3, **TIGHT)


def test_nc1_pseudo_inverse_ignores_the_null_space_of_sigma_b():
    # d = 9 > K - 1 = 2: Sigma_B has rank 2 and a 7-dimensional null space in which the
    # within-class scatter is large; only the span of the means may count.
    K, d = 3, 9
    means = torch.zeros(K, d, dtype=torch.float64)
    means[:, :2] = torch.tensor([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]], dtype=torch.float64)
    sigma_B = means.T @ means / K
    sigma_W = torch.diag(torch.tensor([0.1, 0.2] + [50.0] * 7, dtype=torch.float64))
    expected = (0.1 / sigma_B[0, 0] + 0.2 / sigma_B[1, 1]) / K
    np.testing.assert_allclose(nc1(sigma_W, sigma_B, K), float(expected), **TIGHT)


def test_nc4_accumulator_counts_mismatches():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    features = torch.tensor([[1.0, 0.0], [9.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # predicts class 0 for all
    accumulator = NearestClassMeanAccumulator(means)
    accumulator.update(features[:2], logits[:2])
    accumulator.update(features[2:], logits[2:])
    assert accumulator.compute() == pytest.approx(1 / 3, abs=1e-15)


def test_bad_neural_collapse_input_is_refused_with_the_value():
    h, y, W, _ = random_problem(6, K=4, d=5, N=40)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\], found 4"):
        collapse_metrics(h, torch.where(y == 0, 4, y), W)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        collapse_metrics(h[y != 2], y[y != 2], W)
    accumulator = CollapseAccumulator(4, 5)
    accumulator.update(h, y)
    with pytest.raises(ValueError, match=r"shape \(K, d\) = \(4, 5\)"):
        accumulator.compute(W[:, :3])
    with pytest.raises(ValueError, match="features must be finite"):
        collapse_metrics(torch.full_like(h, float("nan")), y, W)


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


def random_logits(seed, N=500, K=6, spread=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = spread * torch.randn(N, K, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, K, (N,), generator=gen)
    # Make the network right more often than chance so that every bin sees both outcomes.
    labels = torch.where(torch.rand(N, generator=gen) < 0.6, logits.argmax(1), labels)
    return logits, labels


@pytest.mark.parametrize("n_bins", [1, 5, 10, 15, 23])
@pytest.mark.parametrize("seed", [0, 1])
def test_ece_matches_torchmetrics_multiclass(seed, n_bins):
    logits, labels = random_logits(seed)
    ours = calibration_metrics(logits, labels, n_bins)
    theirs = multiclass_calibration_error(logits, labels, num_classes=6, n_bins=n_bins, norm="l1")
    np.testing.assert_allclose(ours["ece"], float(theirs), **FLOAT32)
    conf, pred = torch.softmax(logits, 1).max(1)
    assert bool((conf < 1).all())
    correct = (pred == labels).double()
    # The same binning routine of torchmetrics, kept in float64: agreement to rounding.
    np.testing.assert_allclose(ours["ece"], float(_ce_compute(conf, correct, n_bins)), **TIGHT)
    np.testing.assert_allclose(ours["ece"], naive_ece(conf, correct, n_bins), **TIGHT)


def test_ece_with_confidences_exactly_zero_matches_torchmetrics_binary():
    gen = torch.Generator().manual_seed(7)
    conf = torch.rand(400, generator=gen, dtype=torch.float64)
    conf[:30] = 0.0
    conf[30:45] = torch.linspace(0, 1, 16, dtype=torch.float64)[:15]  # exactly on bin edges
    correct = torch.rand(400, generator=gen) < conf.float()
    ours = expected_calibration_error(conf, correct, 15)
    theirs = binary_calibration_error(conf, correct.long(), n_bins=15, norm="l1")
    np.testing.assert_allclose(ours, float(theirs), **TIGHT)
    np.testing.assert_allclose(ours, naive_ece(conf, correct, 15), **TIGHT)
    assert int(bin_indices(torch.zeros(1, dtype=torch.float64))[0]) == 0


def test_ece_with_confidences_exactly_one_matches_torchmetrics_multiclass():
    # Logit gaps of 60 give a float64 softmax of exactly 1. Where the top bin holds only those
    # samples, torchmetrics' extra bin for confidence 1 and our closed top bin coincide.
    logits, labels = random_logits(8, spread=1.0)  # confidences well below 14/15
    logits[:40, 0] += 60.0
    labels[:30] = 0  # 30 right, 10 wrong at confidence exactly 1
    conf = torch.softmax(logits, 1).max(1).values
    assert bool((conf[:40] == 1.0).all()) and float(conf[40:].max()) < 14 / 15
    ours = calibration_metrics(logits, labels, 15)["ece"]
    theirs = multiclass_calibration_error(logits, labels, num_classes=6, n_bins=15, norm="l1")
    np.testing.assert_allclose(ours, float(theirs), **FLOAT32)
    correct = (logits.argmax(1) == labels).double()
    np.testing.assert_allclose(ours, float(_ce_compute(conf, correct, 15)), **TIGHT)
    np.testing.assert_allclose(ours, naive_ece(conf, correct, 15), **TIGHT)


def test_ece_puts_confidence_one_in_the_last_bin():
    # docs/theory.md section 6: confidences 0 and 1 belong in the edge bins.
    # torchmetrics gives exactly-1
    # confidences a bin of their own, so it is compared with its own binning routine and a top
    # edge moved just above 1, which puts them in the last bin as specified.
    gen = torch.Generator().manual_seed(9)
    conf = torch.rand(300, generator=gen, dtype=torch.float64) ** 0.2
    conf[:50] = 1.0
    conf[50:60] = 0.0
    correct = torch.rand(300, generator=gen, dtype=torch.float64) < 0.7
    ours = expected_calibration_error(conf, correct, 15)
    edges = torch.linspace(0, 1, 16, dtype=torch.float64)
    edges[-1] = np.nextafter(1.0, 2.0)
    theirs = _ce_compute(conf, correct.double(), edges, norm="l1")
    np.testing.assert_allclose(ours, float(theirs), **TIGHT)
    np.testing.assert_allclose(ours, naive_ece(conf, correct, 15), **TIGHT)
    assert int(bin_indices(torch.ones(1, dtype=torch.float64), 15)[0]) == 14


def test_reliability_table_and_accumulator_agree_with_direct_computation():
    logits, labels = random_logits(10, N=333)
    accumulator = CalibrationAccumulator(10)
    for lo in range(0, 333, 50):
        accumulator.update(logits[lo : lo + 50], labels[lo : lo + 50])
    streamed = accumulator.compute()
    p = torch.softmax(logits, 1).numpy()
    conf, pred = p.max(1), p.argmax(1)
    correct = pred == labels.numpy()
    np.testing.assert_allclose(streamed["accuracy"], correct.mean(), **TIGHT)
    np.testing.assert_allclose(
        streamed["nll"], -np.mean(np.log(p[np.arange(333), labels.numpy()])), **TIGHT
    )
    np.testing.assert_allclose(streamed["ece"], naive_ece(conf, correct, 10), **TIGHT)
    table = reliability_table(torch.as_tensor(conf), torch.as_tensor(correct), 10)
    for row, streamed_row in zip(table, streamed["reliability"], strict=True):
        assert row["count"] == streamed_row["count"]
        if row["count"]:  # softmax and exp(log_softmax) differ in the last bit
            np.testing.assert_allclose(row["gap"], streamed_row["gap"], **TIGHT)
    assert sum(row["count"] for row in table) == 333
    for row in table:
        members = (conf >= row["lower"]) & ((conf < row["upper"]) | (row["bin"] == 9))
        assert row["count"] == members.sum()
        if row["count"]:
            np.testing.assert_allclose(row["accuracy"], correct[members].mean(), **TIGHT)
            np.testing.assert_allclose(row["confidence"], conf[members].mean(), **TIGHT)
        else:
            assert row["accuracy"] is None and row["gap"] is None


def test_bad_calibration_input_is_refused_with_the_value():
    with pytest.raises(ValueError, match=r"confidences must lie in \[0, 1\], found 1.5"):
        expected_calibration_error(torch.tensor([0.5, 1.5]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="n_bins must be >= 1, got 0"):
        expected_calibration_error(torch.tensor([0.5]), torch.tensor([1]), n_bins=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\], found 3"):
        calibration_metrics(torch.zeros(2, 3), torch.tensor([0, 3]))


def test_bias_collapse_is_taken_modulo_the_all_ones_vector():
    """A bias that cancels the global mean's logits up to a common shift t: softmax ignores t,
    the centred bias collapse is 0 (rounding of O(1) sums, 1e-13) while the plain one is
    t sqrt(K)."""
    from ufm.metrics import bias_collapse, bias_collapse_centred

    K, d = 5, 7
    W = torch.as_tensor(np.random.default_rng(0).normal(size=(K, d)))
    mu = torch.linspace(-1.0, 2.0, d, dtype=torch.float64)
    t = 3.5
    b = -W @ mu + t
    assert bias_collapse(W, b, mu) == pytest.approx(t * math.sqrt(K), rel=1e-12)
    assert bias_collapse_centred(W, b, mu) < 1e-13
