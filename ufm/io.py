"""Result files: one folder per run, plain formats, written atomically.

Every writer goes through a temporary file in the same folder and ``os.replace``, so a run
that dies never leaves a half-written file under the final name; an OS error on the way is a
:class:`WriteError` naming the file. A run folder counts as complete once its
``summary.json`` exists: jobs write it last.

Before any work a job checks its folder (:func:`check_run_config`): writable, and free or
holding the same configuration; :func:`removed_on_failure` takes back what a run wrote when it
fails before its first result, so nothing is left that blocks a rerun.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

SUMMARY = "summary.json"


_PLAIN = (str, int, bool, type(None))
"""Types that are JSON values as they are (exactly these: subclasses take the checks below)."""


def to_jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays, dataclasses and paths to JSON values.

    Non-finite floats become the strings "nan", "inf", "-inf" so the file stays valid JSON.
    """
    kind = type(value)
    # Plain floats, strings and ints first: almost every value of a results table is one, and
    # metrics.csv is written again after every epoch.
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if kind in _PLAIN:
        return value
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


class WriteError(OSError):
    """An OS error (read-only folder, full disk, no permission) while writing ``filename``.

    Raised by the writers of this module in place of the error of their temporary file, so
    that the message names the file the user asked for: ``cannot write 'run/config.json':
    No space left on device``.
    """

    def __str__(self) -> str:
        return f"cannot write {self.filename!r}: {self.strerror}"


def os_error_text(error: OSError) -> str:
    """One line for an OS error: what could not be done to which file, and why."""
    if isinstance(error, WriteError) or not error.filename:
        return str(error)
    return f"{error.strerror or error}: {str(error.filename)!r}"


@contextmanager
def _naming(path: Path):
    """Re-raise an OS error of the block as a :class:`WriteError` of ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        raise WriteError(error.errno, error.strerror or str(error), str(path)) from error


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; move it into place only on success.

    An OS error on the way is a :class:`WriteError` that names ``path``.
    """
    path = Path(path)
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
    try:
        with _naming(path):
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
    """Rows as CSV: the columns are every key in the order of first appearance, a row without
    one leaves its cell empty. ``ufm train`` rewrites metrics.csv after every epoch, whose rows
    gain a measurement's hundred columns, so the cells are gathered by plain lists (what
    ``csv.DictWriter`` writes, without its per-cell generator)."""
    rows = [dict(to_jsonable(r)) for r in rows]
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        writer.writerows([[row.get(k, "") for k in fields] for row in rows])
    return Path(path)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_npz(path: str | Path, **arrays: Any) -> Path:
    plain = {
        k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in arrays.items()
    }
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
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


def check_writable(path: str | Path) -> Path:
    """Refuse, before any work, an output folder that cannot be written.

    Creates and removes a temporary file in ``path``, or, for a folder yet to be made, in
    its nearest existing parent folder: a real write, which also catches a read-only file
    system and a full disk that permission bits do not show.
    """
    path = check_run_dir(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"cannot make the folder {str(path)!r}: {str(probe)!r} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        raise ValueError(f"cannot write into {str(path)!r}: {error.strerror or error}") from None
    return path


def check_run_config(
    path: str | Path,
    config: Mapping[str, Any],
    what: str,
    *,
    ignore: Iterable[str] = (),
    allowed_names: Iterable[str] = (),
    results: Iterable[str] | None = None,
    force: bool = False,
) -> Path:
    """Refuse, before any work, a folder that holds the results of another configuration.

    ``config`` is the JSON form of the run's configuration, compared with the folder's
    ``config.json`` field by field except the ``ignore`` fields (how it runs, not what it
    computes). A ``config.json`` of another kind of run (each side has fields the other
    lacks) and a non-empty folder without ``config.json`` (other than ``allowed_names``) are
    refused too. ``results`` names the files of a run that hold its results (a summary, a
    checkpoint): a folder of the same kind of run with none of them holds a run that stopped
    before its first result, which any configuration may replace; None: the folder's
    ``config.json`` always counts.
    ``force`` lets the run overwrite any of these. The folder must be writable
    (:func:`check_writable`), forced or not. ``what`` names the run in the message ("a
    solve", "a reproduction").
    """
    path = check_run_dir(path)
    if not force:
        _check_folder_contents(path, config, what, set(ignore), set(allowed_names), results)
    return check_writable(path)


def _check_folder_contents(path: Path, config, what, ignore, allowed_names, results) -> None:
    """The refusals of :func:`check_run_config` other than the path and the permissions."""
    stored_path = path / "config.json"
    hint = "choose another --out, delete that folder, or give --force to overwrite it"
    if stored_path.is_file():
        try:
            stored = read_json(stored_path)
        except ValueError:
            stored = None
        current = to_jsonable(config)
        if not isinstance(stored, dict):
            raise ValueError(f"{str(stored_path)!r} is not a configuration of {what}; {hint}")
        only_stored = set(stored) - set(current) - ignore
        only_current = set(current) - set(stored) - ignore
        if only_stored and only_current:
            raise ValueError(
                f"{str(path)!r} holds another kind of run (its config.json is not that of "
                f"{what}); {hint}"
            )
        if results is not None and not any((path / name).exists() for name in results):
            return  # a run that stopped before its first result: nothing to lose
        differing = sorted(
            k for k in set(stored) | set(current) if k not in ignore and stored.get(k) != current.get(k)
        )
        if differing:
            raise ValueError(
                f"{str(path)!r} holds {what} with another configuration (fields that differ: "
                f"{', '.join(differing)}); {hint}"
            )
    elif path.is_dir() and any(p.name not in allowed_names for p in path.iterdir()):
        raise ValueError(f"{str(path)!r} is a non-empty folder without the config.json of {what}; {hint}")


def prepare_run_dir(path: str | Path) -> Path:
    """Create the run folder; refuse a path that exists and is not a folder.

    An OS error (no permission, a read-only file system) is a :class:`WriteError`.
    """
    path = check_run_dir(path)
    with _naming(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def removed_on_failure(folder: str | Path, keep_if: Callable[[], bool] = lambda: False):
    """If the block raises (Ctrl-C included), remove what it added to ``folder``.

    The entries of ``folder`` that were not there before the block are removed, and the
    folder itself if the block made it and it is left empty, so that a run that fails
    before its first result leaves nothing that blocks a rerun. ``keep_if()``, asked after
    the failure, keeps everything (a checkpoint was written: the run can be continued).
    """
    folder = Path(folder)
    made = not folder.exists()
    before = set() if made else {p.name for p in folder.iterdir()}
    try:
        yield folder
    except BaseException:
        if not keep_if():
            _remove_new_entries(folder, before, made)
        raise


def _remove_new_entries(folder: Path, before: set[str], made: bool) -> None:
    """Remove the entries of ``folder`` not named in ``before`` (and ``folder`` if ``made``
    and empty); errors while removing are ignored, the original failure is what counts."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name in before:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if made:
        try:
            folder.rmdir()
        except OSError:
            pass


def is_complete(path: str | Path) -> bool:
    """A run folder is complete once its summary.json has been written."""
    return (Path(path) / SUMMARY).is_file()
