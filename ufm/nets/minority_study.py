r"""Minority collapse of networks held against the exact reduced theory.

The study behind ``scripts/minority_networks.py`` and the full reproduction's network stage.
The UFM (:func:`ufm.imbalance_theory`, docs/theory.md section 13) predicts that under step
imbalance, mixup whose partners come from the imbalanced set collapses the minority rows of
the classifier *more* than plain training, and that class pairing keeps them apart by more
than its smaller majority-to-minority label mass explains. Networks test both. On a data set
whose last ``minority`` classes keep 1/rho of their training samples, for each rho and seed,
four runs of ``ufm train`` (:data:`KINDS`):

* ``erm``: plain training (alpha = 0);
* ``mixup_sample``: mixup, partners from the imbalanced batch (sample pairing);
* ``mixup_class``: mixup with class pairing (the partner's class uniform);
* ``sample_at_class_mass``: the control, sample pairing at the imbalance
  :func:`ufm.imbalance.label_mass_ratio` (K, k, rho, "class"), the label mass ratio class
  pairing gives at rho. If class pairing helps only through label mass, it matches this.

Per run: the mean cosine between the minority rows of the last layer's W
(:func:`ufm.imbalance.minority_cosine`), the minority and majority test accuracy, and the
effective lam_H fits of the run's final measurement (``curve_fitted_lam_H`` with its status,
``fitted_lam_H`` on the margins) with the classifier gain they were fitted at.

**The theory beside the networks.** Its minority cosine depends on lam_H and lam_W, and
only through their product: W -> aW, H -> H/a leaves the logits unchanged and turns the
penalties into :math:`\lambda_H\|H\|^2/a^2 + \lambda_W a^2\|W\|^2`. The data fix one
number, once per data set, on the balanced (rho = 1) mixup runs (:func:`fit_lam_H`): the
measurement's lam_H was fitted with W at the network's own gain g (``classifier_gain``),
and a feature problem with W = sqrt(g) W_1 has the ridge lam_H/g, so what the fit
determines is lam_H at that gain. The theory therefore takes the fitted lam_H and the
lam_W at which the balanced UFM optimum has the network's gain (:func:`gain_matched_lam_W`):
at rho = 1 it is then the very optimum the fit matched, W norm included. No minority
number enters. The lams of the theory are :data:`THEORY_LAMS` equal-mass quantiles of the
training's Beta(alpha, alpha) (:func:`theory_lams`). The theory at lam_W = the training's
weight decay (the literal penalty on the last layer, which the fit does not reproduce) is
kept beside it as a sensitivity check.

**The amplification per group of cells** (:func:`run_amplification`,
:mod:`ufm.nets.cell_groups`). Every run's final measurement mixes training pairs of every
class pair on the lam grid (40 pairs per class pair in every run, :data:`SMALL_MEASUREMENT`),
and the amplification :math:`(\hat a + \hat b)(1/2)/\bar a_\text{same}` of its cells is read
separately on the majority-majority, minority-majority and minority-minority cells, each
with the pairs' and the class pairs' errors of the run's amplification. ERM runs are
measured the same way, on mixed inputs they never trained on: theirs is how an unmixed
network responds to mixtures, a control, and the UFM predicts nothing for it (its plain
training has no mixed sample). Over seeds (:func:`aggregate`) each amplification's error is
the seed standard error and the runs' own errors combined (:func:`ufm.seeds.total_se`): the
class pairs measured are the same on every seed, so the seed spread cannot see how much the
number depends on which class pairs there are; the runs' errors (a jackknife over the cells)
do. The gap minority-majority minus majority-majority is taken within each run (the two
groups share the network) and judged at each rho, and against the balanced runs, at
:data:`ufm.seeds.RESOLUTION` standard errors (:func:`amplification_gaps`); at rho = 1 the
groups differ only in which classes they hold, so a network's gap there is its classes',
not the imbalance's. The theory's numbers are those of the same exact optimum, its features
at lam = 1/2 measured as a network's (:func:`ufm.theory.minority.cell_amplification`).

**Verdicts** (:func:`compare`): per rho > 1 (the theory predicts the sign at every one),
the difference of the seed means, resolved only beyond twice its combined standard error
(the rule of :func:`ufm.seeds.resolved`); the prediction *holds* when it is resolved in the
predicted direction at some rho and against it at none, is *contradicted* when resolved
against it at some rho and for it at none, *mixed* when resolved both ways, and *not
resolved* when nowhere. Six rhos are judged, each at about 2 standard errors: a single
resolved rho can be chance, so the verdict always comes with the list of rhos.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.stats import beta as beta_distribution

from ..config import config_to_dict
from ..imbalance import label_mass_ratio, minority_cosine
from ..io import read_json, write_json
from ..seeds import RESOLUTION, combined_standard_error, finite, spread, total_se, within_error
from ..theory.minority import cell_amplification, imbalance_theory, kind_arguments
from .cell_groups import GROUPS, group_amplification
from .config import TrainConfig
from .data import load_dataset
from .feature_comparison import mixed_cell_statistics
from .features_file import MixedFeatures, read_features
from .imbalanced_data import imbalanced_dataset
from .run import measurement_dir, run_training
from .triple_choice import curve_fit_status

__all__ = [
    "AMPLIFICATIONS",
    "FIT_KIND",
    "KINDS",
    "LABELS",
    "PREDICTIONS",
    "RHOS",
    "StudySettings",
    "aggregate",
    "amplification_gaps",
    "amplification_tables",
    "amplification_texts",
    "analyse",
    "compare",
    "fit_lam_H",
    "fit_text",
    "gain_matched_lam_W",
    "markdown_tables",
    "measured_amplifications",
    "run_amplification",
    "run_study",
    "side",
    "study_configs",
    "theory_lams",
    "theory_rows",
    "verdict_texts",
]

KINDS = ("erm", "mixup_sample", "mixup_class", "sample_at_class_mass")
LABELS = {
    "erm": "ERM (plain training)",
    "mixup_sample": "mixup, sample pairing",
    "mixup_class": "mixup, class pairing",
    "sample_at_class_mass": "sample pairing at class pairing's label mass",
}
THEORY_KIND = {"erm": "plain", "mixup_sample": "sample", "mixup_class": "class",
               "sample_at_class_mass": "sample"}
"""The kind of :data:`ufm.theory.minority.KINDS` each network kind is held against (the
control at the label mass ratio of class pairing: sample pairing at that ratio)."""
RHOS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
FIT_KIND, FIT_RHO = "mixup_sample", 1.0
"""The runs the effective lam_H is fitted on: balanced mixup (every seed)."""
SMALL_MEASUREMENT = {"pairs_per_class_pair": 3, "linearity_pairs": 10, "exact_classifier": False}
"""The final measurement of the runs nothing is fitted on: small, but with the default pairs
per class pair of the all-classes comparison (40), as the fitted runs, so that every run's
amplification per group of cells (:mod:`ufm.nets.cell_groups`) rests on the same pairs; they
add about 0.2 s to a run of a digits MLP. Training does not read the measurement, so its
settings change no cosine."""
NUMBERS = ("minority_cosine", "minority_test_accuracy", "majority_test_accuracy",
           "label_mass_ratio")
AMPLIFICATIONS = ("amplification", *(f"amplification_{group}" for group in GROUPS),
                  "amplification_gap")
"""The measured amplifications of a run: all cells, each group's, and the gap between two
groups (:func:`measured_amplifications`)."""
GAP = ("minority_majority", "majority_majority")
"""The gap ``amplification_gap``: the first group's amplification minus the second's."""
GROUP_LABELS = {"majority_majority": "majority-majority", "minority_majority": "minority-majority",
                "minority_minority": "minority-minority"}
THEORY_LAMS = 21
THEORY_RATIOS = 13
"""Points of the theory's log grid of rho from 1 to the largest (13 up to 64: every power of
sqrt 2)."""
PREDICTIONS = (
    {"name": "sample_collapses_more_than_erm", "kind": "mixup_sample", "against": "erm",
     "sign": 1.0,
     "question": "Does mixup with sample pairing collapse the minority rows more than plain "
                 "training (ERM)?"},
    {"name": "class_beyond_label_mass", "kind": "mixup_class", "against": "sample_at_class_mass",
     "sign": -1.0,
     "question": "Does class pairing keep the minority rows apart beyond what its label mass "
                 "explains (against sample pairing at the same label mass ratio)?"},
)
"""The two predictions, each a pair of kinds and the sign of (kind - against) it predicts."""


@dataclass
class StudySettings:
    """What the study trains: the ``dataset`` (``data_dir`` for one read from files) whose
    last ``minority`` classes keep 1/rho of their samples, rho in ``rhos``, the ``kinds`` of
    :data:`KINDS`, each with every seed of ``seeds``, ``epochs`` of the default digits/mnist1d
    MLP recipe of :class:`ufm.nets.TrainConfig`, mixup's Beta(``alpha``, ``alpha``), on
    ``device`` with ``threads`` torch threads."""

    dataset: str = "digits"
    epochs: int = 100
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    rhos: list[float] = field(default_factory=lambda: list(RHOS))
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    minority: int = 5
    alpha: float = 1.0
    data_dir: str | None = None
    device: str = "auto"
    threads: int = 1


def run_name(kind: str, rho: float, seed: int) -> str:
    """The name of one run: ``<kind>_rho<rho>_seed<seed>``."""
    return f"{kind}_rho{rho:g}_seed{seed}"


def run_config(settings: StudySettings, kind: str, rho: float, seed: int, K: int) -> TrainConfig:
    """The training configuration of one run. Balanced mixup runs (every rho = 1 run but
    ERM's) get the default measurement, whose curves the lam_H fit reads; the others a small
    one. So the rho = 1 control is the rho = 1 sample-pairing run itself."""
    ratio = rho
    if kind == "sample_at_class_mass":
        ratio = label_mass_ratio(K, settings.minority, rho, "class")
    fit = kind != "erm" and ratio == 1.0
    return TrainConfig(
        dataset=settings.dataset,
        data_dir=settings.data_dir,
        imbalance_ratio=ratio,
        minority_classes=settings.minority,
        alpha=0.0 if kind == "erm" else settings.alpha,
        pairing="class" if kind == "mixup_class" else "sample",
        epochs=settings.epochs,
        seed=seed,
        device=settings.device,
        threads=settings.threads,
        **({} if fit else SMALL_MEASUREMENT),
    )


def study_configs(settings: StudySettings) -> tuple[int, dict[tuple[str, float, int], TrainConfig]]:
    """K and every run's configuration, keyed (kind, rho, seed); ValueError for anything
    that can be refused before the first run: unknown kinds, no rho or seed, a seed repeated,
    a minority outside [2, K - 1] (the cosine needs two minority rows and one class must stay
    a majority), a configuration the data refuse, an imbalance that leaves a class too few
    samples."""
    unknown = sorted(set(settings.kinds) - set(KINDS))
    if unknown or not settings.kinds:
        raise ValueError(f"kinds must be among {', '.join(KINDS)}, got {settings.kinds}")
    if not settings.rhos or not settings.seeds:
        raise ValueError("give at least one rho and one seed")
    if len(set(settings.seeds)) != len(settings.seeds) or min(settings.seeds) < 0:
        raise ValueError(f"seeds must be distinct integers >= 0, got {settings.seeds}")
    data = load_dataset(settings.dataset, settings.data_dir)
    K = data.num_classes
    if not 2 <= settings.minority <= K - 1:
        raise ValueError(f"minority must lie in [2, {K - 1}] (the minority cosine needs two "
                         f"minority rows, and one class stays a majority), got {settings.minority}")
    configs = {(kind, float(rho), seed): run_config(settings, kind, float(rho), seed, K)
               for kind in settings.kinds for rho in settings.rhos for seed in settings.seeds}
    for config in configs.values():
        config.check_against_data(K, data.input_shape)
    for ratio in sorted({config.imbalance_ratio for config in configs.values()}):
        imbalanced_dataset(data, ratio, settings.minority, seed=0)
    return K, configs


def train_one(config: TrainConfig, folder: Path, force: bool = False) -> dict[str, Any]:
    """Train one run into ``folder``; its numbers (W's minority cosine from the checkpoint,
    the accuracies, label mass, the lam_H fits and the amplification of its final
    measurement, and the amplification per group of cells: :func:`run_amplification`)."""
    summary = run_training(config, folder, progress=False, force=force)
    saved = torch.load(folder / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    W = saved["model"]["classifier.weight"]
    mixed = read_features(measurement_dir(folder, config.epochs) / "mixed_features.npz")
    return {
        "minority_cosine": minority_cosine(W, config.minority_classes),
        **{key: summary.get(key) for key in (
            "minority_test_accuracy", "majority_test_accuracy", "test_accuracy",
            "label_mass_ratio", "label_mass_ratio_train", "train_class_counts",
            "curve_fitted_lam_H", "curve_fitted_lam_H_status", "fitted_lam_H",
            "classifier_gain", "amplification", "amplification_se", "amplification_se_cells",
            "amplification_error")},
        **run_amplification(mixed, config.minority_classes),
        "measurement": "small" if config.linearity_pairs == SMALL_MEASUREMENT[
            "linearity_pairs"] else "default",
    }


def run_amplification(mixed: MixedFeatures, minority: int, lam_bins: int = 11) -> dict[str, Any]:
    """The amplification of the cells of each group of :data:`ufm.nets.cell_groups.GROUPS`
    in a run's measured features ``mixed`` (its final ``mixed_features.npz``), the last
    ``minority`` of its classes the minority: flat keys ``amplification_<group>`` and
    ``amplification_<group>_se`` (pairs), ``_se_cells`` (cell jackknife), ``_error`` (the
    larger, the within-run error), ``_a_same`` (the normaliser), ``_cells``.

    Every run is measured on mixed training pairs, ERM runs too: theirs is the response of
    a network that never trained on a mixed sample, a control with no UFM prediction."""
    cells = mixed_cell_statistics(mixed, lam_bins)
    numbers: dict[str, Any] = {}
    for group, entry in group_amplification(cells, mixed.num_classes, minority).items():
        numbers[f"amplification_{group}"] = entry["amplification"]
        for key in ("se", "se_cells", "error", "a_same", "cells"):
            numbers[f"amplification_{group}_{key}"] = entry[key]
    return numbers


def measured_amplifications(row: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """(value, within-run error) of each of :data:`AMPLIFICATIONS` in one run's ``row``:
    the amplification of all cells and of each group's, with their quoted errors, and the
    gap ``amplification_gap`` = minority-majority minus majority-majority, whose error is
    the two groups' combined as if independent (they share the majority same-class cells of
    their normalisers, which moves both the same way, so this overstates it). (None, None)
    for a number the row lacks."""
    numbers = {key: (row.get(key), row.get(f"{key}_error")) for key in AMPLIFICATIONS[:-1]}
    (high, high_error), (low, low_error) = (numbers[f"amplification_{group}"] for group in GAP)
    values = [finite(v) for v in (high, low)]
    errors = [finite(v) for v in (high_error, low_error)]
    numbers["amplification_gap"] = (
        None if None in values else values[0] - values[1],
        combined_standard_error(*errors))
    return numbers


def aggregate(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (kind, rho): each number's seed mean, seed standard deviation ``_std`` (ddof 1)
    and standard error ``_se`` (None with one seed) and the seeds counted
    (:func:`ufm.seeds.spread`). Each measured amplification (:func:`measured_amplifications`)
    has its seed mean, ``_std``, the seed standard error ``_seed_se``, the runs' errors
    combined ``_within`` (:func:`ufm.seeds.within_error`) and as ``_se`` the two together
    (:func:`ufm.seeds.total_se`): the error of the mean that covers the seeds and the
    measurement, None with one seed."""
    table = []
    for kind in KINDS:
        for rho in sorted({row["rho"] for row in rows}):
            group = [row for row in rows if row["kind"] == kind and row["rho"] == rho]
            if not group:
                continue
            entry = {"kind": kind, "rho": rho, "seeds": len(group),
                     "imbalance_ratio": group[0]["imbalance_ratio"]}
            for key in NUMBERS:
                values = spread(row.get(key) for row in group)
                entry[key], entry[f"{key}_std"], entry[f"{key}_se"] = values.mean, values.sd, values.se
            measured = [measured_amplifications(row) for row in group]
            for key in AMPLIFICATIONS:
                values = spread(numbers[key][0] for numbers in measured)
                errors = [numbers[key][1] for numbers in measured]
                entry.update({key: values.mean, f"{key}_std": values.sd,
                              f"{key}_seed_se": values.se, f"{key}_within": within_error(errors),
                              f"{key}_se": total_se(values, errors)})
            table.append(entry)
    return table


