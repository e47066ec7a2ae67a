"""How the Newton solver's cost grows with the problem: time per iteration and peak memory.

Every point runs in its own Python process (fixed simplex-ETF classifier, cross-entropy,
float64, 21 lam values, the default chunks) and reports:

* seconds per iteration (the solve's time, set-up and the final evaluation included, over
  its iterations, 2 of them; every iteration is one Newton pass over all samples plus the
  theory distance);
* the peak resident memory above the process's size before the solve, beside the memory
  the run has to hold whatever the chunking: the coordinates X (n x r), the samples
  (c, c', lam) and the features H = X V^T formed at the end (n x d). The rest, the
  "excess", is what the chunks cost; it should not grow with n.

Sections (``--sections``, default all): n from 10^4 to 10^7 at K = 10, d = 32 (all K^2 pairs, ``samples_per_pair`` scaled);
K in (10, 100, 1000) at d = K and 210,000 random-pair samples (10,000 pairs); d in (16, 64, 256, 1024) at
K = 10. Then the large problem: K = d = 1000, 200,004 random-pair samples, fixed
ETF to gradient norm 1e-10 (goal: within 2 minutes on 2 cores), the same for 2 iterations in
the SVD frame (``coordinates="row_space"``, the computation before the logit coordinates of
:mod:`ufm.solver.frames`: the baseline), and the learned classifier at that size under a
time limit. Section ``learned_K`` asks why that one is slow: the learned classifier to gradient
1e-8 on random pairs at the same density (9.52 K pairs of classes, each class in about 19
of them) for K = d in (50, 100, 200) (``--learned-sizes``), and on all pairs at the medium
size (K = 100, d = 128, 210,000 samples), counting the outer iterations, with each method of
``--learned-methods`` (default L-BFGS, ``"newton"``, and ``"newton_gram"``) in the same run
(so does ``large_learned``), and with ``--joint-baseline`` what a
user would write instead: L-BFGS on (H, W) jointly by autograd in float64 (its
``seconds_to_tol``, or None within ``--joint-seconds``). Prints tables and writes JSON (after every section, so a run stopped early keeps what it
measured).

    python scripts/bench_scaling.py [--out results/bench_scaling.json] [--quick]
        [--learned-seconds 300] [--sections K large_fixed ...]

The JSON records the command line and the time limit. docs/performance.md quotes several runs
of this script, each a file in ``benchmarks/`` (``python scripts/make_performance_page.py
--commands`` lists them): rerun one with ``--out benchmarks/NAME.json``, then
``python scripts/make_performance_page.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_solver import _rss_mb, command_line  # noqa: E402

from ufm.io import write_json  # noqa: E402
from ufm.solver import CLI_EXECUTION, solve  # noqa: E402
from ufm.solver._allocator import keep_freed_memory  # noqa: E402
from ufm.solver.problem import UFMConfig  # noqa: E402


def run_one(fields: dict) -> dict:
    if fields.pop("joint_autograd", False):
        return run_joint(fields)
    keep_freed_memory()
    config = UFMConfig(**fields)
    before = _rss_mb()
    start = time.perf_counter()
    result = solve(config, execution=CLI_EXECUTION)  # as `ufm solve` runs it
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = result.summary
    n, K, d = s["n"], config.K, config.d
    r = min(K - 1, d)  # the rank of a simplex ETF
    state_mb = (n * r * 8 + n * (8 + 8 + 8) + n * d * 8) / 2**20
    iterations = max(s["iterations"], 1)
    return {"n": n, "K": K, "d": d, "seconds": seconds, "iterations": s["iterations"],
            "seconds_per_iteration": seconds / iterations, "stop_reason": s["stop_reason"],
            "grad_norm": s["grad_norm"], "theory_distance": s.get("theory_distance"),
            "etf_distance_W": s["etf_distance_W"], "peak_mb": peak - before,
            "state_mb": state_mb, "excess_mb": peak - before - state_mb,
            "method": config.method, "method_used": s["method_used"],
            # a learned classifier's certificate (ufm.solver.optimality)
            **{key: s.get(key) for key in ("rank_W", "off_row_curvature_min",
                                           "optimality_gap_bound")},
            # (seconds, gradient norm) after each iteration: where the time went; and how
            # each step went (its step_ history columns: kind, work, trust region, CG path)
            "trace": [[row["seconds"], row["grad_norm"]] for row in result.history],
            "steps": [{key: value for key, value in row.items() if key.startswith("step_")}
                      for row in result.history]}


def run_joint(fields: dict) -> dict:
    """What a user would write for a learned classifier: L-BFGS (torch.optim.LBFGS, strong
    Wolfe line search) on the features and the classifier jointly, the objective and its
    gradient by autograd in float64, from the solver's own random start. It stops at the
    driver's gradient norm sqrt(mean_s |n dL/dh_s|^2 + |dL/dW|^2) <= tol or at the time
    limit; the seconds to reach it (or None) and where it got."""
    from ufm.etf import etf_distance
    from ufm.solver.problem import build_problem

    keep_freed_memory()
    config = UFMConfig(**fields)
    problem = build_problem(config)
    n, K, d = problem.n, config.K, config.d
    before = _rss_mb()
    H = torch.zeros(n, d, dtype=torch.float64)
    W = problem.W0.clone().to(torch.float64)
    x = torch.cat([H.reshape(-1), W.reshape(-1)]).requires_grad_(True)

    def objective(flat):
        H, W = flat[: n * d].reshape(n, d), flat[n * d:].reshape(K, d)
        values = problem.loss.mixture_value(H @ W.T, problem.classes, problem.weights)
        return ((values.sum() + 0.5 * config.lam_H * (H * H).sum()) / n
                + 0.5 * config.lam_W * (W * W).sum())

    def grad_norm() -> float:
        grad, = torch.autograd.grad(objective(x), x)
        grad_H, grad_W = grad[: n * d].reshape(n, d), grad[n * d:]
        return float(((n * grad_H).pow(2).sum(-1).mean() + grad_W.pow(2).sum()).sqrt())

    optimiser = torch.optim.LBFGS([x], lr=1, max_iter=20, history_size=20,
                                  tolerance_grad=0.0, tolerance_change=0.0,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        value = objective(x)
        value.backward()
        return value

    start = time.perf_counter()
    limit = config.time_limit or float("inf")
    reached, rounds, norm = None, 0, grad_norm()
    while norm > config.tol and time.perf_counter() - start < limit:
        optimiser.step(closure)
        rounds += 1
        norm = grad_norm()
    seconds = time.perf_counter() - start
    if norm <= config.tol:
        reached = seconds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    W = x.detach()[n * d:].reshape(K, d)
    return {"n": n, "K": K, "d": d, "seconds": seconds, "iterations": rounds * 20,
            "seconds_per_iteration": seconds / max(rounds * 20, 1),
            "stop_reason": "converged" if reached is not None else "time_limit",
            "grad_norm": norm, "theory_distance": None, "etf_distance_W": float(etf_distance(W)),
            "peak_mb": peak - before, "state_mb": 0.0, "excess_mb": 0.0,
            "method": "joint autograd L-BFGS", "seconds_to_tol": reached}


def spawn(fields: dict) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--one", json.dumps(fields)],
                               capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'n':>11s} {'K':>5s} {'d':>5s} {'iters':>5s} {'s/iter':>8s} {'total s':>8s} "
          f"{'peak MB':>8s} {'state MB':>8s} {'excess MB':>9s}  result")
    for r in rows:
        result = (f"theory {r['theory_distance']:.1e}" if r["theory_distance"] is not None
                  else f"grad {r['grad_norm']:.1e}, ETF distance {r['etf_distance_W']:.1e}")
        method = f"{r['method']}: " if "method" in r else ""
        print(f"{r['n']:11,d} {r['K']:5d} {r['d']:5d} {r['iterations']:5d} "
              f"{r['seconds_per_iteration']:8.3f} {r['seconds']:8.1f} {r['peak_mb']:8.0f} "
              f"{r['state_mb']:8.0f} {r['excess_mb']:9.0f}  {method}{result} ({r['stop_reason']})",
              flush=True)


SECTIONS = ("n", "K", "d", "large_fixed", "large_row_space", "large_learned", "learned_K")
# pairs of classes per class of the K = d = 1000 problem (9524 random pairs): 9.524 K in all
PAIR_DENSITY = 9.524
# the medium problem: all 10,000 ordered pairs of classes, 210,000 samples
MEDIUM = {"K": 100, "d": 128}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench_scaling.json")
    parser.add_argument("--quick", action="store_true", help="small sweeps only (a smoke test)")
    parser.add_argument("--learned-seconds", type=float, default=300.0,
                        help="time limit of the large learned-classifier solve")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="which measurements to run (default: all)")
    parser.add_argument("--learned-methods", nargs="+", default=["newton", "newton_gram"],
                        help="outer methods of section learned_K, each on every problem in the same run")
    parser.add_argument("--learned-sizes", type=int, nargs="+", default=None,
                        help="K = d of section learned_K's random-pair problems (default 50 100 200)")
    parser.add_argument("--joint-baseline", action="store_true",
                        help="in section learned_K also time joint L-BFGS on (H, W) by autograd")
    parser.add_argument("--joint-seconds", type=float, default=120.0,
                        help="time limit of each joint L-BFGS baseline")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    sections = set(args.sections) - ({"large_fixed", "large_row_space", "large_learned"} if args.quick else set())
    print(f"cores={os.cpu_count()} torch threads={torch.get_num_threads()} torch={torch.__version__} "
          f"load average before: {os.getloadavg()[0]:.2f}")
    timed = dict(tol=1e-10, max_iters=2)  # time per iteration: a few passes suffice
    ns = (1, 10) if args.quick else (5, 48, 477, 4762)  # samples_per_pair: n = 2100 x this
    report: dict = {"command": command_line(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "learned_seconds": args.learned_seconds}
    if "n" in sections:
        report["n"] = [spawn(dict(K=10, d=32, samples_per_pair=m, **timed)) for m in ns]
        _table("against n (K = 10, d = 32, all pairs)", report["n"])
        write_json(args.out, report)
    if "K" in sections:
        Ks = (10, 100) if args.quick else (10, 100, 1000)
        per_K = 2_000 if args.quick else 10_000  # random pairs, x 21 lam
        report["K"] = [spawn(dict(K=k, d=k, pairs="random", num_pairs=min(per_K, k * k),
                                  samples_per_pair=per_K // min(per_K, k * k), **timed)) for k in Ks]
        _table("against K (d = K, random pairs)", report["K"])
        write_json(args.out, report)
    if "d" in sections:
        ds = (16, 64) if args.quick else (16, 64, 256, 1024)
        report["d"] = [spawn(dict(K=10, d=d, samples_per_pair=10, **timed)) for d in ds]
        _table("against d (K = 10, all pairs, 10 samples per pair and lam)", report["d"])
        write_json(args.out, report)
    large = dict(K=1000, d=1000, pairs="random", num_pairs=round(PAIR_DENSITY * 1000))
    if "large_fixed" in sections:
        report["large_fixed"] = spawn(dict(large, tol=1e-10))
        _table("K = d = 1000, 200,004 random-pair samples, fixed ETF to gradient 1e-10",
               [report["large_fixed"]])
        write_json(args.out, report)
    if "large_row_space" in sections:  # the baseline: the SVD frame, per iteration
        report["large_row_space"] = spawn(dict(large, coordinates="row_space", **timed))
        _table("the same in the SVD frame (coordinates = row_space), 2 iterations",
               [report["large_row_space"]])
        write_json(args.out, report)
    if "large_learned" in sections:
        report["large_learned"] = []
        for method in args.learned_methods:
            report["large_learned"].append(spawn(dict(large, classifier="learned", tol=1e-8,
                                                      time_limit=args.learned_seconds, method=method)))
            write_json(args.out, report)
        _table(f"the same, learned classifier to gradient 1e-8 (time limit {args.learned_seconds:g} s)",
               report["large_learned"])
    if "learned_K" in sections:
        Ks = tuple(args.learned_sizes) if args.learned_sizes else ((20, 50) if args.quick else (50, 100, 200))
        learned = dict(classifier="learned", tol=1e-8, time_limit=args.learned_seconds)
        problems = [{"K": k, "d": k, "pairs": "random", "num_pairs": round(PAIR_DENSITY * k)} for k in Ks]
        problems.append({"K": 20, "d": 20} if args.quick else MEDIUM)
        report["learned_K"] = []
        for fields in problems:
            rows = [spawn(dict(fields, **learned, method=method)) for method in args.learned_methods]
            if args.joint_baseline:
                rows.append(spawn({**fields, **learned, "time_limit": args.joint_seconds,
                                   "joint_autograd": True}))
            report["learned_K"].extend(rows)
            write_json(args.out, report)
        _table(f"learned classifier to gradient 1e-8, d = K, random pairs at {PAIR_DENSITY} K pairs, "
               f"then all pairs at K = 100, d = 128 (time limit {args.learned_seconds:g} s each)", report["learned_K"])
    write_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
