r"""Figures of one measured network: a training run or a measurement folder (:mod:`.run_files`).

:data:`RUN_FIGURES` lists them with the file each reads; :func:`draw_run_figures` writes
``<name>.png`` and ``<name>.pdf`` of those whose file the folder holds:

* ``three_classes``: the mixed features of three classes in the plane of their classifier
  rows (``mixed_features.npz``, coloured by lam, with the classifier directions and decision
  boundaries of :mod:`.geometry`), beside the exact UFM optimum for the network's own
  :math:`W` and logit offset in the same plane and orientation (Fisher, Meng & Papyan, ICLR
  2024, figure 1; there the theory had a simplex ETF of its own orientation);
* ``coefficient_curves``: :math:`\hat a/\bar a_\text{same}` and
  :math:`\hat b/\bar a_\text{same}` against lam with the cross-entropy, squared-error and
  exact-W curves (``coefficients_vs_lam.csv``, :mod:`.coefficients`);
* ``reliability``: the reliability diagram on clean test data (``reliability.csv``, written
  only when test data were measured; :mod:`.calibration`).

Each panel is also a public function drawing on a given Axes from a folder or from arrays:
:func:`plot_triple`, :func:`plot_theory_triple`, :func:`plot_coefficient_curves`,
:func:`plot_reliability`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .._checks import check_int
from ..io import prepare_run_dir
from .calibration import _reliability
from .coefficients import _run_panel, curve_handles
from .files import read_table
from .geometry import BASIS_NOTE, add_triple_keys, draw_triple
from .run_files import (
    COEFFICIENTS,
    MIXED_FEATURES,
    RELIABILITY,
    as_number,
    check_triple,
    choose_triple,
    measurement_folder,
    network_projection,
    read_mixed_features,
    read_run_summary,
    read_theory,
    run_label,
    theory_projection,
)
from .style import OKABE_ITO, RC, new_figure, save

FIGURES_FOLDER = "figures"
COEFFICIENT_COLUMNS = ("lam", "a_norm", "a_norm_se", "b_norm", "b_norm_se", "ce_a_norm",
                       "ce_b_norm", "null_a_norm", "null_b_norm", "exact_W_a_norm",
                       "exact_W_b_norm")  # fmt: skip
RELIABILITY_COLUMNS = ("lower", "upper", "count", "accuracy", "confidence")
LAM_H_SOURCES = {
    "curve_fitted_lam_H": "fitted on the coefficient curves",
    "fitted_lam_H": "fitted on the margins",
    "given": "given",
}


def _is_folder(source) -> bool:
    return isinstance(source, (str, Path)) and Path(source).is_dir()


def _drawable(projection: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A flat projection as :func:`.geometry.draw_triple` takes it: one lam per 'pair'."""
    return {**projection, "coordinates": projection["coordinates"][:, None, :],
            "lam": projection["lam"][:, None]}  # fmt: skip


def _pick_triple(source, arrays, triple) -> tuple[tuple[int, int, int], str]:
    """The triple to draw and how it was chosen: given, the run's, or by sample count."""
    K = arrays["weight"].shape[0]
    if triple is not None:
        return check_triple(triple, K), "given"
    if _is_folder(source):
        stored = read_run_summary(source).get("triple")
        if isinstance(stored, list) and len(stored) == 3:
            return check_triple(stored, K), "the run's triple"
    return choose_triple(arrays["c"], arrays["c_prime"], K), (
        "no triple stored: the three classes with the most mixed samples of two classes among them"
    )


