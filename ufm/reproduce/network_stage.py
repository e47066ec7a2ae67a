r"""Network stage: ERM and mixup networks, each with a learned and a fixed simplex-ETF classifier.

Each run is :func:`ufm.nets.run_training` in its own folder (:data:`ufm.reproduce.layout.NETWORK_RUNS`):
a complete folder is reused, one with a checkpoint is resumed, one interrupted before its
first checkpoint is started again. After each run the stage writes, from the run's final
measurement (Fisher, Meng & Papyan, ICLR 2024, arXiv:2402.06171):

* ``curves_<run>.csv``, per lam: the network's mean margin :math:`z_c - z_{c'}` (and its
  standard deviation) over different-class training pairs beside the UFM margin at the fitted
  :math:`\lambda_H` (the run's ``theory_vs_lam.csv``); the relative norm
  :math:`\operatorname{mean}\|P\tilde h(\lambda)\|/\operatorname{mean}\|P\tilde h_\text{same}\|`
  of the centred features :math:`\tilde h = h - \mu_G` projected onto the row space of
  :math:`W` (the part the classifier sees; the UFM's ridge removes the rest) beside the
  UFM's :math:`\|h(\lambda)\|/\|h_\text{same}\|` for the network's gain at the fitted
  :math:`\lambda_H`; mean :math:`p_c` beside the UFM's;
* ``projection_<run>.npz``: the triple's mixed activations in the classifier plane.

Then one more run, :data:`ufm.reproduce.layout.MIXTURE_NETWORK_RUN`: 3-point mixup
(Dirichlet weights) with a fixed simplex ETF, whose 3-class mixture measurements give the
mixture projection of the figure and the ``mixture_run`` entry of the stage summary.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..etf import row_norm, row_space
from ..io import is_complete, prepare_run_dir, read_csv, read_json, write_csv, write_json
from ..nets.run import LAST_CHECKPOINT, run_training
from ..theory import theory_table
from . import layout, mixtures
from .config import ReproduceConfig
from .projection import project_triple, write_projection


def train_run(train_config, folder: Path, progress: bool) -> None:
    """Train one network run into ``folder``: reuse it when complete, resume it from its
    last checkpoint, or start again when it stopped before the first checkpoint."""
    if is_complete(folder):
        return
    resume = (folder / LAST_CHECKPOINT).is_file()
    if not resume and folder.exists():
        shutil.rmtree(folder)  # interrupted before its first checkpoint: nothing to keep
    run_training(train_config, folder, resume=resume, progress=progress)


def relative_norms(activations: dict[str, np.ndarray]) -> np.ndarray:
    """Per lam: mean in-span norm of different-class features over that of same-class ones."""
    weight = activations["weight"]
    span = row_space(weight)
    H = (activations["features"].astype(np.float64) - activations["global_mean"]) @ span
    norms = np.linalg.norm(H, axis=-1)  # (P, L)
    same = activations["c"] == activations["c_prime"]
    return norms[~same].mean(axis=0) / norms[same].mean()


def theory_relative_norms(K: int, gain: float, lam_H: float, lams: np.ndarray) -> np.ndarray:
    """UFM |h(lam)| / |h_same| for a simplex ETF of gain ``gain`` (cross-entropy)."""
    table = theory_table(K, lam_H, row_norm(K, gain), "ce", lams)
    same = table["same_class"].feature_norm
    return np.asarray([row.feature_norm / same for row in table["rows"]])


def curve_rows(measurement: Path, summary: dict[str, Any]) -> list[dict[str, float]]:
    """The per-lam comparison of the module docstring, from a final measurement folder."""
    table = read_csv(measurement / "theory_vs_lam.csv")
    with np.load(measurement / "activations_all.npz") as data:
        activations = {k: data[k] for k in data.files}
    lams = activations["lam"]
    K = activations["weight"].shape[0]
    network = relative_norms(activations)
    fitted = summary["fitted_lam_H"]
    theory = (
        theory_relative_norms(K, summary["classifier_gain"], fitted, lams)
        if isinstance(fitted, float) and math.isfinite(fitted)
        else np.full(len(lams), np.nan)
    )
    rows = []
    for l, row in enumerate(table):
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


def _mixture_run(config: ReproduceConfig, root, progress: bool, log) -> dict[str, Any]:
    """The network trained with 3-point mixup (fixed simplex ETF): its mixture projection
    and the scalars of its 3-class mixture measurements."""
    name = layout.MIXTURE_NETWORK_RUN
    run_folder = layout.network_run(root, name)
    log(f"  network run {name} (3-point mixup, alpha={config.alpha:g}, fixed_etf): "
        f"{_state(run_folder)}")
    train_run(config.train_config(config.alpha, "fixed_etf", mixup_points=3), run_folder, progress)
    summary = read_json(run_folder / layout.SUMMARY)
    measurement = layout.final_measurement(run_folder, config.epochs)
    write_projection(
        layout.mixture_projection(root, layout.NETWORKS, "network"),
        mixtures.network_projection(measurement, config.triple),
    )
    keys = ("test_accuracy", "fitted_lam_H") + tuple(k for k in summary if k.startswith("mixture3_"))
    return {"name": name, "alpha": config.alpha, **{k: summary.get(k) for k in keys}}


def run(
    config: ReproduceConfig,
    root: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train every network run, then write curves, projections and summary.json (last)."""
    folder = prepare_run_dir(layout.stage_dir(root, layout.NETWORKS))
    runs = {}
    for k, (name, mixup, classifier) in enumerate(layout.NETWORK_RUNS, 1):
        alpha = config.alpha if mixup else 0.0
        run_folder = layout.network_run(root, name)
        state = _state(run_folder)
        log(
            f"  network run {k}/{len(layout.NETWORK_RUNS)} {name} "
            f"(alpha={alpha:g}, {classifier}): {state}"
        )
        train_run(config.train_config(alpha, classifier), run_folder, progress)
        summary = read_json(run_folder / layout.SUMMARY)
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
        "runs": runs,
        "mixture_run": _mixture_run(config, root, progress, log),
    }
    write_json(folder / layout.SUMMARY, stage)
    return stage
