"""The outer methods of a learned classifier compared by their work, not their seconds.

L-BFGS (method ``"newton"``, :mod:`ufm.solver.newton`) against trust-region Newton-CG with
exact reduced Hessian products (``"newton_cg"``, :mod:`ufm.solver.newton_cg`), each to
gradient norm 1e-8 (float64, ``mixed_precision`` off, lam_H = lam_W = 5e-3, cross-entropy,
21 lam values), on: K = d = 50 and K = d = 100 with random pairs at round(9.524 K) pairs of
classes (the density of ``bench_scaling.py``'s K = d = 1000 problem), and K = 20, d = 32 with
all K^2 pairs. Wall-clock time depends on whatever else runs on the machine; these counts
do not:

* ``outer``: outer iterations (accepted steps);
* ``evals``: feature solves to tolerance, each the gradient of the reduced function at one
  classifier (L-BFGS: one per line-search trial; Newton-CG: one per trust-region trial);
* ``passes``: the feature solves' Newton passes, each counted as 1 however few samples it
  still had to step (a pass that finds every sample done counts too: it evaluates them all);
* ``visits``: the rows those passes visited, over the number of rows (the passes weighted by
  the share of rows each touched: what the time follows, since converged rows are skipped;
  a row is a sample, or a group of samples with one soft target,
  ``ufm/solver/sample_groups.py``);
* ``hvp``: reduced Hessian-vector products, i.e. outer CG steps, each one pass over every
  sample or over a subsample (``"newton_gram"``'s first steps; its per-sample Newton systems
  solved by PCG; ``inner cg`` sums their CG steps);
* ``total``: ``visits`` plus the products' passes (a product on a subsample counts its
  share of the samples, ``hvp_passes``), the sample passes of the run, and ``ratio``: that over
  L-BFGS's on the same problem, the predicted time ratio (an HVP pass costs about a Newton
  pass: per sample, one set of loss terms and a preconditioned CG solve);
* ``to 1e-4`` ...: the total at the first iterate with gradient norm at most that level
  (so a run stopped by ``--time-limit`` still compares where it got).

Newton-CG runs with Nocedal & Wright's forcing min(0.5, sqrt|g|) (the default), with a
constant forcing 0.1 (CG stopped early: fewer HVPs per step, more steps), with the
diagonal preconditioner (``"diagonal"`` of ``ufm.solver.newton_cg.PRECONDITIONERS``), and as
method ``"newton_gram"``, preconditioned by the Gram-entry metric
(:mod:`ufm.solver.gram_preconditioner`) with Hessian products as accurate as its conjugate
gradients' stopping residual asks (the preconditioners' curvature sums, one pass per step,
are counted in ``visits``).
``s`` is each solve's wall-clock time and ``s ratio`` that over L-BFGS's, measured in the
same run (so only comparable on a machine whose load did not change during it).

    python scripts/bench_outer.py [--out results/bench_outer.json] [--quick] [--time-limit 110]
        [--sizes 50 100] [--methods lbfgs newton_cg ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

import torch

from ufm.io import write_json
from ufm.solver.checkpoint import Checkpoints
from ufm.solver.newton_cg import NewtonCG
from ufm.solver.problem import UFMConfig, build_problem
from ufm.solver.run import _Run

PAIR_DENSITY = 9.524  # pairs of classes per class, as bench_scaling.py
# gradient levels at which the runs' total passes are compared as well
LEVELS = (1e-4, 1e-6, 1e-8)
# (label, method, forcing_max, forcing_power, preconditioner: None keeps the method's own)
METHODS = (("lbfgs", "newton", None, None, None),
           ("newton_cg", "newton_cg", 0.5, 0.5, None),
           ("newton_cg eta=0.1", "newton_cg", 0.1, 0.0, None),
           ("newton_cg diagonal", "newton_cg", 0.5, 0.5, "diagonal"),
           ("newton_gram", "newton_gram", None, None, None))


def problems(sizes) -> list[tuple[str, dict]]:
    rows = [(f"K=d={K}, {round(PAIR_DENSITY * K)} random pairs",
             dict(K=K, d=K, pairs="random", num_pairs=round(PAIR_DENSITY * K))) for K in sizes]
    rows.append(("K=20, d=32, all pairs", dict(K=20, d=32)))
    return rows


def run_one(fields: dict, method: str, forcing_max, forcing_power, preconditioner: str | None,
            time_limit: float) -> dict:
    """Solve once; the counts of the method's work (see the module docstring)."""
    config = UFMConfig(**fields, classifier="learned", tol=1e-8, mixed_precision=False,
                       lam_H=5e-3, lam_W=5e-3, method=method, time_limit=time_limit)
    saved = NewtonCG.forcing_max, NewtonCG.forcing_power, NewtonCG.preconditioner
    if forcing_max is not None:
        NewtonCG.forcing_max, NewtonCG.forcing_power = forcing_max, forcing_power
    if preconditioner is not None:
        NewtonCG.preconditioner = preconditioner
    try:
        run = _Run(build_problem(config), False, Checkpoints(None, 60.0))
        trace = _trace(run)
        began = time.perf_counter()
        result = run.execute()
        seconds = time.perf_counter() - began
    finally:
        NewtonCG.forcing_max, NewtonCG.forcing_power, NewtonCG.preconditioner = saved
    work, n, rows = run.method.work, result.summary["n"], run.method.feature_solver.n
    # a preconditioner's curvature sums are one pass each; a product on a subsample counts
    # the share of the rows it visited
    visits = work["sample_visits"] / rows + work["preconditioner_passes"]
    hvp_passes = work["hessian_visits"] / rows
    return {"n": n, "seconds": seconds, "stop_reason": result.summary["stop_reason"],
            "grad_norm": result.summary["grad_norm"], "loss": result.summary["loss"],
            "outer": result.summary["iterations"], "evals": work["evaluations"],
            "passes": work["feature_passes"], "visits": visits,
            "preconditioner_passes": work["preconditioner_passes"],
            "hvp": work["hessian_products"], "inner_cg": work["hessian_cg"],
            "hvp_passes": hvp_passes, "total": visits + hvp_passes,
            "passes_plus_hvp": work["feature_passes"] + hvp_passes,
            "gram": (result.W @ result.W.T), "trace": trace,
            "total_to": {f"{level:.0e}": _total_to(trace, level) for level in LEVELS}}


