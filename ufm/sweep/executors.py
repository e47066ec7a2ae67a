"""The submitit executors a sweep runs on: ``local``, ``slurm`` and ``debug``.

* ``local``: :class:`submitit.LocalExecutor`, one process per job. It starts every job it is
  given at once, so the sweep hands it at most ``--jobs`` jobs at a time (a new one as soon as
  one finishes). A process start with its imports costs seconds, more than a small solve, so
  by default the points are dealt round-robin into ``--jobs`` jobs that run their share in
  turn; ``[executor] points_per_job`` makes smaller jobs (1: one process per point, the best
  balance for long points of uneven length). Each solve gets ``cores // jobs`` torch threads.
* ``slurm``: :class:`submitit.SlurmExecutor`, one job per point (``points_per_job``) as one
  job array of which at most ``array_parallelism`` (default ``--jobs``) run at once; the
  ``[executor]`` settings become ``#SBATCH`` lines (:func:`slurm_parameters`). Refused,
  before anything runs, where SLURM's commands are not on PATH.
* ``debug``: :class:`submitit.DebugExecutor`, every point in this process, one after the
  other (for tests and debugging).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import submitit

from ..solver.chunk_threads import allowed_cpus

EXECUTORS = ("local", "slurm", "debug")
SLURM_COMMANDS = ("sbatch", "srun", "sacct")
LOCAL_TIME_MIN = 7 * 24 * 60  # submitit's local default is 2 minutes: far too short for a run
SLURM_TIME_MIN = 60
JOB_NAME = "ufm-sweep"


def check_executor(name: str) -> None:
    """Refuse an unknown executor, or SLURM where its commands are missing."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")
    if name == "slurm":
        missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
        if missing:
            raise ValueError(
                f"--executor slurm: SLURM is not reachable from here ({', '.join(missing)} not "
                "found on PATH; submitit submits with sbatch and follows jobs with sacct). Run "
                "the sweep on a login node of the cluster, or use --executor local"
            )


def available_cores() -> int:
    """The CPUs this process may use (its affinity), or the machine's count where none is known."""
    cpus = allowed_cpus()
    return len(cpus) if cpus is not None else (os.cpu_count() or 1)


def threads_per_point(name: str, settings: dict[str, Any], jobs: int) -> int:
    """torch threads of a solve point: the cores shared by the points that run at once."""
    if name == "slurm":
        return int(settings.get("cpus_per_task", 1))
    if name == "debug":
        return 0  # in this process: leave torch's setting alone
    return max(1, available_cores() // jobs)


def at_once(name: str, jobs: int, settings: dict[str, Any]) -> int | None:
    """How many jobs the sweep hands the executor at a time (None: all, as one array)."""
    if name == "slurm":
        return None
    return 1 if name == "debug" else jobs


def deal(name: str, items: list, jobs: int, settings: dict[str, Any]) -> list[list]:
    """``items`` (the points to run) dealt round-robin into the jobs of executor ``name``."""
    if not items:
        return []
    if "points_per_job" in settings:
        count = -(-len(items) // int(settings["points_per_job"]))
    elif name == "slurm":
        count = len(items)
    elif name == "debug":
        count = 1
    else:
        count = min(jobs, len(items))
    return [items[k::count] for k in range(count)]


def slurm_parameters(settings: dict[str, Any], jobs: int) -> dict[str, Any]:
    """:class:`submitit.SlurmExecutor` parameters from the ``[executor]`` settings."""
    parameters: dict[str, Any] = {
        "job_name": JOB_NAME,
        "time": int(settings.get("time", SLURM_TIME_MIN)),
        "cpus_per_task": int(settings.get("cpus_per_task", 1)),
        "array_parallelism": int(settings.get("array_parallelism", jobs)),
    }
    for key in ("partition", "gpus_per_node", "account", "qos", "constraint", "setup"):
        if key in settings:
            parameters[key] = settings[key]
    if "mem_gb" in settings:
        parameters["mem"] = f"{round(float(settings['mem_gb']) * 1024)}MB"
    return parameters


def make_executor(name: str, folder: str | Path, settings: dict[str, Any], jobs: int):
    """The submitit executor ``name`` writing its logs and pickles under ``folder``."""
    check_executor(name)
    folder = Path(folder) / "%j"
    if name == "debug":
        return submitit.DebugExecutor(folder)
    if name == "local":
        executor = submitit.LocalExecutor(folder)
        parameters: dict[str, Any] = {"timeout_min": int(settings.get("time", LOCAL_TIME_MIN))}
        if "gpus_per_node" in settings:
            parameters["gpus_per_node"] = settings["gpus_per_node"]
        if "setup" in settings:
            parameters["setup"] = settings["setup"]
        executor.update_parameters(**parameters)
        return executor
    executor = submitit.SlurmExecutor(folder)
    executor.update_parameters(**slurm_parameters(settings, jobs))
    return executor
