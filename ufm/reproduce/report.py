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
from ..plots import FIGURES
from .figure_numbers import NUMBERS, Summaries

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
    ("fitted lam_H", "fitted_lam_H"), ("margin fit rms", "margin_fit_rms"),
    ("UFM distance (in span)", "ufm_distance_in_span"), ("same-class cos", "same_class_cosine"),
    ("boundary dist. at 1/2 (rel.)", "boundary_distance_half_relative"),
    ("confidence at 1/2", "confidence_half"),
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
            "*fitted lam_H* is the effective feature ridge whose UFM margins fit the network's "
            "best; *UFM distance* is the relative distance of the centred features (in the span of "
            "W) to the UFM optimum at that lam_H, up to one scale; *boundary dist. at 1/2* is the "
            "distance of lam = 1/2 mixtures from the c/c' boundary relative to that of clean "
            "samples (theory: 0)."
        ),
        "",
    ]
    lines += _table("run", runs, NETWORK_COLUMNS)
    lines += ["Layer-wise non-linearity along input segments (block 1 nearest the input):", ""]
    return lines + _table("run", runs, (("non-linearity per block", "linearity"),))


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
            f"{__version__}) from the result files in this folder."
        ),
        "",
    ]
    if seconds:
        times = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
        lines += [f"Stage times (this session; reused stages take no time): {times}", ""]
    lines += _figures_section(Summaries(root, config, theory, solver, networks))
    lines += ["## All numbers", ""]
    lines += _solver_section(solver) + _theory_section(theory) + _network_section(networks)
    lines += _configuration_section(root, config, solver, networks)
    return "\n".join(lines)
