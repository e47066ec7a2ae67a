"""Step class imbalance of ``ufm train``: subsampling, refusals, and the summary it writes."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from nets_support import FAST_MEASUREMENT, one_torch_thread  # noqa: F401  (autouse fixture)

from ufm import cli
from ufm.imbalance import class_sizes
from ufm.io import read_json
from ufm.nets import TrainConfig, load_dataset, run_training
from ufm.nets import run as run_module
from ufm.nets.imbalanced_data import imbalanced_dataset, subsample_classes

# A tiny MLP for a few epochs: the test checks the bookkeeping, not what the imbalance does.
TINY = {
    **FAST_MEASUREMENT,
    "width": 32,
    "depth": 1,
    "feature_dim": 16,
    "epochs": 2,
    "exact_classifier": False,
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def expected_counts(counts, ratio, minority):
    K = len(counts)
    return [n if c < K - minority else max(1, round(n / ratio)) for c, n in enumerate(counts)]


@pytest.mark.parametrize("ratio,minority", [(10.0, 3), (2.5, 1), (1000.0, 4), (3.0, 9)])
def test_subsampling_keeps_the_expected_count_of_every_class(ratio, minority):
    rng = np.random.default_rng(5)
    counts = rng.integers(20, 60, size=10)
    labels = rng.permutation(np.repeat(np.arange(10), counts))
    keep = subsample_classes(labels, class_sizes(10, ratio, minority), seed=3)
    assert keep.dtype == np.int64 and np.all(np.diff(keep) > 0)  # sorted, no repeats
    kept = np.bincount(labels[keep], minlength=10)
    assert kept.tolist() == expected_counts(counts.tolist(), ratio, minority)
    # The majority classes keep every one of their samples.
    majority = np.isin(labels, np.arange(10 - minority))
    assert set(np.flatnonzero(majority)) <= set(keep.tolist())


def test_subsampling_is_deterministic_in_the_seed():
    labels = np.repeat(np.arange(5), 40)
    sizes = class_sizes(5, 4.0, 2)
    first = subsample_classes(labels, sizes, seed=7)
    assert np.array_equal(first, subsample_classes(torch.as_tensor(labels), sizes, seed=7))
    others = [subsample_classes(labels, sizes, seed=s) for s in (8, 9)]
    assert not all(np.array_equal(first, other) for other in others)
    assert all(len(other) == len(first) for other in others)


def test_balanced_sizes_keep_every_sample_in_order():
    labels = np.random.default_rng(0).integers(0, 6, size=300)
    assert np.array_equal(subsample_classes(labels, np.ones(6), seed=1), np.arange(300))


@pytest.mark.parametrize("ratio,minority", [(1.0, 3), (10.0, 0), (1.0, 0)])
def test_no_imbalance_gives_the_identical_training_set(digits, ratio, minority):
    assert imbalanced_dataset(digits, ratio, minority, seed=2) is digits


def test_imbalanced_dataset_reduces_the_training_split_only(digits):
    data = imbalanced_dataset(digits, 10.0, 3, seed=0)
    counts = torch.bincount(digits.y_train, minlength=10).tolist()
    assert torch.bincount(data.y_train, minlength=10).tolist() == expected_counts(counts, 10.0, 3)
    assert data.x_test is digits.x_test and data.y_test is digits.y_test
    # The kept rows are the balanced set's rows, bit for bit, with their own labels.
    keep = subsample_classes(digits.y_train, class_sizes(10, 10.0, 3), seed=0)
    assert torch.equal(data.x_train, digits.x_train[keep])
    assert torch.equal(data.y_train, digits.y_train[keep])


def test_a_ratio_that_leaves_one_sample_is_refused(digits):
    smallest = int(torch.bincount(digits.y_train)[-2:].min())
    with pytest.raises(
        ValueError, match=rf"imbalance_ratio=1000 leaves class \d .* <= {smallest / 2:g}"
    ):
        imbalanced_dataset(digits, 1000.0, 2, seed=0)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"imbalance_ratio": 0.5}, r"imbalance_ratio must lie in \[1, inf\), got 0.5"),
        ({"minority_classes": -1}, "minority_classes must be >= 0, got -1"),
    ],
)
def test_config_refuses_a_bad_ratio_or_minority(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--imbalance-ratio", "0.5"], r"imbalance_ratio must lie in \[1, inf\), got 0.5"),
        (["--minority-classes", "-2"], "minority_classes must be >= 0, got -2"),
        (
            ["--minority-classes", "10"],
            r"minority_classes=10 is too large .* K=10 .* allowed 0 <= minority_classes <= K-1 = 9",
        ),
        (
            ["--imbalance-ratio", "500", "--minority-classes", "1"],
            r"imbalance_ratio=500 leaves class 9 of 'digits' with 1 training sample",
        ),
    ],
)
def test_bad_imbalance_is_refused_before_training(tmp_path, capsys, monkeypatch, flags, message):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(run_module, "train_epoch", no_training)
    code = cli.main(["train", "--out", str(tmp_path / "out"), "--no-progress", *flags])
    assert code == 2
    error = capsys.readouterr().err
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists()


def _check_classifier_entries(summary, K, minority):
    assert len(summary["row_norms"]) == K and all(v > 0 for v in summary["row_norms"])
    assert summary["etf_cosine"] == pytest.approx(-1 / (K - 1))
    assert summary["etf_distance_majority"] >= 0
    if minority:
        assert summary["etf_distance_minority"] >= 0
        assert -1 <= summary["minority_cosine"] <= 1
    else:
        assert summary["etf_distance_minority"] is None and summary["minority_cosine"] is None


def test_imbalanced_run_writes_the_imbalance_summary(tmp_path, digits):
    config = TrainConfig(imbalance_ratio=10, minority_classes=3, seed=1, **TINY)
    returned = run_training(config, tmp_path / "run", progress=False)
    summary = read_json(tmp_path / "run" / "summary.json")
    assert set(returned) == set(summary)
    assert summary["per_class_test_accuracy"] == returned["per_class_test_accuracy"]

    counts = torch.bincount(digits.y_train, minlength=10).tolist()
    assert summary["train_class_counts"] == expected_counts(counts, 10, 3)
    saved = read_json(tmp_path / "run" / "config.json")
    assert saved["n_train"] == sum(expected_counts(counts, 10, 3))
    assert saved["n_test"] == len(digits.y_test)  # the test set is not reduced

    per_class = summary["per_class_test_accuracy"]
    assert len(per_class) == 10 and all(0 <= a <= 1 for a in per_class)
    minority, majority = summary["minority_test_accuracy"], summary["majority_test_accuracy"]
    assert isinstance(minority, float) and 0 <= minority <= 1
    assert isinstance(majority, float) and 0 <= majority <= 1
    # Pooled over the (balanced) test samples of each group, the accuracies are consistent.
    test_counts = torch.bincount(digits.y_test, minlength=10).numpy()
    correct = np.asarray(per_class) * test_counts
    assert minority == pytest.approx(correct[7:].sum() / test_counts[7:].sum())
    assert majority == pytest.approx(correct[:7].sum() / test_counts[:7].sum())
    assert summary["test_accuracy"] == pytest.approx(correct.sum() / test_counts.sum())
    _check_classifier_entries(summary, 10, 3)
    assert math.isfinite(summary["train_accuracy"])


def test_balanced_run_has_the_entries_without_minority(tmp_path, digits):
    summary = run_training(TrainConfig(**{**TINY, "epochs": 1}), tmp_path / "run", progress=False)
    assert summary["train_class_counts"] == torch.bincount(digits.y_train).tolist()
    assert len(summary["per_class_test_accuracy"]) == 10
    assert summary["minority_test_accuracy"] is None
    assert summary["majority_test_accuracy"] == pytest.approx(summary["test_accuracy"])
    _check_classifier_entries(summary, 10, 0)
