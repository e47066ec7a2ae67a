"""The device-sensitive parts on CUDA, against the same computation on the CPU.

Every test here needs a CUDA device and is skipped (reported as skipped, never as passed)
where there is none. ``scripts/gpu_check.py`` runs this file first on a GPU machine.
"""

import pytest
import torch

from ufm.metrics import calibration_metrics, collapse_metrics
from ufm.solver import solve
from ufm.solver.problem import UFMConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype,bound", [("float64", 1e-10), ("float32", 1e-5)])
def test_fixed_etf_solve_on_cuda_matches_the_theory(dtype, bound):
    result = solve(UFMConfig(K=10, d=32, device="cuda", dtype=dtype, tol=1e-12))
    assert result.H.device.type == "cuda"
    assert result.stop_reason in ("converged", "rounding")
    assert result.summary["theory_distance"] <= bound


def test_learned_solve_on_cuda_agrees_with_the_cpu():
    base = dict(K=6, d=8, num_lams=7, classifier="learned", tol=1e-9)
    gpu, cpu = solve(UFMConfig(**base, device="cuda")), solve(UFMConfig(**base, device="cpu"))
    assert gpu.stop_reason == cpu.stop_reason == "converged"
    # two converged solves of a strictly convex problem: agree to the tolerance's scale
    assert float((gpu.W.cpu() - cpu.W).norm() / cpu.W.norm()) <= 1e-6
    assert gpu.summary["etf_distance_W"] <= 1e-6


def test_mixture_solve_on_cuda_matches_the_theory():
    result = solve(UFMConfig(K=5, d=6, mixup_points=3, num_lams=4, device="cuda", tol=1e-11))
    assert result.summary["theory_distance"] <= 1e-9


def metrics_on(device):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(300, 16, generator=generator, dtype=torch.float64)
    labels = torch.arange(300) % 5
    weight = torch.randn(5, 16, generator=generator, dtype=torch.float64)
    logits = features @ weight.T
    return {**collapse_metrics(features.to(device), labels.to(device), weight.to(device)),
            **calibration_metrics(logits.to(device), labels.to(device))}


def test_metrics_on_cuda_equal_the_cpu_values():
    on_cpu, on_gpu = metrics_on("cpu"), metrics_on("cuda")
    assert set(on_cpu) == set(on_gpu)
    for name, value in on_cpu.items():
        if not isinstance(value, float):
            continue  # counts and the reliability table
        assert abs(on_gpu[name] - value) <= 1e-9 * max(1.0, abs(value)), name


def test_a_short_digits_mixup_run_on_cuda(tmp_path):
    from ufm.nets import TrainConfig, run_training

    summary = run_training(TrainConfig(epochs=3, device="cuda", measure_every=0), tmp_path / "run",
                           progress=False)
    assert summary["train_accuracy"] > 0.5
