"""The run folders of a sweep's points, ``DIR/points/<name>``: reuse, resume or start afresh.

A point's folder is an ordinary run folder of its job. On a second call of the sweep a point
is

* ``"done"`` when its folder is complete (``summary.json``) for the same configuration;
* ``"resume"`` when an interrupted attempt left a checkpoint for the same configuration
  (and no ``error.txt``);
* ``"fresh"`` otherwise: a failed attempt, another configuration or nothing yet (the folder
  is cleared before the point runs again).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..config import config_to_dict
from ..io import is_complete, read_json
from ..solver.run_folder import EXECUTION_FIELDS
from .point_job import ERROR_FILE

POINTS = "points"
# fields of a train run that change how it runs, not what it computes
TRAIN_EXECUTION_FIELDS = ("device", "threads")
SOLVE_CHECKPOINT = "checkpoint.pt"
TRAIN_CHECKPOINT = Path("checkpoints") / "last.pt"


def point_folder(out: str | Path, name: str) -> Path:
    return Path(out) / POINTS / name


def stored_config(job: str, folder: Path) -> dict[str, Any] | None:
    """The configuration a point's folder was run with, or None."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except ValueError:
        return None
    return data.get("config") if job == "train" else data


def same_config(job: str, folder: Path, config: Any) -> bool:
    stored = stored_config(job, folder)
    if stored is None:
        return False
    current = config_to_dict(config)
    ignore = set(EXECUTION_FIELDS if job == "solve" else TRAIN_EXECUTION_FIELDS)
    keys = (set(stored) | set(current)) - ignore
    return _plain(stored, keys) == _plain(current, keys)


def _plain(data: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    # JSON round trip: tuples and lists, ints and floats compare as they are stored
    return {k: json.loads(json.dumps(data.get(k))) for k in keys}


def folder_state(job: str, folder: Path, config: Any) -> str:
    """``"done"``, ``"resume"`` or ``"fresh"`` (module docstring)."""
    if not folder.is_dir():
        return "fresh"
    matches = same_config(job, folder, config)
    if matches and is_complete(folder):
        return "done"
    checkpoint = folder / (SOLVE_CHECKPOINT if job == "solve" else TRAIN_CHECKPOINT)
    if matches and checkpoint.is_file() and not (folder / ERROR_FILE).exists():
        return "resume"
    return "fresh"


def clear_folder(folder: Path) -> None:
    """Remove what an earlier attempt left in a point's folder (a point's folder only)."""
    if folder.is_dir() and folder.parent.name == POINTS:
        shutil.rmtree(folder)
