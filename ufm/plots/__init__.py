"""Figures of a reproduction, a sweep or one measured network, drawn from result files only.

Each figure is a function ``root -> matplotlib Figure`` reading the files of the reproduction
folder ``root`` (:mod:`ufm.reproduce.layout`); :func:`build_figure` returns it,
:func:`draw_figures` writes ``<name>.png`` and ``<name>.pdf``. :data:`FIGURES` lists them in order with the stages whose files they
read; both functions check those stages before drawing anything. The phase figures of a
sweep folder (:mod:`.phase`: :data:`SWEEP_FIGURES`, :func:`draw_sweep_figures`) are drawn
from its ``sweep.json``, those of a reproduction's sweep stage by :func:`draw_phase_figures`.
The figures of one measured network, a training run or a measurement folder
(:mod:`.run_figures`: :data:`RUN_FIGURES`, :func:`draw_run_figures`), are drawn from its
measurement files, and each of their panels by a function of its own (:func:`plot_triple`,
:func:`plot_theory_triple`, :func:`plot_coefficient_curves`, :func:`plot_reliability`);
their theory panel draws the exact UFM optimum for the network's own classifier, which the
measurement wrote (``theory_triple.npz``).
:func:`draw_from` draws whichever its folder holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from ..reproduce import layout
from .._checks import check_int
from ..io import prepare_run_dir
from . import calibration, coefficients, curves, geometry, minority, mixtures, training
from .phase import (
    SWEEP_FIGURES,
    SweepFigureSpec,
    build_sweep_figure,
    draw_sweep_figures,
    etf_phase,
    minority_phase,
    reproduction_phase_figures,
)
from .run_figures import (
    RUN_FIGURES,
    RunFigureSpec,
    build_run_figure,
    draw_run_figures,
    plot_coefficient_curves,
    plot_reliability,
    plot_theory_triple,
    plot_triple,
)
from .run_files import FOLDER_KINDS, folder_kind
from .sweep_files import is_sweep
from .style import RC, save


@dataclass(frozen=True)
class FigureSpec:
    """A figure: the function drawing it, the stages it reads, what it shows."""

    build: Callable[[Path], Figure]
    stages: tuple[str, ...]
    caption: str


FIGURES: dict[str, FigureSpec] = {
    "mixup_configuration": FigureSpec(
        geometry.configuration,
        (layout.THEORY, layout.SOLVER, layout.NETWORKS),
        "Mixed features of three classes in the plane of their classifier vectors: exact theory, "
        "UFM solver with a learned classifier, networks with a learned and a fixed-ETF classifier. "
        "The plane is exact for the decision boundaries but hides each feature's component along "
        "the mean of the three classifier vectors, so lengths cannot be read from it: the lower "
        "panels show the true norm of each feature (networks: of the centred feature in the row "
        "space of W) against lam, relative to the same-class features.",
    ),
    "margin_and_norm": FigureSpec(
        curves.margin_and_norm,
        (layout.THEORY, layout.SOLVER, layout.NETWORKS),
        "Logit margin and relative feature norm of different-class mixtures against lam: theory "
        "for several lam_H, solver points, mixup networks with their fitted lam_H, log-odds limit.",
    ),
    "channels": FigureSpec(
        curves.channels,
        (layout.THEORY,),
        "Channels as lam_H shrinks: finite distance from the boundary, unbounded growth along "
        "w_c + w_c'.",
    ),
    "loss_comparison": FigureSpec(
        geometry.loss_comparison,
        (layout.THEORY, layout.SOLVER),
        "Cross-entropy vs squared error (exact convex combination) vs label smoothing vs focal "
        "loss, same projection. The plane hides part of each feature's length (a lam = 1/2 "
        "cross-entropy mixture is longer than a class feature yet looks shorter); the lower "
        "panels show the true norms against lam.",
    ),
    "calibration": FigureSpec(
        calibration.calibration,
        (layout.THEORY, layout.NETWORKS),
        "Theoretical confidence of a mixed sample against lam with the ideal diagonal; reliability "
        "diagrams with ECE for ERM and mixup networks.",
    ),
    "collapse_over_training": FigureSpec(
        training.collapse,
        (layout.NETWORKS,),
        "Neural-collapse metrics over training epochs: ERM vs mixup, learned vs fixed ETF.",
    ),
    "learned_classifier": FigureSpec(
        training.learned_classifier,
        (layout.SOLVER,),
        "Learned classifier in the UFM: ETF distance of W and gradient norm against iterations.",
    ),
    "layer_linearity": FigureSpec(
        training.linearity,
        (layout.NETWORKS,),
        "Layer-wise non-linearity along input segments, ERM vs mixup.",
    ),
    "mixtures": FigureSpec(
        mixtures.mixtures,
        (layout.THEORY, layout.SOLVER, layout.NETWORKS),
        "Mixtures of three classes over the weight simplex in the plane of their classifier "
        "vectors; amplification of equal-weight mixtures of m classes against m. The plane "
        "hides each feature's component along the mean of the three classifier vectors: the "
        "equal-weight mixture sits at the origin although it is longer than a class feature.",
    ),
    "coefficient_curves": FigureSpec(
        coefficients.coefficient_curves,
        (layout.NETWORKS,),
        "Coefficients of the cell means of mixed features on the two classes' classifier rows, "
        "over the mean same-class coefficient, with bars of two quoted errors (the larger of "
        "the pairs' and the class pairs' standard errors), for ERM and mixup networks with a "
        "learned and a fixed-ETF classifier, beside the cross-entropy optimum (at the lam_H "
        "fitted on the curves, or at the end of its search range where the fit ran there, "
        "which is no fit), the squared-error null and the exact optimum for the network's own "
        "W and logit offset; the amplification against epochs; each prediction's chi-square "
        "per degree of freedom with its 1% rejection level.",
    ),
    "minority_collapse": FigureSpec(
        minority.minority_collapse,
        (layout.THEORY,),
        "Minority collapse of a learned classifier under step imbalance, exact UFM optimum: the "
        "cosine between minority rows of W against the imbalance ratio for mixup with sample "
        "pairing, mixup with class pairing and plain training; (a) at the reproduction's K "
        "with K // 2 minority classes, (b) at the imbalance sweep's sizes with the sweep's "
        "solver points. Dotted verticals: the ratio from which the minority rows are exactly "
        "equal (closed form). (c), where the network stage trained it (the full run): the "
        "networks of the minority study (seed mean, bars of one seed standard deviation) for "
        "ERM, mixup with sample and with class pairing and sample pairing at class pairing's "
        "label mass, beside the exact theory at the lam_H fitted on their rho = 1 mixup runs.",
    ),
}


def check_figure_names(names) -> list[str]:
    """The names in order, or ValueError naming the unknown one and listing the known ones."""
    names = list(FIGURES) if names is None else list(names)
    for name in names:
        if name not in FIGURES:
            raise ValueError(f"unknown figure {name!r}; known figures: {', '.join(FIGURES)}")
    return names


def check_results(root: str | Path, names) -> list[str]:
    """Raise ValueError unless ``root`` holds the complete stages the figures ``names`` read."""
    names = check_figure_names(names)
    root = Path(root)
    if not root.is_dir():
        raise ValueError(
            f"{str(root)!r} is not a folder of reproduction results "
            "(create one with: ufm reproduce --out DIR)"
        )
    needed = sorted(
        {stage for name in names for stage in FIGURES[name].stages}, key=layout.STAGES.index
    )
    missing = [s for s in needed if not layout.stage_complete(root, s)]
    if missing or not (root / layout.CONFIG).is_file():
        expected = ", ".join(f"{s}/{layout.SUMMARY}" for s in missing) or layout.CONFIG
        raise ValueError(
            f"{str(root)!r} holds no complete reproduction results for these figures: missing "
            f"{expected} (run: ufm reproduce --out {root})"
        )
    return names


def build_figure(root: str | Path, name: str) -> Figure:
    """The figure ``name`` of the reproduction in ``root``, as a matplotlib Figure (not saved)."""
    check_results(root, [name])
    with matplotlib.rc_context(RC):
        return FIGURES[name].build(Path(root))


def draw_figures(
    root: str | Path,
    names=None,
    out: str | Path | None = None,
    dpi: int = 150,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Draw the figures ``names`` (default: all, in order) of the reproduction in ``root``
    into ``out`` (default ``root/figures``); return the files written (PNG and PDF)."""
    dpi = check_int("dpi", dpi, 30, 600)
    names = check_results(root, names)
    root = Path(root)
    folder = prepare_run_dir(out if out is not None else layout.stage_dir(root, layout.FIGURES))
    written = []
    for name in names:
        written += save(build_figure(root, name), folder, name, dpi)
        if log is not None:
            log(f"  figure {name}: {folder / name}.png, .pdf")
    return written


