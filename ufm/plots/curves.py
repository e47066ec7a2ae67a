r"""Figures 2 and 3: quantities of different-class mixtures against lam and lam_H.

* Figure 2: the logit margin :math:`z_c - z_{c'}` and the relative feature norm
  :math:`\|h(\lambda)\|/\|h_\text{same}\|` against lam: exact theory for several
  :math:`\lambda_H`, UFM solver points, mixup networks with the theory at their fitted
  :math:`\lambda_H`, and the log-odds limit :math:`\log(\lambda/(1-\lambda))`.
* Figure 3: the channels as :math:`\lambda_H` shrinks: distance from the :math:`c/c'`
  boundary against position along :math:`w_c + w_{c'}`, the distance against lam with its
  limit, and the unbounded growth of the position with its asymptote.

Every number is read from the reproduction's files (:mod:`ufm.reproduce.layout`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..reproduce import layout
from .coefficients import lam_H_words
from .files import (
    network_label,
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
    new_figure,
    ridge_colours,
)

CHANNEL_LAMS = (0.1, 0.25, 0.5, 0.75, 0.9)
CHANNEL_MARKERS = ("v", "s", "*", "D", "^")


def _solver_curves(root: Path) -> dict[float, dict[str, np.ndarray]]:
    """Solver curves of the fixed-ETF cross-entropy runs, by lam_H."""
    runs = stage_summary(root, layout.SOLVER)["runs"]
    table = layout.stage_dir(root, layout.SOLVER) / "curves.csv"
    return {
        r["lam_H"]: read_table(table, run=r["name"])
        for r in runs
        if r["kind"] == "fixed" and r["loss"] == "ce" and r.get("mixup_points", 2) == 2
    }


def _run(root: Path, name: str) -> dict:
    """The summary of the network run ``name`` in the networks stage."""
    return stage_summary(root, layout.NETWORKS)["runs"][name]


def _fitted(root: Path, name: str) -> float:
    """A run's effective lam_H fitted on the margins (panel a); panel b uses the lam_H of the
    coefficient curves of its cell means (:func:`.coefficients.lam_H_words` says whether it
    was fitted): each panel uses the one found on what it shows."""
    return _run(root, name).get("fitted_lam_H", float("nan"))


def margin_and_norm(root: Path) -> Figure:
    """Figure 2."""
    config = reproduction_config(root)
    theory_file = layout.theory_file(root, "curves.csv")
    lam_Hs = sorted({float(v) for v in read_table(theory_file, loss="ce")["lam_H"]}, reverse=True)
    colours = dict(zip(lam_Hs, ridge_colours(len(lam_Hs))))
    solver = _solver_curves(root)
    figure = new_figure(12.5, 5.6)
    margin_ax, norm_ax = figure.subplots(1, 2)
    handles = []
    margin_range = []
    for lam_H in lam_Hs:
        theory = read_table(theory_file, loss="ce", lam_H=lam_H)
        colour = colours[lam_H]
        margin_ax.plot(theory["lam"], theory["margin"], color=colour, lw=1.8)
        norm_ax.plot(theory["lam"], theory["relative_norm"], color=colour, lw=1.8)
        margin_range.append(np.abs(theory["margin"]).max())
        handles.append(
            Line2D([], [], color=colour, lw=1.8, label=f"theory, $\\lambda_H$={lam_H:g}")
        )
        if lam_H in solver:
            points = solver[lam_H]
            for ax, key in ((margin_ax, "margin"), (norm_ax, "relative_norm")):
                ax.plot(
                    points["lam"],
                    points[key],
                    ls="",
                    marker="o",
                    mfc="none",
                    mec=colour,
                    mew=1.3,
                    ms=7,
                )
    handles.append(
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            mfc="none",
            mec="0.3",
            mew=1.3,
            ms=7,
            label="UFM solver (fixed ETF), same colour = same $\\lambda_H$",
        )
    )
    for name in MIXUP_NETWORKS:
        curves = read_table(layout.network_curves(root, name))
        colour = NETWORK_COLOURS[name]
        marker = CLASSIFIER_MARKERS[name.split("_", 1)[1]]
        margin_ax.errorbar(
            curves["lam"],
            curves["margin_mean"],
            yerr=curves["margin_std"],
            ls="",
            marker=marker,
            color=colour,
            ms=5,
            capsize=2,
            zorder=4,
        )
        norm_ax.plot(
            curves["lam"], curves["relative_norm"], ls="", marker=marker, color=colour, ms=5
        )
        for ax, key in ((margin_ax, "margin_theory"), (norm_ax, "relative_norm_theory")):
            ax.plot(curves["lam"], curves[key], color=colour, ls=":", lw=1.8)
        margin_range.append(np.abs(curves["margin_mean"]).max() + curves["margin_std"].max())
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker=marker,
                color=colour,
                label=f"network, {network_label(name)} (mean $\\pm$ sd over pairs)",
            )
        )
        handles.append(
            Line2D(
                [],
                [],
                color=colour,
                ls=":",
                lw=1.8,
                label=f"its theory at fitted $\\lambda_H$ = {_fitted(root, name):.2g} "
                f"(margins, a); at {lam_H_words(_run(root, name))} (coefficients, b)",
            )
        )
    limit = read_table(theory_file, loss="ce", lam_H=lam_Hs[0])
    margin_ax.plot(limit["lam"], limit["log_odds"], **LIMIT_STYLE)
    handles.append(
        Line2D(
            [],
            [],
            **LIMIT_STYLE,
            label=r"log-odds $\log\frac{\lambda}{1-\lambda}$ (limit $\lambda_H \to 0$)",
        )
    )
    top = 1.08 * max(margin_range)
    margin_ax.set_ylim(-top, top)
    margin_ax.set_xlabel(LAM_LABEL)
    margin_ax.set_ylabel(r"logit margin $z_c - z_{c'}$ (logit units)")
    margin_ax.set_title("(a) logit margin between the two mixed classes")
    norm_ax.set_xlabel(LAM_LABEL)
    norm_ax.set_ylabel(r"$\|h(\lambda)\| \,/\, \|h_{\mathrm{same\ class}}\|$ (ratio)")
    norm_ax.set_title("(b) feature norm relative to a same-class feature")
    figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    figure.suptitle(
        f"Different-class mixtures: exact theory vs UFM solver vs mixup networks "
        f"($K$={config['K']}, simplex-ETF geometry)\nnetworks: centred margins, offset "
        "$W\\mu_G + b$ removed; norms of cell means of the in-span part of centred features",
        fontsize=11,
    )
    return figure


def channels(root: Path) -> Figure:
    """Figure 3."""
    config = reproduction_config(root)
    table = layout.theory_file(root, "channels.csv")
    lam_Hs = sorted({float(v) for v in read_table(table)["lam_H"]}, reverse=True)
    colours = dict(zip(lam_Hs, ridge_colours(len(lam_Hs))))
    figure = new_figure(15.5, 5.6)
    plane_ax, distance_ax, growth_ax = figure.subplots(1, 3)
    handles = []
    limits = read_table(table, lam_H=lam_Hs[-1])
    marked = [int(np.argmin(np.abs(limits["lam"] - lam))) for lam in CHANNEL_LAMS]
    for lam_H in lam_Hs:
        rows = read_table(table, lam_H=lam_H)
        colour = colours[lam_H]
        plane_ax.plot(rows["boundary_distance"], rows["channel_position"], color=colour, lw=1.2)
        for k, marker in zip(marked, CHANNEL_MARKERS):
            plane_ax.plot(
                rows["boundary_distance"][k],
                rows["channel_position"][k],
                ls="",
                marker=marker,
                color=colour,
                mec="black",
                mew=0.5,
                ms=8,
            )
        distance_ax.plot(rows["lam"], rows["boundary_distance"], color=colour, lw=1.6)
        handles.append(Line2D([], [], color=colour, lw=1.6, label=f"$\\lambda_H$={lam_H:g}"))
    distance_ax.plot(limits["lam"], limits["boundary_distance_limit"], **LIMIT_STYLE)
    plane_ax.axvline(0.0, color="0.3", lw=1.0)
    marker_handles = []
    for k, marker in zip(marked, CHANNEL_MARKERS):
        plane_ax.axvline(limits["boundary_distance_limit"][k], color="0.55", lw=0.8, ls=":")
        marker_handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker=marker,
                color="white",
                mec="black",
                ms=8,
                label=f"$\\lambda$={limits['lam'][k]:.2g}",
            )
        )
    # Zoom on the channels: the ends lam -> 0, 1 run off towards the class features.
    reach = 1.7 * np.nanmax(np.abs(limits["boundary_distance_limit"][marked]))
    plane_ax.set_xlim(-reach, reach)
    distance_ax.set_ylim(-2 * reach, 2 * reach)
    plane_ax.set_xlabel(
        r"signed distance from the $c/c'$ boundary, $(z_c - z_{c'})/\|w_c - w_{c'}\|$ (feature units)"
    )
    plane_ax.set_ylabel(r"position along $w_c + w_{c'}$ (feature units)")
    plane_ax.set_title(
        "(a) optimal features of one class pair (colours: $\\lambda_H$ as in (b));\n"
        "dotted: the $\\lambda_H \\to 0$ distances; solid: the boundary"
    )
    distance_ax.set_xlabel(LAM_LABEL)
    distance_ax.set_ylabel("signed distance from the $c/c'$ boundary (feature units)")
    distance_ax.set_title("(b) the distance from the boundary stays finite ...")
    growth = read_table(layout.theory_file(root, "channel_growth.csv"))
    growth_colours = (OKABE_ITO["vermillion"], OKABE_ITO["green"], OKABE_ITO["purple"])
    growth_handles = []
    for lam, colour in zip(sorted(set(growth["lam"]), reverse=True), growth_colours):
        pick = growth["lam"] == lam
        growth_ax.plot(
            growth["lam_H"][pick], growth["position"][pick], ls="", marker="o", ms=4, color=colour
        )
        growth_ax.plot(
            growth["lam_H"][pick], growth["position_asymptotic"][pick], color=colour, lw=1.2
        )
        growth_handles.append(
            Line2D(
                [],
                [],
                color=colour,
                marker="o",
                ms=4,
                lw=1.2,
                label=f"$\\lambda$={lam:g}: exact (dots), asymptote (line)",
            )
        )
    growth_ax.set_xscale("log")
    growth_ax.invert_xaxis()
    growth_ax.set_xlabel(r"feature ridge $\lambda_H$ (dimensionless, decreasing)")
    growth_ax.set_ylabel(r"position along $w_c + w_{c'}$ (feature units)")
    growth_ax.set_title(
        r"(c) ... while the features run out along $w_c + w_{c'}$"
        "\n"
        r"asymptote $2W_0\!\left(K\sqrt{\lambda(1-\lambda)}/(2t)\right)$, $t=\lambda_H/g$"
    )
    handles.append(
        Line2D([], [], **LIMIT_STYLE, label=r"limit $\log\frac{\lambda}{1-\lambda}/\sqrt{2g}$")
    )
    for ax, entries, columns in (
        (plane_ax, marker_handles, 5),
        (distance_ax, handles, 3),
        (growth_ax, growth_handles, 1),
    ):
        ax.legend(
            handles=entries,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncols=columns,
            frameon=False,
        )
    figure.suptitle(
        f"Channels along the decision boundary as $\\lambda_H \\to 0$: exact cross-entropy optimum,\n"
        f"different-class pairs ($K$={config['K']}, ETF row norm {config['scale']:g})",
        fontsize=11,
    )
    return figure
