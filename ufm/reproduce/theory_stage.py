r"""Theory stage: the exact optimum and its asymptotics, written as tables and projections.

For a simplex ETF with row norm :math:`s` (gain :math:`g = s^2K/(K-1)`) the optimal
different-class feature is :math:`h = a\,w_c + b\,w_{c'}` (:mod:`ufm.theory`; Fisher, Meng &
Papyan, ICLR 2024, arXiv:2402.06171). In the orthonormal frame
:math:`u_- = (w_c - w_{c'})/\|w_c - w_{c'}\|`, :math:`u_+ = (w_c + w_{c'})/\|w_c + w_{c'}\|`
of the pair's plane it sits at

.. math:: \text{distance from the } c/c' \text{ boundary} = (a-b)\sqrt{g/2}
          = \frac{z_c - z_{c'}}{\|w_c - w_{c'}\|},\qquad
          \text{position along the channel} = (a+b)\,s\sqrt{\frac{K-2}{2(K-1)}},

and as :math:`\lambda_H\to 0` the distance tends to :math:`\log(\lambda/(1-\lambda))/\sqrt{2g}`
while the position grows like :math:`2\log(1/\lambda_H)` (:mod:`ufm.theory.asymptotics`).
Files: see :mod:`ufm.reproduce.layout`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..etf import simplex_etf
from ..io import prepare_run_dir, write_csv, write_json
from ..losses import get_loss
from ..theory import gain, optimal_features, theory_table
from ..theory.asymptotics import channel_asymptotic, margin_asymptotic
from ..theory.minority import KINDS, imbalance_theory, kind_arguments, minority_collapse_threshold
from . import layout, mixtures, sweep_stage
from .config import ReproduceConfig
from .projection import project_triple, triple_pairs, write_projection

GROWTH_POINTS = 33
GROWTH_LAMS = (0.5, 0.25, 0.1)


def stage_losses(config: ReproduceConfig) -> dict[str, Any]:
    """The losses with exact theory, by name, with this reproduction's parameters."""
    return {
        "ce": get_loss("ce"),
        "mse": get_loss("mse"),
        "label_smoothing": get_loss("label_smoothing", eps=config.smoothing),
    }


def _log_odds(lams: np.ndarray, K: int, lam_H: float, scale: float) -> np.ndarray:
    """log(lam/(1-lam)) inside (0, 1), NaN at the ends (where it diverges)."""
    inside = (lams > 0) & (lams < 1)
    values = np.full(lams.shape, np.nan)
    values[inside] = margin_asymptotic(K, lams[inside], lam_H, scale).value
    return values


def curve_rows(config: ReproduceConfig) -> list[dict[str, Any]]:
    """Per (loss, lam_H, lam): the exact optimum's coefficients, margin, norms, p_c, confidence.

    Cross-entropy for every lam_H of the figures; label smoothing and squared error at the
    main lam_H. ``relative_norm`` is |h(lam)| / |h_same|.
    """
    lams = np.linspace(0.0, 1.0, config.num_lams)
    losses = stage_losses(config)
    jobs = [("ce", lam_H) for lam_H in config.all_lam_Hs]
    jobs += [(name, config.lam_H) for name in ("label_smoothing", "mse")]
    rows = []
    for name, lam_H in jobs:
        table = theory_table(config.K, lam_H, config.scale, losses[name], lams)
        same = table["same_class"]
        log_odds = _log_odds(lams, config.K, lam_H, config.scale)
        for row, limit in zip(table["rows"], log_odds):
            rows.append(
                {
                    "loss": name,
                    "lam_H": lam_H,
                    "lam": row.lam,
                    "a": row.a,
                    "b": row.b,
                    "margin": row.margin,
                    "log_odds": limit,
                    "feature_norm": row.feature_norm,
                    "same_class_norm": same.feature_norm,
                    "relative_norm": row.feature_norm / same.feature_norm,
                    "p_c": row.p_c,
                    "p_c_prime": row.p_c_prime,
                    "confidence": row.confidence,
                }
            )
    return rows


