"""The minority-collapse figure of a reproduction: the exact theory of the learned classifier
under step imbalance (docs/theory.md section 13) against the imbalance ratio, with the sweep
stage's solver points on the curves of their own sizes, and, where the network stage trained
them, networks beside the theory at their own fitted lam_H.

It reads ``theory/minority_collapse.csv`` and ``theory/summary.json`` (the theory stage),
where the sweep stage has finished the points of its imbalance sweep, and where the network
stage wrote it ``networks/minority_networks.json`` (:mod:`ufm.nets.minority_study`: the
networks' seed means and spreads and the theory curves it solved); it computes nothing.
:func:`network_panel` draws one such study on any axes (:func:`network_figure`: one panel per
study, for the studies of ``scripts/minority_networks.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..io import read_json
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
    imbalance sweep's sizes with its solver points (dotted verticals: exact collapse), and
    (c) where the network stage's minority study is complete, its networks beside the theory
    at their fitted lam_H (:func:`network_panel`)."""
    root = Path(root)
    path = layout.theory_file(root, layout.MINORITY_COLLAPSE)
    numbers = stage_summary(root, layout.THEORY)["minority_collapse"]
    study = finished_study(layout.minority_networks(root))
    figure = new_figure(16.5 if study else 11.0, 4.4)
    axes = figure.subplots(1, 3 if study else 2)
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
    for ax in axes[:2]:
        ax.legend(loc="upper left", fontsize=7)
    if study:
        network_panel(axes[2], study, "(c) networks")
    figure.suptitle("Minority collapse of a learned classifier: the exact UFM optimum"
                    + (" and networks" if study else ""))
    return figure


NETWORK_STYLES = {
    "erm": {"color": OKABE_ITO["blue"], "marker": "s", "ls": "-"},
    "mixup_sample": {"color": OKABE_ITO["vermillion"], "marker": "o", "ls": "-"},
    "mixup_class": {"color": OKABE_ITO["green"], "marker": "^", "ls": "-"},
    "sample_at_class_mass": {"color": OKABE_ITO["purple"], "marker": "D", "ls": "--"},
}
"""Each network kind of :mod:`ufm.nets.minority_study`: the colours of panels (a) and (b)
for the kind of theory it is held against; the control dashed."""


def finished_study(path: Path) -> dict[str, Any] | None:
    """The minority study in ``path`` when the file exists and the study is complete (a
    stopped one holds no theory or verdicts yet), else None."""
    if not path.is_file():
        return None
    study = read_json(path)
    return study if study.get("complete") else None


def network_panel(ax, study: dict[str, Any], title: str) -> None:
    """One minority study: per network kind the seed mean of the minority cosine against rho
    (markers) with bars of one seed standard deviation (ddof 1; none with one seed), and the
    exact theory at the study's fitted lam_H and gain-matched lam_W (a line of the same
    colour); where lam_H was not fitted, no theory, and the legend says why."""
    K = int(study["K"])
    theory = [row for row in study.get("theory", []) if row["lam_W_choice"] == "gain_matched"]
    for kind in study["kinds"]:
        style = NETWORK_STYLES[kind]
        entries = sorted((e for e in study["table"] if e["kind"] == kind), key=lambda e: e["rho"])
        rho = np.array([e["rho"] for e in entries], dtype=float)
        mean = np.array([np.nan if e["minority_cosine"] is None else e["minority_cosine"]
                         for e in entries], dtype=float)
        sd = np.array([e["minority_cosine_std"] or 0.0 for e in entries], dtype=float)
        ax.errorbar(rho, mean, yerr=sd, ls="none", marker=style["marker"], mfc="none",
                    ms=5, capsize=2.5, color=style["color"], label=study["labels"][kind])
        curve = sorted((r["rho"], r["minority_cosine"]) for r in theory if r["kind"] == kind)
        if curve:
            ax.plot([c[0] for c in curve], [c[1] for c in curve], color=style["color"],
                    ls=style["ls"], lw=1.4)
    fit, lam_W = study.get("lam_H_fit") or {}, study.get("lam_W")
    if theory and lam_W:
        source = "curves" if fit.get("source") == "curve_fitted_lam_H" else "margins"
        note = (f"lines: exact theory, $\\lambda_H$ = {fit['lam_H']:.3g}\n(fitted on the "
                f"$\\rho$ = 1 {source}), $\\lambda_W$ = {lam_W['value']:.3g} (gain-matched)")
    else:
        note = f"no theory: $\\lambda_H$ not fitted ({fit.get('status', 'no fit')})"
    ax.axhline(-1.0 / (K - 1), color="black", ls=(0, (5, 3)), lw=1.0,
               label=f"simplex ETF, -1/(K-1) = {-1.0 / (K - 1):.3g}")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_xscale("log")
    rhos = sorted({e["rho"] for e in study["table"]})
    ax.set_xticks(rhos, [f"{r:g}" for r in rhos])
    ax.minorticks_off()
    ax.set_xlabel("imbalance ratio rho")
    ax.set_ylabel("cosine between minority rows of W")
    ax.set_title(f"{title}: {study['dataset']}, {study['epochs']} epochs, "
                 f"{len(study['seeds'])} seeds (bars: seed sd)")
    ax.legend(loc="upper left", fontsize=6.5, title=f"markers: networks; {note}",
              title_fontsize=6.5, alignment="left")


def network_figure(studies: list[dict[str, Any]]) -> Figure:
    """One :func:`network_panel` per finished minority study (the JSON files of
    ``scripts/minority_networks.py``), side by side."""
    figure = new_figure(5.6 * len(studies), 4.6)
    axes = np.atleast_1d(figure.subplots(1, len(studies)))
    for ax, study, letter in zip(axes, studies, "abcdefgh"):
        network_panel(ax, study, f"({letter})")
    figure.suptitle("Minority collapse of networks beside the exact UFM optimum")
    return figure


def collapse_numbers(numbers: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Per kind, (label, ratio where the cosine crosses 0, ratio of exact collapse) as text."""
    def text(value):
        return "never" if value is None or not math.isfinite(value) else f"{value:.4g}"

    return [(numbers[kind]["label"], text(numbers[kind]["threshold"]),
             text(numbers[kind]["exact_collapse"])) for kind in KIND_STYLES]
