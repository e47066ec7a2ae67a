"""One sweep point as a submitit job: the run folder that ``ufm solve`` or ``ufm train`` writes.

:func:`run_point` is what each executor runs (in a worker process, a SLURM task or, for the
debug executor, in the sweep's own process), one point or, with :func:`run_points`, several
one after the other. It never raises for a failed run: it returns
``{"status": "failed", "error": ...}`` and leaves the traceback in the point's ``error.txt``,
so the sweep records the message the same way on every executor. Nor for an interrupted
one (Ctrl-C, or the SIGTERM with which a sweep stops its workers): it returns
``{"status": "interrupted"}``, and :func:`run_points` starts no further point.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import torch

from .._interrupts import sigterm_as_interrupt
from ..config import config_from_dict
from ..devices import torch_threads

ERROR_FILE = "error.txt"


def run_point(job: str, config: dict[str, Any], out: str, threads: int = 0,
              resume: bool = False, check_memory: bool = True) -> dict[str, Any]:
    """Run one point into the folder ``out``; ``{"status": "done" | "failed" | "interrupted"}``.

    ``config`` is the JSON form of the point's configuration; ``threads`` the torch CPU
    threads of a solve (a train job has its own ``threads`` field); ``resume`` continues
    from the checkpoint an interrupted attempt left; ``check_memory`` refuses a point whose
    memory estimate exceeds the memory available where it runs.
    """
    folder = Path(out)
    try:
        with torch_threads(threads):
            if job == "solve":
                stop = _solve(config, folder, resume, check_memory=check_memory)
            elif job == "train":
                stop = _train(config, folder, resume, check_memory=check_memory)
            else:
                raise ValueError(f"unknown job {job!r}")
    except KeyboardInterrupt:  # a solve returns "interrupted" itself; a train raises
        return {"status": "interrupted", "pid": os.getpid()}
    except Exception as error:  # the sweep records it; the other points go on
        _write_error(folder)
        message = str(error).strip().splitlines()
        return {"status": "failed", "error": f"{type(error).__name__}: {message[0] if message else ''}",
                "pid": os.getpid()}
    return {"status": "interrupted" if stop == "interrupted" else "done", "pid": os.getpid()}


def _write_error(folder: Path) -> None:
    """Leave the traceback of the failure being handled in ``folder/error.txt``, if the folder
    can be written (the error returned to the sweep says what failed either way)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ERROR_FILE).write_text(traceback.format_exc())
    except OSError:
        pass


def run_points(job: str, items: list[tuple[dict[str, Any], str, bool]],
               threads: int = 0, check_memory: bool = True) -> list[dict[str, Any]]:
    """:func:`run_point` for each ``(config, out, resume)`` in turn, in one process (one
    start-up and one import for several points: a local sweep gives each worker a share).

    An interrupted point ends the share: the sweep is stopping this job, and a point started
    now would run on after it. The results then stop there (the sweep counts the points
    after it as not started). SIGTERM interrupts as Ctrl-C does (submitit's worker ignores
    it otherwise).
    """
    results: list[dict[str, Any]] = []
    with sigterm_as_interrupt():
        try:
            for config, out, resume in items:
                results.append(run_point(job, config, out, threads, resume, check_memory))
                if results[-1]["status"] == "interrupted":
                    break
        except KeyboardInterrupt:  # between two points: the next one does not start
            pass
    return results


def _solve(data: dict[str, Any], out: Path, resume: bool, check_memory: bool = True) -> str:
    """What ``ufm solve --out`` does (``--resume`` when ``resume``), without printing.

    The folder is the point's own: another configuration in it is replaced (the sweep
    cleared what it could not reuse).
    """
    from ..solver import CLI_EXECUTION, UFMConfig, run_to_folder

    config = config_from_dict(UFMConfig, data)
    result = run_to_folder(config, out, resume=resume, force=True, check_memory=check_memory,
                           execution=CLI_EXECUTION)
    return result.stop_reason


def _train(data: dict[str, Any], out: Path, resume: bool, check_memory: bool = True) -> str:
    """What ``ufm train --out`` does (``--resume`` when ``resume``), without a progress bar."""
    from ..nets import TrainConfig, run_training

    summary = run_training(config_from_dict(TrainConfig, data), out, resume=resume,
                           progress=False, check_memory=check_memory)
    return "done" if summary else "interrupted"
