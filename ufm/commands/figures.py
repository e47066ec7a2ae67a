"""``ufm figures``: redraw the figures of a reproduction, a sweep or one measured network from
its result files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import check_writable
from ..plots import FIGURES, RUN_FIGURES, SWEEP_FIGURES, draw_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "figures",
        help="redraw the figures of a reproduction, a sweep, a training run or a measurement "
        "folder from its result files",
        description="Redraw figures (PNG and PDF) from result files, without recomputing the "
        "results. The folder is recognised by what it holds. A reproduction (ufm reproduce: "
        "config.json and its stage folders): "
        f"{', '.join(FIGURES)}, and <sweep>_<figure> for each sweep of its sweep stage. A "
        f"sweep folder (ufm sweep: sweep.json; those that suit its grid): "
        f"{', '.join(SWEEP_FIGURES)}. A training run (ufm train: config.json and "
        "measurements/epoch_NNNN/, the last epoch is drawn) or a measurement folder "
        "(summary.json or scalars.json beside coefficients_vs_lam.csv or mixed_features.npz): "
        f"{', '.join(RUN_FIGURES)}, each when its file (mixed_features.npz, "
        "coefficients_vs_lam.csv, reliability.csv) is there; its three-class figure draws "
        "the exact UFM optimum for the network's own classifier (theory_triple.npz, written "
        "by the measurement) beside the features.",
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="DIR",
        help="a folder written by ufm reproduce, by ufm sweep (one holding sweep.json), by ufm "
        "train, or a measurement folder (summary.json beside the measurement files)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="draw only these figures (default: all that apply)",
    )
    parser.add_argument("--out", help="folder for the figures (default: DIR/figures)")
    parser.add_argument(
        "--dpi",
        type=int,
        default=150,
        help="resolution of the PNG files in dots per inch, 30 to 600 (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # an output folder that cannot be written is refused before any figure is drawn
    check_writable(args.out or Path(args.source) / "figures")
    written = draw_from(args.source, args.only, out=args.out, dpi=args.dpi, log=print)
    print(f"wrote {len(written)} files")
    return 0
