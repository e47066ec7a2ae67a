"""``ufm train``: train a real network with mixup and measure its geometry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import config_from_dict, overrides_from_args
from ..io import read_json
from ..nets import TrainConfig, run_training
from ..nets.config import TRAIN_PRESETS, TrainPreset
from ..nets.run import LAST_CHECKPOINT, holds_training_run
from . import add_job_parser, job_config, summary_text

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
    "amplification_error",
    "amplification_systematic",
    "amplification_se",
    "amplification_se_cells",
    "amplification_theory",
    "amplification_exact_W",
    "curve_fitted_lam_H",
    "curve_fitted_lam_H_status",
    "ce_chi2_per_dof",
    "squared_error_chi2_per_dof",
    "fitted_lam_H",
    "seconds",
)
MIXTURE_KEYS = (
    "mixture3_amplification",
    "mixture3_amplification_theory",
    "mixture3_amplification_theory_pair_lam_H",
    "mixture3_fitted_lam_H",
)


def register(subparsers) -> None:
    add_job_parser(
        subparsers,
        "train",
        TrainConfig,
        run,
        _own_arguments,
        help="train a network with mixup; measure neural collapse, calibration and UFM agreement",
        description="Train an MLP, CNN, ResNet-18, wide ResNet (wrn) or Vision Transformer "
        "(vit) with (manifold) mixup on digits, mnist1d, mnist, fashion_mnist, cifar10 or "
        "cifar100 (never downloaded; --augment crops and flips the 32x32 CIFAR images), and "
        "write config.json, metrics.csv, checkpoints, measurements and summary.json to --out.",
    )


def _own_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder of the run")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run in --out from its last checkpoint (with no "
        "configuration given, the run's own)",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete the run already in --out (a folder with a training run's config.json) "
        "and start again",
    )
    parser.add_argument(
        "--ignore-memory-check",
        action="store_true",
        help="train even if the estimated memory of the run exceeds the memory available",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(TRAIN_PRESETS),
        help="start from a named setting; flags override it, it overrides --config: 'paper' "
        "is close to the terminal-phase regime of Fisher et al. 2024: WRN-40-10 (ViT-B, depth "
        "12 and width 768, with --model vit), SGD, lr 0.1, momentum 0.9, weight decay 5e-4, "
        "batch 128, alpha 1, 300 epochs, cosine schedule, measured every 25 epochs, and "
        "--augment on cifar10 and cifar100; it needs --dataset fashion_mnist, cifar10 or "
        "cifar100 with --data-dir",
    )


IMBALANCE_KEYS = ("majority_test_accuracy", "minority_test_accuracy", "minority_cosine",
                  "label_mass_ratio")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's configuration: the ``--config`` file, then the preset, then the flags.

    A preset's fields may depend on the data set and model (:class:`TrainPreset`), which the
    file or the flags choose: a first pass with the preset's general fields learns them, the
    second applies the preset's fields for them. Both are checked before any data is read.
    ``--resume`` with no configuration given takes the configuration stored in ``--out``.
    """
    configured = args.config or args.preset or overrides_from_args(args, TrainConfig)
    if args.resume and not configured and holds_training_run(Path(args.out)):
        return config_from_dict(TrainConfig, read_json(Path(args.out) / "config.json")["config"])
    if not args.preset:
        return job_config(args, TrainConfig)
    preset: TrainPreset = TRAIN_PRESETS[args.preset]
    chosen = job_config(args, TrainConfig, preset.fields_for(args.preset, None, None))
    fields = preset.fields_for(args.preset, chosen.dataset, chosen.model)
    return job_config(args, TrainConfig, fields)


def run(args: argparse.Namespace) -> int:
    config = train_config(args)
    try:
        summary = run_training(config, args.out, resume=args.resume, progress=args.progress,
                               check_memory=not args.ignore_memory_check, force=args.force)
    except KeyboardInterrupt:
        print(_interrupted_message(Path(args.out)), file=sys.stderr)
        return 130
    keys = SUMMARY_KEYS + tuple(key for key in MIXTURE_KEYS if key in summary)
    if config.minority_classes:
        keys += IMBALANCE_KEYS
    keys = tuple(key for key in keys if key in summary)
    width = max(map(len, keys + ("better_fit",)))
    for key in keys:
        print(f"{key:<{width}}  {summary_text(summary[key])}")
    print(f"{'better_fit':<{width}}  {summary['better_fit']}")
    print(f"wrote {args.out}/summary.json")
    return 0


def _interrupted_message(out: Path) -> str:
    """What an interrupted run left: the command that continues it, or that nothing was kept."""
    checkpoint = out / LAST_CHECKPOINT
    if checkpoint.is_file():
        return (f"ufm train: interrupted; the last checkpoint is {checkpoint}. "
                f"Continue with: ufm train --resume --out {out}")
    return ("ufm train: interrupted before the first checkpoint (checkpoint_every = 0 saves only "
            "the last epoch), so nothing was kept; run the same command again to start over")
