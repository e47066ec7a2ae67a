"""Data loading: bundled, generated, and synthetic IDX / CIFAR-10 files written to tmp_path."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch
from nets_support import one_torch_thread  # noqa: F401  (autouse fixture)

from ufm.nets.data import (
    IDX_FILES,
    load_dataset,
    read_idx,
    standardise,
    stratified_split,
)


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    """IDX by hand: 0, 0, type code 0x08 (uint8), ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def expected_standardised(train: np.ndarray, test: np.ndarray):
    """Per-channel statistics of the training split, written out for (N, C, ...) arrays."""
    train, test = train.astype(np.float64), test.astype(np.float64)
    out_train, out_test = np.empty_like(train), np.empty_like(test)
    for ch in range(train.shape[1]):
        mean, std = train[:, ch].mean(), train[:, ch].std()
        out_train[:, ch] = (train[:, ch] - mean) / std
        out_test[:, ch] = (test[:, ch] - mean) / std
    return out_train, out_test


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, size=(9, 5, 4)),
        "train_labels": np.array([0, 1, 2, 0, 1, 2, 0, 1, 2]),
        "test_images": rng.integers(0, 256, size=(4, 5, 4)),
        "test_labels": np.array([2, 1, 0, 1]),
    }
    for k, (key, array) in enumerate(arrays.items()):
        write_idx(tmp_path / IDX_FILES[key], array, gz=k % 2 == 0)  # gzipped and plain mixed
    return tmp_path, arrays


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_synthetic_idx_files_load_exactly(idx_folder, name):
    folder, arrays = idx_folder
    data = load_dataset(name, str(folder))
    want_train, want_test = expected_standardised(
        arrays["train_images"][:, None], arrays["test_images"][:, None]
    )
    assert data.input_shape == (1, 5, 4) and data.num_classes == 3
    np.testing.assert_allclose(data.x_train.numpy(), want_train, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.x_test.numpy(), want_test, rtol=1e-6, atol=1e-6)
    assert data.y_train.tolist() == arrays["train_labels"].tolist()
    assert data.y_test.tolist() == arrays["test_labels"].tolist()


def test_idx_files_in_the_torchvision_layout_are_found(idx_folder, tmp_path):
    folder, arrays = idx_folder
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in folder.iterdir():
        if path.is_file():
            os.replace(path, raw / path.name)
    data = load_dataset("mnist", str(tmp_path / "tv"))
    assert data.y_test.tolist() == arrays["test_labels"].tolist()


def test_missing_idx_files_are_listed(idx_folder):
    folder, _ = idx_folder
    (folder / (IDX_FILES["test_labels"])).unlink()
    with pytest.raises(ValueError) as error:
        load_dataset("mnist", str(folder))
    message = str(error.value)
    assert all(stem in message for stem in IDX_FILES.values())
    assert f"missing: {IDX_FILES['test_labels']}" in message


def test_malformed_idx_is_refused_naming_the_file(tmp_path):
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(bytes([1, 0, 0x08, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(ValueError, match="bad-magic.*is not an IDX file"):
        read_idx(bad_magic)
    short = tmp_path / "short"
    write_idx(short, np.zeros((3, 2)))
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(
        ValueError, match=r"declares shape \(3, 2\) \(6 bytes of data\) but holds 5"
    ):
        read_idx(short)


def write_cifar_folder(folder, rng):
    """Five training batches of 4 images (all 10 classes among them) and a test batch of 4."""
    folder.mkdir(parents=True)
    train_labels = rng.permutation(np.arange(20) % 10)
    batches = {}
    for k, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(4, 3072)).astype(np.uint8)
        labels = [int(v) for v in (train_labels[4 * k : 4 * k + 4] if k < 5 else [3, 1, 4, 1])]
        batches[name] = (data, labels)
        with (folder / name).open("wb") as handle:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels}, handle)
    return batches