def fit_lam_H(rows: list[Mapping[str, Any]], kind: str = FIT_KIND,
              rho: float = FIT_RHO) -> dict[str, Any]:
    """The effective lam_H of a data set from its balanced mixup runs (``kind`` at ``rho``).

    The coefficient-curve fit when every seed's is "fitted"; else, as
    :func:`ufm.nets.triple_choice.theory_lam_H` does, the margins' fit when every seed's lies
    inside the search range (:func:`ufm.nets.triple_choice.curve_fit_status`); else none
    (``status`` "at_bound" when a fit ran to the end of the range, "not_fitted" without
    runs). ``lam_H`` is the geometric mean over seeds (the fit is made in log lam_H over
    twelve decades), with ``log10_sd`` (ddof 1; None for one seed), ``low`` and ``high``;
    ``gain`` the seeds' mean classifier gain and ``gain_sd``; ``seeds`` each seed's numbers."""
    runs = [row for row in rows if row["kind"] == kind and row["rho"] == rho]
    per_seed = [{key: row.get(key) for key in ("seed", "curve_fitted_lam_H",
                                                "curve_fitted_lam_H_status", "fitted_lam_H",
                                                "classifier_gain")} for row in runs]
    for entry in per_seed:
        entry["fitted_lam_H_status"] = curve_fit_status(_number(entry["fitted_lam_H"]))
        entry["curve_fitted_lam_H_status"] = (entry["curve_fitted_lam_H_status"]
                                              or curve_fit_status(_number(entry["curve_fitted_lam_H"])))
    curve = [e["curve_fitted_lam_H_status"] for e in per_seed]
    margin = [e["fitted_lam_H_status"] for e in per_seed]
    source = None
    if per_seed and all(s == "fitted" for s in curve):
        source = "curve_fitted_lam_H"
    elif per_seed and all(s == "fitted" for s in margin):
        source = "fitted_lam_H"
    result: dict[str, Any] = {
        "kind": kind, "rho": rho, "seeds": per_seed, "source": source,
        "curve_statuses": curve, "margin_statuses": margin,
        "status": "fitted" if source else ("at_bound" if "at_bound" in curve + margin
                                           else "not_fitted"),
        "lam_H": None, "log10_sd": None, "low": None, "high": None,
    }
    gains = spread(e["classifier_gain"] for e in per_seed)
    result["gain"], result["gain_sd"] = gains.mean, gains.sd
    if source:
        logs = spread(math.log10(e[source]) for e in per_seed)
        values = [e[source] for e in per_seed]
        result.update(lam_H=10.0 ** logs.mean, log10_sd=logs.sd, low=min(values), high=max(values))
    return result


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def theory_lams(alpha: float, count: int | None = None) -> list[float]:
    """``count`` (default :data:`THEORY_LAMS`) lams of equal probability under Beta(alpha,
    alpha), the mixup of training: the quantiles at (i + 1/2)/count (for alpha = 1 the
    midpoints of ``count`` equal bins)."""
    count = THEORY_LAMS if count is None else count
    levels = (np.arange(count) + 0.5) / count
    return [float(v) for v in beta_distribution.ppf(levels, alpha, alpha)]


