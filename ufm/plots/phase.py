r"""Phase figures of a sweep folder (``ufm sweep``), drawn from its table, never recomputed.

docs/theory.md section 4 asks when a learned classifier W of the mixup UFM becomes a simplex ETF.
A sweep answers it point by point; these figures read the sweep's ``sweep.json`` (one row
per point: the swept values, the status, the summary numbers; for a sweep with seeds one row
per configuration, its seed mean, :func:`.sweep_files.mean_rows`) and, for the minority
figure, each point's ``config.json``:

* :func:`etf_phase`: the ETF distance of the learned W (``etf_distance_W``, as
  :func:`ufm.etf_distance`) over two swept fields as a heat map on a log colour scale, each
  cell's value written in it; failed, interrupted and pending points are blank cells marked
  so. A point solved from several random starts (its ``summary.json``,
  :mod:`ufm.solver.random_starts`) shows the lowest objective's value and "k/N starts", the
  starts that reached it.
* :func:`minority_phase`: the mean cosine between distinct minority classifier rows
  (``minority_cosine``) against the imbalance ratio :math:`\rho`, mixup against plain training
  (a lam grid of pure samples only), beside the balanced ETF value :math:`-1/(K-1)` and
  collapse (1); with seeds the mean over them, with bars of one seed standard deviation.
  Minority collapse: Fang, He, Long & Su, PNAS 2021.

:data:`SWEEP_FIGURES` lists them with the sweeps they apply to; :func:`draw_sweep_figures`
writes ``<name>.png`` and ``<name>.pdf``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .._checks import check_int
from ..io import prepare_run_dir
from ..reproduce import layout
from .style import LIMIT_STYLE, OKABE_ITO, RC, TRAINING_COLOURS, new_figure, save
from .sweep_files import (
    FIGURES_FOLDER,
    is_plain,
    mean_rows,
    point_config,
    read_sweep,
    reproduction_sweeps,
    seed_count,
    start_counts,
    sweep_K,
)

# Fields that say whether a point mixes (lam grid or Beta draws): not a line of their own.
KIND_FIELDS = ("lams", "num_lams", "alpha", "mixup_points")
AXIS_LABELS = {
    "lam_W": "lam_W (classifier ridge)",
    "lam_H": "lam_H (feature ridge)",
    "d": "d (feature dimension)",
    "K": "K (classes)",
    "loss": "loss",
    "imbalance_ratio": "imbalance_ratio (majority / minority samples)",
    "minority_classes": "minority_classes",
    "alpha": "alpha (lam ~ Beta(alpha, alpha))",
    "num_pairs": "num_pairs (random class pairs)",
    "lams": "lams (lam grid)",
    "pairing": "pairing (of imbalanced mixtures)",
}
NONE_LABELS = {"alpha": "lam grid", "lams": "num_lams grid", "num_pairs": "all"}
MAX_PANELS = 12


def cell_text(value: float | None) -> str:
    """A cell's value as written in the ETF map: two significant digits."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.2g}"


def tick_label(field: str, value: Any) -> str:
    """A swept value as a tick label: lists short or summarised, None by what it means."""
    if value is None:
        return NONE_LABELS.get(field, "none")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        if len(value) <= 4:
            return "[" + ", ".join(tick_label(field, v) for v in value) + "]"
        numbers = [float(v) for v in value]
        return f"{len(value)} in [{min(numbers):g}, {max(numbers):g}]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={tick_label(k, v)}" for k, v in value.items()) or "{}"
    return str(value)


def axis_label(field: str, K: int | None = None) -> str:
    label = AXIS_LABELS.get(field, field)
    if field == "d" and K is not None:
        label += f"; K - 1 = {K - 1}"
    return label


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _levels(rows: list[dict[str, Any]], field: str) -> list[Any]:
    """The values of ``field`` in the order of the rows (grid order)."""
    seen: dict[str, Any] = {}
    for row in rows:
        seen.setdefault(_key(row.get(field)), row.get(field))
    return list(seen.values())


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _axes_of(table: dict[str, Any], folder, x, y) -> tuple[str, str]:
    swept = list(table["swept"])
    listing = ", ".join(swept) or "none"
    if x is None and y is None:
        if len(swept) != 2:
            raise ValueError(
                f"the ETF map needs two axes: sweep {str(folder)!r} sweeps {len(swept)} field(s) "
                f"({listing}); give x and y among them"
            )
        return swept[0], swept[1]
    for name, value in (("x", x), ("y", y)):
        if value is not None and value not in swept:
            raise ValueError(
                f"{name} = {value!r} is not a swept field of {str(folder)!r}; swept fields: "
                f"{listing}"
            )
    if x is None or y is None:
        rest = [f for f in swept if f not in (x, y)]
        if len(rest) != 1:
            raise ValueError(
                f"give both x and y among the swept fields of {str(folder)!r}: {listing}"
            )
        x, y = (rest[0], y) if x is None else (x, rest[0])
    if x == y:
        raise ValueError(f"x and y are both {x!r}; swept fields of {str(folder)!r}: {listing}")
    return x, y


