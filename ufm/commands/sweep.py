"""``ufm sweep``: run ``ufm solve`` or ``ufm train`` over a grid of configurations."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import HelpFormatter


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        formatter_class=HelpFormatter,
        help="run a solve or train job over the Cartesian product of a grid (submitit)",
        description="Run one job over a grid: [base] holds the fields of one job (job = "
        "'solve' or 'train'), [grid] field = [values], [executor] the SLURM settings. Each "
        "point is a run folder under DIR/points/; DIR/sweep.csv and sweep.json list every "
        "point with its status and summary numbers. [base] seeds = N (the seeds 0..N-1) or "
        "a list of seeds runs every configuration once per seed (default: once, with "
        "[base]'s seed); DIR/sweep_mean.csv then gives per configuration the seed mean, "
        "standard deviation, standard error and count of every summary number. A second "
        "call reuses complete points and reruns failed or interrupted ones.",
    )
    parser.add_argument("--config", required=True, metavar="FILE.toml", help="the sweep file")
    parser.add_argument("--out", required=True, metavar="DIR", help="the sweep folder")
    parser.add_argument("--executor", default="local",
                        help="local (processes on this machine), slurm (a job array) or debug "
                        "(in this process, one point after the other)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="points that run at once (on slurm: the array parallelism, unless "
                        "[executor] array_parallelism says otherwise)")
    parser.add_argument("--force", action="store_true",
                        help="run into DIR even if it holds a sweep of another grid or base")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--ignore-memory-check", action="store_true",
                        help="run every point even if its estimated memory exceeds the memory "
                        "available where it runs (otherwise such a point fails at once)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..sweep import load_sweep, run_sweep
        from ..sweep.table import STATUSES

        spec = load_sweep(args.config)
        rows = run_sweep(spec, args.out, args.executor, args.jobs, force=args.force,
                         progress=not args.no_progress, sweep_text=Path(args.config).read_text(),
                         check_memory=not args.ignore_memory_check)
    except KeyboardInterrupt:  # the sweep has stopped its jobs and written its table
        print(f"ufm sweep: interrupted; resume with: {resume_command(args)}", file=sys.stderr)
        return 130
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    for row in rows:
        if row["status"] == "failed":
            print(f"failed: {row['point']}: {row['error']}")
    wrote = str(Path(args.out) / "sweep.csv")
    if spec.seeds is not None:
        configurations = len(rows) // len(spec.seeds)
        wrote += (f" and {Path(args.out) / 'sweep_mean.csv'} ({configurations} configurations "
                  f"x {len(spec.seeds)} seeds)")
    print(f"{', '.join(f'{counts[s]} {s}' for s in STATUSES)} of {len(rows)} points; wrote "
          f"{wrote}")
    return 0 if counts["done"] == len(rows) else 1


def resume_command(args: argparse.Namespace) -> str:
    """The ``ufm sweep`` call that resumes this one: the same call (``--force`` too: stopped
    before it wrote its ``config.json``, the sweep may still need it)."""
    words = ["ufm", "sweep", "--config", args.config, "--out", args.out,
             "--executor", args.executor, "--jobs", str(args.jobs)]
    if args.force:
        words.append("--force")
    if args.no_progress:
        words.append("--no-progress")
    return shlex.join(words)
