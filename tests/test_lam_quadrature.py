"""The quadrature of the lam grid (ufm.solver.lam_quadrature) and Hessian products on it.

The rule's exactness is checked against sums in exact rational arithmetic; its products
against the products over all samples: exactly equal where every term is a polynomial of low
degree in lam (the squared error, whose features are linear in lam), close for cross-entropy,
and the solve that uses them must still reach the optimum, stationary by autograd.
"""

from fractions import Fraction

import pytest
import torch
from solver_support import autograd_stationarity, newton_gram_at_start, random_direction

from ufm.solver import UFMConfig, solve
from ufm.solver.feature_newton import FeatureSolver
from ufm.solver.lam_quadrature import QUADRATURE_NODES, grid_quadrature, sample_quadrature
from ufm.solver.newton_cg import GramNewtonCG
from ufm.solver.problem import build_problem


def _grids():
    # 25 values crowded towards 1/2
    steps = torch.arange(25, dtype=torch.float64) - 12
    uneven = 0.5 + 0.5 * torch.sign(steps) * (steps.abs() / 12) ** 2
    return {
        "21 even": torch.linspace(0.0, 1.0, 21, dtype=torch.float64),
        "31 even": torch.linspace(0.0, 1.0, 31, dtype=torch.float64),
        "101 even": torch.linspace(0.0, 1.0, 101, dtype=torch.float64),
        "25 uneven": uneven,
        "21 inside": torch.linspace(0.1, 0.9, 21, dtype=torch.float64),
    }


@pytest.mark.parametrize("name", list(_grids()))
def test_the_rule_sums_every_polynomial_below_its_node_count_exactly(name):
    """sum_k w_k g_k^p = sum_j g_j^p for p < 11, the right side in exact rationals (every
    float is one); at degree 12 the rule is off (an even degree: on a symmetric grid the
    symmetric rule sums every odd one exactly), so the check can fail."""
    grid = _grids()[name]
    weights = grid_quadrature(grid)
    assert weights is not None
    nodes = torch.nonzero(weights).squeeze(1)
    assert nodes.numel() == QUADRATURE_NODES and bool((weights[nodes] > 0).all())
    values = [Fraction(float(g)) for g in grid]
    for power in range(QUADRATURE_NODES):
        exact = sum(v**power for v in values)
        rule = sum(float(weights[j]) * float(grid[j]) ** power for j in nodes.tolist())
        assert abs(rule - float(exact)) <= 1e-12 * float(exact)
    power = QUADRATURE_NODES + 1  # even: a symmetric grid's rule is exact for odd degrees
    exact = float(sum(v**power for v in values))
    rule = sum(float(weights[j]) * float(grid[j]) ** power for j in nodes.tolist())
    assert abs(rule - exact) > 1e-10 * exact


def test_grids_without_a_rule():
    """Too few values to about halve the work, a repeated value, a single value, a rule with
    a weight below 0 (25 random values), or no nodes asked for."""
    assert grid_quadrature(torch.linspace(0.0, 1.0, 20, dtype=torch.float64)) is None
    assert grid_quadrature(torch.tensor([0.5], dtype=torch.float64), nodes=1) is None
    generator = torch.Generator().manual_seed(11)
    random = torch.sort(torch.rand(25, generator=generator, dtype=torch.float64)).values
    assert grid_quadrature(random) is None
    assert grid_quadrature(torch.linspace(0.0, 1.0, 5, dtype=torch.float64), nodes=3) is not None
    repeated = torch.cat([torch.linspace(0.0, 1.0, 21, dtype=torch.float64), torch.tensor([0.5])])
    assert grid_quadrature(repeated) is None
    with pytest.raises(ValueError, match="nodes must be >= 1, got 0"):
        grid_quadrature(torch.linspace(0.0, 1.0, 21, dtype=torch.float64), nodes=0)


def test_the_problem_knows_each_samples_grid_position():
    """lam_index points into config.lam_grid() for pairs on a grid, several samples per
    value included; Beta draws and m-class mixtures have none."""
    config = UFMConfig(K=4, d=4, num_lams=7, samples_per_pair=2)
    problem = build_problem(config)
    grid_lam = config.lam_grid()[problem.lam_index].to(problem.dtype)
    assert torch.equal(grid_lam, problem.weights[:, 0])
    weights = sample_quadrature(problem.lam_index, config.lam_grid(), nodes=3)
    # every pair keeps its share: the weights of its samples sum to its sample count
    assert abs(float(weights.sum()) - problem.n) <= 1e-12 * problem.n
    assert build_problem(UFMConfig(K=4, d=4, alpha=1.0)).lam_index is None
    assert build_problem(UFMConfig(K=4, d=4, mixup_points=3)).lam_index is None


