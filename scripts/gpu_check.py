"""One prepared check of ufm on a CUDA machine: tests, solves, a network, the roofline.

Runs, in order, each step timed and guarded (a failing step is reported, the others still
run; steps that would start after ``--budget`` seconds are skipped and reported so):

1. the device (name, memory, torch and CUDA versions);
2. ``tests/test_cuda.py``, the device-sensitive tests, on CUDA (pytest, in a subprocess);
3. the medium fixed-ETF solve (K = 100, d = 128, 21 lam, 210,000 samples) in float64 to
   gradient 1e-12 with chunks of 4096 and of 65,536 samples, and in float32;
4. the medium learned-classifier solve to gradient 1e-8 in float64, with its features in
   float32 first (the default, ``mixed_precision``) and in float64 throughout, and in float32;
5. the large problem: K = d = 1000, 200,004 random-pair samples, fixed ETF to gradient 1e-10;
6. a 200-epoch digits MLP run with mixup (``ufm train`` defaults) on CUDA;
7. the paper's setting at small scale: one epoch of a WRN-16-4 with mixup and the crop-and-flip
   augmentation on 2,000 random 3x32x32 images of 10 classes (500 test images), written in
   the CIFAR-10 python format to a temporary folder and read by ``--dataset cifar10``, then
   the final measurement with the default settings; timed as a whole and per part;
8. the roofline: the time of one Newton iteration of the medium solve against one product of
   the same shapes as its logits, (n x r) @ (r x K), measured in the same run;
9. the large problem with a learned classifier (L-BFGS, method ``"newton"``, features in
   float32 first) to gradient 1e-8, stopped after 90 s: its iterations and gradient norm say
   how far a GPU takes the case that needs hours on 2 CPU cores; then the same with method
   ``"newton_gram"`` (trust-region Newton-CG preconditioned by the Gram-entry metric).

Prints a table and writes JSON (default ``results/gpu_check.json``). Meant to finish within
8 minutes on one recent GPU; it needs no network and no data beyond scikit-learn's digits
(the CIFAR-size images are generated).

    python scripts/gpu_check.py [--out results/gpu_check.json] [--budget 450] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# --smoke runs every step on the CPU at small sizes: a check of this script, not of a GPU
SMOKE = {"on": False}


def _device() -> str:
    return "cpu" if SMOKE["on"] else "cuda"


def _sync() -> None:
    if not SMOKE["on"]:
        torch.cuda.synchronize()


def device_info() -> dict:
    if SMOKE["on"]:
        return {"name": "cpu (smoke run)", "torch": torch.__version__}
    properties = torch.cuda.get_device_properties(0)
    return {"name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpu_cores": os.cpu_count()}


def cuda_tests() -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_cuda.py"],
        cwd=ROOT, capture_output=True, text=True)
    tail = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else completed.stderr
    return {"returncode": completed.returncode, "summary": tail}


def timed_solve(**fields) -> dict:
    from ufm.solver import solve
    from ufm.solver.problem import UFMConfig

    _sync()
    start = time.perf_counter()
    result = solve(UFMConfig(device=_device(), **fields))
    _sync()
    seconds = time.perf_counter() - start
    s = result.summary
    out = {"seconds": seconds, "iterations": s["iterations"], "stop_reason": s["stop_reason"],
           "grad_norm": s["grad_norm"], "etf_distance_W": s["etf_distance_W"],
           "peak_gib": 0.0 if SMOKE["on"] else torch.cuda.max_memory_allocated() / 2**30}
    if s.get("theory_distance") is not None:
        out["theory_distance"] = s["theory_distance"]
    if not SMOKE["on"]:
        torch.cuda.reset_peak_memory_stats()
    return out


def digits_run() -> dict:
    from ufm.nets import TrainConfig, run_training

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        epochs = 2 if SMOKE["on"] else 200
        summary = run_training(TrainConfig(epochs=epochs, device=_device()), Path(folder) / "run",
                               progress=False)
        seconds = time.perf_counter() - start
    keys = ("train_accuracy", "test_accuracy", "ece", "nc1", "amplification", "amplification_theory")
    return {"seconds": seconds, **{k: summary[k] for k in keys if k in summary}}


def write_random_cifar10(folder: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Random uint8 images in the CIFAR-10 python format: five training batches and a test
    batch, each a pickled dict with bytes keys (as the original files), every class present."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_train) % 10)
    names = [f"data_batch_{k}" for k in range(1, 6)]
    for name, rows in zip(names, np.array_split(np.arange(n_train), 5)):
        batch = {b"data": rng.integers(0, 256, (len(rows), 3072), dtype=np.uint8),
                 b"labels": labels[rows].tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    test = {b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
            b"labels": (np.arange(n_test) % 10).tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))


def wrn_cifar_run() -> dict:
    """One WRN-16-4 epoch (mixup, augmentation) on random CIFAR-size data, then the final
    measurement; ``epoch_seconds`` is the time to the end of the epoch (data loading and the
    model's construction included), ``measure_seconds`` the rest."""
    import csv

    from ufm.nets import TrainConfig, run_training

    n_train, n_test = (120, 40) if SMOKE["on"] else (2000, 500)
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "cifar-10-batches-py"
        data_dir.mkdir()
        write_random_cifar10(data_dir, n_train, n_test)
        small = dict(width=1, pairs_all_classes=2, pairs_per_class_pair=3, linearity_pairs=20,
                     exact_classifier=False) if SMOKE["on"] else dict(width=4)
        config = TrainConfig(dataset="cifar10", data_dir=folder, model="wrn", depth=16,
                             augment=True, epochs=1, device=_device(), **small)
        if not SMOKE["on"]:
            torch.cuda.reset_peak_memory_stats()
        _sync()
        start = time.perf_counter()
        summary = run_training(config, Path(folder) / "run", progress=False)
        _sync()
        seconds = time.perf_counter() - start
        with (Path(folder) / "run" / "metrics.csv").open() as handle:
            epoch_seconds = float(next(csv.DictReader(handle))["seconds"])
    keys = ("train_accuracy", "test_accuracy", "nc1", "amplification", "amplification_theory")
    return {"seconds": seconds, "epoch_seconds": epoch_seconds,
            "measure_seconds": seconds - epoch_seconds,
            "peak_gib": 0.0 if SMOKE["on"] else torch.cuda.max_memory_allocated() / 2**30,
            **{k: summary[k] for k in keys if k in summary}}


def roofline(dtype: str) -> dict:
    """One Newton iteration of the medium fixed-ETF solve against one logits product."""
    K, d, n = (10, 12, 2_100) if SMOKE["on"] else (100, 128, 210_000)
    r = K - 1
    medium = timed_solve(K=K, d=d, tol=1e-12, dtype=dtype, max_iters=5)
    per_iteration = medium["seconds"] / max(medium["iterations"], 1)
    kind = getattr(torch, dtype)
    X = torch.randn(n, r, device=_device(), dtype=kind)
    A = torch.randn(K, r, device=_device(), dtype=kind)
    for _ in range(3):
        X @ A.T
    _sync()
    start = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        X @ A.T
    _sync()
    matmul = (time.perf_counter() - start) / repeats
    return {"seconds_per_iteration": per_iteration, "matmul_seconds": matmul,
            "iteration_over_matmul": per_iteration / matmul}


def steps() -> list:
    medium = dict(K=8, d=10) if SMOKE["on"] else dict(K=100, d=128)
    large = (dict(K=20, d=20, pairs="random", num_pairs=50) if SMOKE["on"]
             else dict(K=1000, d=1000, pairs="random", num_pairs=9524))
    return [
        ("device", device_info),
        ("tests/test_cuda.py on CUDA", cuda_tests),
        ("medium fixed ETF float64, chunks 4096", lambda: timed_solve(**medium, tol=1e-12)),
        ("medium fixed ETF float64, chunks 65536",
         lambda: timed_solve(**medium, tol=1e-12, chunk_size=65536)),
        ("medium fixed ETF float32", lambda: timed_solve(**medium, tol=1e-12, dtype="float32")),
        ("medium learned W float64 (float32 first)",
         lambda: timed_solve(**medium, classifier="learned", tol=1e-8, time_limit=120)),
        ("medium learned W float64 throughout",
         lambda: timed_solve(**medium, classifier="learned", tol=1e-8, time_limit=120,
                             mixed_precision=False)),
        ("medium learned W float32", lambda: timed_solve(**medium, classifier="learned", tol=1e-5,
                                                        dtype="float32", time_limit=60)),
        ("K = d = 1000 fixed ETF float64", lambda: timed_solve(**large, tol=1e-10, chunk_size=16384)),
        ("digits MLP, 200 mixup epochs", digits_run),
        ("WRN-16-4, 1 epoch on CIFAR-size data", wrn_cifar_run),
        ("roofline float64", lambda: roofline("float64")),
        ("roofline float32", lambda: roofline("float32")),
        # last: the longest, so that --budget skips it rather than the steps above
        ("K = d = 1000 learned W float64 (float32 first), 90 s at most",
         lambda: timed_solve(**large, classifier="learned", tol=1e-8, time_limit=90,
                             chunk_size=16384, method="newton")),
        ("K = d = 1000 learned W, method newton_gram, 90 s at most",
         lambda: timed_solve(**large, classifier="learned", tol=1e-8, time_limit=90,
                             chunk_size=16384, method="newton_gram")),
    ]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/gpu_check.json")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds after which no further step starts")
    parser.add_argument("--smoke", action="store_true",
                        help="run every step on the CPU at small sizes (checks this script only)")
    args = parser.parse_args()
    SMOKE["on"] = args.smoke
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing was run", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from ufm.io import write_json

    started = time.perf_counter()
    report = {}
    for name, step in steps():
        if time.perf_counter() - started > args.budget:
            report[name] = {"status": "skipped: over the time budget"}
            continue
        begin = time.perf_counter()
        try:
            report[name] = {"status": "ok", **step()}
        except Exception as error:  # report and go on: one check must not hide the others
            report[name] = {"status": f"failed: {type(error).__name__}: {error}",
                            "traceback": traceback.format_exc(limit=3)}
        report[name]["step_seconds"] = time.perf_counter() - begin
        shown = {k: v for k, v in report[name].items() if k != "traceback"}
        print(f"{name:42s} " + "  ".join(f"{k}={_cell(v)}" for k, v in shown.items()), flush=True)
    report["total_seconds"] = time.perf_counter() - started
    write_json(args.out, report)
    print(f"\ntotal {report['total_seconds']:.0f} s; wrote {args.out}")
    failed = [k for k, v in report.items() if isinstance(v, dict) and v["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
