"""The submitit executors a sweep runs on: ``local``, ``slurm`` and ``debug``.

* ``local``: :class:`LocalSessionExecutor` (submitit's LocalExecutor, each job in a session
  of its own that :meth:`~LocalSessionExecutor.stop` ends), one process per job. It starts
  every job it is given at once, so the sweep hands it at most ``--jobs`` jobs at a time (a new one as soon as
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
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit
from submitit.local.local import LocalJob

from ..solver.chunk_threads import allowed_cpus

EXECUTORS = ("local", "slurm", "debug")
SLURM_COMMANDS = ("sbatch", "srun", "sacct")
LOCAL_TIME_MIN = 7 * 24 * 60  # submitit's local default is 2 minutes: far too short for a run
SLURM_TIME_MIN = 60
JOB_NAME = "ufm-sweep"
STOP_GRACE_S = 10.0  # a stopped local job's time to save its checkpoint before SIGKILL


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
        executor = LocalSessionExecutor(folder)
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


class LocalSessionExecutor(submitit.LocalExecutor):
    """:class:`submitit.LocalExecutor` whose jobs run in sessions of their own, and end with
    :meth:`stop`.

    submitit starts a local job as a controller process (``python -m submitit.local._local``)
    that starts the worker. Both stay in the sweep's process group, so a terminal's Ctrl-C
    reaches them too: each controller printed a traceback, and a worker whose controller died
    first went on with its next point after the sweep had exited. Here each controller leads
    a new session, whose process group also holds its worker and the worker's children: only
    the sweep receives Ctrl-C, and it ends its jobs itself.
    """

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder)
        self._controllers: list[subprocess.Popen] = []

    def _submit_command(self, command: str) -> LocalJob:
        # submitit's LocalExecutor._submit_command and start_controller (submitit 1.5) with
        # one task and start_new_session=True; the setup lines ``exec`` the controller, so the
        # process started here is the controller (its pid names the job, as without setup)
        setup = list(self.parameters.get("setup", ()))
        controller = [sys.executable, "-m", "submitit.local._local", str(self.folder)]
        env = dict(os.environ)
        env.update(
            SUBMITIT_LOCAL_NTASKS="1",
            SUBMITIT_LOCAL_COMMAND=command,
            SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * self.parameters.get("timeout_min", 2.0))),
            SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(self.parameters.get("signal_delay_s", 30))),
            SUBMITIT_LOCAL_NODEID="0",
            SUBMITIT_LOCAL_JOB_NUM_NODES="1",
            SUBMITIT_STDERR_TO_STDOUT="",
            SUBMITIT_EXECUTOR="local",
            CUDA_VISIBLE_DEVICES=",".join(map(str, range(self.parameters.get("gpus_per_node", 0)))),
            SUBMITIT_LOCAL_WITH_SHELL="",
        )
        if setup:
            process = subprocess.Popen(" && ".join(setup + ["exec " + shlex.join(controller)]),
                                       shell=True, env=env, start_new_session=True)
        else:
            process = subprocess.Popen(controller, env=env, start_new_session=True)
        self._controllers.append(process)
        return LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=[0])

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """End every job still running, with its worker and the worker's children.

        SIGTERM to each controller, which passes it on to its worker: a solve stops at its
        next iteration and saves its checkpoint, and :func:`.point_job.run_points` starts no
        further point. ``grace_s`` seconds later SIGKILL goes to each job's process group,
        what is left of it. A controller is reaped only after that: until then its pid, which
        is the group's id, cannot be taken by another process.
        """
        unreaped = [p for p in self._controllers if p.returncode is None]
        running = [p for p in unreaped if not _has_exited(p.pid)]
        for process in running:
            _send(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(not _has_exited(p.pid) for p in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        for process in unreaped:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is gone already
            process.wait()


def _has_exited(pid: int) -> bool:
    """Whether child ``pid`` has exited (or was reaped), without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _send(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass
