"""``run_sweep``: check everything, then run a sweep's points on a submitit executor.

The sweep folder ``DIR`` holds

* ``config.json``: the sweep (job, base, grid, executor), which pins the folder: a second call
  with another job, base or grid is refused unless ``force`` (the executor settings may
  change: they say how it runs, not what it computes); and ``sweep.toml``, the file it came
  from;
* ``points/<name>/``: one ordinary run folder per point (:mod:`.point_folders`);
* ``sweep.csv`` and ``sweep.json``: the table (:mod:`.table`), rewritten after every point;
  with ``seeds`` also ``sweep_mean.csv``, one row per configuration over its seeds;
* ``submitit/``: submitit's pickles and the logs of each job.

Before any job starts: every point's configuration is validated, the executor is checked
(SLURM reachable), and for ``local`` and ``debug`` each point's device must exist here.
Complete points are reused, interrupted ones resumed from their checkpoint, failed ones rerun.
The points to run are dealt into jobs (:func:`.executors.deal`); while a job runs, the table
marks each of its points done as soon as the point's folder is complete. Ctrl-C ends the
running jobs and their workers (:class:`StopSignals`, :meth:`.LocalSessionExecutor.stop`)
before the sweep gives up: the points they had started are ``interrupted``, the others
``pending``, and nothing runs on once the sweep has returned.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..config import config_to_dict
from ..devices import resolve_device
from ..io import check_run_config, is_complete, prepare_run_dir, to_jsonable, write_json
from . import point_job
from .executors import (
    LocalSessionExecutor,
    at_once,
    check_executor,
    deal,
    make_executor,
    threads_per_point,
)
from .point_folders import clear_folder, folder_state, point_folder
from .spec import Point, SweepSpec
from .table import make_row, write_table

SUBMITIT = "submitit"
SWEEP_FILE = "sweep.toml"
POLL_S = {"local": 0.1, "debug": 0.0, "slurm": 10.0}


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    executor: str = "local",
    jobs: int = 1,
    *,
    force: bool = False,
    progress: bool = True,
    sweep_text: str | None = None,
    check_memory: bool = True,
) -> list[dict[str, Any]]:
    """Run every point of ``spec`` not yet complete in ``out``; return the table's rows.

    ``jobs`` points run at once (``local``; the array parallelism on ``slurm``). A failed point
    is recorded (status ``failed`` and its error) and the others go on. Ctrl-C (SIGTERM,
    SIGHUP) stops every running job, on ``local`` with its worker processes before this
    returns, marks the points they had started ``interrupted`` and raises KeyboardInterrupt;
    the next call resumes them. ``sweep_text`` is the sweep file's text, saved as
    ``sweep.toml``. ``check_memory``: each point refuses to start where its memory estimate
    exceeds the memory available (a failed point that says so); False runs it anyway.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    points = spec.points()  # validates every point first
    check_executor(executor)
    if executor in ("local", "debug"):
        _check_devices(points)
    out = Path(out)
    check_run_config(out, spec.to_dict(), "a sweep", ignore=("executor",), force=force)
    out = prepare_run_dir(out)
    write_json(out / "config.json", spec.to_dict())
    if sweep_text is not None:
        (out / SWEEP_FILE).write_text(sweep_text)

    fields = spec.swept
    rows: dict[str, dict[str, Any]] = {}
    todo: deque[tuple[Point, bool]] = deque()
    for point in points:
        folder = point_folder(out, point.name)
        state = folder_state(spec.job, folder, point.config)
        if state == "fresh":
            clear_folder(folder)
        if state != "done":
            todo.append((point, state == "resume"))
        rows[point.name] = make_row(spec.job, point.name, point.values,
                                    "done" if state == "done" else "pending", None, folder)

    def write() -> None:
        write_table(out, spec.job, fields, [rows[p.name] for p in points], spec.seeds)

    write()
    if todo:
        _run_points(spec, out, executor, jobs, todo, rows, write, progress, len(points),
                    check_memory)
    return [rows[p.name] for p in points]


def _check_devices(points: list[Point]) -> None:
    for device in sorted({str(p.config.device) for p in points}):
        try:
            resolve_device(device)
        except ValueError as error:
            names = [p.name for p in points if str(p.config.device) == device]
            raise ValueError(f"grid point {names[0]}: {error}") from None