def plot_triple(ax, source, triple=None, title: str | None = None) -> dict[str, np.ndarray]:
    """Draw the network panel: mixed features of three classes, centred by the global mean
    :math:`\\mu_G`, in the plane of their classifier rows.

    Parameters
    ----------
    ax : matplotlib Axes to draw on.
    source : a run or measurement folder, a ``mixed_features.npz`` path, or a mapping of its
        arrays (:func:`.run_files.read_mixed_features`).
    triple : three class indices; default the folder's ``triple``, else
        :func:`.run_files.choose_triple`.
    title : panel title; default names the classes and the number of samples.

    Returns
    -------
    The projection drawn (:func:`.run_files.network_projection`).
    """
    arrays = read_mixed_features(source)
    triple, _ = _pick_triple(source, arrays, triple)
    projection = network_projection(arrays, triple)
    if title is None:
        title = (f"network: mixed pairs of classes {', '.join(map(str, triple))}\n"
                 f"{len(projection['lam'])} samples, features minus $\\mu_G$")  # fmt: skip
    draw_triple(ax, _drawable(projection), title)
    return projection


def plot_theory_triple(ax, source, theory: Mapping | None = None,
                       title: str | None = None) -> dict[str, np.ndarray] | None:  # fmt: skip
    """Draw the theory panel: the exact UFM optimum for the network's own classifier rows
    and logit offset, in the plane and orientation of :func:`plot_triple` for its triple.

    Parameters
    ----------
    ax : matplotlib Axes to draw on.
    source : as for :func:`plot_triple` (the network's classifier and centre).
    theory : the optimum, as :func:`ufm.nets.triple_theory.own_classifier_triple` returns it;
        default the folder's ``theory_triple.npz``, written by the measurement.
    title : panel title; default names lam_H and where it comes from.

    Returns
    -------
    The projection drawn (:func:`.run_files.theory_projection`), or None when there is no
    theory (a measurement without a usable fitted lam_H): the panel then says so.
    """
    if theory is None and not _is_folder(source):
        raise ValueError(
            "theory must be given when source is not a folder: compute it with "
            "ufm.nets.triple_theory.own_classifier_triple"
        )
    arrays = read_mixed_features(source)
    key = "given"
    if theory is None:
        theory = read_theory(source)
        key = _lam_H_source(read_run_summary(source))
    return _theory_panel(ax, arrays, theory, key, title)


def _lam_H_source(summary: Mapping) -> str:
    """The summary key the theory's lam_H came from ("" when none)."""
    key = summary.get("theory_triple_lam_H_source")
    return key if isinstance(key, str) else ""


def _theory_panel(ax, arrays, theory, key, title=None):
    """The theory panel (its lam_H taken from the summary's ``key``), or a note where the
    measurement wrote none."""
    if theory is None:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no theory panel: no usable fitted $\\lambda_H$\n(curve_fitted_lam_H missing, "
                "not finite or at its\nsearch bound; fitted_lam_H missing or not finite)",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
        return None
    projection = theory_projection(arrays, theory)
    if title is None:
        title = (f"exact UFM optimum for the network's own $W$ and offset\n"
                 f"$\\lambda_H$ = {projection['lam_H']:.3g} "
                 f"({LAM_H_SOURCES.get(key, 'given')})")  # fmt: skip
    draw_triple(ax, _drawable(projection), title)
    return projection


def _columns(source, name: str, required) -> dict[str, np.ndarray]:
    """Columns of the CSV ``name`` of a folder, a CSV path, or a mapping; ValueError naming
    the missing columns."""
    if isinstance(source, Mapping):
        table = {key: np.asarray(value) for key, value in source.items()}
    else:
        path = Path(source)
        path = measurement_folder(path) / name if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"no table {str(path)!r}")
        table = read_table(path)
    missing = [key for key in required if key not in table]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {', '.join(missing)}")
    return table


def _summary(source, summary) -> dict[str, Any]:
    if summary is None:
        return read_run_summary(source) if _is_folder(source) else {}
    return {key: as_number(value) for key, value in summary.items()}