def gain_matched_lam_W(K: int, lam_H: float, gain: float, lams) -> float:
    r"""The lam_W at which the balanced learned-classifier UFM (:func:`ufm.imbalance_theory`
    at rho = 1, a simplex ETF :math:`WW^\top = \mu(I - \mathbf 1\mathbf 1^\top/K)`) has
    :math:`\mu` = ``gain`` at feature ridge ``lam_H`` and the lam grid ``lams``: the UFM
    whose balanced optimum is the one a fit at the network's own gain matched.

    :math:`\mu` falls as lam_W grows, nearly as :math:`\lambda_W^{-1/2}` (the optimum has
    :math:`\mu^2 = \lambda_H E/(\lambda_W d)`, E changing slowly), so the secant method on
    :math:`\log\mu - \log g` against :math:`\log\lambda_W`, started from that slope, meets
    it to 1e-12 relative in a few solves; Brent's method on the bracket it found takes over
    where it does not. ValueError unless lam_H and gain are finite and positive."""
    if not (math.isfinite(lam_H) and lam_H > 0 and math.isfinite(gain) and gain > 0):
        raise ValueError(f"lam_H and gain must be finite and positive, got {lam_H}, {gain}")

    def excess(log_lam_W: float) -> float:
        mu = imbalance_theory(K, 1, 1.0, lam_H, math.exp(log_lam_W), lams).eigenvalues["between"]
        return math.log(max(mu, 1e-300) / gain)

    x0 = math.log(lam_H)
    f0 = excess(x0)
    x1 = x0 + _clipped(2.0 * f0)  # the slope -1/2
    f1 = excess(x1)
    positive, negative = _bracket(*_bracket(None, None, (x0, f0)), (x1, f1))
    for _ in range(_SECANT_STEPS):
        if abs(f1) < 1e-12:
            return math.exp(x1)
        step = f1 * (x1 - x0) / (f1 - f0) if f1 != f0 else 2.0 * f1
        x0, f0, x1 = x1, f1, x1 - _clipped(step)
        f1 = excess(x1)
        positive, negative = _bracket(positive, negative, (x1, f1))
    while positive is None or negative is None:  # no sign change found: widen
        centre = (positive or negative)[0]
        for x in (centre - 5.0, centre + 5.0):
            positive, negative = _bracket(positive, negative, (x, excess(x)))
    return math.exp(brentq(excess, positive[0], negative[0], xtol=1e-14, rtol=1e-13))


