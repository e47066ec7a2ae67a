"""How many samples the Newton methods solve: the distinct soft targets of the benchmark problems.

Samples with one soft target share their optimal features and are solved once
(``ufm/solver/sample_groups.py``). This counts, for each problem of the benchmarks, its samples
and its groups (no solve: the count depends on the sampled pairs and lam values alone), prints
a table and writes JSON.

    python scripts/count_targets.py [--out results/count_targets.json]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_solver import command_line

from ufm.io import write_json
from ufm.solver.problem import UFMConfig, build_problem
from ufm.solver.sample_groups import group_samples

# the problems of docs/performance.md: the medium one (all ordered pairs) and random pairs at
# the density of the K = d = 1000 problem (9.524 K pairs)
PROBLEMS = {
    "medium": {"K": 100, "d": 128},
    "K100_random": {"K": 100, "d": 100, "pairs": "random", "num_pairs": 952},
    "K200_random": {"K": 200, "d": 200, "pairs": "random", "num_pairs": 1905},
    "K1000_random": {"K": 1000, "d": 1000, "pairs": "random", "num_pairs": 9524},
}


def count(fields: dict) -> dict:
    """Samples and groups of one soft target of the problem of ``fields``."""
    problem = build_problem(UFMConfig(**fields))
    groups = group_samples(problem.classes, problem.weights, problem.loss)
    targets = problem.n if groups is None else int(groups.counts.numel())
    largest = 1 if groups is None else int(groups.counts.max())
    return {"fields": fields, "samples": problem.n, "targets": targets,
            "samples_per_target": problem.n / targets, "largest_group": largest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/count_targets.json")
    args = parser.parse_args()
    rows = {name: count(fields) for name, fields in PROBLEMS.items()}
    print(f"{'problem':14s} {'samples':>9s} {'targets':>9s} {'ratio':>6s} {'largest':>8s}")
    for name, row in rows.items():
        print(f"{name:14s} {row['samples']:9,d} {row['targets']:9,d} "
              f"{row['samples_per_target']:6.2f} {row['largest_group']:8d}")
    write_json(args.out, {"command": command_line(), "problems": rows})


if __name__ == "__main__":
    main()