def plot_coefficient_curves(ax, source, summary: Mapping | None = None, title: str | None = None,
                            legend: bool = True) -> None:  # fmt: skip
    """Draw :math:`\\hat a/\\bar a_\\text{same}` and :math:`\\hat b/\\bar a_\\text{same}`
    against lam with bars of two quoted errors (``*_norm_error``, the larger of the pairs' and
    the class pairs' standard errors; ``*_norm_se`` for a table from before them), the
    cross-entropy optimum at the lam_H of the curves (the title says whether it was fitted or
    ran to its search bound), the squared-error null and the exact optimum for the network's
    own W; the amplification, its errors and each prediction's goodness of fit in the title.

    Parameters
    ----------
    ax : matplotlib Axes to draw on.
    source : a run or measurement folder, a ``coefficients_vs_lam.csv`` path, or a mapping of
        its columns (:data:`COEFFICIENT_COLUMNS` at least).
    summary : ``amplification`` with ``amplification_error``, ``amplification_se``,
        ``amplification_se_cells``, ``amplification_systematic``; ``amplification_theory``,
        ``curve_fitted_lam_H`` and its status; ``ce_`` and ``squared_error_chi2_per_dof`` and
        ``_verdict``; ``better_fit``; default the folder's (none for other sources: shown as
        nan).
    title : first line of the title.
    legend : add the legend of the curves to ``ax``.
    """
    curves = _columns(source, COEFFICIENTS, COEFFICIENT_COLUMNS)
    _run_panel(ax, curves, _summary(source, summary), title or "coefficients of the cell means")
    if legend:
        ax.legend(handles=curve_handles(), fontsize=7)


def plot_reliability(ax, source, summary: Mapping | None = None, title: str | None = None,
                     legend: bool = True) -> None:  # fmt: skip
    """Draw the reliability diagram on clean test data: accuracy per confidence bin, its gap
    to the bin's mean confidence, the diagonal, the samples per bin.

    Parameters
    ----------
    ax : matplotlib Axes to draw on.
    source : a run or measurement folder, a ``reliability.csv`` path, or a mapping of its
        columns (:data:`RELIABILITY_COLUMNS` at least; as
        :class:`ufm.metrics.CalibrationAccumulator` writes them).
    summary : ``ece`` and ``test_accuracy`` for the title; default the folder's.
    title : panel title.
    legend : add the legend of the bars to ``ax``.
    """
    table = _columns(source, RELIABILITY, RELIABILITY_COLUMNS)
    table = {key: np.asarray(value, dtype=np.float64) for key, value in table.items()}
    summary = _summary(source, summary)
    if title is None:
        title = (f"clean test data: ECE = {float(summary.get('ece', math.nan)):.3f}, accuracy = "
                 f"{float(summary.get('test_accuracy', math.nan)):.3f}\nnumbers: samples per bin")  # fmt: skip
    _reliability(ax, table, title, OKABE_ITO["blue"])
    if legend:
        ax.legend(fontsize=8, loc="upper left")


def three_classes(folder: Path) -> Figure:
    """The network panel beside the theory panel, with colour bars and legend."""
    arrays = read_mixed_features(folder)
    summary = read_run_summary(folder)
    theory = read_theory(folder)
    triple, chosen = _pick_triple(folder, arrays, None)
    if theory is not None:
        triple = tuple(int(c) for c in theory["triple"])
    key = _lam_H_source(summary)
    figure = new_figure(11.8, 6.9)
    axes = figure.subplots(1, 2)
    plot_triple(axes[0], arrays, triple, title=None)
    axes[0].set_title("(a) " + axes[0].get_title())
    _theory_panel(axes[1], arrays, theory, key)
    if axes[1].axison:
        axes[1].set_title("(b) " + axes[1].get_title())
    add_triple_keys(figure, axes)
    curve = float(summary.get("curve_fitted_lam_H", math.nan))
    if key == "fitted_lam_H":
        why = "at its search bound" if math.isfinite(curve) else "not finite"
        fit = f"; curve_fitted_lam_H = {curve:.3g} is {why}, so the margins' fit is used"
    else:
        fit = ""
    both = (
        "same plane and orientation in both panels, each with its own scale"
        if axes[1].axison
        else ""
    )
    figure.suptitle(
        f"{run_label(folder)}: classes {', '.join(map(str, triple))} ({chosen})\n"
        f"{BASIS_NOTE}\n{both}{fit}",
        fontsize=10.5,
    )
    return figure


