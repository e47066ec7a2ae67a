"""The medium solves on an idle machine and beside one busy process, baselines in the same run.

The problem: on 2 cores the medium fixed-ETF solve (K = 100, d = 128, 21 lam, 210,000
samples) took 15 s idle and 50 s beside one busy process, because torch's intra-op threads
meet at a barrier after every operation (``parallel="kernels"``). The default now shares
whole chunks among the threads (``parallel="chunks"``, :mod:`ufm.solver.chunk_threads`).

Every row runs in its own Python process, once on the idle machine and once beside one busy
process (a pure-Python loop started by this script, so it shares this session's scheduling
group). With ``--other-session`` it also runs beside a busy process started in a session of
its own (``setsid``), as one started from another terminal would be. Where the kernel groups
processes by session (``/proc/sys/kernel/sched_autogroup_enabled``, recorded in the JSON) it
then weighs the two sessions equally rather than their threads. Rows:

* the Newton solve of the fixed simplex ETF to gradient norm 1e-11 (float64, which puts the
  features within about 1e-15 of the exact theory), with the
  threads sharing chunks (default, in the logit coordinates of :mod:`ufm.solver.frames`,
  each thread kept on its own CPU), with the threads left where the scheduler puts them
  (``unpinned``, the computation before), in the SVD frame of the row space (``coordinates="row_space"``, the computation before),
  with torch's per-operation threads (the behaviour before that), and on one thread;
* the same in float32, to the rounding floor of float32;
* the baseline: Adam in float32 on a free feature tensor, lr 0.05, to relative distance
  1e-4 from the exact theory (``bench_solver.adam_baseline``);
* the learned classifier (random start, lam_W = lam_H = 5e-3) to gradient norm 1e-8, with
  the features solved in float32 until the gradient is a thousandth of its first value
  (default, ``mixed_precision``) and in float64 throughout (the computation before).

Every row but Adam's runs ``--repeats`` times in each condition, the conditions alternating,
and keeps the fastest (every run's time and the median are in the JSON). Prints a table with the slowdown beside the busy process and the speed-up over Adam, and
writes JSON with the command line and the host's steal time over the run. Measure on an
otherwise idle machine: the busy process is the only load meant to be there.

    python scripts/bench_contention.py [--out results/bench_contention.json] [--skip-adam]
        [--repeats 2] [--rows ...] [--seed 0] [--other-session]

docs/performance.md quotes several runs of this script, each a file in ``benchmarks/`` that
records its command (``python scripts/make_performance_page.py --commands`` lists them): rerun
one with ``--out benchmarks/NAME.json``, then ``python scripts/make_performance_page.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_solver import adam_baseline, command_line, ours  # noqa: E402

from ufm.io import write_json  # noqa: E402
from ufm.solver import chunk_threads  # noqa: E402
from ufm.solver._allocator import keep_freed_memory  # noqa: E402

K, D = 100, 128
ROWS = {
    "chunks": dict(kind="ours", overrides=dict(tol=1e-11)),
    "unpinned": dict(kind="ours", unpinned=True, overrides=dict(tol=1e-11)),
    "row_space": dict(kind="ours", overrides=dict(tol=1e-11, coordinates="row_space")),
    "kernels": dict(kind="ours", overrides=dict(tol=1e-11, parallel="kernels")),
    "one_thread": dict(kind="ours", threads=1, overrides=dict(tol=1e-11)),
    "float32": dict(kind="ours", overrides=dict(tol=1e-11, dtype="float32")),
    "adam": dict(kind="adam", lr=0.05),
    "learned": dict(kind="ours", overrides=dict(classifier="learned", tol=1e-8)),
    "learned_float64": dict(kind="ours", overrides=dict(classifier="learned", tol=1e-8,
                                                         mixed_precision=False)),
}
LABELS = {
    "chunks": "fixed ETF, threads share chunks (default)",
    "unpinned": "fixed ETF, threads not kept on a CPU (before)",
    "row_space": "fixed ETF, SVD frame (before logit coords)",
    "kernels": "fixed ETF, threads inside each op (before)",
    "one_thread": "fixed ETF, one thread",
    "float32": "fixed ETF, float32, to its rounding floor",
    "adam": "Adam float32 baseline, to 1e-4",
    "learned": "learned W, to gradient 1e-8",
    "learned_float64": "learned W, float64 throughout (before)",
}


def run_one(spec: dict) -> dict:
    keep_freed_memory()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("unpinned"):  # the chunk threads as before: the scheduler places them
        chunk_threads.allowed_cpus = lambda: None
    device = torch.device("cpu")
    if spec["kind"] == "adam":
        return adam_baseline(K, D, device, spec["lr"], max_seconds=spec["max_seconds"])
    return ours(K, D, device, **spec["overrides"])


def spawn(spec: dict) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                               capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def beside_busy_process(spec: dict, own_session: bool = False) -> dict:
    """``spec`` run beside a pure-Python loop, in this session or (``own_session``) its own."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=own_session)
    try:
        time.sleep(1.0)  # let it take its core
        return spawn(spec)
    finally:
        busy.kill()
        busy.wait()


