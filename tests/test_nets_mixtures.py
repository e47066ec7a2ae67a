"""Mixup of m > 2 points (Chaudhry et al. 2022) and the 3-class mixture measurements.

What is checked: the mixed batch is a convex combination with Dirichlet weights and targets on
the simplex; the m-point loss is the soft-target loss; m = 2 draws what it always drew; the
measurement recovers the exact optimum (Fisher, Meng & Papyan, ICLR 2024, extended to m
classes) from features equal to it; a short digits run trains, writes its files and resumes
to the bit; bad input is refused before any work.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from nets_support import (  # noqa: F401  (one_torch_thread: autouse fixture)
    FAST_MEASUREMENT,
    FAST_MIXTURES,
    crash_in_epoch,
    one_torch_thread,
)

from ufm.nets.probe import NetworkProbe
from ufm import cli, mixture_coefficients, mixture_features, mixture_target
from ufm.etf import row_space, simplex_etf
from ufm.io import read_csv, read_json, write_json
from ufm.losses import get_loss
from ufm.nets import TrainConfig, build_model, load_dataset, run_training
from ufm.nets import run as run_module
from ufm.nets import training as training_module
from ufm.nets.mixtures import COLUMNS, compare_mixtures, mixture_activations
from ufm.nets.mixup import MixturePlan, Mixup, MixupPlan, mixed_forward, mixture_loss
from ufm.nets.training import build_optimizer, train_epoch
from ufm.theory import optimal_coefficients
from ufm.theory.mixtures import simplex_grid


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


class RecordingMixup(Mixup):
    """A :class:`Mixup` that keeps every (labels, plan) it hands out."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def plan(self, labels, rng):
        plan = super().plan(labels, rng)
        self.calls.append((labels.clone(), plan))
        return plan


def one_epoch(digits, mixup, monkeypatch, seed=0):
    """Train one epoch; return the plans with their labels, the fed batches, the first
    layer's inputs and the generator."""
    net = build_model(TrainConfig(), digits.input_shape, digits.num_classes)
    fed, seen = [], []
    net.blocks[0][1].register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))

    def recording_forward(model, x, plan, layer=0):
        fed.append(x.clone())
        return mixed_forward(model, x, plan, layer)

    monkeypatch.setattr(training_module, "mixed_forward", recording_forward)
    rng = np.random.default_rng(seed)
    optimizer = build_optimizer(net, TrainConfig())
    train_epoch(net, digits, get_loss("ce"), mixup, optimizer, rng, 128, "cpu")
    return mixup.calls, fed, seen, rng


# --------------------------------------------------------------------------------------------
# Mixing and the loss
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_sample", [False, True])
def test_three_points_give_convex_combinations_and_targets_on_the_simplex(
    digits, monkeypatch, per_sample
):
    mixup = RecordingMixup(1.0, per_sample=per_sample, points=3)
    calls, fed, seen, _ = one_epoch(digits, mixup, monkeypatch)
    assert len(calls) == len(fed) == len(seen) > 5
    K = digits.num_classes
    for (labels, plan), x, inputs in zip(calls, fed, seen, strict=True):
        assert isinstance(plan, MixturePlan) and plan.points == 3
        B = len(x)
        members, weights = plan.members.numpy(), plan.weights.numpy()
        assert np.array_equal(members[0], np.arange(B))
        assert all(sorted(row.tolist()) == list(range(B)) for row in members[1:])
        assert weights.shape == (B, 3) and weights.dtype == np.float64 and (weights >= 0).all()
        assert np.abs(weights.sum(axis=1) - 1).max() < 1e-12  # float64 rounding of 3 terms
        assert (len(np.unique(weights, axis=0)) > 1) == per_sample
        # The first linear layer sees sum_k y_k x_{pi_k}, computed here in float64; the
        # network's float32 products and sums are good to a few 1e-7 on inputs of size < 2.
        flat = x.double().reshape(B, -1).numpy()
        expected = sum(weights[:, [k]] * flat[members[k]] for k in range(3))
        np.testing.assert_allclose(inputs.double().numpy(), expected, rtol=0, atol=2e-6)
        assert not np.allclose(expected, flat, atol=1e-3)  # not the clean batch
        # Targets: one-hot rows weighted by y, added up, independently of mixture_target.
        classes = labels.numpy()[members]  # (3, B)
        independent = np.zeros((B, K))
        for k in range(3):
            np.add.at(independent, (np.arange(B), classes[k]), weights[:, k])
        target = mixture_target(classes.T, weights, K).numpy()
        assert np.abs(target - independent).max() < 1e-15
        assert np.abs(target.sum(axis=1) - 1).max() < 1e-12


