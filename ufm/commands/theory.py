"""``ufm theory``: print (and optionally write) the exact optimum over a lam grid."""

from __future__ import annotations

import argparse

from ..config import config_to_dict
from ..io import check_run_config, removed_on_failure
from . import add_job_parser, job_config
from ..theory.table import TheoryConfig, compute, format_table, write

# the file of a theory folder that holds its results (written last)
RESULT_FILES = ("theory.json",)


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
        "and for same-class pairs. With --minority-classes k >= 1 instead: the exact optimum "
        "of a learned classifier when the last k classes have 1/--imbalance-ratio of the "
        "samples (mixup with sample pairing, mixup with class pairing, plain training), "
        "and the ratio at which the minority rows' cosine crosses 0.",
    )


def _own_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="folder for config.json, theory.csv, theory.json")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even if it holds another run or other files")


def run(args: argparse.Namespace) -> int:
    config = job_config(args, TheoryConfig)
    if args.out:
        # a folder that is not writable, or holds another run, is refused before the table
        check_run_config(args.out, config_to_dict(config), "a theory table",
                         results=RESULT_FILES, force=args.force)
    table = compute(config)
    print(format_table(table))
    if args.out:
        with removed_on_failure(args.out):
            out = write(table, config, args.out)
        print(f"\nwrote {out / 'config.json'}, {out / 'theory.csv'}, {out / 'theory.json'}")
    return 0
