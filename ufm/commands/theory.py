"""``ufm theory``: print (and optionally write) the exact optimum over a lam grid."""

from __future__ import annotations

import argparse

from ..config import add_config_arguments, load_config, overrides_from_args
from ..theory.table import TheoryConfig, compute, format_table, write


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "theory",
        help="exact optimal features of the mixup UFM (simplex-ETF classifier) over a lam grid",
        description="Coefficients (a, b) of h = a w_c + b w_c', feature norms, logit margins "
        "and probabilities of the exact optimum, for different-class pairs over a lam grid "
        "and for same-class pairs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", help="TOML file with TheoryConfig fields")
    parser.add_argument("--out", help="folder for config.json, theory.csv, theory.json")
    add_config_arguments(parser, TheoryConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(TheoryConfig, args.config, overrides_from_args(args, TheoryConfig))
    table = compute(config)
    print(format_table(table))
    if args.out:
        out = write(table, config, args.out)
        print(f"\nwrote {out / 'config.json'}, {out / 'theory.csv'}, {out / 'theory.json'}")
    return 0
