r"""Figure 10: the networks' coefficient curves against the cross-entropy theory and the null.

Panels (a)-(d), one per network run (ERM and mixup, learned and fixed simplex-ETF classifier):
the coefficients of the cell means of the centred, in-span features on the two mixed classes'
rows, :math:`\hat a(\lambda)/\bar a_\text{same}` and :math:`\hat b(\lambda)/\bar a_\text{same}`
(:mod:`ufm.nets.cell_comparison`), with error bars of two quoted errors (the larger of the
pairs' and the class pairs' standard errors), beside the exact cross-entropy optimum at the
:math:`\lambda_H` fitted on these curves (or at the end of its search range, where the fit
ran to it: then the title says it was not fitted), the squared-error null
:math:`(\lambda, 1-\lambda)` and the exact optimum for the run's own classifier. Panel (e): the
amplification :math:`(\hat a + \hat b)(1/2)/\bar a_\text{same}` against training epochs, one
line per run. Panel (f): the chi-square per degree of freedom of each prediction, with the
value above which it is rejected at 1%. Everything is read from the networks stage's files
(``curves_<run>.csv``, each run's ``metrics.csv``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.stats import chi2

from ..nets.triple_choice import curve_fit_status
from ..reproduce import layout
from .files import network_label, read_table, stage_summary
from .run_files import as_number
from .style import CLASSIFIER_MARKERS, LAM_LABEL, OKABE_ITO, TRAINING_COLOURS, new_figure

A_COLOUR, B_COLOUR = OKABE_ITO["blue"], OKABE_ITO["vermillion"]


def _number(run: Mapping, key: str) -> float:
    """``run[key]`` as a float (JSON's "nan", "inf" too), NaN when absent or not a number."""
    value = as_number(run.get(key))
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number else math.nan


def lam_H_words(run: Mapping) -> str:
    """How the lam_H of the cross-entropy curves came about, for a label: fitted, at the end
    of its search range (not fitted: the data pushed it there), or none. A summary from
    before ``curve_fitted_lam_H_status`` gets the status of its value."""
    lam_H = _number(run, "curve_fitted_lam_H")
    status = run.get("curve_fitted_lam_H_status") or curve_fit_status(lam_H)
    if status == "fitted":
        return f"fitted $\\lambda_H$ = {lam_H:.2g}"
    if status == "at_bound":
        return f"$\\lambda_H$ = {lam_H:.2g} at its bound: not fitted"
    return "no $\\lambda_H$ fitted"


def quoted(run: Mapping, key: str) -> float:
    """The error quoted for ``key``: ``<key>_error``, or for a summary from before it the
    larger of ``<key>_se`` and ``<key>_se_cells`` that it holds."""
    error = _number(run, f"{key}_error")
    if math.isfinite(error):
        return error
    return float(np.fmax(_number(run, f"{key}_se"), _number(run, f"{key}_se_cells")))


def _fit_words(run: Mapping, name: str) -> str:
    """'1.2 (fits)': chi2/dof and verdict of the prediction ``name`` ("ce", "squared_error")."""
    verdict = str(run.get(f"{name}_verdict", "n/a")).replace("_", " ")
    return f"{_number(run, f'{name}_chi2_per_dof'):.3g} ({verdict})"


def _run_panel(ax, curves: dict[str, np.ndarray], run: dict, title: str) -> None:
    lam = curves["lam"]
    for key, colour in (("a", A_COLOUR), ("b", B_COLOUR)):
        error = curves.get(f"{key}_norm_error", curves[f"{key}_norm_se"])
        ax.errorbar(
            lam, curves[f"{key}_norm"], yerr=2 * error, ls="", marker="o",
            ms=4, color=colour, capsize=2, zorder=4,
        )  # fmt: skip
        ax.plot(lam, curves[f"ce_{key}_norm"], color=colour, lw=1.6)
        ax.plot(lam, curves[f"null_{key}_norm"], color=colour, lw=1.2, ls="--")
        ax.plot(lam, curves[f"exact_W_{key}_norm"], color=colour, lw=1.2, ls=":")
    ax.set_xlabel(LAM_LABEL)
    ax.set_ylabel(r"coefficient / $\bar a_{\mathrm{same}}$")
    fit = str(run.get("better_fit", "n/a")).replace("_", " ")
    ax.set_title(
        f"{title}\namplification {_number(run, 'amplification'):.3f} $\\pm$ "
        f"{quoted(run, 'amplification'):.3f} (pairs {_number(run, 'amplification_se'):.3f}, "
        f"class pairs {_number(run, 'amplification_se_cells'):.3f})\n"
        f"normaliser $\\pm$ {_number(run, 'amplification_systematic'):.3f}; CE theory "
        f"{_number(run, 'amplification_theory'):.3f}, {lam_H_words(run)}\n"
        f"$\\chi^2$/dof: CE {_fit_words(run, 'ce')}, null {_fit_words(run, 'squared_error')}"
        f"\nbetter fit: {fit}",
        fontsize=8.5,
    )


def _amplification_panel(ax, root: Path) -> None:
    for name, mixup, classifier in layout.NETWORK_RUNS:
        metrics = read_table(layout.network_run(root, name) / "metrics.csv")
        if "amplification" not in metrics:
            continue
        measured = np.isfinite(metrics["amplification"])
        error = metrics.get("amplification_error", metrics["amplification_se"])
        ax.errorbar(
            metrics["epoch"][measured], metrics["amplification"][measured],
            yerr=2 * error[measured], marker=CLASSIFIER_MARKERS[classifier],
            ms=4, lw=1.6, capsize=2, color=TRAINING_COLOURS[mixup],
            ls="-" if classifier == "learned" else "--", label=network_label(name),
        )  # fmt: skip
    ax.axhline(1.0, color="black", lw=1.0, ls="--")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"amplification $(\hat a + \hat b)(1/2)\,/\,\bar a_{\mathrm{same}}$")
    ax.set_title("(e) amplification during training (1 = squared-error null)")
    ax.legend(fontsize=8)


