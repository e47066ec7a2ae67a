"""The sweep's table: ``DIR/sweep.csv`` and ``DIR/sweep.json``, one row per point.

Each row holds the point's name and folder (relative to DIR), its swept values, its status
(``done``, ``failed`` with the error message, ``interrupted``: started, stopped before it
finished, resumed by the next call; ``pending``: not started) and the summary numbers of its
run (a summary key that is also a field name gets ``final_``: ``final_loss``). ``sweep.json`` also holds the job, the swept fields and the status counts, so that
figures can be drawn from a sweep folder without reading the points' configurations. Both
files are written atomically, after every point that finishes.

A sweep with ``seeds`` (:mod:`.spec`) keeps one row per point, that is per seed (its
``seed`` column beside the swept values), and adds one row per configuration of the grid
over its seeds, :func:`seed_rows`, in ``DIR/sweep_mean.csv`` and under ``configurations``
in ``sweep.json`` (which also lists the ``seeds``): the configuration's name (the point name
without the seed) and swept values, its ``seeds``, ``points`` and ``folders``, ``n_done``
(its points that are done), a ``status`` (``done`` once every seed is; else ``failed``,
``interrupted`` or ``pending`` if a seed is, in that order), and for every numeric summary
column ``<column>_mean``, ``<column>_sd`` (the seed standard deviation, ``ddof = 1``),
``<column>_se`` (sd / sqrt(n)) and ``<column>_n`` (n: the done seeds whose value is a
finite number; sd and se are empty below two), :func:`ufm.seeds.spread`. A text column
(:data:`TEXT_COLUMNS`) gives its value where every done seed agrees, else the list of
theirs (None where no seed is done). Without ``seeds`` both files are exactly what they always were, and there is no
``sweep_mean.csv``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..io import SUMMARY, read_json, write_csv, write_json
from ..seeds import spread
from .point_folders import POINTS
from .spec import JOBS, point_name

TABLE_JSON = "sweep.json"
TABLE_CSV = "sweep.csv"
MEAN_CSV = "sweep_mean.csv"
STATUSES = ("done", "failed", "interrupted", "pending")
# summary numbers per job (those a summary lacks are left empty)
SUMMARY_COLUMNS = {
    "solve": (
        "stop_reason", "iterations", "seconds", "loss", "grad_norm", "etf_distance_W",
        "etf_distance_W_centred", "minority_cosine", "etf_cosine", "theory_distance",
        "theory_distance_learned_W",
    ),
    "train": (
        "test_accuracy", "train_accuracy", "ece", "nll", "nc1", "nc2_W", "nc2_M", "nc3", "nc4",
        "etf_distance_W", "minority_cosine", "minority_test_accuracy", "majority_test_accuracy",
        "label_mass_ratio", "amplification", "amplification_error",
        "amplification_systematic", "amplification_theory", "fitted_lam_H", "better_fit", "seconds",
    ),
}
TEXT_COLUMNS = ("stop_reason", "better_fit")  # summary columns that are words, not numbers
SEED_STATISTICS = ("mean", "sd", "se", "n")
# the status of a configuration where not every seed is done: the first its seeds have
FAILING = ("failed", "interrupted", "pending")


def column_name(job: str, key: str) -> str:
    """The table column of summary key ``key``: ``final_<key>`` where a configuration field
    has the same name (the summary's ``loss`` is the objective, the field ``loss`` its name)."""
    return f"final_{key}" if key in _config_fields(job) else key


def _config_fields(job: str) -> set[str]:
    return {f.name for f in dataclasses.fields(JOBS[job])}


def summary_numbers(job: str, folder: Path) -> dict[str, Any]:
    """The summary columns of a point from its ``summary.json`` (empty when there is none)."""
    path = folder / SUMMARY
    summary = read_json(path) if path.is_file() else {}
    return {column_name(job, key): summary.get(key) for key in SUMMARY_COLUMNS[job]}


def make_row(job: str, name: str, values: dict[str, Any], status: str, error: str | None,
             folder: Path) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    numbers = summary_numbers(job, folder) if status == "done" else {
        column_name(job, key): None for key in SUMMARY_COLUMNS[job]}
    return {"point": name, "folder": f"{POINTS}/{name}", **values, "status": status,
            "error": error, **numbers}


def seed_rows(job: str, fields: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration (the values of the swept ``fields``) over the points of its
    seeds, in the order the configurations first appear (the module docstring)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(json.dumps([row.get(f) for f in fields]), []).append(row)
    table = []
    for members in groups.values():
        values = {f: members[0].get(f) for f in fields}
        done = [r for r in members if r["status"] == "done"]
        statuses = {r["status"] for r in members}
        status = "done" if statuses == {"done"} else next(s for s in FAILING if s in statuses)
        entry: dict[str, Any] = {
            "configuration": point_name(values), **values,
            "seeds": [r.get("seed") for r in members], "points": [r["point"] for r in members],
            "folders": [r["folder"] for r in members], "n_done": len(done), "status": status,
        }
        for key in SUMMARY_COLUMNS[job]:
            column = column_name(job, key)
            per_seed = [r.get(column) for r in done]
            if key in TEXT_COLUMNS:
                agree = len({json.dumps(v) for v in per_seed}) == 1
                entry[column] = per_seed[0] if agree else (per_seed or None)
                continue
            result = spread(per_seed)
            entry.update({f"{column}_mean": result.mean, f"{column}_sd": result.sd,
                          f"{column}_se": result.se, f"{column}_n": result.n})
        table.append(entry)
    return table


def _flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a CSV file: lists and dicts as JSON text."""
    return [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()}
            for row in rows]


def write_table(out: str | Path, job: str, fields: list[str], rows: list[dict[str, Any]],
                seeds: list[int] | None = None) -> None:
    """Write ``sweep.json`` and ``sweep.csv`` (lists in the CSV as JSON text), and with
    ``seeds`` (the sweep's) the rows over the seeds (:func:`seed_rows`) in ``sweep.json``
    and ``sweep_mean.csv``."""
    out = Path(out)
    counts = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
    table: dict[str, Any] = {"job": job, "swept": fields, "counts": counts, "points": rows}
    if seeds is not None:
        configurations = seed_rows(job, fields, rows)
        table.update(seeds=list(seeds), configurations=configurations)
    write_json(out / TABLE_JSON, table)
    write_csv(out / TABLE_CSV, _flat(rows))
    if seeds is not None:
        write_csv(out / MEAN_CSV, _flat(configurations))


def read_table(out: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep folder: job, swept fields, counts and rows."""
    path = Path(out) / TABLE_JSON
    if not path.is_file():
        raise ValueError(f"{str(out)!r} holds no sweep (no {TABLE_JSON})")
    return read_json(path)
