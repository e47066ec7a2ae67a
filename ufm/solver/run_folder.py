"""One solve written into its folder, the one way ``ufm solve``, the sweep's solve points and
the reproduction's solver stage all do it.

:func:`run_to_folder` checks everything before any work: the checkpoint interval, the
device, the folder (writable, and free or holding the same configuration, or for a resume
a checkpoint to continue from, :func:`check_resumable`) and the memory the solve needs
(:mod:`.memory_estimate`). It then writes ``config.json``, solves with checkpoints in the
folder (:mod:`.checkpoint`) and writes the result files (:mod:`.results`, ``summary.json``
last). A run that fails before its first checkpoint removes what it wrote; one that a
checkpoint can continue keeps it. A folder that holds ``config.json`` but neither
``summary.json`` nor ``checkpoint.pt`` (a run killed before its first checkpoint) holds no
result, and any configuration may start there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._checks import check_float
from ..config import config_to_dict
from ..devices import resolve_device
from ..io import (
    SUMMARY,
    check_run_config,
    check_writable,
    is_complete,
    prepare_run_dir,
    read_json,
    removed_on_failure,
    to_jsonable,
    write_json,
)
from .checkpoint import CHECKPOINT
from .execution import ExecutionSettings
from .memory_estimate import check_solve_memory
from .problem import UFMConfig
from .results import UFMResult
from .run import solve

# how a solve runs, not what it computes: rerunning into the same folder may change these
EXECUTION_FIELDS = ("device", "parallel", "chunk_size")
# what a resumed run may change besides those: how long it may go on
RESUME_FIELDS = (*EXECUTION_FIELDS, "max_iters", "time_limit")
# stop reasons after which the checkpoint has nothing left to continue
FINISHED = ("converged", "rounding", "stalled", "diverged")
CHECKPOINT_EVERY = 60.0  # seconds between checkpoints
# the files of a folder that hold a solve's results: without them it holds none
RESULT_FILES = (SUMMARY, CHECKPOINT)
# the files a solve writes besides config.json (all replaced by a fresh run)
OUTPUT_FILES = (SUMMARY, CHECKPOINT, "arrays.npz", "history.csv")


def run_to_folder(
    config: UFMConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
    checkpoint_every: float = CHECKPOINT_EVERY,
    keep_checkpoint: bool = False,
    check_memory: bool = True,
    W_init: torch.Tensor | None = None,
    b_init: torch.Tensor | None = None,
    execution: ExecutionSettings | None = None,
) -> UFMResult:
    """Solve ``config`` into the folder ``out``; return the result (module docstring).

    Parameters
    ----------
    config : the solve. With ``resume`` it may differ from the folder's ``config.json`` only
        in :data:`RESUME_FIELDS`; the folder's file is updated to it.
    out : the run folder, made if needed.
    resume : continue from ``out/checkpoint.pt``.
    force : start here even if the folder holds a run of another configuration or other
        files (see :func:`ufm.io.check_run_config`).
    progress, W_init, b_init, execution : as for :func:`ufm.solve` (``execution``: what the solve
        may change in its process; the command line passes
        :data:`~.execution.CLI_EXECUTION`).
    checkpoint_every : seconds between checkpoints, > 0.
    keep_checkpoint : keep ``checkpoint.pt`` when the run finishes (one that stops at
        ``max_iters`` or ``time_limit`` or is interrupted always keeps it, for a resume).
    check_memory : refuse a solve whose memory estimate exceeds the memory available
        (:func:`.memory_estimate.solve_memory`); False runs it anyway.

    Returns
    -------
    The :class:`UFMResult`; when its ``stop_reason`` is ``"interrupted"`` (Ctrl-C, SIGTERM)
    only ``config.json`` and ``checkpoint.pt`` are in the folder, and a call with
    ``resume=True`` continues the run.
    """
    checkpoint_every = check_float("checkpoint_every", checkpoint_every, 0.0, None, low_open=True)
    resolve_device(config.device)  # an unavailable device is refused before any output
    out = Path(out)
    if resume:
        check_resumable(out, config)
        check_writable(out)
    else:
        check_run_config(out, config_to_dict(config), "a solve", ignore=EXECUTION_FIELDS,
                         results=RESULT_FILES, force=force)
    if check_memory:
        check_solve_memory(config)
    if resume:
        return _solve_into(out, config, True, progress, checkpoint_every, keep_checkpoint,
                           W_init, b_init, execution)
    for name in OUTPUT_FILES:  # a fresh run: no file of an earlier one stays beside it
        (out / name).unlink(missing_ok=True)
    with removed_on_failure(out, keep_if=lambda: (out / CHECKPOINT).is_file()):
        return _solve_into(out, config, False, progress, checkpoint_every, keep_checkpoint,
                           W_init, b_init, execution)


def _solve_into(out: Path, config: UFMConfig, resume: bool, progress: bool,
                checkpoint_every: float, keep_checkpoint: bool, W_init, b_init,
                execution: ExecutionSettings | None) -> UFMResult:
    """Write config.json, solve with checkpoints in ``out``, write the results."""
    prepare_run_dir(out)
    write_json(out / "config.json", config_to_dict(config))
    result = solve(config, W_init, b_init, progress=progress, checkpoint_dir=out, resume=resume,
                   checkpoint_every=checkpoint_every, execution=execution)
    if result.stop_reason == "interrupted":
        return result
    result.save(out)
    if result.stop_reason in FINISHED and not keep_checkpoint:
        (out / CHECKPOINT).unlink(missing_ok=True)  # the results hold everything it had
    return result


def check_resumable(out: str | Path, config: UFMConfig | None = None) -> dict:
    """The stored configuration of the solve in ``out``, if a resume can continue it.

    Refuses, saying why, a folder without ``config.json``, a finished run (its checkpoint
    removed), a run that stopped before its first checkpoint, and a ``config`` that differs
    from the stored one in more than :data:`RESUME_FIELDS`.
    """
    out = Path(out)
    stored_path = out / "config.json"
    if not stored_path.is_file():
        raise ValueError(f"cannot resume {str(out)!r}: it holds no solve (no config.json there)")
    if not (out / CHECKPOINT).is_file():
        if is_complete(out):
            stop = read_json(out / SUMMARY).get("stop_reason")
            raise ValueError(
                f"cannot resume {str(out)!r}: the solve there has finished ({stop}) and kept no "
                f"{CHECKPOINT} (--keep-checkpoint keeps it); start a new run with another --out, "
                "or the same --out to solve again"
            )
        raise ValueError(
            f"cannot resume {str(out)!r}: the solve there stopped before its first checkpoint "
            f"(no {CHECKPOINT}); start it again with --out"
        )
    stored = read_json(stored_path)
    if config is not None:
        current = to_jsonable(config_to_dict(config))
        differing = sorted(k for k in set(stored) | set(current)
                           if k not in RESUME_FIELDS and stored.get(k) != current.get(k))
        if differing:
            raise ValueError(
                f"cannot resume {str(out)!r} with another configuration (fields that differ: "
                f"{', '.join(differing)}); a resume may change only {', '.join(RESUME_FIELDS)}"
            )
    return stored
