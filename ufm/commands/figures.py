"""``ufm figures``: redraw the figures of a reproduction from its result files."""

from __future__ import annotations

import argparse

from ..plots import FIGURES, draw_figures


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "figures",
        help="redraw the figures of a reproduction folder from its result files",
        description="Redraw figures (PNG and PDF) from the results written by ufm reproduce, "
        f"without recomputing anything. Figures: {', '.join(FIGURES)}.",
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="DIR",
        help="a folder written by ufm reproduce",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="draw only these figures (default: all)"
    )
    parser.add_argument("--out", help="folder for the figures (default: DIR/figures)")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of the PNG files")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    written = draw_figures(args.source, args.only, out=args.out, dpi=args.dpi, log=print)
    print(f"wrote {len(written)} files")
    return 0
