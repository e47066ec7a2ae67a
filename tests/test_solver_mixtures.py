"""The UFM solver for mixtures of m > 2 classes (``UFMConfig(mixup_points=m)``).

Checked against the exact theory (``ufm.mixture_features``), the CVXPY certificate for soft
targets, finite differences and dense linear algebra, all computed here independently of the
solver's own m-class code.
"""

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ufm.cli import main
from ufm.etf import etf_distance, simplex_etf
from ufm.losses import Focal, get_loss
from ufm.solver import UFMConfig, build_problem, load_result, solve
from ufm.solver.feature_newton import FeatureSolver
from ufm.theory import mixture_features, mixture_target

LAM_H = 5e-3


def _relative(H, exact):
    return float((H - exact).norm() / exact.norm())


def _soft_loss(loss, z, classes, weights):
    """Per-sample loss of m-class mixtures written out from its definition (the module docstring)."""
    K = z.shape[1]
    y = mixture_target(classes, weights, K)
    if loss.name == "ce":
        return torch.logsumexp(z, -1) - (y * z).sum(-1)
    if loss.name == "label_smoothing":
        t = (1 - loss.eps) * y + loss.eps / K
        return torch.logsumexp(z, -1) - (t * z).sum(-1)
    if loss.name == "mse":
        value = 0.5 * ((z - y) ** 2).sum(-1)
        return value + (0.5 * (1 - (y * y).sum(-1)) if loss.form == "pair" else 0.0)
    # focal in pair form: sum_k y_k FL(z, c_k), each FL from the registry's own focal loss
    return sum(weights[:, k] * loss(z, classes[:, k], classes[:, k], 1.0) for k in range(classes.shape[1]))


def _objective(H, W, b, problem, config):
    """L(H, W, b) of docs/theory.md section 1 for m-class samples, independent of the solver."""
    z = H @ W.T + (0 if b is None else b)
    value = _soft_loss(problem.loss, z, problem.classes, problem.weights).mean()
    value = value + 0.5 * config.lam_H * (H * H).sum(1).mean() + 0.5 * config.lam_W * (W * W).sum()
    if b is not None:
        value = value + 0.5 * config.lam_b * (b * b).sum()
    return value


# -- samples ---------------------------------------------------------------------------------


def test_grid_samples_are_every_tuple_and_every_lattice_point():
    config = UFMConfig(K=5, d=4, mixup_points=3, num_lams=4, samples_per_pair=2)
    problem = build_problem(config)
    lattice = {p for p in itertools.product(range(4), repeat=3) if sum(p) == 3}  # i+j+k = N = 3
    assert problem.n == math.comb(5, 3) * len(lattice) * 2 and not problem.mixes_pairs
    with pytest.raises(ValueError, match="c exists for pairs only; this problem mixes m = 3"):
        problem.c  # noqa: B018
    classes, weights = problem.classes, problem.weights
    assert torch.equal(classes.unique(dim=0), torch.tensor(list(itertools.combinations(range(5), 3))))
    seen = {tuple(round(3 * float(w)) for w in row) for row in weights}
    assert seen == lattice
    assert float((weights * 3 - (weights * 3).round()).abs().max()) <= 1e-12
    assert float((weights.sum(1) - 1).abs().max()) <= 1e-15
    for tup in classes.unique(dim=0):  # every tuple carries the whole lattice, twice
        rows = weights[(classes == tup).all(1)]
        assert rows.shape[0] == 2 * len(lattice)