def channel_rows(config: ReproduceConfig) -> list[dict[str, Any]]:
    """Per (lam_H, lam): distance from the c/c' boundary, its lam_H -> 0 limit, and the
    position along w_c + w_c' (module docstring)."""
    K, s = config.K, config.scale
    g = gain(K, s)
    lams = np.linspace(0.0, 1.0, config.num_lams)
    along = s * math.sqrt((K - 2) / (2 * (K - 1)))
    rows = []
    for lam_H in config.channel_lam_Hs:
        table = theory_table(K, lam_H, s, "ce", lams)
        limits = _log_odds(lams, K, lam_H, s) / math.sqrt(2 * g)
        for row, limit in zip(table["rows"], limits):
            rows.append(
                {
                    "lam_H": lam_H,
                    "lam": row.lam,
                    "boundary_distance": (row.a - row.b) * math.sqrt(g / 2),
                    "boundary_distance_limit": limit,
                    "channel_position": (row.a + row.b) * along,
                }
            )
    return rows


def growth_rows(config: ReproduceConfig) -> list[dict[str, Any]]:
    """Position along the channel against lam_H, exact and asymptotic (2 W_0(...))."""
    K, s = config.K, config.scale
    g = gain(K, s)
    along = s * math.sqrt((K - 2) / (2 * (K - 1)))
    low, high = min(config.channel_lam_Hs), max(config.channel_lam_Hs)
    lam_Hs = np.logspace(math.log10(low), math.log10(high), GROWTH_POINTS) if low < high else [low]
    rows = []
    for lam_H in lam_Hs:
        table = theory_table(K, float(lam_H), s, "ce", GROWTH_LAMS)
        asymptote = channel_asymptotic(K, np.asarray(GROWTH_LAMS), float(lam_H), s)
        for row, value in zip(table["rows"], asymptote.value):
            rows.append(
                {
                    "lam_H": float(lam_H),
                    "lam": row.lam,
                    "position": (row.a + row.b) * along,
                    "position_asymptotic": value / g * along,
                }
            )
    return rows


def projections(config: ReproduceConfig) -> dict[str, dict[str, np.ndarray]]:
    """The triple's exact optimal features, one projection per loss with exact theory.

    The classifier is the canonical simplex ETF (K, K) of row norm ``scale``; the features
    have no offset (the UFM's optimum for a zero-mean ETF), so the centre is the origin.
    """
    W = simplex_etf(config.K, config.K, config.scale)
    c, c_prime = triple_pairs(config.triple)
    lams = np.linspace(0.0, 1.0, config.projection_lams)
    result = {}
    for name, loss in stage_losses(config).items():
        features = optimal_features(
            W, c[:, None], c_prime[:, None], lams[None, :], config.lam_H, loss
        )
        result[name] = project_triple(features.numpy(), c, c_prime, lams, W.numpy(), config.triple)
    return result


def _nearest(config: ReproduceConfig, lam: float) -> float:
    lams = np.linspace(0.0, 1.0, config.num_lams)
    return float(lams[np.argmin(abs(lams - lam))])