def _trace(run) -> list[tuple[float, float]]:
    """(gradient norm, total sample passes so far) at every measured iterate, filled in as
    the run goes (so that a run stopped by its time limit still compares at the levels it
    reached)."""
    trace: list[tuple[float, float]] = []
    method, measure = run.method, run.method.measure
    rows = method.feature_solver.n  # samples, or groups of samples with one soft target

    def measured():
        current = measure()
        work = method.work
        trace.append((current.grad_norm, work["sample_visits"] / rows
                      + work["preconditioner_passes"] + work["hessian_visits"] / rows))
        return current

    method.measure = measured
    return trace


def _total_to(trace, level: float) -> float | None:
    """The total passes at the first iterate with gradient norm <= ``level``, if any."""
    return next((total for grad, total in trace if grad <= level), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench_outer.json")
    parser.add_argument("--quick", action="store_true", help="K = 20 random pairs instead of 50 and 100")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="K = d of the random-pair problems (default 50 100)")
    parser.add_argument("--methods", nargs="+", default=None, choices=[m[0] for m in METHODS],
                        help="which methods (default: all; the ratio is to the first)")
    parser.add_argument("--time-limit", type=float, default=110.0, help="seconds per solve at most")
    args = parser.parse_args()
    report: dict = {"command": shlex.join(["python", "scripts/bench_outer.py", *sys.argv[1:]]),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "cores": os.cpu_count(), "problems": []}
    header = (f"{'method':18s} {'stop':>9s} {'grad':>8s} {'outer':>5s} {'evals':>5s} {'passes':>6s} "
              f"{'visits':>7s} {'hvp':>5s} {'inner cg':>8s} {'total':>7s} {'ratio':>6s} {'s':>6s} {'s ratio':>7s}  "
              + " ".join(f"{'to ' + format(level, '.0e'):>9s}" for level in LEVELS))
    sizes = args.sizes or ((20,) if args.quick else (50, 100))
    methods = [m for m in METHODS if args.methods is None or m[0] in args.methods]
    for title, fields in problems(sizes):
        print(f"\n{title}\n{header}", flush=True)
        rows = []
        for label, method, forcing_max, forcing_power, preconditioner in methods:
            row = run_one(fields, method, forcing_max, forcing_power, preconditioner, args.time_limit)
            gram = row.pop("gram")
            if rows:
                row["ratio"] = row["total"] / rows[0]["total"]
                row["seconds_ratio"] = row["seconds"] / rows[0]["seconds"]
                row["loss_difference"] = abs(row["loss"] - rows[0]["loss"])
                row["gram_difference"] = float((gram - rows[0]["gram_matrix"]).abs().max())
            else:
                row["ratio"] = row["seconds_ratio"] = 1.0
                row["gram_matrix"] = gram
            row["method"] = label
            rows.append(row)
            print(f"{label:18s} {row['stop_reason']:>9s} {row['grad_norm']:8.1e} {row['outer']:5d} "
                  f"{row['evals']:5d} {row['passes']:6d} {row['visits']:7.1f} {row['hvp']:5d} "
                  f"{row['inner_cg']:8d} {row['total']:7.1f} {row['ratio']:6.2f} {row['seconds']:6.1f} "
                  f"{row['seconds_ratio']:7.2f}  "
                  + " ".join(f"{'-' if t is None else format(t, '.1f'):>9s}"
                             for t in row["total_to"].values()), flush=True)
        rows[0].pop("gram_matrix")
        report["problems"].append({"title": title, "fields": fields, "rows": rows})
        write_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
