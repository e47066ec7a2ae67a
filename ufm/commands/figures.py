"""``ufm figures``: redraw the figures of a reproduction or of a sweep from its result files."""

from __future__ import annotations

import argparse

from ..plots import FIGURES, SWEEP_FIGURES, draw_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "figures",
        help="redraw the figures of a reproduction or sweep folder from its result files",
        description="Redraw figures (PNG and PDF) from the results written by ufm reproduce or "
        "ufm sweep, without recomputing anything. A reproduction's figures: "
        f"{', '.join(FIGURES)}, and <sweep>_<figure> for each sweep of its sweep stage. A "
        f"sweep folder's (those that suit its grid): {', '.join(SWEEP_FIGURES)}.",
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="DIR",
        help="a folder written by ufm reproduce or by ufm sweep (one holding sweep.json)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME",
        help="draw only these figures (default: all that apply)",
    )
    parser.add_argument("--out", help="folder for the figures (default: DIR/figures)")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of the PNG files")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    written = draw_from(args.source, args.only, out=args.out, dpi=args.dpi, log=print)
    print(f"wrote {len(written)} files")
    return 0
