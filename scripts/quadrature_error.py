"""How far subsampled reduced Hessian products are from the exact ones, at a learned optimum.

``"newton_gram"`` runs its Hessian products on part of the samples: on pairs over a lam grid,
the samples at the lam values of a quadrature of the grid (``ufm/solver/lam_quadrature.py``),
otherwise every 4th sample as stored in its first steps. This solves one problem to its
optimum (default K = d = 200 on random pairs at the density of the K = 1000 problem, 21 lam
values), then compares the product on each subsample with the exact one over all samples
(both in float64, the per-sample systems to 1e-12): the rows each keeps and the relative
error, in random directions and in soft ones (a random direction after conjugate gradients
on the exact Hessian, off the rotations, which leaves it mostly on the smallest eigenvalues:
the directions that made the stride subsample's later Newton steps fail). Prints a table
and writes JSON.

    python scripts/quadrature_error.py [--K 200] [--directions 2] [--soft-steps 20]
        [--out results/quadrature_error.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_scaling import PAIR_DENSITY
from bench_solver import command_line

from ufm.io import write_json
from ufm.solver import CLI_EXECUTION, solve
from ufm.solver.newton_cg import newton_gram_method
from ufm.solver.problem import UFMConfig, build_problem
from ufm.solver.state import RunState

# lam values of the quadrature rules compared (the 21 values of the default grid allow 11)
NODE_COUNTS = (5, 7, 9, 11)


def relative_errors(method, solver, exact, directions) -> list[float]:
    return [float((method.hessian_vector(v, solver) - e).norm() / e.norm())
            for v, e in zip(directions, exact)]


def soft_direction(method, v: torch.Tensor, steps: int) -> torch.Tensor:
    """A unit direction mostly on the smallest eigenvalues of the reduced Hessian: ``steps``
    conjugate-gradient steps on H x = v (exact products, off the rotations, whose zero
    eigenvalues are not curvature)."""
    project = method._step_projector()
    x = torch.zeros_like(v)
    residual = project(v)
    direction = residual.clone()
    squared = float(residual @ residual)
    for _ in range(steps):
        product = project(method.hessian_vector(project(direction)))
        alpha = squared / float(direction @ product)
        x = x + alpha * direction
        residual = residual - alpha * product
        new = float(residual @ residual)
        direction = residual + (new / squared) * direction
        squared = new
    return x / x.norm()


def stride_samples(method, offset: int):
    """The feature solver of every 4th sample from ``offset``, as the method's first Newton
    steps take it (its own rule, forced at this size and gradient)."""
    method.quadrature_nodes, method._quadrature = 0, None
    method.subsample_min_samples, method.subsample_above = 1, 0.0
    method._subsamples = offset
    return method._product_samples()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=200, help="classes, and the feature dimension")
    parser.add_argument("--directions", type=int, default=2,
                        help="random directions, and soft directions made from as many more")
    parser.add_argument("--soft-steps", type=int, default=20,
                        help="conjugate-gradient steps that make a soft direction")
    parser.add_argument("--out", default="results/quadrature_error.json")
    args = parser.parse_args()
    if args.K < 3:
        parser.error(f"--K must be >= 3, got {args.K}")
    if args.directions < 1:
        parser.error(f"--directions must be >= 1, got {args.directions}")
    if args.soft_steps < 1:
        parser.error(f"--soft-steps must be >= 1, got {args.soft_steps}")
    fields = {"K": args.K, "d": args.K, "pairs": "random",
              "num_pairs": round(PAIR_DENSITY * args.K), "classifier": "learned", "tol": 1e-8,
              "method": "newton_gram"}
    config = UFMConfig(**fields)
    start = time.perf_counter()
    result = solve(config, execution=CLI_EXECUTION)
    print(f"solved in {time.perf_counter() - start:.0f} s: gradient "
          f"{result.summary['grad_norm']:.1e}, rank of W {result.summary.get('rank_W')}")
    method = newton_gram_method(RunState(build_problem(config)))
    method._start_features()
    method.state.W, method.state.b = result.W, result.b
    method.current = method._evaluate(result.W, result.b, 1e-12)
    solver = method.feature_solver
    generator = torch.Generator().manual_seed(0)
    random = [torch.randn(result.W.numel(), generator=generator, dtype=torch.float64)
              for _ in range(2 * args.directions)]
    kinds = {"random": random[: args.directions],
             "soft": [soft_direction(method, v, args.soft_steps) for v in random[args.directions:]]}
    exact = {kind: [method.hessian_vector(v, solver) for v in vs] for kind, vs in kinds.items()}

    def measured(rule: str, nodes, part) -> dict:
        errors = {kind: relative_errors(method, part, exact[kind], vs)
                  for kind, vs in kinds.items()}
        return {"rule": rule, "nodes": nodes, "rows": part.n, "share": part.n / solver.n,
                "errors": errors, "random_max": max(errors["random"]),
                "soft_max": max(errors["soft"])}

    rows = [measured(f"every 4th sample, offset {offset}", None, stride_samples(method, offset))
            for offset in (0, 1)]
    for nodes in NODE_COUNTS:
        method.quadrature_nodes, method._quadrature = nodes, None
        picked = method._quadrature_samples()
        if picked:
            rows.append(measured(f"quadrature, {nodes} lam values", nodes, solver.subset(*picked)))
        else:
            print(f"quadrature, {nodes} lam values: the grid has no rule")
    print(f"\n{'subsample':32s} {'rows':>8s} {'share':>6s} {'error, random':>14s} "
          f"{'error, soft':>12s}   (relative, largest over the directions)")
    for row in rows:
        print(f"{row['rule']:32s} {row['rows']:8d} {row['share']:6.2f} "
              f"{row['random_max']:14.1e} {row['soft_max']:12.1e}")
    write_json(args.out, {"command": command_line(), "fields": fields,
                          "samples": method.state.problem.n, "rows": solver.n,
                          "grad_norm": result.summary["grad_norm"],
                          "directions": args.directions, "soft_steps": args.soft_steps,
                          "subsamples": rows})


if __name__ == "__main__":
    main()
