"""The key numbers under each figure of ``report.md``, read from the stage summaries.

One function per figure of :data:`ufm.plots.FIGURES`, each returning a short Markdown
paragraph of numbers already computed by the stages (nothing is recomputed here). The
quantities are those of Fisher, Meng & Papyan, ICLR 2024 (arXiv:2402.06171) and of the
measurement modules they come from (:mod:`ufm.theory`, :mod:`ufm.solver`,
:mod:`ufm.nets.measure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import read_csv, read_json
from ..plots.coefficients import quoted
from . import layout


def _g(value: Any, digits: int = 3) -> str:
    """Short number: n/a for missing, scientific below 1e-3."""
    if value is None:
        return "n/a"
    value = float(value)
    return f"{value:.{digits - 1}e}" if value != 0 and abs(value) < 1e-3 else f"{value:.{digits}g}"


@dataclass
class Summaries:
    """The stage summaries of a reproduction folder."""

    root: Path
    config: dict[str, Any]
    theory: dict[str, Any]
    solver: dict[str, Any]
    networks: dict[str, Any]

    def net(self, name: str, key: str) -> Any:
        return self.networks["runs"][name].get(key)

    def learned(self) -> list[dict[str, Any]]:
        return [r for r in self.solver["runs"] if r["kind"] == "learned"]

    def main_theory(self, loss: str = "ce") -> dict[str, Any]:
        return self.theory["per_loss"][loss][f"{self.config['lam_H']:g}"]

    def solver_relative_norm(self, run: str, lam: float) -> float | None:
        rows = read_csv(layout.stage_dir(self.root, layout.SOLVER) / "curves.csv")
        values = [r["relative_norm"] for r in rows if r["run"] == run and float(r["lam"]) == lam]
        return float(values[0]) if values else None


def _words(s: Summaries, key: str) -> str:
    """A text entry (a status or a verdict) of every network run, with the run's name."""
    names = [name for name, _, _ in layout.NETWORK_RUNS]
    return ", ".join(f"{s.net(name, key) or 'n/a'} ({name.replace('_', ' ')})" for name in names)


def _pairs(s: Summaries, key: str, names=None) -> str:
    names = names or [name for name, _, _ in layout.NETWORK_RUNS]
    return ", ".join(f"{_g(s.net(name, key))} ({name.replace('_', ' ')})" for name in names)


def configuration(s: Summaries) -> str:
    ce = s.main_theory()
    learned = next(r for r in s.learned() if r["loss"] == "ce")
    return (
        f"Theory (lam_H = {_g(s.config['lam_H'])}): a lam = 1/2 mixture lies on the boundary "
        f"(margin {_g(ce['margin_half'])}) and is {_g(ce['relative_norm_half'])} times as long "
        f"as a same-class feature. Solver with a learned W: ETF distance of W "
        f"{_g(learned['etf_distance_W'])}. Networks, distance of lam = 1/2 mixtures from the "
        f"boundary relative to clean samples (theory 0): "
        f"{_pairs(s, 'boundary_distance_half_relative')}; cosine of same-class mixtures with "
        f"w_c (theory 1), of the cell means in the row space of W: "
        f"{_pairs(s, 'same_class_cell_cosine')}, of single pairs in the full feature space: "
        f"{_pairs(s, 'same_class_cosine')} (fraction of their length outside the row space: "
        f"{_pairs(s, 'same_class_out_of_span_fraction')})."
    )


def margin_and_norm(s: Summaries) -> str:
    curve_lam_H = ", ".join(
        f"{_g(s.net(n, 'curve_fitted_lam_H'))} {s.net(n, 'curve_fitted_lam_H_status') or ''} "
        f"({n.replace('_', ' ')})"
        for n, _, _ in layout.NETWORK_RUNS
    )
    return (
        f"Solver vs exact theory: relative distance at most {_g(s.solver['max_theory_distance'])}. "
        f"Fitted effective lam_H on the centred margins: {_pairs(s, 'fitted_lam_H')}; rms "
        f"misfit of the margins (logits): {_pairs(s, 'margin_fit_rms')}. On the coefficient "
        f"curves (the norms of panel b use it): {curve_lam_H} (at_bound: the fit ran to the "
        "end of its search range and fitted nothing)."
    )