def draw_phase_figures(
    root: str | Path,
    names=None,
    out: str | Path | None = None,
    dpi: int = 150,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Draw the phase figures ``names`` (default: all) of the reproduction's sweep stage
    (:func:`.phase.reproduction_phase_figures`) into ``out`` (default ``root/figures``)."""
    figures = reproduction_phase_figures(root)
    names = list(figures) if names is None else list(names)
    unknown = [n for n in names if n not in figures]
    if unknown:
        raise ValueError(f"unknown phase figure {unknown[0]!r}; phase figures of "
                         f"{str(root)!r}: {', '.join(figures) or 'none'}")
    out = out if out is not None else layout.stage_dir(root, layout.FIGURES)
    written = []
    for name in names:
        folder, figure = figures[name]
        written += draw_sweep_figures(folder, [figure], out, dpi, log,
                                      prefix=name[: -len(figure)])
    return written


def draw_from(
    source: str | Path,
    names=None,
    out: str | Path | None = None,
    dpi: int = 150,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """The figures of ``source``: a sweep folder's (``sweep.json``: the sweep figures that
    apply), a measured network's (a training run or a measurement folder, :data:`FOLDER_KINDS`:
    :data:`RUN_FIGURES` whose files it holds), or a reproduction's (:data:`FIGURES` and its
    sweep stage's phase figures); ``names`` picks some of them."""
    source = Path(source)
    if is_sweep(source):
        return draw_sweep_figures(source, names, out, dpi, log)
    if folder_kind(source) is not None:
        return draw_run_figures(source, names, out, dpi, log)
    if not (source / layout.CONFIG).is_file():
        raise ValueError(
            f"{str(source)!r} is not a folder of reproduction results (no {layout.CONFIG}; "
            "create one with: ufm reproduce --out DIR), nor a sweep folder (no sweep.json; "
            "create one with: ufm sweep --config FILE --out DIR), nor "
            f"{FOLDER_KINDS['run']}, nor {FOLDER_KINDS['measurement']}"
        )
    phase = reproduction_phase_figures(source)
    if names is None:
        figure_names, phase_names = None, list(phase)
    else:
        names = list(names)
        unknown = [n for n in names if n not in FIGURES and n not in phase]
        if unknown:
            raise ValueError(f"unknown figure {unknown[0]!r}; known figures: "
                             f"{', '.join([*FIGURES, *phase])}")
        figure_names = [n for n in names if n in FIGURES]
        phase_names = [n for n in names if n in phase]
    written = []
    if figure_names is None or figure_names:
        written += draw_figures(source, figure_names, out, dpi, log)
    if phase_names:
        written += draw_phase_figures(source, phase_names, out, dpi, log)
    return written


__all__ = [
    "FIGURES",
    "RUN_FIGURES",
    "SWEEP_FIGURES",
    "FigureSpec",
    "RunFigureSpec",
    "SweepFigureSpec",
    "build_figure",
    "build_run_figure",
    "build_sweep_figure",
    "check_figure_names",
    "check_results",
    "draw_figures",
    "draw_from",
    "draw_phase_figures",
    "draw_run_figures",
    "draw_sweep_figures",
    "etf_phase",
    "minority_phase",
    "plot_coefficient_curves",
    "plot_reliability",
    "plot_theory_triple",
    "plot_triple",
]
