"""``report.md``: every figure with its key numbers and the configuration of every run.

Built only from the files of the reproduction folder (:mod:`ufm.reproduce.layout`); links are relative,
so the folder can be moved or published as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..io import read_json
from ..nets.minority_study import (
    amplification_tables,
    amplification_texts,
    fit_text,
    markdown_tables,
    verdict_texts,
)
from ..nets.triple_choice import LAM_H_RANGE, curve_fit_status
from ..plots import FIGURES
from ..plots.coefficients import quoted
from ..plots.minority import collapse_numbers
from ..seeds import RESOLUTION, Spread, combined_se, resolved, spread, within_error
from . import layout
from .figure_numbers import NUMBERS, Summaries
from .sweep_report import sweep_section

PAPER = (
    "Q. Fisher, H. Meng, V. Papyan, *Pushing Boundaries: Mixup's Influence on Neural Collapse*, "
    "ICLR 2024, arXiv:2402.06171"
)

# Table columns: (header, key in the row's dict).
FIXED_COLUMNS = (
    ("loss", "loss"), ("lam_H", "lam_H"), ("samples", "n"), ("stop", "stop_reason"),
    ("iterations", "iterations"), ("seconds", "seconds"), ("gradient norm", "grad_norm"),
    ("distance to exact theory", "theory_distance"),
)  # fmt: skip
LEARNED_COLUMNS = (
    ("loss", "loss"), ("stop", "stop_reason"), ("iterations", "iterations"),
    ("seconds", "seconds"), ("gradient norm", "grad_norm"), ("ETF distance of W", "etf_distance_W"),
    ("ETF distance of centred W", "etf_distance_W_centred"),
    ("distance of H to the theory for the learned W", "theory_distance_learned_W"),
)  # fmt: skip
THEORY_COLUMNS = (
    ("same-class norm", "same_class_norm"), ("norm ratio at lam = 1/2", "relative_norm_half"),
    ("margin at lam = 1/2", "margin_half"), ("p_c at lam = 1/4", "p_c_quarter"),
    ("p_c at lam = 1/2", "p_c_half"),
)  # fmt: skip
NETWORK_COLUMNS = (
    ("alpha", "alpha"), ("classifier", "classifier"), ("train acc.", "train_accuracy"),
    ("test acc.", "test_accuracy"), ("ECE", "ece"), ("NLL", "nll"), ("NC1", "nc1"),
    ("NC2 (W)", "nc2_W"), ("NC2 (means)", "nc2_M"), ("NC3", "nc3"), ("NC4", "nc4"),
    ("fitted lam_H (margins)", "fitted_lam_H"), ("margin fit rms", "margin_fit_rms"),
    ("same-class cos (per pair, full space)", "same_class_cosine"),
    ("boundary dist. at 1/2 (rel.)", "boundary_distance_half_relative"),
    ("confidence at 1/2", "confidence_half"), ("logit offset", "logit_offset"),
)  # fmt: skip
CELL_COLUMNS = (
    ("pairs per cell", "pairs_per_cell"), ("amplification", "amplification"),
    ("quoted error", "amplification_error"), ("s.e. pairs", "amplification_se"),
    ("s.e. class pairs", "amplification_se_cells"),
    ("normaliser systematic", "amplification_systematic"),
    ("at a_same(1/2)", "amplification_same_half"), ("at a_same(0)", "amplification_same_0"),
    ("at a_same(1)", "amplification_same_1"), ("CE theory", "amplification_theory"),
    ("exact for own W", "amplification_exact_W"),
    ("own W vs ETF (features)", "exact_W_feature_distance"),
    ("scatter / signal", "scatter_to_signal"),
    ("off-span residual at 1/2", "off_span_residual_half"),
)  # fmt: skip
FIT_COLUMNS = (
    ("lam_H (curves)", "curve_fitted_lam_H"), ("lam_H status", "curve_fitted_lam_H_status"),
    ("CE chi2", "ce_chi2"), ("CE dof", "ce_dof"), ("CE p", "ce_p_value"),
    ("CE verdict", "ce_verdict"), ("null chi2", "squared_error_chi2"),
    ("null dof", "squared_error_dof"), ("null p", "squared_error_p_value"),
    ("null verdict", "squared_error_verdict"), ("better fit", "better_fit"),
    ("CE misfit (rms)", "ce_curve_rms"), ("null misfit (rms)", "squared_error_curve_rms"),
)  # fmt: skip
SAME_CLASS_COLUMNS = (
    ("lam dependence", "same_class_lam_dependence"),
    ("its noise floor", "same_class_lam_dependence_noise"),
    ("scatter of single pairs", "same_class_scatter"),
    ("cell-mean cos, row space", "same_class_cell_cosine"),
    ("per-pair cos, full space", "same_class_cosine"),
    ("same-class out-of-span fraction", "same_class_out_of_span_fraction"),
    ("out-of-span fraction (all)", "out_of_span_fraction"),
)  # fmt: skip
SEED_COLUMNS = (
    ("seed", "seed"), ("test acc.", "test_accuracy"), ("ECE", "ece"),
    ("amplification", "amplification"), ("quoted error", "amplification_error"),
    ("better fit", "better_fit"), ("CE misfit (rms)", "ce_curve_rms"),
    ("boundary dist. at 1/2 (rel.)", "boundary_distance_half_relative"),
    ("same-class lam dependence", "same_class_lam_dependence"),
    ("non-linearity per block", "linearity"),
)  # fmt: skip
SOLVER_CONFIG_COLUMNS = (
    ("loss", "loss"), ("loss params", "loss_params"), ("classifier", "classifier"), ("K", "K"),
    ("d", "d"), ("pairs", "pairs"), ("lams", "num_lams"), ("lam_H", "lam_H"), ("lam_W", "lam_W"),
    ("tol", "tol"), ("device", "device"),
)  # fmt: skip
NETWORK_CONFIG_COLUMNS = (
    ("data", "dataset"), ("model", "model"), ("alpha", "alpha"), ("classifier", "classifier"),
    ("epochs", "epochs"), ("optimizer", "optimizer"), ("lr", "lr"),
    ("weight decay", "weight_decay"), ("batch", "batch_size"), ("d", "feature_dim"),
    ("seed", "seed"), ("device", "device"),
)  # fmt: skip


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{max(digits - 1, 1)}e}"
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v, digits) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _table(first: str, rows: dict[str, dict[str, Any]], columns) -> list[str]:
    """A Markdown table: one row per (label, values) item, the ``columns`` of each."""
    header = [first] + [title for title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, values in rows.items():
        cells = [label] + [_fmt(values.get(key)) for _, key in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _solver_section(solver: dict[str, Any]) -> list[str]:
    runs = {kind: {f"`{r['name']}`": r for r in solver["runs"] if r["kind"] == kind}
            for kind in ("fixed", "learned")}  # fmt: skip
    lines = ["### UFM solver against the exact theory (fixed simplex ETF)", ""]
    if solver.get("max_theory_distance") is not None:
        lines += [
            (
                "Relative distance |H - H*|_F / |H*|_F of the solved features to the exact optimum "
                "H* (`ufm.optimal_features` for pairs, `ufm.mixture_features` for the 3-class "
                f"run): at most **{_fmt(solver['max_theory_distance'])}** "
                "over the runs with exact theory. Focal loss has none: the solver gives its optimum."
            ),
            "",
        ]
    lines += _table("run", runs["fixed"], FIXED_COLUMNS)
    lines += ["### Learned classifier in the UFM", ""]
    return lines + _table("run", runs["learned"], LEARNED_COLUMNS)


def _theory_section(theory: dict[str, Any]) -> list[str]:
    lines = [
        "### Exact theory (cross-entropy, simplex ETF)",
        "",
        (
            f"K = {theory['K']}, ETF row norm {_fmt(theory['scale'])} (gain g = "
            f"{_fmt(theory['g'], 6)}). At lam = 1/2 the optimal feature lies on the c/c' boundary "
            "(margin 0); its length relative to a same-class feature is the ratio below; the "
            "probability p_c of the mixed sample tends to lam as lam_H -> 0 (1/4 stands for the "
            "nearest grid point)."
        ),
        "",
    ]
    return lines + _table("lam_H", theory["per_loss"]["ce"], THEORY_COLUMNS) + _minority_section(
        theory)


def _minority_section(theory: dict[str, Any]) -> list[str]:
    """The exact minority-collapse numbers of the theory stage (docs/theory.md section 13)."""
    numbers = theory.get("minority_collapse")
    if not numbers:
        return []
    given = numbers["reproduction"]
    lines = [
        "",
        "### Minority collapse of a learned classifier (exact theory)",
        "",
        (f"K = {given['K']}, the last {given['minority_classes']} classes with 1/rho of the "
         f"samples, lam_H = {_fmt(given['lam_H'])}, lam_W = {_fmt(given['lam_W'])}, "
         f"{given['num_lams']} lams, every class pair: the exact optimum of the learned "
         "classifier (three eigenvalues of W W^T, docs/theory.md section 13). The minority "
         "cosine is -1/(K-1) at rho = 1; the table gives the ratio at which it crosses 0 and "
         "the ratio from which the minority rows are exactly equal (closed form)."),
        "",
        "| training | cosine crosses 0 at rho | rows exactly equal from rho |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {zero} | {equal} |" for label, zero, equal in collapse_numbers(given)]
    return [*lines, ""]


def _network_section(networks: dict[str, Any]) -> list[str]:
    runs = {f"`{name}`": run for name, run in networks["runs"].items()}
    lines = [
        f"### Networks ({networks['dataset']}, {networks['model']}, {networks['epochs']} epochs)",
        "",
        (
            "Training-set metrics on clean data; accuracy, ECE (15 equal-width bins) and NLL on "
            "the clean test set. The UFM comparison uses mixed training pairs of all classes: "
            "*fitted lam_H (margins)* is the effective feature ridge whose UFM margins fit the "
            "network's centred margins (the logit offset W mu_G + b taken out; *logit offset* is "
            "its rms over classes modulo the all-ones vector) best; *boundary dist. at 1/2* is "
            "the distance of lam = 1/2 mixtures from the c/c' boundary relative to that of clean "
            "samples (theory: 0)."
        ),
        "",
    ]
    lines += _table("run", runs, NETWORK_COLUMNS)
    lines += [
        (
            "Cell means (figure 10): per cell (c, c', lam) the mean over its training pairs of "
            "the centred features in the row space of W, regressed on [w_c, w_c']; the "
            "*amplification* (a + b)(1/2) / a_same, a_same averaged over the same-class cells "
            "and lams. *Quoted error*: the larger of its standard error over the pairs inside "
            "the cells (*s.e. pairs*) and a jackknife over the cells, which also covers how "
            "the class pairs differ (*s.e. class pairs*). *Normaliser systematic*: how far the "
            "amplification moves when a_same is read at a single lam instead (the largest "
            "change over the grid; three of them shown). *CE theory*: the cross-entropy optimum "
            "for a simplex ETF of the network's gain at the lam_H of the curves; *exact for own "
            "W*: the exact optimum for the network's own W and logit offset W mu_G + b at the "
            "same lam_H (UFM solver; *own W vs ETF* is the relative distance of the two "
            "optima's features); the squared-error null is exactly 1. *Scatter / signal*: rms "
            "scatter of single pairs around their cell mean over the noise-free rms size of "
            "the cell means. The old *UFM distance* is retired: it split as D^2 = o^2 + "
            "(1 - o^2) D_span^2 and measured mostly that scatter."
        ),
        "",
    ]
    lines += _table("run", runs, CELL_COLUMNS)
    lines += [
        (
            "Goodness of fit of the normalised curves, in the quoted errors of their points: "
            "chi-square, degrees of freedom (points less the fitted lam_H; none when the fit "
            "ran to the end of its search range, *at_bound*, where the cross-entropy curves "
            "are the null's and nothing was fitted) and p-value. The points share cells and "
            "the normaliser; their correlations are ignored, so the p-values are approximate. "
            "A prediction *fits* at p of at least 1%; *better fit* names a prediction only "
            "when it fits and is the closer (cross-entropy must lower the chi-square by more "
            "than 9), and is *neither* when the data reject the one they prefer, *noise* when "
            "the cell means do not stand out of their noise. *Misfit*: rms difference of the "
            "curves from each prediction."
        ),
        "",
    ]
    lines += _table("run", runs, FIT_COLUMNS)
    lines += [
        (
            "Same-class cells (theory: a_same w_c at every lam): the movement of the cell means "
            "with lam above its noise floor and the scatter of single pairs, both relative to "
            "the cells' mean size; the cosine with w_c of the cell means in the row space of W "
            "(what the theory predicts to be 1), and of single pairs in the full feature space, "
            "which the pairs' scatter and the part of the features outside the row space "
            "(out-of-span fraction, same-class samples and all) lower."
        ),
        "",
    ]
    lines += _table("run", runs, SAME_CLASS_COLUMNS)
    lines += ["Layer-wise non-linearity along input segments (block 1 nearest the input):", ""]
    lines += _table("run", runs, (("non-linearity per block", "linearity"),))
    return lines + _seed_table(networks)


def _seed_table(networks: dict[str, Any]) -> list[str]:
    """The numbers the claims compare, for every run and seed (none with one seed)."""
    seeds = networks.get("seeds") or []
    if len(seeds) < 2:
        return []
    rows = {
        f"`{run['folder']}`": run
        for runs in networks.get("seed_runs", {}).values() for run in runs
    }  # fmt: skip
    lines = [
        "### Runs per seed",
        "",
        (
            f"Every run trained with {len(seeds)} seeds ({', '.join(map(str, seeds))}); the "
            "tables above show the first, the claims take the mean over all of them. Each "
            "seed's folder is `networks/<run>` for the first seed and `networks/<run>_seed<s>` "
            "for the others."
        ),
        "",
    ]
    return lines + _table("run", rows, SEED_COLUMNS)


def _verdict(yes: bool, no: bool) -> str:
    return "**agrees**" if yes else ("**does not agree**" if no else "**undecided**")


def _finite(value: Any) -> float:
    """``value`` as a float, 0 when missing or not finite (a systematic error not measured)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _lam_H_words(run: dict[str, Any]) -> str:
    """The lam_H of the cross-entropy curves and whether it was fitted, in words."""
    lam_H, status = run.get("curve_fitted_lam_H"), run.get("curve_fitted_lam_H_status")
    if status is None and isinstance(lam_H, float):
        status = curve_fit_status(lam_H)
    if status == "fitted":
        return f"its fitted lam_H = {_fmt(lam_H)}"
    if status == "at_bound":
        upper = isinstance(lam_H, float) and lam_H > math.sqrt(LAM_H_RANGE[0] * LAM_H_RANGE[1])
        where = "the largest allowed, where its curves become the null's" if upper else (
            "the smallest allowed")  # fmt: skip
        return f"lam_H = {_fmt(lam_H)}, the end of its search range ({where}): fitted nothing"
    return "no lam_H (none could be fitted)"