def _fit_panel(ax, runs: dict[str, dict]) -> None:
    """Chi-square per degree of freedom of each prediction per run (log scale), each with the
    value above which it is rejected at the runs' significance (a short black line)."""
    names = [name for name, _, _ in layout.NETWORK_RUNS]
    x = np.arange(len(names))
    for offset, key, colour, label in (
        (-0.2, "ce", OKABE_ITO["blue"], "cross-entropy ($\\lambda_H$: see each panel)"),
        (0.2, "squared_error", OKABE_ITO["orange"], "squared-error null"),
    ):
        values = [_number(runs[name], f"{key}_chi2_per_dof") for name in names]
        ax.bar(x + offset, values, width=0.4, color=colour, label=label)
        for k, name in enumerate(names):
            dof = _number(runs[name], f"{key}_dof")
            level = _number(runs[name], "fit_significance")
            if math.isfinite(dof) and dof > 0 and math.isfinite(level):
                limit = chi2.isf(level, dof) / dof
                ax.plot([x[k] + offset - 0.2, x[k] + offset + 0.2], [limit, limit], color="black")
    ax.set_yscale("log")
    ax.set_xticks(x, [network_label(name).replace(", ", "\n") for name in names], fontsize=8)
    ax.set_xlabel("network run")
    ax.set_ylabel(r"$\chi^2$/dof of the curves in quoted errors")
    ax.set_title("(f) goodness of fit, last epoch\n(rejected above the black line)")
    ax.legend(fontsize=8)


def curve_handles() -> list[Line2D]:
    """Legend entries of a coefficient panel (:func:`_run_panel`): the measured a and b,
    the cross-entropy optimum, the squared-error null and the exact optimum for own W."""
    return [
        Line2D([], [], color=A_COLOUR, marker="o", ls="", label=r"$\hat a/\bar a_{same}$ (class $c$, weight $\lambda$) $\pm$ 2 quoted errors"),
        Line2D([], [], color=B_COLOUR, marker="o", ls="", label=r"$\hat b/\bar a_{same}$ (class $c'$)"),
        Line2D([], [], color="0.3", lw=1.6, label="cross-entropy optimum, ETF of the network's gain, $\\lambda_H$ of the title"),
        Line2D([], [], color="0.3", lw=1.2, ls="--", label=r"squared-error null $(\lambda, 1-\lambda)$"),
        Line2D([], [], color="0.3", lw=1.2, ls=":", label="exact optimum for the network's own $W$ (same $\\lambda_H$)"),
    ]  # fmt: skip


def coefficient_curves(root: Path) -> Figure:
    """Figure 10."""
    stage = stage_summary(root, layout.NETWORKS)
    figure = new_figure(15.0, 10.0)
    axes = figure.subplots(2, 3).ravel()
    for k, (ax, (name, _, _)) in enumerate(zip(axes, layout.NETWORK_RUNS)):
        curves = read_table(layout.network_curves(root, name))
        title = f"({'abcd'[k]}) {network_label(name)}"
        _run_panel(ax, curves, stage["runs"][name], title)
    _amplification_panel(axes[4], root)
    _fit_panel(axes[5], stage["runs"])
    handles = curve_handles()
    figure.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    figure.suptitle(
        f"Cell means of mixed features on the classifier rows ({stage['dataset']}, "
        f"{stage['model'].upper()}, {stage['epochs']} epochs): centred, in the row space of $W$, "
        "averaged over the training pairs of each (c, c', $\\lambda$)",
        fontsize=11,
    )
    return figure
