"""Any network, one call: ufm.measure_network on models ufm did not build."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from nets_support import FAST_MEASUREMENT, one_torch_thread  # noqa: F401  (autouse fixture)
from torch import nn

import ufm
from ufm.nets import TrainConfig, build_model, load_dataset, measure
from ufm.nets.measure_settings import MeasureSettings, measurement_cost

FAST = {"pairs_per_class_pair": 3, "pairs_all_classes": 4}
MEASURE_MODULE = sys.modules["ufm.nets.measure"]  # ufm.nets.measure is also a function's name
COMPARED = (
    "amplification",
    "amplification_se",
    "amplification_se_cells",
    "amplification_theory",
    "curve_fitted_lam_H",
    "fitted_lam_H",
    "a_same",
    "nc1",
    "nc2_W",
    "nc2_M",
    "nc3",
    "nc4",
    "bias_collapse",
    "ece",
    "nll",
    "train_accuracy",
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=500)


@pytest.fixture(scope="module")
def trained(digits):
    """A digits MLP of ufm's own, a few epochs of mixup, with a bias."""
    config = TrainConfig(**{**FAST_MEASUREMENT, "pairs_all_classes": 4}, bias=True, epochs=3)
    net = build_model(config, digits.input_shape, digits.num_classes)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for rows in torch.randperm(len(digits.y_train), generator=generator).split(64):
            x, y = digits.x_train[rows], digits.y_train[rows]
            loss = nn.functional.cross_entropy(net(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net, config


def as_sequential(net) -> nn.Sequential:
    """The same weights as a plain nn.Sequential with an nn.Linear head."""
    K, d = net.classifier.weight.shape
    head = nn.Linear(d, K, bias=net.classifier.bias is not None)
    with torch.no_grad():
        head.weight.copy_(net.classifier.weight)
        if head.bias is not None:
            head.bias.copy_(net.classifier.bias)
    return nn.Sequential(*net.blocks, head)


class Residual(nn.Module):
    """A non-Sequential forward: a skip connection around a block, then a head."""

    def __init__(self, net) -> None:
        super().__init__()
        self.body = nn.ModuleList(net.blocks)
        self.skip = nn.Identity()
        self.head = as_sequential(net)[-1]

    def forward(self, x):
        h = x
        for block in self.body:
            h = block(h)
        return self.head(self.skip(h) + 0.0 * h)


def test_a_plain_sequential_measures_exactly_as_ufm_train_does(digits, trained):
    net, config = trained
    own = measure(net, digits, config, "cpu").summary
    theirs = ufm.measure_network(
        as_sequential(net), digits.x_train.numpy(), digits.y_train.numpy(),
        digits.x_test.numpy(), digits.y_test.numpy(), settings=config.measure_settings(),
    ).summary  # fmt: skip
    for key in COMPARED:
        np.testing.assert_allclose(theirs[key], own[key], rtol=1e-10, atol=1e-12, err_msg=key)
    assert theirs["head"] == str(len(net.blocks)) and own["head"] == "classifier"
    assert theirs["class_pairs_measured"] == 55 == theirs["class_pairs_total"]


def test_a_residual_network_and_a_two_linear_network_are_measured(digits, trained):
    net, config = trained
    reference = ufm.measure_network(as_sequential(net), digits.x_train, digits.y_train, **FAST)
    residual = ufm.measure_network(Residual(net), digits.x_train, digits.y_train, **FAST)
    assert residual.summary["head"] == "head"
    for key in ("amplification", "nc1", "nc3"):
        np.testing.assert_allclose(
            residual.summary[key], reference.summary[key], rtol=1e-10, err_msg=key
        )
    two = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    summary = ufm.measure_network(two, digits.x_train, digits.y_train, **FAST).summary
    assert summary["head"] == "3" and np.isfinite(summary["amplification"])


def test_mixing_at_a_named_module_runs_the_rest_of_the_network_on_the_mixture(digits, trained):
    net, _ = trained
    model = as_sequential(net)
    probe = ufm.nets.NetworkProbe(model, digits.x_train[:2], mix_at="1")
    members = np.array([[0, 7], [3, 11]])
    weights = np.array([[0.25, 0.75]])
    features, _ = probe.mixtures(digits.x_train, members, weights)
    with torch.no_grad():
        model.eval()
        hidden = model[:2](digits.x_train[[0, 7, 3, 11]])
        mixed = 0.25 * hidden[[0, 2]] + 0.75 * hidden[[1, 3]]
        want = model[2:-1](mixed)
    np.testing.assert_allclose(features[:, 0].numpy(), want.numpy(), rtol=1e-6, atol=1e-6)


def test_layers_name_the_modules_of_the_linearity(digits, trained):
    net, _ = trained
    result = ufm.measure_network(
        as_sequential(net), digits.x_train, digits.y_train, layers=("0", "2"), **FAST
    )
    assert [row["module"] for row in result.tables["linearity"]] == ["0", "2"]
    assert len(result.summary["linearity"]) == 2


def test_large_K_samples_class_pairs_at_the_cost_of_K_10():
    rng = np.random.default_rng(0)
    K, d = 40, 16
    x = rng.standard_normal((6 * K, 5)).astype(np.float32)
    y = np.repeat(np.arange(K), 6)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, d), nn.Tanh(), nn.Linear(d, K))
    result = ufm.measure_network(model, x, y, pairs_all_classes=3, pairs_per_class_pair=2)
    s = result.summary
    assert s["class_pairs_total"] == K * (K + 1) // 2 == 820
    cells = result.arrays["cells"]
    same = cells["c"] == cells["c_prime"]
    # 11 same-class and 44 different-class cells drawn, and the figure's triple's six cells.
    triple = s["triple"]
    triple_cells = {(a, b) for k, a in enumerate(triple) for b in triple[k:]}
    drawn = set(zip(cells["c"].tolist(), cells["c_prime"].tolist()))
    assert triple_cells <= drawn and 55 <= s["class_pairs_measured"] == len(drawn) <= 61
    assert 11 <= same.sum() <= 14 and 44 <= (~same).sum() <= 47
    assert result.arrays["theory_triple"]["features"].shape == (6 * 11, 16)
    cost = measurement_cost(MeasureSettings(), 100)
    assert cost["mixtures"] == measurement_cost(MeasureSettings(), 10)["mixtures"] == 55 * 40 * 11


