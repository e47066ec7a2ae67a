"""What a sweep is: one job's ``[base]`` fields, a ``[grid]`` of values, ``[executor]`` settings.

A sweep file (TOML) reads::

    [base]                 # the fields of one job; job = "solve" (default) or "train"
    job = "solve"
    K = 3
    classifier = "learned"
    seeds = 3              # optional: every point once per seed (here 0, 1, 2; or a list)

    [grid]                 # field = [values]; the sweep is their Cartesian product
    lam_H = [1e-3, 5e-3]
    loss = ["ce", "mse"]

    [executor]             # optional, SLURM settings (time also bounds a local point)
    partition = "gpu"
    time = 60              # minutes per job
    points_per_job = 1     # points one job runs in turn (default: local N jobs share them all)

:func:`load_sweep` reads and checks the file; :meth:`SweepSpec.points` builds and validates
the configuration of every point (:class:`ufm.UFMConfig` or :class:`ufm.nets.TrainConfig`)
before anything runs, and names each point after its swept values (``lam_H=0.001,loss=ce``).

``seeds`` (beside ``job``, a setting of the sweep rather than a field of one job) runs every
configuration of the grid once per seed: N (an integer >= 1) means the seeds 0, ..., N - 1,
a list names them (distinct integers >= 0; :func:`ufm.seeds.seed_list`). The points of one
configuration differ only in their ``seed`` and follow each other (the seed varies
fastest), each named with it (``lam_H=0.001,loss=ce,seed=2``); the field ``seed`` may then
be neither in ``[base]`` nor in ``[grid]``. The table gives the points one row each and,
per configuration, the seed mean, standard deviation, standard error and count of every
summary number (:mod:`.table`). A sweep without ``seeds`` is what it always was: its points
carry ``[base]``'s seed (or the field's default) and their names no seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import config_from_dict
from ..nets.config import TrainConfig
from ..seeds import seed_list
from ..solver.problem import UFMConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

JOBS: dict[str, type] = {"solve": UFMConfig, "train": TrainConfig}
SECTIONS = ("base", "grid", "executor")
# [executor] settings: name -> accepted types (SLURM names; time in minutes)
EXECUTOR_SETTINGS: dict[str, tuple[type, ...]] = {
    "partition": (str,),
    "time": (int,),
    "cpus_per_task": (int,),
    "gpus_per_node": (int,),
    "mem_gb": (int, float),
    "array_parallelism": (int,),
    "account": (str,),
    "qos": (str,),
    "constraint": (str,),
    "setup": (list,),
    "points_per_job": (int,),
}
MAX_NAME = 150  # longer point names are cut and get a hash of the whole name


@dataclass
class Point:
    """One point of a sweep: its folder name, its swept values and its validated configuration."""

    name: str
    values: dict[str, Any]
    config: Any


@dataclass
class SweepSpec:
    """A sweep: the ``job`` kind, the fields shared by all points, the grid, executor settings,
    and the ``seeds`` each configuration of the grid runs with (None: one run per
    configuration, no seed added; else N or a list, kept as the list of seeds)."""

    job: str = "solve"
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)
    seeds: Any = None

    def __post_init__(self) -> None:
        if self.seeds is not None:
            self.seeds = seed_list(self.seeds, "[base] seeds")
            for where, fields in (("[base]", self.base), ("[grid]", self.grid)):
                if "seed" in fields:
                    raise ValueError(f"seed is in {where} and [base] seeds is given: the seeds "
                                     "setting gives every point its seed; keep one of the two")
        if self.job not in JOBS:
            raise ValueError(f"[base] job must be one of {', '.join(map(repr, JOBS))}, got {self.job!r}")
        cls = JOBS[self.job]
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(self.base) - set(known))
        if unknown:
            raise ValueError(
                f"[base]: unknown field(s) {', '.join(map(repr, unknown))} for a {self.job} job "
                f"({cls.__name__}); allowed: {', '.join(known)}"
            )
        if not self.grid:
            raise ValueError("[grid] is empty: give at least one field = [values]")
        for name, values in self.grid.items():
            if name in ("job", "seeds"):
                raise ValueError(f"{name} cannot be swept: it is a setting of the whole sweep "
                                 "([base])")
            if name not in known:
                raise ValueError(
                    f"[grid]: unknown field {name!r} for a {self.job} job ({cls.__name__}); "
                    f"allowed: {', '.join(known)}"
                )
            if name in self.base:
                raise ValueError(f"field {name!r} is both in [base] and in [grid]; keep one")
            if not isinstance(values, list):
                raise ValueError(f"[grid] {name} must be a list of values, got {values!r}")
            if not values:
                raise ValueError(f"[grid] {name} is an empty list: give at least one value")
            seen = [json.dumps(v, sort_keys=True) for v in values]
            repeated = sorted({v for v in seen if seen.count(v) > 1})
            if repeated:
                raise ValueError(f"[grid] {name} lists {', '.join(repeated)} more than once")
        check_executor_settings(self.executor)

    @property
    def config_class(self) -> type:
        return JOBS[self.job]

    @property
    def swept(self) -> list[str]:
        """The fields that tell the configurations apart: the grid's (``seed`` is not one)."""
        return list(self.grid)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form saved as the sweep folder's ``config.json`` (it pins the folder);
        ``seeds`` only where the sweep has them."""
        data = {"job": self.job, "base": dict(self.base), "grid": dict(self.grid),
                "executor": dict(self.executor)}
        if self.seeds is not None:
            data["seeds"] = list(self.seeds)
        return data

    def points(self) -> list[Point]:
        """Every point in grid order (the last field varies fastest, then the seed), each
        validated.

        A value that its configuration refuses is reported with the point's values, before
        anything runs.
        """
        grid = dict(self.grid)
        if self.seeds is not None:
            grid["seed"] = self.seeds
        fields = list(grid)
        points, names = [], set()
        for combination in itertools.product(*(grid[f] for f in fields)):
            values = dict(zip(fields, combination))
            label = point_name(values)
            try:
                config = config_from_dict(self.config_class, {**self.base, **values})
            except (ValueError, TypeError) as error:
                raise ValueError(f"grid point {label}: {error}") from None
            name = label
            while name in names:  # two values that read the same once made filesystem-safe
                name = f"{label}_{len(names)}"
            names.add(name)
            points.append(Point(name, values, config))
        return points


def check_executor_settings(settings: dict[str, Any]) -> None:
    unknown = sorted(set(settings) - set(EXECUTOR_SETTINGS))
    if unknown:
        raise ValueError(
            f"[executor]: unknown setting(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(EXECUTOR_SETTINGS)}"
        )
    for name, value in settings.items():
        types = EXECUTOR_SETTINGS[name]
        if isinstance(value, bool) or not isinstance(value, types):
            kinds = " or ".join(t.__name__ for t in types)
            raise ValueError(f"[executor] {name} must be {kinds}, got {value!r}")
        if types[0] in (int, float) and value <= 0:
            raise ValueError(f"[executor] {name} must be > 0, got {value!r}")
        if name == "setup" and not all(isinstance(line, str) for line in value):
            raise ValueError(f"[executor] setup must be a list of shell lines, got {value!r}")


def sweep_from_dict(data: dict[str, Any]) -> SweepSpec:
    """A :class:`SweepSpec` from the parsed TOML, refusing unknown sections."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ValueError(
            f"unknown section(s) or key(s) {', '.join(map(repr, unknown))} in the sweep file; "
            f"allowed: {', '.join(f'[{s}]' for s in SECTIONS)}"
        )
    for section in SECTIONS:
        if not isinstance(data.get(section, {}), dict):
            raise ValueError(f"[{section}] must be a table")
    base = dict(data.get("base", {}))
    job = base.pop("job", "solve")
    seeds = base.pop("seeds", None)
    return SweepSpec(job, base, dict(data.get("grid", {})), dict(data.get("executor", {})),
                     seeds)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"sweep file {str(path)!r} is not valid TOML: {error}") from None
    return sweep_from_dict(data)


def format_value(value: Any) -> str:
    """A swept value as it appears in a point's name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value) or "none"
    if isinstance(value, dict):
        return "-".join(f"{k}{format_value(v)}" for k, v in value.items()) or "none"
    if value is None:
        return "none"
    return str(value)


def point_name(values: dict[str, Any]) -> str:
    """``field=value,field=value``, made safe for a folder name (and cut when very long)."""
    name = ",".join(f"{k}={format_value(v)}" for k, v in values.items())
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
    if name.startswith("."):
        name = "_" + name
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME - 11]},{digest}"
    return name
