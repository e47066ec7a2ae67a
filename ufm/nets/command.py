"""``ufm train``: train a real network with mixup and measure its geometry."""

from __future__ import annotations

import argparse

from ..config import add_config_arguments, load_config, overrides_from_args
from .config import TrainConfig
from .run import run_training

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
    "ufm_distance",
    "fitted_lam_H",
    "seconds",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a network with mixup; measure neural collapse, calibration and UFM agreement",
        description="Train an MLP, CNN or ResNet-18 with (manifold) mixup on digits, mnist1d, "
        "mnist, fashion_mnist or cifar10 (never downloaded), and write config.json, "
        "metrics.csv, checkpoints, measurements and summary.json to --out.",
    )
    parser.add_argument("--config", help="TOML file with TrainConfig fields")
    parser.add_argument("--out", required=True, help="output folder of the run")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run in --out from its last checkpoint",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    add_config_arguments(parser, TrainConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(TrainConfig, args.config, overrides_from_args(args, TrainConfig))
    summary = run_training(config, args.out, resume=args.resume, progress=args.progress)
    width = max(map(len, SUMMARY_KEYS))
    for key in SUMMARY_KEYS:
        print(f"{key:<{width}}  {summary[key]:.6g}")
    print(f"wrote {args.out}/summary.json")
    return 0
