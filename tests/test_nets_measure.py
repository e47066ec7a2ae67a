"""Measurements: eval mode, streaming NC metrics, agreement with the UFM, layer-wise linearity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nets_support import FAST_MEASUREMENT, one_torch_thread  # noqa: F401  (autouse fixture)
from torch import nn

from ufm.etf import row_space, simplex_etf
from ufm.losses import get_loss
from ufm.metrics import collapse_metrics
from ufm.nets import TrainConfig, build_model, load_dataset, measure
from ufm.nets.forward import eval_mode
from ufm.nets.linearity import layer_linearity
from ufm.nets.measure import (
    class_pairs,
    collapse_measurement,
    mixed_activations,
    triple_projections,
)
from ufm.nets.models import LinearClassifier, MixupNet
from ufm.nets.probe import NetworkProbe
from ufm.nets.ufm_comparison import theory_agreement
from ufm.theory import optimal_features


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=400)


def small_config(**fields):
    return TrainConfig(**{**FAST_MEASUREMENT, "measure_batch_size": 97, **fields})


def probe_of(net, x, batch_size=2048, **fields):
    """A probe of a MixupNet with its classifier as the head and its blocks as the layers."""
    layers = [f"blocks.{k}" for k in range(net.num_blocks)]
    return NetworkProbe(net, x[:2], net.classifier, layers=layers, batch_size=batch_size, **fields)


def buffers(model):
    return {name: value.clone() for name, value in model.named_buffers()}


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_measuring_never_touches_batchnorm_statistics_and_restores_modes(digits, model):
    config = small_config(model=model, width=4 if model == "cnn" else 0)
    net = build_model(config, digits.input_shape, digits.num_classes)
    with torch.no_grad():  # move the running statistics away from their initial values
        net.train()
        net(digits.x_train[:64])
    net.blocks[0].eval()  # a mixed state, to check that each module's own mode is restored
    modes = {name: m.training for name, m in net.named_modules()}
    before = buffers(net)
    assert any("running_mean" in name for name in before)
    result = measure(net, digits, config, "cpu")
    after = buffers(net)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert modes == {name: m.training for name, m in net.named_modules()}
    assert 0.0 <= result.scalars["test_accuracy"] <= 1.0


def test_eval_mode_restores_modes_after_an_error():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    with pytest.raises(RuntimeError), eval_mode(net):
        assert not net[1].training
        raise RuntimeError("inside")
    assert net.training and net[1].training


def test_streamed_collapse_measurement_equals_one_shot_metrics(digits):
    config = small_config(bias=True)
    net = build_model(config, digits.input_shape, digits.num_classes).eval()
    probe = probe_of(net, digits.x_train, batch_size=37)
    scalars, means = collapse_measurement(probe, digits.x_train, digits.y_train)
    # The reference sees the very float32 features the measurement sees: the network runs on
    # the same batches of 37 rows (a row's float32 features depend on the GEMM blocking chosen
    # for the batch size, a few float32 ulps apart under MKL's AVX2 or compatibility kernels).
    # What remains is the float64 streaming against the one-shot formulas: 1e-10.
    with torch.no_grad():
        batches = torch.split(digits.x_train, 37)
        features = torch.cat([net.features(x) for x in batches])
        logits = torch.cat([net(x) for x in batches])
    want = collapse_metrics(
        features, digits.y_train, net.classifier.weight.detach(), net.classifier.bias.detach()
    )
    for key, value in want.items():
        np.testing.assert_allclose(scalars[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    accuracy = (logits.argmax(1) == digits.y_train).double().mean().item()
    assert scalars["train_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert means.shape == (10, config.feature_dim) and means.dtype == torch.float64


def test_mixed_activations_are_features_of_the_mixed_inputs(digits):
    net = build_model(small_config(), digits.input_shape, digits.num_classes).eval()
    lams = np.linspace(0, 1, 5)
    i, j = np.array([0, 5, 9]), np.array([3, 5, 1])
    probe = probe_of(net, digits.x_train, batch_size=4)
    acts = mixed_activations(probe, digits.x_train, digits.y_train, i, j, lams)
    assert acts["features"].shape == (3, 5, 64) and acts["logits"].shape == (3, 5, 10)
    with torch.no_grad():
        for p in range(3):
            for l, lam in enumerate(lams):
                x = lam * digits.x_train[i[p]] + (1 - lam) * digits.x_train[j[p]]
                np.testing.assert_allclose(
                    acts["features"][p, l], net.features(x[None])[0], rtol=1e-5, atol=1e-5
                )
    assert acts["c"].tolist() == digits.y_train[i].tolist()


def test_class_pairs_cover_each_class_pair_once_with_distinct_same_class_partners():
    labels = np.repeat(np.arange(4), 5)
    i, j = class_pairs(labels, [0, 2, 3], per_pair=7, rng=np.random.default_rng(0))
    assert len(i) == 6 * 7
    blocks = [(labels[i[k]], labels[j[k]]) for k in range(0, len(i), 7)]
    assert blocks == [(0, 0), (0, 2), (0, 3), (2, 2), (2, 3), (3, 3)]
    same = labels[i] == labels[j]
    assert bool((i[same] != j[same]).all())


# ---------------------------------------------------------------------------------------------
# Agreement with the UFM on activations built from the exact optimum
# ---------------------------------------------------------------------------------------------


def ufm_activations(K, d, lam_H, loss="ce", noise=0.0, seed=0):
    """Features at the exact UFM optimum for every class pair, shifted by a global mean that
    lies in the null space of W (so it leaves the logits alone), plus optional noise in that
    null space."""
    W = simplex_etf(K, d, scale=1.3, seed=seed)
    lams = np.linspace(0, 1, 11)
    c, c_prime = np.triu_indices(K)
    optimum = optimal_features(W, c[:, None], c_prime[:, None], lams[None, :], lam_H, loss=loss)
    null = torch.linalg.svd(W, full_matrices=True).Vh[K - 1 :]  # rows orthonormal, W null^T = 0
    offset = 2.0 * null[0]
    rng = np.random.default_rng(seed)
    coefficients = torch.as_tensor(rng.normal(size=(*optimum.shape[:2], null.shape[0])))
    features = optimum + offset + noise * coefficients @ null
    logits = features @ W.T
    acts = {
        "features": features.numpy(),
        "logits": logits.numpy(),
        "c": c,
        "c_prime": c_prime,
        "lam": lams,
    }
    return acts, W, offset, optimum


@pytest.mark.parametrize(
    "loss,lam_H", [("ce", 0.02), ("ce", 3e-4), ("mse", 0.5), ("label_smoothing", 0.05)]
)
def test_theory_agreement_recovers_the_exact_optimum(loss, lam_H):
    acts, W, offset, _ = ufm_activations(5, 8, lam_H, loss)
    result = theory_agreement(acts, W, None, offset, get_loss(loss))
    s = result.scalars
    assert s["fitted_lam_H"] == pytest.approx(lam_H, rel=1e-6)
    assert s["out_of_span_fraction"] < 1e-12
    half = next(row for row in result.rows if row["lam"] == 0.5)
    assert s["confidence_half"] == pytest.approx(half["theory_confidence"], abs=1e-7)
    assert s["margin_fit_rms"] < 1e-7
    assert s["same_class_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert s["boundary_distance_half"] < 1e-12
    assert s["classifier_etf_distance"] < 1e-12
    assert s["logit_offset"] < 1e-12  # the global mean lies in the null space of W
    for row in result.rows:
        assert row["p_c_mean"] == pytest.approx(row["theory_p_c"], abs=1e-7)
        assert row["margin_mean"] == pytest.approx(row["margin_theory"], abs=1e-7)
        assert row["confidence_mean"] == pytest.approx(row["theory_confidence"], abs=1e-7)


def test_noise_off_the_span_is_measured_and_moves_no_margin():
    noise = 0.3
    acts, W, offset, optimum = ufm_activations(4, 9, 0.01, noise=noise, seed=2)
    result = theory_agreement(acts, W, None, offset, get_loss("ce"))
    residual = acts["features"] - offset.numpy() - optimum.numpy()  # in the null space of W
    expected = np.linalg.norm(residual) / np.linalg.norm(acts["features"] - offset.numpy())
    assert result.scalars["out_of_span_fraction"] == pytest.approx(expected, rel=1e-9)
    assert result.scalars["fitted_lam_H"] == pytest.approx(0.01, rel=1e-6)  # logits unchanged
    assert result.scalars["same_class_cosine"] < 0.99


def test_a_logit_offset_is_taken_out_of_the_margins_modulo_the_all_ones_vector():
    """Bias b and a global mean with W mu_G != 0: the network's margins move by o_c - o_c',
    the centred margins compared with theory do not, and a bias along 1 changes nothing."""
    acts, W, offset, _ = ufm_activations(5, 8, 0.02)
    shift = torch.linspace(-1.0, 1.5, 5, dtype=torch.float64)
    bias = shift + 7.0  # the constant 7 is along the all-ones vector: softmax ignores it
    shifted = {**acts, "logits": acts["logits"] + bias.numpy()}
    base = theory_agreement(acts, W, None, offset, get_loss("ce"))
    moved = theory_agreement(shifted, W, bias, offset, get_loss("ce"))
    want = float(torch.sqrt(((shift - shift.mean()) ** 2).mean()))
    assert moved.scalars["logit_offset"] == pytest.approx(want, rel=1e-12)
    assert moved.scalars["fitted_lam_H"] == pytest.approx(base.scalars["fitted_lam_H"], rel=1e-6)
    different = acts["c"] != acts["c_prime"]
    gap = (shift[acts["c"][different]] - shift[acts["c_prime"][different]]).mean().item()
    for before, after in zip(base.rows, moved.rows):
        assert after["margin_mean"] == pytest.approx(before["margin_mean"], abs=1e-9)
        assert after["margin_raw_mean"] == pytest.approx(before["margin_raw_mean"] + gap, abs=1e-9)


def test_confidence_per_lam_averages_different_class_pairs_only():
    acts, W, offset, _ = ufm_activations(4, 6, 0.02)
    same = acts["c"] == acts["c_prime"]
    logits = acts["logits"].copy()
    logits[same] *= 50.0  # same-class pairs made (almost) certain: they must not count
    result = theory_agreement({**acts, "logits": logits}, W, None, offset, get_loss("ce"))
    z = torch.as_tensor(logits[~same])
    want = torch.softmax(z, dim=-1).max(-1).values.mean(0).numpy()
    got = [row["confidence_mean"] for row in result.rows]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_theory_entries_are_nan_for_a_loss_without_theory():
    acts, W, offset, _ = ufm_activations(4, 5, 0.02)
    result = theory_agreement(acts, W, None, offset, get_loss("focal"))
    assert math.isnan(result.scalars["fitted_lam_H"]) and math.isnan(
        result.scalars["margin_fit_rms"]
    )
    assert math.isnan(result.rows[0]["margin_theory"])
    assert result.scalars["same_class_cosine"] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Layer-wise linearity
# ---------------------------------------------------------------------------------------------


def test_linear_blocks_are_perfectly_linear():
    torch.manual_seed(0)
    net = MixupNet([nn.Flatten(), nn.Linear(6, 5), nn.Linear(5, 4)], LinearClassifier(4, 3))
    x = torch.randn(30, 2, 3)
    values = layer_linearity(
        probe_of(net, x, batch_size=8), x, np.arange(10), np.arange(10, 20), np.linspace(0, 1, 5)
    )
    assert len(values) == 3 and max(values) < 1e-5


def test_layer_linearity_matches_a_per_pair_loop():
    torch.manual_seed(1)
    net = MixupNet(
        [nn.Sequential(nn.Linear(3, 16), nn.ReLU()), nn.Sequential(nn.Linear(16, 4), nn.Tanh())],
        LinearClassifier(4, 3),
    )
    x = torch.randn(12, 3)
    i, j = np.array([0, 1, 2, 3, 4, 4]), np.array([5, 6, 7, 8, 9, 4])  # last pair: i == j
    lams = np.linspace(0, 1, 7)
    got = layer_linearity(probe_of(net, x, batch_size=10), x, i, j, lams)
    want = []
    with torch.no_grad():
        for layer in range(2):
            ratios = []
            for a, b in zip(i, j):
                if a == b:
                    continue
                f_a = net.run_blocks(x[a : a + 1], 0, layer + 1)[0].double().numpy()
                f_b = net.run_blocks(x[b : b + 1], 0, layer + 1)[0].double().numpy()
                for lam in lams[1:-1]:
                    mixed = lam * x[a] + (1 - lam) * x[b]
                    f_m = net.run_blocks(mixed[None], 0, layer + 1)[0].double().numpy()
                    chord = lam * f_a + (1 - lam) * f_b
                    ratios.append(np.linalg.norm(f_m - chord) / np.linalg.norm(f_a - f_b))
            want.append(np.mean(ratios))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert min(got) > 1e-3


def test_theory_agreement_refuses_a_grid_without_one_half_or_one_kind_of_pair():
    acts, W, offset, _ = ufm_activations(4, 5, 0.02)
    bad_grid = {**acts, "lam": np.linspace(0, 1, 10)}
    with pytest.raises(ValueError, match="must contain 0, 1/2 and 1"):
        theory_agreement(bad_grid, W, None, offset, get_loss("ce"))
    same_only = {
        key: value[acts["c"] == acts["c_prime"]] if key != "lam" else value
        for key, value in acts.items()
    }
    with pytest.raises(ValueError, match="both same-class and different-class pairs, got 4 same"):
        theory_agreement(same_only, W, None, offset, get_loss("ce"))


@pytest.mark.parametrize("K,span_rank", [(3, 2), (6, 3)])
def test_triple_projections_use_the_true_rank_of_the_classifier_rows(K, span_rank):
    W = simplex_etf(K, 7, seed=1)
    assert row_space(W.numpy()).shape == (7, K - 1)  # the rows of an ETF sum to zero
    centre = np.linspace(-1, 1, 7)
    features = centre + np.random.default_rng(0).normal(size=(4, 5, 7))
    out = triple_projections(W, (0, 1, 2), features, centre)
    assert out["span_basis"].shape == (7, span_rank) and out["plane_basis"].shape == (7, 2)
    for name in ("span", "plane"):
        basis = out[f"{name}_basis"]
        np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-12)
        np.testing.assert_allclose(out[f"{name}_coordinates"], (features - centre) @ basis)
    # The classifier rows themselves lie in their span; their differences in the plane.
    rows = W.numpy()[:3]
    span = out["span_basis"]
    np.testing.assert_allclose(rows @ span @ span.T, rows, atol=1e-12)
    plane = out["plane_basis"]
    np.testing.assert_allclose((rows - rows[0]) @ plane @ plane.T, rows - rows[0], atol=1e-12)


def test_manifold_mixup_runs_are_measured_at_their_mixed_layer(digits):
    config = small_config(mixup_layer=2)
    net = build_model(config, digits.input_shape, digits.num_classes).eval()
    lams = np.array([0.0, 0.5, 1.0])
    i, j = np.array([0, 7]), np.array([3, 11])
    probe = probe_of(net, digits.x_train, batch_size=8, mix_at="blocks.1")
    acts = mixed_activations(probe, digits.x_train, digits.y_train, i, j, lams)
    with torch.no_grad():
        hidden = net.run_blocks(digits.x_train[[0, 3]], 0, 2)
        mixed = 0.5 * hidden[0] + 0.5 * hidden[1]
        want = net.run_blocks(mixed[None], 2)[0]
    np.testing.assert_allclose(acts["features"][0, 1], want.numpy(), rtol=1e-5, atol=1e-6)
    result = measure(net, digits, config, "cpu")
    assert result.scalars["measured_at_layer"] == 2


def test_a_network_without_a_linear_last_layer_is_refused_before_any_work(digits):
    class Softmaxed(nn.Module):
        def forward(self, h):
            return torch.softmax(h, -1)

    net = build_model(small_config(), digits.input_shape, digits.num_classes)
    net.classifier = Softmaxed()
    with pytest.raises(ValueError, match="'classifier' is a Softmaxed; it must be a linear map"):
        measure(net, digits, small_config(), "cpu")


def test_measure_reports_the_cell_comparison(digits):
    config = small_config()
    net = build_model(config, digits.input_shape, digits.num_classes)
    result = measure(net, digits, config, "cpu")
    s = result.scalars
    for key in ("amplification", "amplification_theory", "better_fit", "amplification_exact_W"):
        assert key in s
    assert "ufm_distance" not in s and "same_class_spread" not in s
    assert len(result.tables["coefficients_vs_lam"]) == config.lam_grid
    assert result.arrays["cells"]["means"].shape[:2] == (55, config.lam_grid)
