"""Benchmark: exact optimal features for pairs (all K^2 ordered pairs and a lam grid) and for
m-class mixtures (distinct Dirichlet weight vectors).

Pairs: ``ufm.optimal_features`` (validation, one reduced solve per distinct lam, gather,
assembly) against merely assembling an output of the same size from precomputed
coefficients, ``a[:, None] * W[c] + b[:, None] * W[c_prime]``, in the same run.

Mixtures: ``ufm.mixture_features`` (validation, merging of repeated classes, one vectorised
solve of all the m-class reduced equations, assembly) against the bare assembly
``sum_k a_k W[c_k]`` from precomputed coefficients, in the same run, done two ways: fused
(``embedding_bag``, the assembly ``mixture_features`` itself uses; the ratio to it is the
figure of merit, target <= 5) and plain (a loop over k of gathers and products). Every
weight vector is distinct, so nothing can be shared between mixtures.

Prints a table and writes JSON (pair figures at the top level, mixtures under "mixtures").

    python scripts/bench_theory.py [--part pairs|mixtures|both] [--K 100] [--d 128]
        [--num-lams 21] [--mixtures 100000] [--m 3] [--repeats 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from ufm.devices import resolve_device
from ufm.etf import simplex_etf
from ufm.io import write_json
from ufm.theory import mixture_coefficients, mixture_features, optimal_features


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


def bench_pairs(args, device) -> dict:
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
    print(f"pairs: K={K} d={args.d} lams={L} features={n:,} shape={tuple(features.shape)}")
    _table(rows)
    print(f"ratio (median, theory / baseline) = {ratio:.3f}   target <= 2")
    return {
        "K": K, "d": args.d, "num_lams": L, "features": n, "lam_H": args.lam_H,
        "theory_seconds_median": theory_median, "theory_seconds_best": theory_best,
        "baseline_seconds_median": base_median, "baseline_seconds_best": base_best,
        "ratio": ratio, "target_ratio": 2.0,
    }


def _distinct_classes(rng, n: int, K: int, m: int) -> np.ndarray:
    """(n, m) classes, distinct within each row, uniform over m-subsets in random order."""
    classes = rng.integers(0, K, size=(n, m))
    while True:
        ordered = np.sort(classes, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not repeated.any():
            return classes
        classes[repeated] = rng.integers(0, K, size=(int(repeated.sum()), m))


def bench_mixtures(args, device) -> dict:
    K, m, n = args.K, args.m, args.mixtures
    rng = np.random.default_rng(0)
    W = simplex_etf(K, args.d, seed=0, device=device)
    classes = _distinct_classes(rng, n, K, m)
    weights = rng.dirichlet(np.ones(m), size=n)
    distinct = np.unique(weights, axis=0).shape[0]

    features = mixture_features(W, classes, weights, args.lam_H)  # warm-up
    a = torch.as_tensor(mixture_coefficients(K, weights, args.lam_H), device=device)
    c = torch.as_tensor(classes, device=device)

    def fused():
        return F.embedding_bag(c, W, per_sample_weights=a, mode="sum")

    def plain():
        out = a[:, 0, None] * W[c[:, 0]]
        for k in range(1, m):
            out = out + a[:, k, None] * W[c[:, k]]
        return out

    error = (fused() - features).abs().max().item() / features.abs().max().item()
    plain_error = (plain() - features).abs().max().item() / features.abs().max().item()
    theory = timed(lambda: mixture_features(W, classes, weights, args.lam_H), args.repeats)
    solve = timed(lambda: mixture_coefficients(K, weights, args.lam_H), args.repeats)
    base_fused = timed(fused, args.repeats)
    base_plain = timed(plain, args.repeats)
    ratio = theory[0] / base_fused[0]

    rows = [
        ("mixture_features (exact theory)", *theory),
        ("  of which mixture_coefficients", *solve),
        ("baseline: fused assembly", *base_fused),
        ("baseline: plain assembly", *base_plain),
    ]
    print(f"mixtures: K={K} d={args.d} m={m} mixtures={n:,} distinct weight vectors={distinct:,}")
    _table(rows)
    print(f"ratio (median, theory / fused assembly) = {ratio:.3f}   target <= 5")
    print(f"ratio (median, theory / plain assembly) = {theory[0] / base_plain[0]:.3f}")
    print(f"max |assembly - features| / max |features| = {max(error, plain_error):.1e}")
    return {
        "K": K, "d": args.d, "m": m, "mixtures": n, "distinct_weight_vectors": distinct,
        "lam_H": args.lam_H,
        "theory_seconds_median": theory[0], "theory_seconds_best": theory[1],
        "coefficients_seconds_median": solve[0], "coefficients_seconds_best": solve[1],
        "fused_baseline_seconds_median": base_fused[0],
        "fused_baseline_seconds_best": base_fused[1],
        "plain_baseline_seconds_median": base_plain[0],
        "plain_baseline_seconds_best": base_plain[1],
        "ratio": ratio, "ratio_plain": theory[0] / base_plain[0], "target_ratio": 5.0,
    }


def _table(rows) -> None:
    print(f"{'method':40s} {'median s':>10s} {'best s':>10s}")
    for name, median, best in rows:
        print(f"{name:40s} {median:10.4f} {best:10.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("pairs", "mixtures", "both"), default="both")
    parser.add_argument("--K", type=int, default=100)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--num-lams", type=int, default=21)
    parser.add_argument("--mixtures", type=int, default=100_000)
    parser.add_argument("--m", type=int, default=3)
    parser.add_argument("--lam-H", type=float, default=5e-3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="bench_theory.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    result = {
        "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "repeats": args.repeats,
    }
    if args.part in ("pairs", "both"):
        result.update(bench_pairs(args, device))
    if args.part in ("mixtures", "both"):
        result["mixtures"] = bench_mixtures(args, device)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