def _fit_words(run: dict[str, Any], name: str) -> str:
    """'chi2/dof 305/21, p 1e-50: rejected' for the prediction ``name``."""
    return (
        f"chi2/dof {_fmt(run.get(f'{name}_chi2'))}/{_fmt(run.get(f'{name}_dof'))}, p "
        f"{_fmt(run.get(f'{name}_p_value'))}: {run.get(f'{name}_verdict', 'n/a')}"
    )


def _runs_of(s: Summaries, name: str) -> list[dict[str, Any]]:
    """The run ``name`` per seed (the stage's ``seed_runs``; in a folder from before seeds,
    its one run)."""
    return s.networks.get("seed_runs", {}).get(name) or [s.networks["runs"][name]]


def _over(s: Summaries, name: str, key: str | Callable[[dict[str, Any]], Any]) -> Spread:
    """``key`` of the run ``name`` over its seeds (``key`` may be a function of a run)."""
    get = key if callable(key) else (lambda run: run.get(key))
    return spread([get(run) for run in _runs_of(s, name)])


def _mean(value: Spread) -> float:
    """The mean, NaN where nothing was measured (so that every comparison with it fails)."""
    return math.nan if value.mean is None else value.mean


def _mean_text(value: Spread) -> str:
    """'0.123 +- 0.004 (3 seeds)': mean +- seed standard deviation; one seed: its value."""
    if value.n < 2:
        return _fmt(value.mean)
    return f"{_fmt(value.mean)} +- {_fmt(value.sd)} ({value.n} seeds)"


