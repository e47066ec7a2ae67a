"""The report's section on the sweep stage: when does a learned classifier become an ETF?

Every number is read from the sweeps' tables (``sweep/<name>/sweep.json``, one row per
point) and, for mixup against plain training, the points' ``config.json``
(:mod:`ufm.plots.sweep_files`); each claim is stated with its numbers, whatever they are.
A sweep with seeds is read per configuration, as the mean over its seeds
(:func:`ufm.plots.sweep_files.mean_rows`); where the imbalance sweep compares mixup with
plain training, each side is its mean +- seed standard deviation, and a difference counts
only beyond twice its combined standard error (:func:`ufm.seeds.resolved`). With one seed
the comparison says so: one seed, no seed spread.

Two claims read the points' ``summary.json``: a point solved from several random starts
(:mod:`ufm.solver.random_starts`, the d x lam_W grid below d = K - 1) shows the lowest
objective's ETF distance with "k/N starts", the starts that reached it, and a line lists
where fewer than all did, with the starts' ETF distances and objective spread; a grid that
sweeps ``bias`` (``mse_bias``) gets the claim that the common row offset of W is the missing
bias, with the ETF distances with and without it, the common logit shift and its spread
over the samples, and the bias's values, judged by the rule it states.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..io import read_json
from ..plots.phase import SWEEP_FIGURES, cell_text, tick_label
from ..plots.sweep_files import (
    is_plain,
    mean_rows,
    point_config,
    point_summary,
    read_sweep,
    start_counts,
    sweep_K,
)
from ..seeds import RESOLUTION, Spread, combined_se, resolved, spread
from . import layout

TITLE = "## When does a learned classifier become an ETF (docs/theory.md, section 4)"
# A learned W counts as a simplex ETF below this ETF distance (the quick solves stop at
# gradient norm 1e-6, which leaves distances near 1e-5).
ETF_THRESHOLD = 1e-3
# Two minority cosines this close are alike, however small their seed spread.
ALIKE = 1e-3
# A logit shift counts as the same for every sample when its standard deviation over the
# samples is at most this fraction of its size (the solves leave about 1e-10).
SHIFT_SPREAD = 1e-6


def _value(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    if row.get("status") != "done" or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _cell(row: dict[str, Any] | None, key: str = "etf_distance_W") -> str:
    if row is None:
        return "-"
    if row["status"] != "done":
        return row["status"]
    return cell_text(_value(row, key))


def _levels(rows, field: str) -> list[Any]:
    seen: dict[str, Any] = {}
    for row in rows:
        seen.setdefault(repr(row.get(field)), row.get(field))
    return list(seen.values())


def _find(rows, **values) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in values.items()):
            return row
    return None


def _links(root: Path, name: str) -> list[str]:
    lines = []
    for figure, spec in SWEEP_FIGURES.items():
        png = Path(layout.FIGURES) / f"{layout.phase_figure(name, figure)}.png"
        if (root / png).is_file():
            lines += [f"![{spec.caption}]({png.as_posix()})", ""]
    return lines


def _etf_claim(field: str, value: Any, rows, x: str, bias_below: bool = False) -> str:
    """Where, along ``x``, the learned W is an ETF for ``field = value`` (``bias_below``: the
    grid sweeps the bias, and a claim below says what the common row offset is)."""
    done = [r for r in rows if _value(r, "etf_distance_W") is not None]
    failed = [r for r in rows if r["status"] != "done"]
    etf = [r for r in done if r["etf_distance_W"] < ETF_THRESHOLD]
    other = [r for r in done if r["etf_distance_W"] >= ETF_THRESHOLD]
    head = f"`{field} = {tick_label(field, value)}`"
    if not done:
        return f"{head}: no finished point"
    if not other:
        text = (f"an ETF at every {x} (ETF distance at most "
                f"{cell_text(max(r['etf_distance_W'] for r in etf))})")
    elif not etf:
        span = sorted({cell_text(r["etf_distance_W"]) for r in other}, key=float)
        text = (f"not an ETF at any {x} (ETF distance "
                f"{span[0] if len(span) == 1 else f'{span[0]} to {span[-1]}'})")
    else:
        text = (f"an ETF at {x} = {', '.join(tick_label(x, r.get(x)) for r in etf)}; not at "
                + ", ".join(f"{tick_label(x, r.get(x))} ({cell_text(r['etf_distance_W'])})"
                            for r in other))
    centred = [r for r in other if (_value(r, "etf_distance_W_centred") or 1.0) < ETF_THRESHOLD]
    if centred:
        text += ("; where it is not, the centred W is one (centred distance at most "
                 f"{cell_text(max(r['etf_distance_W_centred'] for r in centred))}: W carries a "
                 "common row offset" + ("" if bias_below else
                                        ", which a learned bias takes over: the `mse_bias` grid")
                 + ")")
    if failed:
        text += f"; {len(failed)} point(s) {', '.join(sorted({r['status'] for r in failed}))}"
    return f"{head}: {text}."


def _starts(folder: Path, table: dict[str, Any], row: dict[str, Any] | None) -> dict | None:
    """The summary of a point solved from several random starts, else None (one start; a
    sweep with seeds, whose rows are means, is read per seed elsewhere)."""
    if row is None or table.get("seeds") or start_counts(folder, row) is None:
        return None
    return point_summary(folder, row)


def _start_cell(folder: Path, table: dict[str, Any], row: dict[str, Any] | None) -> str:
    """A cell of the ETF table: the value, and 'k/N starts' where several were made."""
    record = _starts(folder, table, row)
    if record is None:
        return _cell(row)
    return f"{_cell(row)} ({record['starts_reached']}/{record['starts']} starts)"


def _starts_claim(folder: Path, table: dict[str, Any], rows, x: str, y: str) -> str | None:
    """What the points solved from several random starts reached (None without any)."""
    several = [(r, record) for r in rows if (record := _starts(folder, table, r)) is not None]
    if not several:
        return None
    counts = sorted({record["starts"] for _, record in several})
    rtol = several[0][1]["starts_rtol"]
    text = (f"Points below the rank a minimum can need (d < K - 1 here) have several stationary "
            f"points; each was solved from {' or '.join(map(str, counts))} random starts "
            f"(`starts`), and its cell is the start with the lowest objective, which a start "
            f"reached when its objective is within {rtol:g} relative of it: ")
    fewer = [(r, record) for r, record in several if record["starts_reached"] < record["starts"]]
    if not fewer:
        return text + f"every start reached it at all {len(several)} such points."
    parts = []
    for r, record in fewer:
        distances = [v for v in record["start_etf_distances"] if isinstance(v, (int, float))]
        parts.append(
            f"{x} = {tick_label(x, r.get(x))}, {y} = {tick_label(y, r.get(y))}: "
            f"{record['starts_reached']} of {record['starts']} (the starts' ETF distances "
            f"{_span(distances, '.4g')}, the lowest objective's {r['etf_distance_W']:.4g}; "
            f"objectives {record['start_objective_spread']:.2g} apart, relative)")
    return (text + f"all starts reached it at {len(several) - len(fewer)} of {len(several)} "
            "points, fewer at " + "; ".join(parts) + ".")


def _span(values, spec: str = ".3g") -> str:
    """'a' or 'a to b', the lowest and highest of ``values`` in format ``spec``."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low} to {high}"


