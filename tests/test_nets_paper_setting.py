"""The paper's setting: CIFAR-100, CIFAR pickles of every origin, augmentation, WRN and ViT,
and ``--preset paper``; networks trained on tiny CIFAR-format data written to tmp_path."""

from __future__ import annotations

import codecs
import dataclasses
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from nets_support import FAST_MEASUREMENT, crash_in_epoch, one_torch_thread  # noqa: F401

from ufm import cli
from ufm.losses import get_loss
from ufm.nets import TrainConfig, build_model, load_dataset, run_training
from ufm.nets import training as training_module
from ufm.nets.augment import augment_batch, check_augmentable, crop_flip, draw_crop_flip
from ufm.nets.config import TRAIN_PRESETS
from ufm.nets.data import DATASETS, DIRECTORY_DATASETS, read_cifar_batch
from ufm.nets.mixup import Mixup, mix, mixed_forward
from ufm.nets.models import DEFAULT_WIDTH, MODEL_BUILDERS, MODELS
from ufm.nets.training import build_optimizer, train_epoch
from ufm.nets.vit import vit_blocks
from ufm.nets.wide_resnet import wide_resnet_blocks

# ---------------------------------------------------------------------------------------------
# CIFAR files of every origin
# ---------------------------------------------------------------------------------------------


def python2_pickle(batch: dict) -> bytes:
    """``batch`` pickled as Python 2 with numpy 1.x writes it (the original CIFAR files).

    Written opcode by opcode at protocol 2: keys and byte strings are Python 2 ``str``
    (SHORT_BINSTRING / BINSTRING, decoded by the reader's ``encoding``), integers BININT,
    and a uint8 array is ``numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')`` followed
    by BUILD with the state ``(1, shape, dtype('u1'), False, raw bytes)``.
    """
    out = [b"\x80\x02"]  # PROTO 2

    def string(raw: bytes) -> None:
        if len(raw) < 256:
            out.append(b"U" + bytes([len(raw)]) + raw)  # SHORT_BINSTRING
        else:
            out.append(b"T" + struct.pack("<I", len(raw)) + raw)  # BINSTRING

    def integer(value: int) -> None:
        out.append(b"J" + struct.pack("<i", value))  # BININT

    def array(a: np.ndarray) -> None:
        assert a.dtype == np.uint8 and a.flags.c_contiguous
        out.append(b"cnumpy.core.multiarray\n_reconstruct\n")  # GLOBAL
        out.append(b"cnumpy\nndarray\n")
        integer(0)
        out.append(b"\x85")  # TUPLE1
        string(b"b")
        out.append(b"\x87R")  # TUPLE3, REDUCE
        out.append(b"(")  # MARK: the state tuple
        integer(1)
        for n in a.shape:
            integer(n)
        out.append({1: b"\x85", 2: b"\x86"}[a.ndim])
        out.append(b"cnumpy\ndtype\n")
        string(b"u1")
        integer(0)
        integer(1)
        out.append(b"\x87R(")  # TUPLE3, REDUCE, MARK: the dtype's state
        integer(3)
        string(b"|")
        out.append(b"NNN")
        integer(-1)
        integer(-1)
        integer(0)
        out.append(b"tb")  # TUPLE, BUILD
        out.append(b"\x89")  # NEWFALSE: not Fortran order
        string(a.tobytes())
        out.append(b"tb")

    def value(v) -> None:
        if isinstance(v, np.ndarray):
            array(v)
        elif isinstance(v, (bytes, str)):
            string(v.encode() if isinstance(v, str) else v)
        elif isinstance(v, list):
            out.append(b"](")  # EMPTY_LIST, MARK
            for item in v:
                value(item)
            out.append(b"e")  # APPENDS
        else:
            integer(int(v))

    out.append(b"}(")  # EMPTY_DICT, MARK
    for key, v in batch.items():
        value(key)
        value(v)
    out.append(b"u.")  # SETITEMS, STOP
    return b"".join(out)


STYLES = ("python2", "bytes_keys_protocol2", "protocol2", "highest")
"""How a batch file was written: by Python 2 (the originals), or by Python 3 with bytes keys at
protocol 2, with str keys at protocol 2, with str keys at the highest protocol."""