def _difference(a: Spread, b: Spread) -> str:
    """The difference of the means a - b and whether the seeds resolve it (with one seed the
    verdict beside it says that there is no spread)."""
    if a.mean is None or b.mean is None:
        return "difference n/a"
    text = f"difference {_fmt(a.mean - b.mean)}"
    split = resolved(a, b)
    if split is None:
        return text
    word = "resolved" if split else f"not resolved (within {RESOLUTION:g} of them)"
    return f"{text} +- {_fmt(combined_se(a, b))} (combined standard error): {word}"


def _evidence(*values: Spread) -> str:
    """What a verdict on a number without an error of its own rests on (the boundary
    distance, a misfit, the ECE, the non-linearity: one value per network)."""
    n = min(v.n for v in values)
    if n < 2:
        return ("Evidence: one network per run; no error within a run is measured for these "
                "numbers, so nothing weighs their difference.")
    return (f"Evidence: {n} seeds per run; no error within a run is measured for these "
            "numbers, so the seed spread is their only error.")


def _compared(yes: bool, no: bool, a: Spread, b: Spread) -> str:
    """The verdict of a claim that compares the numbers ``a`` and ``b`` of two runs by the
    rule ``yes`` / ``no`` on their means: with seeds, only where their difference is
    resolved (else undecided); with one seed by the rule alone, which says so."""
    if a.n == 0 or b.n == 0:
        return "**undecided** (not measured)"
    split = resolved(a, b)
    if split is None:
        return f"{_verdict(yes, no)} (one seed, no seed spread)"
    if not split:
        return "**undecided** (the seeds do not resolve the difference)"
    return _verdict(yes, no)