_SECANT_STEPS = 12
_LARGEST_STEP = 8.0
"""The secant's largest step in log lam_W (a factor of about 3000): a collapsed optimum
(mu = 0) gives no slope, and a step beyond it leaves the range the theory solves well."""


def _clipped(step: float) -> float:
    return max(min(step, _LARGEST_STEP), -_LARGEST_STEP)


def _bracket(positive, negative, point):
    """The closest known points with excess > 0 (lam_W too small) and <= 0, updated."""
    x, f = point
    if f > 0 and (positive is None or x > positive[0]):
        positive = (x, f)
    if f <= 0 and (negative is None or x < negative[0]):
        negative = (x, f)
    return positive, negative


def theory_rows(K: int, minority: int, lam_H: float, lam_W: float, lams,
                rhos, label: str) -> list[dict[str, Any]]:
    """The exact minority cosine of every network kind at each rho of ``rhos``: plain
    training, sample and class pairing at rho, sample pairing at class pairing's label mass
    ratio (``label`` names the lam_W choice in each row); for the mixup kinds also the
    amplification of each group's cells and their gap, as the networks' are measured
    (:func:`ufm.theory.minority.cell_amplification`; plain training trains no mixed sample,
    so the UFM has none to predict: None)."""
    rows = []
    for kind in KINDS:
        arguments = kind_arguments(THEORY_KIND[kind], lams)
        for rho in rhos:
            ratio = (label_mass_ratio(K, minority, rho, "class")
                     if kind == "sample_at_class_mass" else float(rho))
            theory = imbalance_theory(K, minority, ratio, lam_H, lam_W, **arguments)
            rows.append({"lam_W_choice": label, "kind": kind, "rho": float(rho),
                         "imbalance_ratio": ratio, "lam_H": lam_H, "lam_W": lam_W,
                         "minority_cosine": theory.minority_cosine,
                         **_theory_amplification(theory, kind != "erm")})
    return rows


