"""One training run from configuration to files.

configuration -> data -> model -> training (per epoch: test metrics, scheduled measurements,
checkpoints) -> final measurement -> files. The output folder holds

* ``config.json``: the configuration and what was derived from it (K, input shape, device);
* ``metrics.csv``: one row per epoch (rewritten atomically after every epoch);
* ``checkpoints/last.pt`` (every ``checkpoint_every`` epochs and the last one) and
  ``checkpoints/epoch_NNNN.pt`` (kept);
* ``measurements/epoch_NNNN/``: a measurement folder (:mod:`ufm.nets.measurement`) with
  ``scalars.json``, ``reliability.csv``, ``theory_vs_lam.csv``, ``coefficients_vs_lam.csv``,
  ``linearity.csv``, ``activations_triple.npz``, ``cells.npz``, with
  ``mixup_points >= 3`` ``mixtures3.csv`` and ``activations_mixtures3.npz``
  (:mod:`ufm.nets.mixtures`), and in the final measurement (in every one with
  ``features_every_measurement``) ``mixed_features.npz``: the measured pairs' features, a
  plain numpy file in the schema of :mod:`ufm.nets.features_file` (readable with
  ``numpy.load`` alone), which ``ufm compare`` analyses again. The measurements before the
  final one are light unless ``fits_every_measurement``: no fit of lam_H, so their theory
  numbers are NaN (``fit_lam_H`` of :class:`ufm.nets.MeasureSettings`); the final one (and
  each full one whose fit found a lam_H) also holds ``theory_triple.npz``;
* ``summary.json``, written last: its presence marks the run complete. Besides the final
  measurement it holds the per-class test accuracy, the training class counts and the
  classifier's geometry under class imbalance, with the mixup pairing and the label mass
  ratio it gives (:func:`ufm.nets.imbalanced_data.imbalance_summary`).

The training split is subsampled to the configured step imbalance right after it is loaded
and checked (:mod:`ufm.nets.imbalanced_data`); the test split stays balanced.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import config_to_dict
from ..devices import blas_threads, resolve_device, torch_threads
from ..io import (
    SUMMARY,
    check_writable,
    is_complete,
    prepare_run_dir,
    read_json,
    removed_on_failure,
    write_csv,
    write_json,
)
from ..losses import get_loss
from ..memory import check_memory as check_memory_against
from .config import TrainConfig
from .data import load_dataset
from .imbalanced_data import imbalance_summary, imbalanced_dataset
from .measure import Measurement, calibration_measurement, measure
from .memory_estimate import WHAT_TO_LOWER, training_memory
from .mixup import ClassPool, Mixup
from .models import build_model
from .training import (
    TrainingState,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    save_checkpoint,
    train_epoch,
)

LAST_CHECKPOINT = Path("checkpoints") / "last.pt"


def measurement_dir(out: str | Path, epoch: int) -> Path:
    """The folder of a run's measurement after ``epoch`` (the final one: the run's epochs)."""
    return Path(out) / "measurements" / f"epoch_{epoch:04d}"


def write_measurement(folder: Path, measurement: Measurement) -> None:
    """Tables as CSV, arrays as npz, then the scalars as ``scalars.json``, in ``folder``."""
    measurement.write_files(folder)


def _scalar_columns(scalars: dict[str, Any]) -> dict[str, Any]:
    """The measurement scalars as metrics.csv columns (lists spread over numbered columns)."""
    columns = {}
    for key, value in scalars.items():
        if isinstance(value, list):
            columns.update({f"{key}_{k + 1}": v for k, v in enumerate(value)})
        else:
            columns[key] = value
    return columns


# what a training run writes besides config.json and summary.json (replaced by a fresh run)
RUN_OUTPUTS = ("metrics.csv", "measurements", "checkpoints")


def _check_output_folder(out: Path, config: TrainConfig, resume: bool) -> None:
    """Refuse, before any work, a folder this run must not write into (see :func:`run_training`)."""
    check_writable(out)
    if is_complete(out):
        raise ValueError(
            f"{str(out)!r} already holds a complete run ({SUMMARY}); choose a new --out"
        )
    has_checkpoint = (out / LAST_CHECKPOINT).is_file()
    if resume and not has_checkpoint:
        if holds_training_run(out):
            raise ValueError(
                f"cannot resume {str(out)!r}: the run there stopped before its first checkpoint "
                f"(no {LAST_CHECKPOINT.as_posix()}; checkpoint_every = 0 saves only the last "
                "epoch), so there is nothing to continue; start it again without --resume"
            )
        raise ValueError(f"cannot resume: {str(out / LAST_CHECKPOINT)!r} does not exist")
    if not resume and has_checkpoint:
        raise ValueError(
            f"{str(out)!r} holds an unfinished run; pass --resume to continue it or choose a new --out"
        )
    if not resume and out.is_dir() and any(out.iterdir()) and not holds_training_run(out):
        raise ValueError(
            f"{str(out)!r} is a non-empty folder without the config.json of a training run; "
            "choose another --out or delete that folder"
        )
    if resume:
        # A field added after the run was started takes its default, which is what the run had.
        saved = {**config_to_dict(TrainConfig()), **read_json(out / "config.json")["config"]}
        current = config_to_dict(config)
        differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if differing:
            raise ValueError(
                f"cannot resume with a different configuration; fields that differ from "
                f"{str(out / 'config.json')!r}: {', '.join(differing)}"
            )


def holds_training_run(folder: Path) -> bool:
    """Whether ``folder/config.json`` is that of a training run (it holds a ``config`` table)."""
    path = folder / "config.json"
    try:
        return path.is_file() and "config" in read_json(path)
    except (ValueError, TypeError):  # not JSON, or JSON that is not a table
        return False


def _clear_outputs(out: Path) -> None:
    """Remove the files of a run that stopped before its first checkpoint, before a fresh
    run writes its own (a folder this run was allowed into holds no others)."""
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def run_training(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    check_memory: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Train, measure and write the files listed in the module docstring; return the summary.

    ``force`` starts again in a folder that holds a training run (complete or not): that run
    is deleted only once every check below has passed, so a refused run keeps it.

    Everything that can be refused is checked before the first training step: the
    configuration, the output folder (writable; a complete run is refused, an unfinished one
    needs ``resume``, a non-empty folder must hold a training run, and one whose run stopped
    before its first checkpoint is started again), the data files, class indices, d against
    K, the mixup layer and, with ``check_memory``, the memory the run needs
    (:func:`ufm.nets.memory_estimate.training_memory`) against the memory available. A fresh
    run that fails (Ctrl-C included) before its first checkpoint removes what it wrote.
    """
    if force and resume:
        raise ValueError("--force starts the run again; it cannot be combined with --resume")
    with torch_threads(config.threads), blas_threads(config.threads):
        if resume:
            return _run(config, out_dir, resume, progress, check_memory)
        out = Path(out_dir)
        if force:
            _check_forced_folder(out)
            return _run(config, out, resume, progress, check_memory, force=True)
        with removed_on_failure(out, keep_if=lambda: (out / LAST_CHECKPOINT).is_file()):
            return _run(config, out, resume, progress, check_memory)