def _amplification_verdict(above: bool, below: bool, fit: Any, mixup: bool) -> str:
    if not mixup:
        side = "above" if above else ("below" if below else "within 3 errors of")
        return f"control (never trained on mixtures): {side} 1"
    if above and fit == "cross_entropy":
        return "**agrees**"
    if below or fit == "squared_error":
        return "**does not agree**"
    if above and fit == "neither":
        return (
            "**agrees in part**: amplified beyond its errors, but the cross-entropy optimum "
            "does not fit the curves either"
        )
    return "**undecided**"


def _amplification_claim(s: Summaries, name: str, mixup: bool) -> str:
    runs = _runs_of(s, name)
    if len(runs) > 1:
        return _amplification_over_seeds(runs, name, mixup)
    r = runs[0]
    amp, fit = r.get("amplification"), r.get("better_fit")
    error = quoted(r, "amplification")
    if amp is None or not math.isfinite(error):
        return f"`{name}`: not measured"
    systematic = _finite(r.get("amplification_systematic"))
    margin = 3 * error + systematic
    above, below = amp - 1 > margin, 1 - amp > margin
    verdict = _amplification_verdict(above, below, fit, mixup)
    return (
        f"`{name}`: amplification {_fmt(amp)} +- {_fmt(error)} (quoted: the larger of "
        f"{_fmt(r.get('amplification_se'))} over pairs and {_fmt(r.get('amplification_se_cells'))}"
        f" over class pairs) +- {_fmt(systematic)} from the normaliser (a_same at lam = 1/2, "
        f"0, 1: {_fmt(r.get('amplification_same_half'))}, {_fmt(r.get('amplification_same_0'))}"
        f", {_fmt(r.get('amplification_same_1'))}); cross-entropy theory "
        f"{_fmt(r.get('amplification_theory'))} at {_lam_H_words(r)}, exact optimum for the "
        f"run's own W {_fmt(r.get('amplification_exact_W'))}. Fit of the curves: cross-entropy "
        f"{_fit_words(r, 'ce')}; null {_fit_words(r, 'squared_error')}; better fit: {fit}: "
        f"{verdict}"
    )