def _theory_amplification(theory, mixup: bool) -> dict[str, float | None]:
    """The theory's amplification of each group's cells and the gap (:data:`GAP`), keyed as
    the measured ones (:data:`AMPLIFICATIONS`, but for all cells); None without mixup."""
    groups = cell_amplification(theory).amplification if mixup else dict.fromkeys(GROUPS)
    high, low = (groups[group] for group in GAP)
    return {**{f"amplification_{group}": groups[group] for group in GROUPS},
            "amplification_gap": None if high is None or low is None else high - low}


def compare(table: list[Mapping[str, Any]], prediction: Mapping[str, Any],
            theory: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """One prediction (an entry of :data:`PREDICTIONS`) against the seed means of ``table``
    (:func:`aggregate`), per rho > 1 and overall (module docstring); ``theory`` rows
    (:func:`theory_rows`), when given, add the theory's difference at each rho."""
    by = {(e["kind"], e["rho"]): e for e in table}
    sign = prediction["sign"]
    exact = {(row["kind"], row["rho"]): row["minority_cosine"] for row in theory or []}
    points = []
    for rho in sorted({e["rho"] for e in table if e["rho"] > 1.0}):
        a, b = by.get((prediction["kind"], rho)), by.get((prediction["against"], rho))
        if a is None or b is None or a["minority_cosine"] is None or b["minority_cosine"] is None:
            continue
        difference = a["minority_cosine"] - b["minority_cosine"]
        error = combined_standard_error(a["minority_cosine_se"], b["minority_cosine_se"])
        outcome = side(sign * difference, error)
        outcome = {"above": "as_predicted", "below": "against"}.get(outcome, outcome)
        theory_a, theory_b = exact.get((prediction["kind"], rho)), exact.get((prediction["against"], rho))
        points.append({
            "rho": rho, "difference": difference, "combined_se": error,
            "in_se": difference / error if error else None, "outcome": outcome,
            "theory_difference": (theory_a - theory_b if theory_a is not None
                                  and theory_b is not None else None),
        })
    return {**{k: prediction[k] for k in ("name", "question", "kind", "against", "sign")},
            "points": points, "verdict": _verdict(points)}


def side(value: float, error: float | None) -> str:
    """Where ``value`` lies against 0 by the rule of :func:`ufm.seeds.resolved`: "above" or
    "below" beyond :data:`ufm.seeds.RESOLUTION` times ``error``, else "not_resolved";
    "no_spread" without an error (one seed)."""
    if error is None:
        return "no_spread"
    if value > RESOLUTION * error:
        return "above"
    if value < -RESOLUTION * error:
        return "below"
    return "not_resolved"


def amplification_gaps(table: list[Mapping[str, Any]],
                       theory: list[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per kind in ``table`` (:func:`aggregate`): at each rho the gap between the
    amplification of the minority-majority and of the majority-majority cells (seed mean of
    each run's gap, :func:`measured_amplifications`, with its error ``_se``) and which
    :func:`side` of 0 it lies on; and its change from the smallest rho (the gap of the
    balanced runs, where the groups differ only in which classes they hold), with the two
    errors combined and its side. ``theory`` rows (:func:`theory_rows`), when given, add
    the theory's gap and its change."""
    exact = {(row["kind"], row["rho"]): row.get("amplification_gap") for row in theory or []}
    found = []
    for kind in KINDS:
        entries = sorted((e for e in table if e["kind"] == kind
                          and e.get("amplification_gap") is not None), key=lambda e: e["rho"])
        if not entries:
            continue
        base = entries[0]
        points = []
        for entry in entries:
            gap, error = entry["amplification_gap"], entry["amplification_gap_se"]
            change = gap - base["amplification_gap"]
            change_error = combined_standard_error(error, base["amplification_gap_se"])
            theory_gap, theory_base = exact.get((kind, entry["rho"])), exact.get((kind, base["rho"]))
            points.append({
                "rho": entry["rho"], "gap": gap, "se": error, "side": side(gap, error),
                "change": change, "change_se": change_error,
                "change_side": side(change, change_error) if entry is not base else None,
                "theory_gap": theory_gap,
                "theory_change": (theory_gap - theory_base if theory_gap is not None
                                  and theory_base is not None else None),
            })
        found.append({"kind": kind, "from_rho": base["rho"], "points": points})
    return found


def _verdict(points: list[Mapping[str, Any]]) -> str:
    outcomes = {p["outcome"] for p in points}
    if not outcomes or outcomes == {"no_spread"}:
        return "no_spread"
    if {"as_predicted", "against"} <= outcomes:
        return "mixed"
    if "as_predicted" in outcomes:
        return "holds"
    if "against" in outcomes:
        return "contradicted"
    return "not_resolved"


def analyse(result: Mapping[str, Any]) -> dict[str, Any]:
    """The theory beside a study's runs and the verdicts: ``lam_H_fit`` (:func:`fit_lam_H`),
    ``theory_lams``, ``lam_W`` (the gain-matched value and the training's weight decay, with
    why; None without a fitted lam_H), ``theory`` (:func:`theory_rows` on a log grid of rho up
    to the largest, and at the weight decay on the study's rhos), ``predictions``
    (:func:`compare`, for each prediction whose two kinds were trained) and
    ``amplification_gaps`` (:func:`amplification_gaps`, with the gain-matched theory)."""
    K, minority, rhos = result["K"], result["minority_classes"], result["rhos"]
    fit = fit_lam_H(result["runs"])
    lams = theory_lams(result["alpha"])
    weight_decay = float(result["config"]["weight_decay"])
    theory: list[dict[str, Any]] = []
    lam_W = None
    if fit["lam_H"] is not None:
        value = gain_matched_lam_W(K, fit["lam_H"], fit["gain"], lams)
        lam_W = {"value": value, "choice": "gain_matched", "weight_decay": weight_decay,
                 "why": "the lam_W at which the balanced UFM optimum at the fitted lam_H has "
                        "the rho = 1 networks' mean classifier gain, so that at rho = 1 the "
                        "theory is the optimum the fit matched; the cosine depends on lam_H "
                        "and lam_W only through their product"}
        ratios = sorted({*np.geomspace(1.0, max(rhos), THEORY_RATIOS).tolist(), *rhos})
        theory = theory_rows(K, minority, fit["lam_H"], value, lams, ratios, "gain_matched")
        if weight_decay > 0:
            theory += theory_rows(K, minority, fit["lam_H"], weight_decay, lams, rhos,
                                  "weight_decay")
    matched = [row for row in theory if row["lam_W_choice"] == "gain_matched"]
    predictions = [compare(result["table"], p, matched) for p in PREDICTIONS
                   if {p["kind"], p["against"]} <= set(result["kinds"])]
    return {"lam_H_fit": fit, "theory_lams": lams, "lam_W": lam_W, "theory": theory,
            "predictions": predictions,
            "amplification_gaps": amplification_gaps(result["table"], matched)}


def _settings_json(settings: StudySettings) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def check_output(out: str | Path, force: bool, resume: bool) -> Path:
    """``out`` as a path; ValueError for a folder, or an existing file without ``force`` or
    ``resume`` (both: ValueError)."""
    out = Path(out)
    if force and resume:
        raise ValueError("force starts the study again; it cannot be combined with resume")
    if out.is_dir():
        raise ValueError(f"{str(out)!r} is a folder, not a file")
    if out.exists() and not (force or resume):
        raise ValueError(f"{str(out)!r} exists; force overwrites it, resume continues it")
    return out


def _earlier_runs(out: Path, settings: StudySettings, resume: bool) -> dict[str, dict[str, Any]]:
    """The finished runs of the study file ``out`` to continue (``resume``), by name;
    ValueError when it holds another study's settings."""
    if not (resume and out.is_file()):
        return {}
    earlier = read_json(out)
    if earlier.get("settings") != _settings_json(settings):
        raise ValueError(f"{str(out)!r} holds a study with other settings "
                         f"({earlier.get('settings')}); it cannot be continued with these")
    return {row["name"]: row for row in earlier.get("runs", [])}


def run_study(settings: StudySettings, out: str | Path, runs_dir: str | Path | None = None,
              force: bool = False, resume: bool = False, log: Callable[[str], None] = print,
              train: Callable[[TrainConfig, Path, bool], dict[str, Any]] | None = None,
              ) -> dict[str, Any]:
    """Train the study of ``settings`` and write it to the JSON file ``out``; return it.

    The file is written atomically after every run with ``complete`` false (a stopped study
    keeps what it trained; ``resume`` continues it, skipping its finished runs) and, once
    every run is done, with the analysis (:func:`analyse`) and ``complete`` true. Each run
    trains in a temporary folder deleted once its numbers are read, unless ``runs_dir``
    keeps them; a run whose configuration equals one already trained (the rho = 1 control is
    the rho = 1 sample-pairing run) is not trained again but copied (``same_run_as``).
    Everything that can be refused is refused before the first run (ValueError):
    :func:`check_output`, :func:`study_configs`, a ``runs_dir`` that already holds a run of
    the study (without ``force``). ``train`` trains one run (default :func:`train_one`;
    tests pass a stand-in)."""
    train = train or train_one
    out = check_output(out, force, resume)
    K, configs = study_configs(settings)
    earlier = _earlier_runs(out, settings, resume)
    if runs_dir is not None and not force:
        taken = [run_name(*key) for key in configs
                 if run_name(*key) not in earlier and (Path(runs_dir) / run_name(*key)).exists()]
        if taken:
            raise ValueError(f"{str(runs_dir)!r} already holds {', '.join(taken[:3])}"
                             f"{' ...' if len(taken) > 3 else ''}; force trains them again")
    base = config_to_dict(next(iter(configs.values())))
    result: dict[str, Any] = {
        "study": "minority collapse of networks: ERM, mixup with sample and class pairing, and "
                 "sample pairing at the label mass ratio of class pairing",
        "dataset": settings.dataset, "K": K, "minority_classes": settings.minority,
        "rhos": [float(r) for r in settings.rhos], "kinds": list(settings.kinds),
        "seeds": list(settings.seeds), "epochs": settings.epochs, "alpha": settings.alpha,
        "labels": LABELS, "settings": _settings_json(settings),
        "config": {k: v for k, v in base.items()
                   if k not in ("imbalance_ratio", "alpha", "pairing", "seed")},
        "fit_measurement": "the ufm train default (every rho = 1 mixup run); the other runs "
                           f"measure small: {SMALL_MEASUREMENT}",
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "note": "no timings"},
        "complete": False, "runs": [],
    }
    trained: dict[str, str] = {}  # a configuration's JSON -> the run that trained it
    for (kind, rho, seed), config in configs.items():
        name = run_name(kind, rho, seed)
        key = json.dumps(config_to_dict(config), sort_keys=True)
        row = {"name": name, "kind": kind, "rho": rho, "seed": seed,
               "imbalance_ratio": config.imbalance_ratio, "alpha": config.alpha,
               "pairing": config.pairing}
        if name in earlier:
            numbers, words = {k: v for k, v in earlier[name].items() if k not in row}, "kept"
        elif key in trained:
            twin = next(r for r in result["runs"] if r["name"] == trained[key])
            numbers = {k: v for k, v in twin.items() if k not in row and k != "same_run_as"}
            numbers["same_run_as"], words = twin["name"], f"the run {twin['name']}"
        else:
            numbers, words = _train(train, config, name, runs_dir, force), "trained"
        trained.setdefault(key, name)
        result["runs"].append({**row, **numbers})
        result["table"] = aggregate(result["runs"])
        write_json(out, result)
        log(f"{name} ({words}): minority cosine {numbers['minority_cosine']:.3f}, minority "
            f"accuracy {numbers['minority_test_accuracy']:.3f}")
    result.update(analyse(result))
    result["complete"] = True
    write_json(out, result)
    return result


def _train(train, config: TrainConfig, name: str, runs_dir, force: bool) -> dict[str, Any]:
    if runs_dir is not None:
        return train(config, Path(runs_dir) / name, force)
    with tempfile.TemporaryDirectory(prefix="minority_networks_") as scratch:
        return train(config, Path(scratch) / name, False)


VERDICT_WORDS = {"holds": "holds", "contradicted": "is contradicted", "mixed": "is mixed",
                 "not_resolved": "is not resolved", "no_spread": "cannot be judged (one seed)"}


def _g(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}g}"


def fit_text(result: Mapping[str, Any]) -> str:
    """One sentence on a finished study's lam_H fit and the lam_W of its theory."""
    fit, lam_W = result["lam_H_fit"], result["lam_W"]
    seeds = len(fit["seeds"])
    curve = ", ".join(fit["curve_statuses"]) or "none"
    if fit["lam_H"] is None:
        return (f"lam_H: no fit on the rho = 1 {LABELS[fit['kind']]} runs ({seeds} seeds; "
                f"status {fit['status']}; curve fits {curve}, margin fits "
                f"{', '.join(fit['margin_statuses']) or 'none'}), so no theory curve is drawn.")
    words = ("fitted on the coefficient curves" if fit["source"] == "curve_fitted_lam_H" else
             f"fitted on the margins (the coefficient-curve fits are {curve}: not fitted)")
    spread_words = (f", log10 sd {_g(fit['log10_sd'], 2)}, range {_g(fit['low'])} to "
                    f"{_g(fit['high'])}" if fit["log10_sd"] is not None else ", one seed")
    return (f"lam_H = {_g(fit['lam_H'])} {words} of the rho = 1 {LABELS[fit['kind']]} runs "
            f"(geometric mean over {seeds} seeds{spread_words}); classifier gain "
            f"{_g(fit['gain'])}"
            + (f" +- {_g(fit['gain_sd'], 2)} (seed sd)" if fit["gain_sd"] is not None else "")
            + f"; lam_W = {_g(lam_W['value'])}, {lam_W['why']} (the training's "
            f"weight decay, {_g(lam_W['weight_decay'])}, is kept as a sensitivity check).")


def verdict_texts(result: Mapping[str, Any]) -> list[str]:
    """Per prediction of a finished study: its question, verdict and the resolved rhos."""
    texts = []
    for prediction in result["predictions"]:
        points = prediction["points"]

        def listed(outcome: str, points=points) -> str:
            found = [f"{p['rho']:g}" for p in points if p["outcome"] == outcome]
            return ", ".join(found) or "none"

        top = points[-1] if points else None
        at_top = "" if top is None else (
            f" At rho = {top['rho']:g} the difference is {top['difference']:+.3f}"
            + (f" ({top['in_se']:+.1f} combined standard errors)" if top["in_se"] is not None
               else "")
            + (f"; the theory's is {top['theory_difference']:+.3f}"
               if top["theory_difference"] is not None else "") + ".")
        texts.append(
            f"{prediction['question']} The prediction **{VERDICT_WORDS[prediction['verdict']]}**"
            f" ({LABELS[prediction['kind']]} minus {LABELS[prediction['against']]}; resolved "
            f"as predicted at rho = {listed('as_predicted')}, against it at rho = "
            f"{listed('against')}).{at_top}")
    return texts


def _cell(entry: Mapping[str, Any] | None, key: str) -> str:
    if entry is None or entry[key] is None:
        return ""
    sd = entry[f"{key}_std"]
    return f"{entry[key]:.3f}" + (f" +- {sd:.3f}" if sd is not None else "")


def markdown_tables(result: Mapping[str, Any]) -> list[str]:
    """A finished study as Markdown: per kind the minority cosine (seed mean +- seed sd) at
    each rho with the exact theory's beside it (gain-matched lam_W, and at the weight decay),
    then the minority test accuracy."""
    rhos = sorted({e["rho"] for e in result["table"]})
    by = {(e["kind"], e["rho"]): e for e in result["table"]}
    exact = {(r["lam_W_choice"], r["kind"], r["rho"]): r["minority_cosine"]
             for r in result.get("theory", [])}
    head = "| | " + " | ".join(f"rho {rho:g}" for rho in rhos) + " |"
    rule = "|---" * (len(rhos) + 1) + "|"
    lines = [(f"Minority cosine, mean +- seed sd over {len(result['seeds'])} seeds; *theory*: "
             "the exact optimum at the fitted lam_H and the gain-matched lam_W (*at weight "
             "decay*: lam_W = the training's weight decay)."), "", head, rule]
    for kind in result["kinds"]:
        lines.append(f"| {LABELS[kind]} | "
                     + " | ".join(_cell(by.get((kind, rho)), "minority_cosine") for rho in rhos)
                     + " |")
        for choice, words in (("gain_matched", "theory"), ("weight_decay", "theory at weight decay")):
            values = [exact.get((choice, kind, rho)) for rho in rhos]
            if any(v is not None for v in values):
                lines.append(f"| {words} | " + " | ".join(
                    "" if v is None else f"{v:.3f}" for v in values) + " |")
    lines += ["", "Minority test accuracy (balanced test set), mean +- seed sd:", "", head, rule]
    lines += [f"| {LABELS[kind]} | " + " | ".join(
        _cell(by.get((kind, rho)), "minority_test_accuracy") for rho in rhos) + " |"
        for kind in result["kinds"]]
    return lines


def _plus(value: float) -> str:
    """``value`` signed to three decimals, 0 (and a rounding's -0) as +0.000."""
    return f"{round(value, 3) + 0.0:+.3f}"


def _signed(value: Any, error: Any, resolved: bool) -> str:
    text = _plus(value) + (f" +- {error:.3f}" if error is not None else "")
    return f"**{text}**" if resolved else text


def amplification_tables(result: Mapping[str, Any]) -> list[str]:
    """A finished study's amplification as Markdown: per kind and group of cells the seed
    mean +- its standard error with the runs' errors combined (``_se`` of :func:`aggregate`)
    at each rho, the exact theory's beside it (gain-matched lam_W; none for plain training),
    and the gap minority-majority minus majority-majority, bold where it lies beyond
    :data:`ufm.seeds.RESOLUTION` errors from 0 (:func:`amplification_gaps`)."""
    rhos = sorted({e["rho"] for e in result["table"]})
    by = {(e["kind"], e["rho"]): e for e in result["table"]}
    exact = {(r["kind"], r["rho"]): r for r in result.get("theory", [])
             if r["lam_W_choice"] == "gain_matched"}
    gaps = {(g["kind"], p["rho"]): p for g in result.get("amplification_gaps", [])
            for p in g["points"]}
    head = "| | " + " | ".join(f"rho {rho:g}" for rho in rhos) + " |"
    lines = [(f"Amplification (a + b)(1/2) / a_same of the cells of each group, mean over "
              f"{len(result['seeds'])} seeds +- its standard error (seed spread and the runs' "
              "own errors, over pairs and class pairs, combined); *theory*: the exact optimum's "
              "(fitted lam_H, gain-matched lam_W); *gap*: minority-majority minus "
              f"majority-majority, paired within each run, **bold** beyond {RESOLUTION:g} "
              "standard errors from 0. ERM trains no mixed sample: its networks' numbers are "
              "the response of unmixed networks to mixed inputs, with no theory."),
             "", head, "|---" * (len(rhos) + 1) + "|"]
    for kind in result["kinds"]:
        for group in GROUPS:
            key = f"amplification_{group}"
            cells = []
            for rho in rhos:
                entry = by.get((kind, rho))
                value = None if entry is None else entry.get(key)
                cells.append("" if value is None else f"{value:.3f}" + (
                    f" +- {entry[f'{key}_se']:.3f}" if entry[f"{key}_se"] is not None else ""))
            lines.append(f"| {LABELS[kind]}: {GROUP_LABELS[group]} | " + " | ".join(cells) + " |")
            values = [exact.get((kind, rho), {}).get(key) for rho in rhos]
            if any(v is not None for v in values):
                lines.append("| theory | " + " | ".join(
                    "" if v is None else f"{v:.3f}" for v in values) + " |")
        cells = []
        for rho in rhos:
            point = gaps.get((kind, rho))
            cells.append("" if point is None else _signed(point["gap"], point["se"],
                                                          point["side"] in ("above", "below")))
        lines.append(f"| {LABELS[kind]}: gap | " + " | ".join(cells) + " |")
        values = [exact.get((kind, rho), {}).get("amplification_gap") for rho in rhos]
        if any(v is not None for v in values):
            lines.append("| theory gap | " + " | ".join(
                "" if v is None else _plus(v) for v in values) + " |")
    return lines


def amplification_texts(result: Mapping[str, Any]) -> list[str]:
    """Per kind of a finished study: where the gap between the minority-majority and the
    majority-majority amplification is resolved from 0, where its change from the balanced
    runs is, and the numbers at the largest rho beside the theory's."""
    texts = []
    for found in result.get("amplification_gaps", []):
        points = found["points"]

        def listed(key: str, outcome: str, points=points) -> str:
            return ", ".join(f"{p['rho']:g}" for p in points if p[key] == outcome) or "none"

        top = points[-1]
        theory = ("" if top["theory_gap"] is None else
                  f" (theory {_plus(top['theory_gap'])}, change {_plus(top['theory_change'])})")
        in_se = (f" ({top['gap'] / top['se']:+.1f} standard errors)" if top["se"] else "")
        change = _signed(top["change"], top["change_se"], False)
        texts.append(
            f"{LABELS[found['kind']]}: the minority-majority cells' amplification minus the "
            f"majority-majority cells' is resolved above 0 at rho = {listed('side', 'above')}, "
            f"below 0 at rho = {listed('side', 'below')}; its change from rho = "
            f"{found['from_rho']:g} is resolved upward at rho = "
            f"{listed('change_side', 'above')}, downward at rho = "
            f"{listed('change_side', 'below')}. At rho = {top['rho']:g} the gap is "
            f"{_signed(top['gap'], top['se'], False)}{in_se}, its change {change}{theory}.")
    return texts
