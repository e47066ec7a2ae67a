r"""Figure 10: the networks' coefficient curves against the cross-entropy theory and the null.

Panels (a)-(d), one per network run (ERM and mixup, learned and fixed simplex-ETF classifier):
the coefficients of the cell means of the centred, in-span features on the two mixed classes'
rows, :math:`\hat a(\lambda)/\bar a_\text{same}` and :math:`\hat b(\lambda)/\bar a_\text{same}`
(:mod:`ufm.nets.cell_comparison`), with error bars of two standard errors, beside the exact
cross-entropy optimum at the :math:`\lambda_H` fitted on these curves, the squared-error null
:math:`(\lambda, 1-\lambda)` and the exact optimum for the run's own classifier. Panel (e): the
amplification :math:`(\hat a + \hat b)(1/2)/\bar a_\text{same}` against training epochs, one
line per run. Panel (f): the rms misfit of the curves to each prediction. Everything is read
from the networks stage's files (``curves_<run>.csv``, each run's ``metrics.csv``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..reproduce import layout
from .files import network_label, read_table, stage_summary
from .style import CLASSIFIER_MARKERS, LAM_LABEL, OKABE_ITO, TRAINING_COLOURS, new_figure

A_COLOUR, B_COLOUR = OKABE_ITO["blue"], OKABE_ITO["vermillion"]


def _run_panel(ax, curves: dict[str, np.ndarray], run: dict, title: str) -> None:
    lam = curves["lam"]
    for key, colour in (("a", A_COLOUR), ("b", B_COLOUR)):
        ax.errorbar(
            lam, curves[f"{key}_norm"], yerr=2 * curves[f"{key}_norm_se"], ls="", marker="o",
            ms=4, color=colour, capsize=2, zorder=4,
        )  # fmt: skip
        ax.plot(lam, curves[f"ce_{key}_norm"], color=colour, lw=1.6)
        ax.plot(lam, curves[f"null_{key}_norm"], color=colour, lw=1.2, ls="--")
        ax.plot(lam, curves[f"exact_W_{key}_norm"], color=colour, lw=1.2, ls=":")
    ax.set_xlabel(LAM_LABEL)
    ax.set_ylabel(r"coefficient / $\bar a_{\mathrm{same}}$")
    fit = run.get("better_fit", "n/a").replace("_", " ")
    cells_se = run.get("amplification_se_cells")
    cells_se = float(cells_se) if isinstance(cells_se, (int, float)) else np.nan
    ax.set_title(
        f"{title}\namplification {run.get('amplification', np.nan):.3f} $\\pm$ "
        f"{run.get('amplification_se', np.nan):.3f} (pairs)"
        + (f", $\\pm$ {cells_se:.3f} (class pairs)" if np.isfinite(cells_se) else "")
        + "\n(CE theory "
        f"{run.get('amplification_theory', np.nan):.3f}; better fit: {fit})"
    )


def _amplification_panel(ax, root: Path) -> None:
    for name, mixup, classifier in layout.NETWORK_RUNS:
        metrics = read_table(layout.network_run(root, name) / "metrics.csv")
        if "amplification" not in metrics:
            continue
        measured = np.isfinite(metrics["amplification"])
        ax.errorbar(
            metrics["epoch"][measured], metrics["amplification"][measured],
            yerr=2 * metrics["amplification_se"][measured], marker=CLASSIFIER_MARKERS[classifier],
            ms=4, lw=1.6, capsize=2, color=TRAINING_COLOURS[mixup],
            ls="-" if classifier == "learned" else "--", label=network_label(name),
        )  # fmt: skip
    ax.axhline(1.0, color="black", lw=1.0, ls="--")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"amplification $(\hat a + \hat b)(1/2)\,/\,\bar a_{\mathrm{same}}$")
    ax.set_title("(e) amplification during training (1 = squared-error null)")
    ax.legend(fontsize=8)


def _misfit_panel(ax, runs: dict[str, dict]) -> None:
    names = [name for name, _, _ in layout.NETWORK_RUNS]
    x = np.arange(len(names))
    for offset, key, colour, label in (
        (-0.2, "ce_curve_rms", OKABE_ITO["blue"], "cross-entropy at its fitted $\\lambda_H$"),
        (0.2, "squared_error_curve_rms", OKABE_ITO["orange"], "squared-error null"),
    ):
        values = [runs[name].get(key, np.nan) for name in names]
        ax.bar(x + offset, values, width=0.4, color=colour, label=label)
    ax.set_xticks(x, [network_label(name).replace(", ", "\n") for name in names], fontsize=8)
    ax.set_xlabel("network run")
    ax.set_ylabel(r"rms misfit of the curves (units of $\bar a_{\mathrm{same}}$)")
    ax.set_title("(f) misfit of each prediction, last epoch")
    ax.legend(fontsize=8)


def curve_handles() -> list[Line2D]:
    """Legend entries of a coefficient panel (:func:`_run_panel`): the measured a and b,
    the cross-entropy optimum, the squared-error null and the exact optimum for own W."""
    return [
        Line2D([], [], color=A_COLOUR, marker="o", ls="", label=r"$\hat a/\bar a_{same}$ (class $c$, weight $\lambda$) $\pm$ 2 s.e."),
        Line2D([], [], color=B_COLOUR, marker="o", ls="", label=r"$\hat b/\bar a_{same}$ (class $c'$)"),
        Line2D([], [], color="0.3", lw=1.6, label="cross-entropy optimum, ETF of the network's gain, fitted $\\lambda_H$"),
        Line2D([], [], color="0.3", lw=1.2, ls="--", label=r"squared-error null $(\lambda, 1-\lambda)$"),
        Line2D([], [], color="0.3", lw=1.2, ls=":", label="exact optimum for the network's own $W$ (same $\\lambda_H$)"),
    ]  # fmt: skip


def coefficient_curves(root: Path) -> Figure:
    """Figure 10."""
    stage = stage_summary(root, layout.NETWORKS)
    figure = new_figure(15.0, 9.2)
    axes = figure.subplots(2, 3).ravel()
    for k, (ax, (name, _, _)) in enumerate(zip(axes, layout.NETWORK_RUNS)):
        curves = read_table(layout.network_curves(root, name))
        title = f"({'abcd'[k]}) {network_label(name)}"
        _run_panel(ax, curves, stage["runs"][name], title)
    _amplification_panel(axes[4], root)
    _misfit_panel(axes[5], stage["runs"])
    handles = curve_handles()
    figure.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    figure.suptitle(
        f"Cell means of mixed features on the classifier rows ({stage['dataset']}, "
        f"{stage['model'].upper()}, {stage['epochs']} epochs): centred, in the row space of $W$, "
        "averaged over the training pairs of each (c, c', $\\lambda$)",
        fontsize=11,
    )
    return figure