def _amplification_over_seeds(runs: list[dict[str, Any]], name: str, mixup: bool) -> str:
    """Claim 1 for a run of several seeds: the mean amplification, whose error is the larger
    of the seed standard error and the runs' quoted errors combined (the error of a mean of
    independent runs), the largest systematic error of the seeds, and the better fit only
    where every seed names the same one."""
    amp = spread([r.get("amplification") for r in runs])
    errors = [quoted(r, "amplification") for r in runs]
    if amp.n < len(runs) or not all(math.isfinite(e) for e in errors):
        return f"`{name}`: not measured on every seed"
    within = within_error(errors)
    error = max(amp.se, within)
    systematic = max(_finite(r.get("amplification_systematic")) for r in runs)
    margin = 3 * error + systematic
    above, below = amp.mean - 1 > margin, 1 - amp.mean > margin
    fits = [r.get("better_fit") for r in runs]
    fit = fits[0] if len({str(f) for f in fits}) == 1 else "mixed"
    theory = spread([r.get("amplification_theory") for r in runs])
    exact = spread([r.get("amplification_exact_W") for r in runs])
    return (
        f"`{name}`: amplification {_mean_text(amp)}: {_fmt(list(amp.values))}; error of the "
        f"mean {_fmt(error)} (the larger of the seed standard error {_fmt(amp.se)} and the "
        f"runs' quoted errors combined, {_fmt(within)}) +- {_fmt(systematic)} from the "
        f"normaliser (the largest of the seeds'); cross-entropy theory {_mean_text(theory)}, "
        f"exact optimum for the run's own W {_mean_text(exact)}. Better fit per seed: "
        f"{', '.join(map(str, fits))}: {_amplification_verdict(above, below, fit, mixup)}"
    )


def _mixup_against_erm(s: Summaries, classifier: str) -> str:
    """Mixup's amplification against its ERM control with the same classifier."""
    mix, erm = (_over(s, f"{kind}_{classifier}", "amplification") for kind in ("mixup", "erm"))
    one_seed = " (one seed, no seed spread)" if resolved(mix, erm) is None else ""
    return (
        f"Mixup against ERM ({classifier.replace('_', ' ')} classifier): amplification "
        f"{_mean_text(mix)} against {_mean_text(erm)}, {_difference(mix, erm)}{one_seed}"
    )