def test_random_tuples_and_dirichlet_weights_follow_their_laws():
    config = UFMConfig(K=7, d=6, mixup_points=4, pairs="random", num_pairs=6000, alpha=0.5)
    problem = build_problem(config)
    classes, weights = problem.classes, problem.weights
    assert classes.shape == weights.shape == (6000, 4)
    assert all(len(set(row)) == 4 for row in classes.tolist())  # distinct classes per tuple
    counts = torch.bincount(classes.reshape(-1), minlength=7).double()
    assert float((counts - 6000 * 4 / 7).abs().max()) <= 5 * math.sqrt(6000 * 4 / 7)
    assert float(weights.min()) >= 0 and float((weights.sum(1) - 1).abs().max()) <= 1e-14
    # Dirichlet(alpha 1_m): mean 1/m, variance (1/m)(1 - 1/m)/(m alpha + 1)
    var = (1 / 4) * (3 / 4) / (4 * 0.5 + 1)
    assert float((weights.mean(0) - 0.25).abs().max()) <= 5 * math.sqrt(var / 6000)
    assert float((weights.var(0) / var - 1).abs().max()) <= 0.1
    again = build_problem(config)
    assert torch.equal(again.classes, classes) and torch.equal(again.weights, weights)
    other = build_problem(replace(config, seed=1))
    assert not torch.equal(other.weights, weights)


# -- fixed simplex ETF: the exact theory ------------------------------------------------------


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "mse"])
@pytest.mark.parametrize(
    "layout",
    [dict(K=6, d=8, mixup_points=3, num_lams=6),  # all triples, the simplex lattice
     dict(K=6, d=8, mixup_points=4, pairs="random", num_pairs=12, alpha=1.0, samples_per_pair=4),
     dict(K=5, d=5, mixup_points=5, alpha=0.7, samples_per_pair=6)],  # m = K
    ids=["m3-grid", "m4-dirichlet", "m5=K"],
)
def test_fixed_etf_matches_mixture_features_to_1e10(layout, loss):
    config = UFMConfig(**layout, loss=loss, tol=1e-11)
    result = solve(config)
    assert result.stop_reason == "converged"
    W = simplex_etf(layout["K"], layout["d"], seed=0)
    assert torch.equal(result.W, W)
    exact = mixture_features(W, result.classes, result.weights, LAM_H, loss=config.make_loss())
    assert _relative(result.H, exact) <= 1e-10
    s = result.summary
    assert s["theory_distance"] <= 1e-10 and s["theory_distance_worst_weights"] <= 1e-9
    assert s["mixup_points"] == layout["mixup_points"] and s["theory_distance_per_lam"] is None


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "mse"])
def test_reported_theory_distance_agrees_with_a_recomputation(loss):
    # one Newton pass from zero: the distance is resolved (far above rounding level)
    config = UFMConfig(K=6, d=8, mixup_points=3, num_lams=5, loss=loss, max_iters=1)
    result = solve(config)
    exact = mixture_features(simplex_etf(6, 8, seed=0), result.classes, result.weights, LAM_H,
                             loss=config.make_loss())
    relative = _relative(result.H, exact)
    reported = result.summary["theory_distance"]
    if loss == "mse":  # Newton is exact in one step for a quadratic
        assert reported <= 1e-13 and relative <= 1e-13
    else:
        assert relative > 1e-6
        assert reported == pytest.approx(relative, rel=1e-6)
        per_sample = ((result.H - exact).norm(dim=1) / exact.norm(dim=1)).max()
        # groups share a weight vector, so the worst group is at most the worst sample
        assert result.summary["theory_distance_worst_weights"] <= float(per_sample) * (1 + 1e-9)


def test_equal_weights_lie_on_every_boundary_of_their_classes():
    result = solve(UFMConfig(K=6, d=8, mixup_points=3, num_lams=7, tol=1e-11))
    centre = (result.weights - 1 / 3).abs().max(1).values <= 1e-12
    assert int(centre.sum()) == math.comb(6, 3)  # the lattice with N = 6 holds (2, 2, 2)/6
    z = result.H[centre] @ result.W.T
    own = z.gather(1, result.classes[centre])
    assert float((own - own[:, :1]).abs().max()) <= 1e-10 * float(z.abs().max())


