"""``ufm theory``: print (and optionally write) the exact optimum over a lam grid."""

from __future__ import annotations

import argparse

from ..io import check_run_dir
from . import add_job_parser, job_config
from ..theory.table import TheoryConfig, compute, format_table, write


def register(subparsers) -> None:
    add_job_parser(
        subparsers,
        "theory",
        TheoryConfig,
        run,
        _own_arguments,
        help="exact optimal features of the mixup UFM (simplex-ETF classifier) over a lam grid",
        description="Coefficients (a, b) of h = a w_c + b w_c', feature norms, logit margins "
        "and probabilities of the exact optimum, for different-class pairs over a lam grid "
        "and for same-class pairs.",
    )


def _own_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="folder for config.json, theory.csv, theory.json")


def run(args: argparse.Namespace) -> int:
    config = job_config(args, TheoryConfig)
    if args.out:
        check_run_dir(args.out)  # a bad --out is refused before the table is computed
    table = compute(config)
    print(format_table(table))
    if args.out:
        out = write(table, config, args.out)
        print(f"\nwrote {out / 'config.json'}, {out / 'theory.csv'}, {out / 'theory.json'}")
    return 0
