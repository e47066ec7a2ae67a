r"""Sweep stage: when does a learned classifier become a simplex ETF (docs/theory.md section 4)?

With W free and :math:`\lambda_W > 0` the mixup UFM is non-convex in (H, W); nothing proves
that its learned W is a simplex ETF, which the exact theory assumes. This stage maps it with
grids of small learned-classifier solves, each grid one :mod:`ufm.sweep` folder under
``DIR/sweep/<name>/`` (:func:`ufm.reproduce.layout.sweep_dir`) whose points are ordinary
``ufm solve`` folders:

* ``imbalance``: step imbalance (the last K // 2 classes have 1/rho of the samples)
  over ``imbalance_ratio`` rho, mixup (a lam grid) against plain training (``lams`` = [1.0]),
  and in the full grid both ``pairing`` rules: minority collapse (Fang et al., PNAS 2021);
  with ``seeds`` > 1 each point once per seed (the sweep's ``seeds``: ``seed``, ``seed`` +
  1, ...), as the report compares mixup with plain training over them;
* ``d_lamW``: the feature dimension d on both sides of K - 1 against the classifier ridge;
  each point below K - 1, where the problem has several stationary points, is solved from
  ``starts`` random initial classifiers, keeping the lowest objective (the solver's
  ``starts``, :mod:`ufm.solver.random_starts`; at and above K - 1 it makes one start);
* ``loss_lamH``: the loss (each with its default parameters: label smoothing 0.1, focal
  gamma 2) against the feature ridge;
* ``mse_bias``: the squared error with and without a learned bias against the feature
  ridge: is the common row offset of its W (its centred W is an ETF, W is not) the bias the
  model lacks?
* full grid only: ``lamW_lamH`` (the two ridges), and ``sampling``: Beta(alpha, alpha) draws
  of lam (None: the lam grid, each value as often as there are draws) against the number of
  random class pairs.

``sweep_grid`` = "quick" solves K = 4 problems with 5 lams to a loose tolerance (25 points
with one seed, 9 more starts below d = K - 1; seconds); "full" uses the reproduction's K,
d, ridges, lam grid and tolerance.
The points run through :func:`ufm.sweep.run_sweep` on submitit's debug executor, that is in
this process, one after the other with ``threads`` torch threads: a local executor's worker
process costs its start and imports (about 6 s per sweep measured on 2 busy cores), more than
all the quick points together. A complete point is reused; the stage writes ``summary.json``
last.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..devices import torch_threads
from ..io import prepare_run_dir, write_json
from ..sweep import SweepSpec, run_sweep
from . import layout
from .config import ReproduceConfig
from .solver_stage import solver_device

EXECUTOR = "debug"  # submitit's in-process executor (module docstring)
QUICK = {"K": 4, "d": 6, "num_lams": 5, "tol": 1e-6, "max_iters": 200, "lam_H": 5e-3,
         "lam_W": 5e-3}  # fmt: skip
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1)
MSE_BIAS = "mse_bias"  # the grid of the squared error with and without a bias


@dataclass(frozen=True)
class PhaseSweep:
    """One grid of the stage: its folder name, the question it answers, the sweep."""

    name: str
    question: str
    spec: SweepSpec


def sweep_sizes(config: ReproduceConfig) -> dict[str, Any]:
    if config.sweep_grid == "quick":
        return dict(QUICK)
    return {"K": config.K, "d": config.d, "num_lams": config.solver_lams,
            "tol": config.learned_tol, "max_iters": config.max_iters, "lam_H": config.lam_H,
            "lam_W": config.lam_W}  # fmt: skip


def imbalance_ratios(config: ReproduceConfig) -> list[float]:
    """The imbalance ratios of the imbalance sweep."""
    if config.sweep_grid == "full":
        return [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    return [1.0, 4.0, 16.0]


def mixup_lams(count: int) -> list[float]:
    """``count`` equally spaced values of lam in [0, 1] (the mixup grid of the imbalance sweep)."""
    return [round(k / (count - 1), 12) for k in range(count)]


def planned_sweeps(config: ReproduceConfig) -> list[PhaseSweep]:
    """The grids of the stage, in order (module docstring)."""
    sizes = sweep_sizes(config)
    K, lams = sizes["K"], sizes["num_lams"]
    full = config.sweep_grid == "full"
    base = {**sizes, "classifier": "learned", "device": solver_device(config.device),
            "seed": config.seed}  # fmt: skip

    def sweep(name: str, question: str, grid: dict[str, list], seeds: list[int] | None = None,
              **fixed: Any) -> PhaseSweep:
        shared = {k: v for k, v in {**base, **fixed}.items()
                  if k not in grid and not (seeds and k == "seed")}
        return PhaseSweep(name, question, SweepSpec("solve", shared, grid, seeds=seeds))

    imbalance = {"imbalance_ratio": imbalance_ratios(config),
                 "lams": [[1.0], mixup_lams(lams)]}  # fmt: skip
    if full:
        imbalance["pairing"] = ["sample", "class"]
    dims = sorted({max(1, K - 3), K - 2, K - 1, K, 2 * K, 4 * K} if full
                  else {K - 2, K - 1, 2 * K - 2})
    sweeps = [
        sweep("imbalance", "Does the learned W keep its minority rows apart under class "
              "imbalance, with mixup and without it?", imbalance,
              config.seed_values if config.seeds > 1 else None, minority_classes=K // 2),
        sweep("d_lamW", "Does the learned W become a simplex ETF on both sides of d = K - 1, "
              "whatever the classifier ridge?",
              {"d": dims, "lam_W": list(RIDGES) if full else [1e-3, 1e-2, 1e-1]},
              starts=config.starts),
        sweep("loss_lamH", "Does the learned W become a simplex ETF for every loss and feature "
              "ridge?",
              {"loss": ["ce", "label_smoothing", "focal", "mse"] if full
               else ["ce", "label_smoothing", "mse"],
               "lam_H": list(RIDGES) if full else [1e-3, 1e-2]}),
        sweep(MSE_BIAS, "With the squared error, is the common row offset of W the bias the "
              "model lacks?",
              {"lam_H": list(RIDGES) if full else [1e-3, 1e-2], "bias": [False, True]},
              loss="mse"),
    ]  # fmt: skip
    if full:
        sweeps += [
            sweep("lamW_lamH", "Does the learned W become a simplex ETF for every ratio of the "
                  "two ridges?", {"lam_W": list(RIDGES), "lam_H": list(RIDGES)}),
            sweep("sampling", "Does the learned W become a simplex ETF with Beta draws of lam "
                  "instead of a grid, and with only some class pairs mixed?",
                  {"alpha": [None, 0.2, 1.0, 4.0],
                   "num_pairs": sorted({K, 2 * K, K * K // 2, K * K})},
                  pairs="random", samples_per_pair=lams),
        ]  # fmt: skip
    return sweeps


def run(
    config: ReproduceConfig,
    root: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    check_memory: bool = True,
) -> dict[str, Any]:
    """Run (or reuse) every grid, then write the stage's summary.json (last)."""
    folder = prepare_run_dir(layout.stage_dir(root, layout.SWEEP))
    summary: dict[str, Any] = {"sweep_grid": config.sweep_grid, "executor": EXECUTOR,
                               "sweeps": {}}  # fmt: skip
    sweeps = planned_sweeps(config)
    for k, planned in enumerate(sweeps, 1):
        out = layout.sweep_dir(root, planned.name)
        points = planned.spec.points()
        seeds = planned.spec.seeds
        axes = [*planned.spec.grid, *([f"{len(seeds)} seeds"] if seeds else [])]
        log(f"  sweep {k}/{len(sweeps)} {planned.name}: {len(points)} points "
            f"({' x '.join(axes)})")  # fmt: skip
        started = time.perf_counter()
        with torch_threads(config.threads), warnings.catch_warnings():
            # the d grid crosses K - 1 on purpose: each such point would warn
            warnings.filterwarnings("ignore", message=r"d = \d+ < K - 1")
            rows = run_sweep(planned.spec, out, EXECUTOR, progress=progress,
                             check_memory=check_memory)
        summary["sweeps"][planned.name] = {
            "question": planned.question,
            "swept": list(planned.spec.grid),
            **({"seeds": seeds} if seeds else {}),
            "points": len(rows),
            "counts": {s: sum(r["status"] == s for r in rows)
                       for s in ("done", "failed", "pending")},
            "seconds": time.perf_counter() - started,
        }
    write_json(folder / layout.SUMMARY, summary)
    return summary
