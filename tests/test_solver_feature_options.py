"""The feature solver's constructor options (sample weights, classifier sums, start coordinates)
and its per-sample backtracking line search."""

import math

import torch

from ufm.solver.feature_newton import _ARMIJO, FeatureSolver
from ufm.solver.problem import UFMConfig, build_problem


def _problem(**fields):
    config = UFMConfig(**{"K": 4, "d": 5, "num_lams": 5, "classifier": "fixed", "seed": 2, **fields})
    return config, build_problem(config)


def _solver(problem, config, **options) -> FeatureSolver:
    return FeatureSolver.pairs(problem.c, problem.c_prime, problem.lam, problem.loss, config.lam_H, 16,
                         **options)


def _random_features(solver, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    solver.X = torch.randn(solver.X.shape, generator=generator, dtype=solver.X.dtype)


def _phi(problem, config, H, W, rows=slice(None)):
    """Per-sample objective ell(W h) + lam_H/2 |h|^2 of the samples ``rows`` (H holds their
    features), written out with the loss itself."""
    value = problem.loss(H @ W.T, problem.c[rows], problem.c_prime[rows], problem.lam[rows])
    return value + 0.5 * config.lam_H * (H * H).sum(1)


def test_sample_weights_and_classifier_sums_are_constructor_options():
    config, problem = _problem()
    W = problem.W0
    weight = torch.linspace(0.5, 1.5, problem.n, dtype=torch.float64)
    plain = _solver(problem, config)
    weighted = _solver(problem, config, sample_weight=weight)
    without_W = _solver(problem, config, sample_weight=weight, grad_W_needed=False)
    for solver in (plain, weighted, without_W):
        solver.set_classifier(W, None)
        _random_features(solver, seed=1)
    H = plain.features()
    phi = _phi(problem, config, H, W)
    stats = {name: solver.evaluate() for name, solver in
             (("plain", plain), ("weighted", weighted), ("without_W", without_W))}
    assert math.isclose(stats["plain"].objective_sum, float(phi.sum()), rel_tol=1e-13)
    assert math.isclose(stats["weighted"].objective_sum, float((weight * phi).sum()), rel_tol=1e-13)
    assert stats["without_W"].objective_sum == stats["weighted"].objective_sum
    # the classifier sums: formed when asked for, zero when not
    assert float(stats["weighted"].grad_W.norm()) > 1e-3
    assert not bool(stats["without_W"].grad_W.any())
    assert torch.equal(stats["without_W"].grad_b, stats["weighted"].grad_b)


def test_start_coordinates_are_carried_over_to_the_first_classifier():
    config, problem = _problem()
    source = _solver(problem, config)
    source.set_classifier(problem.W0, None)
    _random_features(source, seed=3)
    H = source.features()
    W_new = problem.W0 + 0.2 * torch.randn(problem.W0.shape, generator=torch.Generator().manual_seed(4),
                                           dtype=problem.W0.dtype)
    started = _solver(problem, config, coordinates=(source.X, source.V))
    started.set_classifier(W_new, None)
    # the features in the row space of the new W: H projected onto it
    _, _, V_new = torch.linalg.svd(W_new, full_matrices=False)
    projected = H @ V_new.T @ V_new
    assert float((started.features() - projected).norm() / projected.norm()) < 1e-13
    fresh = _solver(problem, config)
    fresh.set_classifier(W_new, None)
    assert not bool(fresh.X.any())  # without coordinates: zeros


def _overshooting_steps():
    """Random features and steps of ten times their gradient, which overshoot for some
    samples: (config, problem, solver, x, f, direction, decrease, search), ``search(measure)``
    the line search of these steps from x without a rounding level."""
    config, problem = _problem(init_scale=3.0)
    solver = _solver(problem, config)
    solver.set_classifier(problem.W0, None)
    _random_features(solver, seed=5)
    idx = torch.arange(solver.n)
    x, z, value, _, _, grad = solver._measure(idx)
    f = value + 0.5 * config.lam_H * (x * x).sum(1)
    direction = 10.0 * grad
    decrease = (grad * direction).sum(1)

    def search(measure):
        return solver._line_search(x.clone(), z, direction, solver._to_logits(direction), idx, f,
                                   decrease, torch.zeros_like(f), measure=measure)

    return config, problem, solver, x, f, direction, decrease, search


def test_line_search_halves_each_samples_step_until_armijo_holds():
    """Steps of ten times the gradient overshoot for some samples: each accepted sample moves
    by t = 1/2^k of its direction with the Armijo decrease, the full step where it passes."""
    config, problem, solver, x, f, direction, decrease, search = _overshooting_steps()
    new_x, accepted, full = search(measure=False)
    assert full is None and bool(accepted.all())
    moved = x - new_x
    fraction = (moved * direction).sum(1) / (direction * direction).sum(1)
    halvings = -torch.log2(fraction)
    assert torch.allclose(halvings, halvings.round(), atol=1e-9)
    t = 0.5 ** halvings.round()
    assert torch.allclose(moved, t[:, None] * direction, rtol=0, atol=1e-12)
    assert bool((t == 1).any()) and bool((t < 1).any())  # some full steps, some halved
    f_new = _phi(problem, config, new_x @ solver.V.T, problem.W0)
    assert bool((f_new <= f - _ARMIJO * t * decrease + 1e-12).all())
    # a sample takes the first t that passes: at 2t its test failed
    halved = (t < 1).nonzero().squeeze(1)
    x_longer = x[halved] - 2 * t[halved, None] * direction[halved]
    f_longer = _phi(problem, config, x_longer @ solver.V.T, problem.W0, halved)
    assert bool((f_longer > f[halved] - _ARMIJO * 2 * t[halved] * decrease[halved]).all())


def test_line_search_records_the_full_step_of_every_sample():
    """With ``measure`` the line search hands back what the full step measured: which samples
    took it (not also those accepted after halving: their gradients at the full step say
    nothing of where they are), and the loss terms there."""
    _, problem, solver, x, _, direction, _, search = _overshooting_steps()
    new_x, accepted, full = search(measure=True)
    at_full, value_full, g_full = full
    took_full = (new_x - (x - direction)).norm(dim=1) == 0
    assert bool(accepted.all()) and bool(took_full.any()) and bool((~took_full).any())
    assert torch.equal(at_full, took_full)
    z_full = (x - direction) @ solver.V.T @ problem.W0.T
    loss_full = problem.loss(z_full, problem.c, problem.c_prime, problem.lam)
    assert torch.allclose(value_full, loss_full, rtol=1e-12, atol=1e-12)
    assert torch.allclose(g_full.sum(1), torch.zeros_like(value_full), atol=1e-12)
