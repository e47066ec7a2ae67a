r"""Figure 5: calibration of the UFM optimum and of ERM and mixup networks.

The theoretical probability :math:`p_c` of a mixed sample against lam (it tends to the ideal
diagonal :math:`p_c = \lambda` as :math:`\lambda_H \to 0`), the mean :math:`p_c` of the mixup
networks, and reliability diagrams with ECE of ERM and mixup networks on clean test data
(Guo et al., "On calibration of modern neural networks", ICML 2017). Every number is read
from the reproduction's files (:mod:`ufm.reproduce.layout`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

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
    LAM_LABEL,
    LIMIT_STYLE,
    MIXUP_NETWORKS,
    NETWORK_COLOURS,
    OKABE_ITO,
    TRAINING_COLOURS,
    new_figure,
    ridge_colours,
)


def _reliability(ax, table: dict[str, np.ndarray], title: str, colour: str) -> None:
    width = table["upper"] - table["lower"]
    centres = (table["upper"] + table["lower"]) / 2
    filled = table["count"] > 0
    ax.bar(
        centres[filled],
        table["accuracy"][filled],
        width=width[filled],
        color=colour,
        alpha=0.85,
        edgecolor="white",
        label="accuracy in the bin",
    )
    ax.bar(
        centres[filled],
        (table["confidence"] - table["accuracy"])[filled],
        bottom=table["accuracy"][filled],
        width=width[filled],
        color="none",
        edgecolor=OKABE_ITO["black"],
        hatch="///",
        lw=0.6,
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], **LIMIT_STYLE, label="perfect calibration")
    for x, count in zip(centres[filled], table["count"][filled]):
        ax.text(
            x,
            0.015,
            f"{int(count)}",
            rotation=90,
            ha="center",
            va="bottom",
            fontsize=7,
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence: top softmax probability")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(title)


def calibration(root: Path) -> Figure:
    """Figure 5."""
    config = reproduction_config(root)
    theory_file = layout.theory_file(root, "curves.csv")
    lam_Hs = sorted({float(v) for v in read_table(theory_file, loss="ce")["lam_H"]}, reverse=True)
    figure = new_figure(15.5, 5.6)
    theory_ax, erm_ax, mixup_ax = figure.subplots(1, 3)
    handles = []
    for lam_H, colour in zip(lam_Hs, ridge_colours(len(lam_Hs))):
        rows = read_table(theory_file, loss="ce", lam_H=lam_H)
        theory_ax.plot(rows["lam"], rows["p_c"], color=colour, lw=1.8)
        handles.append(
            Line2D([], [], color=colour, lw=1.8, label=f"theory (CE), $\\lambda_H$={lam_H:g}")
        )
    smooth = read_table(theory_file, loss="label_smoothing")
    theory_ax.plot(smooth["lam"], smooth["p_c"], color=OKABE_ITO["green"], lw=1.5, ls="-.")
    handles.append(
        Line2D(
            [],
            [],
            color=OKABE_ITO["green"],
            lw=1.5,
            ls="-.",
            label=f"theory, label smoothing $\\varepsilon$={config['smoothing']:g}, "
            f"$\\lambda_H$={config['lam_H']:g}",
        )
    )
    for name in MIXUP_NETWORKS:
        curves = read_table(layout.network_curves(root, name))
        marker = CLASSIFIER_MARKERS[name.split("_", 1)[1]]
        theory_ax.plot(
            curves["lam"],
            curves["p_c_mean"],
            ls="",
            marker=marker,
            ms=5,
            color=NETWORK_COLOURS[name],
        )
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker=marker,
                ms=5,
                color=NETWORK_COLOURS[name],
                label=f"network, {network_label(name)}: mean $p_c$",
            )
        )
    theory_ax.plot([0, 1], [0, 1], **LIMIT_STYLE)
    handles.append(Line2D([], [], **LIMIT_STYLE, label=r"ideal: $p_c = \lambda$"))
    theory_ax.set_xlim(0, 1)
    theory_ax.set_ylim(0, 1)
    theory_ax.set_xlabel(LAM_LABEL)
    theory_ax.set_ylabel(r"probability of class $c$, $p_c$ (softmax)")
    theory_ax.set_title("(a) confidence in class $c$ of a mixed sample")
    runs = stage_summary(root, layout.NETWORKS)["runs"]
    for ax, name, letter in ((erm_ax, "erm_learned", "b"), (mixup_ax, "mixup_learned", "c")):
        table = read_table(network_measurement(root, name) / "reliability.csv")
        run = runs[name]
        _reliability(
            ax,
            table,
            f"({letter}) {network_label(name)}: ECE = {run['ece']:.3f}, "
            f"accuracy = {run['test_accuracy']:.3f}\nclean test data; numbers: samples per bin",
            TRAINING_COLOURS[name.startswith("mixup")],
        )
    # The bars' swatches in each panel's own colour (the gap and the diagonal are shared).
    bins = [
        Patch(facecolor=TRAINING_COLOURS[mixup], alpha=0.85,
              label=f"accuracy in the bin, {'mixup' if mixup else 'ERM'} (b, c)")
        for mixup in (False, True)
    ] + [handle for handle, label in zip(*mixup_ax.get_legend_handles_labels())
         if label != "accuracy in the bin"]  # fmt: skip
    figure.legend(handles=handles + bins, loc="outside lower center", ncols=4, frameon=False)
    figure.suptitle(
        "Calibration: the UFM's confidence follows $\\lambda$ as $\\lambda_H \\to 0$ (a);\n"
        f"reliability of ERM vs mixup networks on clean test data (b, c; "
        f"{stage_summary(root, layout.NETWORKS)['dataset']}, equal-width bins)",
        fontsize=11,
    )
    return figure
