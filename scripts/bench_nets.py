"""Benchmark of the real-network module: speed and what the measurements find.

Runs ``ufm.nets.run_training`` on ``digits`` and ``mnist1d`` (4,000 training signals) for 200
epochs each, with measurements every 50 epochs and at the end, for ERM (alpha = 0) and mixup
(alpha = 1), each with a learned and with a fixed simplex-ETF classifier. Prints a table and
writes ``bench_nets.json`` (plus one run folder per configuration) to ``--out``.

Speed targets: digits, MLP, 200 epochs with mixup and measurements under 60 s;
mnist1d 200 epochs under 3 minutes, on the 2-core CPU. The JSON records the device, the torch
thread count and the load average, because other jobs on a shared machine move the timings.

Measurement overhead: ``--overhead`` trains the digits mixup run twice in the same
process, once with the measurements (every 50 epochs light, and at the end the full one,
with the fits of lam_H and the exact optimum for the network's own W; ``ufm train``'s
default) and once as a baseline whose measurement is replaced by a no-op, and reports the
ratio (target: at most 1.2). The two
alternate, ``--repeats`` rounds of baseline then measured run, so that a load that comes and
goes on a shared machine falls on both, after one untimed epoch that pays the process's
first-run costs; the JSON keeps every time, the one-minute load
average at the start of each run, the ratio of the fastest of each kind and each round's
own ratio, in wall time and in the CPU time of this process (which the load of other
processes moves less, but which counts every thread of the measurement's numpy work). The
verdict (``within_target``) takes the median of the rounds' wall-time ratios: the two runs
of a round share the load of their minute, while the fastest of each kind may come from
different minutes.

    python scripts/bench_nets.py            # writes results/bench_nets/bench_nets.json
    python scripts/bench_nets.py --overhead --datasets digits
    python scripts/bench_nets.py --overhead-only --json benchmarks/measurement_overhead.json

``--json`` writes the JSON elsewhere than ``--out`` (which keeps the run folders); the JSON
records the command line that wrote it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from ufm.io import write_json
from ufm.nets import TrainConfig, run_training

TARGET_SECONDS = {"digits": 60.0, "mnist1d": 180.0}
RUNS = [  # (alpha, classifier)
    (0.0, "learned"),
    (1.0, "learned"),
    (0.0, "fixed_etf"),
    (1.0, "fixed_etf"),
]
COLUMNS = [
    ("seconds", "{:7.1f}"),
    ("train_accuracy", "{:6.4f}"),
    ("test_accuracy", "{:6.4f}"),
    ("ece", "{:6.4f}"),
    ("nll", "{:6.3f}"),
    ("nc1", "{:7.4f}"),
    ("nc2_W", "{:6.4f}"),
    ("nc2_M", "{:6.4f}"),
    ("nc3", "{:6.4f}"),
    ("nc4", "{:6.4f}"),
    ("same_class_cosine", "{:6.3f}"),
    ("boundary_distance_half_relative", "{:6.3f}"),
    ("confidence_half", "{:6.3f}"),
    ("fitted_lam_H", "{:8.2e}"),
    ("amplification", "{:6.3f}"),
    ("amplification_se", "{:6.3f}"),
    ("amplification_theory", "{:6.3f}"),
    ("scatter_to_signal", "{:6.3f}"),
    ("out_of_span_fraction", "{:6.3f}"),
]
SHORT = {
    "train_accuracy": "train",
    "test_accuracy": "test",
    "same_class_cosine": "cos_same",
    "boundary_distance_half_relative": "bd_half",
    "fitted_lam_H": "lam_H",
    "confidence_half": "conf_half",
    "amplification": "amp",
    "amplification_se": "amp_se",
    "amplification_theory": "amp_th",
    "scatter_to_signal": "scat/sig",
    "out_of_span_fraction": "off_span",
}


def bench(dataset: str, alpha: float, classifier: str, args, out: Path) -> dict:
    config = TrainConfig(
        dataset=dataset,
        model=args.model,
        alpha=alpha,
        classifier=classifier,
        epochs=args.epochs,
        measure_every=50,
        threads=args.threads,
        device=args.device,
        seed=args.seed,
    )
    folder = out / f"{dataset}_{args.model}_alpha{alpha:g}_{classifier}"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    summary = run_training(config, folder, progress=not args.no_progress)
    wall = time.perf_counter() - started
    return {
        "dataset": dataset,
        "model": args.model,
        "alpha": alpha,
        "classifier": classifier,
        "wall_seconds": wall,
        "target_seconds": TARGET_SECONDS[dataset],
        "within_target": wall < TARGET_SECONDS[dataset],
        "folder": str(folder),
        **summary,
    }


def overhead(args, out: Path) -> dict:
    """Wall time of the digits mixup run (learned W) with and without its measurements."""
    import ufm.nets.run as run_module
    from ufm.nets.measure import Measurement

    def no_measurement(*unused, **unused_kw):
        # the run drops the features of a measurement before the last: give it some to drop
        return Measurement(scalars={"better_fit": "n/a"}, tables={}, arrays={"mixed_features": {}})

    config = TrainConfig(
        dataset="digits", model=args.model, alpha=1.0, epochs=args.epochs, measure_every=50,
        threads=args.threads, device=args.device, seed=args.seed,
    )  # fmt: skip
    timings = {"baseline": [], "measured": []}
    cpu = {"baseline": [], "measured": []}  # CPU seconds of this process: others' load moves them less
    loads = {"baseline": [], "measured": []}  # one-minute load average as each run starts
    real = run_module.measure
    # one untimed epoch with its measurement first: the process's first run pays for the
    # data, the imports and the first calls, which would fall on the first round's baseline
    warm_up = out / "overhead_warm_up"
    shutil.rmtree(warm_up, ignore_errors=True)
    run_training(dataclasses.replace(config, epochs=1), warm_up, progress=False)
    for _ in range(args.repeats):  # interleaved, the fastest of each kept: load moves single runs
        for label in ("baseline", "measured"):
            folder = out / f"overhead_{label}"
            shutil.rmtree(folder, ignore_errors=True)
            run_module.measure = no_measurement if label == "baseline" else real
            try:
                loads[label].append(os.getloadavg()[0])
                started, started_cpu = time.perf_counter(), time.process_time()
                run_training(config, folder, progress=not args.no_progress)
                timings[label].append(time.perf_counter() - started)
                cpu[label].append(time.process_time() - started_cpu)
            finally:
                run_module.measure = real
    rounds = [m / b for b, m in zip(timings["baseline"], timings["measured"])]
    # every measure_every epochs before the last, and at the last
    measurements = len(range(config.measure_every, config.epochs, config.measure_every)) + 1
    per_measurement = {
        "wall": (min(timings["measured"]) - min(timings["baseline"])) / measurements,
        "cpu": (min(cpu["measured"]) - min(cpu["baseline"])) / measurements,
    }
    cpu_rounds = [m / b for b, m in zip(cpu["baseline"], cpu["measured"])]
    cpu_ratio = min(cpu["measured"]) / min(cpu["baseline"])
    timings = {
        **{f"{k}_all": v for k, v in timings.items()},
        **{f"{k}_cpu_all": v for k, v in cpu.items()},
        **{f"{k}_load_average": v for k, v in loads.items()},
        **{k: min(v) for k, v in timings.items()},
    }
    ratio = timings["measured"] / timings["baseline"]
    print(
        f"overhead: baseline {timings['baseline']:.1f} s, with measurements "
        f"{timings['measured']:.1f} s, ratio {ratio:.3f}; per round "
        f"{', '.join(f'{r:.3f}' for r in rounds)}, median {statistics.median(rounds):.3f} "
        f"(target <= 1.2); CPU time ratio {cpu_ratio:.3f}; "
        f"{per_measurement['cpu']:.2f} CPU s per measurement ({measurements} per run)",
        flush=True,
    )
    return {**timings, "ratio": ratio, "round_ratios": rounds,
            "round_ratio_median": statistics.median(rounds), "cpu_ratio": cpu_ratio,
            "measurements_per_run": measurements, "seconds_per_measurement": per_measurement,
            "cpu_round_ratios": cpu_rounds, "target_ratio": 1.2,
            "within_target": statistics.median(rounds) <= 1.2}


def format_table(results: list[dict]) -> str:
    head = f"{'dataset':8} {'alpha':>5} {'classifier':10} " + " ".join(
        f"{SHORT.get(key, key):>{len(fmt.format(0.0))}}" for key, fmt in COLUMNS
    )
    lines = [head, "-" * len(head)]
    for r in results:
        cells = " ".join(fmt.format(r[key]) for key, fmt in COLUMNS)
        lines.append(f"{r['dataset']:8} {r['alpha']:5g} {r['classifier']:10} {cells}")
    lines.append("")
    lines.append("layer-wise non-linearity (block 1 .. last), ERM vs mixup:")
    for r in results:
        layers = " ".join(f"{v:.3f}" for v in r["linearity"])
        lines.append(f"  {r['dataset']:8} alpha={r['alpha']:g} {r['classifier']:10} {layers}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/bench_nets", help="folder for runs and JSON")
    parser.add_argument(
        "--datasets", nargs="+", default=["digits", "mnist1d"], choices=sorted(TARGET_SECONDS)
    )
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--overhead", action="store_true", help="also time the measurements against a baseline"
    )
    parser.add_argument("--repeats", type=int, default=3, help="overhead runs of each kind")
    parser.add_argument(
        "--overhead-only", action="store_true", help="skip the table runs, time the overhead only"
    )
    parser.add_argument("--json", help="where the JSON goes (default: OUT/bench_nets.json)")
    parser.add_argument("--note", help="a note on the conditions, kept in the JSON")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "scripts/bench_nets.py",
                          *(sys.argv[1:] if argv is None else argv)])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "threads_used": args.threads or torch.get_num_threads(),
        "platform": platform.platform(),
    }
    results = []
    for dataset in [] if args.overhead_only else args.datasets:
        for alpha, classifier in RUNS:
            results.append(bench(dataset, alpha, classifier, args, out))
            print(
                f"{dataset} alpha={alpha:g} {classifier}: {results[-1]['wall_seconds']:.1f} s "
                f"(target {TARGET_SECONDS[dataset]:.0f} s)",
                flush=True,
            )
    measured_overhead = overhead(args, out) if args.overhead or args.overhead_only else None
    machine["load_average_after"] = os.getloadavg()
    table = format_table(results)
    print(table)
    json_path = Path(args.json) if args.json else out / "bench_nets.json"
    write_json(
        json_path,
        {
            "command": command,
            **({"note": args.note} if args.note else {}),
            "machine": machine,
            "epochs": args.epochs,
            "runs": results,
            "overhead": measured_overhead,
            "table": table,
        },
    )
    print(f"\nwrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