def etf_phase(sweep_dir: str | Path, x: str | None = None, y: str | None = None) -> Figure:
    """The ETF distance of the learned W over the swept fields ``x`` (columns) and ``y``
    (rows), by default the sweep's two swept fields. With more swept fields, one panel per
    combination of the others (at most 12). With seeds each cell is the mean over them (a
    cell whose seeds are not all done is blank, marked with the first failing status)."""
    table = read_sweep(sweep_dir)
    x, y = _axes_of(table, sweep_dir, x, y)
    rows = mean_rows(table)
    others = [f for f in table["swept"] if f not in (x, y)]
    panels = _levels([{"_": [r.get(f) for f in others]} for r in rows], "_")
    if len(panels) > MAX_PANELS:
        raise ValueError(
            f"{len(panels)} panels (one per combination of {', '.join(others)}) are too many; "
            f"at most {MAX_PANELS}"
        )
    xs, ys = _levels(rows, x), _levels(rows, y)
    values = [float(v) for r in rows if math.isfinite(v := _number(r.get("etf_distance_W")))]
    positive = [v for v in values if v > 0]
    low = min(positive) if positive else 1e-6
    high = max(positive) if positive else 1.0
    norm = LogNorm(vmin=low, vmax=high if high > low else low * 10)
    cmap = colormaps["viridis"].with_extremes(bad="white")
    columns = min(len(panels), 3)
    rows_of_panels = -(-len(panels) // columns)
    width = columns * (1.6 + 0.85 * len(xs)) + 1.2
    height = rows_of_panels * (1.3 + 0.45 * len(ys)) + 0.6
    figure = new_figure(min(width, 16.0), min(height, 14.0))
    axes = figure.subplots(rows_of_panels, columns, squeeze=False)
    K = sweep_K(sweep_dir, rows)
    image = None
    for k, panel in enumerate(panels):
        ax = axes.flat[k]
        chosen = [r for r in rows if [r.get(f) for f in others] == panel]
        grid = np.full((len(ys), len(xs)), np.nan)
        marks = [["" for _ in xs] for _ in ys]
        for row in chosen:
            i = [_key(v) for v in ys].index(_key(row.get(y)))
            j = [_key(v) for v in xs].index(_key(row.get(x)))
            value = _number(row.get("etf_distance_W"))
            if row["status"] != "done":
                marks[i][j] = row["status"]
            elif math.isfinite(value):
                grid[i, j] = max(value, low)
                marks[i][j] = cell_text(value)
                counts = start_counts(sweep_dir, row)
                if counts is not None:  # the lowest of several starts, and how many reached it
                    marks[i][j] += "\n{}/{} starts".format(*counts)
            else:
                marks[i][j] = "n/a"
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto",
                          origin="lower")
        for i in range(len(ys)):
            for j in range(len(xs)):
                shade = norm(grid[i, j]) if math.isfinite(grid[i, j]) else 1.0
                ax.text(j, i, marks[i][j], ha="center", va="center", fontsize=8,
                        color="white" if shade < 0.5 else "black")
        ax.set_xticks(range(len(xs)), [tick_label(x, v) for v in xs])
        ax.set_yticks(range(len(ys)), [tick_label(y, v) for v in ys])
        ax.set_xlabel(axis_label(x, K))
        ax.set_ylabel(axis_label(y, K))
        ax.grid(False)
        if others:
            ax.set_title(", ".join(f"{f} = {tick_label(f, v)}" for f, v in zip(others, panel)))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    seeds = seed_count(table)
    over = f", mean of {seeds} seeds" if seeds > 1 else ""
    figure.colorbar(image, ax=axes, label=f"ETF distance of W (log scale{over})")
    figure.suptitle(f"When is the learned W a simplex ETF? ({Path(sweep_dir).name})")
    return figure


