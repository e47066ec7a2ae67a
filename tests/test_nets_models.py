"""Models and mixup: shapes, the fixed ETF, and what the network is actually fed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nets_support import one_torch_thread  # noqa: F401  (autouse fixture)

from ufm.etf import etf_distance, simplex_etf
from ufm.losses import get_loss
from ufm.nets import TrainConfig, build_model, load_dataset
from ufm.nets import training as training_module
from ufm.nets.mixup import Mixup, MixupPlan, mix, mixed_forward, same_class_permutation
from ufm.nets.training import build_optimizer, train_epoch


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize(
    "model,shape,width,blocks",
    [
        ("mlp", (1, 8, 8), 0, 3),
        ("cnn", (1, 8, 8), 4, 4),
        ("cnn", (2, 40), 4, 4),
        ("resnet18", (3, 32, 32), 4, 6),
    ],
)
def test_models_give_features_of_width_d_and_logits_for_k_classes(model, shape, width, blocks):
    config = TrainConfig(model=model, width=width, feature_dim=12)
    net = build_model(config, shape, 7).eval()
    x = torch.randn(3, *shape)
    assert net.num_blocks == blocks
    assert net.features(x).shape == (3, 12) and net(x).shape == (3, 7)
    outputs = net.block_outputs(x)
    assert len(outputs) == blocks and torch.equal(outputs[-1], net.features(x))


def test_fixed_etf_is_a_buffer_that_no_optimiser_sees():
    config = TrainConfig(classifier="fixed_etf", feature_dim=9, etf_scale=2.0, seed=3)
    net = build_model(config, (1, 8, 8), 10)
    weight = net.classifier.weight
    assert "classifier.weight" in dict(net.named_buffers())
    assert "classifier.weight" not in dict(net.named_parameters())
    assert weight.dtype == torch.float32
    assert torch.equal(weight, simplex_etf(10, 9, scale=2.0, seed=3).float())
    assert etf_distance(weight) < 1e-6
    optimised = {
        id(p) for group in build_optimizer(net, config).param_groups for p in group["params"]
    }
    assert id(weight) not in optimised


def test_same_seed_same_initial_network_and_global_rng_untouched():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_model(TrainConfig(seed=5), (1, 8, 8), 10)
    assert torch.equal(torch.rand(1), expected_next)  # build_model forks the global generator
    second = build_model(TrainConfig(seed=5), (1, 8, 8), 10)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bad_model_inputs_are_refused():
    with pytest.raises(ValueError, match=r"mixup_layer=4 is beyond the 3 hidden blocks.*0 .* to 3"):
        build_model(TrainConfig(mixup_layer=4), (1, 8, 8), 10)
    with pytest.raises(ValueError, match=r"'resnet18' needs image inputs of shape \(C, H, W\)"):
        build_model(TrainConfig(model="resnet18"), (1, 40), 10)


# ---------------------------------------------------------------------------------------------
# Mixup
# ---------------------------------------------------------------------------------------------


class RecordingLoss:
    """Cross-entropy that records the targets it is given."""

    def __init__(self):
        self.inner, self.calls = get_loss("ce"), []

    def mean(self, z, c, c_prime, lam):
        self.calls.append((c.clone(), c_prime.clone(), lam.clone()))
        return self.inner.mean(z, c, c_prime, lam)


@pytest.mark.parametrize("per_sample", [False, True])
def test_first_layer_sees_mixed_inputs_during_training(digits, monkeypatch, per_sample):
    """The follow-up student repository mixed only the labels; here the inputs must be mixed."""
    config = TrainConfig(seed=1)
    net = build_model(config, digits.input_shape, digits.num_classes)
    first_linear = net.blocks[0][1]
    assert isinstance(first_linear, torch.nn.Linear)
    seen_by_layer, fed = [], []
    first_linear.register_forward_pre_hook(lambda m, args: seen_by_layer.append(args[0].clone()))

    def recording_forward(model, x, plan, layer=0):
        fed.append((x.clone(), plan))
        return mixed_forward(model, x, plan, layer)

    monkeypatch.setattr(training_module, "mixed_forward", recording_forward)
    loss = RecordingLoss()
    train_epoch(
        net,
        digits,
        loss,
        Mixup(1.0, per_sample=per_sample),
        build_optimizer(net, config),
        np.random.default_rng(0),
        128,
        "cpu",
    )

    assert len(fed) == len(seen_by_layer) == len(loss.calls) > 5
    for (x, plan), seen, (c, c_prime, lam) in zip(fed, seen_by_layer, loss.calls, strict=True):
        lam_column = plan.lam.float().reshape(-1, 1)
        flat = x.reshape(len(x), -1)
        expected = lam_column * flat + (1 - lam_column) * flat[plan.partner]
        torch.testing.assert_close(seen, expected, rtol=0, atol=1e-6)
        assert not torch.allclose(seen, flat, atol=1e-3)  # not the clean batch
        assert torch.equal(c_prime, c[plan.partner]) and torch.equal(lam, plan.lam.to(lam.dtype))
        assert bool((plan.partner != torch.arange(len(x))).any())
        assert (plan.lam.unique().numel() > 1) == per_sample


def test_erm_feeds_the_clean_batch(digits):
    plan = Mixup(0.0).plan(digits.y_train[:16], np.random.default_rng(0))
    assert torch.equal(plan.partner, torch.arange(16)) and bool((plan.lam == 1).all())
    assert not Mixup(0.0).mixes


def test_manifold_mixup_mixes_the_chosen_hidden_layer(digits):
    net = build_model(TrainConfig(), digits.input_shape, digits.num_classes).eval()
    x = digits.x_train[:32]
    plan = Mixup(1.0, per_sample=True).plan(digits.y_train[:32], np.random.default_rng(4))
    seen = []
    net.blocks[2].register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        logits = mixed_forward(net, x, plan, layer=2)
        hidden = net.run_blocks(x, 0, 2)
    lam = plan.lam.float().reshape(-1, 1)
    torch.testing.assert_close(
        seen[0], lam * hidden + (1 - lam) * hidden[plan.partner], rtol=0, atol=1e-6
    )
    torch.testing.assert_close(logits, net.classifier(net.blocks[2](seen[0])))


def test_same_class_partners_are_a_permutation_within_each_class():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=200)
    partner = same_class_permutation(labels, rng)
    assert sorted(partner.tolist()) == list(range(200))
    assert np.array_equal(labels[partner], labels)
    assert (partner != np.arange(200)).mean() > 0.5
    plan = Mixup(1.0, same_class=True).plan(torch.as_tensor(labels), rng)
    assert np.array_equal(labels[plan.partner.numpy()], labels)


def test_lam_follows_beta_alpha_alpha():
    rng = np.random.default_rng(6)
    alpha = 0.4
    lams = torch.cat(
        [Mixup(alpha, per_sample=True).plan(torch.zeros(1000), rng).lam for _ in range(20)]
    ).numpy()
    assert abs(lams.mean() - 0.5) < 0.01
    assert abs(lams.var() - 1 / (4 * (2 * alpha + 1))) < 0.01  # Beta(a, a) variance
    per_batch = Mixup(alpha).plan(torch.zeros(50), rng).lam
    assert per_batch.unique().numel() == 1


def test_mix_broadcasts_per_sample_coefficients_over_any_shape():
    h = torch.arange(24.0).reshape(4, 2, 3)
    plan = MixupPlan(torch.tensor([1, 0, 3, 2]), torch.tensor([1.0, 0.0, 0.25, 0.5]))

    out = mix(h, plan.partner, plan.lam)
    assert torch.equal(out[0], h[0]) and torch.equal(out[1], h[0])
    assert torch.equal(out[2], 0.25 * h[2] + 0.75 * h[3])
