"""``ufm solve``: optimise the mixup UFM and write the result folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import config_to_dict, load_config, overrides_from_args
from ..devices import resolve_device
from ..io import check_run_config, prepare_run_dir, read_json, write_json
from ..solver import CHECKPOINT, UFMConfig, solve
from ..solver.execution import CLI_EXECUTION
from . import add_job_parser


# how a solve runs, not what it computes: rerunning into the same folder may change these
EXECUTION_FIELDS = ("device", "parallel", "chunk_size")
# stop reasons after which the checkpoint has nothing left to continue
FINISHED = ("converged", "rounding", "stalled", "diverged")


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
        "--resume continue after Ctrl-C or a time limit.",
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
    parser.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                        help="seconds between checkpoints")


def run(args: argparse.Namespace) -> int:
    overrides = overrides_from_args(args, UFMConfig)
    if args.resume:
        out = Path(args.resume)
        if not (out / CHECKPOINT).is_file() or not (out / "config.json").is_file():
            raise ValueError(f"--resume {str(out)!r}: no checkpoint.pt and config.json there")
        if args.config:
            raise ValueError("--resume takes the configuration of the run; do not give --config")
        stored = read_json(out / "config.json")
        allowed = {"max_iters", "time_limit", "device"}
        changed = sorted(set(overrides) - allowed)
        if changed:
            raise ValueError(
                f"--resume can only change {', '.join(sorted(allowed))}; got {', '.join(changed)}"
            )
        stored.update(overrides)
        config = load_config(UFMConfig, None, stored)
    else:
        if not args.out:
            raise ValueError("--out DIR is required (or --resume DIR)")
        config = load_config(UFMConfig, args.config, overrides)
        resolve_device(config.device)  # an unavailable device is refused before any output
        check_run_config(args.out, config_to_dict(config), "a solve",
                         ignore=EXECUTION_FIELDS, force=args.force)
        out = prepare_run_dir(args.out)
        (out / "summary.json").unlink(missing_ok=True)
        (out / CHECKPOINT).unlink(missing_ok=True)
    write_json(out / "config.json", config_to_dict(config))
    result = solve(
        config,
        progress=not args.no_progress,
        checkpoint_dir=out,
        resume=bool(args.resume),
        checkpoint_every=args.checkpoint_every,
        execution=CLI_EXECUTION,
    )
    summary = result.summary
    if result.stop_reason == "interrupted":
        print(f"interrupted after {summary['iterations']} iterations; checkpoint in {out}. "
              f"Continue with: ufm solve --resume {out}", file=sys.stderr)
        return 130
    result.save(out)
    if result.stop_reason in FINISHED and not args.keep_checkpoint:
        (out / CHECKPOINT).unlink(missing_ok=True)  # the results hold everything it had
    print(_report(result))
    print(f"wrote {out}")
    return 0 if result.stop_reason in ("converged", "rounding", "max_iters", "time_limit") else 1


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