def _imbalance_ratio(row: dict[str, Any], config: dict[str, Any], swept: list[str]) -> float:
    source = row if "imbalance_ratio" in swept else config
    return _number(source.get("imbalance_ratio"))


def minority_phase(sweep_dir: str | Path) -> Figure:
    """The minority cosine against the imbalance ratio (log scale), one line for mixup points
    and one for plain training (:func:`is_plain`), per combination of the other swept fields;
    with seeds the mean over them, with bars of one seed standard deviation."""
    table = read_sweep(sweep_dir)
    swept, rows = list(table["swept"]), mean_rows(table)
    listing = ", ".join(swept) or "none"
    configs = {r["point"]: point_config(sweep_dir, r) for r in rows}
    ratios = [_imbalance_ratio(r, configs[r["point"]] or {}, swept) for r in rows]
    if not any(math.isfinite(v) for v in ratios):
        raise ValueError(
            f"sweep {str(sweep_dir)!r} has no imbalance_ratio values (swept fields: {listing}; "
            "none of its points' config.json names one): the minority figure needs imbalance_ratio "
            "in the sweep's [grid]"
        )
    others = [f for f in swept if f not in ("imbalance_ratio", *KIND_FIELDS)]
    lines: dict[tuple, list[tuple[float, float, float]]] = {}
    for row, ratio in zip(rows, ratios):
        config, cosine = configs[row["point"]], _number(row.get("minority_cosine"))
        if row["status"] != "done" or config is None or not math.isfinite(cosine):
            continue
        kind = "plain" if is_plain(config) else "mixup"
        label = tuple(tick_label(f, row.get(f)) for f in others)
        spread = _number(row.get("minority_cosine_sd"))
        lines.setdefault((kind, label), []).append((ratio, cosine, spread))
    if not lines:
        counts = ", ".join(f"{v} {k}" for k, v in table.get("counts", {}).items())
        raise ValueError(
            f"no point of sweep {str(sweep_dir)!r} has a minority cosine ({counts}): it needs "
            "finished solves with minority_classes >= 2"
        )
    K = sweep_K(sweep_dir, rows)
    seeds = seed_count(table)
    etf = [_number(r.get("etf_cosine")) for r in rows]
    etf = [v for v in etf if math.isfinite(v)] or ([-1.0 / (K - 1)] if K else [])
    figure = new_figure(6.4, 4.2)
    ax = figure.add_subplot()
    plain = ("plain training (ERM, alpha = 0)" if table.get("job") == "train"
             else "plain training (lams = [1.0])")
    styles = ("-", "--", "-.", ":")
    labels = sorted({label for _, label in lines})
    for (kind, label), points in sorted(lines.items()):
        points.sort()
        name = "mixup" if kind == "mixup" else plain
        if label:
            name += ": " + ", ".join(f"{f} = {v}" for f, v in zip(others, label))
        style = {"marker": "o", "ls": styles[labels.index(label) % len(styles)],
                 "color": TRAINING_COLOURS[kind == "mixup"]}
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if seeds > 1:
            bars = [p[2] if math.isfinite(p[2]) else 0.0 for p in points]
            ax.errorbar(xs, ys, yerr=bars, capsize=2, **style,
                        label=f"{name} (mean +- sd of {seeds} seeds)")
        else:
            ax.plot(xs, ys, **style, label=name)
    for value in sorted(set(etf)):
        ax.axhline(value, **{**LIMIT_STYLE, "lw": 1.0},
                   label=f"balanced simplex ETF, -1/(K-1) = {value:.3g}")
    ax.axhline(1.0, color=OKABE_ITO["black"], ls=":", lw=1.0, label="collapse (cosine 1)")
    ax.set_xscale("log")
    ticks = sorted({p[0] for points in lines.values() for p in points})
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.minorticks_off()
    ax.set_xlabel(axis_label("imbalance_ratio"))
    ax.set_ylabel("cosine between minority rows of W")
    missing = {s: n for s, n in table.get("counts", {}).items() if s != "done" and n}
    if missing:
        ax.text(0.02, 0.02, "not drawn: " + ", ".join(f"{n} {s}" for s, n in missing.items()),
                transform=ax.transAxes, fontsize=8, color=OKABE_ITO["vermillion"])
    ax.legend(loc="best")
    ax.set_title(f"Minority collapse of the learned W ({Path(sweep_dir).name})")
    return figure


