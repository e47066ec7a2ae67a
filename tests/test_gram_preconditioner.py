"""The Gram-entry metric (ufm.solver.gram_preconditioner) and method "newton_gram".

The metric must be a symmetric positive definite operator off the rotations (else the
preconditioned conjugate gradients and the trust region built on it are meaningless), must
actually shrink the condition number of the exact reduced Hessian on sparse pairs (its
reason to exist; the Hessian is formed column by column from the exact products of
``NewtonCG.hessian_vector``), and the method preconditioned by it must reach the optimum
that L-BFGS reaches, stationary by an independent autograd gradient in float64.
"""

import pytest
import torch
from solver_support import autograd_stationarity

from ufm.solver import UFMConfig, solve
from ufm.solver.gram_preconditioner import rotation_complement
from ufm.solver.newton_cg import PRECONDITIONERS, NewtonCG
from ufm.solver.problem import build_problem
from ufm.solver.state import RunState

FIELDS = {"num_lams": 5, "classifier": "learned", "mixed_precision": False, "device": "cpu"}


def _method_at(config, W, b=None) -> NewtonCG:
    """A Newton-CG method object with its features solved at (W, b)."""
    method = NewtonCG(RunState(build_problem(config)))
    method._start_features()
    method.state.W, method.state.b = W, b
    method.current = method._evaluate(W, b, 1e-13)
    return method


def _far_point(config):
    problem = build_problem(config)
    return problem.W0.clone(), None if problem.b0 is None else problem.b0.clone()


@pytest.mark.parametrize("loss, bias", [("ce", False), ("ce", True), ("mse", False)])
def test_the_metric_is_symmetric_and_positive_off_the_rotations(loss, bias):
    config = UFMConfig(K=6, d=6, pairs="random", num_pairs=10, loss=loss, bias=bias,
                       lam_b=1e-2 if bias else 0.0, **FIELDS)
    W, b = _far_point(config)
    method = _method_at(config, W, b)
    metric = PRECONDITIONERS["gram"](method)
    size = W.numel() + (6 if bias else 0)
    generator = torch.Generator().manual_seed(2)
    u, v = (torch.randn(size, generator=generator, dtype=W.dtype) for _ in range(2))
    first, second = float(u @ metric(v)), float(v @ metric(u))
    assert abs(first - second) <= 1e-12 * max(abs(first), 1.0)
    basis = rotation_complement(W)
    if bias:
        basis = torch.block_diag(basis, torch.eye(6, dtype=W.dtype))
    columns = torch.stack([metric(basis[:, k]) for k in range(basis.shape[1])], 1)
    reduced = basis.T @ columns
    assert float(torch.linalg.eigvalsh(0.5 * (reduced + reduced.T))[0]) > 0


def test_the_metric_shrinks_the_condition_number_at_the_optimum_of_sparse_pairs():
    """K = d = 16 on 40 random pairs of classes: the exact reduced Hessian off the rotations
    (condition about 7.8) and the same preconditioned by the metric (eigenvalues of
    L^T H L, M = L L^T; about 1.7)."""
    config = UFMConfig(K=16, d=16, pairs="random", num_pairs=40, tol=1e-11, **FIELDS)
    result = solve(config)
    assert result.summary["stop_reason"] == "converged"
    method = _method_at(config, result.W)
    size = result.W.numel()
    hessian = torch.stack([method.hessian_vector(torch.eye(size, dtype=result.W.dtype)[k])
                           for k in range(size)], 1)
    hessian = 0.5 * (hessian + hessian.T)
    basis = rotation_complement(result.W)
    reduced = basis.T @ hessian @ basis
    values = torch.linalg.eigvalsh(reduced)
    metric = PRECONDITIONERS["gram"](method)
    M = basis.T @ torch.stack([metric(basis[:, k]) for k in range(basis.shape[1])], 1)
    L = torch.linalg.cholesky(0.5 * (M + M.T))
    preconditioned = torch.linalg.eigvalsh(L.T @ reduced @ L)
    plain, better = float(values[-1] / values[0]), float(preconditioned[-1] / preconditioned[0])
    assert values[0] > 0 and preconditioned[0] > 0
    assert better < 2.5 and better < plain / 3, (plain, better)


