"""Two versions of ufm timed on the same solves, alternating, in one run.

A change to the solver is worth what it saves against the code before it on the same
machine at the same time: this machine's speed drifts by a third over a session, so times
taken in different runs do not compare. Each case is a ``ufm solve`` command line, run
``--pairs`` times in each source tree, in turn (candidate, baseline, candidate, ...), each
in a fresh process (imports and set-up included) with the tree on ``PYTHONPATH``. For each
run: wall-clock seconds, the child's peak resident memory (``os.wait4``), its exit code (1
for a solve that stalled, which still writes its summary), and from its ``summary.json`` the stop
reason, iterations, gradient norm and the method used. Per case:
the candidate's seconds over the baseline's, pair by pair, as median and range (a ratio
below 1 is a gain), and whether both trees reached the same stop and iteration count.

The baseline is a checkout of the earlier code, e.g. ``git worktree add /tmp/before REV``;
the candidate defaults to this repository. Run it on an idle machine (nothing else on its
cores): the ratio is only as good as the two trees' shared conditions.

    python scripts/bench_alternating.py --baseline /tmp/before --baseline-label REV \\
        --case "K100 L-BFGS=--K 100 --d 100 --pairs random --num-pairs 952 \\
                --classifier learned --tol 1e-8 --method newton" \\
        [--case NAME=ARGS ...] [--pairs 3] [--out results/bench_alternating.json] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ufm.cli import build_parser
from ufm.io import write_json

REPOSITORY = Path(__file__).resolve().parent.parent


def parse_case(text: str) -> tuple[str, list[str]]:
    """``NAME=ARGS`` into (name, the ``ufm solve`` arguments).

    Examples
    --------
    >>> parse_case("small=--K 4 --d 5")
    ('small', ['--K', '4', '--d', '5'])
    """
    name, sep, args = text.partition("=")
    if not sep or not name.strip() or not args.strip():
        raise argparse.ArgumentTypeError(f"a case is NAME=ARGS (ufm solve arguments), got {text!r}")
    words = shlex.split(args)
    if not words[0].startswith("-"):
        raise argparse.ArgumentTypeError(
            f"a case is NAME=ARGS with ARGS ufm solve options and no '=' in NAME, got {text!r}")
    for reserved in ("--out", "--resume", "--force", "--no-progress"):
        if any(word == reserved or word.startswith(reserved + "=") for word in words):
            raise argparse.ArgumentTypeError(
                f"case {name!r} gives {reserved}: the script sets it for every run")
    # the options are checked here, before any run, by this checkout's ufm solve parser
    # (a typo would otherwise end the script after the cases before it had run)
    parser = build_parser()
    parser.exit_on_error = False
    try:
        parser.parse_args(["solve", *words, "--out", "unused"])
    except (argparse.ArgumentError, SystemExit) as error:
        raise argparse.ArgumentTypeError(f"case {name!r}: ufm solve refuses {args!r}") from error
    return name.strip(), words


def source_tree(text: str) -> Path:
    """A directory holding the ``ufm`` package to time."""
    path = Path(text).resolve()
    if not (path / "ufm" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} holds no ufm package (no ufm/__init__.py)")
    return path


def timed_solve(tree: Path, args: list[str], scratch: Path) -> dict:
    """One ``ufm solve`` in a fresh process with ``tree`` first on the path: seconds, peak
    memory and the summary's figures. A run that fails raises, with its output's tail."""
    out = scratch / "run"
    command = [sys.executable, "-m", "ufm.cli", "solve", *args, "--out", str(out), "--force",
               "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(tree))
    log = scratch / "log.txt"
    with open(log, "w") as stream:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=scratch, env=env, stdout=stream,
                                 stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
    exit_code = child.returncode = os.waitstatus_to_exitcode(status)  # reaped here
    summary_file = out / "summary.json"
    # a stalled solve exits 1 and still writes its summary
    if not summary_file.is_file():
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{shlex.join(command)} in {tree} exited with {exit_code} and wrote "
                           f"no summary:\n{tail}")
    summary = json.loads(summary_file.read_text())
    summary_file.unlink()  # the next run must write its own
    return {
        "exit_code": exit_code,
        "seconds": seconds,
        # ru_maxrss is in KiB on Linux
        "peak_mb": usage.ru_maxrss / 1024,
        "stop_reason": summary["stop_reason"],
        "iterations": summary["iterations"],
        "grad_norm": summary["grad_norm"],
        "method_used": summary.get("method_used"),
        "loss": summary.get("loss"),
        # a learned classifier's certificate (ufm.solver.optimality); absent before it
        "optimality_gap_bound": summary.get("optimality_gap_bound"),
        "rank_W": summary.get("rank_W"),
    }


def compare_case(name: str, args: list[str], candidate: Path, baseline: Path, pairs: int,
                 scratch: Path) -> dict:
    """``pairs`` alternating runs of the case in each tree, and their ratios."""
    runs = {"candidate": [], "baseline": []}
    for pair in range(pairs):
        for role, tree in (("candidate", candidate), ("baseline", baseline)):
            runs[role].append(timed_solve(tree, args, scratch))
            row = runs[role][-1]
            print(f"  {name} pair {pair + 1}/{pairs} {role}: {row['seconds']:.1f} s, "
                  f"{row['iterations']} iterations, {row['stop_reason']}", flush=True)
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs["candidate"], runs["baseline"])]
    same = {(r["stop_reason"], r["iterations"]) for r in runs["candidate"] + runs["baseline"]}
    return {
        "name": name,
        "args": shlex.join(args),
        "runs": runs,
        "ratio": ratios,
        "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "peak_mb_median": {role: statistics.median(r["peak_mb"] for r in rows)
                           for role, rows in runs.items()},
        "seconds_median": {role: statistics.median(r["seconds"] for r in rows)
                           for role, rows in runs.items()},
        "same_stop_and_iterations": len(same) == 1,
    }


def table(cases: list[dict]) -> str:
    """The cases as a text table: median seconds, ratio, its range, iterations and peak
    memory (candidate / baseline)."""
    header = (f"{'case':<28} {'cand. s':>8} {'base s':>8} {'ratio':>6} {'range':>13} "
              f"{'its c/b':>9} {'peak MB c/b':>13}")
    lines = [header]
    for case in cases:
        seconds, peak = case["seconds_median"], case["peak_mb_median"]
        low, high = case["ratio_range"]
        spread = f"{low:.3f}-{high:.3f}"
        iterations = "/".join(str(case["runs"][role][0]["iterations"])
                              for role in ("candidate", "baseline"))
        memory = f"{peak['candidate']:.0f}/{peak['baseline']:.0f}"
        lines.append(f"{case['name']:<28} {seconds['candidate']:>8.1f} {seconds['baseline']:>8.1f} "
                     f"{case['ratio_median']:>6.3f} {spread:>13} {iterations:>9} {memory:>13}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=source_tree, required=True,
                        help="source tree of the code to compare against (a git worktree)")
    parser.add_argument("--baseline-label", default=None,
                        help="what the baseline is, for the record (a commit, say)")
    parser.add_argument("--candidate", type=source_tree, default=REPOSITORY,
                        help="source tree of the code timed (default: this repository)")
    parser.add_argument("--candidate-label", default=None)
    parser.add_argument("--case", type=parse_case, action="append", required=True,
                        help="NAME=ARGS: ufm solve arguments (repeatable)")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs per case")
    parser.add_argument("--out", default="results/bench_alternating.json")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not args.force:
        parser.error(f"--out {args.out} exists (another run's record): give --force to replace it")
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1, got {args.pairs}")
    names = [name for name, _ in args.case]
    if len(set(names)) != len(names):
        parser.error(f"case names must differ, got {names}")
    if args.candidate == args.baseline:
        parser.error(f"--candidate and --baseline are the same tree ({args.candidate})")
    cases = []
    with tempfile.TemporaryDirectory(prefix="ufm-alternating-") as scratch:
        for name, solve_args in args.case:
            cases.append(compare_case(name, solve_args, args.candidate, args.baseline,
                                      args.pairs, Path(scratch)))
    print(table(cases))
    record = {
        "command": "python scripts/bench_alternating.py " + shlex.join(argv or sys.argv[1:]),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "candidate": args.candidate_label or str(args.candidate),
        "baseline": args.baseline_label or str(args.baseline),
        "pairs": args.pairs,
        "cases": cases,
    }
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
