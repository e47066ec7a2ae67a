"""Shared look of the figures: colour-blind-safe colours, figure creation, PNG and PDF output.

Figures are built on :class:`matplotlib.figure.Figure` directly (its default canvas is Agg),
so drawing never touches pyplot's global state or the interactive backend.
Categorical colours are the Okabe-Ito palette (Okabe & Ito, "Color Universal Design", 2008);
continuous ones are viridis (lam) and cividis (lam_H), both perceptually uniform and
readable with colour-vision deficiencies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from ..io import atomic_path
from ..losses import LOSSES

OKABE_ITO = {
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "black": "#000000",
}
# ERM vs mixup by colour, learned vs fixed ETF classifier by line style (figures 6, 8).
TRAINING_COLOURS = {False: OKABE_ITO["blue"], True: OKABE_ITO["vermillion"]}
CLASSIFIER_STYLES = {"learned": "-", "fixed_etf": "--"}
CLASSIFIER_MARKERS = {"learned": "o", "fixed_etf": "s"}


def _loss_styles() -> tuple[dict[str, str], dict[str, str]]:
    """Names and colours of the registered losses, as each declares them; a loss that names no
    colour takes the first palette colour no other loss uses."""
    names, colours = {}, {}
    for name, cls in LOSSES.items():
        names[name] = cls.label or name
        colours[name] = cls.colour
    free = [colour for colour in OKABE_ITO.values() if colour not in colours.values()]
    for name, colour in colours.items():
        if colour is None:
            colours[name] = free.pop(0) if free else OKABE_ITO["black"]
    return names, colours


LOSS_NAMES, LOSS_COLOURS = _loss_styles()
LAM_CMAP = colormaps["viridis"]
# Same-class pairs: a second colour family (oranges), its white end cut off.
SAME_CLASS_CMAP = ListedColormap(colormaps["Oranges"](np.linspace(0.35, 1.0, 256)), name="same")

RC = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


# The mixup networks drawn against the theory, and the style of a limit or ideal line.
MIXUP_NETWORKS = ("mixup_learned", "mixup_fixed_etf")
NETWORK_COLOURS = {"mixup_learned": OKABE_ITO["vermillion"], "mixup_fixed_etf": OKABE_ITO["sky"]}
LIMIT_STYLE = {"color": "black", "ls": (0, (5, 3)), "lw": 1.3}
LAM_LABEL = r"$\lambda$ (weight of class $c$ in the mixture)"


def ridge_colours(count: int) -> list:
    """``count`` colours from cividis, dark (largest lam_H) to light, never the pale end."""
    return [colormaps["cividis"](x) for x in np.linspace(0.0, 0.82, max(count, 1))][:count]


def new_figure(width: float, height: float) -> Figure:
    """A figure (``width`` x ``height`` inches) with constrained layout: no overlapping labels."""
    return Figure(figsize=(width, height), layout="constrained")


def save(figure: Figure, folder: str | Path, name: str, dpi: int) -> list[Path]:
    """Write ``name``.png (at ``dpi``) and ``name``.pdf into ``folder``, each atomically."""
    folder = Path(folder)
    paths = []
    for fmt in ("png", "pdf"):
        path = folder / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, dpi=dpi)
        paths.append(path)
    return paths
