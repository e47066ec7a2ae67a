"""The sweep's table: ``DIR/sweep.csv`` and ``DIR/sweep.json``, one row per point.

Each row holds the point's name and folder (relative to DIR), its swept values, its status
(``done``, ``failed`` with the error message, ``interrupted``: started, stopped before it
finished, resumed by the next call; ``pending``: not started) and the summary numbers of its
run (a summary key that is also a field name gets ``final_``: ``final_loss``). ``sweep.json`` also holds the job, the swept fields and the status counts, so that
figures can be drawn from a sweep folder without reading the points' configurations. Both
files are written atomically, after every point that finishes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..io import SUMMARY, read_json, write_csv, write_json
from .point_folders import POINTS
from .spec import JOBS

TABLE_JSON = "sweep.json"
TABLE_CSV = "sweep.csv"
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


def write_table(out: str | Path, job: str, fields: list[str], rows: list[dict[str, Any]]) -> None:
    """Write ``sweep.json`` and ``sweep.csv`` (lists in the CSV as JSON text)."""
    out = Path(out)
    counts = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
    write_json(out / TABLE_JSON, {"job": job, "swept": fields, "counts": counts, "points": rows})
    flat = [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()}
            for row in rows]
    write_csv(out / TABLE_CSV, flat)


def read_table(out: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep folder: job, swept fields, counts and rows."""
    path = Path(out) / TABLE_JSON
    if not path.is_file():
        raise ValueError(f"{str(out)!r} holds no sweep (no {TABLE_JSON})")
    return read_json(path)
