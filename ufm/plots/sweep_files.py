"""Reading a sweep folder (``ufm sweep``) for the phase figures: its table and its points.

A sweep folder holds ``sweep.json`` (:mod:`ufm.sweep.table`: job, swept fields, status
counts, one row per point; with seeds also the ``seeds`` and one row per configuration over
them, ``configurations``), its own ``config.json`` (job, base, grid, executor) and one run
folder per point (``row["folder"]``, with the point's ``config.json``). Plotting does not
import the sweep engine (it imports the solver); a test holds these names equal to its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import SUMMARY, read_json
from ..reproduce import layout

TABLE = "sweep.json"  # ufm.sweep.table.TABLE_JSON
SWEEP_CONFIG = "config.json"
POINT_CONFIG = "config.json"
MEAN = "_mean"  # a column's seed mean, ufm.sweep.table.seed_rows
FIGURES_FOLDER = "figures"  # where draw_sweep_figures writes by default


def is_sweep(folder: str | Path) -> bool:
    """Whether ``folder`` holds a sweep's table (``sweep.json``)."""
    return (Path(folder) / TABLE).is_file()


def read_sweep(folder: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep folder (job, swept fields, counts, rows), or ValueError."""
    if not is_sweep(folder):
        raise ValueError(
            f"{str(folder)!r} holds no sweep (no {TABLE}; create one with: ufm sweep --config "
            "FILE --out DIR)"
        )
    return read_json(Path(folder) / TABLE)


def seed_count(table: dict[str, Any]) -> int:
    """How many seeds each configuration of the sweep runs with (1 without seeds)."""
    return len(table.get("seeds") or [None])


def mean_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a figure or a report draws, one per configuration: a sweep's points, or for
    a sweep with seeds its configurations, each with its seed mean under the column's own
    name (``etf_distance_W`` for ``etf_distance_W_mean``, beside ``etf_distance_W_sd``),
    named ``point`` after the configuration and with the first seed's ``folder``."""
    if not table.get("seeds"):
        return list(table["points"])
    rows = []
    for row in table.get("configurations", []):
        means = {key[: -len(MEAN)]: value for key, value in row.items() if key.endswith(MEAN)}
        rows.append({**row, **means, "point": row["configuration"], "folder": row["folders"][0]})
    return rows


def point_config(folder: str | Path, row: dict[str, Any]) -> dict[str, Any] | None:
    """The ``config.json`` of a row's point folder, or None where it has none yet."""
    path = Path(folder) / row["folder"] / POINT_CONFIG
    return read_json(path) if path.is_file() else None


def point_summary(folder: str | Path, row: dict[str, Any]) -> dict[str, Any] | None:
    """The ``summary.json`` of a row's point folder, or None where it has none (yet)."""
    path = Path(folder) / row["folder"] / SUMMARY
    return read_json(path) if path.is_file() else None


def start_counts(folder: str | Path, row: dict[str, Any]) -> tuple[int, int] | None:
    """(starts that reached the lowest objective, starts) of a point solved from several
    random starts (``ufm.solver.random_starts``: its summary's ``starts_reached`` and
    ``starts``), else None (one start, or no summary)."""
    summary = point_summary(folder, row) if row.get("status") == "done" else None
    if not summary or not isinstance(summary.get("starts"), int) or summary["starts"] < 2:
        return None
    return int(summary["starts_reached"]), int(summary["starts"])


def is_plain(config: dict[str, Any]) -> bool:
    """Whether a point trains on pure samples only: a solve whose lam grid holds only 0s and
    1s (``lams = [1.0]``) and no Beta draws, or a training run with ``alpha = 0`` (ERM);
    otherwise it trains with mixup."""
    if "lams" not in config:  # a ufm train configuration: mixup unless alpha = 0
        return not config.get("alpha")
    lams = config.get("lams")
    return (config.get("alpha") is None and lams is not None
            and all(float(v) in (0.0, 1.0) for v in lams))


def sweep_K(folder: str | Path, rows: list[dict[str, Any]]) -> int | None:
    """The number of classes of the sweep: in its base, or in a point's configuration."""
    path = Path(folder) / SWEEP_CONFIG
    if path.is_file():
        base = read_json(path).get("base", {})
        if isinstance(base, dict) and "K" in base:
            return int(base["K"])
    for row in rows:
        config = point_config(folder, row)
        if config is not None and "K" in config:
            return int(config["K"])
    return None


def reproduction_sweeps(root: str | Path) -> list[Path]:
    """The sweep folders of a reproduction's sweep stage, in the stage's order."""
    stage = layout.stage_dir(root, layout.SWEEP)
    if not stage.is_dir():
        return []
    folders = sorted(p for p in stage.iterdir() if is_sweep(p))
    summary = stage / layout.SUMMARY
    if summary.is_file():  # the stage's order, not the alphabet's
        order = list(read_json(summary).get("sweeps", {}))
        folders.sort(key=lambda p: order.index(p.name) if p.name in order else len(order))
    return folders
