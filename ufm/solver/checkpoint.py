"""Checkpoints of a UFM solve: what ``checkpoint.pt`` holds, when it is written, and resuming.

A checkpoint is one ``torch.save`` dict with the keys ``iteration``, ``W``, ``b``,
``history``, ``seconds`` (from the :class:`~ufm.solver.state.RunState`) and ``memory``,
``features``, ``current``, ``gd_state`` (from the method; None where the method has no such
part). It is written atomically every ``checkpoint_every`` seconds and whenever the run
stops, Ctrl-C and SIGTERM included. Resuming restores the run state and the method's state
exactly, so a resumed run is bit-identical to an uninterrupted one: the measured iterate is
kept (the resumed loop records it again without recomputing it), as a dict
(:meth:`~ufm.solver.state.Iterate.to_checkpoint`), and only the inner solver's statistics,
which describe work already done, are stripped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..io import prepare_run_dir, save_torch
from .state import Iterate, RunState

CHECKPOINT = "checkpoint.pt"
METHOD_KEYS = ("memory", "features", "current", "gd_state")


class Checkpoints:
    """Where and how often one solve saves its checkpoint (nowhere when ``folder`` is None).

    Parameters
    ----------
    folder : the run folder that holds ``checkpoint.pt``, or None for no checkpoints.
    every : seconds between two checkpoints written during the run.
    """

    def __init__(self, folder: str | Path | None, every: float):
        self.folder = None if folder is None else Path(folder)
        self.every = every
        self.last_saved = time.perf_counter()

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def timer_from(self, now: float) -> None:
        """Count the time to the next checkpoint from ``now`` (the start of the run)."""
        self.last_saved = now

    def maybe_save(self, state: RunState, method) -> None:
        """Save if ``every`` seconds have passed since the last checkpoint."""
        if self.folder is None:
            return
        now = time.perf_counter()
        if now - self.last_saved >= self.every:
            self.save(state, method)
            self.last_saved = now

    def save(self, state: RunState, method) -> None:
        """Write ``folder/checkpoint.pt`` (atomically) from the run state and the method."""
        prepare_run_dir(self.folder)
        save_torch(self.folder / CHECKPOINT, checkpoint_contents(state, method))

    def resume(self, state: RunState, method) -> None:
        """Restore the run state and the method from ``folder/checkpoint.pt``."""
        if self.folder is None:
            raise ValueError("resume=True needs checkpoint_dir (the folder of the interrupted run)")
        path = self.folder / CHECKPOINT
        if not path.is_file():
            raise ValueError(f"no checkpoint to resume from: {str(path)!r} does not exist")
        contents = torch.load(path, map_location=state.problem.device, weights_only=False)
        restore_contents(state, method, contents)


def checkpoint_contents(state: RunState, method) -> dict[str, Any]:
    """The checkpoint dict: the run state, then the method's parts (stats stripped)."""
    contents: dict[str, Any] = {
        "iteration": state.iteration,
        "W": state.W,
        "b": state.b,
        "history": state.history,
        "last_step": state.last_step,
        "seconds": state.seconds(),
    }
    contents.update(dict.fromkeys(METHOD_KEYS))
    contents.update(method.state_dict())
    current = contents["current"]
    contents["current"] = None if current is None else current.to_checkpoint()
    return contents


def restore_contents(state: RunState, method, contents: dict[str, Any]) -> None:
    """Inverse of :func:`checkpoint_contents`, for a run about to continue the loop."""
    state.iteration = contents["iteration"]
    state.W, state.b = contents["W"], contents["b"]
    state.history = contents["history"]
    state.seconds_before = contents["seconds"]
    saved = contents["current"]
    method.load_state_dict({**contents, "current": None if saved is None else Iterate.from_checkpoint(saved)})
    # the record of the step taken before the save (checkpoints of older versions have none)
    state.last_step = contents.get("last_step") or {}
    if state.history and state.history[-1]["iteration"] == state.iteration:
        row = state.history.pop()  # the resumed loop records this iterate again, and its step
        state.last_step = {key: value for key, value in row.items() if key.startswith("step_")}

