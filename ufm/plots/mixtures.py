r"""Figure 9: mixtures of three and more classes.

Mixtures of the triple's three classes over the grid of the weight simplex, in the plane of
their classifier vectors, each point coloured by its weights (the blend of the three class
colours): the exact theory (:func:`ufm.mixture_features`), the UFM solver, and a network
trained with 3-point mixup (cell means over its sampled input triples). The last panel is the
amplification :math:`\sum_k a_k / a_\text{same}` of the equal-weight mixture of m classes
against m: 1 for the squared error's convex combinations, above 1 for cross-entropy, whose
mixtures run out along :math:`\sum_k w_{c_k}` (the multi-class channels that extend Fisher,
Meng & Papyan, ICLR 2024). Every number is read from the reproduction's files
(:mod:`ufm.reproduce.layout`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..reproduce import layout
from .files import read_projection, read_table, reproduction_config, stage_summary
from .geometry import BASIS_NOTE, decorate_triple_axes
from .style import LIMIT_STYLE, OKABE_ITO, new_figure, ridge_colours

CLASS_COLOURS = np.array([to_rgb(OKABE_ITO[name]) for name in ("blue", "vermillion", "green")])
# (stage, file name, panel title) of the mixture panels
PANELS = (
    (layout.THEORY, "theory", "exact theory: UFM, fixed ETF"),
    (layout.SOLVER, "solver", "UFM solver, 3-class mixtures, fixed ETF"),
    (layout.NETWORKS, "network", "network, 3-point mixup, fixed ETF\n(means over input triples)"),
)


def draw_mixtures(ax, projection: dict[str, np.ndarray], title: str) -> None:
    """One panel: mixtures coloured by their weights, classifier arrows, boundaries."""
    colours = np.clip(projection["weights"] @ CLASS_COLOURS, 0.0, 1.0)
    points = projection["coordinates"]
    ax.scatter(points[:, 0], points[:, 1], c=colours, s=16, edgecolors="0.25",
               linewidths=0.2, zorder=3)
    decorate_triple_axes(ax, projection, title)


def _amplification(ax, root: Path) -> None:
    table = read_table(layout.theory_file(root, layout.MIXTURE_AMPLIFICATION))
    lam_Hs = sorted({float(v) for v in table["lam_H"]}, reverse=True)
    for lam_H, colour in zip(lam_Hs, ridge_colours(len(lam_Hs))):
        rows = read_table(layout.theory_file(root, layout.MIXTURE_AMPLIFICATION), lam_H=lam_H)
        ax.plot(rows["m"], rows["amplification"], "o-", ms=4, color=colour,
                label=f"cross-entropy, $\\lambda_H$={lam_H:g}")
    ax.axhline(1.0, **LIMIT_STYLE, label="squared error: convex combination (exactly 1)")
    net = stage_summary(root, layout.NETWORKS).get("mixture_run") or {}
    if net.get("mixture3_amplification") is not None:
        ax.plot([3], [net["mixture3_amplification"]], ls="", marker="s", ms=7,
                color=OKABE_ITO["vermillion"], label="network, 3-point mixup: measured")
        ax.plot([3], [net["mixture3_amplification_theory"]], ls="", marker="x", ms=8, mew=2,
                color=OKABE_ITO["vermillion"],
                label=f"theory at its fitted $\\lambda_H$={net['mixture3_fitted_lam_H']:.2g}")
    ax.set_xlabel("m, classes in the equal-weight mixture")
    ax.set_ylabel(r"amplification $\sum_k a_k / a_\mathrm{same}$")
    ax.set_title("amplification of equal-weight mixtures")
    ax.legend(fontsize=8, frameon=False)


def mixtures(root: Path) -> Figure:
    """Figure 9."""
    config = reproduction_config(root)
    panels = [
        (read_projection(layout.mixture_projection(root, stage, name)), title)
        for stage, name, title in PANELS
    ]
    figure = new_figure(4.3 * (len(panels) + 1) + 0.4, 5.4)
    axes = np.atleast_1d(figure.subplots(1, len(panels) + 1))
    letters = "abcd"
    for k, (ax, (projection, title)) in enumerate(zip(axes, panels)):
        draw_mixtures(ax, projection, f"({letters[k]}) {title}")
    _amplification(axes[-1], root)
    axes[-1].set_title(f"({letters[len(panels)]}) " + axes[-1].get_title())
    classes = [int(c) for c in config["triple"]]
    handles = [
        Line2D([], [], ls="", marker="o", color=colour, label=f"weight on class {c}")
        for colour, c in zip(CLASS_COLOURS, classes)
    ]
    handles.append(Line2D([], [], color="0.15", ls="--", label="decision boundary"))
    figure.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
    figure.suptitle(
        f"Mixtures of classes {', '.join(map(str, classes))} over the weight simplex "
        f"(cross-entropy, $\\lambda_H$={config['lam_H']:g}); colour: the weights' blend of "
        f"the class colours\n{BASIS_NOTE}",
        fontsize=10,
    )
    return figure
