"""``ufm reproduce``: theory, solver, networks, figures and report.md in one folder."""

from __future__ import annotations

import argparse
import sys

from ..plots import FIGURES
from ..reproduce import PRESETS, ReproduceConfig, reproduce
from . import add_job_parser, job_config


def register(subparsers) -> None:
    add_job_parser(
        subparsers,
        "reproduce",
        ReproduceConfig,
        run,
        _own_arguments,
        help="run the theory, the UFM solver and small networks; write every figure and report.md",
        description="Reproduce the theory figures of Fisher, Meng & Papyan (ICLR 2024) and what "
        "lies beyond them: exact theory, UFM solver runs, ERM and mixup networks with learned and "
        f"fixed-ETF classifiers, sweeps of learned-classifier solves, {len(FIGURES)} figures and "
        "the sweeps' phase figures (PNG and PDF) and report.md. Stages already complete "
        "in --out are reused; after an interruption, run the same command again to continue.",
    )


def _own_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder of the reproduction")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the quick preset (digits, an MLP, smaller problems and sweep grids, --seeds 1); "
        "its fields override the --config file, explicit field flags override both",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bars"
    )
    parser.add_argument(
        "--ignore-memory-check", action="store_true",
        help="run every solve, network and sweep point even where its memory estimate exceeds "
        "the memory available (by default such a run is refused before it allocates)",
    )


def run(args: argparse.Namespace) -> int:
    config = job_config(args, ReproduceConfig, PRESETS["quick"] if args.quick else None)
    try:
        reproduce(config, args.out, progress=args.progress,
                  check_memory=not args.ignore_memory_check)
    except KeyboardInterrupt:
        flag = " --quick" if args.quick else ""
        print(
            f"ufm reproduce: interrupted; run `ufm reproduce{flag} --out {args.out}` with the "
            "same options again to continue where it stopped",
            file=sys.stderr,
        )
        return 130
    print(f"wrote {args.out}/report.md")
    return 0