def test_manifold_mixup_mixes_three_hidden_states(digits):
    net = build_model(TrainConfig(), digits.input_shape, digits.num_classes).eval()
    x = digits.x_train[:32]
    plan = Mixup(1.0, per_sample=True, points=3).plan(digits.y_train[:32], np.random.default_rng(4))
    seen = []
    net.blocks[2].register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        logits = mixed_forward(net, x, plan, layer=2)
        hidden = net.run_blocks(x, 0, 2).double()
    w = plan.weights
    expected = sum(w[:, [k]] * hidden[plan.members[k]] for k in range(3))
    torch.testing.assert_close(seen[0].double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, net.classifier(net.blocks[2](seen[0])))


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_dirichlet_weights_have_the_dirichlet_moments(alpha):
    # Dirichlet(alpha 1_3): each weight is Beta(alpha, 2 alpha), mean 1/3, variance
    # (1/3)(2/3)/(3 alpha + 1). With n = 60000 the standard error of the mean is below 0.002
    # and that of the variance below 0.6% of it (kurtosis of Beta(3, 6)); the bounds are 8 and
    # about 7 of them.
    n = 60000
    plan = Mixup(alpha, per_sample=True, points=3).plan(torch.zeros(n), np.random.default_rng(1))
    weights = plan.weights.numpy()
    variance = (1 / 3) * (2 / 3) / (3 * alpha + 1)
    assert np.abs(weights.mean(axis=0) - 1 / 3).max() < 8 * np.sqrt(variance / n)
    assert np.abs(weights.var(axis=0) / variance - 1).max() < 0.04
    labels = np.random.default_rng(2).integers(0, 4, size=300)
    plan = Mixup(alpha, same_class=True, points=4).plan(
        torch.as_tensor(labels), np.random.default_rng(3)
    )
    assert all(np.array_equal(labels[row], labels) for row in plan.members.numpy())


@pytest.mark.parametrize(
    "name,params", [("ce", {}), ("ce", {"form": "pair"}), ("label_smoothing", {"eps": 0.2})]
)
def test_m_point_loss_is_the_soft_target_cross_entropy(name, params):
    rng = np.random.default_rng(7)
    B, K, m = 64, 10, 3
    z = torch.as_tensor(3 * rng.standard_normal((B, K)))
    classes = rng.integers(0, K, size=(m, B))  # repeats allowed: targets add up
    weights = rng.dirichlet(np.ones(m), size=B)
    loss = get_loss(name, **params)
    value = mixture_loss(loss, z, torch.as_tensor(classes), torch.as_tensor(weights))
    target = mixture_target(classes.T, weights, K)
    eps = params.get("eps", 0.0)
    soft = -(((1 - eps) * target + eps / K) * torch.log_softmax(z, dim=-1)).sum(-1)
    # Values of size ~5 in float64: the two sums differ by rounding, a few 1e-15.
    assert float((value - soft).abs().max()) < 1e-13


def test_m_point_loss_of_focal_and_squared_error_and_the_pair_case():
    rng = np.random.default_rng(8)
    B, K = 50, 6
    z = torch.as_tensor(2 * rng.standard_normal((B, K)))
    classes = torch.as_tensor(rng.integers(0, K, size=(3, B)))
    weights = torch.as_tensor(rng.dirichlet(np.full(3, 0.7), size=B))
    p = torch.softmax(z, dim=-1)
    focal = mixture_loss(get_loss("focal", gamma=2.0), z, classes, weights)
    p_k = torch.stack([p[torch.arange(B), c] for c in classes], dim=1)
    independent = (weights * -((1 - p_k) ** 2) * torch.log(p_k)).sum(1)
    assert float((focal - independent).abs().max()) < 1e-13
    mse = mixture_loss(get_loss("mse"), z, classes, weights)
    y = mixture_target(classes.numpy().T, weights.numpy(), K)
    soft = 0.5 * ((z - y) ** 2).sum(-1) + 0.5 * (1 - (y * y).sum(-1))
    assert float((mse - soft).abs().max()) < 1e-13
    # m = 2 with weights (lam, 1 - lam) is the pair form of every loss.
    lam = weights[:, 0] / weights[:, :2].sum(1)
    pair_weights = torch.stack([lam, 1 - lam], dim=1)
    for loss in (get_loss("ce"), get_loss("focal", gamma=1.5), get_loss("mse", form="pair")):
        two = mixture_loss(loss, z, classes[:2], pair_weights)
        assert float((two - loss(z, classes[0], classes[1], lam)).abs().max()) < 1e-13