def _run_points(spec, out, executor_name, jobs, todo, rows, write, progress, total,
                check_memory) -> None:
    executor = make_executor(executor_name, out / SUBMITIT, spec.executor, jobs)
    threads = threads_per_point(executor_name, spec.executor, jobs) if spec.job == "solve" else 0
    window = at_once(executor_name, jobs, spec.executor)
    poll = POLL_S[executor_name]
    shares = deque(deal(executor_name, list(todo), jobs, spec.executor))
    running: dict[Any, list[Point]] = {}
    bar = tqdm(total=total, initial=total - len(todo), desc="sweep", unit="point",
               disable=not progress, dynamic_ncols=True)
    counted: set[str] = set()

    def record(point: Point, status: str, error: str | None) -> None:
        folder = point_folder(out, point.name)
        rows[point.name] = make_row(spec.job, point.name, point.values, status, error, folder)
        if status != "pending" and point.name not in counted:
            counted.add(point.name)
            bar.update(1)
            bar.set_postfix(failed=sum(r["status"] == "failed" for r in rows.values()))

    def submit(share: list[tuple[Point, bool]]):
        items = [(to_jsonable(config_to_dict(p.config)), str(point_folder(out, p.name)), resume)
                 for p, resume in share]
        return executor.submit(point_job.run_points, spec.job, items, threads, check_memory)

    stop = StopSignals(enabled=executor_name != "debug")
    with stop:
        try:
            if window is None:  # one job array: the cluster schedules it
                batch = list(shares)
                shares.clear()
                with executor.batch():
                    submitted = [submit(share) for share in batch]
                running.update((job, [p for p, _ in share]) for job, share in zip(submitted, batch))
            while (shares or running) and not stop.requested:
                while shares and len(running) < window:
                    share = shares.popleft()
                    running[submit(share)] = [p for p, _ in share]
                finished = [job for job in running if job.done()]
                for job in finished:
                    share = running.pop(job)
                    for point, (status, error) in zip(share, _outcomes(job, len(share))):
                        if status == "pending":  # never reached: the job stopped before it
                            status = _left_status(out, point)
                        if is_complete(point_folder(out, point.name)):  # whatever the job said
                            status, error = "done", None
                        record(point, status, error)
                        if status == "interrupted" and executor_name == "debug":
                            stop.requested = True  # Ctrl-C reached the point in this process
                changed = bool(finished)
                for share in running.values():  # points a running job has already finished
                    for point in share:
                        if point.name not in counted and is_complete(point_folder(out, point.name)):
                            record(point, "done", None)
                            changed = True
                if changed:
                    write()
                elif running:
                    stop.wait(poll)
        except KeyboardInterrupt:  # Ctrl-C where no handler of ours was set (debug, a thread)
            stop.requested = True
        finally:  # stop what still runs (a request, or an error of the sweep's own)
            if running:
                _stop_jobs(executor, running)
                for share in running.values():
                    for point in share:
                        record(point, _left_status(out, point), None)
            bar.close()
            write()
    if stop.requested:
        raise KeyboardInterrupt("the sweep was stopped; the next call resumes it")


def _left_status(out: Path, point: Point) -> str:
    """A point that its job did not finish: ``done`` if its folder is complete all the same,
    ``interrupted`` if it was started (in this call or before; the next call resumes it from
    its checkpoint, or runs it afresh), ``pending`` if it never started."""
    folder = point_folder(out, point.name)
    if is_complete(folder):
        return "done"
    return "interrupted" if folder.is_dir() else "pending"


def _stop_jobs(executor, running: dict[Any, list[Point]]) -> None:
    """End the jobs that still run: locally with their workers, before the sweep returns; on
    SLURM by cancelling them (scancel)."""
    if isinstance(executor, LocalSessionExecutor):
        executor.stop()
        return
    for job in running:
        job.cancel(check=False)


class StopSignals:
    """While a sweep runs its jobs: Ctrl-C, SIGTERM and SIGHUP (the terminal closed) set
    :attr:`requested` instead of raising KeyboardInterrupt (or ending the sweep at once).

    The sweep's loop then stops the jobs it started, records their points and raises
    KeyboardInterrupt itself, so an interrupt landing midway through a job's submission or a
    table write leaves no worker untracked and no table half done; another Ctrl-C while the
    jobs stop changes nothing. Not for the debug executor, whose points run in this process
    and stop on the KeyboardInterrupt itself, and not outside the main thread (where Python
    sets no handlers and raises no KeyboardInterrupt); there a point that reports itself
    interrupted stops the sweep instead, as only a signal to this process interrupts it.
    """

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if self.enabled:
            for name in self.NAMES:
                number = getattr(signal, name, None)
                if number is not None:  # SIGHUP: not on Windows
                    self._previous[number] = signal.signal(number, self._request)

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _request(self, number, frame) -> None:
        self.requested = True

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less once a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def _outcomes(job, count: int) -> list[tuple[str, str | None]]:
    """(status, error) per point of a finished job; a job that died outside the runs counts
    its points as failed (the sweep then reads the folders of those that completed), and the
    points after an interrupted one, which the job did not start, are ``pending``."""
    try:
        results = job.result()
    except Exception as error:  # killed, timed out, lost by the scheduler: submitit raises
        lines = [line for line in str(error).splitlines() if line.strip()]
        return [("failed", f"{type(error).__name__}: {lines[0] if lines else ''}")] * count
    outcomes = [(r["status"], r.get("error")) for r in results]
    return outcomes + [("pending", None)] * (count - len(outcomes))