def _key_numbers(config: ReproduceConfig, curves: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (loss, lam_H): the same-class norm, the lam = 1/2 feature's norm relative to it,
    the margin there, and the theoretical p_c at lam = 1/4, 1/2 (nearest grid points)."""
    quarter, half = _nearest(config, 0.25), _nearest(config, 0.5)
    numbers: dict[str, dict[str, Any]] = {}
    for row in curves:
        if row["lam"] not in (quarter, half):
            continue
        entry = numbers.setdefault(row["loss"], {}).setdefault(
            f"{row['lam_H']:g}", {"lam_quarter": quarter}
        )
        if row["lam"] == quarter:
            entry["p_c_quarter"] = row["p_c"]
        else:
            entry.update(
                same_class_norm=row["same_class_norm"],
                relative_norm_half=row["relative_norm"],
                margin_half=row["margin"],
                p_c_half=row["p_c"],
            )
    return numbers


def _channel_numbers(config: ReproduceConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per channel lam_H: position along w_c + w_c' at lam = 1/2, distance from the boundary
    at lam = 1/4 and its lam_H -> 0 limit (nearest grid points)."""
    quarter, half = _nearest(config, 0.25), _nearest(config, 0.5)
    numbers: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = numbers.setdefault(f"{row['lam_H']:g}", {"lam_quarter": quarter})
        if row["lam"] == half:
            entry["position_half"] = row["channel_position"]
        elif row["lam"] == quarter:
            entry["distance_quarter"] = row["boundary_distance"]
            entry["distance_quarter_limit"] = row["boundary_distance_limit"]
    return numbers


def minority_settings(config: ReproduceConfig) -> dict[str, dict[str, Any]]:
    """The two settings of the minority-collapse curves: the reproduction's K with K // 2
    minority classes, and the sizes of the sweep stage's imbalance sweep (its solver points
    are drawn on these curves)."""
    sizes = sweep_stage.sweep_sizes(config)
    return {
        "reproduction": {"K": config.K, "lam_H": config.lam_H, "lam_W": config.lam_W,
                         "lams": sweep_stage.mixup_lams(config.solver_lams), "rhos": []},
        "sweep": {"K": sizes["K"], "lam_H": sizes["lam_H"], "lam_W": sizes["lam_W"],
                  "lams": sweep_stage.mixup_lams(sizes["num_lams"]),
                  "rhos": sweep_stage.imbalance_ratios(config)},
    }


def minority_rows(config: ReproduceConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The exact learned classifier under step imbalance (:func:`ufm.imbalance_theory`) over
    a log grid of rho from 1 to 10^4 (and the sweep's ratios), for mixup with sample pairing,
    mixup with class pairing and plain training; and per setting and kind the ratio at which
    the minority cosine crosses 0 and the ratio of exact collapse."""
    rows, numbers, done = [], {}, {}
    for setting, values in minority_settings(config).items():
        K, minority = values["K"], values["K"] // 2
        key = repr(sorted(values.items()))
        if key in done:  # the same setting twice (the full sweep uses the reproduction's)
            rows += [{**row, "setting": setting} for row in rows if row["setting"] == done[key]]
            numbers[setting] = numbers[done[key]]
            continue
        done[key] = setting
        ratios = sorted({*np.geomspace(1.0, 1e4, 17).tolist(), *values["rhos"]})
        numbers[setting] = {"K": K, "minority_classes": minority, "lam_H": values["lam_H"],
                            "lam_W": values["lam_W"], "num_lams": len(values["lams"])}
        for label, kind in KINDS.items():
            arguments = {"lam_H": values["lam_H"], "lam_W": values["lam_W"],
                         **kind_arguments(kind, values["lams"])}
            for ratio in ratios:
                theory = imbalance_theory(K, minority, ratio, **arguments)
                rows.append({"setting": setting, "kind": kind, "imbalance_ratio": ratio,
                             "K": K, "minority_classes": minority,
                             "minority_cosine": theory.minority_cosine,
                             "majority_cosine": theory.majority_cosine,
                             "norm_ratio": math.sqrt(theory.norm2_minority / theory.norm2_majority)
                             if theory.norm2_majority > 0 else None,
                             "mu_minority": theory.eigenvalues["minority"]})
            found = minority_collapse_threshold(K, minority, **arguments)
            numbers[setting][kind] = {"label": label, "threshold": found.threshold,
                                      "exact_collapse": found.exact_collapse,
                                      "limit_cosine": found.limit_cosine}
    return rows, numbers


def run(config: ReproduceConfig, root: str | Path) -> dict[str, Any]:
    """Compute and write the theory stage into ``root/theory`` (summary.json last)."""
    folder = prepare_run_dir(layout.stage_dir(root, layout.THEORY))
    curves = curve_rows(config)
    write_csv(folder / "curves.csv", curves)
    channels = channel_rows(config)
    write_csv(folder / "channels.csv", channels)
    write_csv(folder / "channel_growth.csv", growth_rows(config))
    for name, projection in projections(config).items():
        write_projection(layout.theory_projection(root, name), projection)
    minority, minority_numbers = minority_rows(config)
    write_csv(layout.theory_file(root, layout.MINORITY_COLLAPSE), minority)
    amplification = mixtures.amplification_rows(config)
    write_csv(layout.theory_file(root, layout.MIXTURE_AMPLIFICATION), amplification)
    write_projection(layout.mixture_projection(root, layout.THEORY, "theory"),
                     mixtures.theory_projection(config))
    summary = {
        "K": config.K,
        "scale": config.scale,
        "g": gain(config.K, config.scale),
        "lam_H": config.lam_H,
        "lam_Hs": list(config.all_lam_Hs),
        "channel_lam_Hs": list(config.channel_lam_Hs),
        "smoothing": config.smoothing,
        "triple": list(config.triple),
        "per_loss": _key_numbers(config, curves),
        "channels": _channel_numbers(config, channels),
        "minority_collapse": minority_numbers,
        "mixtures": {
            f"{row['lam_H']:g}": row["amplification"]
            for row in amplification
            if row["m"] == 3
        },
    }
    write_json(folder / layout.SUMMARY, summary)
    return summary