def channels(s: Summaries) -> str:
    parts = []
    for lam_H, entry in s.theory["channels"].items():
        parts.append(
            f"lam_H = {lam_H}: position {_g(entry['position_half'])}, distance "
            f"{_g(entry['distance_quarter'])}"
        )
    limit = next(iter(s.theory["channels"].values()))
    return (
        f"Position along w_c + w_c' at lam = 1/2 and distance from the boundary at lam = "
        f"{_g(limit['lam_quarter'])} (limit {_g(limit['distance_quarter_limit'])}): "
        + "; ".join(parts)
        + "."
    )


def loss_comparison(s: Summaries) -> str:
    ratios = {loss: s.main_theory(loss)["relative_norm_half"] for loss in layout.THEORY_LOSSES}
    ratios["focal"] = s.solver_relative_norm("fixed_focal", 0.5)
    text = ", ".join(f"{loss.replace('_', ' ')} {_g(value)}" for loss, value in ratios.items())
    return (
        f"Length of the lam = 1/2 mixture relative to a same-class feature: {text} (squared "
        "error: exactly the midpoint of the two class features, shorter than either)."
    )


def calibration(s: Summaries) -> str:
    ce = s.theory["per_loss"]["ce"]
    quarter = next(iter(ce.values()))["lam_quarter"]
    theory = ", ".join(
        f"{_g(entry['p_c_quarter'])} (lam_H = {lam_H})" for lam_H, entry in ce.items()
    )
    return (
        f"Theoretical p_c at lam = {_g(quarter)}: {theory}. Clean test ECE: {_pairs(s, 'ece')}; "
        f"confidence of lam = 1/2 mixtures (theory about 1/2): {_pairs(s, 'confidence_half')}."
    )


def collapse_over_training(s: Summaries) -> str:
    return (
        f"After the last epoch, NC1: {_pairs(s, 'nc1')}; NC2 of the class means: "
        f"{_pairs(s, 'nc2_M')}; NC3: {_pairs(s, 'nc3')}; test accuracy: {_pairs(s, 'test_accuracy')}."
    )


def learned_classifier(s: Summaries) -> str:
    parts = [
        f"{r['loss'].replace('_', ' ')}: {r['stop_reason']} after {r['iterations']} iterations, "
        f"ETF distance of W {_g(r['etf_distance_W'])}, gradient norm {_g(r['grad_norm'])}, "
        f"features vs the exact theory for the learned W {_g(r['theory_distance_learned_W'])}"
        for r in s.learned()
    ]
    return "; ".join(parts) + "."


def layer_linearity(s: Summaries) -> str:
    parts = [
        f"{name.replace('_', ' ')} " + ", ".join(_g(v) for v in s.net(name, "linearity"))
        for name, _, _ in layout.NETWORK_RUNS
    ]
    return "Non-linearity per block, input to features: " + "; ".join(parts) + "."


def mixtures(s: Summaries) -> str:
    amplification = s.theory["mixtures"]
    parts = ", ".join(f"{_g(v)} at lam_H = {k}" for k, v in amplification.items())
    solver = next((r for r in s.solver["runs"] if r.get("mixup_points", 2) == 3), None)
    net = s.networks.get("mixture_run") or {}
    text = (
        "Equal-weight mixture of three classes, amplification sum_k a_k / a_same (exact "
        f"theory, cross-entropy): {parts}; squared error: exactly 1."
    )
    if solver is not None:
        text += (
            f" UFM solver, 3-class mixtures over the simplex grid (fixed ETF): distance to the "
            f"exact optimum {_g(solver['theory_distance'])}."
        )
    if net:
        text += (
            f" Network trained with 3-point mixup (fixed ETF, cell means over sampled input "
            f"triples): amplification {_g(net.get('mixture3_amplification'))} against "
            f"{_g(net.get('mixture3_amplification_theory'))} for the exact theory at its fitted "
            f"lam_H = {_g(net.get('mixture3_fitted_lam_H'))}; test accuracy "
            f"{_g(net.get('test_accuracy'))}."
        )
    return text


