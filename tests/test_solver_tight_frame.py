"""Feature solves in logit coordinates for a tight-frame classifier (ufm.solver.frames).

Each result is checked against the SVD frame (``coordinates="row_space"``), an independent
path through the same objective, and the Sherman-Morrison inverse against a dense solve.
"""

from __future__ import annotations

import math

import pytest
import torch

import ufm
from ufm.solver.feature_newton import FeatureSolver
from ufm.solver.problem import build_problem
from ufm.solver.reference import TheoryReference
from ufm.solver.frames import tight_frame


def _orthonormal_rows(K, d, scale, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return scale * q.T


@pytest.mark.parametrize("K, d", [(3, 2), (10, 32), (100, 128), (300, 300)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_simplex_etfs_are_centred_tight_frames(K, d, dtype):
    W = ufm.simplex_etf(K, d, scale=2.0).to(dtype)
    kind, sigma = tight_frame(W)
    assert kind == "centred"
    # W W^T = s^2 (I - 11^T/K) with row norm 2: s^2 (1 - 1/K) = 4
    assert abs(sigma - 2.0 / math.sqrt(1 - 1 / K)) < 1e3 * torch.finfo(dtype).eps


def test_other_classifiers():
    assert tight_frame(_orthonormal_rows(5, 8, 3.0)) == ("full", pytest.approx(3.0, abs=1e-14))
    assert tight_frame(torch.randn(5, 8, dtype=torch.float64)) is None
    W = ufm.simplex_etf(10, 12)
    W[0] *= 1 + 1e-9  # far above rounding in float64
    assert tight_frame(W) is None
    assert tight_frame(ufm.simplex_etf(10, 12)[:, :8].contiguous()) is None  # rank 8 < K - 1


CASES = [
    dict(K=10, d=32),
    dict(K=10, d=32, loss="label_smoothing"),
    dict(K=10, d=32, loss="mse"),
    dict(K=8, d=12, loss="focal"),
    dict(K=6, d=6, mixup_points=3, pairs="all", num_lams=4),
    dict(K=6, d=8, bias=True),
    dict(K=6, d=8, loss="mse", bias=True),
    dict(K=7, d=6, pairs="random", num_pairs=30, alpha=0.4, samples_per_pair=3),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_logit_coordinates_give_the_row_space_solution(case):
    # float64 throughout (a learned bias would start in float32), so that only the
    # coordinates differ; tests/test_solver_mixed_precision.py checks that phase
    fast = ufm.solve(ufm.UFMConfig(**case, tol=1e-12, mixed_precision=False))
    slow = ufm.solve(ufm.UFMConfig(**case, tol=1e-12, coordinates="row_space", mixed_precision=False))
    for result in (fast, slow):
        assert result.summary["stop_reason"] == "converged"
        assert result.summary["grad_norm"] <= 1e-12
    assert float((fast.H - slow.H).norm() / slow.H.norm()) < 1e-11
    if case.get("bias"):
        assert float((fast.b - slow.b).norm()) < 1e-10


def test_a_full_tight_frame_with_unequal_probabilities():
    # orthonormal rows (d >= K): range(P) = R^K, the probabilities of the other classes differ
    W = _orthonormal_rows(6, 9, 1.5, seed=3)
    config = dict(K=6, d=9, classifier="fixed", tol=1e-12)
    fast = ufm.solve(ufm.UFMConfig(**config), W_init=W)
    slow = ufm.solve(ufm.UFMConfig(**config, coordinates="row_space"), W_init=W)
    assert fast.summary["grad_norm"] <= 1e-12
    assert float((fast.H - slow.H).norm() / slow.H.norm()) < 1e-11


def test_sherman_morrison_inverts_the_hessian():
    K, sigma, lam_H = 7, 1.3, 5e-3
    problem = build_problem(ufm.UFMConfig(K=K, d=9, classifier="fixed"), W_init=_orthonormal_rows(K, 9, sigma))
    solver = FeatureSolver.pairs(problem.c, problem.c_prime, problem.lam, problem.loss, lam_H, logit_coordinates=True)
    solver.set_classifier(problem.W0, None)
    generator = torch.Generator().manual_seed(1)
    p = torch.softmax(3 * torch.randn(4, K, generator=generator, dtype=torch.float64), dim=-1)
    v = torch.randn(4, K, generator=generator, dtype=torch.float64)
    apply, exact, *_ = solver._preconditioner(p, torch.arange(4))
    assert exact
    for s in range(4):
        hessian = sigma**2 * (torch.diag(p[s]) - torch.outer(p[s], p[s])) + lam_H * torch.eye(K, dtype=torch.float64)
        expected = torch.linalg.solve(hessian, v[s])
        assert float((apply(v)[s] - expected).norm() / expected.norm()) < 1e-12


def test_theory_distance_in_logit_coordinates():
    # a few iterations from the optimum, where the distance is far above rounding
    result = ufm.solve(ufm.UFMConfig(K=9, d=11, pairs="random", num_pairs=40, tol=1e-12, max_iters=2))
    problem = build_problem(result.config)
    reference = TheoryReference.build(problem)
    from_features = reference.distance(result.H, problem.W0)
    assert from_features > 1e-4
    assert abs(result.summary["theory_distance"] - from_features) < 1e-10 * from_features
    per_lam = reference.distance_per_lam(result.H, problem.W0)
    # pure samples (lam = 0, 1) start at their exact optimum: their distance is at rounding,
    # where the two computations agree to an absolute 1e-14 only
    for lam, value in result.summary["theory_distance_per_lam"].items():
        assert abs(value - per_lam[lam]) <= 1e-10 * per_lam[lam] + 1e-14


def test_a_checkpoint_in_the_svd_frame_is_carried_over():
    problem = build_problem(ufm.UFMConfig(K=6, d=8))
    svd = FeatureSolver.pairs(problem.c, problem.c_prime, problem.lam, problem.loss, 5e-3)
    svd.set_classifier(problem.W0, None)
    svd.newton_pass(1e-12)
    logit = FeatureSolver.pairs(problem.c, problem.c_prime, problem.lam, problem.loss, 5e-3, logit_coordinates=True)
    logit.load_state_dict(svd.state_dict())  # no "frame": saved in the SVD frame
    assert logit.frame.kind == "centred"
    assert float((logit.features() - svd.features()).norm() / svd.features().norm()) < 1e-13


def test_default_chunk_rows():
    assert ufm.UFMConfig(K=10).chunk_rows == 4096
    assert ufm.UFMConfig(K=1000, d=1000).chunk_rows == 1048
    assert ufm.UFMConfig(K=10, chunk_size=77).chunk_rows == 77