@dataclass(frozen=True)
class SweepFigureSpec:
    """A sweep figure: the function drawing it, whether a sweep's table suits it, the caption."""

    build: Callable[[Path], Figure]
    applies: Callable[[dict[str, Any]], bool]
    needs: str
    caption: str


SWEEP_FIGURES: dict[str, SweepFigureSpec] = {
    "etf_phase": SweepFigureSpec(
        etf_phase,
        lambda table: len(table["swept"]) == 2,
        "exactly two swept fields",
        "ETF distance of the learned classifier W over two swept fields (log colour scale; "
        "each cell's value written in it; blank cells: failed, interrupted or pending points). "
        "A simplex ETF needs d >= K - 1. 'k/N starts' under a value: the point was solved from "
        "N random starts (below the rank a minimum can need, where the problem has several "
        "stationary points) and the value is the lowest objective's, which k of them reached.",
    ),
    "minority_phase": SweepFigureSpec(
        minority_phase,
        lambda table: "imbalance_ratio" in table["swept"],
        "imbalance_ratio among the swept fields",
        "Mean cosine between distinct minority classifier rows against the imbalance ratio, "
        "mixup against plain training (lams = [1.0]): -1/(K-1) for a simplex ETF (dashed), 1 "
        "once the minority rows have collapsed onto one direction (dotted).",
    ),
}


def applicable_figures(sweep_dir: str | Path) -> list[str]:
    """The sweep figures that suit the sweep in ``sweep_dir``, in registry order."""
    table = read_sweep(sweep_dir)
    return [name for name, spec in SWEEP_FIGURES.items() if spec.applies(table)]


def check_sweep_figure_names(sweep_dir: str | Path, names=None) -> list[str]:
    """``names`` checked against :data:`SWEEP_FIGURES` (default: those that apply)."""
    if names is None:
        names = applicable_figures(sweep_dir)
        if not names:
            swept = ", ".join(read_sweep(sweep_dir)["swept"])
            needs = "; ".join(f"{n} needs {s.needs}" for n, s in SWEEP_FIGURES.items())
            raise ValueError(f"no sweep figure suits {str(sweep_dir)!r} (swept: {swept}): {needs}")
        return names
    names = list(names)
    for name in names:
        if name not in SWEEP_FIGURES:
            raise ValueError(
                f"unknown sweep figure {name!r}; known sweep figures: {', '.join(SWEEP_FIGURES)}"
            )
    return names


def build_sweep_figure(sweep_dir: str | Path, name: str) -> Figure:
    """The sweep figure ``name`` of ``sweep_dir`` (not saved)."""
    (name,) = check_sweep_figure_names(sweep_dir, [name])
    with matplotlib.rc_context(RC):
        return SWEEP_FIGURES[name].build(Path(sweep_dir))


def draw_sweep_figures(
    sweep_dir: str | Path,
    only=None,
    out: str | Path | None = None,
    dpi: int = 150,
    log: Callable[[str], None] | None = None,
    prefix: str = "",
) -> list[Path]:
    """Draw the sweep figures ``only`` (default: those that apply) of ``sweep_dir`` into
    ``out`` (default ``sweep_dir/figures``) as ``<prefix><name>.png`` and ``.pdf``; return
    the files written. Every figure is built before any file is written."""
    dpi = check_int("dpi", dpi, 30, 600)
    names = check_sweep_figure_names(sweep_dir, only)
    figures = [(name, build_sweep_figure(sweep_dir, name)) for name in names]
    folder = prepare_run_dir(out if out is not None else Path(sweep_dir) / FIGURES_FOLDER)
    written = []
    for name, figure in figures:
        written += save(figure, folder, prefix + name, dpi)
        if log is not None:
            log(f"  figure {prefix + name}: {folder / (prefix + name)}.png, .pdf")
    return written


def reproduction_phase_figures(root: str | Path) -> dict[str, tuple[Path, str]]:
    """The phase figures of a reproduction: ``<sweep>_<figure>`` -> (sweep folder, figure),
    for every sweep of its sweep stage (:func:`.sweep_files.reproduction_sweeps`)."""
    return {layout.phase_figure(folder.name, name): (folder, name)
            for folder in reproduction_sweeps(root) for name in applicable_figures(folder)}
