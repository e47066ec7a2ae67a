"""The spectrum of the reduced Hessian of a learned classifier at its optimum.

With the features eliminated, F(W) = min_H L(H, W) (docs/theory.md section 1). L-BFGS on F is the
outer loop of a learned-classifier solve (ufm.solver.newton), and how fast it can converge
is set by the eigenvalues of the Hessian of F at the optimum. This script solves a small
problem to gradient 1e-11, forms that Hessian by central differences of the exact reduced
gradient (every feature re-solved to 1e-13 at each perturbed W), and prints its eigenvalues
grouped to 1e-5 with their multiplicities, as multiples of lam_W as well. By symmetry there
are only a few distinct values:

* 0, once per rotation of feature space that moves W (F is invariant under W -> W Q^T);
* lam_W, for the d directions 1 v^T (a common row offset, to which the softmax is blind);
* a handful of others, from the representations of the permutation group of the classes.

With ``--num-pairs N`` the samples are N random pairs of classes instead of all K^2 (the
symmetry is gone, and so are the few distinct values): the spectrum then shows why L-BFGS
needs more iterations on sparse pairs (``bench_scaling.py --sections learned_K``). Besides
the grouped eigenvalues it prints how many are zero (below 1e-4, against the number of
rotations that move W) and the smallest nonzero ones.

    python scripts/reduced_hessian.py [--K 10] [--d 16] [--num-pairs N] [--eps 1e-5]
        [--out results/reduced_hessian.json]

The JSON records the command line. docs/performance.md quotes four runs, each a file in
``benchmarks/`` (``python scripts/make_performance_page.py --commands`` lists them): rerun one
with ``--out benchmarks/NAME.json``, then ``python scripts/make_performance_page.py``.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
import torch

from ufm import UFMConfig, solve
from ufm.io import write_json
from ufm.solver.newton import newton_method
from ufm.solver.problem import build_problem
from ufm.solver.state import RunState


def reduced_hessian(config: UFMConfig, W: torch.Tensor, eps: float) -> torch.Tensor:
    """(Kd, Kd) Hessian of F at W by central differences of the reduced gradient."""
    state = RunState(build_problem(config))
    method = newton_method(state)

    def gradient(at: torch.Tensor) -> torch.Tensor:
        return method._evaluate(at, None, 1e-13).theta_grad.clone()

    gradient(W)  # features at W, the warm start of every perturbed solve
    n = W.numel()
    hessian = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        step = torch.zeros(n, dtype=torch.float64)
        step[i] = eps
        step = step.reshape(W.shape)
        hessian[:, i] = (gradient(W + step) - gradient(W - step)) / (2 * eps)
    return 0.5 * (hessian + hessian.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--num-pairs", type=int, default=None,
                        help="random pairs of classes (default: all K^2 pairs)")
    parser.add_argument("--eps", type=float, default=1e-5)
    parser.add_argument("--out", default="results/reduced_hessian.json")
    args = parser.parse_args()
    pairs = {} if args.num_pairs is None else dict(pairs="random", num_pairs=args.num_pairs)
    config = UFMConfig(K=args.K, d=args.d, classifier="learned", tol=1e-11, mixed_precision=False,
                       **pairs)
    result = solve(config)
    print(f"K={args.K} d={args.d} lam_W={config.lam_W} lam_H={config.lam_H}: solved to gradient "
          f"{result.summary['grad_norm']:.1e} in {result.summary['iterations']} iterations")
    eigenvalues = torch.linalg.eigvalsh(reduced_hessian(config, result.W, args.eps)).numpy()
    values, counts = np.unique(np.round(eigenvalues, 5), return_counts=True)
    rows = [{"eigenvalue": float(v), "per_lam_W": float(v / config.lam_W), "multiplicity": int(c)}
            for v, c in zip(values, counts)]
    print(f"\n{'eigenvalue':>12s} {'/ lam_W':>8s} {'count':>6s}")
    for row in rows:
        print(f"{row['eigenvalue']:12.5f} {row['per_lam_W']:8.3f} {row['multiplicity']:6d}")
    positive = np.sort(eigenvalues[eigenvalues > 1e-4])
    condition = float(positive[-1] / positive[0])
    r = int(torch.linalg.matrix_rank(result.W, rtol=1e-6))  # W is solved to about 1e-9
    rotations = args.d * (args.d - 1) // 2 - (args.d - r) * (args.d - r - 1) // 2
    zero = int(eigenvalues.size - positive.size)
    print(f"\n{zero} zero eigenvalues (W has rank {r}: {rotations} "
          f"rotations move it); smallest nonzero / lam_W: "
          + ", ".join(f"{v / config.lam_W:.3f}" for v in positive[:5]))
    print(f"condition number on the nonzero eigenvalues: {condition:.2f}")
    command = shlex.join(["python", "scripts/reduced_hessian.py", *sys.argv[1:]])
    write_json(args.out, {"command": command, "K": args.K, "d": args.d, "num_pairs": args.num_pairs,
                          "lam_W": config.lam_W, "lam_H": config.lam_H,
                          "eps": args.eps, "grad_norm": result.summary["grad_norm"],
                          "iterations": result.summary["iterations"], "eigenvalues": rows,
                          "zero": zero, "rotations": rotations,
                          "smallest_nonzero": [float(v) for v in positive[:10]],
                          "condition_nonzero": condition})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