def dump_batch(path, batch: dict, style: str) -> None:
    if style == "python2":
        path.write_bytes(python2_pickle(batch))
        return
    if style != "bytes_keys_protocol2":
        batch = {key.decode(): value for key, value in batch.items()}
    protocol = pickle.HIGHEST_PROTOCOL if style == "highest" else 2
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def write_cifar(folder, dataset: str, n_train: int, n_test: int, style: str, seed: int = 0):
    """Random CIFAR-10 (five batches and a test batch) or CIFAR-100 (``train``, ``test``) files;
    every class has at least two training images. Returns the raw (x_train, y_train, x_test,
    y_test) as written."""
    rng = np.random.default_rng(seed)
    K = 10 if dataset == "cifar10" else 100
    folder.mkdir(parents=True, exist_ok=True)
    y_train = rng.permutation(np.arange(n_train) % K)
    y_test = rng.integers(0, K, n_test)
    x_train = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    if dataset == "cifar10":
        names = [f"data_batch_{k}" for k in range(1, 6)]
        for name, rows in zip(names, np.array_split(np.arange(n_train), 5), strict=True):
            batch = {b"batch_label": b"training batch", b"data": x_train[rows],
                     b"labels": y_train[rows].tolist()}  # fmt: skip
            dump_batch(folder / name, batch, style)
        test = {b"batch_label": b"", b"data": x_test, b"labels": y_test.tolist()}
        dump_batch(folder / "test_batch", test, style)
    else:
        for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            batch = {b"data": x, b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist(),
                     b"batch_label": b""}  # fmt: skip
            dump_batch(folder / name, batch, style)
    return (x_train.reshape(-1, 3, 32, 32), y_train, x_test.reshape(-1, 3, 32, 32), y_test)


def test_python2_pickle_writer_is_what_python2_wrote():
    """The hand-written Python 2 pickle decodes as the originals do: bytes keys and an array."""
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    loaded = pickle.loads(python2_pickle({"data": data, "labels": [3, 7]}), encoding="bytes")
    assert set(loaded) == {b"data", b"labels"} and loaded[b"labels"] == [3, 7]
    assert loaded[b"data"].dtype == np.uint8 and np.array_equal(loaded[b"data"], data)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_files_of_every_origin_load_exactly(tmp_path, dataset, style):
    subfolder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
    written = write_cifar(tmp_path / subfolder, dataset, 200, 30, style)
    loaded = DATASETS[dataset](str(tmp_path))  # the parent folder: the subfolder is found
    for want, got in zip(written, loaded, strict=True):
        assert got.dtype == want.dtype or got.dtype == np.int64
        np.testing.assert_array_equal(got, want)  # CIFAR-100: the fine labels, not the coarse


def test_cifar100_is_registered_and_needs_its_two_files(tmp_path):
    assert "cifar100" in DATASETS and "cifar100" in DIRECTORY_DATASETS
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("cifar100", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="dataset 'cifar100' is read from files: give data_dir"):
        TrainConfig(dataset="cifar100")
    (tmp_path / "test").write_bytes(b"")
    with pytest.raises(
        ValueError,
        match=r"'cifar100' expects these files in .* \(or in its subfolder cifar-100-python\): "
        r"train, test; missing: train$",
    ):
        load_dataset("cifar100", str(tmp_path))


def test_cifar100_without_fine_labels_is_refused(tmp_path):
    path = tmp_path / "train"
    path.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}))
    with pytest.raises(ValueError, match="must hold 'data' and 'fine_labels', has"):
        read_cifar_batch(path, "fine_labels")


class RunsCommand:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


class Evaluates:
    def __reduce__(self):
        return (eval, ("__import__('os').system('echo should-not-run')",))


class HugeBytes:
    def __reduce__(self):
        return (bytes, (10**12,))


