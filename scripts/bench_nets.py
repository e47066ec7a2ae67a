"""Benchmark of the real-network module: speed and what the measurements find.

Runs ``ufm.nets.run_training`` on ``digits`` and ``mnist1d`` (4,000 training signals) for 200
epochs each, with measurements every 50 epochs and at the end, for ERM (alpha = 0) and mixup
(alpha = 1), each with a learned and with a fixed simplex-ETF classifier. Prints a table and
writes ``bench_nets.json`` (plus one run folder per configuration) to ``--out``.

Speed targets (issue 4): digits, MLP, 200 epochs with mixup and measurements under 60 s;
mnist1d 200 epochs under 3 minutes, on the 2-core CPU. The JSON records the device, the torch
thread count and the load average, because other jobs on a shared machine move the timings.

    python scripts/bench_nets.py            # writes results/bench_nets/bench_nets.json
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
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
    ("ufm_distance", "{:6.3f}"),
    ("ufm_distance_in_span", "{:6.3f}"),
    ("out_of_span_fraction", "{:6.3f}"),
]
SHORT = {
    "train_accuracy": "train",
    "test_accuracy": "test",
    "same_class_cosine": "cos_same",
    "boundary_distance_half_relative": "bd_half",
    "fitted_lam_H": "lam_H",
    "ufm_distance": "ufm_D",
    "confidence_half": "conf_half",
    "ufm_distance_in_span": "D_span",
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
    args = parser.parse_args(argv)

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
    for dataset in args.datasets:
        for alpha, classifier in RUNS:
            results.append(bench(dataset, alpha, classifier, args, out))
            print(
                f"{dataset} alpha={alpha:g} {classifier}: {results[-1]['wall_seconds']:.1f} s "
                f"(target {TARGET_SECONDS[dataset]:.0f} s)",
                flush=True,
            )
    machine["load_average_after"] = os.getloadavg()
    table = format_table(results)
    print(table)
    write_json(
        out / "bench_nets.json",
        {"machine": machine, "epochs": args.epochs, "runs": results, "table": table},
    )
    print(f"\nwrote {out / 'bench_nets.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
