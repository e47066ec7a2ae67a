r"""Network stage: ERM and mixup networks, each with a learned and a fixed simplex-ETF classifier.

Each run is :func:`ufm.nets.run_training` in its own folder (:data:`ufm.reproduce.layout.NETWORK_RUNS`):
a complete folder is reused, one with a checkpoint is resumed, one interrupted before its
first checkpoint is started again. After each run the stage writes, from the run's final
measurement (Fisher, Meng & Papyan, ICLR 2024, arXiv:2402.06171):

* ``curves_<run>.csv``, per lam: the network's mean centred margin :math:`z_c - z_{c'}` (the
  logit offset :math:`W\mu_G + b` taken out; and its standard deviation) over different-class
  training pairs beside the UFM margin at the :math:`\lambda_H` fitted on the margins (the
  run's ``theory_vs_lam.csv``); the relative norm of the cell means of
  :math:`P_W(h - \mu_G)` (different-class over same-class, :mod:`ufm.nets.cell_means`) beside
  the UFM's :math:`\|h(\lambda)\|/\|h_\text{same}\|` at the :math:`\lambda_H` fitted on the
  coefficient curves; mean :math:`p_c` beside the UFM's; and the coefficient curves
  :math:`\hat a/\bar a_\text{same}`, :math:`\hat b/\bar a_\text{same}` with their pair,
  class-pair and quoted errors beside the cross-entropy optimum, the squared-error null and
  the exact optimum for the run's own W (the run's ``coefficients_vs_lam.csv``, :mod:`ufm.nets.cell_comparison`);
* ``projection_<run>.npz``: the triple's mixed activations in the classifier plane.

With ``seeds`` > 1 every run also trains with the seeds after the first
(:func:`ufm.reproduce.layout.network_seed_run`: ``<run>_seed<s>``); the files above and the
summary's ``runs`` come from the first seed, and ``seed_runs`` holds each run's summary per
seed (the first included) for the report, which compares the runs over their seeds.

Then one more run, :data:`ufm.reproduce.layout.MIXTURE_NETWORK_RUN`: 3-point mixup
(Dirichlet weights) with a fixed simplex ETF, whose 3-class mixture measurements give the
mixture projection of the figure and the ``mixture_run`` entry of the stage summary; it
runs with the first seed only (no claim compares it with another run).

Last, when ``minority_epochs`` > 0 (the full preset), the minority-collapse study of networks
(:mod:`ufm.nets.minority_study`, :func:`minority_settings`): ``minority_networks.json``,
written after every one of its runs and continued from there after an interruption (its
runs train in temporary folders, which it deletes), and its lam_H fit and verdicts in the
summary's ``minority_networks``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..etf import row_norm
from ..io import is_complete, prepare_run_dir, read_csv, read_json, write_csv, write_json
from ..nets.minority_study import StudySettings, run_study
from ..nets.run import LAST_CHECKPOINT, run_training
from ..theory import theory_table
from . import layout, mixtures
from .config import ReproduceConfig
from .projection import project_triple, write_projection


def train_run(train_config, folder: Path, progress: bool, check_memory: bool = True) -> None:
    """Train one network run into ``folder``: reuse it when complete, resume it from its
    last checkpoint, or start again when it stopped before the first checkpoint."""
    if is_complete(folder):
        return
    resume = (folder / LAST_CHECKPOINT).is_file()
    if not resume and folder.exists():
        shutil.rmtree(folder)  # interrupted before its first checkpoint: nothing to keep
    run_training(train_config, folder, resume=resume, progress=progress, check_memory=check_memory)


def relative_norms(cells: dict[str, np.ndarray]) -> np.ndarray:
    r"""Per lam: mean norm of the different-class cell means over the mean norm of the
    same-class ones (cell means of :math:`P_W(h - \mu_G)`, :mod:`ufm.nets.cell_means`)."""
    norms = np.linalg.norm(cells["means"], axis=-1)  # (C, L)
    same = cells["c"] == cells["c_prime"]
    return norms[~same].mean(axis=0) / norms[same].mean()


def theory_relative_norms(K: int, gain: float, lam_H: float, lams: np.ndarray) -> np.ndarray:
    """UFM |h(lam)| / |h_same| for a simplex ETF of gain ``gain`` (cross-entropy)."""
    table = theory_table(K, lam_H, row_norm(K, gain), "ce", lams)
    same = table["same_class"].feature_norm
    return np.asarray([row.feature_norm / same for row in table["rows"]])


COEFFICIENT_COLUMNS = (
    "a_norm", "a_norm_se", "b_norm", "b_norm_se", "ce_a_norm", "ce_b_norm", "null_a_norm",
    "null_b_norm", "exact_W_a_norm", "exact_W_b_norm", "residual",
)  # fmt: skip
ERROR_COLUMNS = ("a_norm_se_cells", "a_norm_error", "b_norm_se_cells", "b_norm_error")
"""Class-pair and quoted errors of the curves, copied when the measurement has them (a run
measured before they existed has not: its figure falls back to the pairs' errors)."""


def curve_rows(measurement: Path, summary: dict[str, Any]) -> list[dict[str, float]]:
    """The per-lam comparison of the module docstring, from a final measurement folder."""
    table = read_csv(measurement / "theory_vs_lam.csv")
    coefficients = read_csv(measurement / "coefficients_vs_lam.csv")
    with np.load(measurement / "cells.npz") as data:
        cells = {k: data[k] for k in data.files}
    lams = cells["lam"]
    K = cells["weight"].shape[0]
    network = relative_norms(cells)
    fitted = summary["curve_fitted_lam_H"]
    theory = (
        theory_relative_norms(K, summary["classifier_gain"], fitted, lams)
        if isinstance(fitted, float) and math.isfinite(fitted)
        else np.full(len(lams), np.nan)
    )
    rows = []
    for l, (row, coefficient) in enumerate(zip(table, coefficients)):
        rows.append(
            {
                "lam": float(row["lam"]),
                "margin_mean": float(row["margin_mean"]),
                "margin_std": float(row["margin_std"]),
                "margin_theory": float(row["margin_theory"]),
                "relative_norm": float(network[l]),
                "relative_norm_theory": float(theory[l]),
                "p_c_mean": float(row["p_c_mean"]),
                "p_c_theory": float(row["theory_p_c"]),
                "confidence_mean": float(row["confidence_mean"]),
                **{key: float(coefficient[key]) for key in COEFFICIENT_COLUMNS},
                **{key: float(coefficient[key]) for key in ERROR_COLUMNS if key in coefficient},
            }
        )
    return rows


def projection(measurement: Path, triple) -> dict[str, np.ndarray]:
    with np.load(measurement / "activations_triple.npz") as data:
        acts = {k: data[k] for k in data.files}
    return project_triple(
        acts["features"],
        acts["c"],
        acts["c_prime"],
        acts["lam"],
        acts["weight"],
        triple,
        centre=acts["global_mean"],
        bias=acts["bias"],
    )


def _state(run_folder: Path) -> str:
    if is_complete(run_folder):
        return "reused"
    return "resuming" if (run_folder / LAST_CHECKPOINT).is_file() else "training"


def _mixture_run(config: ReproduceConfig, root, progress: bool, log,
                 check_memory: bool = True) -> dict[str, Any]:
    """The network trained with 3-point mixup (fixed simplex ETF): its mixture projection
    and the scalars of its 3-class mixture measurements."""
    name = layout.MIXTURE_NETWORK_RUN
    run_folder = layout.network_run(root, name)
    log(
        f"  network run {name} (3-point mixup, alpha={config.alpha:g}, fixed_etf): "
        f"{_state(run_folder)}"
    )
    train_run(config.train_config(config.alpha, "fixed_etf", mixup_points=3), run_folder, progress,
              check_memory)
    summary = read_json(run_folder / layout.SUMMARY)
    measurement = layout.final_measurement(run_folder, config.epochs)
    write_projection(
        layout.mixture_projection(root, layout.NETWORKS, "network"),
        mixtures.network_projection(measurement, config.triple),
    )
    keys = ("test_accuracy", "fitted_lam_H", "amplification", "amplification_theory") + tuple(
        k for k in summary if k.startswith("mixture3_")
    )
    return {"name": name, "alpha": config.alpha, **{k: summary.get(k) for k in keys}}


def run(
    config: ReproduceConfig,
    root: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    check_memory: bool = True,
) -> dict[str, Any]:
    """Train every network run (each seed), then write curves, projections and summary.json
    (last)."""
    folder = prepare_run_dir(layout.stage_dir(root, layout.NETWORKS))
    seeds = config.seed_values
    runs, seed_runs = {}, {}
    total = len(layout.NETWORK_RUNS) * len(seeds)
    for k, (name, mixup, classifier, seed) in enumerate(
            ((*run, seed) for run in layout.NETWORK_RUNS for seed in seeds), 1):
        alpha = config.alpha if mixup else 0.0
        run_folder = layout.network_seed_run(root, name, seed, config.seed)
        state = _state(run_folder)
        seed_words = f", seed {seed}" if len(seeds) > 1 else ""
        log(
            f"  network run {k}/{total} {run_folder.name} "
            f"(alpha={alpha:g}, {classifier}{seed_words}): {state}"
        )
        train_run(config.train_config(alpha, classifier, seed=seed), run_folder, progress,
                  check_memory)
        summary = read_json(run_folder / layout.SUMMARY)
        seed_runs.setdefault(name, []).append({**summary, "seed": seed, "folder": run_folder.name})
        if seed != config.seed:
            continue
        measurement = layout.final_measurement(run_folder, config.epochs)
        write_csv(layout.network_curves(root, name), curve_rows(measurement, summary))
        write_projection(
            layout.network_projection(root, name), projection(measurement, config.triple)
        )
        runs[name] = {
            "alpha": alpha,
            "classifier": classifier,
            **summary,
        }
    stage = {
        "dataset": config.dataset,
        "model": config.model,
        "epochs": config.epochs,
        "seeds": seeds,
        "runs": runs,
        "seed_runs": seed_runs,
        "mixture_run": _mixture_run(config, root, progress, log, check_memory),
    }
    if config.minority_epochs > 0:
        stage["minority_networks"] = minority_study(config, root, log)
    write_json(folder / layout.SUMMARY, stage)
    return stage


def minority_settings(config: ReproduceConfig) -> StudySettings:
    """The minority study of a reproduction: ``minority_dataset`` for ``minority_epochs``
    epochs with the reproduction's seeds, mixup alpha, device and threads, every rho and
    kind of :mod:`ufm.nets.minority_study`."""
    return StudySettings(dataset=config.minority_dataset, epochs=config.minority_epochs,
                         seeds=config.seed_values, alpha=config.alpha, device=config.device,
                         threads=config.threads)


def minority_study(config: ReproduceConfig, root, log: Callable[[str], None] = print,
                   ) -> dict[str, Any]:
    """Run (or continue) the minority study into ``networks/minority_networks.json``; its
    fit, lam_W and verdicts for the stage summary."""
    settings = minority_settings(config)
    path = layout.minority_networks(root)
    log(f"  minority study: {settings.dataset}, {settings.epochs} epochs, "
        f"{len(settings.seeds)} seed(s), {path}")
    study = run_study(settings, path, resume=True, log=lambda line: log(f"    {line}"))
    return {"dataset": study["dataset"], "epochs": study["epochs"], "seeds": study["seeds"],
            "file": path.name, "lam_H_fit": study["lam_H_fit"], "lam_W": study["lam_W"],
            "verdicts": {p["name"]: p["verdict"] for p in study["predictions"]}}