def test_fixed_random_classifier_agrees_with_the_convex_certificate():
    from ufm.theory.certificate import certify_targets

    g = torch.Generator().manual_seed(5)
    W = torch.randn(4, 5, generator=g, dtype=torch.float64)
    config = UFMConfig(K=4, d=5, mixup_points=3, classifier="fixed", num_lams=3, tol=1e-12)
    result = solve(config, W_init=W)
    assert result.stop_reason == "converged"
    targets = mixture_target(result.classes, result.weights, 4)
    certificate = certify_targets(W, targets, config.lam_H)
    scale = result.H.norm(dim=1).max().item()
    assert np.abs(certificate.h - result.H.numpy()).max() <= 1e-6 * scale


def test_momentum_gradient_descent_reaches_the_theory():
    result = solve(UFMConfig(K=5, d=6, mixup_points=3, num_lams=4, method="gd", tol=1e-9, max_iters=20000))
    assert result.stop_reason == "converged"
    exact = mixture_features(result.W, result.classes, result.weights, LAM_H)
    assert _relative(result.H, exact) <= 1e-8


def test_float32_runs_and_is_close_to_the_theory():
    result = solve(UFMConfig(K=5, d=6, mixup_points=3, num_lams=4, dtype="float32", tol=1e-5))
    assert result.H.dtype == result.weights.dtype == torch.float32
    assert result.summary["theory_distance"] <= 1e-5


def test_focal_reaches_a_stationary_point():
    result = solve(UFMConfig(K=6, d=8, mixup_points=3, num_lams=4, loss="focal", tol=1e-8))
    assert result.stop_reason == "converged" and result.summary["grad_norm"] <= 1e-8
    assert "theory_distance" not in result.summary  # focal has no exact theory


# -- derivatives and the preconditioner --------------------------------------------------------


@pytest.mark.parametrize("name,params", [("ce", {}), ("label_smoothing", {"eps": 0.2}), ("mse", {}),
                                         ("mse", {"form": "pair"}), ("focal", {"gamma": 1.5})])
def test_loss_terms_match_their_definition(name, params):
    loss = get_loss(name, **params)
    g = torch.Generator().manual_seed(3)
    z = 3 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    classes = torch.rand(40, 6, generator=g).argsort(1)[:, :3]
    weights = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample((40,))
    value, p, grad = loss.mixture_terms(z, classes, weights)
    zg = z.clone().requires_grad_(True)
    expected = _soft_loss(loss, zg, classes, weights)
    (expected_grad,) = torch.autograd.grad(expected.sum(), zg)
    assert torch.allclose(value, expected.detach(), rtol=1e-13, atol=1e-13)
    assert torch.allclose(grad, expected_grad, rtol=1e-12, atol=1e-14)
    if name in ("ce", "label_smoothing"):
        assert torch.allclose(p, torch.softmax(z, -1), rtol=1e-14, atol=0)
    else:
        assert p is None
    # m = 2 with weights (lam, 1 - lam) is the registry's pair loss
    c, cp, lam = classes[:, 0], classes[:, 1], weights[:, 0] / weights[:, :2].sum(1)
    pair_value, _, pair_grad = loss.mixture_terms(z, classes[:, :2], torch.stack([lam, 1 - lam], 1))
    assert torch.allclose(pair_value, loss(z, c, cp, lam), rtol=1e-13, atol=1e-13)
    assert torch.allclose(pair_grad, loss.grad(z, c, cp, lam), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "mse", "focal"])
