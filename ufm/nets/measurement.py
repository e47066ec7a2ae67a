"""The result of one measurement and its folder.

A :class:`Measurement` holds scalars (JSON), tables (CSV) and arrays (npz). Written to a
folder (:meth:`Measurement.save`), it is a *measurement folder*: ``summary.json`` (the
scalars; written last, so its presence marks the folder complete), ``settings.json``, one
CSV per table (``coefficients_vs_lam.csv``, ``theory_vs_lam.csv``, ``reliability.csv`` when
test data were measured, ...) and one npz per group of arrays (``mixed_features.npz`` in the
schema of :mod:`ufm.nets.features_file`, ``cells.npz``, and ``activations_triple.npz`` when a
network was run). ``ufm train`` writes the same files per measured epoch, with the scalars as
``scalars.json``; ``ufm figures --from`` draws any of these folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import (
    SUMMARY,
    check_writable,
    prepare_run_dir,
    removed_on_failure,
    write_csv,
    write_json,
    write_npz,
)

__all__ = ["SETTINGS", "Measurement"]

SETTINGS = "settings.json"


@dataclass
class Measurement:
    """Scalars (JSON), tables (CSV) and arrays (npz) of one measurement, and the settings that
    made it."""

    scalars: dict[str, Any]
    tables: dict[str, list[dict]]
    arrays: dict[str, dict[str, np.ndarray]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        """The scalars: the keys of a ``ufm train`` run's ``summary.json`` that a measurement
        gives (neural collapse, calibration, the cell-mean comparison, ...)."""
        return self.scalars

    def write_files(self, folder: str | Path, scalars_name: str = "scalars.json") -> Path:
        """Tables, arrays, then the scalars as ``scalars_name``, each file atomically."""
        folder = Path(folder)
        for name, rows in self.tables.items():
            write_csv(folder / f"{name}.csv", rows)
        for name, arrays in self.arrays.items():
            write_npz(folder / f"{name}.npz", **arrays)
        write_json(folder / scalars_name, self.scalars)
        return folder

    def save(self, folder: str | Path) -> Path:
        """Write the measurement folder of the module docstring.

        Refuses, before writing anything, a path that is a file, a folder that is not empty
        (another run's results are never overwritten) or one that cannot be written;
        ``summary.json`` is written last. A write that fails removes what was written, so the
        same folder can be given again.
        """
        folder = Path(folder)
        check_new_folder(folder)
        with removed_on_failure(folder):
            prepare_run_dir(folder)
            if self.settings:
                write_json(folder / SETTINGS, self.settings)
            return self.write_files(folder, SUMMARY)


def check_new_folder(folder: str | Path) -> None:
    """Refuse a path that exists as a file, a folder with anything in it, or a folder that
    cannot be written (:func:`ufm.io.check_writable`)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output path {str(folder)!r} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        complete = (folder / SUMMARY).is_file()
        raise ValueError(
            f"{str(folder)!r} already holds "
            + ("a complete measurement (summary.json)" if complete else "files")
            + "; choose a new folder (results are never overwritten)"
        )
    check_writable(folder)