@pytest.mark.parametrize("fields", [
    {"pairs": "random", "num_pairs": 20},
    {"pairs": "random", "num_pairs": 20, "bias": True, "lam_b": 1e-2},
    {"imbalance_ratio": 10.0, "minority_classes": 2},
    {"mixup_points": 3},
])
def test_float32_hessian_products_agree_with_float64_to_float32_accuracy(fields):
    """The copy of the feature solver in float32 that newton_gram's products run on gives
    the float64 product to about 1e-6 (float32 rounding over a few hundred samples), and
    leaves the float64 solver as it was."""
    config = UFMConfig(K=8, d=8, **{**FIELDS, **fields})
    W, b = _far_point(config)
    method = _method_at(config, W, b)
    solver = method.feature_solver
    X = solver.X.clone()
    low = solver.in_dtype(torch.float32)
    assert low.X.dtype == torch.float32 and solver.X.dtype == torch.float64
    size = W.numel() + (0 if b is None else b.numel())
    generator = torch.Generator().manual_seed(3)
    v = torch.randn(size, generator=generator, dtype=W.dtype)
    method._product_rtol = 1e-6
    exact = method.hessian_vector(v)
    rounded = method.hessian_vector(v, low)
    assert rounded.dtype == torch.float64
    error = float((rounded - exact).norm() / exact.norm())
    assert 0 < error <= 1e-5, error
    assert torch.equal(solver.X, X)


def test_products_run_in_float32_only_while_a_few_digits_are_asked():
    from ufm.solver.newton_cg import _FLOAT32_RTOL, GramNewtonCG

    def dtype(rtol, **fields):
        config = UFMConfig(K=5, d=5, **{**FIELDS, **fields})
        method = GramNewtonCG(RunState(build_problem(config)))
        method._product_rtol = rtol
        return method.product_dtype()

    assert dtype(1e-4, mixed_precision=True) == dtype(_FLOAT32_RTOL, mixed_precision=True) == torch.float32
    assert dtype(0.5 * _FLOAT32_RTOL, mixed_precision=True) == torch.float64
    assert dtype(1e-4) == torch.float64  # mixed_precision off
    assert dtype(1e-4, mixed_precision=True, dtype="float32") == torch.float32  # the problem's own
    config = UFMConfig(K=5, d=5, **{**FIELDS, "mixed_precision": True})
    assert NewtonCG(RunState(build_problem(config))).product_dtype() == torch.float64  # 1e-12 asked


@pytest.mark.parametrize("fields", [
    {"K": 8, "d": 8, "pairs": "random", "num_pairs": 20},
    {"K": 6, "d": 4, "pairs": "random", "num_pairs": 14},  # d < K - 1: the Gram matrix has rank d
    {"K": 5, "d": 6, "loss": "mse"},
    {"K": 6, "d": 6, "pairs": "random", "num_pairs": 14, "bias": True, "lam_b": 1e-2},
    {"K": 6, "d": 6, "imbalance_ratio": 10.0, "minority_classes": 2},
    {"K": 5, "d": 5, "mixup_points": 3},
    # float32 features first and float32 Hessian products after
    {"K": 8, "d": 8, "pairs": "random", "num_pairs": 20, "mixed_precision": True},
    {"K": 6, "d": 6, "pairs": "random", "num_pairs": 14, "bias": True, "lam_b": 1e-2,
     "mixed_precision": True},
    {"K": 6, "d": 6, "imbalance_ratio": 10.0, "minority_classes": 2, "mixed_precision": True},
    {"K": 5, "d": 5, "mixup_points": 3, "mixed_precision": True},
    {"K": 5, "d": 6, "classifier": "fixed_etf", "bias": True, "lam_b": 1e-2},  # the bias alone
])
def test_newton_gram_reaches_the_optimum_of_lbfgs(fields):
    both = {**FIELDS, "tol": 1e-11, **fields}
    lbfgs = solve(UFMConfig(**both))
    config = UFMConfig(**both, method="newton_gram")
    result = solve(config)
    assert result.summary["stop_reason"] == "converged"
    assert result.summary["grad_norm"] <= 1e-10
    assert abs(result.summary["loss"] - lbfgs.summary["loss"]) <= 1e-9 * max(1.0, abs(lbfgs.summary["loss"]))
    # F is invariant under rotations of feature space: compare W W^T
    assert float((result.W @ result.W.T - lbfgs.W @ lbfgs.W.T).abs().max()) <= 1e-7
    if result.b is not None:
        assert float((result.b - lbfgs.b).abs().max()) <= 1e-7
    assert autograd_stationarity(config, result) <= 1e-9


