"""Whole runs: accuracy on digits, the fixed ETF, determinism, resume, files, the CLI, refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from nets_support import FAST_MEASUREMENT, crash_in_epoch, one_torch_thread  # noqa: F401

from ufm import cli
from ufm.etf import simplex_etf
from ufm.io import read_csv, read_json
from ufm.nets import TrainConfig, build_model, run_training
from ufm.nets import run as run_module
from ufm.nets.training import learning_rate_factor

SUMMARY_KEYS = (
    "train_accuracy",
    "test_accuracy",
    "ece",
    "nll",
    "nc1",
    "nc2_W",
    "nc2_M",
    "nc3",
    "nc4",
    "amplification",
    "amplification_theory",
    "fitted_lam_H",
    "seconds",
)


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_digits_mlp_with_mixup_fits_training_data_and_generalises(tmp_path):
    config = TrainConfig(dataset="digits", model="mlp", alpha=1.0, epochs=40, **FAST_MEASUREMENT)
    summary = run_training(config, tmp_path / "run", progress=False)
    assert summary["train_accuracy"] >= 0.99  # clean training data
    assert summary["test_accuracy"] >= 0.95
    for key in SUMMARY_KEYS:
        assert np.isfinite(summary[key]), key
    assert read_json(tmp_path / "run" / "summary.json")["test_accuracy"] == summary["test_accuracy"]


def test_fixed_etf_is_bit_identical_after_training(tmp_path):
    config = TrainConfig(
        classifier="fixed_etf",
        feature_dim=9,
        etf_scale=1.5,
        epochs=3,
        seed=4,
        weight_decay=5e-2,
        **FAST_MEASUREMENT,
    )
    run_training(config, tmp_path / "run", progress=False)
    trained = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    initial = build_model(config, (1, 8, 8), 10).state_dict()
    assert torch.equal(initial["classifier.weight"], simplex_etf(10, 9, scale=1.5, seed=4).float())
    assert torch.equal(trained["classifier.weight"], initial["classifier.weight"])
    # The rest of the network did train (with strong weight decay) around the fixed classifier.
    assert not torch.equal(trained["blocks.0.1.weight"], initial["blocks.0.1.weight"])
    measured = np.load(tmp_path / "run" / "measurements" / "epoch_0003" / "cells.npz")
    assert np.array_equal(
        measured["weight"], simplex_etf(10, 9, scale=1.5, seed=4).float().double()
    )


def test_same_seed_gives_the_same_metrics_on_cpu(tmp_path):
    config = TrainConfig(epochs=3, lam_per="sample", measure_every=2, **FAST_MEASUREMENT)
    first = run_training(config, tmp_path / "a", progress=False)
    second = run_training(config, tmp_path / "b", progress=False)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    assert without_seconds(read_csv(tmp_path / "a" / "metrics.csv")) == without_seconds(
        read_csv(tmp_path / "b" / "metrics.csv")
    )
    other = run_training(
        TrainConfig(epochs=3, lam_per="sample", measure_every=2, seed=1, **FAST_MEASUREMENT),
        tmp_path / "c",
        progress=False,
    )
    assert other["nc1"] != first["nc1"]


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, monkeypatch):
    config = TrainConfig(epochs=4, checkpoint_every=2, **FAST_MEASUREMENT)
    straight = run_training(config, tmp_path / "straight", progress=False)

    crash_in_epoch(config, tmp_path / "resumed", monkeypatch, 3)
    assert not (tmp_path / "resumed" / "summary.json").exists()
    with pytest.raises(ValueError, match="unfinished run; pass --resume"):
        run_training(config, tmp_path / "resumed", progress=False)
    with pytest.raises(ValueError, match="fields that differ .*: alpha"):
        run_training(
            TrainConfig(epochs=4, checkpoint_every=2, alpha=0.5, **FAST_MEASUREMENT),
            tmp_path / "resumed",
            resume=True,
            progress=False,
        )
    resumed = run_training(config, tmp_path / "resumed", resume=True, progress=False)
    straight.pop("seconds"), resumed.pop("seconds")
    assert resumed == straight
    rows = read_csv(tmp_path / "resumed" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert without_seconds(rows) == without_seconds(read_csv(tmp_path / "straight" / "metrics.csv"))
    with pytest.raises(ValueError, match="already holds a complete run"):
        run_training(config, tmp_path / "resumed", resume=True, progress=False)


def test_cli_train_writes_every_file(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text(
        "epochs = 3\nalpha = 0.5\npairs_all_classes = 2\n"
        'pairs_per_class_pair = 3\nlinearity_pairs = 10\n[loss_params]\nform = "pair"\n'
    )
    out = tmp_path / "out"
    code = cli.main(
        [
            "train",
            "--config",
            str(toml),
            "--out",
            str(out),
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--alpha",
            "1.0",
            "--epochs",
            "2",
            "--classifier",
            "fixed_etf",
            "--loss",
            "ce",
            "--seed",
            "3",
            "--measure-every",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    saved = read_json(out / "config.json")["config"]
    assert saved["alpha"] == 1.0 and saved["epochs"] == 2 and saved["classifier"] == "fixed_etf"
    assert saved["loss_params"] == {"form": "pair"} and saved["seed"] == 3
    summary = read_json(out / "summary.json")
    assert all(key in summary for key in SUMMARY_KEYS)
    rows = read_csv(out / "metrics.csv")
    assert len(rows) == 2 and rows[0]["nc1"] != "" and rows[1]["amplification"] != ""
    for epoch in ("epoch_0001", "epoch_0002"):
        folder = out / "measurements" / epoch
        for name in (
            "scalars.json",
            "reliability.csv",
            "theory_vs_lam.csv",
            "linearity.csv",
            "coefficients_vs_lam.csv",
            "activations_triple.npz",
            "cells.npz",
        ):
            assert (folder / name).is_file(), (epoch, name)
    triple = np.load(out / "measurements" / "epoch_0002" / "activations_triple.npz")
    assert set(np.unique(triple["c"])) == set(summary["triple"])
    assert triple["features"].shape[:2] == (6 * 3, 11)  # 6 class pairs of the triple, 3 each
    assert (out / "checkpoints" / "last.pt").is_file()
    assert "test_accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--dataset", "imagenet"], "dataset must be one of 'digits', .*; got 'imagenet'"),
        (["--model", "vgg"], "model must be one of 'mlp', 'cnn', 'resnet18', 'wrn', 'vit'; got 'vgg'"),
        (
            ["--loss", "hinge"],
            "unknown loss 'hinge'; known losses: ce, focal, label_smoothing, logit_adjusted, mse",
        ),
        (["--alpha", "-0.5"], r"alpha must lie in \[0, inf\), got -0.5"),
        (["--classifier", "frozen"], "classifier must be one of 'learned', 'fixed_etf'"),
        (["--triple", "0", "4", "10"], r"triple holds class 10, outside \[0, 9\]"),
        (
            ["--classifier", "fixed_etf", "--feature-dim", "8"],
            "feature_dim=8 is too small .* K=10 .* allowed feature_dim >= K-1 = 9",
        ),
        (
            ["--dataset", "mnist", "--data-dir", "{tmp}"],
            "expects these files .*train-images-idx3-ubyte.*missing",
        ),
        (["--dataset", "cifar10"], "dataset 'cifar10' is read from files: give data_dir"),
        (["--lam-grid", "10"], "lam_grid must be odd"),
        (["--mixup-layer", "9"], "mixup_layer=9 is beyond the 3 hidden blocks"),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, capsys, monkeypatch, flags, message):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(run_module, "train_epoch", no_training)
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    code = cli.main(["train", "--out", str(tmp_path / "out"), "--no-progress", *flags])
    assert code == 2
    error = capsys.readouterr().err
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists()


def test_learning_rate_schedules():
    assert learning_rate_factor("cosine", 0, 10) == 1.0
    assert learning_rate_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert [learning_rate_factor("step", e, 8) for e in (0, 3, 4, 5, 6, 7)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert learning_rate_factor("constant", 7, 8) == 1.0


def test_config_json_records_device_and_threads(tmp_path):
    run_training(
        TrainConfig(epochs=1, threads=1, **FAST_MEASUREMENT), tmp_path / "r", progress=False
    )
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["device"] == "cpu" and saved["threads"] == 1 and saved["num_classes"] == 10


@pytest.mark.parametrize("size", [3, 11, 99, 197])
def test_lam_grid_holds_zero_one_half_and_one_exactly(size):
    grid = TrainConfig(lam_grid=size).lams()
    assert len(grid) == size and grid[0] == 0.0 and grid[-1] == 1.0 and 0.5 in grid.tolist()
    assert bool((np.diff(grid) > 0).all())


def test_train_preset_paper_sets_the_regime_and_flags_override_it(monkeypatch, tmp_path):
    seen = {}

    def fake(config, out, resume=False, progress=True, check_memory=True, force=False):
        seen["config"] = config
        return {key: 0.0 for key in SUMMARY_KEYS} | {
            "amplification_se": 0.0, "amplification_se_cells": 0.0, "amplification_exact_W": 0.0,
            "curve_fitted_lam_H": 0.0,
            "better_fit": "noise",
        }  # fmt: skip

    monkeypatch.setattr("ufm.commands.train.run_training", fake)
    out = str(tmp_path / "r")
    flags = ["--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "7"]
    assert cli.main(["train", "--preset", "paper", *flags, "--out", out]) == 0
    config = seen["config"]
    assert (config.model, config.depth, config.width, config.augment) == ("wrn", 40, 10, True)
    assert (config.optimizer, config.lr, config.weight_decay, config.batch_size) == (
        "sgd", 0.1, 5e-4, 128
    )  # fmt: skip
    assert config.alpha == 1.0 and config.momentum == 0.9 and config.epochs == 7


def test_cli_train_force_replaces_a_finished_run_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["train", "--out", str(out), "--epochs", "1", "--pairs-all-classes", "2",
            "--pairs-per-class-pair", "3", "--linearity-pairs", "10", "--no-progress"]
    assert cli.main(base) == 0
    capsys.readouterr()
    assert cli.main(base + ["--alpha", "0.5"]) == 2
    assert "already holds a complete run" in capsys.readouterr().err
    assert read_json(out / "config.json")["config"]["alpha"] == 1.0  # untouched
    assert cli.main(base + ["--alpha", "0.5", "--force"]) == 0
    assert read_json(out / "config.json")["config"]["alpha"] == 0.5
    assert read_json(out / "summary.json")["train_accuracy"] > 0
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep")
    capsys.readouterr()
    assert cli.main(["train", "--out", str(notes), "--force", "--epochs", "1"]) == 2
    assert "holds no training run's config.json" in capsys.readouterr().err
    assert (notes / "mine.txt").read_text() == "keep"


def test_a_forced_run_that_is_refused_keeps_the_previous_run(tmp_path, capsys, monkeypatch):
    """--force deletes the previous run only after every check has passed: a forced run
    refused for its memory leaves the finished run as it was."""
    import ufm.memory

    out = tmp_path / "out"
    base = ["train", "--out", str(out), "--epochs", "1", "--pairs-all-classes", "2",
            "--pairs-per-class-pair", "3", "--linearity-pairs", "10", "--no-progress"]
    assert cli.main(base) == 0
    before = read_json(out / "summary.json")
    monkeypatch.setattr(ufm.memory, "available_memory", lambda device: 1000)
    capsys.readouterr()
    assert cli.main(base + ["--alpha", "0.5", "--force"]) == 2
    assert "the training run needs about" in capsys.readouterr().err
    assert read_json(out / "summary.json") == before
    assert read_json(out / "config.json")["config"]["alpha"] == 1.0