class OtherCodec:
    def __reduce__(self):
        return (codecs.encode, ("text", "rot13"))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize(
    "payload,message",
    [
        (RunsCommand(), r"refusing to load (posix|os|nt)\.system from a CIFAR batch"),
        (Evaluates(), r"refusing to load (__builtin__|builtins)\.eval from a CIFAR batch"),
        (HugeBytes(), r"refusing bytes\(\.\.\.\) with arguments"),
        (OtherCodec(), r"refusing _codecs\.encode with a str and encoding 'rot13'"),
    ],
)
def test_cifar_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch, payload, message,
                                                     protocol):  # fmt: skip
    folder = tmp_path / "c"
    write_cifar(folder, "cifar10", 20, 4, "highest")
    (folder / "test_batch").write_bytes(
        pickle.dumps({"data": payload, "labels": [0]}, protocol=protocol)
    )
    ran = []
    monkeypatch.setattr(os, "system", lambda command: ran.append(command))  # had it run
    with pytest.raises(ValueError, match=f"cannot read CIFAR batch .*test_batch.*: {message}"):
        load_dataset("cifar10", str(folder))
    assert ran == []


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def recover_crop_flip(image: torch.Tensor, augmented: torch.Tensor, padding: int = 4):
    """Every (row offset, column offset, flip) under which ``augmented`` is a crop of the
    zero-padded ``image`` followed by an optional left-right flip."""
    C, H, W = image.shape
    padded = torch.zeros(C, H + 2 * padding, W + 2 * padding)
    padded[:, padding : padding + H, padding : padding + W] = image
    found = []
    for r in range(2 * padding + 1):
        for c in range(2 * padding + 1):
            crop = padded[:, r : r + H, c : c + W]
            for flip in (False, True):
                if torch.equal(crop.flip(-1) if flip else crop, augmented):
                    found.append((r, c, flip))
    return found


def test_augmented_batch_is_a_crop_of_the_zero_padded_image_then_a_flip():
    x = torch.rand(48, 3, 32, 32) + 1.0  # no zeros, so the padding shows where it lies
    out = augment_batch(x, np.random.default_rng(5))
    offsets, flips = draw_crop_flip(48, np.random.default_rng(5))
    assert out.shape == x.shape
    for b in range(48):
        found = recover_crop_flip(x[b], out[b])
        assert found == [(int(offsets[b, 0]), int(offsets[b, 1]), bool(flips[b]))]
    assert flips.any() and not flips.all() and len(np.unique(offsets)) > 3
    assert torch.equal(crop_flip(x[:1], np.array([[4, 4]]), np.array([False])), x[:1])


def test_augmentation_is_refused_where_it_does_not_apply(tmp_path):
    check_augmentable((3, 32, 32))
    check_augmentable((1, 32, 32))
    for shape in [(1, 40), (1, 8, 8), (1, 28, 28)]:
        with pytest.raises(ValueError, match=r"applies to images of shape \(C, 32, 32\) only"):
            check_augmentable(shape)
    with pytest.raises(ValueError, match=r"of shape \(1, 40\) \(dataset 'mnist1d'\)$"):
        TrainConfig(dataset="mnist1d", augment=True).check_against_data(10, (1, 40))
    with pytest.raises(ValueError, match=r"\(C, 32, 32\) only, as in cifar10 and cifar100; got "
                       r"inputs of shape \(1, 8, 8\)"):  # fmt: skip
        run_training(TrainConfig(augment=True, epochs=1), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="augment must be true or false, got 'yes'"):
        TrainConfig(augment="yes")


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar10")
    write_cifar(folder, "cifar10", 60, 20, "python2")
    return str(folder)


def tiny_wrn_config(data_dir, **fields):
    return TrainConfig(dataset="cifar10", data_dir=data_dir, model="wrn", depth=10, width=1,
                       feature_dim=16, batch_size=16, **fields)  # fmt: skip


def replayed_epoch(model, data, config, rng, augment):
    """One epoch of mixup training written out from the public pieces: the permutation, then per
    batch (with ``augment``) the crops and flips and then the mixup plan."""
    loss, mixup = get_loss("ce"), Mixup(config.alpha)
    optimizer = build_optimizer(model, config)
    model.train()
    order = torch.as_tensor(rng.permutation(len(data.y_train)))
    fed = []
    for start in range(0, len(order), config.batch_size):
        rows = order[start : start + config.batch_size]
        x, y = data.x_train[rows], data.y_train[rows]
        if augment:
            x = crop_flip(x, *draw_crop_flip(len(rows), rng))
        plan = mixup.plan(y, rng)
        fed.append(mix(x, plan.partner, plan.lam))
        value = loss.mean(mixed_forward(model, x, plan), y, y[plan.partner], plan.lam.float())
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return fed


