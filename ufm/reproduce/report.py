"""``report.md``: every figure with its key numbers and the configuration of every run.

Built only from the files of the reproduction folder (:mod:`ufm.reproduce.layout`); links are relative,
so the folder can be moved or published as it is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .. import __version__
from . import layout
from ..io import read_json
from ..nets.ufm_comparison import LAM_H_RANGE
from ..plots import FIGURES
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
    ("same-class cos", "same_class_cosine"),
    ("boundary dist. at 1/2 (rel.)", "boundary_distance_half_relative"),
    ("confidence at 1/2", "confidence_half"), ("logit offset", "logit_offset"),
)  # fmt: skip
CELL_COLUMNS = (
    ("pairs per cell", "pairs_per_cell"), ("amplification", "amplification"),
    ("s.e.", "amplification_se"), ("CE theory", "amplification_theory"),
    ("exact for own W", "amplification_exact_W"), ("fitted lam_H (curves)", "curve_fitted_lam_H"),
    ("CE misfit", "ce_curve_rms"), ("null misfit", "squared_error_curve_rms"),
    ("better fit", "better_fit"), ("scatter / signal", "scatter_to_signal"),
    ("off-span residual at 1/2", "off_span_residual_half"),
    ("same-class lam dependence", "same_class_lam_dependence"),
    ("same-class scatter", "same_class_scatter"),
    ("own W vs ETF (features)", "exact_W_feature_distance"),
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
    return lines + _table("lam_H", theory["per_loss"]["ce"], THEORY_COLUMNS)


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
            "*amplification* (a + b)(1/2) / a_same with its standard error beside the "
            "cross-entropy optimum for a simplex ETF of the network's gain at the lam_H fitted "
            "on these curves (*CE theory*) and the exact optimum for the network's own W and "
            "logit offset W mu_G + b at the same lam_H (UFM solver, *exact for own W*; *own W vs ETF* is the relative distance "
            "of the two optima's features); the squared-error null is exactly 1. *Misfit*: rms "
            "difference of the normalised curves from each prediction; *better fit*: the null "
            "unless the fitted cross-entropy curves lower the chi-square by more than 9 (one "
            "parameter), *noise* when the cell means do not stand out of their noise; *scatter "
            "/ signal*: rms scatter of single pairs around their cell mean over the noise-free "
            "rms size of the cell means. The old *UFM distance* is retired: it split as "
            "D^2 = o^2 + (1 - o^2) D_span^2 and measured mostly that scatter."
        ),
        "",
    ]
    lines += _table("run", runs, CELL_COLUMNS)
    lines += ["Layer-wise non-linearity along input segments (block 1 nearest the input):", ""]
    return lines + _table("run", runs, (("non-linearity per block", "linearity"),))


def _verdict(yes: bool, no: bool) -> str:
    return "**agrees**" if yes else ("**does not agree**" if no else "**undecided**")


def _amplification_claim(s: Summaries, name: str, mixup: bool) -> str:
    r = s.networks["runs"][name]
    amp, se, fit = r.get("amplification"), r.get("amplification_se"), r.get("better_fit")
    if amp is None or se is None:
        return f"`{name}`: not measured"
    above, below = amp - 1 > 3 * se, amp - 1 < -3 * se
    verdict = _verdict(above and fit == "cross_entropy", below or fit == "squared_error")
    if not mixup:
        side = "above" if above else ("below" if below else "within 3 s.e. of")
        verdict = f"control (never trained on mixtures): {side} 1"
    lam_H = r.get("curve_fitted_lam_H")
    if isinstance(lam_H, float) and lam_H >= 0.99 * LAM_H_RANGE[1]:
        verdict += (
            "; the cross-entropy fit ran to the largest lam_H allowed, where its curves become "
            "the null's"
        )
    return (
        f"`{name}`: amplification {_fmt(amp)} +- {_fmt(se)} (cross-entropy theory at its "
        f"fitted lam_H {_fmt(r.get('amplification_theory'))}, exact optimum for the run's own "
        f"W {_fmt(r.get('amplification_exact_W'))}); better fit: {fit} (misfit CE "
        f"{_fmt(r.get('ce_curve_rms'))}, null {_fmt(r.get('squared_error_curve_rms'))}): "
        f"{verdict}"
    )


def claims_section(s: Summaries) -> list[str]:
    """The claims of Fisher et al. (docs/theory.md section 5), each with its numbers and a verdict
    by the rule stated beside it."""
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
        (
            "1. *Different-class mixtures lie beyond the segment between the class features, "
            "along the decision boundary (amplification > 1, cross-entropy optimum), not on it "
            "(squared-error null, amplification 1).* Rule: agrees when the amplification exceeds "
            "1 by more than 3 standard errors and the cross-entropy curves fit better; ERM runs "
            "are the control."
        ),
    ]
    lines += [f"   - {_amplification_claim(s, n, m)}" for n, m, _ in layout.NETWORK_RUNS]
    erm_bd = net("erm_learned", "boundary_distance_half_relative")
    mix_bd = net("mixup_learned", "boundary_distance_half_relative")
    lines += [
        (
            "2. *A lam = 1/2 mixture lies on the c/c' boundary.* Distance from the boundary "
            f"relative to clean samples (theory 0): mixup {_fmt(mix_bd)}, ERM {_fmt(erm_bd)}: "
            f"{_verdict(mix_bd < 0.5 * erm_bd, mix_bd >= erm_bd)} "
            "(rule: mixup under half of ERM's)."
        ),
    ]
    dependence = {n: net(n, "same_class_lam_dependence") for n in mixup}
    scatter = {n: net(n, "same_class_scatter") for n in mixup}
    lines += [
        (
            "3. *Same-class mixtures align with their class's classifier vector for every lam.* "
            "Movement of the same-class cell means with lam above its noise floor (theory 0; "
            "floor in brackets) and, apart from it, the scatter of single pairs, both relative to "
            "the cell mean: "
            + "; ".join(
                f"`{n}` {_fmt(dependence[n])} ({_fmt(net(n, 'same_class_lam_dependence_noise'))})"
                f" and {_fmt(scatter[n])}"
                for n in mixup
            )
            + "; mean cosine with w_c "
            + ", ".join(f"{_fmt(net(n, 'same_class_cosine'))}" for n in mixup)
            + f": {_verdict(max(dependence.values()) < 0.1, max(dependence.values()) > 0.3)} "
            "(rule: lam dependence under 0.1)."
        ),
    ]
    learned, fixed = (net(n, "ce_curve_rms") for n in mixup)
    acc_l, acc_f = (net(n, "test_accuracy") for n in mixup)
    closer = fixed < learned and acc_f > acc_l - 0.01
    lines += [
        (
            "4. *A fixed simplex-ETF classifier brings the features closer to the UFM optimum "
            "without hurting accuracy.* Misfit of the mixup curves to the cross-entropy optimum: "
            f"learned {_fmt(learned)}, fixed ETF {_fmt(fixed)}; test accuracy {_fmt(acc_l)} and "
            f"{_fmt(acc_f)}: {_verdict(closer, not closer)} (rule: smaller misfit, accuracy "
            "within 1 point)."
        ),
    ]
    ece = {n: net(n, "ece") for n in ("erm_learned", "mixup_learned")}
    conf = {n: net(n, "confidence_half") for n in ("erm_learned", "mixup_learned")}
    better = ece["mixup_learned"] < ece["erm_learned"]
    lines += [
        (
            f"5. *Mixup improves calibration.* Clean test ECE: ERM {_fmt(ece['erm_learned'])}, "
            f"mixup {_fmt(ece['mixup_learned'])}: {_verdict(better, not better)}. Confidence of "
            f"lam = 1/2 mixtures (theory about 1/2): ERM {_fmt(conf['erm_learned'])}, mixup "
            f"{_fmt(conf['mixup_learned'])}."
        ),
    ]
    erm_lin, mix_lin = net("erm_learned", "linearity"), net("mixup_learned", "linearity")
    inner = slice(1, None) if len(erm_lin) > 1 else slice(None)
    less = sum(mix_lin[inner]) > sum(erm_lin[inner])
    lines += [
        (
            "6. *Supervised mixup makes intermediate layers less linear (Chaudhry et al. 2022).* "
            f"Non-linearity per block, ERM {_fmt(erm_lin)}, mixup {_fmt(mix_lin)}: "
            f"{_verdict(less, not less)} (rule: larger summed non-linearity after block 1)."
        ),
        "",
    ]
    return lines


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
        *_table(
            "run", _run_configs(root, layout.NETWORKS, networks["runs"]), NETWORK_CONFIG_COLUMNS
        ),
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
    lines += _figures_section(summaries)
    lines += ["## All numbers", ""]
    lines += _solver_section(solver) + _theory_section(theory) + _network_section(networks)
    lines += _configuration_section(root, config, solver, networks)
    return "\n".join(lines)