def coefficient_curves(folder: Path) -> Figure:
    """The coefficient curves of the run, legend below."""
    figure = new_figure(7.6, 6.8)
    ax = figure.subplots()
    plot_coefficient_curves(ax, folder, title=run_label(folder), legend=False)
    figure.legend(handles=curve_handles(), loc="outside lower center", ncols=1, frameon=False,
                  fontsize=8)  # fmt: skip
    return figure


def reliability(folder: Path) -> Figure:
    """The reliability diagram of the run."""
    figure = new_figure(6.4, 6.0)
    ax = figure.subplots()
    plot_reliability(ax, folder)
    figure.suptitle(f"Reliability of {run_label(folder)}", fontsize=10.5)
    return figure


@dataclass(frozen=True)
class RunFigureSpec:
    """A figure of one measured network: the function drawing it, the file it reads."""

    build: Callable[[Path], Figure]
    file: str
    caption: str


RUN_FIGURES: dict[str, RunFigureSpec] = {
    "three_classes": RunFigureSpec(
        three_classes, MIXED_FEATURES,
        "Mixed features of three classes in the plane of their classifier rows, beside the exact "
        "UFM optimum for the network's own W and logit offset at its fitted lam_H.",
    ),
    "coefficient_curves": RunFigureSpec(
        coefficient_curves, COEFFICIENTS,
        "Coefficients of the cell means on the two classes' rows against lam, beside the "
        "cross-entropy optimum, the squared-error null and the exact optimum for own W.",
    ),
    "reliability": RunFigureSpec(
        reliability, RELIABILITY, "Reliability diagram with ECE on clean test data.",
    ),
}  # fmt: skip


def run_figure_names(folder: str | Path, names=None) -> list[str]:
    """The figures to draw from ``folder``: ``names`` checked (ValueError for an unknown one
    or one whose file the folder lacks), or by default every one whose file it holds."""
    measured = measurement_folder(folder)
    if names is None:
        return [name for name, spec in RUN_FIGURES.items() if (measured / spec.file).is_file()]
    names = list(names)
    for name in names:
        if name not in RUN_FIGURES:
            raise ValueError(f"unknown figure {name!r}; figures of a measured network: "
                             f"{', '.join(RUN_FIGURES)}")  # fmt: skip
        if not (measured / RUN_FIGURES[name].file).is_file():
            raise ValueError(f"figure {name!r} needs {RUN_FIGURES[name].file}, which "
                             f"{str(measured)!r} does not hold")  # fmt: skip
    return names


def build_run_figure(folder: str | Path, name: str) -> Figure:
    """The figure ``name`` of the measured network in ``folder`` (not saved)."""
    (name,) = run_figure_names(folder, [name])
    with matplotlib.rc_context(RC):
        return RUN_FIGURES[name].build(Path(folder))


def draw_run_figures(folder: str | Path, names=None, out: str | Path | None = None,
                     dpi: int = 150, log: Callable[[str], None] | None = None) -> list[Path]:  # fmt: skip
    """Draw the figures ``names`` (default: every one whose file the folder holds) of the
    measured network in ``folder``, a training run or a measurement folder, into ``out``
    (default ``folder/figures``); return the files written (PNG and PDF)."""
    dpi = check_int("dpi", dpi, 30, 600)
    chosen = run_figure_names(folder, names)  # ValueError for a folder of no known kind
    target = prepare_run_dir(out if out is not None else Path(folder) / FIGURES_FOLDER)
    written = []
    for name in chosen:
        written += save(build_run_figure(folder, name), target, name, dpi)
        if log is not None:
            log(f"  figure {name}: {target / name}.png, .pdf")
    if log is not None:
        for name in (n for n in RUN_FIGURES if n not in chosen and names is None):
            log(f"  figure {name}: not drawn, the folder holds no {RUN_FIGURES[name].file}")
    return written
