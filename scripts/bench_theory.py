"""Benchmark: exact optimal features for all K^2 ordered pairs and a lam grid.

Compares ``ufm.optimal_features`` (validation, one reduced solve per distinct lam, gather,
assembly) with merely assembling an output of the same size from precomputed coefficients,
``a[:, None] * W[c] + b[:, None] * W[c_prime]``, measured in the same run. Prints a table
and writes JSON.

    python scripts/bench_theory.py [--K 100] [--d 128] [--num-lams 21] [--repeats 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from ufm.devices import resolve_device
from ufm.etf import simplex_etf
from ufm.io import write_json
from ufm.theory import optimal_features


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=100)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--num-lams", type=int, default=21)
    parser.add_argument("--lam-H", type=float, default=5e-3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="bench_theory.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    K, L = args.K, args.num_lams
    W = simplex_etf(K, args.d, seed=0, device=device)
    grid = torch.linspace(0, 1, L, dtype=torch.float64, device=device)
    c = torch.arange(K, device=device).repeat_interleave(K * L)
    c_prime = torch.arange(K, device=device).repeat_interleave(L).repeat(K)
    lam = grid.repeat(K * K)
    n = c.numel()

    features = optimal_features(W, c, c_prime, lam, args.lam_H)  # warm-up
    a = torch.rand(n, dtype=torch.float64, device=device)
    b = torch.rand(n, dtype=torch.float64, device=device)

    def baseline():
        return a[:, None] * W[c] + b[:, None] * W[c_prime]

    baseline()
    theory_median, theory_best = timed(
        lambda: optimal_features(W, c, c_prime, lam, args.lam_H), args.repeats
    )
    base_median, base_best = timed(baseline, args.repeats)
    ratio = theory_median / base_median

    rows = [
        ("optimal_features (exact theory)", theory_median, theory_best),
        ("baseline: assemble from coefficients", base_median, base_best),
    ]
    print(f"K={K} d={args.d} lams={L} features={n:,} shape={tuple(features.shape)}")
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'method':40s} {'median s':>10s} {'best s':>10s}")
    for name, median, best in rows:
        print(f"{name:40s} {median:10.4f} {best:10.4f}")
    print(f"ratio (median, theory / baseline) = {ratio:.3f}   target <= 2")
    write_json(
        args.out,
        {
            "K": K, "d": args.d, "num_lams": L, "features": n, "lam_H": args.lam_H,
            "device": str(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "repeats": args.repeats,
            "theory_seconds_median": theory_median, "theory_seconds_best": theory_best,
            "baseline_seconds_median": base_median, "baseline_seconds_best": base_best,
            "ratio": ratio, "target_ratio": 2.0,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