def _same_class_claim(s: Summaries, mixup: list[str]) -> str:
    """Claim 3: its verdict rests on the lam dependence of the same-class cell means; the two
    cosines and the out-of-span fraction beside it, each named."""

    def over(n: str, key: str) -> str:
        return _mean_text(_over(s, n, key))

    dependence = {n: _over(s, n, "same_class_lam_dependence") for n in mixup}
    numbers = "; ".join(
        f"`{n}`: lam dependence {_mean_text(dependence[n])} (noise floor "
        f"{over(n, 'same_class_lam_dependence_noise')}), scatter of single pairs "
        f"{over(n, 'same_class_scatter')}, cosine with w_c of the cell means in the row "
        f"space {over(n, 'same_class_cell_cosine')}, of single pairs in the full space "
        f"{over(n, 'same_class_cosine')}, fraction of the same-class features outside the "
        f"row space {over(n, 'same_class_out_of_span_fraction')}"
        for n in mixup
    )
    largest = max(_mean(d) for d in dependence.values())
    return (
        "3. *Same-class mixtures align with their class's classifier vector for every lam.* "
        "The verdict rests on the movement of the same-class cell means with lam above its "
        "noise floor, relative to their size (theory 0; rule: under 0.1 agrees, over 0.3 does "
        f"not; with seeds, on their means). {numbers}: "
        f"{_verdict(largest < 0.1, largest > 0.3)}. The cell-mean cosine in "
        "the row space of W is the one the theory predicts to be 1; the per-pair cosine in "
        "the full space is lowered by the scatter of the pairs and by the part of the "
        "features outside the row space, which no logit sees."
    )


def _seeds_paragraph(s: Summaries) -> str:
    """What the seeds are, and the rule every comparison of two runs follows."""
    seeds = s.networks.get("seeds") or [s.config.get("seed", 0)]
    if len(seeds) < 2:
        return (
            f"**Seeds.** One seed per run (seed {seeds[0]}): one seed, no seed spread. A "
            "verdict that compares two runs rests on a single pair of networks and cannot tell "
            "their difference from the variation between seeds (`ufm reproduce --seeds N` "
            "trains N)."
        )
    return (
        f"**Seeds.** Each of the four runs trained with {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}). A number that a claim compares between two runs is "
        "the mean +- the seed standard deviation over the seeds (n seeds); a difference of "
        f"two means counts as resolved only when it exceeds {RESOLUTION:g} combined standard "
        "errors sqrt(se_a^2 + se_b^2), se = sd / sqrt(n) (`ufm.seeds`), and a claim whose rule "
        "holds on the means but whose difference is not resolved is **undecided**. The tables "
        f"under *All numbers* and the figures show the first seed's runs (seed {seeds[0]}); "
        "every seed's are under *Runs per seed*."
    )


def _inner_linearity(run: dict[str, Any]) -> float | None:
    """The summed non-linearity after block 1 (of every block where there is only one)."""
    blocks = run.get("linearity")
    if not isinstance(blocks, list) or not blocks:
        return None
    return math.fsum(blocks[1:] if len(blocks) > 1 else blocks)


