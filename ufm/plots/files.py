"""Reading the result files of a reproduction folder for the figures.

The files are those of :mod:`ufm.reproduce.layout`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..reproduce import layout
from ..io import read_csv, read_json


def _number(text: str) -> float:
    return float(text) if text != "" else np.nan


def read_table(path: str | Path, **where: Any) -> dict[str, np.ndarray]:
    """A CSV file as columns: numeric columns as float arrays (empty cells are NaN), others as
    string arrays; only the rows whose columns equal the ``where`` values."""
    rows = read_csv(path)
    for key, value in where.items():
        rows = [r for r in rows if _matches(r[key], value)]
    if not rows:
        raise ValueError(f"{str(path)!r} holds no rows with {where}")
    columns = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        try:
            columns[key] = np.asarray([_number(v) for v in values])
        except ValueError:
            columns[key] = np.asarray(values)
    return columns


def _matches(text: str, value: Any) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return text == str(value)


def read_projection(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def stage_summary(root: str | Path, stage: str) -> dict[str, Any]:
    return read_json(layout.stage_dir(root, stage) / layout.SUMMARY)


def reproduction_config(root: str | Path) -> dict[str, Any]:
    return read_json(Path(root) / layout.CONFIG)


def network_measurement(root: str | Path, name: str) -> Path:
    """The final measurement folder of a network run of the reproduction."""
    epochs = stage_summary(root, layout.NETWORKS)["epochs"]
    return layout.final_measurement(layout.network_run(root, name), epochs)


def network_label(name: str) -> str:
    """'mixup_fixed_etf' -> 'mixup, fixed ETF W'."""
    training, classifier = name.split("_", 1)
    kind = "fixed ETF" if classifier == "fixed_etf" else "learned"
    return f"{'mixup' if training == 'mixup' else 'ERM'}, {kind} W"
