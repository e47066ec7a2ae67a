"""Benchmark of the UFM solver against the way published UFM code solves the problem.

For each problem size (small: K=10, d=32; medium: K=100, d=128; 21 lam values, all K^2
ordered pairs) it measures, in the same run:

* fixed simplex-ETF classifier, cross-entropy: time for ``ufm.solve`` (default method,
  float64) and for momentum gradient descent (``method="gd"``) to reach a relative
  distance of 1e-8 to the exact theory, and for the baseline -- a plain autograd loop with
  Adam in float32 over a free feature tensor -- to reach 1e-4. The baseline's learning rate
  is the best of a small grid, chosen on the small problem.
* learned classifier (random start, lam_W = lam_H = 5e-3): time to gradient norm 1e-8.

Each run happens in its own process, so times do not interfere and the peak memory of a run
(resident set size above the process's size just before the run) can be compared with the
size of H plus the logits. All runs, the baseline included, use the same allocator setting
(:func:`ufm.solver._allocator.keep_freed_memory`). Prints a table and writes JSON. Records the
device, the thread count and the command line; runs on CUDA unchanged.

    python scripts/bench_solver.py [--sizes small medium] [--out results/bench_solver.json]

docs/performance.md quotes runs of it from the files in ``benchmarks/``
(``python scripts/make_performance_page.py --commands`` lists them).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from ufm.solver._allocator import keep_freed_memory
from ufm.devices import resolve_device
from ufm.etf import simplex_etf
from ufm.io import write_json
from ufm.losses import mixup_target
from ufm.solver.problem import UFMConfig, build_problem
from ufm.solver import CLI_EXECUTION, solve
from ufm.theory import optimal_features

SIZES = {"small": (10, 32), "medium": (100, 128)}
ADAM_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def adam_baseline(K, d, device, lr, target=1e-4, max_seconds=600.0, check_every=10, lam_H=5e-3):
    """Adam in float32 on free features with a fixed ETF; seconds to reach ``target``."""
    config = UFMConfig(K=K, d=d, device=str(device))
    problem = build_problem(config)
    W64 = simplex_etf(K, d, seed=0, device=device)
    exact = optimal_features(W64, problem.c, problem.c_prime, problem.lam, lam_H).float()
    exact_norm = exact.norm()
    W = W64.float()
    y = mixup_target(problem.c, problem.c_prime, problem.lam.float(), K)
    H = torch.zeros(problem.n, d, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([H], lr=lr)
    _sync(device)
    start = time.perf_counter()
    iteration, distance = 0, float("inf")
    while True:
        optimizer.zero_grad(set_to_none=True)
        logits = H @ W.T
        loss = torch.nn.functional.cross_entropy(logits, y) + 0.5 * lam_H * (H * H).sum(1).mean()
        loss.backward()
        optimizer.step()
        iteration += 1
        if iteration % check_every == 0:
            with torch.no_grad():
                distance = float((H - exact).norm() / exact_norm)
            if distance <= target:
                break
            if not torch.isfinite(torch.tensor(distance)):
                break
        if time.perf_counter() - start > max_seconds:
            break
    _sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "iterations": iteration, "distance": distance,
            "reached": distance <= target, "lr": lr}


def ours(K, d, device, **overrides):
    config = UFMConfig(K=K, d=d, device=str(device), **overrides)
    _sync(device)
    start = time.perf_counter()
    result = solve(config, execution=CLI_EXECUTION)  # as `ufm solve` runs it
    _sync(device)
    seconds = time.perf_counter() - start
    s = result.summary
    return {"seconds": seconds, "iterations": s["iterations"], "stop_reason": s["stop_reason"],
            "grad_norm": s["grad_norm"], "theory_distance": s.get("theory_distance"),
            "etf_distance_W": s["etf_distance_W"],
            "theory_distance_learned_W": s.get("theory_distance_learned_W")}


def command_line() -> str:
    """How this benchmark was started, for its JSON (the files of docs/performance.md show it)."""
    return shlex.join(["python", f"scripts/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(spec: dict) -> dict:
    """Run one measurement in this process; return its numbers and memory."""
    keep_freed_memory()
    device = resolve_device(spec["device"])
    before = _rss_mb()
    if spec["kind"] == "adam":
        out = adam_baseline(spec["K"], spec["d"], device, spec["lr"], max_seconds=spec["max_seconds"])
    else:
        out = ours(spec["K"], spec["d"], device, **spec["overrides"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = spec["K"] * spec["K"] * 21
    bytes_per = 4 if spec["kind"] == "adam" else 8
    out["peak_mb_above_start"] = peak - before
    out["H_plus_logits_mb"] = n * (spec["d"] + spec["K"]) * bytes_per / 2**20
    return out


def spawn(spec: dict) -> dict:
    """Run ``spec`` in a fresh Python process."""
    completed = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                               capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=list(SIZES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--adam-max-seconds", type=float, default=900.0)
    parser.add_argument("--gd-max-seconds", type=float, default=600.0)
    parser.add_argument("--out", default="results/bench_solver.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    device = resolve_device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")

    # the baseline's learning rate: best of a grid on the small problem
    def spec(kind, size, **rest):
        K, d = SIZES[size]
        return {"kind": kind, "K": K, "d": d, "device": str(device), **rest}

    trials = [spawn(spec("adam", "small", lr=lr, max_seconds=60)) for lr in ADAM_LRS]
    reached = [t for t in trials if t["reached"]]
    best_lr = min(reached or trials, key=lambda t: (not t["reached"], t["seconds"]))["lr"]
    print("Adam learning-rate grid (small):",
          ", ".join(f"{t['lr']:g}: {t['seconds']:.2f}s{'' if t['reached'] else ' (not reached)'}"
                    for t in trials), f"-> {best_lr:g}")

    rows = []
    for size in args.sizes:
        K, d = SIZES[size]
        entry = {"size": size, "K": K, "d": d, "n": K * K * 21}
        entry["newton_fixed"] = spawn(spec("ours", size, overrides=dict(tol=1e-11)))
        entry["gd_fixed"] = spawn(spec("ours", size, overrides=dict(
            method="gd", tol=1e-11, max_iters=1_000_000, time_limit=args.gd_max_seconds)))
        entry["adam_fixed"] = spawn(spec("adam", size, lr=best_lr, max_seconds=args.adam_max_seconds))
        entry["newton_learned"] = spawn(spec("ours", size, overrides=dict(classifier="learned", tol=1e-8)))
        rows.append(entry)
        base = entry["adam_fixed"]["seconds"]
        print(f"\n{size}: K={K} d={d} n={entry['n']:,}")
        print(f"{'run':34s} {'seconds':>9s} {'iters':>7s} {'result':>26s} {'vs Adam':>8s} "
              f"{'peak MB':>8s} {'/ (H+logits)':>12s}")
        for key, label, metric in (
            ("newton_fixed", "fixed ETF, newton (float64)", "theory_distance"),
            ("gd_fixed", "fixed ETF, momentum GD (float64)", "theory_distance"),
            ("adam_fixed", "fixed ETF, Adam baseline (float32)", "distance"),
            ("newton_learned", "learned W, newton (float64)", "grad_norm"),
        ):
            r = entry[key]
            value = r.get(metric)
            text = f"{metric}={value:.2e}" if value is not None else "-"
            ratio = base / r["seconds"] if key != "adam_fixed" else 1.0
            memory = r["peak_mb_above_start"] / r["H_plus_logits_mb"]
            print(f"{label:34s} {r['seconds']:9.2f} {r['iterations']:7d} {text:>26s} {ratio:7.1f}x "
                  f"{r['peak_mb_above_start']:8.0f} {memory:12.2f}")
        entry["speedup_newton_vs_adam"] = base / entry["newton_fixed"]["seconds"]
    report = {"command": command_line(), "device": str(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__,
              "python": platform.python_version(), "adam_lr": best_lr, "adam_lr_grid": trials,
              "rows": rows}
    write_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