@pytest.mark.parametrize("fields", [
    {"K": 6, "d": 6, "pairs": "random", "num_pairs": 14, "bias": True, "lam_b": 1e-2,
     "imbalance_ratio": 10.0, "minority_classes": 2},
    {"K": 5, "d": 5, "mixup_points": 3},
])
def test_hessian_products_of_two_halves_of_the_samples_add_up_to_the_whole(fields):
    """FeatureSolver.subset keeps each sample's classes, weights, sample weight and
    features together: the sums of the even and the odd samples add up to those of all,
    and NewtonCG.hessian_vector, which divides a subsample's sums by the number of samples it
    stands for (its rows, or the samples of its groups of one soft target), gives the whole
    product as the mean of the two halves' weighted by those numbers."""
    config = UFMConfig(**{**FIELDS, **fields})
    W, b = _far_point(config)
    method = _method_at(config, W, b)
    solver = method.feature_solver
    generator = torch.Generator().manual_seed(5)
    D = torch.randn(W.shape, generator=generator, dtype=W.dtype)
    db = None if b is None else torch.randn(b.shape, generator=generator, dtype=b.dtype)
    whole = solver.reduced_hessian_vector(D, db)
    rows = torch.arange(solver.n)
    halves = [solver.subset(rows[rows % 2 == parity]) for parity in (0, 1)]
    sums = [half.reduced_hessian_vector(D, db) for half in halves]
    for k in (0, 1) if db is not None else (0,):
        total = sums[0][k] + sums[1][k]
        assert total.allclose(whole[k], rtol=1e-10, atol=1e-12 * float(whole[k].abs().max()))
    v = torch.cat([D.reshape(-1)] + ([] if db is None else [db]))
    exact = method.hessian_vector(v)
    mean = sum(half.samples * method.hessian_vector(v, half) for half in halves) / solver.samples
    assert float((mean - exact).norm()) <= 1e-10 * float(exact.norm())


@pytest.mark.parametrize("fields", [
    {"K": 8, "d": 8, "pairs": "random", "num_pairs": 20, "mixed_precision": True},
    {"K": 6, "d": 6, "pairs": "random", "num_pairs": 14, "bias": True, "lam_b": 1e-2,
     "imbalance_ratio": 10.0, "minority_classes": 2},
    {"K": 5, "d": 5, "mixup_points": 3},
])
def test_newton_gram_with_subsampled_products_still_reaches_the_optimum(fields, monkeypatch):
    """With the subsample allowed at this small size (its first steps' Hessian products over
    every 4th sample), the optimum and its stationarity are those of the exact method."""
    from ufm.solver.feature_newton import FeatureSolver
    from ufm.solver.newton_cg import GramNewtonCG

    both = {**FIELDS, "tol": 1e-11, **fields}
    exact = solve(UFMConfig(**both, method="newton_gram"))
    sizes = []
    subset = FeatureSolver.subset
    def recording(self, rows, *picked):
        part = subset(self, rows, *picked)
        sizes.append((part.samples, self.samples))
        return part

    monkeypatch.setattr(FeatureSolver, "subset", recording)
    monkeypatch.setattr(GramNewtonCG, "subsample_min_samples", 1)
    config = UFMConfig(**both, method="newton_gram")
    result = solve(config)
    # the subsample was used: a quarter of the samples
    assert sizes and all(abs(size - samples / 4) <= 1 for size, samples in sizes)
    assert result.summary["stop_reason"] == "converged"
    loss = exact.summary["loss"]
    assert abs(result.summary["loss"] - loss) <= 1e-9 * max(1.0, abs(loss))
    assert float((result.W @ result.W.T - exact.W @ exact.W.T).abs().max()) <= 1e-7
    assert autograd_stationarity(config, result) <= 1e-9


def test_a_learned_bias_alone_is_preconditioned_without_factoring_w(monkeypatch):
    """With a fixed classifier only the bias block of the metric is built: its curvature sums
    leave out the (K, K) ones and W is not factored (GramMetric would raise here)."""
    from ufm.solver import newton_cg
    from ufm.solver.feature_newton import FeatureSolver

    def refuse(*args, **kwargs):
        raise AssertionError("GramMetric built for a fixed classifier")

    curvature = FeatureSolver.gram_curvature
    asked = []
    monkeypatch.setattr(newton_cg, "GramMetric", refuse)
    monkeypatch.setattr(newton_cg.GramNewtonCG, "switch_fraction", 1.0)  # Newton steps at once
    monkeypatch.setattr(FeatureSolver, "gram_curvature", lambda self, entries=True:
                        asked.append(entries) or curvature(self, entries))
    config = UFMConfig(**{**FIELDS, "K": 5, "d": 6, "classifier": "fixed_etf", "bias": True,
                          "lam_b": 1e-2, "tol": 1e-11}, method="newton_gram")
    result = solve(config)
    assert asked and not any(asked)
    assert result.summary["stop_reason"] == "converged"
    assert autograd_stationarity(config, result) <= 1e-9