@pytest.mark.parametrize("augment", [False, True])
def test_training_epoch_augments_before_mixing_and_only_when_asked(tiny_cifar, monkeypatch,
                                                                  augment):  # fmt: skip
    config = tiny_wrn_config(tiny_cifar, augment=augment)
    data = load_dataset("cifar10", tiny_cifar)
    clean = data.x_train.clone()
    if not augment:
        monkeypatch.setattr(training_module, "augment_batch", lambda *a: pytest.fail("augmented"))
    net = build_model(config, data.input_shape, 10)
    replica = build_model(config, data.input_shape, 10)
    fed = []
    first = net.blocks[0]

    def recording_forward(x):
        fed.append(x.clone())
        return type(first).forward(first, x)

    monkeypatch.setattr(first, "forward", recording_forward)
    rng, replica_rng = np.random.default_rng(3), np.random.default_rng(3)
    train_epoch(net, data, get_loss("ce"), Mixup(config.alpha), build_optimizer(net, config), rng,
                config.batch_size, "cpu", augment=augment)  # fmt: skip
    want = replayed_epoch(replica, data, config, replica_rng, augment)
    assert len(fed) == len(want)
    for got, expected in zip(fed, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert rng.bit_generator.state == replica_rng.bit_generator.state
    for a, b in zip(net.state_dict().values(), replica.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(data.x_train, clean)  # the measurements read the clean images


def test_augmented_run_is_reproducible_and_resumes_exactly(tiny_cifar, tmp_path, monkeypatch):
    """The crops and flips come from the run's generator, which the checkpoint stores."""
    config = TrainConfig(dataset="cifar10", data_dir=tiny_cifar, model="vit", width=8, depth=1,
                         augment=True, epochs=2, checkpoint_every=1, batch_size=16,
                         lam_grid=3, **FAST_MEASUREMENT)  # fmt: skip
    straight = run_training(config, tmp_path / "straight", progress=False)
    crash_in_epoch(config, tmp_path / "resumed", monkeypatch, 2)
    resumed = run_training(config, tmp_path / "resumed", resume=True, progress=False)
    straight.pop("seconds"), resumed.pop("seconds")
    assert resumed == straight
    unaugmented = run_training(dataclasses.replace(config, augment=False), tmp_path / "plain",
                               progress=False)  # fmt: skip
    assert unaugmented["train_nll"] != straight["train_nll"]


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def test_models_are_registered_by_name():
    assert set(MODELS) == {"mlp", "cnn", "resnet18", "wrn", "vit"}
    assert set(MODEL_BUILDERS) == set(DEFAULT_WIDTH) == set(MODELS)


def wrn_body_parameters(depth: int, k: int, channels: int = 3) -> int:
    """Parameters of the convolutions and BatchNorms of WRN-depth-k up to the pooling.

    Stem: a 3x3 convolution ``channels`` -> 16. A group from a to b channels with n blocks:
    its first block has BN(a), conv a->b, BN(b), conv b->b and, as a != b here, a 1x1
    shortcut a->b: 2a + 9ab + 2b + 9b^2 + ab; each further block 2b + 9b^2 + 2b + 9b^2.
    Then the final BN(64k).
    """
    n = (depth - 4) // 6
    total, a = 9 * channels * 16, 16
    for b in (16 * k, 32 * k, 64 * k):
        total += 2 * a + 9 * a * b + 2 * b + 9 * b * b + a * b
        total += (n - 1) * (4 * b + 18 * b * b)
        a = b
    return total + 2 * 64 * k


@pytest.mark.parametrize("depth,k,millions", [(16, 4, 2.7), (28, 10, 36.5), (40, 10, 55.8)])
def test_wide_resnet_has_the_parameters_of_the_original(depth, k, millions):
    """Zagoruyko & Komodakis (2016), table of CIFAR results: WRN-16-4 2.7 M, WRN-28-10 36.5 M,
    WRN-40-10 55.8 M parameters, with a 64k x 10 classifier with bias."""
    with torch.device("meta"):  # shapes only: WRN-40-10 is not allocated
        blocks = wide_resnet_blocks((3, 32, 32), depth, k, feature_dim=64 * k)
    count = sum(p.numel() for block in blocks for p in block.parameters())
    assert count == wrn_body_parameters(depth, k)  # no projection head: d = 64k
    assert round((count + 64 * k * 10 + 10) / 1e6, 1) == millions
    with torch.device("meta"):
        projected = wide_resnet_blocks((3, 32, 32), depth, k, feature_dim=7)
    head = sum(p.numel() for p in projected[-1].parameters())
    assert head == 2 * 64 * k + 64 * k * 7 + 7 + 2 * 7  # final BN, Linear, BN(d)


def test_wrn_16_4_through_build_model_and_its_shapes():
    config = TrainConfig(model="wrn", width=4, depth=16, feature_dim=256, bias=True)
    net = build_model(config, (3, 32, 32), 10)
    assert net.num_blocks == 5
    assert sum(p.numel() for p in net.parameters()) == wrn_body_parameters(16, 4) + 256 * 10 + 10
    default = build_model(TrainConfig(model="wrn"), (3, 32, 32), 10)  # depth 2, width 0
    assert sum(p.numel() for p in default.blocks[:-1].parameters()) == sum(
        p.numel() for p in net.blocks[:-1].parameters()
    )  # WRN-16-4
    small = build_model(TrainConfig(model="wrn", width=1, depth=10, feature_dim=5), (1, 28, 28), 4)
    x = torch.randn(3, 1, 28, 28)
    outputs = small.eval().block_outputs(x)
    assert [tuple(o.shape[1:]) for o in outputs] == [
        (16, 28, 28), (16, 28, 28), (32, 14, 14), (64, 7, 7), (5,)
    ]  # fmt: skip
    assert small(x).shape == (3, 4)


def test_vit_blocks_tokens_and_features():
    config = TrainConfig(model="vit", width=16, depth=3, feature_dim=6)
    net = build_model(config, (3, 32, 32), 5).eval()
    assert net.num_blocks == 5  # patch embedding, 3 transformer blocks, head
    outputs = net.block_outputs(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outputs] == [(65, 16)] * 4 + [(6,)]
    default = vit_blocks((3, 32, 32), width=192, depth=6, feature_dim=192)
    attention = default[1].attention
    assert attention.num_heads == 3 and attention.head_dim == 64
    assert build_model(TrainConfig(model="vit", depth=0), (3, 32, 32), 10).num_blocks == 8
    same = build_model(config, (3, 32, 32), 5)
    for a, b in zip(net.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # seeded


def test_bad_architectures_are_refused_early():
    allowed = r"6n \+ 4 with n >= 1 \(10, 16, 22, 28, 34, 40, ...; 0 for WRN-16\)"
    for depth in (12, 8, 41):
        with pytest.raises(ValueError, match=rf"of model 'wrn' must be {allowed}, got {depth}"):
            TrainConfig(model="wrn", depth=depth)
    TrainConfig(model="wrn", depth=40, width=10)
    TrainConfig(model="vit", depth=12)  # any number of blocks
    with pytest.raises(ValueError, match=r"model 'wrn' needs image inputs of shape \(C, H, W\)"):
        build_model(TrainConfig(model="wrn"), (1, 40), 10)
    with pytest.raises(ValueError, match=r"'vit' cuts images into 4x4 patches.*\(1, 30, 30\)"):
        build_model(TrainConfig(model="vit"), (1, 30, 30), 10)
    with pytest.raises(ValueError, match=r"mixup_layer=6 is beyond the 5 hidden blocks of model "
                       r"'wrn'"):  # fmt: skip
        build_model(TrainConfig(model="wrn", width=1, mixup_layer=6), (3, 32, 32), 10)


# ---------------------------------------------------------------------------------------------
# Whole runs on tiny CIFAR-format data
# ---------------------------------------------------------------------------------------------

TINY_RUN = {**FAST_MEASUREMENT, "epochs": 1, "batch_size": 32, "lam_grid": 3,
            "feature_dim": 16}  # fmt: skip


@pytest.mark.parametrize(
    "dataset,style,model,fields",
    [
        ("cifar10", "python2", "wrn", {"width": 1, "depth": 10, "augment": True}),
        ("cifar10", "highest", "vit", {"width": 8, "depth": 1, "mixup_layer": 2}),
        ("cifar100", "bytes_keys_protocol2", "vit",
         {"width": 8, "depth": 1, "augment": True, "exact_classifier": False,
          "feature_dim": 99}),
        ("cifar100", "protocol2", "wrn",
         {"width": 1, "depth": 10, "mixup_layer": 3, "exact_classifier": False,
          "linearity_pairs": 5, "feature_dim": 99}),
    ],
)  # fmt: skip
def test_wrn_and_vit_train_and_are_measured_on_cifar_files(tmp_path, dataset, style, model,
                                                           fields):  # fmt: skip
    n_train = 60 if dataset == "cifar10" else 200
    write_cifar(tmp_path / "data", dataset, n_train, 20, style)
    config = TrainConfig(dataset=dataset, data_dir=str(tmp_path / "data"), model=model,
                         **{**TINY_RUN, **fields})  # fmt: skip
    summary = run_training(config, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    K = 10 if dataset == "cifar10" else 100
    assert saved["num_classes"] == K and saved["input_shape"] == [3, 32, 32]
    assert saved["config"]["augment"] == fields.get("augment", False)
    assert 0.0 <= summary["train_accuracy"] <= 1.0 and np.isfinite(summary["nc1"])
    assert summary["measured_at_layer"] == fields.get("mixup_layer", 0)
    assert len(summary["linearity"]) == (5 if model == "wrn" else 3)


# ---------------------------------------------------------------------------------------------
# --preset paper
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def captured_config(monkeypatch):
    seen = {}

    def fake(config, out, resume=False, progress=True, check_memory=True, force=False):
        seen["config"] = config
        raise SystemExit(0)  # stop before any output is printed

    monkeypatch.setattr("ufm.commands.train.run_training", fake)
    return seen


def preset_run(seen, tmp_path, *flags):
    with pytest.raises(SystemExit):
        cli.main(["train", "--preset", "paper", "--out", str(tmp_path / "r"), *flags])
    return seen["config"]


def test_preset_paper_trains_the_papers_networks_on_the_papers_data(captured_config, tmp_path):
    data = ["--data-dir", str(tmp_path)]
    config = preset_run(captured_config, tmp_path, "--dataset", "cifar100", *data)
    assert (config.model, config.depth, config.width, config.augment) == ("wrn", 40, 10, True)
    assert (config.optimizer, config.lr, config.weight_decay, config.batch_size) == (
        "sgd", 0.1, 5e-4, 128
    )  # fmt: skip
    assert (config.alpha, config.epochs, config.schedule) == (1.0, 300, "cosine")
    config = preset_run(captured_config, tmp_path, "--dataset", "fashion_mnist", *data)
    assert (config.model, config.depth, config.augment) == ("wrn", 40, False)  # 28x28
    config = preset_run(captured_config, tmp_path, "--dataset", "cifar10", "--model", "vit", *data)
    assert (config.model, config.depth, config.width, config.augment) == ("vit", 12, 768, True)
    config = preset_run(captured_config, tmp_path, "--dataset", "cifar10", "--depth", "16",
                        "--width", "4", "--no-augment", "--epochs", "7", *data)  # fmt: skip
    assert (config.model, config.depth, config.width, config.augment) == ("wrn", 16, 4, False)
    assert config.epochs == 7


def test_preset_paper_refuses_other_data_before_any_work(captured_config, tmp_path, capsys):
    out = str(tmp_path / "r")
    for flags in ([], ["--dataset", "mnist1d"], ["--model", "mlp"]):
        assert cli.main(["train", "--preset", "paper", "--out", out, *flags]) == 2
        message = capsys.readouterr().err
        assert "preset 'paper' trains on 'fashion_mnist', 'cifar10', 'cifar100' only" in message
        assert "got dataset" in message
    assert "config" not in captured_config and not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="preset 'paper' trains on"):
        TRAIN_PRESETS["paper"].fields_for("paper", "digits", None)


def test_the_measurement_never_sees_augmented_inputs(tiny_cifar, tmp_path, monkeypatch):
    """Augmentation crops and flips training batches only: the measurement of an augmented run
    equals that of the same weights measured with augmentation switched off, and no crop is
    drawn while it runs."""
    from ufm.nets import measure

    config = tiny_wrn_config(tiny_cifar, augment=True, epochs=1, lam_grid=3, **FAST_MEASUREMENT)
    run_training(config, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    data = load_dataset("cifar10", tiny_cifar)
    model = build_model(config, data.input_shape, data.num_classes)
    model.load_state_dict(state["model"])
    calls = []
    monkeypatch.setattr(training_module, "augment_batch", lambda *a: calls.append(1))
    plain = dataclasses.replace(config, augment=False)
    augmented = measure(model, data, config, "cpu").summary
    assert measure(model, data, plain, "cpu").summary["amplification"] == augmented["amplification"]
    assert not calls