def coefficient_curves(s: Summaries) -> str:
    names = [n for n, _, _ in layout.NETWORK_RUNS]
    amplification = ", ".join(
        f"{_g(s.net(n, 'amplification'))} +- {_g(quoted(s.networks['runs'][n], 'amplification'), 2)}"
        f" +- {_g(s.net(n, 'amplification_systematic'), 2)} ({n.replace('_', ' ')})"
        for n in names
    )
    chi2 = ", ".join(
        f"{_g(s.net(n, 'ce_chi2_per_dof'))} and {_g(s.net(n, 'squared_error_chi2_per_dof'))} "
        f"({n.replace('_', ' ')})"
        for n in names
    )
    return (
        f"Amplification (a + b)(1/2) / a_same of the cell means +- quoted error (the larger of "
        f"the pairs' and the class pairs') +- the normaliser's systematic error: "
        f"{amplification}; cross-entropy theory at each run's lam_H of the curves "
        f"({_words(s, 'curve_fitted_lam_H_status')}): {_pairs(s, 'amplification_theory')}; "
        f"exact optimum for the run's own W: {_pairs(s, 'amplification_exact_W')}; "
        f"squared-error null: 1. Chi-square per degree of freedom, cross-entropy and null: "
        f"{chi2}; verdicts {_words(s, 'ce_verdict')} and {_words(s, 'squared_error_verdict')}; "
        f"better fit: {_words(s, 'better_fit')}. "
        f"Pairs per cell: {_pairs(s, 'pairs_per_cell')}; scatter of single pairs over the "
        f"signal: {_pairs(s, 'scatter_to_signal')}."
    )


def minority_collapse(s: Summaries) -> str:
    given = s.theory["minority_collapse"]["reproduction"]
    parts = []
    for kind in ("sample", "class", "plain"):
        entry = given[kind]
        zero = ("never crosses 0" if entry["threshold"] is None
                else f"crosses 0 at rho = {_g(entry['threshold'], 4)}")
        equal = ("never equal" if entry["exact_collapse"] is None
                 else f"equal from rho = {_g(entry['exact_collapse'], 5)}")
        limit = "undefined (rows vanish)" if entry["limit_cosine"] is None else _g(
            entry["limit_cosine"])
        parts.append(f"{entry['label']}: the cosine {zero}, the rows are {equal}, its "
                     f"limit is {limit}")
    text = (f"K = {given['K']}, {given['minority_classes']} minority classes: "
            + "; ".join(parts) + ".")
    path = layout.minority_networks(s.root)
    study = read_json(path) if path.is_file() else {}
    if study.get("complete"):
        verdicts = "; ".join(f"{p['name'].replace('_', ' ')}: {p['verdict'].replace('_', ' ')}"
                             for p in study["predictions"])
        fit = study["lam_H_fit"]
        text += (f" Networks (panel c; {study['dataset']}, {study['epochs']} epochs, "
                 f"{len(study['seeds'])} seeds): lam_H {fit['status']}"
                 + (f" = {_g(fit['lam_H'])} ({fit['source']}), lam_W = "
                    f"{_g(study['lam_W']['value'])} (gain-matched)" if fit["lam_H"] else "")
                 + f"; verdicts: {verdicts}.")
    return text


NUMBERS = {
    "mixup_configuration": configuration,
    "margin_and_norm": margin_and_norm,
    "channels": channels,
    "loss_comparison": loss_comparison,
    "calibration": calibration,
    "collapse_over_training": collapse_over_training,
    "learned_classifier": learned_classifier,
    "layer_linearity": layer_linearity,
    "mixtures": mixtures,
    "minority_collapse": minority_collapse,
    "coefficient_curves": coefficient_curves,
}
