"""``ufm compare``: hold a file of saved mixed features against the theory."""

from __future__ import annotations

import argparse

from ..config import add_loss_param_argument, parse_loss_params
from ..losses import LOSSES
from ..nets.feature_comparison import compare_features
from ..nets.features_file import OPTIONAL, REQUIRED, SCHEMA_VERSION
from . import HelpFormatter, summary_text

PRINTED = (
    "samples",
    "amplification",
    "amplification_error",
    "amplification_systematic",
    "amplification_se",
    "amplification_se_cells",
    "amplification_theory",
    "curve_fitted_lam_H",
    "curve_fitted_lam_H_status",
    "ce_chi2_per_dof",
    "squared_error_chi2_per_dof",
    "fitted_lam_H",
    "a_same",
    "nc1",
    "nc2_W",
    "nc3",
    "nc4",
    "test_accuracy",
    "ece",
    "nll",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        formatter_class=HelpFormatter,
        help="compare a file of saved mixed features (any network's) with the theory",
        description="Read a features file (.npz, schema version "
        f"{SCHEMA_VERSION}; required: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)}), "
        "compare its mixed features with the UFM optimum (cell means, amplification, "
        "coefficient curves, margins; NC metrics with clean_features, ECE with test_logits), "
        "print the key numbers and write a measurement folder to --out (summary.json, "
        "coefficients_vs_lam.csv, theory_vs_lam.csv, cells.npz, mixed_features.npz, "
        "reliability.csv). Lam may be on a grid or drawn per sample (then binned). "
        "Every ufm train measurement folder holds such a file (mixed_features.npz).",
    )
    parser.add_argument("--features", required=True, metavar="FILE", help="the .npz file")
    parser.add_argument("--out", help="a new folder for the results (nothing written if absent)")
    parser.add_argument(
        "--lam-bins", type=int, default=11,
        help="odd number of lam bins for lams drawn per sample (a grid is used as it is)",
    )  # fmt: skip
    parser.add_argument(
        "--loss", default="ce", choices=sorted(LOSSES), help="the training loss, for the theory"
    )
    add_loss_param_argument(parser)
    parser.add_argument(
        "--no-exact-classifier", dest="exact_classifier", action="store_false",
        help="skip the exact UFM optimum for the file's own classifier (a solve over K^2 class "
        "pairs)",
    )  # fmt: skip
    parser.add_argument("--n-bins", type=int, default=15, help="bins of the ECE")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    measurement = compare_features(
        args.features, out=args.out, lam_bins=args.lam_bins, loss=args.loss,
        loss_params=parse_loss_params(args.loss_params or []),
        exact_classifier=args.exact_classifier, n_bins=args.n_bins,
    )  # fmt: skip
    summary = measurement.summary
    keys = [key for key in PRINTED if key in summary]
    width = max(map(len, [*keys, "better_fit", "lam_grouping", "global_mean_source"]))
    for key in keys:
        print(f"{key:<{width}}  {summary_text(summary[key])}")
    for key in ("better_fit", "lam_grouping", "global_mean_source"):
        print(f"{key:<{width}}  {summary[key]}")
    if args.out:
        print(f"wrote {args.out}/summary.json")
    return 0