def test_feature_gradient_and_hessian_vector_product_match_finite_differences(loss):
    config = UFMConfig(K=6, d=7, mixup_points=3, classifier="fixed", num_lams=3, loss=loss, bias=True)
    problem = build_problem(config)
    g = torch.Generator().manual_seed(2)
    W = torch.randn(6, 7, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    solver = FeatureSolver(problem.classes, problem.weights, problem.loss, config.lam_H)
    solver.set_classifier(W, b, H=torch.randn(problem.n, 7, generator=g, dtype=torch.float64))
    X = solver.X.clone()
    H = solver.features()
    n = problem.n
    # the objective the solver sums, against the independent one
    assert solver.evaluate().objective_sum / n + 0.5 * config.lam_W * float((W * W).sum()) == pytest.approx(
        float(_objective(H, W, b, problem, config)), rel=1e-13)

    def grad_at(x):
        z = x @ solver.frame.A.T + b
        _, _, gz = problem.loss.mixture_terms(z, problem.classes, problem.weights)
        return gz @ solver.frame.A + config.lam_H * x

    direction = torch.randn(X.shape, generator=g, dtype=torch.float64)
    step = 1e-6

    def total(t):
        solver.X = X + t * direction
        return solver.evaluate().objective_sum

    fd = (total(step) - total(-step)) / (2 * step)
    # The difference quotient is good to 1e-7 only above its rounding noise: the two sums of n
    # per-sample objectives (|total| ~ 500) round at ~eps |total|, and dividing by 2 step turns
    # that into ~0.4 eps |total| / step (seen), 1e-7 of the derivative for focal loss.
    noise = 10 * np.finfo(np.float64).eps * abs(total(0.0)) / step
    assert float((grad_at(X) * direction).sum()) == pytest.approx(fd, rel=1e-7, abs=noise)
    solver.X = X
    z = X @ solver.frame.A.T + b
    hv = solver._hessian_vector(z, torch.softmax(z, -1), direction, torch.arange(n))
    fd_hv = (grad_at(X + step * direction) - grad_at(X - step * direction)) / (2 * step)
    assert torch.allclose(hv, fd_hv, rtol=1e-6, atol=1e-8)


def _dense_hessians(A, p, lam_H):
    """Per-sample A^T (diag p - p p^T) A + lam_H I, (n, r, r)."""
    logit_hessian = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return A.T @ logit_hessian @ A + lam_H * torch.eye(A.shape[1], dtype=A.dtype)


@pytest.mark.parametrize("m", [3, 4])
def test_preconditioner_is_the_exact_hessian_for_a_simplex_etf(m):
    K, d = 8, 9
    config = UFMConfig(K=K, d=d, mixup_points=m, pairs="random", num_pairs=30, alpha=1.0, samples_per_pair=2)
    problem = build_problem(config)
    solver = FeatureSolver(problem.classes, problem.weights, problem.loss, config.lam_H)
    solver.set_classifier(problem.W0, None)
    # any feature in the span of its own classes' vectors gives the other classes equal logits
    g = torch.Generator().manual_seed(4)
    coefficients = 5 * torch.randn(problem.n, m, generator=g, dtype=torch.float64)
    solver.X = F.embedding_bag(problem.classes, solver.frame.A, per_sample_weights=coefficients, mode="sum")
    idx = torch.arange(problem.n)
    _, z, _, p, _, grad = solver._measure(idx)
    apply, exact, *_ = solver._preconditioner(p, idx)
    assert exact
    newton = torch.linalg.solve(_dense_hessians(solver.frame.A, p, config.lam_H), grad[:, :, None]).squeeze(-1)
    assert float((apply(grad) - newton).norm() / newton.norm()) <= 1e-10
    direction, _, cg_iterations = solver._newton_direction(z, p, grad, idx, torch.full((problem.n,), 1e-3))
    # Per sample, relative to its step: the dense reference forms diag(p) - p p^T with
    # cancellation where p is nearly one-hot (errors up to eps / (1 - p_max), rows seen up to
    # 2.4e-11 off), so single small components are less accurate than the step itself.
    row_error = (direction - newton).norm(dim=1) / newton.norm(dim=1)
    assert cg_iterations == 0 and float(row_error.max()) <= 1e-9


@pytest.mark.parametrize("m", [2, 3])
def test_preconditioner_is_the_stated_woodbury_inverse_for_any_classifier(m):
    K, d = 7, 5
    config = UFMConfig(K=K, d=d, mixup_points=m, classifier="fixed", pairs="random", num_pairs=20,
                       alpha=1.0, samples_per_pair=2)
    problem = build_problem(config)
    g = torch.Generator().manual_seed(8)
    W = torch.randn(K, d, generator=g, dtype=torch.float64)
    solver = FeatureSolver(problem.classes, problem.weights, problem.loss, config.lam_H)
    solver.set_classifier(W, None, H=torch.randn(problem.n, d, generator=g, dtype=torch.float64))
    idx = torch.arange(problem.n)
    _, z, _, p, _, grad = solver._measure(idx)
    apply, exact, *_ = solver._preconditioner(p, idx)
    assert not exact
    # M_0 built densely: the other classes' p replaced by sum p_o^2 / sum p_o
    inside = torch.zeros_like(p, dtype=torch.bool).scatter_(1, problem.classes, True)
    p_other = torch.where(inside, 0.0, p)
    p_bar = (p_other**2).sum(1) / p_other.sum(1)
    p_tilde = torch.where(inside, p, p_bar[:, None])
    A = solver.frame.A
    M0 = A.T @ (torch.diag_embed(p_tilde) - p[:, :, None] * p[:, None, :]) @ A
    M0 = M0 + config.lam_H * torch.eye(A.shape[1], dtype=A.dtype)
    assert bool((torch.linalg.eigvalsh(M0)[:, 0] >= config.lam_H * (1 - 1e-9)).all())  # positive definite
    v = torch.randn(grad.shape, generator=g, dtype=torch.float64)
    expected = torch.linalg.solve(M0, v[:, :, None]).squeeze(-1)
    assert float((apply(v) - expected).norm() / expected.norm()) <= 1e-10
    # and the PCG direction solves the true Newton system to its forcing tolerance
    forcing = torch.full((problem.n,), 1e-8)
    direction, _, cg_iterations = solver._newton_direction(z, p, grad, idx, forcing)
    residual = (_dense_hessians(A, p, config.lam_H) @ direction[:, :, None]).squeeze(-1) - grad
    assert cg_iterations >= 1
    assert bool((residual.norm(dim=1) <= 1e-8 * grad.norm(dim=1) * (1 + 1e-6)).all())


def test_focal_hessian_vector_product_is_second_derivative():
    loss = Focal(gamma=2.0)
    g = torch.Generator().manual_seed(6)
    z = torch.randn(10, 5, generator=g, dtype=torch.float64)
    v = torch.randn(10, 5, generator=g, dtype=torch.float64)
    classes = torch.rand(10, 5, generator=g).argsort(1)[:, :3]
    weights = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample((10,))
    step = 1e-6
    grad = lambda t: loss.mixture_terms(z + t * v, classes, weights)[2]
    fd = (grad(step) - grad(-step)) / (2 * step)
    assert torch.allclose(loss.mixture_hvp(z, classes, weights, v), fd, rtol=1e-6, atol=1e-9)


# -- learned classifier ------------------------------------------------------------------------


def test_learned_classifier_converges_to_an_etf_and_the_theory():
    config = UFMConfig(K=5, d=6, mixup_points=3, num_lams=6, classifier="learned", tol=1e-8)
    result = solve(config)
    s = result.summary
    assert result.stop_reason == "converged" and s["grad_norm"] <= 1e-8
    assert s["etf_distance_W"] == etf_distance(result.W) and s["etf_distance_W"] <= 1e-6
    exact = mixture_features(result.W, result.classes, result.weights, LAM_H, etf_tol=1e-6)
    relative = _relative(result.H, exact)
    assert relative <= 1e-6
    assert s["theory_distance_learned_W"] == pytest.approx(relative, rel=1e-6)


def test_reported_classifier_gradient_matches_finite_differences():
    config = UFMConfig(K=5, d=6, mixup_points=3, num_lams=3, classifier="learned", bias=True, lam_b=1e-2)
    problem = build_problem(config)
    g = torch.Generator().manual_seed(1)
    W = torch.randn(5, 6, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    solver = FeatureSolver(problem.classes, problem.weights, problem.loss, config.lam_H)
    solver.set_classifier(W, b, H=torch.randn(problem.n, 6, generator=g, dtype=torch.float64))
    H = solver.features()
    stats = solver.evaluate()
    n, step = problem.n, 1e-6
    for name, analytic in (("W", stats.grad_W / n + config.lam_W * W), ("b", stats.grad_b / n + config.lam_b * b)):
        direction = torch.randn(analytic.shape, generator=g, dtype=torch.float64)

        def value(t, name=name, direction=direction):
            Wt, bt = (W + t * direction, b) if name == "W" else (W, b + t * direction)
            return float(_objective(H, Wt, bt, problem, config))

        fd = (value(step) - value(-step)) / (2 * step)
        assert float((analytic * direction).sum()) == pytest.approx(fd, rel=1e-7, abs=1e-10)


# -- files, resume and refusals ----------------------------------------------------------------


def test_resume_is_bit_identical_and_the_files_hold_classes_and_weights(tmp_path):
    config = UFMConfig(K=6, d=8, mixup_points=3, num_lams=5, classifier="learned", tol=1e-8)
    straight = solve(config)
    stopped = solve(replace(config, max_iters=4), checkpoint_dir=tmp_path)
    assert stopped.stop_reason == "max_iters"
    resumed = solve(config, checkpoint_dir=tmp_path, resume=True)
    assert resumed.stop_reason == straight.stop_reason == "converged"
    assert torch.equal(resumed.W, straight.W) and torch.equal(resumed.H, straight.H)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    out = resumed.save(tmp_path / "result")
    with np.load(out / "arrays.npz") as arrays:
        assert set(arrays.files) == {"H", "W", "classes", "weights"}
    loaded = load_result(out)
    assert loaded.c is None and loaded.config.mixup_points == 3
    assert torch.equal(loaded.classes, straight.classes) and torch.equal(loaded.weights, straight.weights)


def test_cli_solves_mixtures_and_refuses_bad_values_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["solve", "--out", str(out), "--K", "5", "--d", "6", "--mixup-points", "3",
                 "--num-lams", "4", "--no-progress", "--tol", "1e-11"]) == 0
    assert "relative distance to the exact theory" in capsys.readouterr().out
    assert load_result(out).summary["theory_distance"] <= 1e-10
    bad = tmp_path / "bad"
    assert main(["solve", "--out", str(bad), "--mixup-points", "3", "--pairs", "same", "--no-progress"]) == 2
    assert "got 'same'" in capsys.readouterr().err and not bad.exists()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(mixup_points=1), "mixup_points must lie in [2, K=10] (classes per mixture), got 1"),
        (dict(mixup_points=11), "mixup_points must lie in [2, K=10] (classes per mixture), got 11"),
        (dict(mixup_points=2.5), "mixup_points must be an integer, got 2.5"),
        (dict(mixup_points=3, pairs="same"),
         "pairs (for mixup_points = 3 > 2) must be one of 'all', 'random'; got 'same'"),
        (dict(mixup_points=4, pairs="different"), "must be one of 'all', 'random'; got 'different'"),
        (dict(mixup_points=3, pairs="random"), "num_pairs (the number of class tuples) must be given"),
        (dict(mixup_points=3, pairs="random", num_pairs=0), "num_pairs must be >= 1, got 0"),
        (dict(mixup_points=3, num_pairs=5), "num_pairs is only used with pairs = 'random'"),
        (dict(mixup_points=3, lams=(0.5,)), "lams (a grid of pair coefficients) is not used"),
        (dict(mixup_points=3, num_lams=1), "must be >= 2 for mixup_points = 3 > 2, got 1"),
        (dict(mixup_points=10, num_lams=100), f"has {math.comb(99 + 9, 9)} points, more than 1000000"),
        (dict(K=100, d=99, mixup_points=10), f"C(100, 10) = {math.comb(100, 10)} class tuples"),
        (dict(mixup_points=3, alpha=-1.0), "alpha must lie in (0, inf), got -1.0"),
    ],
)
def test_bad_configuration_is_refused_before_any_work(overrides, message):
    with pytest.raises(ValueError) as info:
        UFMConfig(**overrides)
    assert message in str(info.value)
