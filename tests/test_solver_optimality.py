"""The learned classifier's certificate of global optimality (:mod:`ufm.solver.optimality`).

The curvature C is checked against logit gradients formed by autograd and C W against the
solver's gradient in W; the bound against the gap to a tight solve's objective, at loose
solves (where it must hold) and at a saddle (the best classifier of rank 1, where it must not
vanish); and every registered loss's declared floor against its values.
"""

import pytest
import torch

from ufm.losses import LOSSES, get_loss
from ufm.solver import UFMConfig, solve
from ufm.solver.optimality import gradient_outer_sum, learned_optimality
from ufm.solver.problem import build_problem

FIELDS = {"K": 6, "d": 6, "num_lams": 5, "classifier": "learned", "mixed_precision": False,
          "pairs": "random", "num_pairs": 10}


def _autograd_curvature(config, result):
    """C = lam_W I - sum_s w_s g_s g_s^T / (lam_H n), g_s by autograd of the loss's values."""
    problem = build_problem(config)
    z = (result.H @ result.W.T).requires_grad_(True)
    logits = z if result.b is None else z + result.b
    values = problem.loss.mixture_value(logits, problem.classes, problem.weights)
    weight = problem.sample_weight
    total = values.sum() if weight is None else (weight * values).sum()
    g, = torch.autograd.grad(total, z)
    outer = g.T @ (g if weight is None else g / weight[:, None])  # w_s g_s g_s^T, once
    eye = torch.eye(config.K, dtype=torch.float64)
    return config.lam_W * eye - outer / (config.lam_H * problem.n)


@pytest.mark.parametrize("extra", [{}, {"imbalance_ratio": 4.0, "minority_classes": 2},
                                   {"bias": True, "lam_b": 1e-2}, {"loss": "mse"}])
def test_the_curvature_is_that_of_the_autograd_logit_gradients(extra):
    config = UFMConfig(**FIELDS, tol=1e-6, **extra)
    result = solve(config)
    C = _autograd_curvature(config, result)
    outer = gradient_outer_sum(build_problem(config), result.H, result.W, result.b)
    eye = torch.eye(config.K, dtype=torch.float64)
    mine = config.lam_W * eye - outer / (config.lam_H * result.summary["n"])
    assert float((mine - C).abs().max()) <= 1e-12 * float(C.abs().max())
    smallest = float(torch.linalg.eigvalsh(C)[0]) / config.lam_W
    assert abs(result.summary["off_row_curvature_min"] - smallest) <= 1e-10


@pytest.mark.parametrize("extra", [{}, {"imbalance_ratio": 4.0, "minority_classes": 2},
                                   {"bias": True, "lam_b": 1e-2}, {"loss": "mse"}])
def test_the_bound_holds_at_a_loose_solve_and_vanishes_at_a_tight_one(extra):
    tight = solve(UFMConfig(**FIELDS, tol=1e-11, **extra))
    for tol in (1e-2, 1e-3):
        loose = solve(UFMConfig(**FIELDS, tol=tol, **extra))
        gap = loose.summary["loss"] - tight.summary["loss"]
        assert gap > 0
        assert loose.summary["optimality_gap_bound"] >= gap
    assert tight.summary["optimality_gap_bound"] <= 1e-8
    assert tight.summary["off_row_curvature_min"] >= -1e-6


def test_C_W_is_the_solvers_gradient_in_W():
    # grad_W F = C W at any W, the features solved for it: C is 2 grad_G of the solver's F
    from ufm.solver.newton import newton_method
    from ufm.solver.state import RunState

    config = UFMConfig(**FIELDS, imbalance_ratio=3.0, minority_classes=2)
    problem = build_problem(config)
    method = newton_method(RunState(problem))
    method._start_features()
    W = problem.W0
    iterate = method._evaluate(W, None, 1e-13)
    outer = gradient_outer_sum(problem, method.features(), W, None)
    C = config.lam_W * torch.eye(config.K, dtype=torch.float64) - outer / (config.lam_H * problem.n)
    grad_W = iterate.theta_grad.reshape(W.shape)
    assert float((C @ W - grad_W).abs().max()) <= 1e-10 * float(grad_W.abs().max())


