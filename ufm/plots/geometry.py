r"""Figures 1 and 4: mixed features of a class triple in the plane of its classifier vectors.

Each panel reads a projection file (:mod:`ufm.reproduce.layout`): coordinates in an orthonormal basis
of span{w_c - mean of the three rows}. Different-class pairs are circles coloured by lam
(viridis), same-class pairs triangles in oranges; arrows show the classifier vectors
(rescaled to the panel), dashed lines the decision boundaries among the three classes:
where :math:`z_c = z_{c'} \ge z_{c''}` with :math:`z_k` = classifier_k . y + offsets_k.
Fisher, Meng & Papyan, ICLR 2024 (arXiv:2402.06171), figures 1-3 are the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..reproduce import layout
from .files import network_label, read_projection, reproduction_config, stage_summary
from .style import LAM_CMAP, LOSS_NAMES, SAME_CLASS_CMAP, new_figure

GRID = 400
BASIS_NOTE = (
    r"axes: orthonormal basis $(e_1, e_2)$ of span$\{w_k - \bar w\}$ over the three classes "
    r"($\bar w$ their mean)"
)
NETWORK_CENTRE_NOTE = "; network features minus the mean of their class means"


def _limits(projection: dict[str, np.ndarray]) -> float:
    radius = np.abs(projection["coordinates"]).max()
    return 1.15 * float(radius) if radius > 0 else 1.0


def _boundaries(ax, projection, half: float) -> None:
    """Dashed lines where two of the three logits tie above the third."""
    axis = np.linspace(-half, half, GRID)
    x, y = np.meshgrid(axis, axis)
    points = np.stack([x.ravel(), y.ravel()], axis=1)
    logits = points @ projection["classifier"].T + projection["offsets"]  # (G^2, 3)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        (other,) = {0, 1, 2} - {i, j}
        difference = (logits[:, i] - logits[:, j]).reshape(x.shape)
        hidden = (np.maximum(logits[:, i], logits[:, j]) < logits[:, other]).reshape(x.shape)
        if difference.min() < 0 < difference.max():
            ax.contour(
                x,
                y,
                np.ma.masked_where(hidden, difference),
                levels=[0.0],
                colors="0.15",
                linestyles="--",
                linewidths=1.0,
            )


def _arrows(ax, projection, half: float) -> None:
    """Classifier vectors from the origin, rescaled to 0.55 of the half-width, labelled beside
    their tips (not on them: the same-class features lie further out along the same line)."""
    vectors = projection["classifier"]
    longest = np.linalg.norm(vectors, axis=1).max()
    vectors = vectors * (0.55 * half / longest if longest > 0 else 1.0)
    for vector, cls in zip(vectors, projection["classes"]):
        ax.annotate(
            "",
            xy=vector,
            xytext=(0, 0),
            zorder=4,
            arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.4},
        )
        length = np.linalg.norm(vector)
        normal = np.array([-vector[1], vector[0]]) / length if length > 0 else np.zeros(2)
        ax.text(
            *(0.8 * vector + 0.1 * half * normal),
            f"$w_{{{int(cls)}}}$",
            ha="center",
            va="center",
            fontsize=10,
            zorder=5,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )


def draw_triple(ax, projection: dict[str, np.ndarray], title: str) -> None:
    """One panel: points, classifier arrows and boundaries of a projection."""
    coordinates = projection["coordinates"]
    same = projection["c"] == projection["c_prime"]
    lam = np.broadcast_to(projection["lam"], coordinates.shape[:2])
    norm = Normalize(0.0, 1.0)
    for mask, cmap, marker, size, edge in (
        (~same, LAM_CMAP, "o", 14, 0.0),
        (same, SAME_CLASS_CMAP, "^", 30, 0.3),
    ):
        points = coordinates[mask].reshape(-1, 2)
        ax.scatter(
            points[:, 0],
            points[:, 1],
            c=lam[mask].ravel(),
            cmap=cmap,
            norm=norm,
            marker=marker,
            s=size,
            edgecolors="0.2",
            linewidths=edge,
            alpha=0.85,
            zorder=3,
        )
    decorate_triple_axes(ax, projection, title)


def _frame(ax, half: float, title: str) -> None:
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.set_xlabel(r"$e_1$ coordinate (feature units)")
    ax.set_ylabel(r"$e_2$ coordinate (feature units)")


def decorate_triple_axes(ax, projection: dict[str, np.ndarray], title: str) -> None:
    """Boundaries, classifier arrows, limits and labels of a panel whose points are drawn."""
    half = _limits(projection)
    _boundaries(ax, projection, half)
    _arrows(ax, projection, half)
    _frame(ax, half, title)


def draw_norms(ax, projection: dict[str, np.ndarray]) -> None:
    """Marginal panel: the true norm of each feature against lam, over the mean same-class
    norm (one line per different-class pair of classes, mean over its sample pairs; same-class
    pairs as triangles). The plane of the panel above hides part of these lengths."""
    if "norms" not in projection:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no norms in this file (written before they were)", ha="center",
                va="center", transform=ax.transAxes, fontsize=8)  # fmt: skip
        return
    norms, lam = projection["norms"], projection["lam"]
    c, c_prime = projection["c"], projection["c_prime"]
    same = c == c_prime
    unit = norms[same].mean()
    pairs = sorted({(int(a), int(b)) for a, b in zip(c[~same], c_prime[~same])})
    for k, (first, second) in enumerate(pairs):
        rows = (c == first) & (c_prime == second)
        ax.plot(lam, norms[rows].mean(0) / unit, color=LAM_CMAP(0.15 + 0.35 * k), lw=1.5,
                marker="o", ms=3, label=f"$c, c'$ = {first}, {second}")  # fmt: skip
    ax.plot(lam, norms[same].mean(0) / unit, ls="", marker="^", color=SAME_CLASS_CMAP(0.6),
            ms=5, label="same class")  # fmt: skip
    ax.axhline(1.0, color="0.4", lw=0.8, ls=":")
    ax.set_title("true norm against $\\lambda$ (the plane above hides part of it)", fontsize=9)
    ax.set_xlabel(r"$\lambda$")
    ax.set_ylabel(r"$\|h\|$ / mean same-class $\|h\|$")
    ax.legend(fontsize=7, ncols=2)


def triple_figure(panels, title: str, note: str = "") -> Figure:
    """Panels side by side with their true-norm panels below, two colour bars, a legend."""
    figure = new_figure(4.1 * len(panels) + 1.6, 7.6)
    grid = figure.subplots(2, len(panels), height_ratios=[3.0, 1.3], squeeze=False)
    axes = grid[0]
    for ax, norm_ax, (projection, panel_title) in zip(axes, grid[1], panels):
        draw_triple(ax, projection, panel_title)
        draw_norms(norm_ax, projection)
    add_triple_keys(figure, axes)
    figure.suptitle(f"{title}\n{BASIS_NOTE}{note}", fontsize=11)
    return figure


def add_triple_keys(figure: Figure, axes) -> None:
    """The keys of triple panels ``axes``: a lam colour bar for different-class and one for
    same-class pairs, and a legend of the markers, boundaries and arrows below the figure."""
    norm = Normalize(0.0, 1.0)
    figure.colorbar(
        ScalarMappable(norm, LAM_CMAP),
        ax=axes,
        shrink=0.85,
        pad=0.01,
        label=r"$\lambda$ (weight of class $c$), pairs $c \neq c'$",
    )
    figure.colorbar(
        ScalarMappable(norm, SAME_CLASS_CMAP),
        ax=axes,
        shrink=0.85,
        pad=0.01,
        label=r"$\lambda$, same-class pairs $c = c'$",
    )
    handles = [
        Line2D(
            [], [], ls="", marker="o", color=LAM_CMAP(0.5), label=r"mixed pair, classes $c \neq c'$"
        ),
        Line2D(
            [],
            [],
            ls="",
            marker="^",
            color=SAME_CLASS_CMAP(0.6),
            label=r"mixed pair, same class $c = c'$",
        ),
        Line2D([], [], color="0.15", ls="--", label="decision boundary among the three classes"),
        Line2D(
            [],
            [],
            color="black",
            marker=r"$\rightarrow$",
            ls="",
            markersize=12,
            label="classifier vector (rescaled)",
        ),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)


def configuration(root: Path) -> Figure:
    """Figure 1: theory, UFM solver (learned W), networks with learned and fixed-ETF W."""
    config = reproduction_config(root)
    lam_H = config["lam_H"]
    dataset = stage_summary(root, layout.NETWORKS)
    net = f"{dataset['dataset']} {dataset['model'].upper()}"
    panels = [
        (
            read_projection(layout.theory_projection(root, "ce")),
            f"(a) exact theory: UFM, fixed ETF\ncross-entropy, $\\lambda_H$={lam_H:g}",
        ),
        (
            read_projection(layout.solver_projection(root, "learned_ce")),
            f"(b) UFM solver, learned $W$\n$\\lambda_H$={lam_H:g}, $\\lambda_W$={config['lam_W']:g}",
        ),
        (
            read_projection(layout.network_projection(root, "mixup_learned")),
            f"(c) network ({net}), {network_label('mixup_learned')}\nmixed training pairs",
        ),
        (
            read_projection(layout.network_projection(root, "mixup_fixed_etf")),
            f"(d) network ({net}), {network_label('mixup_fixed_etf')}\nmixed training pairs",
        ),
    ]
    classes = ", ".join(str(c) for c in config["triple"])
    title = (
        f"Mixup features of classes {classes}: exact UFM optimum vs UFM solver vs trained "
        f"networks (cross-entropy, mixup)"
    )
    return triple_figure(panels, title, NETWORK_CENTRE_NOTE)


def loss_comparison(root: Path) -> Figure:
    """Figure 4: the same projection for cross-entropy, squared error, label smoothing, focal."""
    config = reproduction_config(root)
    lam_H = config["lam_H"]
    panels = [
        (
            read_projection(layout.theory_projection(root, "ce")),
            f"(a) {LOSS_NAMES['ce']}: exact theory\nchannels along the boundaries",
        ),
        (
            read_projection(layout.theory_projection(root, "mse")),
            f"(b) {LOSS_NAMES['mse']}: exact theory\nconvex combinations of class features",
        ),
        (
            read_projection(layout.theory_projection(root, "label_smoothing")),
            f"(c) {LOSS_NAMES['label_smoothing']} ($\\varepsilon$={config['smoothing']:g}): exact theory",
        ),
        (
            read_projection(layout.solver_projection(root, "fixed_focal")),
            f"(d) {LOSS_NAMES['focal']} ($\\gamma$={config['focal_gamma']:g}): UFM solver\n(no theory known)",
        ),
    ]
    title = (
        f"Optimal mixup features of the UFM with a fixed simplex ETF ($K$={config['K']}, "
        f"$\\lambda_H$={lam_H:g}) under four losses; each panel has its own scale"
    )
    return triple_figure(panels, title)
