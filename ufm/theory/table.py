"""The exact optimum over a lam grid as a table, and the ``ufm theory`` job that writes it.

configuration (:class:`TheoryConfig`) -> :func:`ufm.theory.theory_table` -> ``theory.json``,
``theory.csv`` and ``config.json`` in the output folder (``theory.json`` last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._checks import check_float, check_int
from ..config import config_to_dict
from ..io import prepare_run_dir, write_csv, write_json
from ..losses import get_loss
from .minority import (
    KINDS,
    check_imbalance_problem,
    imbalance_theory,
    kind_arguments,
    minority_collapse_threshold,
)
from .mixtures import mixture_coefficients, simplex_grid
from .optimum import (
    EXACT_THEORY_LOSSES,
    _check_common,
    _lam_array,
    gain,
    has_exact_theory,
    optimal_coefficients,
)


@dataclass(frozen=True)
class TheoryRow:
    """One lam of the theory table (different-class pair unless ``lam`` is None)."""

    lam: float
    a: float
    b: float
    feature_norm: float
    margin: float
    margin_vs_other: float
    p_c: float
    p_c_prime: float
    confidence: float


def _row(K: int, g: float, scale: float, lam: float, a: float, b: float) -> TheoryRow:
    u, v = g * a, g * b
    norm = scale * np.sqrt(max(a * a + b * b - 2 * a * b / (K - 1), 0.0))
    logits = np.array([u, v] + ([0.0] if K > 2 else []))
    counts = np.array([1.0, 1.0] + ([K - 2.0] if K > 2 else []))
    top = logits.max()
    log_D = top + np.log((counts * np.exp(logits - top)).sum())
    p_c, p_cp = float(np.exp(u - log_D)), float(np.exp(v - log_D))
    p_o = float(np.exp(-log_D)) if K > 2 else 0.0
    return TheoryRow(
        lam=float(lam),
        a=float(a),
        b=float(b),
        feature_norm=float(norm),
        margin=float(u - v),
        margin_vs_other=float(u),
        p_c=p_c,
        p_c_prime=p_cp,
        confidence=max(p_c, p_cp, p_o),
    )


def _inputs(K: int, lam_H: float, scale: float, g: float, loss) -> dict[str, Any]:
    """The inputs every table starts with: K, lam_H, row norm, gain and the loss."""
    loss_entry = {"name": loss.name, **loss.params}
    return {"K": K, "lam_H": lam_H, "scale": scale, "g": g, "loss": loss_entry}


def theory_table(
    K: int, lam_H: float, scale: float = 1.0, loss="ce", lams=None
) -> dict[str, object]:
    r"""Coefficients, feature norms, logit margins and confidences over a lam grid.

    What the exact optimum (:func:`ufm.optimal_coefficients`) means for the network's
    outputs, one row per lam: the numbers ``ufm theory`` prints and writes.

    Parameters
    ----------
    K : number of classes, ``K >= 2``.
    lam_H : feature ridge :math:`\lambda_H > 0`.
    scale : row norm :math:`s > 0` of the simplex ETF.
    loss : "ce", "label_smoothing" or "mse" (or such a :class:`~ufm.losses.MixupLoss`).
    lams : the grid, values in [0, 1] (flattened); None takes 21 equally spaced values.

    Returns
    -------
    dict
        The inputs (``K``, ``lam_H``, ``scale``, ``loss`` as a dict of its name and
        parameters), the gain ``g``, ``same_class`` (the row of the pairs (c, c)) and
        ``rows``, a list of one row per lam (different-class pairs), in the order of
        ``lams``. Each row has ``lam``, the coefficients ``a`` and ``b``, ``feature_norm``,
        ``margin`` :math:`z_c - z_{c'} = g(a-b)`, ``margin_vs_other``
        :math:`z_c - z_o = ga` for any third class :math:`o`, the softmax probabilities
        ``p_c`` and ``p_c_prime``, and ``confidence``, the largest probability.

    Examples
    --------
    >>> import ufm
    >>> table = ufm.theory_table(K=4, lam_H=5e-3, lams=[0.0, 0.5, 1.0])
    >>> round(table["g"], 6), len(table["rows"])
    (1.333333, 3)
    >>> half = table["rows"][1]
    >>> half.lam, round(half.margin, 6), round(half.confidence, 4)
    (0.5, 0.0, 0.4922)
    >>> round(table["same_class"].a, 4)
    3.9684
    """
    K, lam_H, scale = _check_common(K, lam_H, scale)
    loss = get_loss(loss)
    lams = np.linspace(0.0, 1.0, 21) if lams is None else _lam_array(lams).ravel()
    g = gain(K, scale)
    a, b = optimal_coefficients(K, lams, lam_H, scale, loss)
    (a_same,), _ = optimal_coefficients(K, [1.0], lam_H, scale, loss, same_class=True)
    rows = [_row(K, g, scale, lam, ai, bi) for lam, ai, bi in zip(lams, a, b)]
    return {
        **_inputs(K, lam_H, scale, g, loss),
        "same_class": _row(K, g, scale, 1.0, a_same, 0.0),
        "rows": rows,
    }


MAX_TABLE_ROWS = 1_000_000


@dataclass
class TheoryConfig:
    """Parameters of the exact theory table (docs/theory.md sections 1-3).

    ``lams`` gives the grid explicitly; otherwise ``num_lams`` equally spaced values in
    [0, 1] are used. The table does not depend on ``d``, which only has to admit a simplex ETF
    (``d >= K - 1``); 0, the default, takes ``d = K - 1``. ``mixup_points = m >= 3`` tabulates mixtures of the classes
    0..m-1 instead, over the grid of the weight simplex with ``simplex_points`` points per
    edge (:func:`ufm.theory.mixtures.simplex_grid`).
    """

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"loss": tuple(EXACT_THEORY_LOSSES)}
    """Allowed values of the choice fields, listed in ``ufm theory --help``."""

    K: int = 10
    d: int = 0
    lam_H: float = 5e-3
    scale: float = 1.0
    loss: str = "ce"
    loss_params: dict[str, Any] = field(default_factory=dict)
    num_lams: int = 21
    lams: tuple[float, ...] | None = None
    mixup_points: int = 2
    simplex_points: int = 5
    minority_classes: int = 0
    imbalance_ratio: float = 1.0
    lam_W: float = 5e-3

    def __post_init__(self) -> None:
        self.K = check_int("K", self.K, minimum=2)
        self.d = check_int("d", self.d, minimum=0) or self.K - 1
        if self.d < self.K - 1:
            raise ValueError(f"d must be >= K-1 = {self.K - 1} for a simplex ETF, got d={self.d}")
        self.lam_H = check_float("lam_H", self.lam_H, 0.0, None, low_open=True)
        self.scale = check_float("scale", self.scale, 0.0, None, low_open=True)
        self.num_lams = check_int("num_lams", self.num_lams, minimum=2)
        self.mixup_points = check_int("mixup_points", self.mixup_points)
        if not 2 <= self.mixup_points <= self.K:
            raise ValueError(
                f"mixup_points must lie in [2, K={self.K}] (classes per mixture), "
                f"got {self.mixup_points}"
            )
        self.simplex_points = check_int("simplex_points", self.simplex_points, minimum=2)
        rows = math.comb(self.simplex_points + self.mixup_points - 2, self.mixup_points - 1)
        if self.mixup_points > 2 and rows > MAX_TABLE_ROWS:
            raise ValueError(
                f"the weight grid of mixup_points={self.mixup_points}, simplex_points="
                f"{self.simplex_points} has {rows:,} rows; at most {MAX_TABLE_ROWS:,} are allowed"
            )
        self.minority_classes = check_int("minority_classes", self.minority_classes, 0,
                                          self.K - 1)
        self.imbalance_ratio = check_float("imbalance_ratio", self.imbalance_ratio, 1.0, None)
        self.lam_W = check_float("lam_W", self.lam_W, 0.0, None, low_open=True)
        if self.minority_classes:
            if self.mixup_points != 2:
                raise ValueError(f"the imbalance table is for pairs: mixup_points must be 2 "
                                 f"with minority_classes = {self.minority_classes}, got "
                                 f"{self.mixup_points}")
            check_imbalance_problem(self.K, self.minority_classes, self.imbalance_ratio,
                                    self.lam_H, self.lam_W, self.lams, "sample", self.loss,
                                    self.loss_params)
        elif not has_exact_theory(get_loss(self.loss, **self.loss_params)):
            raise ValueError(
                f"loss must be one of {', '.join(map(repr, EXACT_THEORY_LOSSES))} for the exact "
                f"theory, got {self.loss!r}"
            )
        if self.lams is not None:
            self.lams = tuple(
                check_float("lams", v, 0.0, 1.0) for v in self.lams
            )

    def grid(self) -> np.ndarray:
        if self.lams is not None:
            return np.asarray(self.lams, dtype=np.float64)
        return np.linspace(0.0, 1.0, self.num_lams)


COLUMNS = ("lam", "a", "b", "feature_norm", "margin", "margin_vs_other", "p_c", "p_c_prime",
           "confidence")


def compute(config: TheoryConfig) -> dict[str, Any]:
    """The theory table for ``config`` (:func:`theory_table`, or :func:`mixture_table`)."""
    if config.minority_classes:
        return imbalance_table(config)
    loss = get_loss(config.loss, **config.loss_params)
    if config.mixup_points > 2:
        weights = simplex_grid(config.mixup_points, config.simplex_points)
        table = mixture_table(config.K, config.lam_H, config.scale, loss, weights)
    else:
        table = theory_table(config.K, config.lam_H, config.scale, loss, config.grid())
    table["d"] = config.d
    return table


def _loss_text(loss: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in loss.items() if k != "name")
    return f"{loss['name']} ({params})" if params else loss["name"]


def _head(table: dict[str, Any]) -> str:
    return (
        f"K={table['K']}  d={table['d']}  lam_H={table['lam_H']:g}  row norm={table['scale']:g}  "
        f"g={table['g']:.15g}  loss={_loss_text(table['loss'])}"
    )


def format_table(table: dict[str, Any]) -> str:
    """Fixed-width text of the table, full double precision for the coefficients."""
    if "mixup_points" in table:
        return format_mixture_table(table)
    if "minority_classes" in table:
        return format_imbalance_table(table)
    head = _head(table)
    same = table["same_class"]
    lines = [head, f"same class (any lam): a = {same.a:.15g}, |h| = {same.feature_norm:.15g}", ""]
    lines.append(
        f"{'lam':>6} {'a':>22} {'b':>22} {'|h|':>12} {'z_c-z_c2':>12} {'z_c-z_o':>12} "
        f"{'p_c':>10} {'p_c2':>10}"
    )
    for row in table["rows"]:
        lines.append(
            f"{row.lam:6.3f} {row.a:22.15g} {row.b:22.15g} {row.feature_norm:12.6g} "
            f"{row.margin:12.6g} {row.margin_vs_other:12.6g} {row.p_c:10.6f} {row.p_c_prime:10.6f}"
        )
    return "\n".join(lines)


def write(table: dict[str, Any], config: TheoryConfig, out: str | Path) -> Path:
    """Write config.json, theory.csv and theory.json (last) into ``out``."""
    out = prepare_run_dir(out)
    write_json(out / "config.json", config_to_dict(config))
    if "mixup_points" in table or "minority_classes" in table:
        rows = table["rows"]
    else:
        rows = [{k: getattr(r, k) for k in COLUMNS} for r in table["rows"]]
    write_csv(out / "theory.csv", rows)
    write_json(out / "theory.json", table)
    return out


def mixture_table(K: int, lam_H: float, scale: float, loss, weights) -> dict[str, Any]:
    r"""The exact optimum of mixtures of the classes 0..m-1 over rows of ``weights`` (N, m).

    Per row: the weights :math:`y_k`, the coefficients :math:`a_k` of
    :math:`h = \sum_k a_k w_k` (:func:`ufm.mixture_coefficients`), the feature norm
    :math:`\|h\| = s\sqrt{\tfrac{K}{K-1}\sum_k a_k^2 - \tfrac{1}{K-1}(\sum_k a_k)^2}`, the
    softmax probabilities :math:`p_k = e^{g a_k}/(\sum_j e^{g a_j} + K - m)` of the m
    classes, the confidence :math:`\max(p_1, \dots, p_m, p_\text{other})` and the
    amplification :math:`\sum_k a_k / a_\text{same}` (1 for the squared error's convex
    combinations, whatever the weights). For ``m = K`` only the feature is determined (a
    common shift of the coefficients leaves it unchanged), so the amplification is NaN there.
    The norm is computed from the centred coefficients, :math:`\|h\|^2 = g\,[\sum_k (a_k -
    \bar a)^2 + (K - m)\bar a^2]`, :math:`\bar a = \sum_k a_k / K`, which does not cancel.
    """
    K, lam_H, scale = _check_common(K, lam_H, scale)
    loss = get_loss(loss)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    N, m = weights.shape
    g = gain(K, scale)
    a = mixture_coefficients(K, weights, lam_H, scale, loss)
    (a_same,), _ = optimal_coefficients(K, [1.0], lam_H, scale, loss, same_class=True)
    mean = a.sum(1, keepdims=True) / K
    norm = np.sqrt(g * (((a - mean) ** 2).sum(1) + (K - m) * mean[:, 0] ** 2))
    logits = np.concatenate([g * a, np.zeros((N, 1))], axis=1)
    counts = np.array([1.0] * m + [float(K - m)])
    top = logits.max(1, keepdims=True)
    with np.errstate(divide="ignore"):
        log_D = top[:, 0] + np.log((counts * np.exp(logits - top)).sum(1))
    p = np.exp(g * a - log_D[:, None])
    p_other = np.exp(-log_D) if K > m else np.zeros(N)
    rows = []
    for i in range(N):
        row = {f"y_{k + 1}": float(weights[i, k]) for k in range(m)}
        row.update({f"a_{k + 1}": float(a[i, k]) for k in range(m)})
        row["feature_norm"] = float(norm[i])
        row.update({f"p_{k + 1}": float(p[i, k]) for k in range(m)})
        row["confidence"] = float(max(p[i].max(), p_other[i]))
        row["amplification"] = float(a[i].sum() / a_same) if m < K else math.nan
        rows.append(row)
    return {
        **_inputs(K, lam_H, scale, g, loss),
        "mixup_points": m,
        "a_same": float(a_same),
        "rows": rows,
    }


def format_mixture_table(table: dict[str, Any]) -> str:
    """Fixed-width text of a :func:`mixture_table`: weights, coefficients, norm, probabilities."""
    m = table["mixup_points"]
    lines = [
        _head(table),
        f"mixtures of the classes 0..{m - 1}: h = sum_k a_k w_k; same class: a = "
        f"{table['a_same']:.15g}",
        "",
    ]
    lines.append(
        " ".join(f"{f'y_{k + 1}':>6}" for k in range(m))
        + " " + " ".join(f"{f'a_{k + 1}':>22}" for k in range(m))
        + f" {'|h|':>12} " + " ".join(f"{f'p_{k + 1}':>10}" for k in range(m))
    )
    for row in table["rows"]:
        lines.append(
            " ".join(f"{row[f'y_{k + 1}']:6.3f}" for k in range(m))
            + " " + " ".join(f"{row[f'a_{k + 1}']:22.15g}" for k in range(m))
            + f" {row['feature_norm']:12.6g} "
            + " ".join(f"{row[f'p_{k + 1}']:10.6f}" for k in range(m))
        )
    return "\n".join(lines)


IMBALANCE_COLUMNS = ("kind", "mu_majority", "mu_minority", "mu_between", "norm_majority",
                     "norm_minority", "majority_cosine", "minority_cosine", "cross_cosine",
                     "objective", "collapse_ratio")


def imbalance_table(config: TheoryConfig) -> dict[str, Any]:
    """The learned classifier under step imbalance (:func:`ufm.imbalance_theory`) for mixup
    with sample pairing, mixup with class pairing (over ``config``'s lam grid) and plain
    training (lam = 1), with the ratio at which each minority cosine crosses 0
    (:func:`ufm.minority_collapse_threshold`, None if it never does; only with two minority
    classes or more)."""
    rows = []
    for label, kind in KINDS.items():
        arguments = {"lam_H": config.lam_H, "lam_W": config.lam_W, "loss": config.loss,
                     "loss_params": config.loss_params,
                     **kind_arguments(kind, (float(v) for v in config.grid()))}
        theory = imbalance_theory(config.K, config.minority_classes, config.imbalance_ratio,
                                  **arguments)
        threshold = (minority_collapse_threshold(config.K, config.minority_classes, **arguments)
                     if config.minority_classes >= 2 else None)
        mu = theory.eigenvalues
        rows.append({
            "kind": label, "mu_majority": mu["majority"], "mu_minority": mu["minority"],
            "mu_between": mu["between"], "norm_majority": math.sqrt(theory.norm2_majority),
            "norm_minority": math.sqrt(theory.norm2_minority),
            "majority_cosine": theory.majority_cosine, "minority_cosine": theory.minority_cosine,
            "cross_cosine": theory.cross_cosine, "objective": theory.objective,
            "collapse_ratio": None if threshold is None else threshold.threshold,
        })
    return {
        "K": config.K, "minority_classes": config.minority_classes,
        "imbalance_ratio": config.imbalance_ratio, "lam_H": config.lam_H,
        "lam_W": config.lam_W, "loss": {"name": config.loss, **config.loss_params},
        "lams": [float(v) for v in config.grid()], "rows": rows,
    }


def format_imbalance_table(table: dict[str, Any]) -> str:
    """Fixed-width text of an :func:`imbalance_table`."""

    def number(value, width, digits=6):
        return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}g}"

    lines = [
        (f"K={table['K']}  minority classes={table['minority_classes']}  "
         f"imbalance ratio={table['imbalance_ratio']:g}  lam_H={table['lam_H']:g}  "
         f"lam_W={table['lam_W']:g}  loss={_loss_text(table['loss'])}  "
         f"{len(table['lams'])} lams"),
        ("learned classifier, exact optimum: W W^T = mu_A P_A + mu_B P_B + mu_0 e e^T "
         "(docs/theory.md section 13)"),
        "",
        (f"{'':24} {'mu_A':>10} {'mu_B':>10} {'mu_0':>10} {'|w_A|':>9} {'|w_B|':>9} "
         f"{'cos A':>9} {'cos B':>9} {'cos AB':>9} {'objective':>12} {'cos B = 0 at rho':>16}"),
    ]
    for row in table["rows"]:
        lines.append(
            f"{row['kind']:24} {number(row['mu_majority'], 10)} {number(row['mu_minority'], 10)} "
            f"{number(row['mu_between'], 10)} {number(row['norm_majority'], 9, 5)} "
            f"{number(row['norm_minority'], 9, 5)} {number(row['majority_cosine'], 9, 4)} "
            f"{number(row['minority_cosine'], 9, 4)} {number(row['cross_cosine'], 9, 4)} "
            f"{number(row['objective'], 12, 9)} {number(row['collapse_ratio'], 16, 6)}")
    return "\n".join(lines)