def claims_section(s: Summaries) -> list[str]:
    """The claims of Fisher et al. (docs/theory.md section 5), each with its numbers and a verdict
    by the rule stated beside it; a claim that compares two runs weighs their difference
    against the seed spread (:mod:`ufm.seeds`)."""
    net = s.net
    mixup = [n for n, m, _ in layout.NETWORK_RUNS if m]
    lines = [
        "## The paper's claims against these networks",
        "",
        (
            "The claims are those of section 5 of the theory (`docs/theory.md` in the ufm "
            "repository), and the metrics are defined in its section 6. "
            "Every run is measured on mixed *training* pairs, mixed where it was trained "
            f"(layer {net('mixup_learned', 'measured_at_layer')}: 0 is the inputs), in eval mode."
        ),
        "",
        _seeds_paragraph(s),
        "",
        (
            "1. *Different-class mixtures lie beyond the segment between the class features, "
            "along the decision boundary (amplification > 1, cross-entropy optimum), not on it "
            "(squared-error null, amplification 1).* Rule: agrees when the amplification exceeds "
            "1 by more than 3 quoted errors plus the normaliser's systematic error and the "
            "cross-entropy optimum fits the curves (better fit cross_entropy: p of at least 1% "
            "and a chi-square lower than the null's by more than 9); agrees in part when so "
            "amplified but neither prediction fits; does not agree when as far below 1 or when "
            "the null is the better fit; ERM runs are the control. The error quoted is the "
            "larger of the pairs' and the class pairs' (a jackknife over the cells); the "
            "p-values ignore the correlations of the points, which share cells and the "
            "normaliser. With seeds the amplification is their mean, its error the larger of "
            "the seed standard error and the runs' quoted errors combined (sqrt of the sum of "
            "their squares over n), the systematic error the largest of the seeds', and the "
            "better fit counts only where every seed names it."
        ),
    ]
    lines += [f"   - {_amplification_claim(s, n, m)}" for n, m, _ in layout.NETWORK_RUNS]
    lines += [f"   - {_mixup_against_erm(s, c)}." for c in ("learned", "fixed_etf")]
    erm_bd, mix_bd = (_over(s, n, "boundary_distance_half_relative")
                      for n in ("erm_learned", "mixup_learned"))  # fmt: skip
    on_boundary = _mean(mix_bd) < 0.5 * _mean(erm_bd)
    off_boundary = _mean(mix_bd) >= _mean(erm_bd)
    lines += [
        (
            "2. *A lam = 1/2 mixture lies on the c/c' boundary.* Distance from the boundary "
            f"relative to clean samples (theory 0): mixup {_mean_text(mix_bd)}, ERM "
            f"{_mean_text(erm_bd)}, {_difference(mix_bd, erm_bd)}: "
            f"{_compared(on_boundary, off_boundary, mix_bd, erm_bd)} "
            f"(rule: mixup under half of ERM's). {_evidence(mix_bd, erm_bd)}"
        ),
    ]
    lines += [_same_class_claim(s, mixup)]
    learned, fixed = (_over(s, n, "ce_curve_rms") for n in mixup)
    acc_l, acc_f = (_over(s, n, "test_accuracy") for n in mixup)
    closer = _mean(fixed) < _mean(learned)
    accurate = _mean(acc_f) > _mean(acc_l) - 0.01
    if resolved(learned, fixed) is None:
        verdict = _compared(closer and accurate, not (closer and accurate), fixed, learned)
    elif resolved(fixed, learned) and closer and accurate:
        verdict = "**agrees**"
    elif (resolved(fixed, learned) and not closer) or (not accurate and resolved(acc_f, acc_l)):
        verdict = "**does not agree**"
    else:
        verdict = "**undecided** (the seeds do not resolve the differences)"
    lines += [
        (
            "4. *A fixed simplex-ETF classifier brings the features closer to the UFM optimum "
            "without hurting accuracy.* Misfit (rms) of the mixup curves to the cross-entropy "
            f"optimum: learned {_mean_text(learned)}, fixed ETF {_mean_text(fixed)}, "
            f"{_difference(fixed, learned)}; test accuracy {_mean_text(acc_l)} and "
            f"{_mean_text(acc_f)}, {_difference(acc_f, acc_l)}: {verdict} (rule: smaller "
            "misfit, accuracy within 1 point; with seeds agrees only when the smaller misfit is "
            "resolved, does not agree when the larger one is or the accuracy is lower by more "
            "than 1 point and resolved). It says closer, not that the optimum fits: "
            + "; ".join(f"`{n}` {_fit_words(s.networks['runs'][n], 'ce')}" for n in mixup)
            + f". {_evidence(learned, fixed, acc_l, acc_f)}"
        ),
    ]
    ece = {n: _over(s, n, "ece") for n in ("erm_learned", "mixup_learned")}
    conf = {n: _over(s, n, "confidence_half") for n in ("erm_learned", "mixup_learned")}
    erm, mix = ece["erm_learned"], ece["mixup_learned"]
    lines += [
        (
            f"5. *Mixup improves calibration.* Clean test ECE: ERM {_mean_text(erm)}, mixup "
            f"{_mean_text(mix)}, {_difference(mix, erm)}: "
            f"{_compared(_mean(mix) < _mean(erm), _mean(mix) >= _mean(erm), mix, erm)}. "
            "Confidence of lam = 1/2 mixtures (theory about 1/2): ERM "
            f"{_mean_text(conf['erm_learned'])}, mixup {_mean_text(conf['mixup_learned'])}. "
            f"{_evidence(mix, erm)}"
        ),
    ]
    erm_lin, mix_lin = (_over(s, n, _inner_linearity) for n in ("erm_learned", "mixup_learned"))
    less = _mean(mix_lin) > _mean(erm_lin)
    lines += [
        (
            "6. *Supervised mixup makes intermediate layers less linear (Chaudhry et al. 2022).* "
            f"Non-linearity per block, ERM {_fmt(net('erm_learned', 'linearity'))}, mixup "
            f"{_fmt(net('mixup_learned', 'linearity'))}"
            + (f" (seed {_runs_of(s, 'erm_learned')[0].get('seed')})" if erm_lin.n > 1 else "")
            + f"; summed after block 1, ERM {_mean_text(erm_lin)}, mixup {_mean_text(mix_lin)}, "
            f"{_difference(mix_lin, erm_lin)}: "
            f"{_compared(less, not less, mix_lin, erm_lin)} (rule: larger summed "
            f"non-linearity after block 1). {_evidence(mix_lin, erm_lin)}"
        ),
        "",
    ]
    return lines


