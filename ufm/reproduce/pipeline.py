"""The reproduction, stage by stage: theory -> solver -> networks -> sweep -> figures -> report.

Every stage writes its own subfolder of the output folder and, last, its ``summary.json``
(:mod:`ufm.reproduce.layout`); a stage whose summary exists is reused, not redone, and inside the
solver and network stages every finished run is reused and an interrupted one resumed from
its checkpoint. So running the same command again after an interruption (Ctrl-C, SIGTERM, a
crash) continues where it stopped. A lock file keeps a second reproduction out of a folder
while the first one runs. The output folder's ``config.json`` pins the
configuration: another configuration in the same folder is refused, except for the
execution fields (device, threads, dpi), which do not change what is computed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import layout
from ..config import config_to_dict
from ..devices import resolve_device
from ..io import atomic_path, check_run_config, prepare_run_dir, read_json, write_json
from ..plots import FIGURES, draw_figures, draw_phase_figures
from . import network_stage, solver_stage, sweep_stage, theory_stage
from .config import ReproduceConfig
from .report import build_report

EXECUTION_FIELDS = ("device", "threads", "dpi")
LOCK = ".reproduce.lock"
STAGE_NAMES = ("theory", "solver", "networks", "sweep", "figures", "report")


# fields added after folders were written, with the value such a folder was computed with
LATER_FIELDS = {"seeds": 1, "starts": 1, "minority_epochs": 0}


def check_output(out: str | Path, config: ReproduceConfig) -> Path:
    """Refuse a path that is a file, or a folder holding another configuration's results.

    A folder written before a field of :data:`LATER_FIELDS` existed was computed with the
    value given there (one seed; one start per sweep point; no minority study of networks,
    whose data set then does not matter): it holds the same configuration as that value."""
    stored = Path(out) / layout.CONFIG
    ignore = EXECUTION_FIELDS
    if stored.is_file() and any(getattr(config, k) == v for k, v in LATER_FIELDS.items()):
        try:
            saved = read_json(stored)
        except ValueError:  # not JSON: check_run_config says what is wrong with it
            saved = None
        if isinstance(saved, dict):
            ignore = (*ignore, *(k for k, v in LATER_FIELDS.items()
                                 if k not in saved and getattr(config, k) == v))
            if "minority_epochs" in ignore:
                ignore = (*ignore, "minority_dataset")
    return check_run_config(out, config_to_dict(config), "a reproduction",
                            ignore=ignore, allowed_names=(LOCK,))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.reproduce.lock`` (the process id) while the reproduction runs.

    A second reproduction into the same folder is refused while the first one's process is
    alive; a lock left by a process that died is taken over.
    """
    path = out / LOCK
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            text = path.read_text().strip() if path.is_file() else ""
            if text.isdigit() and _process_alive(int(text)):
                raise ValueError(
                    f"{str(out)!r} is in use by another ufm reproduce (process {text}); wait for "
                    f"it to finish, or delete {str(path)!r} if that process is not yours"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process has gone
            continue
        with os.fdopen(handle, "w") as stream:
            stream.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _figures(config: ReproduceConfig, root: Path, log) -> dict[str, Any]:
    out = layout.stage_dir(root, layout.FIGURES)
    written = draw_figures(root, out=out, dpi=config.dpi, log=log)
    phase = draw_phase_figures(root, out=out, dpi=config.dpi, log=log)
    summary = {
        "figures": list(FIGURES),
        "phase_figures": list(dict.fromkeys(p.stem for p in phase)),
        "files": [p.name for p in written + phase],
        "dpi": config.dpi,
    }
    write_json(layout.stage_dir(root, layout.FIGURES) / layout.SUMMARY, summary)
    return summary


def reproduce(
    config: ReproduceConfig,
    out: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    check_memory: bool = True,
) -> dict[str, Any]:
    """Run (or continue) the reproduction of ``config`` into ``out``; return its summary.

    ``progress`` shows the solver's and the trainer's progress bars; ``log`` receives one
    line per stage and per run; ``check_memory`` refuses a solve, a network or a sweep point
    whose memory estimate exceeds the memory available (False runs them anyway). KeyboardInterrupt propagates after the interrupted run has
    saved its checkpoint: call again with the same arguments to continue.
    """
    out = check_output(out, config)
    resolve_device(config.device)  # an unavailable device is refused before any folder is made
    prepare_run_dir(out)
    with folder_lock(out):
        return _run_stages(config, out, progress, log, check_memory)


def _run_stages(config: ReproduceConfig, out: Path, progress: bool, log,
                check_memory: bool = True) -> dict[str, Any]:
    stored = config_to_dict(config)
    if (out / layout.CONFIG).is_file():
        stored = {**read_json(out / layout.CONFIG), **{k: stored[k] for k in EXECUTION_FIELDS}}
    write_json(out / layout.CONFIG, stored)
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("theory", lambda: theory_stage.run(config, out)),
        ("solver", lambda: solver_stage.run(config, out, progress, log, check_memory)),
        ("networks", lambda: network_stage.run(config, out, progress, log, check_memory)),
        ("sweep", lambda: sweep_stage.run(config, out, progress, log, check_memory)),
        ("figures", lambda: _figures(config, out, log)),
    ]
    seconds: dict[str, float] = {}
    for k, (name, action) in enumerate(stages, 1):
        # A stage after one that ran again reads new files: it runs too (its finished runs
        # inside are still reused).
        if not seconds and layout.stage_complete(out, name):
            log(f"[{k}/{len(STAGE_NAMES)}] {name}: complete in {out / name}, reused")
            continue
        log(f"[{k}/{len(STAGE_NAMES)}] {name}: running")
        started = time.perf_counter()
        action()
        seconds[name] = time.perf_counter() - started
        log(f"[{k}/{len(STAGE_NAMES)}] {name}: done in {seconds[name]:.1f} s")
    report_path = out / layout.REPORT
    if not (report_path.is_file() and (out / layout.SUMMARY).is_file()) or seconds:
        log(f"[{len(STAGE_NAMES)}/{len(STAGE_NAMES)}] report: writing {report_path}")
        _write_text(report_path, build_report(out, seconds))
        summary = _summary(out, seconds)
        write_json(out / layout.SUMMARY, summary)
    else:
        log(f"[{len(STAGE_NAMES)}/{len(STAGE_NAMES)}] report: complete, reused")
    return read_json(out / layout.SUMMARY)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _summary(root: Path, seconds: dict[str, float]) -> dict[str, Any]:
    """Top-level summary: the key numbers of every stage (written last: the folder is complete)."""
    solver = read_json(layout.stage_dir(root, layout.SOLVER) / layout.SUMMARY)
    networks = read_json(layout.stage_dir(root, layout.NETWORKS) / layout.SUMMARY)
    learned = {r["name"]: r["etf_distance_W"] for r in solver["runs"] if r["kind"] == "learned"}
    return {
        "network_seeds": networks.get("seeds"),
        "max_theory_distance": solver["max_theory_distance"],
        "learned_etf_distance_W": learned,
        "networks": {
            name: {key: run.get(key) for key in ("test_accuracy", "ece", "nc1", "fitted_lam_H")}
            for name, run in networks["runs"].items()
        },
        "stage_seconds": seconds,
        "report": layout.REPORT,
    }