def _check_forced_folder(out: Path) -> None:
    """A folder that ``force`` may empty: none, an empty one, or one holding a training run."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not holds_training_run(out):
        raise ValueError(
            f"--force deletes only a training run, and {str(out)!r} holds no training run's "
            f"config.json; choose another --out"
        )
    check_writable(out)


def _run(config: TrainConfig, out_dir: str | Path, resume: bool, progress: bool,
         check_memory: bool, force: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    out = Path(out_dir)
    if not force:
        _check_output_folder(out, config, resume)
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, config.data_dir, config.train_subset)
    config.check_against_data(data.num_classes, data.input_shape)
    if check_memory:
        estimate = training_memory(config, data.input_shape, data.num_classes)
        check_memory_against(estimate, device, "the training run", WHAT_TO_LOWER)
    data = imbalanced_dataset(data, config.imbalance_ratio, config.minority_classes, config.seed)
    model = build_model(config, data.input_shape, data.num_classes).to(device)
    loss = get_loss(config.loss, **config.loss_params)
    class_pairs = config.pairing == "class" and config.alpha > 0
    mixup = Mixup(
        config.alpha,
        config.lam_per == "sample",
        config.same_class,
        config.mixup_layer,
        config.mixup_points,
        config.pairing,
        ClassPool(data.y_train, data.num_classes) if class_pairs else None,
    )
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    rng = np.random.default_rng(config.seed)
    if force and out.is_dir():
        shutil.rmtree(out)  # every check has passed: the previous run goes only now
    if not resume:
        _clear_outputs(out)
    prepare_run_dir(out)  # only now: a refused run leaves no folder behind

    state = TrainingState()
    if resume:
        state = load_checkpoint(out / LAST_CHECKPOINT, model, optimizer, scheduler, rng, device)
    else:
        write_json(
            out / "config.json",
            {
                "config": config_to_dict(config),
                "num_classes": data.num_classes,
                "input_shape": list(data.input_shape),
                "n_train": len(data.y_train),
                "n_test": len(data.y_test),
                "parameters": sum(p.numel() for p in model.parameters()),
                "device": str(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            },
        )

    def measure_and_write(epoch: int) -> dict[str, Any]:
        # before the last epoch a light measurement (no lam_H fits) unless asked otherwise
        measurement = measure(model, data, config, device, final=epoch == config.epochs)
        if epoch < config.epochs and not config.features_every_measurement:
            del measurement.arrays["mixed_features"]  # the final measurement keeps its own
        write_measurement(measurement_dir(out, epoch), measurement)
        return measurement.scalars

    def elapsed() -> float:
        return state.seconds + time.perf_counter() - started

    bar = tqdm(
        total=config.epochs,
        initial=state.epoch,
        disable=not progress,
        desc=f"{config.dataset}/{config.model} alpha={config.alpha:g}",
        unit="epoch",
    )
    with bar:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            learning_rate = optimizer.param_groups[0]["lr"]
            train_loss = train_epoch(
                model, data, loss, mixup, optimizer, rng, config.batch_size, device, config.augment
            )
            scheduler.step()
            test = calibration_measurement(
                model, data.x_test, data.y_test, config.n_bins, config.measure_batch_size, device
            )
            row: dict[str, Any] = {
                "epoch": epoch,
                "lr": learning_rate,
                "train_loss": train_loss,
                "test_accuracy": test["accuracy"],
                "test_nll": test["nll"],
                "test_ece": test["ece"],
            }
            if config.measure_every and epoch % config.measure_every == 0 and epoch < config.epochs:
                row.update(_scalar_columns(measure_and_write(epoch)))
            row["seconds"] = elapsed()
            state.history.append(row)
            state.epoch = epoch
            write_csv(out / "metrics.csv", state.history)
            if epoch == config.epochs or (
                config.checkpoint_every and epoch % config.checkpoint_every == 0
            ):
                state.seconds = elapsed()
                started = time.perf_counter()
                save_checkpoint(out / LAST_CHECKPOINT, model, optimizer, scheduler, rng, state)
                save_checkpoint(
                    out / "checkpoints" / f"epoch_{epoch:04d}.pt",
                    model,
                    optimizer,
                    scheduler,
                    rng,
                    state,
                )
            bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{test['accuracy']:.3f}")
            bar.update(1)

    final = measure_and_write(config.epochs)
    state.history[-1].update(_scalar_columns(final))
    write_csv(out / "metrics.csv", state.history)
    summary = {
        **final,
        **imbalance_summary(
            model, data, config.minority_classes, config.measure_batch_size, device,
            config.imbalance_ratio, config.pairing, config.alpha > 0,
        ),
        "epochs": config.epochs,
        "seconds": elapsed(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    write_json(out / SUMMARY, summary)
    return summary