def minority_networks_section(root: Path) -> list[str]:
    """The network stage's minority study (:mod:`ufm.nets.minority_study`), when it ran: the
    networks' minority cosines beside the exact theory, the lam_H fit, one verdict per
    prediction, and the amplification of the cells per group with where the gap between the
    minority-majority and the majority-majority cells is resolved (a study file from before
    the amplification was measured has none)."""
    path = layout.minority_networks(root)
    if not path.is_file():
        return []
    study = read_json(path)
    lines = ["## Minority collapse of networks", ""]
    if not study.get("complete"):
        return [*lines, (f"The study stopped after {len(study['runs'])} runs; run again to "
                        "continue it."), ""]
    lines += [
        (f"{study['dataset']}, the {study['config']['model']} of `ufm train`, {study['epochs']} "
         f"epochs; the last "
         f"{study['minority_classes']} of {study['K']} classes keep 1/rho of their training "
         f"samples ([`{path.relative_to(root).as_posix()}`]"
         f"({path.relative_to(root).as_posix()})). A difference counts only beyond "
         f"{RESOLUTION:g} combined standard errors of the seed means."), "",
        *markdown_tables(study), "", fit_text(study), "",
    ]
    for text in verdict_texts(study):
        lines += [f"- {text}"]
    if study.get("amplification_gaps"):
        lines += ["", *amplification_tables(study), ""]
        lines += [f"- {text}" for text in amplification_texts(study)]
    return [*lines, ""]


def _figures_section(summaries: Summaries) -> list[str]:
    lines = ["## Figures and their key numbers", ""]
    for k, (name, spec) in enumerate(FIGURES.items(), 1):
        png = Path(layout.FIGURES) / f"{name}.png"
        if not (summaries.root / png).is_file():
            continue
        lines += [
            f"### {k}. {name.replace('_', ' ')}",
            "",
            f"![{spec.caption}]({png.as_posix()})",
            "",
            f"{spec.caption} ([PDF]({png.with_suffix('.pdf').as_posix()}))",
            "",
            f"**Key numbers.** {NUMBERS[name](summaries)}",
            "",
        ]
    return lines


def _run_configs(root: Path, stage: str, names) -> dict[str, dict[str, Any]]:
    """Each run's saved configuration by its linked name (network runs nest it under
    "config" beside the device actually used)."""
    configs = {}
    for name in names:
        link = f"{stage}/{name}/config.json"
        saved = read_json(root / link)
        values = dict(saved.get("config", saved))
        if "config" in saved:
            values["device"] = saved["device"]
        configs[f"[`{name}`]({link})"] = values
    return configs


def _network_folders(networks: dict[str, Any]) -> list[str]:
    """The folders of the network runs, every seed's (the runs' own without seeds)."""
    seed_runs = networks.get("seed_runs")
    if not seed_runs:
        return list(networks["runs"])
    return [run["folder"] for runs in seed_runs.values() for run in runs]


def _configuration_section(root: Path, config: dict[str, Any], solver, networks) -> list[str]:
    solver_runs = [r["name"] for r in solver["runs"]]
    return [
        "## Configuration",
        "",
        f"Reproduction ([`{layout.CONFIG}`]({layout.CONFIG})):",
        "",
        "```json",
        json.dumps(config, indent=1),
        "```",
        "",
        "Solver runs (each folder: `config.json`, `arrays.npz`, `history.csv`, `summary.json`):",
        "",
        *_table("run", _run_configs(root, layout.SOLVER, solver_runs), SOLVER_CONFIG_COLUMNS),
        (
            "Network runs (each folder: `config.json`, `metrics.csv`, `measurements/`, "
            "`checkpoints/`, `summary.json`):"
        ),
        "",
        *_table("run", _run_configs(root, layout.NETWORKS, _network_folders(networks)),
                NETWORK_CONFIG_COLUMNS),
    ]


def build_report(root: str | Path, seconds: dict[str, float] | None = None) -> str:
    """The Markdown text of ``report.md`` for the reproduction folder ``root``."""
    root = Path(root)
    config = read_json(root / layout.CONFIG)
    theory, solver, networks = (
        read_json(layout.stage_dir(root, stage) / layout.SUMMARY)
        for stage in (layout.THEORY, layout.SOLVER, layout.NETWORKS)
    )
    lines = [
        "# Mixup and neural collapse: reproduction report",
        "",
        (
            f"Theory, UFM solver and networks for {PAPER}. Written by `ufm reproduce` (ufm "
            f"{__version__}) from the result files in this folder. The theory it tests is "
            "written out in `docs/theory.md` of the ufm repository."
        ),
        "",
    ]
    if seconds:
        times = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
        lines += [f"Stage times (this session; reused stages take no time): {times}", ""]
    summaries = Summaries(root, config, theory, solver, networks)
    lines += claims_section(summaries)
    lines += sweep_section(root)
    lines += minority_networks_section(root)
    lines += _figures_section(summaries)
    lines += ["## All numbers", ""]
    lines += _solver_section(solver) + _theory_section(theory) + _network_section(networks)
    lines += _configuration_section(root, config, solver, networks)
    return "\n".join(lines)