CONDITIONS = {
    "idle": spawn,
    "busy": beside_busy_process,
    "busy_other_session": lambda spec: beside_busy_process(spec, own_session=True),
}


def autogroup() -> str | None:
    """The kernel's sched_autogroup_enabled ("1": the scheduler shares CPUs out by session)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters from /proc/stat: user, nice, system, idle, iowait, irq,
    softirq and steal (the time a virtual machine's host gave to others)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    return [int(v) for v in fields[1:9]]


def steal_percent(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of CPU time the host stole between two readings of :func:`cpu_times`."""
    if before is None or after is None:
        return None
    delta = [b - a for a, b in zip(before, after)]
    return 100 * delta[7] / sum(delta) if sum(delta) else None


def _result(r: dict) -> str:
    if "theory_distance" in r and r.get("theory_distance") is not None:
        return f"theory {r['theory_distance']:.1e} ({r['stop_reason']})"
    if "distance" in r:
        return f"distance {r['distance']:.1e}" + ("" if r["reached"] else " NOT REACHED")
    return f"grad {r['grad_norm']:.1e} ({r['stop_reason']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench_contention.json")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--skip-adam", action="store_true", help="leave out the Adam baseline")
    parser.add_argument("--adam-max-seconds", type=float, default=1800.0)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per row and condition (the fastest is kept); Adam runs once")
    parser.add_argument("--seed", type=int, default=0,
                        help="the problem's seed (a learned classifier's random start)")
    parser.add_argument("--other-session", action="store_true",
                        help="also run beside a busy process in a session of its own")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    rows = [r for r in args.rows if not (args.skip_adam and r == "adam")]
    threads = torch.get_num_threads()
    print(f"K={K} d={D} n={K * K * 21:,}  cores={os.cpu_count()} torch threads={threads} "
          f"torch={torch.__version__}  load average before: {os.getloadavg()[0]:.2f}")
    conditions = [c for c in CONDITIONS if args.other_session or c != "busy_other_session"]
    results = {}
    times_before = cpu_times()
    for name in rows:
        spec = {**ROWS[name], "max_seconds": args.adam_max_seconds}
        if spec["kind"] == "ours":
            spec["overrides"] = {**spec["overrides"], "seed": args.seed}
        repeats = 1 if name == "adam" else args.repeats
        runs = {c: [] for c in conditions}
        for _ in range(repeats):
            for c in conditions:
                runs[c].append(CONDITIONS[c](spec))
        r = {c: min(runs[c], key=lambda run: run["seconds"]) for c in conditions}
        for c in conditions[1:]:  # "slowdown" beside the busy process of this session
            r["slowdown" if c == "busy" else f"{c}_slowdown"] = r[c]["seconds"] / r["idle"]["seconds"]
        r.update({f"{c}_seconds_all": [run["seconds"] for run in runs[c]] for c in conditions})
        r.update({f"{c}_seconds_median": statistics.median(run["seconds"] for run in runs[c])
                  for c in conditions})
        results[name] = r
        print(f"  {name}: " + ", ".join(f"{c} {r[c]['seconds']:.1f} s" for c in conditions), flush=True)
    other = "busy_other_session" in conditions
    print(f"\n{'run':44s} {'idle s':>8s} {'busy s':>8s} {'busy/idle':>9s} "
          + (f"{'other s':>8s} {'other/idle':>10s} " if other else "")
          + f"{'Adam/this idle':>14s} {'Adam/this busy':>14s}  result (idle)")
    adam = results.get("adam")
    for name, r in results.items():
        ratio = ("", "")
        if adam is not None and name != "adam":
            ratio = (f"{adam['idle']['seconds'] / r['idle']['seconds']:.1f}x",
                     f"{adam['busy']['seconds'] / r['busy']['seconds']:.1f}x")
            r["speedup_vs_adam"] = {"idle": adam["idle"]["seconds"] / r["idle"]["seconds"],
                                    "busy": adam["busy"]["seconds"] / r["busy"]["seconds"]}
        others = (f"{r['busy_other_session']['seconds']:8.1f} "
                  f"{r['busy_other_session_slowdown']:9.2f}x " if other else "")
        print(f"{LABELS[name]:44s} {r['idle']['seconds']:8.1f} {r['busy']['seconds']:8.1f} "
              f"{r['slowdown']:8.2f}x {others}{ratio[0]:>14s} {ratio[1]:>14s}  {_result(r['idle'])}")
    report = {"command": command_line(), "K": K, "d": D, "n": K * K * 21, "seed": args.seed,
              "cores": os.cpu_count(), "threads": threads,
              "steal_percent": steal_percent(times_before, cpu_times()),
              "sched_autogroup_enabled": autogroup(),
              "torch": torch.__version__, "python": platform.python_version(),
              "machine": platform.processor() or platform.machine(), "rows": results}
    write_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
