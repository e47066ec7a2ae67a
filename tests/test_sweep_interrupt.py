"""Ctrl-C on ``ufm sweep``: every worker stops before the sweep exits, the table says which
points were interrupted, one line says how to resume; and Ctrl-C while ``ufm`` starts up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ufm
from ufm import cli
from ufm.io import read_csv
from ufm.sweep import point_job, read_table, run_sweep, sweep_from_dict

REPO = Path(ufm.__file__).resolve().parents[1]
# points that run until their 60 s time limit (gradient descent with a tiny step), so that
# Ctrl-C surely finds both workers in the middle of a solve
SLOW_SWEEP = """
[base]
K = 3
d = 3
num_lams = 5
classifier = "learned"
method = "gd"
lr = 0.0001
tol = 1e-14
max_iters = 100000000
time_limit = 60.0
device = "cpu"

[grid]
lam_H = [0.005, 0.01, 0.02, 0.04]
"""


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (command) "
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _descendants(pid: int) -> set[int]:
    table = _processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _, _) in table.items() if parent in frontier}
        found |= frontier
    return found


def _alive(pids: set[int], group: int) -> set[int]:
    """Those of ``pids``, and the members of process group ``group``, not ended (zombies have
    ended: only their parent's bookkeeping is left)."""
    return {pid for pid, (_, pgid, state) in _processes().items()
            if (pid in pids or pgid == group) and state not in ("Z", "X")}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_ctrl_c_on_a_local_sweep_stops_every_worker_and_marks_their_points(tmp_path):
    """As a terminal does: SIGINT to the foreground process group of ``ufm sweep --jobs 2``
    while both workers solve. The sweep ends both workers (and their controllers) before it
    exits 130 with one line, and the table marks the two started points interrupted."""
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(SLOW_SWEEP)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "ufm.cli", "sweep", "--config", str(sweep_file), "--out", str(out),
         "--executor", "local", "--jobs", "2", "--no-progress"],
        cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # two busy cores: three Python start-ups with torch
        started: list[Path] = []
        while len(started) < 2 and time.monotonic() < deadline and sweep.poll() is None:
            started = sorted((out / "points").glob("*/config.json"))
            time.sleep(0.2)
        assert len(started) == 2, f"the workers did not start: {sweep.poll()=}"
        workers = _descendants(sweep.pid)
        assert len(workers) >= 4  # per job a controller and its worker

        os.killpg(sweep.pid, signal.SIGINT)  # the sweep leads its session, as in a terminal
        stdout, stderr = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()

    assert sweep.returncode == 130
    assert "Traceback" not in stderr and stdout == ""
    (line,) = stderr.splitlines()
    assert line == (f"ufm sweep: interrupted; resume with: ufm sweep --config {sweep_file} "
                    f"--out {out} --executor local --jobs 2 --no-progress")
    assert _alive(workers, sweep.pid) == set()  # stopped before the sweep exited
    rows = {row["point"]: row["status"] for row in read_csv(out / "sweep.csv")}
    started_points = {path.parent.name for path in started}
    assert {rows[name] for name in started_points} == {"interrupted"}
    assert {status for name, status in rows.items() if name not in started_points} == {"pending"}
    for name in started_points:  # each worker saved its checkpoint on the way out
        assert (out / "points" / name / "checkpoint.pt").is_file()
    time.sleep(5)  # nothing runs on: no point becomes complete after the sweep exited
    assert not list((out / "points").glob("*/summary.json"))
    assert _alive(workers, sweep.pid) == set()


def test_an_interrupted_point_ends_its_workers_share(tmp_path, monkeypatch):
    """SIGTERM (how a sweep stops a worker) interrupts the running point like Ctrl-C; the
    worker returns at once and does not start the next point of its share."""
    calls = []

    def stopped_midway(config, out, resume, **options):
        calls.append(config["lam_H"])
        out.mkdir(parents=True)
        os.kill(os.getpid(), signal.SIGTERM)  # sigterm_as_interrupt: KeyboardInterrupt
        time.sleep(30)
        raise AssertionError("SIGTERM did not interrupt the point")

    monkeypatch.setattr(point_job, "_solve", stopped_midway)
    items = [({"lam_H": lam}, str(tmp_path / str(lam)), False) for lam in (0.005, 0.01)]
    assert [r["status"] for r in point_job.run_points("solve", items)] == ["interrupted"]
    assert calls == [0.005]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored afterwards


def test_ctrl_c_in_a_debug_sweep_marks_the_point_and_stops_the_sweep(tmp_path, monkeypatch):
    """The debug executor runs the points in this process: Ctrl-C there interrupts the point
    (a train job's KeyboardInterrupt propagates from run_training), the next one does not
    start, and the sweep raises KeyboardInterrupt after writing its table."""
    def interrupted(config, out, resume, **options):
        out.mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(point_job, "_solve", interrupted)
    spec = sweep_from_dict({"base": {"K": 3, "d": 3, "num_lams": 5},
                            "grid": {"lam_H": [0.005, 0.01]}})
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "s", "debug", progress=False)
    rows = read_table(tmp_path / "s")["points"]
    assert [r["status"] for r in rows] == ["interrupted", "pending"]


@pytest.mark.parametrize("where", ["build_parser", "handler"])
def test_ctrl_c_while_ufm_starts_up_prints_one_line(monkeypatch, capsys, where):
    """Ctrl-C while the subcommands are imported (build_parser) or later: exit 130 and one
    line, no traceback."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "build_parser":
        monkeypatch.setattr(cli.importlib, "import_module", interrupt)
        expected = "ufm: interrupted\n"
    else:
        monkeypatch.setattr("ufm.commands.theory.run", interrupt)
        expected = "ufm theory: interrupted\n"
    assert cli.main(["theory", "--num-lams", "3"]) == 130
    captured = capsys.readouterr()
    assert captured.err == expected and captured.out == ""


def test_importing_the_command_line_loads_no_torch():
    """``import ufm.cli`` is light (the package's names load on first use): the seconds of
    torch's import fall inside ``main``, whose Ctrl-C handling they then reach."""
    code = "import sys, ufm.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
def test_ctrl_c_while_torch_loads_prints_one_line_and_exits_130():
    """A real SIGINT while ``python -m ufm.cli theory`` imports torch (its library is mapped,
    the Python side still loading). The child starts with SIGINT at its default, as in a
    terminal: a test run started in the background of a non-interactive shell ignores
    SIGINT, a child inherits that, and Python then leaves it ignored (the run finished with
    exit 0 in such a run). A handled signal is reset to its default in the child, so the
    test handles SIGINT while it starts the child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen([sys.executable, "-m", "ufm.cli", "theory", "--num-lams", "3"],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if "libtorch" in maps.read_text():
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr in ("ufm: interrupted\n", "ufm theory: interrupted\n") and stdout == ""
