"""Result files: one folder per run, plain formats, written atomically.

Every writer goes through a temporary file in the same folder and ``os.replace``, so a run
that dies never leaves a half-written file under the final name. A run folder counts as
complete once its ``summary.json`` exists: jobs write it last.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

SUMMARY = "summary.json"


def to_jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays, dataclasses and paths to JSON values.

    Non-finite floats become the strings "nan", "inf", "-inf" so the file stays valid JSON.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    return value


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(tmp)
        # mkstemp creates the file 0600; give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str | Path, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    return Path(path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    rows = [dict(to_jsonable(r)) for r in rows]
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_npz(path: str | Path, **arrays: Any) -> Path:
    plain = {
        k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in arrays.items()
    }
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:
            np.savez(handle, **plain)
    return Path(path)


def save_torch(path: str | Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def check_run_dir(path: str | Path) -> Path:
    """Refuse, before any work, a run folder path that exists and is not a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output path {str(path)!r} exists and is not a directory")
    return path


def check_run_config(
    path: str | Path,
    config: Mapping[str, Any],
    what: str,
    *,
    ignore: Iterable[str] = (),
    allowed_names: Iterable[str] = (),
    force: bool = False,
) -> Path:
    """Refuse, before any work, a folder that holds the results of another configuration.

    ``config`` is the JSON form of the run's configuration, compared with the folder's
    ``config.json`` field by field except the ``ignore`` fields (how it runs, not what it
    computes). A non-empty folder without ``config.json`` (other than ``allowed_names``) is
    refused too. ``force`` lets the run overwrite either. ``what`` names the run in the
    message ("a solve", "a reproduction").
    """
    path = check_run_dir(path)
    if force:
        return path
    stored_path = path / "config.json"
    hint = "choose another --out, delete that folder, or give --force to overwrite it"
    if stored_path.is_file():
        stored, current = read_json(stored_path), to_jsonable(config)
        skip = set(ignore)
        differing = sorted(
            k for k in set(stored) | set(current) if k not in skip and stored.get(k) != current.get(k)
        )
        if differing:
            raise ValueError(
                f"{str(path)!r} holds {what} with another configuration (fields that differ: "
                f"{', '.join(differing)}); {hint}"
            )
    elif path.is_dir() and any(p.name not in set(allowed_names) for p in path.iterdir()):
        raise ValueError(f"{str(path)!r} is a non-empty folder without the config.json of {what}; {hint}")
    return path


def prepare_run_dir(path: str | Path) -> Path:
    """Create the run folder; refuse a path that exists and is not a folder."""
    path = check_run_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_complete(path: str | Path) -> bool:
    """A run folder is complete once its summary.json has been written."""
    return (Path(path) / SUMMARY).is_file()