def _bias_claim(folder: Path, rows, K: int | None) -> str:
    """Is the common row offset of W the bias the model lacks? (a grid that sweeps bias)"""
    done = [(r, point_summary(folder, r)) for r in rows if _value(r, "etf_distance_W") is not None]
    without = [(r, s) for r, s in done if r.get("bias") is False and s is not None]
    with_bias = [(r, s) for r, s in done if r.get("bias") is True and s is not None]
    if not without or not with_bias or not all(
            _recorded(s, "common_logit_shift", "common_logit_shift_sd") for _, s in without) \
            or not all(_recorded(s, "bias_mean", "bias_spread") for _, s in with_bias):
        return ("- The bias grid lacks a finished point with and without a bias, or their "
                "summaries lack the common logit shift (solved before it was recorded).")
    shift = [s["common_logit_shift"] for _, s in without]
    shift_sd = [s["common_logit_shift_sd"] for _, s in without]
    bias = [s["bias_mean"] for _, s in with_bias]
    spread_b = [s["bias_spread"] for _, s in with_bias]
    plain_W = [r["etf_distance_W"] for r, _ in without]
    centred = [r["etf_distance_W_centred"] for r, _ in without]
    biased_W = [r["etf_distance_W"] for r, _ in with_bias]
    holds = (min(plain_W) >= ETF_THRESHOLD and max(centred) < ETF_THRESHOLD
             and max(biased_W) < ETF_THRESHOLD
             and all(sd <= SHIFT_SPREAD * abs(v) for sd, v in zip(shift_sd, shift)))
    over_K = f"; 1/K = {1 / K:.4g}" if K else ""
    return (
        f"- **{'Holds' if holds else 'Not borne out'}: the common row offset of W is the "
        f"missing bias.** Without a bias W is not an ETF (ETF distance {_span(plain_W, '.2g')}) "
        f"but its centred W is (at most {max(centred):.2g}); the offset, W's mean row u, gives "
        f"every logit of a sample the same shift u.h = {_span(shift, '.4g')}, and it is the "
        f"same for every sample (standard deviation over the samples at most "
        f"{max(shift_sd):.2g}), which is what a bias would add. With a learned bias "
        f"(`bias = true`) W itself is an ETF (ETF distance at most {max(biased_W):.2g}) and "
        f"the bias takes it over: {_span(bias, '.4g')} in every entry (entries within "
        f"{max(spread_b):.2g} of each other{over_K}). Rule: holds when W without a bias is "
        f"no ETF while its centred W and W with a bias are (distance {ETF_THRESHOLD:g}), and "
        f"the shift's spread over samples is at most {SHIFT_SPREAD:g} of its size.")


