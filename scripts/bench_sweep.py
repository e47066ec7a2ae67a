"""Overhead of ``ufm sweep``: a 12-point sweep with ``--jobs 2`` against the same points run
serially in one process.

The points are the small learned problem (K = 10, d = 32, a learned classifier, tol 1e-8)
over lam_H x seed (4 x 3). Serially, one process runs the 12 points one after the other with
the same point function the sweep uses (:func:`ufm.sweep.point_job.run_point`) and torch's
threads on all cores; the sweep runs them on submitit's local executor, 2 processes at once
with cores // 2 threads each. Per-point overhead = (2 x sweep wall time - the points' own
solve seconds) / 12: process start, imports, submitit's pickles and polling. The local
executor deals the 12 points into 2 worker processes, so the start-up (mostly importing
torch) is paid twice, in parallel; the script also times one such start-up alone.

    python scripts/bench_sweep.py [--out results/bench_sweep.json] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ufm.config import config_to_dict
from ufm.io import read_json, to_jsonable, write_json
from ufm.sweep import run_sweep, sweep_from_dict
from ufm.sweep.point_folders import point_folder
from ufm.sweep.point_job import run_point

SWEEP = {
    "base": {"K": 10, "d": 32, "classifier": "learned", "tol": 1e-8},
    "grid": {"lam_H": [1e-3, 2e-3, 5e-3, 1e-2], "seed": [0, 1, 2]},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="results/bench_sweep.json")
    args = parser.parse_args()
    spec = sweep_from_dict(SWEEP)
    points = spec.points()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        serial_dir, sweep_dir = Path(tmp) / "serial", Path(tmp) / "sweep"
        started = time.perf_counter()
        for point in points:
            result = run_point("solve", to_jsonable(config_to_dict(point.config)),
                               str(point_folder(serial_dir, point.name)), threads=0)
            assert result["status"] == "done", result
        serial = time.perf_counter() - started
        serial_runs = sum(read_json(point_folder(serial_dir, p.name) / "summary.json")["seconds"]
                          for p in points)

        started = time.perf_counter()
        rows = run_sweep(spec, sweep_dir, "local", args.jobs, progress=False)
        swept = time.perf_counter() - started
        assert all(r["status"] == "done" for r in rows), rows
        sweep_runs = sum(r["seconds"] for r in rows)

    started = time.perf_counter()  # what each worker process pays before its first point
    subprocess.run([sys.executable, "-c", "import ufm.sweep.point_job"], check=True)
    startup = time.perf_counter() - started
    overhead = (args.jobs * swept - sweep_runs) / len(points)
    report = {
        "points": len(points), "jobs": args.jobs, "cores": cores,
        "torch_threads_serial": torch.get_num_threads(),
        "serial_wall_s": serial, "serial_solve_s": serial_runs,
        "sweep_wall_s": swept, "sweep_solve_s": sweep_runs,
        "sweep_over_serial": swept / serial,
        "worker_startup_s": startup,
        "half_serial_plus_startup_s": serial / args.jobs + startup,
        "overhead_per_point_s": overhead,
        "python": sys.version.split()[0], "torch": torch.__version__,
        "note": "indicative only: measured on a shared machine",
    }
    print(f"{'':28}{'wall s':>10}{'solve s':>10}")
    print(f"{'serial, one process':28}{serial:>10.2f}{serial_runs:>10.2f}")
    print(f"{f'sweep, local --jobs {args.jobs}':28}{swept:>10.2f}{sweep_runs:>10.2f}")
    print(f"{'serial / jobs + start-up':28}{serial / args.jobs + startup:>10.2f}"
          f"   (start-up of one worker process: {startup:.2f} s)")
    print(f"sweep / serial = {swept / serial:.2f};  overhead per point = {overhead:.2f} s "
          f"({cores} cores)")
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
