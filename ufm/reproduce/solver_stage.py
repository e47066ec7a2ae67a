r"""Solver stage: the mixup UFM solved numerically (:func:`ufm.solve`), one folder per run.

Runs (Fisher, Meng & Papyan, ICLR 2024, arXiv:2402.06171, docs/theory.md sections 2-4):

* ``fixed_ce_lamH_<v>``: fixed simplex ETF, cross-entropy, one run per ridge of the figures,
  compared with the exact optimum (``theory_distance`` in its summary);
* ``fixed_mse``, ``fixed_label_smoothing``: the other losses with exact theory;
* ``fixed_focal``: focal loss, which has no theory: the solver gives its optimum;
* ``fixed_ce_mixtures3``: mixtures of every three classes over the grid of the weight simplex
  (``mixup_points = 3``), compared with :func:`ufm.mixture_features`;
* ``learned_<loss>``: a learned classifier from a random start (does W become an ETF?).

Solves run in float64 on the configured device (MPS, which has no float64, falls back to
the CPU) with ``threads`` torch CPU threads and the CLI's execution settings
(:data:`ufm.solver.execution.CLI_EXECUTION`): one thread was measured 20 to 80 times faster
than two on these small problems when another job shared the 2-core machine. A run folder
with ``summary.json`` is reused; one with only a checkpoint is resumed. A run interrupted
now (Ctrl-C, SIGTERM) leaves its checkpoint and re-raises KeyboardInterrupt.
After the runs: ``curves.csv`` (per run and lam, different-class pairs: the margin
:math:`z_c - z_{c'}` and :math:`\|h(\lambda)\|/\|h_\text{same}\|`, means over pairs) and one
projection file per run (:mod:`ufm.reproduce.layout`; for the 3-class run, the mixture
projection of the triple, :mod:`ufm.reproduce.mixtures`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import config_to_dict
from ..devices import resolve_device
from ..io import is_complete, prepare_run_dir, read_json, write_csv, write_json
from ..devices import torch_threads
from ..solver import CHECKPOINT, run_to_folder
from ..solver.execution import CLI_EXECUTION
from ..solver.run_folder import CHECKPOINT_EVERY
from ..solver.problem import UFMConfig
from ..solver.results import load_result
from . import layout, mixtures
from .config import ReproduceConfig
from .projection import (
    gather_pairs,
    project_mixtures,
    project_triple,
    triple_pairs,
    write_projection,
)

MIXTURE_RUN = "fixed_ce_mixtures3"  # 3-class mixtures over the weight simplex, fixed ETF
SUMMARY_KEYS = (
    "stop_reason",
    "iterations",
    "seconds",
    "n",
    "grad_norm",
    "etf_distance_W",
    "etf_distance_W_centred",
    "theory_distance",
    "theory_distance_learned_W",
)


@dataclass(frozen=True)
class SolverRun:
    """One solve of the stage: its folder name, what it shows, and its configuration."""

    name: str
    kind: str  # "fixed" or "learned"
    config: UFMConfig

    @property
    def loss(self) -> str:
        return self.config.loss


def _loss_params(config: ReproduceConfig, loss: str) -> dict[str, float]:
    return {
        "label_smoothing": {"eps": config.smoothing},
        "focal": {"gamma": config.focal_gamma},
    }.get(loss, {})


def solver_device(device: str) -> str:
    """The device of the solves: ``device``, except that MPS (no float64) falls back to the CPU."""
    return "cpu" if resolve_device(device).type == "mps" else device


def planned_runs(config: ReproduceConfig) -> list[SolverRun]:
    """The runs of the stage, in order (module docstring)."""
    device = solver_device(config.device)

    def ufm_config(loss: str, lam_H: float, classifier: str, tol: float) -> UFMConfig:
        return UFMConfig(
            K=config.K,
            d=config.d,
            pairs="all",
            num_lams=config.solver_lams,
            loss=loss,
            loss_params=_loss_params(config, loss),
            lam_H=lam_H,
            lam_W=config.lam_W,
            classifier=classifier,
            etf_scale=config.scale,
            tol=tol,
            max_iters=config.max_iters,
            device=device,
            seed=config.seed,
        )

    runs = [
        SolverRun(
            f"fixed_ce_lamH_{lam_H:g}",
            "fixed",
            ufm_config("ce", lam_H, "fixed_etf", config.fixed_tol),
        )
        for lam_H in config.all_lam_Hs
    ]
    for loss in ("mse", "label_smoothing", "focal"):
        runs.append(
            SolverRun(
                f"fixed_{loss}",
                "fixed",
                ufm_config(loss, config.lam_H, "fixed_etf", config.fixed_tol),
            )
        )
    runs.append(
        SolverRun(
            MIXTURE_RUN,
            "fixed",
            replace(
                ufm_config("ce", config.lam_H, "fixed_etf", config.fixed_tol),
                mixup_points=3,
                num_lams=mixtures.grid_points(config.solver_lams),
            ),
        )
    )
    for loss in config.learned_losses:
        runs.append(
            SolverRun(
                f"learned_{loss}",
                "learned",
                ufm_config(loss, config.lam_H, "learned", config.learned_tol),
            )
        )
    return runs


def solve_run(run: SolverRun, folder: Path, progress: bool, check_memory: bool = True) -> None:
    """Solve (or resume) one run into ``folder``; reuse it when complete.

    A checkpoint of the same configuration is resumed; anything else in the folder (a
    checkpoint of another configuration, a run stopped before its first checkpoint) is
    replaced by a fresh run.
    """
    if is_complete(folder):
        return
    resume = (folder / CHECKPOINT).is_file() and (folder / "config.json").is_file()
    if resume and read_json(folder / "config.json") != config_to_dict(run.config):
        resume = False  # a checkpoint of another configuration: start again
    result = run_to_folder(run.config, folder, resume=resume, force=True, progress=progress,
                           check_memory=check_memory,
                           checkpoint_every=CHECKPOINT_EVERY, execution=CLI_EXECUTION)
    if result.stop_reason == "interrupted":
        raise KeyboardInterrupt(f"solver run {run.name} interrupted; its checkpoint is in {folder}")


def _different_class_curves(H, W, c, c_prime, lam) -> list[dict[str, float]]:
    """Per lam: mean margin z_c - z_c' and mean |h| / mean same-class |h| (different classes)."""
    norms = np.linalg.norm(H, axis=1)
    same = c == c_prime
    same_norm = norms[same].mean()
    logits = H @ W.T
    margins = logits[np.arange(len(c)), c] - logits[np.arange(len(c)), c_prime]
    rows = []
    for value in np.unique(lam):
        pick = (~same) & (lam == value)
        rows.append(
            {
                "lam": float(value),
                "margin": float(margins[pick].mean()),
                "relative_norm": float(norms[pick].mean() / same_norm),
            }
        )
    return rows