@pytest.mark.parametrize("lams, rule", [
    # 21 values, unsorted: a rule on the sorted values, each sample's position found
    (tuple(0.05 * ((8 * k) % 21) for k in range(21)), True),
    # a repeated value: no rule, the stride subsample of the first steps instead
    (tuple(0.05 * k for k in range(21)) + (0.05 * 10,), False),
])
def test_explicit_lam_grids_through_the_problem(lams, rule, monkeypatch):
    """``lams`` as the user gives them: each sample's grid position points at its own lam,
    and the rule is made on the grid in any order, or not at all."""
    config = UFMConfig(**{**QUADRATURE_FIELDS, "lams": lams})
    problem = build_problem(config)
    assert torch.equal(config.lam_grid()[problem.lam_index].to(problem.dtype),
                       problem.weights[:, 0])
    method = newton_gram_at_start(config, monkeypatch)
    assert bool(method._quadrature_samples()) == rule
    if rule:
        subsample = method._product_samples()
        assert abs(subsample.samples - problem.n) <= 1e-9 * problem.n


QUADRATURE_FIELDS = {"K": 6, "d": 6, "pairs": "random", "num_pairs": 14, "num_lams": 21,
                     "classifier": "learned", "mixed_precision": False}


@pytest.mark.parametrize("fields", [
    {},
    # the samples of one target weigh differently: a pure class by its partner's size
    {"imbalance_ratio": 10.0, "minority_classes": 2, "bias": True, "lam_b": 1e-2},
])
def test_grouped_quadrature_products_are_those_of_the_samples_one_by_one(fields, monkeypatch):
    """Grouped, each group weighs its samples at the rule's nodes by their quadrature and
    sample weights; the products equal those of the same samples solved one by one."""
    config = UFMConfig(**{**QUADRATURE_FIELDS, **fields})
    grouped = newton_gram_at_start(config, monkeypatch)
    alone = newton_gram_at_start(config, monkeypatch, grouped=False)
    subsample, reference = grouped._product_samples(), alone._product_samples()
    assert subsample.n < reference.n < alone.feature_solver.n
    assert abs(subsample.samples - alone.feature_solver.n) <= 1e-12 * alone.feature_solver.n
    v = random_direction(config)
    product, expected = grouped.hessian_vector(v, subsample), alone.hessian_vector(v, reference)
    assert float((product - expected).norm()) <= 1e-10 * float(expected.norm())


def test_quadrature_products_are_exact_where_the_terms_are_polynomial_in_lam(monkeypatch):
    """With the squared error the features are linear in lam and each sample's share of a
    Hessian product is quadratic in it, so the rule's products are the exact ones."""
    config = UFMConfig(**{**QUADRATURE_FIELDS, "loss": "mse"})
    method = newton_gram_at_start(config, monkeypatch)
    subsample = method._product_samples()
    assert subsample.n < method.feature_solver.n
    v = random_direction(config)
    exact = method.hessian_vector(v, method.feature_solver)
    error = float((method.hessian_vector(v, subsample) - exact).norm())
    assert error <= 1e-12 * float(exact.norm())


def test_quadrature_products_of_cross_entropy_are_close_and_closer_than_a_stride(monkeypatch):
    """Cross-entropy's terms are smooth in lam, not polynomial: the rule's product is close
    to the exact one, and far closer than that of every 4th sample."""
    config = UFMConfig(**QUADRATURE_FIELDS)
    method = newton_gram_at_start(config, monkeypatch)
    v = random_direction(config)
    exact = method.hessian_vector(v, method.feature_solver)
    quadrature = float((method.hessian_vector(v, method._product_samples()) - exact).norm())
    monkeypatch.setattr(GramNewtonCG, "quadrature_nodes", 0)
    monkeypatch.setattr(GramNewtonCG, "subsample_min_samples", 1)
    method._quadrature = None
    stride = float((method.hessian_vector(v, method._product_samples()) - exact).norm())
    assert quadrature <= 1e-3 * float(exact.norm())
    assert quadrature <= 0.1 * stride


@pytest.mark.parametrize("fields", [
    {},
    {"bias": True, "lam_b": 1e-2, "imbalance_ratio": 10.0, "minority_classes": 2,
     "mixed_precision": True},
])
def test_newton_gram_on_quadrature_products_reaches_the_optimum(fields, monkeypatch):
    """Every Hessian product on the rule's samples; the gradient stays exact, so the end point
    is the optimum of L-BFGS, stationary by autograd."""
    both = {**QUADRATURE_FIELDS, "tol": 1e-11, **fields}
    lbfgs = solve(UFMConfig(**both))
    subsets = []
    subset = FeatureSolver.subset

    def recording(self, rows, *picked):
        part = subset(self, rows, *picked)
        subsets.append((part.n, self.n, part.samples, self.samples))
        return part

    monkeypatch.setattr(FeatureSolver, "subset", recording)
    config = UFMConfig(**both, method="newton_gram")
    result = solve(config)
    # fewer rows standing for all samples: the quadrature (a stride stands for a quarter)
    assert subsets and all(rows < n and abs(samples - whole) <= 1e-9 * whole
                           for rows, n, samples, whole in subsets)
    assert result.summary["stop_reason"] == "converged"
    loss = lbfgs.summary["loss"]
    assert abs(result.summary["loss"] - loss) <= 1e-9 * max(1.0, abs(loss))
    assert float((result.W @ result.W.T - lbfgs.W @ lbfgs.W.T).abs().max()) <= 1e-7
    assert autograd_stationarity(config, result) <= 1e-9
