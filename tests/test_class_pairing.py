"""Class pairing of ``ufm train``: partners from a uniform class, label mass, refusals, runs.

With ``pairing = "class"`` the partner of a mixup pair is drawn by choosing a class uniformly
among the K classes and then a training sample of it (:class:`ufm.nets.mixup.ClassPool`);
with the default ``"sample"`` the partner comes from the batch, drawn exactly as before the
field existed. :func:`ufm.imbalance.label_mass_ratio` is checked against its closed form at
the issue's example and against label mass counted over many drawn plans.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from nets_support import FAST_MEASUREMENT, crash_in_epoch, one_torch_thread  # noqa: F401
from scipy.stats import chisquare

from ufm import cli
from ufm.config import config_from_dict, config_to_dict, load_config
from ufm.imbalance import label_mass_ratio, label_masses
from ufm.io import read_json, write_json
from ufm.losses import get_loss
from ufm.nets import TrainConfig, build_model, load_dataset, run_training
from ufm.nets import run as run_module
from ufm.nets.imbalanced_data import imbalanced_dataset, label_mass_entries
from ufm.nets.mixup import ClassPool, Mixup, mix
from ufm.nets.training import build_optimizer, train_epoch
from ufm.sweep.table import summary_numbers

# A tiny MLP: the runs check the bookkeeping, not what class pairing does to the network.
TINY = {**FAST_MEASUREMENT, "width": 32, "depth": 1, "feature_dim": 16, "epochs": 1,
        "exact_classifier": False}
TINY_FLAGS = ["--width", "32", "--depth", "1", "--feature-dim", "16", "--epochs", "1",
              "--no-exact-classifier", "--pairs-per-class-pair", "3", "--pairs-all-classes", "2",
              "--linearity-pairs", "20", "--no-progress"]

# Step imbalance on five classes: three majorities of 60, two minorities of 6 (rho = 10).
STEP_COUNTS = [60, 60, 60, 6, 6]
P_VALUE = 1e-3  # a uniformity test fails at most once in a thousand seeds by chance


def step_labels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(5), STEP_COUNTS))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# --- the default path draws as before -----------------------------------------------------


@pytest.mark.parametrize("per_sample", [False, True])
def test_sample_pairing_draws_exactly_as_before(per_sample):
    """The plan of the default pairing is the old formula (one permutation of the batch, then
    Beta), from the same generator, which ends in the same state: the rng stream is unchanged."""
    labels = torch.as_tensor(step_labels()[:40])
    ours, old = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(3):
        plan = Mixup(0.7, per_sample=per_sample, pairing="sample").plan(labels, ours)
        partner = old.permutation(40)
        lam = old.beta(0.7, 0.7, size=40 if per_sample else 1)
        assert plan.extra is None
        assert torch.equal(plan.partner, torch.as_tensor(partner))
        assert torch.equal(plan.lam, torch.as_tensor(lam, dtype=torch.float64).expand(40))
    assert ours.bit_generator.state == old.bit_generator.state


# --- class pairing's draws ----------------------------------------------------------------


def test_partner_classes_are_uniform_over_classes():
    """On a step-imbalanced training set (rho = 10) the partners' classes are uniform over the
    K classes, and within a class every training sample is equally likely (chi-square, at
    P_VALUE); the batch samples keep the imbalanced frequencies."""
    labels = step_labels()
    mixup = Mixup(1.0, pairing="class", pool=ClassPool(labels, 5))
    rng = np.random.default_rng(11)
    extras = []
    for _ in range(400):
        batch = torch.as_tensor(labels[rng.permutation(len(labels))[:32]])
        extras.append(mixup.plan(batch, rng).extra.numpy())
    rows = np.concatenate(extras)
    classes = labels[rows]
    per_class = np.bincount(classes, minlength=5)
    assert chisquare(per_class).pvalue > P_VALUE, per_class
    assert per_class[3] > 5 * len(rows) * 6 / sum(STEP_COUNTS)  # far above its sample share
    for c in (0, 3):
        members = np.flatnonzero(labels == c)
        hits = np.array([np.sum(rows == r) for r in members])
        assert hits.sum() == per_class[c] and hits.min() > 0
        assert chisquare(hits).pvalue > P_VALUE, (c, hits)


def test_the_first_partner_is_the_batch_sample(digits, monkeypatch):
    """In a class-pairing epoch every mixed input is lam x_i + (1 - lam) x_j with x_i the batch
    sample and x_j the plan's extra training row, and the loss's first class is the batch
    sample's, its second the partner's."""
    data = imbalanced_dataset(digits, 8.0, 5, seed=0)
    config = TrainConfig(width=32, depth=1, feature_dim=16, batch_size=256)
    net = build_model(config, data.input_shape, data.num_classes)
    plans, fed, classes = [], [], []

    class Recording(Mixup):
        def plan(self, labels, rng):
            plans.append(super().plan(labels, rng))
            return plans[-1]

    loss = get_loss("ce")
    mean = loss.mean
    monkeypatch.setattr(loss, "mean", lambda z, c, c2, lam: classes.append((c, c2)) or mean(z, c, c2, lam))
    net.blocks[0].register_forward_pre_hook(lambda module, args: fed.append(args[0].detach()))
    mixup = Recording(1.0, per_sample=True, pairing="class", pool=ClassPool(data.y_train, 10))
    rng = np.random.default_rng(5)
    order = np.random.default_rng(5).permutation(len(data.y_train))  # the epoch's first draw
    train_epoch(net, data, loss, mixup, build_optimizer(net, config), rng, 256, "cpu")
    assert len(plans) == len(fed) == len(classes) >= 2
    start = 0
    for plan, x, (first, second) in zip(plans, fed, classes):
        rows = torch.as_tensor(order[start:start + len(plan.partner)])
        start += len(plan.partner)
        B = len(rows)
        assert torch.equal(plan.partner, torch.arange(B, 2 * B)) and len(plan.extra) == B
        lam = plan.lam.to(torch.float32)[:, None]
        expected = lam * data.x_train[rows].flatten(1) + (1 - lam) * data.x_train[plan.extra].flatten(1)
        torch.testing.assert_close(x.flatten(1), expected, rtol=0, atol=1e-6)
        assert torch.equal(first, data.y_train[rows])
        assert torch.equal(second, data.y_train[plan.extra])


def test_mix_takes_the_partners_after_the_batch():
    h = torch.arange(12.0).reshape(6, 2)  # a batch of 3 followed by 3 partner rows
    lam = torch.tensor([1.0, 0.0, 0.25], dtype=torch.float64)
    out = mix(h, torch.arange(3, 6), lam)
    assert torch.equal(out, torch.stack([h[0], h[4], 0.25 * h[2] + 0.75 * h[5]]))


def test_class_pairing_is_deterministic_in_the_seed():
    labels = step_labels()
    mixup = Mixup(1.0, pairing="class", pool=ClassPool(labels, 5))
    batch = torch.as_tensor(labels[:32])
    a, b, c = (mixup.plan(batch, np.random.default_rng(s)) for s in (4, 4, 5))
    assert torch.equal(a.extra, b.extra) and torch.equal(a.lam, b.lam)
    assert not torch.equal(a.extra, c.extra)


# --- label mass ---------------------------------------------------------------------------


def test_label_mass_ratio_closed_form():
    """The issue's example, rho itself under sample pairing, 1 when balanced, and the bound
    1 + K/(K - k) that class pairing never reaches."""
    assert label_mass_ratio(10, 5, 64, "class") == pytest.approx(2.8806, abs=5e-5)
    p_major, p_minor = 1 / (5 + 5 / 64), 1 / (64 * (5 + 5 / 64))  # written out once more
    assert label_mass_ratio(10, 5, 64, "class") == pytest.approx((p_major + 0.1) / (p_minor + 0.1), rel=1e-14)
    for rho in (1, 2.5, 64, 1e6):
        assert label_mass_ratio(10, 3, rho, "sample") == pytest.approx(rho, rel=1e-12)
        assert label_mass_ratio(10, 3, rho, "class") < 1 + 10 / 7
    assert label_mass_ratio(10, 5, 1, "class") == 1.0
    masses = label_masses([3.0, 1.0, 1.0, 1.0], "class")
    assert float(masses.sum()) == pytest.approx(1.0, abs=1e-15)
    assert masses.tolist() == pytest.approx([(0.5 + 0.25) / 2] + [(1 / 6 + 0.25) / 2] * 3)


@pytest.mark.parametrize("args,message", [
    ((10, 5, 0.5, "class"), r"imbalance_ratio must lie in \[1, inf\), got 0.5"),
    ((10, 0, 4.0, "class"), "minority_classes must be >= 1, got 0"),
    ((10, 10, 4.0, "class"), "minority_classes must be <= 9, got 10"),
    ((10, 5, 4.0, "pair"), "pairing must be one of 'sample', 'class'; got 'pair'"),
    ((1, 0, 4.0, "class"), "K must be >= 2, got 1"),
])
def test_label_mass_ratio_refuses_bad_input(args, message):
    with pytest.raises(ValueError, match=re.escape(message) if "[" not in message else message):
        label_mass_ratio(*args)


@pytest.mark.parametrize("pairing", ["sample", "class"])
def test_label_mass_ratio_matches_the_mass_of_drawn_plans(pairing):
    """The label mass per class, counted over about 190,000 pairs drawn as training draws
    them (a shuffled epoch in batches of 32, lam ~ Beta(1, 1) per sample): majority over
    minority mass is the closed form within 2%. Its Monte-Carlo standard error, from the
    scatter of the 1000 per-epoch ratios, is about 0.4% (asserted below 0.6%), so the
    tolerance is about 5 (at least 3.3) standard errors."""
    labels = step_labels()
    rng = np.random.default_rng(2024)
    mixup = Mixup(1.0, per_sample=True, pairing=pairing, pool=ClassPool(labels, 5))
    mass, epochs = np.zeros((1000, 5)), []
    for epoch in range(1000):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), 32):
            batch = torch.as_tensor(labels[order[start:start + 32]])
            plan = mixup.plan(batch, rng)
            others = torch.as_tensor(labels[plan.extra.numpy()]) if plan.extra is not None else batch
            partner = torch.cat([batch, others])[plan.partner] if plan.extra is not None else batch[plan.partner]
            lam = plan.lam.numpy()
            np.add.at(mass[epoch], batch.numpy(), lam)
            np.add.at(mass[epoch], partner.numpy(), 1 - lam)
        epochs.append(mass[epoch, :3].mean() / mass[epoch, 3:].mean())
    counted = mass[:, :3].mean() / mass[:, 3:].mean()
    standard_error = np.std(epochs) / np.sqrt(len(epochs)) / counted
    assert standard_error < 0.006
    assert counted == pytest.approx(label_mass_ratio(5, 2, 10.0, pairing), rel=0.02)


def test_label_mass_entries_of_a_run():
    counts = [60, 60, 60, 6, 6]
    mixing = label_mass_entries(counts, 10.0, 2, "class", mixes=True)
    assert mixing["mixup_pairing"] == "class"
    assert mixing["label_mass_ratio"] == pytest.approx(label_mass_ratio(5, 2, 10.0, "class"))
    assert mixing["label_mass_ratio_train"] == pytest.approx(mixing["label_mass_ratio"], rel=1e-12)
    # Without mixup there is no partner: the mass is the class frequency, whatever the pairing.
    plain = label_mass_entries(counts, 10.0, 2, "class", mixes=False)
    assert plain["label_mass_ratio"] == pytest.approx(10.0) and plain["mixup_pairing"] == "class"
    assert label_mass_entries(counts, 1.0, 0, "sample", True)["label_mass_ratio"] is None


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("flags,message", [
    (["--pairing", "pair"], "pairing must be one of 'sample', 'class'; got 'pair'"),
    (["--pairing", "class", "--mixup-points", "3"],
     "pairing = 'class' draws the partner of a pair; with mixup_points = 3 > 2 use pairing = 'sample'"),
    (["--pairing", "class", "--same-class"],
     ("pairing = 'class' draws the partner's class uniformly and same_class draws it from the "
      "sample's own class: choose one")),
])
def test_bad_pairing_is_refused_before_any_work(tmp_path, capsys, monkeypatch, flags, message):
    def no_work(*args, **kwargs):
        raise AssertionError("data were read")

    monkeypatch.setattr(run_module, "load_dataset", no_work)
    code = cli.main(["train", "--out", str(tmp_path / "out"), "--no-progress", *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_mixup_and_pool_refuse_bad_input():
    with pytest.raises(ValueError, match="give pool"):
        Mixup(1.0, pairing="class")
    assert Mixup(0.0, pairing="class").plan(torch.zeros(4), np.random.default_rng(0)).extra is None
    with pytest.raises(ValueError, match=r"class\(es\) 2, 4 have no training sample"):
        ClassPool(np.array([0, 1, 3, 1]), 5)
    with pytest.raises(ValueError, match=r"classes in \[0, 2\]"):
        ClassPool(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="mixup_points = 4 > 2"):
        Mixup(1.0, points=4, pairing="class", pool=ClassPool(np.arange(3), 3))


def test_help_lists_the_choices_and_the_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--pairing PAIRING one of sample, class; default: 'sample'" in help_text


# --- configuration and runs ---------------------------------------------------------------


def test_config_round_trip_and_files_without_the_field(tmp_path):
    config = TrainConfig(pairing="class", imbalance_ratio=4, minority_classes=2)
    saved = config_to_dict(config)
    assert saved["pairing"] == "class"
    assert config_from_dict(TrainConfig, json.loads(json.dumps(saved))) == config
    old = {k: v for k, v in saved.items() if k != "pairing"}
    assert config_from_dict(TrainConfig, old).pairing == "sample"
    (tmp_path / "class.toml").write_text('pairing = "class"\nalpha = 0.5\n')
    (tmp_path / "old.toml").write_text("alpha = 0.5\n")
    assert load_config(TrainConfig, tmp_path / "class.toml").pairing == "class"
    assert load_config(TrainConfig, tmp_path / "old.toml").pairing == "sample"


def test_one_epoch_class_pairing_run_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--out", str(out), "--pairing", "class", "--imbalance-ratio", "8",
                     "--minority-classes", "5", *TINY_FLAGS])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert re.search(r"^label_mass_ratio +2\.2727", printed.out, re.MULTILINE), printed.out
    assert read_json(out / "config.json")["config"]["pairing"] == "class"
    summary = read_json(out / "summary.json")
    assert summary_numbers("train", out)["label_mass_ratio"] == summary["label_mass_ratio"]
    assert summary["mixup_pairing"] == "class"
    assert summary["label_mass_ratio"] == pytest.approx(label_mass_ratio(10, 5, 8.0, "class"))
    # digits' classes are nearly equal, so the kept counts give almost the nominal ratio
    assert summary["label_mass_ratio_train"] == pytest.approx(summary["label_mass_ratio"], rel=0.05)
    assert 0 <= summary["minority_test_accuracy"] <= 1


def test_class_pairing_resumes_exactly_and_old_runs_resume_as_sample(tmp_path, monkeypatch):
    """A class-pairing run stopped after its first epoch continues as if it had not stopped
    (the pool is rebuilt, the generator restored); a run whose config.json predates the
    field resumes as sample pairing, and a different pairing is refused on resume."""
    fields = {**TINY, "epochs": 2, "checkpoint_every": 1, "imbalance_ratio": 4.0,
              "minority_classes": 3}
    config = TrainConfig(pairing="class", **fields)
    straight = run_training(config, tmp_path / "straight", progress=False)
    crash_in_epoch(config, tmp_path / "resumed", monkeypatch, 2)
    with pytest.raises(ValueError, match="fields that differ .*: pairing"):
        run_training(TrainConfig(**fields), tmp_path / "resumed", resume=True, progress=False)
    resumed = run_training(config, tmp_path / "resumed", resume=True, progress=False)
    straight.pop("seconds"), resumed.pop("seconds")
    assert resumed == straight

    old = TrainConfig(**fields)
    crash_in_epoch(old, tmp_path / "old", monkeypatch, 2)
    saved = read_json(tmp_path / "old" / "config.json")
    del saved["config"]["pairing"]
    write_json(tmp_path / "old" / "config.json", saved)
    summary = run_training(old, tmp_path / "old", resume=True, progress=False)
    assert summary["mixup_pairing"] == "sample"
    assert summary["label_mass_ratio"] == pytest.approx(4.0)
