"""Memory estimates of a solve and a training run, held against the arrays and the measured
peak of real runs, and the check against the memory available."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ufm.memory import MemoryEstimate, _meminfo_available, available_memory, check_memory
from ufm.nets import TrainConfig, build_model
from ufm.nets.memory_estimate import training_memory
from ufm.solver import UFMConfig, build_problem, solve
from ufm.solver.memory_estimate import sample_count, solve_memory


@pytest.mark.parametrize("fields", [
    {},
    {"K": 5, "d": 7, "pairs": "different", "lams": (0.1, 0.5), "samples_per_pair": 2},
    {"K": 5, "d": 5, "pairs": "random", "num_pairs": 9, "alpha": 0.5, "samples_per_pair": 4},
    {"K": 6, "d": 6, "mixup_points": 3, "num_lams": 4},
    {"K": 6, "d": 6, "mixup_points": 4, "pairs": "random", "num_pairs": 7, "alpha": 1.0},
    {"K": 4, "d": 6, "imbalance_ratio": 4.0, "minority_classes": 2, "dtype": "float32"},
])
def test_the_estimate_counts_the_samples_and_features_of_the_problem_exactly(fields):
    config = UFMConfig(**fields)
    problem = build_problem(config)
    assert sample_count(config) == problem.n
    sample_tensors = [problem.classes, problem.weights]
    if problem.mixes_pairs:  # and the contiguous columns of pairs
        sample_tensors += [problem.c, problem.c_prime, problem.lam]
    sample_bytes = sum(t.numel() * t.element_size() for t in sample_tensors)
    parts = solve_memory(config, threads=1).parts
    samples = next(v for k, v in parts.items() if k.startswith("samples"))
    assert samples == sample_bytes
    weight = problem.sample_weight
    assert parts.get("sample weights", 0) == (0 if weight is None else weight.numel() * weight.element_size())
    assert parts["features H (n x d)"] == problem.n * config.d * problem.W0.element_size()


def test_the_estimate_of_a_solve_is_within_a_factor_of_its_arrays():
    config = UFMConfig(K=10, d=32, samples_per_pair=4, classifier="learned", max_iters=3)
    result = solve(config)
    arrays = sum(t.numel() * t.element_size()
                 for t in (result.H, result.W, result.c, result.c_prime, result.lam))
    estimate = solve_memory(config, threads=1).total
    assert arrays < estimate < 6 * arrays


PEAK_PROBE = """
import json, sys
import torch
torch.set_num_threads(1)
from ufm.solver import UFMConfig, solve
from ufm.solver.memory_estimate import solve_memory

def status(key):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(key))

solve(UFMConfig(K=3, d=3, num_lams=3, max_iters=2))  # imports and allocator warmed up
with open("/proc/self/clear_refs", "w") as clear:  # the peak (VmHWM) starts again from now
    clear.write("5")
before = status("VmRSS:")
config = UFMConfig(**json.loads(sys.argv[1]))
solve(config)
print(json.dumps({"peak": status("VmHWM:") - before, "estimate": solve_memory(config, threads=1).total}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/status and clear_refs (Linux)")
@pytest.mark.parametrize("fields", [
    {"K": 10, "d": 64, "samples_per_pair": 80},
    {"K": 10, "d": 64, "samples_per_pair": 60, "classifier": "learned", "max_iters": 4},
])
def test_the_estimate_is_within_a_factor_of_two_of_the_measured_peak(fields):
    """The peak resident memory that a solve of about 100 MB adds to its process."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", PEAK_PROBE, json.dumps(fields)], cwd=root,
                          capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["peak"] / 2 < measured["estimate"] < 2 * measured["peak"], measured


def test_the_estimate_of_a_training_run_counts_its_parameters():
    config = TrainConfig(model="cnn", feature_dim=48)
    model = build_model(config, (3, 32, 32), 10)
    count = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    parts = training_memory(config, (3, 32, 32), 10).parts
    assert parts["parameters and buffers"] == 4 * count
    assert parts["gradients"] == parts["optimizer state"] == 4 * sum(p.numel() for p in model.parameters())
    etf = training_memory(TrainConfig(classifier="fixed_etf", feature_dim=1000), (64,), 10).parts
    assert etf["simplex ETF and its rotation (3 d x d)"] == (10 * 1000 + 3 * 1000**2) * 8
    huge = training_memory(TrainConfig(feature_dim=100_000_000), (64,), 10)
    assert huge.parts["parameters and buffers"] > 100e9  # 269 x 10^8 weights of the last layer


def test_available_memory_and_the_refusal(tmp_path):
    assert available_memory(torch.device("cpu")) > 0
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   2000000 kB\n")
    assert _meminfo_available(meminfo) == 2_048_000_000
    assert _meminfo_available(tmp_path / "missing") is None
    estimate = MemoryEstimate({"features": 3 * 10**12, "other": 5})
    assert estimate.describe() == "about 3,000.0 GB (features 3,000.0 GB, other 0.0 MB)"
    with pytest.raises(ValueError, match="lower K"):
        check_memory(estimate, torch.device("cpu"), "the job", "lower K")
    check_memory(MemoryEstimate({"tiny": 1}), torch.device("cpu"), "the job", "lower K")


def test_the_conjugate_gradient_path_is_counted_for_the_method_that_keeps_one():
    """"auto" keeps newton_gram's path for a learned classifier of up to AUTO_GRAM_MAX_K
    classes and none above (it takes L-BFGS there); a fixed classifier keeps none."""
    from ufm.solver.methods import AUTO_GRAM_MAX_K

    name = "conjugate-gradient path of the classifier"

    def parts(**fields):
        return solve_memory(UFMConfig(d=4, pairs="random", num_pairs=50, num_lams=2, **fields),
                            threads=1).parts

    assert name in parts(K=AUTO_GRAM_MAX_K, classifier="learned")
    assert name not in parts(K=AUTO_GRAM_MAX_K + 1, classifier="learned")
    assert name in parts(K=AUTO_GRAM_MAX_K + 1, classifier="learned", method="newton_gram")
    assert name not in parts(K=AUTO_GRAM_MAX_K, classifier="learned", method="newton")
    assert name not in solve_memory(UFMConfig(K=5, d=4, num_lams=2), threads=1).parts  # fixed ETF
