r"""Figures 6, 7 and 8: quantities along training and across layers.

* Figure 6: neural-collapse metrics over the epochs of ERM and mixup networks with a learned
  and with a fixed simplex-ETF classifier (NC1-NC4 as defined in :mod:`ufm.metrics`: Papyan,
  Han & Donoho, PNAS 2020), and the test ECE.
* Figure 7: a learned classifier in the UFM: distance of :math:`W` to a simplex ETF and the
  gradient norm against the solver's iterations.
* Figure 8: layer-wise non-linearity along input segments (Chaudhry et al., "When does mixup
  promote local linearity in learned representations?", 2022), ERM vs mixup.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..reproduce import layout
from .files import (
    network_label,
    network_measurement,
    read_table,
    reproduction_config,
    stage_summary,
)
from .style import (
    CLASSIFIER_MARKERS,
    CLASSIFIER_STYLES,
    LOSS_COLOURS,
    LOSS_NAMES,
    TRAINING_COLOURS,
    new_figure,
)

COLLAPSE_PANELS = (
    ("nc1", r"NC1 = tr$(\Sigma_W\Sigma_B^+)/K$", "log", True),
    ("nc2_M", r"NC2 of class means: ETF distance of $M^\top M$", "log", True),
    ("nc2_W", r"NC2 of the classifier: ETF distance of $WW^\top$", "log", False),
    ("nc3", r"NC3: $\|W^\top/\|W\|_F - M/\|M\|_F\|_F^2$", "log", True),
    ("nc4", "NC4: argmax differs from nearest class mean", "linear", True),
    ("test_ece", "test ECE (15 equal-width bins), every epoch", "log", True),
)


def _run_style(name: str) -> dict:
    training, classifier = name.split("_", 1)
    return {"color": TRAINING_COLOURS[training == "mixup"], "ls": CLASSIFIER_STYLES[classifier]}


def _network_handles() -> list[Line2D]:
    return [
        Line2D(
            [],
            [],
            lw=1.8,
            marker=CLASSIFIER_MARKERS[classifier],
            ms=4,
            label=network_label(name),
            **_run_style(name),
        )
        for name, _, classifier in layout.NETWORK_RUNS
    ]


def collapse(root: Path) -> Figure:
    """Figure 6."""
    stage = stage_summary(root, layout.NETWORKS)
    figure = new_figure(13.5, 7.6)
    axes = figure.subplots(2, 3).ravel()
    for ax, (key, title, scale, with_fixed) in zip(axes, COLLAPSE_PANELS):
        for name, _, classifier in layout.NETWORK_RUNS:
            if classifier == "fixed_etf" and not with_fixed:
                continue
            metrics = read_table(layout.network_run(root, name) / "metrics.csv")
            measured = np.isfinite(metrics[key])
            every_epoch = measured.all()
            ax.plot(
                metrics["epoch"][measured],
                metrics[key][measured],
                lw=1.6 if every_epoch else 1.8,
                marker=None if every_epoch else CLASSIFIER_MARKERS[classifier],
                ms=4,
                **_run_style(name),
            )
        ax.set_yscale(scale)
        ax.set_xlabel("epoch")
        ax.set_ylabel(
            f"{key.replace('_', ' ')} (dimensionless)" if key != "test_ece" else "ECE (fraction)"
        )
        ax.set_title(
            title + ("\n(fixed ETF: 0 by construction, not drawn)" if not with_fixed else "")
        )
    figure.legend(handles=_network_handles(), loc="outside lower center", ncols=4, frameon=False)
    figure.suptitle(
        f"Neural collapse during training on {stage['dataset']} ({stage['model'].upper()}): ERM vs "
        "mixup (colour), learned vs fixed simplex-ETF classifier (line style); clean training data",
        fontsize=11,
    )
    return figure


def learned_classifier(root: Path) -> Figure:
    """Figure 7."""
    config = reproduction_config(root)
    runs = [r for r in stage_summary(root, layout.SOLVER)["runs"] if r["kind"] == "learned"]
    figure = new_figure(12.0, 5.0)
    etf_ax, grad_ax = figure.subplots(1, 2)
    handles = []
    for run in runs:
        history = read_table(layout.solver_run(root, run["name"]) / "history.csv")
        colour = LOSS_COLOURS[run["loss"]]
        etf_ax.plot(
            history["iteration"], history["etf_distance_W"], color=colour, marker="o", ms=3, lw=1.6
        )
        grad_ax.plot(
            history["iteration"], history["grad_norm"], color=colour, marker="o", ms=3, lw=1.6
        )
        handles.append(
            Line2D(
                [],
                [],
                color=colour,
                marker="o",
                ms=3,
                lw=1.6,
                label=f"{LOSS_NAMES[run['loss']]}: {run['stop_reason']} after "
                f"{run['iterations']} iterations, {run['seconds']:.1f} s",
            )
        )
    grad_ax.axhline(config["learned_tol"], color="0.3", ls=":", lw=1.2)
    handles.append(
        Line2D(
            [],
            [],
            color="0.3",
            ls=":",
            lw=1.2,
            label=f"stopping tolerance {config['learned_tol']:g}",
        )
    )
    for ax in (etf_ax, grad_ax):
        ax.set_yscale("log")
        ax.set_xlabel("solver iteration (L-BFGS on $W$, features solved exactly)")
    etf_ax.set_ylabel(r"ETF distance $\|G/\|G\|_F - (I - 11^\top/K)/\sqrt{K-1}\|_F$, $G = WW^\top$")
    etf_ax.set_title("(a) the learned classifier approaches a simplex ETF")
    grad_ax.set_ylabel("gradient norm (scale-free, see ufm.solver)")
    grad_ax.set_title("(b) ... at a stationary point of the UFM")
    figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    figure.suptitle(
        f"Learned classifier in the mixup UFM from a random start ($K$={config['K']}, "
        f"$d$={config['d']}, $\\lambda_H$={config['lam_H']:g}, $\\lambda_W$={config['lam_W']:g}, "
        "all class pairs on a $\\lambda$ grid)",
        fontsize=11,
    )
    return figure


def linearity(root: Path) -> Figure:
    """Figure 8."""
    stage = stage_summary(root, layout.NETWORKS)
    figure = new_figure(8.5, 5.4)
    ax = figure.subplots()
    blocks = 0
    for name, _, classifier in layout.NETWORK_RUNS:
        table = read_table(network_measurement(root, name) / "linearity.csv")
        blocks = max(blocks, len(table["layer"]))
        ax.plot(
            table["layer"],
            table["nonlinearity"],
            marker=CLASSIFIER_MARKERS[classifier],
            ms=6,
            lw=1.8,
            **_run_style(name),
        )
    ax.set_xticks(np.arange(1, blocks + 1))
    ax.set_xlabel(f"hidden block (1 = nearest the input, {blocks} = feature layer)")
    ax.set_ylabel(
        r"non-linearity $\|f(x_\lambda) - [\lambda f(x_i) + (1-\lambda) f(x_j)]\| \,/\, \|f(x_i) - f(x_j)\|$"
    )
    ax.set_ylim(bottom=0)
    ax.set_title(
        "mean over random training pairs and interior $\\lambda$ (0 = affine along segments)"
    )
    figure.legend(handles=_network_handles(), loc="outside lower center", ncols=2, frameon=False)
    figure.suptitle(
        f"Layer-wise linearity along input segments, ERM vs mixup ({stage['dataset']}, "
        f"{stage['model'].upper()}, after {stage['epochs']} epochs)",
        fontsize=11,
    )
    return figure
