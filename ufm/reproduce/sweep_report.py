"""The report's section on the sweep stage: when does a learned classifier become an ETF?

Every number is read from the sweeps' tables (``sweep/<name>/sweep.json``, one row per
point) and, for mixup against plain training, the points' ``config.json``
(:mod:`ufm.plots.sweep_files`); each claim is stated with its numbers, whatever they are.
A sweep with seeds is read per configuration, as the mean over its seeds
(:func:`ufm.plots.sweep_files.mean_rows`); where the imbalance sweep compares mixup with
plain training, each side is its mean +- seed standard deviation, and a difference counts
only beyond twice its combined standard error (:func:`ufm.seeds.resolved`). With one seed
the comparison says so: one seed, no seed spread.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..io import read_json
from ..plots.phase import SWEEP_FIGURES, cell_text, tick_label
from ..plots.sweep_files import is_plain, mean_rows, point_config, read_sweep, sweep_K
from ..seeds import RESOLUTION, Spread, combined_se, resolved, spread
from . import layout

TITLE = "## When does a learned classifier become an ETF (docs/theory.md, section 4)"
# A learned W counts as a simplex ETF below this ETF distance (the quick solves stop at
# gradient norm 1e-6, which leaves distances near 1e-5).
ETF_THRESHOLD = 1e-3
# Two minority cosines this close are alike, however small their seed spread.
ALIKE = 1e-3


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


def _etf_claim(field: str, value: Any, rows, x: str) -> str:
    """Where, along ``x``, the learned W is an ETF for ``field = value``."""
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
                 "common row offset)")
    if failed:
        text += f"; {len(failed)} point(s) {', '.join(sorted({r['status'] for r in failed}))}"
    return f"{head}: {text}."


def _two_axis(root: Path, name: str, table: dict[str, Any], K: int | None) -> list[str]:
    x, y = table["swept"]
    rows = mean_rows(table)
    xs, ys = _levels(rows, x), _levels(rows, y)
    header = [f"{y} \\ {x}"] + [tick_label(x, v) for v in xs]
    lines = ["ETF distance of the learned W:", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for vy in ys:
        cells = [_cell(_find(rows, **{x: vx, y: vy})) for vx in xs]
        lines.append("| " + " | ".join([tick_label(y, vy), *cells]) + " |")
    lines += [""]
    lines += [f"- {_etf_claim(x, vx, [r for r in rows if r.get(x) == vx], y)}" for vx in xs]
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
         "collapsed onto one direction."),
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
