"""The minority-collapse figure of a reproduction: the exact theory of the learned classifier
under step imbalance (docs/theory.md section 13) against the imbalance ratio, with the sweep
stage's solver points on the curves of their own sizes.

It reads ``theory/minority_collapse.csv`` and ``theory/summary.json`` (the theory stage) and,
where the sweep stage has finished, the points of its imbalance sweep; it computes nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..reproduce import layout
from .files import read_table, stage_summary
from .style import OKABE_ITO, new_figure
from .sweep_files import is_plain, is_sweep, point_config, read_sweep

KIND_STYLES = {
    "sample": {"color": OKABE_ITO["vermillion"], "label": "mixup, sample pairing"},
    "class": {"color": OKABE_ITO["green"], "label": "mixup, class pairing"},
    "plain": {"color": OKABE_ITO["blue"], "label": "plain training"},
}


def _sweep_points(root: Path) -> dict[str, list[tuple[float, float]]]:
    """(rho, minority cosine) of every finished point of the imbalance sweep, per kind."""
    folder = layout.sweep_dir(root, layout.IMBALANCE_SWEEP)
    points: dict[str, list[tuple[float, float]]] = {}
    if not is_sweep(folder):
        return points
    for row in read_sweep(folder)["points"]:
        config = point_config(folder, row)
        cosine = row.get("minority_cosine")
        if row.get("status") != "done" or config is None or cosine is None:
            continue
        kind = "plain" if is_plain(config) else config.get("pairing", "sample")
        points.setdefault(kind, []).append((float(config["imbalance_ratio"]), float(cosine)))
    return points


def _panel(ax, table: dict[str, np.ndarray], numbers: dict[str, Any], title: str) -> None:
    K = int(numbers["K"])
    for kind, style in KIND_STYLES.items():
        chosen = table["kind"] == kind
        ratio, cosine = table["imbalance_ratio"][chosen], table["minority_cosine"][chosen]
        ax.plot(ratio, cosine, color=style["color"], lw=1.8, label=style["label"] + " (exact)")
        exact = numbers[kind]["exact_collapse"]
        if exact is not None and exact <= ratio.max():
            ax.axvline(exact, color=style["color"], ls=":", lw=1.0)
    ax.axhline(-1.0 / (K - 1), color="black", ls=(0, (5, 3)), lw=1.0,
               label=f"simplex ETF, -1/(K-1) = {-1.0 / (K - 1):.3g}")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.axhline(1.0, color="black", ls=":", lw=1.0, label="minority rows equal")
    ax.set_xscale("log")
    ax.set_xlabel("imbalance ratio rho (majority / minority samples)")
    ax.set_ylabel("cosine between minority rows of W")
    ax.set_title(title)


def minority_collapse(root: str | Path) -> Figure:
    """Exact minority cosine against rho for mixup with sample and with class pairing and
    for plain training: (a) at the reproduction's K with K // 2 minority classes, (b) at the
    imbalance sweep's sizes with its solver points (dotted verticals: exact collapse)."""
    root = Path(root)
    path = layout.theory_file(root, layout.MINORITY_COLLAPSE)
    numbers = stage_summary(root, layout.THEORY)["minority_collapse"]
    figure = new_figure(11.0, 4.4)
    axes = figure.subplots(1, 2)
    for ax, setting, letter in zip(axes, ("reproduction", "sweep"), "ab"):
        table = read_table(path, setting=setting)
        given = numbers[setting]
        _panel(ax, table, given,
               f"({letter}) K = {given['K']}, {given['minority_classes']} minority classes, "
               f"{given['num_lams']} lams")
    points = _sweep_points(root)
    for kind, values in points.items():
        values.sort()
        style = KIND_STYLES.get(kind, KIND_STYLES["sample"])
        axes[1].plot([v[0] for v in values], [v[1] for v in values], ls="none", marker="o",
                     mfc="none", color=style["color"], label=f"{style['label']} (UFM solver)")
    if not points:
        axes[1].text(0.02, 0.02, "no imbalance sweep in this folder", transform=axes[1].transAxes,
                     fontsize=8, color=OKABE_ITO["vermillion"])
    for ax in axes:
        ax.legend(loc="upper left", fontsize=7)
    figure.suptitle("Minority collapse of a learned classifier: the exact UFM optimum")
    return figure


def collapse_numbers(numbers: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Per kind, (label, ratio where the cosine crosses 0, ratio of exact collapse) as text."""
    def text(value):
        return "never" if value is None or not math.isfinite(value) else f"{value:.4g}"

    return [(numbers[kind]["label"], text(numbers[kind]["threshold"]),
             text(numbers[kind]["exact_collapse"])) for kind in KIND_STYLES]
