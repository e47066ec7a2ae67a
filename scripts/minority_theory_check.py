"""The learned UFM solver from random starts against the exact minority-collapse theory.

For every (K, minority classes, rho, kind) of a grid, ``ufm.solve`` with a learned classifier
from several random starts (seeds), in float64 to gradient 1e-12, is compared with
``ufm.imbalance_theory``: the largest entry of |W W^T - G*|, the objective gap, and the
minority cosines. For d >= K - 1 the theory is the global optimum (docs/theory.md section 13)
and every start should reach it; below d = K - 1 the rank bound binds, the theory is only a
lower bound on the objective, and the table says how far each start stays from it.

    python scripts/minority_theory_check.py [--quick] [--out results/minority_theory_check.json]

Prints one row per configuration (the worst start) and writes every start to the JSON file
(refusing to overwrite it without --force).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import ufm
from ufm.io import write_json

LAMS = tuple(i / 10 for i in range(11))
KINDS = {"sample": ("sample", LAMS), "class": ("class", LAMS), "plain": ("sample", (1.0,))}


def grid(quick: bool):
    Ks = (4, 10) if quick else (4, 6, 10, 15, 20)
    ratios = (8.0, 1e4) if quick else (4.0, 64.0, 1e4)
    for K in Ks:
        for k_B in sorted({1, K // 2, K - 2}):
            for rho in ratios:
                for kind in KINDS:
                    yield K, k_B, rho, kind


def one(K, k_B, rho, kind, d, seed, lam):
    pairing, lams = KINDS[kind]
    theory = ufm.imbalance_theory(K, k_B, rho, lam, lam, lams, pairing=pairing)
    config = ufm.UFMConfig(K=K, d=d, classifier="learned", imbalance_ratio=rho,
                           minority_classes=k_B, lam_H=lam, lam_W=lam, lams=lams,
                           pairing=pairing, tol=1e-12, max_iters=20000, dtype="float64",
                           seed=seed, time_limit=300)
    start = time.perf_counter()
    result = ufm.solve(config)
    seconds = time.perf_counter() - start
    G = (result.W @ result.W.T).to(torch.float64)
    return {
        "K": K, "minority_classes": k_B, "imbalance_ratio": rho, "kind": kind, "d": d,
        "seed": seed, "gram_error": float((G - theory.gram()).abs().max()),
        "objective_gap": float(result.summary["loss"] - theory.objective),
        "solver_grad_norm": result.summary["grad_norm"], "solver_seconds": seconds,
        "theory_minority_cosine": theory.minority_cosine,
        "solver_minority_cosine": result.summary.get("minority_cosine"),
        "theory_minority_eigenvalue": theory.eigenvalues["minority"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (a minute or two)")
    parser.add_argument("--seeds", type=int, default=3, help="random starts per point")
    parser.add_argument("--lam", type=float, default=5e-3, help="lam_H = lam_W")
    parser.add_argument("--out", default="results/minority_theory_check.json")
    parser.add_argument("--force", action="store_true", help="overwrite --out")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    out = Path(args.out)
    if out.exists() and not args.force:
        parser.error(f"{out} exists; pass --force to overwrite it")
    rows = []
    print(f"{'K':>3} {'k_B':>3} {'rho':>7} {'kind':>6} {'d':>3} | {'max |G-G*|':>10} "
          f"{'obj gap':>9} {'cos theory':>10} {'cos solver':>10}")
    for K, k_B, rho, kind in grid(args.quick):
        for d in (K, K - 1, max(2, K // 2)):
            if d == K // 2 and K < 6:
                continue
            runs = [one(K, k_B, rho, kind, d, seed, args.lam) for seed in range(args.seeds)]
            rows += runs
            worst = max(runs, key=lambda r: r["gram_error"])
            cos_t, cos_s = worst["theory_minority_cosine"], worst["solver_minority_cosine"]
            print(f"{K:>3} {k_B:>3} {rho:>7g} {kind:>6} {d:>3} | {worst['gram_error']:>10.1e} "
                  f"{max(r['objective_gap'] for r in runs):>9.1e} "
                  f"{'-' if cos_t is None else f'{cos_t:.6f}':>10} "
                  f"{'-' if cos_s is None else f'{cos_s:.6f}':>10}", flush=True)
    full = [r for r in rows if r["d"] >= r["K"] - 1]
    below = [r for r in rows if r["d"] < r["K"] - 1]
    summary = {
        "starts_d_at_least_K_minus_1": len(full),
        "max_gram_error_d_at_least_K_minus_1": max(r["gram_error"] for r in full),
        "max_abs_objective_gap_d_at_least_K_minus_1": max(abs(r["objective_gap"]) for r in full),
        "starts_below": len(below),
        "below_reaching_theory": sum(r["gram_error"] < 1e-6 for r in below),
        "min_objective_gap_below": min((r["objective_gap"] for r in below), default=math.nan),
    }
    print(json.dumps(summary, indent=1))
    write_json(out, {"command": " ".join(["python", *sys.argv]), "summary": summary, "runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