def _summary_row(run: SolverRun, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": run.name,
        "kind": run.kind,
        "loss": run.loss,
        "lam_H": run.config.lam_H,
        "mixup_points": run.config.mixup_points,
        **{key: summary.get(key) for key in SUMMARY_KEYS},
    }


def run(
    config: ReproduceConfig,
    root: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    check_memory: bool = True,
) -> dict[str, Any]:
    """Solve every planned run, then write curves, projections and summary.json (last)."""
    folder = prepare_run_dir(layout.stage_dir(root, layout.SOLVER))
    runs = planned_runs(config)
    curves, rows = [], []
    pairs_c, pairs_cp = triple_pairs(config.triple)
    for k, planned in enumerate(runs, 1):
        run_folder = layout.solver_run(root, planned.name)
        state = "reused" if is_complete(run_folder) else "solving"
        log(f"  solver run {k}/{len(runs)} {planned.name}: {state}")
        with torch_threads(config.threads):
            solve_run(planned, run_folder, progress, check_memory)
        result = load_result(run_folder)
        rows.append(_summary_row(planned, result.summary))
        H, W = result.H.numpy(), result.W.numpy()
        if planned.config.mixup_points > 2:
            features, weights = mixtures.triple_mixtures(
                H, result.classes.numpy(), result.weights.numpy(), config.triple
            )
            write_projection(
                layout.mixture_projection(root, layout.SOLVER, "solver"),
                project_mixtures(features, weights, W, config.triple),
            )
            continue
        c, c_prime, lam = result.c.numpy(), result.c_prime.numpy(), result.lam.numpy()
        curves += [
            {"run": planned.name, **row} for row in _different_class_curves(H, W, c, c_prime, lam)
        ]
        grid = np.unique(lam)
        features = gather_pairs(H, c, c_prime, lam, pairs_c, pairs_cp, grid)
        bias = None if result.b is None else result.b.numpy()
        write_projection(
            layout.solver_projection(root, planned.name),
            project_triple(features, pairs_c, pairs_cp, grid, W, config.triple, bias=bias),
        )
    write_csv(folder / "curves.csv", curves)
    fixed = [r["theory_distance"] for r in rows if r["theory_distance"] is not None]
    summary = {
        "runs": rows,
        "max_theory_distance": max(fixed) if fixed else None,
    }
    write_json(folder / layout.SUMMARY, summary)
    return summary
