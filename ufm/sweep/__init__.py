"""Sweeps: one job (``ufm solve`` or ``ufm train``) over the Cartesian product of a grid.

``ufm sweep --config sweep.toml --out DIR`` (:mod:`ufm.commands.sweep`) or, from Python::

    from ufm.sweep import load_sweep, run_sweep
    rows = run_sweep(load_sweep("sweep.toml"), "results/sweep", executor="local", jobs=2)

The engine is submitit (:mod:`.executors`); each point is an ordinary run folder
(:mod:`.point_job`, :mod:`.point_folders`); the table of all points is ``sweep.csv`` and
``sweep.json`` (:mod:`.table`). ``[base] seeds = N`` (or a list of seeds) runs every
configuration of the grid once per seed (:mod:`.spec`), and ``sweep_mean.csv`` then gives
per configuration the seed mean, standard deviation, standard error and count of every
summary number, beside the per-seed rows of ``sweep.csv``.
"""

from .driver import run_sweep
from .executors import EXECUTORS
from .spec import Point, SweepSpec, load_sweep, point_name, sweep_from_dict
from .table import read_table

__all__ = ["EXECUTORS", "Point", "SweepSpec", "load_sweep", "point_name", "read_table",
           "run_sweep", "sweep_from_dict"]
