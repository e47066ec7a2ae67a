"""``ufm solve``: optimise the mixup UFM and write the result folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import load_config, overrides_from_args
from ..solver import UFMConfig, run_to_folder
from ..solver.execution import CLI_EXECUTION
from ..solver.run_folder import CHECKPOINT_EVERY, RESUME_FIELDS, check_resumable
from . import add_job_parser

# stop reasons after which ``ufm solve`` exits 0 (the others, stalled and diverged, exit 1)
SUCCESS_STOPS = ("converged", "rounding", "max_iters", "time_limit")


def register(subparsers) -> None:
    add_job_parser(
        subparsers,
        "solve",
        UFMConfig,
        run,
        _own_arguments,
        help="optimise free features and a fixed or learned classifier under the mixup loss",
        description="Solve the mixup unconstrained-features model. Writes config.json, "
        "arrays.npz, history.csv and (last) summary.json into --out; a checkpoint.pt lets "
        "--resume continue after Ctrl-C or a time limit. The folder (writable, free or "
        "holding the same configuration) and the memory the solve needs are checked first.",
    )


def _own_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="result folder (required unless --resume is given)")
    parser.add_argument(
        "--resume", metavar="DIR", help="continue the run in DIR from its checkpoint"
    )
    parser.add_argument("--force", action="store_true",
                        help="overwrite --out even if it holds a run of another configuration")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="keep checkpoint.pt when the run finishes (it is always kept when "
                        "the run is interrupted or stops at a limit, for --resume)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--checkpoint-every", type=float, default=CHECKPOINT_EVERY,
                        metavar="SECONDS", help="seconds between checkpoints")
    parser.add_argument("--ignore-memory-check", action="store_true",
                        help="run even if the estimated memory of the solve exceeds the memory "
                        "available")


def run(args: argparse.Namespace) -> int:
    overrides = overrides_from_args(args, UFMConfig)
    if args.resume:
        out = Path(args.resume)
        stored = check_resumable(out)
        if args.config:
            raise ValueError("--resume takes the configuration of the run; do not give --config")
        changed = sorted(set(overrides) - set(RESUME_FIELDS))
        if changed:
            raise ValueError(
                f"--resume can only change {', '.join(sorted(RESUME_FIELDS))}; got {', '.join(changed)}"
            )
        config = load_config(UFMConfig, None, {**stored, **overrides})
    else:
        if not args.out:
            raise ValueError("--out DIR is required (or --resume DIR)")
        out = Path(args.out)
        config = load_config(UFMConfig, args.config, overrides)
    result = run_to_folder(
        config,
        out,
        resume=bool(args.resume),
        force=args.force,
        progress=not args.no_progress,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoint=args.keep_checkpoint,
        check_memory=not args.ignore_memory_check,
        execution=CLI_EXECUTION,
    )
    summary = result.summary
    if result.stop_reason == "interrupted":
        print(f"interrupted after {summary['iterations']} iterations; checkpoint in {out}. "
              f"Continue with: ufm solve --resume {out}", file=sys.stderr)
        return 130
    print(_report(result))
    print(f"wrote {out}")
    return 0 if result.stop_reason in SUCCESS_STOPS else 1


def _report(result) -> str:
    s = result.summary
    lines = [
        f"stop: {s['stop_reason']} after {s['iterations']} iterations, {s['seconds']:.2f} s "
        f"on {s['device']} ({s['threads']} threads), n = {s['n']:,} samples",
        f"loss {s['loss']:.15g}   gradient norm {s['grad_norm']:.3e}   "
        f"ETF distance of W {s['etf_distance_W']:.3e}",
    ]
    if s.get("theory_distance") is not None:
        lines.append(f"relative distance to the exact theory: {s['theory_distance']:.3e}")
    if s.get("theory_distance_learned_W") is not None:
        lines.append(
            f"relative distance to the exact theory for the learned W: "
            f"{s['theory_distance_learned_W']:.3e}"
        )
    if s["stop_reason"] == "rounding":
        lines.append(f"the gradient norm is at the rounding level of {result.config.dtype}, above "
                     f"tol = {result.config.tol:g}: use float64 or a larger --tol")
    if s["stop_reason"] in ("max_iters", "time_limit"):
        lines.append("not converged: raise --max-iters/--time-limit and continue with --resume")
    return "\n".join(lines)