def test_save_writes_a_measurement_folder_and_never_overwrites(tmp_path, digits, trained):
    net, _ = trained
    result = ufm.measure_network(
        as_sequential(net), digits.x_train, digits.y_train, digits.x_test, digits.y_test, **FAST
    )
    result.save(tmp_path / "m")
    for name in ("summary.json", "settings.json", "coefficients_vs_lam.csv", "cells.npz",
                 "mixed_features.npz", "reliability.csv", "activations_triple.npz"):  # fmt: skip
        assert (tmp_path / "m" / name).is_file(), name
    with pytest.raises(ValueError, match="already holds a complete measurement"):
        result.save(tmp_path / "m")
    again = ufm.compare_features(tmp_path / "m" / "mixed_features.npz").summary
    for key in ("amplification", "amplification_se_cells", "curve_fitted_lam_H", "a_same"):
        assert again[key] == result.summary[key], key


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU())
        self.first = nn.Linear(12, 10)
        self.second = nn.Linear(12, 10)

    def forward(self, x):
        h = self.body(x)
        return self.first(h) + self.second(h)


class Pooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.mark.parametrize(
    "model,head,message",
    [
        (Pooled(), None, "calls no nn.Linear: it has no linear head"),
        (TwoHeads(), None, "cannot tell which linear module is the classifier head.*'first', "
         "'second'"),
        (TwoHeads(), "third", "no module named 'third' for head; it has 'body.1', 'first'"),
        (TwoHeads(), "body.2", "is a ReLU; it must be a linear map"),
        (TwoHeads(), "body.1", r"fewer than two samples of class\(es\) \[10, 11\] of K = 12"),
    ],
)
def test_bad_heads_are_refused_before_any_work(digits, monkeypatch, model, head, message):
    def no_work(*args, **kwargs):
        raise AssertionError("measured")

    monkeypatch.setattr(MEASURE_MODULE, "collapse_measurement", no_work)
    with pytest.raises(ValueError, match=message):
        ufm.measure_network(model, digits.x_train, digits.y_train, head=head, **FAST)


def test_the_named_head_of_a_two_head_model_is_measured(digits):
    torch.manual_seed(0)
    result = ufm.measure_network(TwoHeads(), digits.x_train, digits.y_train, head="second", **FAST)
    assert result.summary["head"] == "second"


@pytest.mark.parametrize(
    "arguments,message",
    [
        ({"y_train": np.arange(5)}, r"y_train must be one label per sample, shape \(500,\)"),
        ({"y_train": "eleven"}, "y_train holds class 11, outside"),
        ({"x_test": "x"}, "x_test and y_test go together"),
        ({"lam_grid": 10}, "lam_grid must be odd"),
        ({"triple": (0, 1, 12)}, r"triple holds class 12, outside \[0, 9\]"),
        ({"mix_at": "nowhere"}, "no module named 'nowhere' for mix_at"),
        ({"model": "not a model"}, "model must be a torch.nn.Module"),
    ],
)
def test_bad_input_is_refused_before_any_work(digits, trained, monkeypatch, arguments, message):
    net, _ = trained
    monkeypatch.setattr(
        MEASURE_MODULE, "collapse_measurement", lambda *a, **k: pytest.fail("measured")
    )
    y = digits.y_train.numpy().copy()
    if isinstance(arguments.get("y_train"), str):
        y[3] = 11
        arguments = {**arguments, "y_train": y}
    call = {"model": as_sequential(net), "x_train": digits.x_train, "y_train": y, **arguments}
    if isinstance(arguments.get("x_test"), str):
        call["x_test"] = digits.x_test
    with pytest.raises(ValueError, match=message):
        ufm.measure_network(**call)