# --------------------------------------------------------------------------------------------
# m = 2 is unchanged
# --------------------------------------------------------------------------------------------


def reconstructed_epoch(n, batch_size, alpha, per_sample, points, seed):
    """The draws of one epoch, written out from the documented order: the epoch's order, then
    per batch of at least 2 samples one permutation and Beta (m = 2), or m - 1 permutations and
    Dirichlet (m > 2)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    plans = []
    for start in range(0, n, batch_size):
        B = len(order[start : start + batch_size])
        if B < 2:
            continue
        size = B if per_sample else 1
        if points == 2:
            partner = rng.permutation(B)
            plans.append((partner, np.broadcast_to(rng.beta(alpha, alpha, size=size), (B,))))
        else:
            members = np.stack([np.arange(B)] + [rng.permutation(B) for _ in range(points - 1)])
            weights = rng.dirichlet(np.full(points, alpha), size=size)
            plans.append((members, np.broadcast_to(weights, (B, points))))
    return plans, rng.bit_generator.state


@pytest.mark.parametrize("points,per_sample", [(2, False), (2, True), (3, True), (4, False)])
def test_draws_follow_the_documented_stream_and_pairs_are_unchanged(
    digits, monkeypatch, points, per_sample
):
    mixup = RecordingMixup(0.7, per_sample=per_sample, points=points)
    calls, _, _, rng = one_epoch(digits, mixup, monkeypatch, seed=11)
    expected, state = reconstructed_epoch(len(digits.y_train), 128, 0.7, per_sample, points, 11)
    assert len(calls) == len(expected)
    for (_, plan), (first, second) in zip(calls, expected, strict=True):
        if points == 2:
            assert isinstance(plan, MixupPlan)
            assert np.array_equal(plan.partner.numpy(), first)
            assert np.array_equal(plan.lam.numpy(), second)  # bit-identical
        else:
            assert np.array_equal(plan.members.numpy(), first)
            assert np.array_equal(plan.weights.numpy(), second)
    assert rng.bit_generator.state == state


def test_pair_runs_write_no_mixture_files_or_keys(tmp_path):
    assert TrainConfig().mixup_points == 2
    summary = run_training(
        TrainConfig(epochs=1, **FAST_MEASUREMENT), tmp_path / "r", progress=False
    )
    assert not any(key.startswith("mixture") for key in summary)
    folder = tmp_path / "r" / "measurements" / "epoch_0001"
    assert not list(folder.glob("*mixtures3*"))


def test_runs_started_before_the_new_fields_resume(tmp_path, monkeypatch):
    config = TrainConfig(epochs=2, checkpoint_every=1, **FAST_MEASUREMENT)
    crash_in_epoch(config, tmp_path / "old", monkeypatch, 2)
    saved = read_json(tmp_path / "old" / "config.json")
    for name in ("mixup_points", "mixture_grid", "mixture_triples", "mixture_samples"):
        del saved["config"][name]
    write_json(tmp_path / "old" / "config.json", saved)
    with pytest.raises(ValueError, match="fields that differ .*: mixup_points"):
        other = TrainConfig(epochs=2, checkpoint_every=1, mixup_points=3, **FAST_MEASUREMENT)
        run_training(other, tmp_path / "old", resume=True, progress=False)
    summary = run_training(config, tmp_path / "old", resume=True, progress=False)
    assert summary["epochs"] == 2 and (tmp_path / "old" / "summary.json").is_file()


# --------------------------------------------------------------------------------------------
# The measurement, on features whose answer is known
# --------------------------------------------------------------------------------------------


def synthetic_optimum(loss, K=10, d=14, scale=1.0, lam_H=5e-3, P=5, seed=0):
    """Features (T, P, G, d) equal to the exact optimum plus a centre and a noise that the
    classifier cannot see (orthogonal to its rows; the noise averages to 0 over P)."""
    rng = np.random.default_rng(seed)
    W = simplex_etf(K, d, scale=scale, seed=1)
    Wn = W.numpy()
    basis = row_space(Wn)
    null = np.eye(d) - basis @ basis.T
    triples = np.array([[0, 1, 2], [3, 9, 5]])
    weights = simplex_grid(3, 7)
    optimum = np.stack(
        [
            mixture_features(W, np.broadcast_to(t, weights.shape), weights, lam_H, loss).numpy()
            for t in triples
        ]
    )  # (T, G, d)
    centre = null @ rng.standard_normal(d)
    noise = rng.standard_normal((len(triples), P, len(weights), d)) @ null
    noise -= noise.mean(axis=1, keepdims=True)
    features = optimum[:, None] + centre + noise
    return features, features @ Wn.T, triples, weights, Wn, centre, optimum


def test_measurement_recovers_the_exact_optimum_of_three_class_mixtures():
    K, scale, lam_H = 10, 1.0, 5e-3
    features, logits, triples, weights, W, centre, optimum = synthetic_optimum("ce")
    result = compare_mixtures(features, logits, triples, weights, W, centre, "ce", lam_H)
    rows = result.rows
    assert len(rows) == 2 * 28 and all(tuple(row) == COLUMNS for row in rows)
    theory = mixture_coefficients(K, weights, lam_H, scale)
    (a_same,), _ = optimal_coefficients(K, [1.0], lam_H, scale, "ce", same_class=True)
    (a_half,), (b_half,) = optimal_coefficients(K, [0.5], lam_H, scale, "ce")
    measured = np.array([[row[f"a_{k}"] for k in (1, 2, 3)] for row in rows]).reshape(2, 28, 3)
    # Least squares on exact features in float64: errors of a few 1e-15 on a ~ 5.
    assert np.abs(measured - theory).max() < 1e-12 * a_same
    assert all(abs(row["a_same"] - a_same) < 1e-12 * a_same for row in rows)
    # The grid's pair midpoints (1/2, 1/2, 0) are the pair theory's lam = 1/2 (a = b).
    midpoint = [r for r in rows if r["y_1"] == 0.5 and r["y_2"] == 0.5]
    assert midpoint and all(
        abs(r["a_1"] - a_half) < 1e-9 and abs(r["a_2"] - b_half) < 1e-9 for r in midpoint
    )
    equal = [r for r in rows if max(abs(r[f"y_{k}"] - 1 / 3) for k in (1, 2, 3)) < 1e-12]
    assert len(equal) == 2
    amplification = theory[[r["y_1"] == r["y_2"] == r["y_3"] for r in rows[:28]]].sum() / a_same
    scalars = result.scalars
    assert abs(scalars["mixture3_amplification"] - amplification) < 1e-10
    # far beyond the mean of the class features (docs/theory.md section 8)
    assert amplification > 1.5
    # lam_H is recovered by the fit (Brent in log lam_H, xatol 1e-10: the flat minimum of a
    # sum of squares puts it within ~1e-7 relative); the theory columns follow it.
    assert abs(scalars["mixture3_fitted_lam_H"] / lam_H - 1) < 1e-6
    assert abs(scalars["mixture3_amplification_theory"] - amplification) < 1e-6
    assert abs(scalars["mixture3_amplification_theory_pair_lam_H"] - amplification) < 1e-10
    assert scalars["mixture3_fit_rms_relative"] < 1e-6
    for row in rows:
        assert abs(row["theory_amplification"] - row["amplification"]) < 1e-6
        assert row["residual"] < 1e-12 and row["spread"] > 0.01
        for k in (1, 2, 3):
            assert abs(row[f"theory_a_{k}"] - row[f"a_{k}"]) < 1e-6 * a_same
            assert abs(row[f"theory_p_{k}"] - row[f"p_{k}"]) < 1e-6
    # Probabilities against the softmax of the exact logits, computed here.
    z = optimum @ W.T
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    for n, row in enumerate(rows):
        t, g = row["triple"], n % 28
        for k in (1, 2, 3):
            assert abs(row[f"p_{k}"] - p[t, g, row[f"c_{k}"]]) < 1e-12
    # Equal weights lie on every boundary among the three classes (logits ~5: rounding).
    assert all(r["logit_spread"] < 1e-12 and r["theory_logit_spread"] < 1e-6 for r in equal)
    assert scalars["mixture3_equal_logit_spread_relative"] < 1e-12


def test_measurement_of_squared_error_and_focal_and_three_classes():
    features, logits, triples, weights, W, centre, _ = synthetic_optimum("mse", lam_H=0.1)
    result = compare_mixtures(features, logits, triples, weights, W, centre, "mse")
    # The squared error's optimum is the convex combination: amplification 1 everywhere.
    assert max(abs(row["amplification"] - 1) for row in result.rows) < 1e-12
    assert abs(result.scalars["mixture3_fitted_lam_H"] / 0.1 - 1) < 1e-6
    assert np.isnan(result.scalars["mixture3_amplification_theory_pair_lam_H"])  # not given
    focal = compare_mixtures(features, logits, triples, weights, W, centre, get_loss("focal"))
    assert np.isnan(focal.scalars["mixture3_amplification_theory"])
    assert all(np.isnan(row["theory_a_1"]) and np.isfinite(row["a_1"]) for row in focal.rows)
    # K = 3: the three rows of an ETF are dependent, the coefficients are not identifiable.
    W3 = simplex_etf(3, 3).numpy()
    h = np.random.default_rng(0).standard_normal((1, 2, 28, 3))
    three = compare_mixtures(h, h @ W3.T, np.array([[0, 1, 2]]), weights, W3, np.zeros(3), "ce")
    assert all(np.isnan(row["a_1"]) and np.isfinite(row["p_1"]) for row in three.rows)
    with pytest.raises(ValueError, match="must contain the vertices and"):
        compare_mixtures(
            features[:, :, :3], logits[:, :, :3], triples, weights[:3], W, centre, "ce"
        )


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_mixture_activations_mix_at_the_layer(digits, layer):
    net = build_model(TrainConfig(), digits.input_shape, digits.num_classes).eval()
    members = np.random.default_rng(0).integers(len(digits.y_train), size=(7, 3))
    weights = simplex_grid(3, 4)
    probe = NetworkProbe(
        net, digits.x_train[:2], net.classifier, mix_at=f"blocks.{layer - 1}" if layer else "",
        batch_size=40,
    )  # fmt: skip
    out = mixture_activations(probe, digits.x_train, members, weights)
    assert out["features"].shape == (7, 10, 64) and out["logits"].shape == (7, 10, 10)
    with torch.no_grad():
        hidden = net.run_blocks(digits.x_train[members.reshape(-1)], 0, layer).double()
        hidden = hidden.reshape(7, 3, -1)
        mixed = torch.einsum("gk,pkd->pgd", torch.as_tensor(weights), hidden).float()
        expected = net.run_blocks(
            mixed.reshape(70, *digits.x_train.shape[1:]) if layer == 0 else mixed.reshape(70, -1),
            layer,
        ).reshape(7, 10, -1)
    # Mixed in float32 there and in float64 here: features of size < 1 differ by ~1e-7.
    np.testing.assert_allclose(out["features"], expected.numpy(), rtol=0, atol=2e-6)


# --------------------------------------------------------------------------------------------
# Whole runs
# --------------------------------------------------------------------------------------------


def test_digits_run_with_three_points_trains_measures_and_resumes_bit_identically(
    tmp_path, monkeypatch
):
    config = TrainConfig(mixup_points=3, epochs=6, checkpoint_every=3, **FAST_MIXTURES)
    straight = run_training(config, tmp_path / "straight", progress=False)
    assert straight["test_accuracy"] > 0.8  # chance is 0.1
    folder = tmp_path / "straight" / "measurements" / "epoch_0006"
    rows = read_csv(folder / "mixtures3.csv")
    assert len(rows) == 4 * 28 and tuple(rows[0]) == COLUMNS
    assert {tuple(int(r[f"c_{k}"]) for k in (1, 2, 3)) for r in rows if r["triple"] == "0"} == {
        tuple(straight["triple"])
    }
    for key in ("mixture3_amplification", "mixture3_amplification_theory", "mixture3_fitted_lam_H"):
        assert np.isfinite(straight[key]), key
    arrays = np.load(folder / "activations_mixtures3.npz")
    assert arrays["features"].shape == (4, 28, 64) and arrays["weights"].shape == (28, 3)
    assert arrays["plane_coordinates"].shape == (4, 28, 2)
    assert arrays["theory_plane_coordinates"].shape == (28, 2)
    assert np.array_equal(arrays["classes"], straight["triple"])

    crash_in_epoch(config, tmp_path / "resumed", monkeypatch, 5)
    resumed = run_training(config, tmp_path / "resumed", resume=True, progress=False)
    straight.pop("seconds"), resumed.pop("seconds")
    assert resumed == straight
    again = tmp_path / "resumed" / "measurements" / "epoch_0006"
    assert read_csv(again / "mixtures3.csv") == rows
    other = np.load(again / "activations_mixtures3.npz")
    assert all(np.array_equal(arrays[k], other[k], equal_nan=True) for k in arrays.files)


@pytest.mark.parametrize(
    "loss,params,layer,lam_per",
    [
        ("focal", {}, 0, "sample"),
        ("mse", {}, 2, "batch"),
        ("label_smoothing", {"eps": 0.1}, 3, "sample"),
    ],
)
def test_every_loss_and_mixing_layer_trains_with_three_points(
    tmp_path, loss, params, layer, lam_per
):
    config = TrainConfig(
        mixup_points=3,
        epochs=1,
        loss=loss,
        loss_params=params,
        mixup_layer=layer,
        lam_per=lam_per,
        mixture_triples=1,
        **FAST_MIXTURES,
    )
    summary = run_training(config, tmp_path / "r", progress=False)
    assert np.isfinite(float(read_csv(tmp_path / "r" / "metrics.csv")[0]["train_loss"]))
    assert np.isfinite(summary["mixture3_amplification"])
    arrays = np.load(tmp_path / "r" / "measurements" / "epoch_0001" / "activations_mixtures3.npz")
    assert int(arrays["layer"]) == layer
    assert np.isnan(summary["mixture3_amplification_theory"]) == (loss == "focal")


def test_cli_trains_with_mixup_points_and_lists_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--mixup-points" in capsys.readouterr().out
    out = tmp_path / "out"
    flags = ["--pairs-per-class-pair", "3", "--pairs-all-classes", "2", "--linearity-pairs", "20"]
    code = cli.main(
        [
            "train",
            "--out",
            str(out),
            "--mixup-points",
            "3",
            "--epochs",
            "1",
            "--mixture-samples",
            "2",
            "--mixture-triples",
            "1",
            "--no-progress",
            *flags,
        ]
    )
    assert code == 0
    assert read_json(out / "config.json")["config"]["mixup_points"] == 3
    assert "mixture3_amplification" in capsys.readouterr().out
    assert len(read_csv(out / "measurements" / "epoch_0001" / "mixtures3.csv")) == 28


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--mixup-points", "1"], r"mixup_points must lie in \[2, 128\] .*got 1"),
        (["--mixup-points", "129"], r"mixup_points must lie in \[2, 128\] .*got 129"),
        (["--batch-size", "8", "--mixup-points", "9"], r"mixup_points must lie in \[2, 8\]"),
        (["--mixture-grid", "6"], r"mixture_grid - 1 must be a multiple of 3 .*got 6"),
        (["--mixture-grid", "1"], r"mixture_grid must be >= 4, got 1"),
        (["--mixture-samples", "0"], r"mixture_samples must be >= 1, got 0"),
        (["--mixture-triples", "0"], r"mixture_triples must be >= 1, got 0"),
    ],
)
def test_bad_mixture_settings_are_refused_before_any_work(
    tmp_path, capsys, monkeypatch, flags, message
):
    def no_data(*args, **kwargs):
        raise AssertionError("data read")

    monkeypatch.setattr(run_module, "load_dataset", no_data)
    code = cli.main(["train", "--out", str(tmp_path / "out"), "--no-progress", *flags])
    assert code == 2
    error = capsys.readouterr().err
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="points must be >= 2, got 1"):
        Mixup(1.0, points=1)


def test_class_triples_measure_each_class_set_once_whatever_the_order_of_the_first():
    from ufm.nets.mixtures import class_triples

    for first in ((0, 1, 2), (2, 1, 0), (3, 0, 1)):
        triples = class_triples(first, 4, 4, np.random.default_rng(0))
        assert tuple(triples[0]) == first  # the figure's triple first, in its order
        sets = {tuple(sorted(t)) for t in triples.tolist()}
        assert len(sets) == len(triples) == 4  # C(4, 3): every class set exactly once