def _recorded(summary: dict[str, Any], *keys: str) -> bool:
    return all(isinstance(summary.get(k), (int, float)) for k in keys)


def _two_axis(root: Path, name: str, table: dict[str, Any], K: int | None) -> list[str]:
    x, y = table["swept"]
    rows = mean_rows(table)
    folder = layout.sweep_dir(root, name)
    xs, ys = _levels(rows, x), _levels(rows, y)
    header = [f"{y} \\ {x}"] + [tick_label(x, v) for v in xs]
    lines = ["ETF distance of the learned W:", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for vy in ys:
        cells = [_start_cell(folder, table, _find(rows, **{x: vx, y: vy})) for vx in xs]
        lines.append("| " + " | ".join([tick_label(y, vy), *cells]) + " |")
    lines += [""]
    lines += [f"- {_etf_claim(x, vx, [r for r in rows if r.get(x) == vx], y, 'bias' in (x, y))}"
              for vx in xs]
    if "d" in (x, y) and K is not None:
        low = [r for r in rows if _value(r, "etf_distance_W") is not None and r["d"] < K - 1]
        high = [r for r in rows if _value(r, "etf_distance_W") is not None and r["d"] >= K - 1]
        parts = []
        if high:
            count = sum(r["etf_distance_W"] < ETF_THRESHOLD for r in high)
            parts.append(f"with d >= K - 1 = {K - 1} the learned W is an ETF at {count} of "
                         f"{len(high)} points (largest distance "
                         f"{cell_text(max(r['etf_distance_W'] for r in high))})")
        if low:
            parts.append(f"with d < K - 1 it cannot be one, and its distance is at least "
                         f"{cell_text(min(r['etf_distance_W'] for r in low))}")
        lines.append(f"- {'; '.join(parts)[0].upper()}{'; '.join(parts)[1:]}.")
    starts = _starts_claim(folder, table, rows, x, y)
    if starts is not None:
        lines.append(f"- {starts}")
    if "bias" in (x, y):
        lines.append(_bias_claim(folder, rows, K))
    return lines + [""]


def _seed_values(table: dict[str, Any], row: dict[str, Any] | None, key: str) -> Spread:
    """``key`` of a (configuration) row over its done seeds (one value without seeds)."""
    if row is None:
        return spread([])
    if not table.get("seeds"):
        return spread([_value(row, key)])
    points = {r["point"]: r for r in table["points"]}
    return spread([_value(points[p], key) for p in row["points"] if p in points])


def _spread_cell(table: dict[str, Any], row: dict[str, Any] | None, key: str) -> str:
    """A table cell: the value, or with seeds its mean +- seed standard deviation."""
    if row is None or row["status"] != "done" or not table.get("seeds"):
        return _cell(row, key)
    result = _seed_values(table, row, key)
    if result.sd is None:
        return cell_text(result.mean)
    return f"{cell_text(result.mean)} +- {cell_text(result.sd)}"


def _spread_words(result: Spread) -> str:
    """'0.12 +- 0.01 (3 seeds)', or '0.12' (one seed: the verdict says so)."""
    if result.n < 2:
        return cell_text(result.mean)
    return f"{cell_text(result.mean)} +- {cell_text(result.sd)} ({result.n} seeds)"


def _minority_verdict(mix: Spread, plain: Spread) -> str:
    """Mixup against plain training (the rule of :func:`_imbalance`)."""
    difference = mix.mean - plain.mean
    stronger = ("minority collapse is stronger under mixup (higher cosine)" if difference > 0
                else "minority collapse is weaker under mixup (lower cosine)")
    if abs(difference) < ALIKE:
        return f"alike (within {ALIKE:g})"
    split = resolved(mix, plain)
    if split is None:  # one seed on a side: no seed spread to weigh the difference against
        return f"{stronger} (one seed, no seed spread)"
    error = combined_se(mix, plain)
    if split:
        return (f"{stronger}: the difference {cell_text(difference)} exceeds {RESOLUTION:g} "
                f"combined standard errors ({cell_text(error)})")
    return (f"not resolved: the difference {cell_text(difference)} is within {RESOLUTION:g} "
            f"combined standard errors ({cell_text(error)})")


def _imbalance(root: Path, name: str, table: dict[str, Any], K: int | None) -> list[str]:
    """Mixup against plain training at each imbalance ratio. Rule: alike within 1e-3; else,
    with seeds, stronger or weaker collapse only where the difference of the means exceeds
    twice its combined standard error (else not resolved); with one seed, by the sign of the
    difference, said to rest on one seed."""
    rows = mean_rows(table)
    folder = layout.sweep_dir(root, name)
    kinds = {r["point"]: ("plain" if is_plain(c) else "mixup")
             for r in rows if (c := point_config(folder, r)) is not None}
    etf = -1.0 / (K - 1) if K else None
    groups = [f for f in table["swept"] if f not in ("imbalance_ratio", "lams")]
    combos = _levels([{"_": [r.get(f) for f in groups]} for r in rows], "_")
    seeds = table.get("seeds")
    lines = []
    if seeds:
        lines += [(f"Each configuration ran with {len(seeds)} seeds ({', '.join(map(str, seeds))});"
                   " a cell is the mean +- the seed standard deviation "
                   f"([`sweep/{name}/sweep_mean.csv`](sweep/{name}/sweep_mean.csv)). Rule: "
                   f"mixup and plain training are alike within {ALIKE:g}; otherwise the "
                   f"difference of their means counts only beyond {RESOLUTION:g} combined "
                   "standard errors sqrt(se_a^2 + se_b^2), se = sd / sqrt(n)."), ""]
    else:
        lines += [(f"One seed per configuration: one seed, no seed spread (`ufm reproduce "
                   f"--seeds N` runs N). Rule: alike within {ALIKE:g}, otherwise by the sign "
                   "of the difference, which one seed cannot tell from seed-to-seed "
                   "variation."), ""]
    for combo in combos:
        chosen = [r for r in rows if [r.get(f) for f in groups] == combo]
        label = ", ".join(f"{f} = {tick_label(f, v)}" for f, v in zip(groups, combo))
        if label:
            lines += [f"{label}:", ""]
        lines += ["| rho | minority cosine, mixup | minority cosine, plain | ETF distance of W, "
                  "mixup | ETF distance of W, plain |", "|---|---|---|---|---|"]
        ratios = _levels(chosen, "imbalance_ratio")
        claims = []
        for rho in ratios:
            at = [r for r in chosen if r.get("imbalance_ratio") == rho]
            by = {k: next((r for r in at if kinds.get(r["point"]) == k), None)
                  for k in ("mixup", "plain")}
            lines.append(f"| {tick_label('imbalance_ratio', rho)} | "
                         f"{_spread_cell(table, by['mixup'], 'minority_cosine')} | "
                         f"{_spread_cell(table, by['plain'], 'minority_cosine')} | "
                         f"{_spread_cell(table, by['mixup'], 'etf_distance_W')} | "
                         f"{_spread_cell(table, by['plain'], 'etf_distance_W')} |")
            mix, plain = (_seed_values(table, by[k], "minority_cosine")
                          if by[k] is not None and by[k]["status"] == "done" else spread([])
                          for k in ("mixup", "plain"))
            if mix.mean is None or plain.mean is None:
                claims.append(f"at rho = {tick_label('imbalance_ratio', rho)} a point is missing "
                              "or unfinished")
                continue
            claims.append(
                f"at rho = {tick_label('imbalance_ratio', rho)} the minority cosine is "
                f"{_spread_words(mix)} for mixup and {_spread_words(plain)} for plain training, "
                f"against -1/(K-1) = {cell_text(etf)}: {_minority_verdict(mix, plain)}")
        lines += [""] + [f"- {c[0].upper()}{c[1:]}." for c in claims] + [""]
    return lines


def sweep_section(root: str | Path) -> list[str]:
    """The report's section on ``DIR/sweep`` (empty of claims when the stage has not run)."""
    root = Path(root)
    summary_path = layout.stage_dir(root, layout.SWEEP) / layout.SUMMARY
    lines = [TITLE, ""]
    if not summary_path.is_file():
        return lines + ["The sweep stage has not run in this folder.", ""]
    summary = read_json(summary_path)
    lines += [
        (f"Grids of learned-classifier UFM solves ({summary['sweep_grid']} grid), run by "
         "`ufm.sweep` in this process; each point is an ordinary `ufm solve` folder under "
         f"`sweep/<name>/points/`. A learned W counts as a simplex ETF when its ETF distance "
         f"(`ufm.etf_distance`) is under {ETF_THRESHOLD:g}. Minority cosine: the mean cosine "
         "between distinct minority rows of W, -1/(K-1) for a simplex ETF, 1 once they have "
         "collapsed onto one direction. Evidence: each number is one deterministic solve to "
         "the grid's gradient tolerance, with no sampling error; where the learned problem has "
         "several stationary points (d < K - 1), the lowest objective of several random starts "
         "(`starts`), with the number that reached it; where seeds compare two settings "
         "(the imbalance grid), their spread, which with every class pair on the lam grid "
         "comes from the initial classifier alone, that is from where each solve stopped."),
        "",
    ]
    for name, info in summary["sweeps"].items():
        folder = layout.sweep_dir(root, name)
        table = read_sweep(folder)
        config = read_json(folder / "config.json")
        K = sweep_K(folder, table["points"])
        base = ", ".join(f"{k} = {tick_label(k, v)}" for k, v in config["base"].items()
                         if k not in ("device", "classifier"))
        counts = ", ".join(f"{n} {s}" for s, n in table["counts"].items() if n)
        lines += [
            f"### `{name}`: {info['question']}",
            "",
            (f"Swept: {' x '.join(table['swept'])} ({counts}; table "
             f"[`sweep/{name}/sweep.csv`](sweep/{name}/sweep.csv)); fixed: {base}."),
            "",
        ]
        if "imbalance_ratio" in table["swept"]:
            lines += _imbalance(root, name, table, K)
        elif len(table["swept"]) == 2:
            lines += _two_axis(root, name, table, K)
        lines += _links(root, name)
    return lines