def test_synthetic_cifar_batches_load_exactly(tmp_path):
    batches = write_cifar_folder(tmp_path / "cifar-10-batches-py", np.random.default_rng(2))
    data = load_dataset("cifar10", str(tmp_path))  # the parent folder: the subfolder is found
    train_names = [f"data_batch_{k}" for k in range(1, 6)]
    raw_train = np.concatenate([batches[name][0] for name in train_names])
    labels = [label for name in train_names for label in batches[name][1]]
    # A row holds the red plane, then green, then blue, each 32 rows of 32 pixels: entry
    # 1024 + 32 * 3 + 7 is green, row 3, column 7, standardised with the green statistics.
    green = raw_train[:, 1024:2048].astype(np.float64)
    pixel = (raw_train[5, 1024 + 32 * 3 + 7] - green.mean()) / green.std()
    assert float(data.x_train[5, 1, 3, 7]) == pytest.approx(pixel, rel=1e-6)
    images_train = raw_train.reshape(-1, 3, 32, 32)
    want_train, want_test = expected_standardised(
        images_train, batches["test_batch"][0].reshape(-1, 3, 32, 32)
    )
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    np.testing.assert_allclose(data.x_train.numpy(), want_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.x_test.numpy(), want_test, rtol=1e-5, atol=1e-5)
    assert data.y_train.tolist() == labels
    assert data.y_test.tolist() == batches["test_batch"][1]


def test_cifar_folder_without_the_batches_lists_them(tmp_path):
    with pytest.raises(ValueError, match="data_batch_1, .*test_batch; missing: .*data_batch_5"):
        load_dataset("cifar10", str(tmp_path))


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_cifar_batch_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "c"
    write_cifar_folder(folder, np.random.default_rng(3))
    with (folder / "test_batch").open("wb") as handle:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, handle)
    with pytest.raises(ValueError, match="refusing to load"):
        load_dataset("cifar10", str(folder))


def test_digits_split_is_fixed_stratified_and_standardised_on_training_only():
    from sklearn.datasets import load_digits

    first, second = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)
    images, labels = load_digits(return_X_y=True)
    train, test = stratified_split(labels, 0.25)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
    counts_test = np.bincount(labels[test])
    np.testing.assert_allclose(counts_test / np.bincount(labels), 0.25, atol=0.01)
    want_train, want_test = expected_standardised(
        images[train].reshape(-1, 1, 8, 8), images[test].reshape(-1, 1, 8, 8)
    )
    np.testing.assert_allclose(first.x_train.numpy(), want_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first.x_test.numpy(), want_test, rtol=1e-5, atol=1e-5)
    assert first.input_shape == (1, 8, 8) and first.num_classes == 10


def test_mnist1d_is_generated_locally_and_leaves_global_random_state_alone():
    state = np.random.get_state()
    data = load_dataset("mnist1d")
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2] == after[2]
    assert data.x_train.shape == (4000, 1, 40) and data.x_test.shape == (1000, 1, 40)
    assert data.num_classes == 10
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std()) - 1) < 1e-3


def test_standardise_is_per_channel_and_guards_constant_channels():
    train = np.stack([np.full((3, 2), 5.0), np.arange(6.0).reshape(3, 2)], axis=1)  # (3, 2, 2)
    test = train + 1.0
    out_train, out_test = standardise(train, test)
    np.testing.assert_array_equal(out_train[:, 0], 0.0)
    np.testing.assert_array_equal(out_test[:, 0], 1.0)
    np.testing.assert_allclose(out_train[:, 1].std(), 1.0)


def test_train_subset_is_fixed_and_keeps_every_class():
    subset = load_dataset("digits", train_subset=200)
    again = load_dataset("digits", train_subset=200)
    assert len(subset.y_train) == 200 and torch.equal(subset.y_train, again.y_train)
    assert len(torch.unique(subset.y_train)) == 10
    assert len(subset.y_test) == len(load_dataset("digits").y_test)


def test_unknown_dataset_and_missing_folder_are_refused():
    with pytest.raises(ValueError, match="dataset must be one of 'digits'.*got 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="dataset 'mnist' needs data_dir, an existing folder"):
        load_dataset("mnist", "/nonexistent/folder")