def test_a_saddle_is_not_certified():
    # the best classifier of rank 1 (a solve at d = 1), embedded in d = 6 with zero columns,
    # is a stationary point of the d = 6 problem (every gradient of the zero columns and
    # feature coordinates vanishes) but not its minimum
    config = UFMConfig(**FIELDS, tol=1e-11)
    with pytest.warns(UserWarning, match="simplex ETF"):  # d = 1 < K - 1
        narrow = solve(UFMConfig(**{**FIELDS, "d": 1}, tol=1e-11))
    H = torch.zeros(narrow.H.shape[0], config.d, dtype=torch.float64)
    W = torch.zeros(config.K, config.d, dtype=torch.float64)
    H[:, :1], W[:, :1] = narrow.H, narrow.W
    minimum = solve(config)
    gap = narrow.summary["loss"] - minimum.summary["loss"]
    assert gap > 1e-3
    report = learned_optimality(build_problem(config), H, W, None, narrow.summary["loss"], None)
    assert report["rank_W"] == 1 and report["off_row_curvature_min"] < -0.1
    assert report["optimality_gap_bound"] >= gap
    assert minimum.summary["optimality_gap_bound"] <= 1e-8


def test_a_solve_stuck_on_a_saddle_says_so(monkeypatch):
    # Newton-CG confined to the row space of a classifier of rank 1, without growth, cannot
    # leave it: it converges there, and the solve warns that this is not the minimum
    from ufm.solver.newton_cg import NewtonCG

    monkeypatch.setattr(NewtonCG, "confine_to_row_space", True)
    config = UFMConfig(**FIELDS, tol=1e-9, method="newton_cg")
    u, s, vh = torch.linalg.svd(build_problem(config).W0)
    with pytest.warns(UserWarning, match="not the global minimum"):
        result = solve(config, W_init=s[0] * torch.outer(u[:, 0], vh[0]))
    assert result.summary["stop_reason"] == "converged" and result.summary["rank_W"] == 1
    assert result.summary["optimality_gap_bound"] > 1e-3


def test_no_bound_where_its_terms_are_unbounded_or_the_loss_not_convex():
    # a learned bias without lam_b: nothing bounds the optimal bias; focal loss: F is not
    # convex in the Gram matrix. The curvature is still reported
    for extra in ({"bias": True}, {"loss": "focal"}):
        result = solve(UFMConfig(**FIELDS, tol=1e-6, **extra))
        assert result.summary["optimality_gap_bound"] is None
        assert result.summary["off_row_curvature_min"] is not None


def test_a_fixed_classifier_has_no_certificate():
    result = solve(UFMConfig(K=4, d=4, num_lams=3, tol=1e-8))
    assert "optimality_gap_bound" not in result.summary


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_declared_floor_is_below_the_values(name):
    loss = get_loss(name)
    if loss.lower_bound is None:
        pytest.skip(f"{name} declares no floor")
    generator = torch.Generator().manual_seed(1)
    z = 10 * torch.randn(4000, 5, generator=generator, dtype=torch.float64)
    classes = torch.randint(0, 5, (4000, 2), generator=generator)
    lam = torch.rand(4000, 1, generator=generator, dtype=torch.float64)
    values = loss.mixture_value(z, classes, torch.cat([lam, 1 - lam], 1))
    assert float(values.min()) >= loss.lower_bound
    # a learned solve bounds its gap exactly where the loss is also convex
    result = solve(UFMConfig(K=5, d=5, num_lams=3, classifier="learned", loss=name, tol=1e-6))
    assert (result.summary["optimality_gap_bound"] is not None) == loss.convex
