"""The exact reduced Hessian-vector product and the Newton-CG method that uses it.

The product (:meth:`FeatureSolver.reduced_hessian_vector`, implicit differentiation of the
feature optimum) is checked against central differences of the exact reduced gradient, every
feature re-solved at each perturbed classifier (as ``scripts/reduced_hessian.py`` forms the
Hessian), and for symmetry. Newton-CG is checked against L-BFGS (``"newton"``) and against
the full gradient of the objective in (H, W) by autograd in float64.
"""

import math
from dataclasses import replace

import pytest
import torch

from ufm.solver import UFMConfig, solve
from ufm.solver.newton import newton_method
from ufm.solver.problem import build_problem
from ufm.solver.state import RunState

EPS = 1e-5  # central differences: error about EPS^2 times the third derivative


def _reduced(config):
    """The L-BFGS method object (its exact reduced gradient) of ``config``."""
    method = newton_method(RunState(build_problem(config)))
    method._start_features()
    return method


def _gradient(method, W, b):
    return method._evaluate(W, b, 1e-13).theta_grad.clone()


def _product(method, D, db):
    """The flat reduced Hessian times (D, db), at the features of the last evaluation."""
    state, config, n = method.state, method.state.config, method.state.problem.n
    sum_W, sum_b, _ = method.feature_solver.reduced_hessian_vector(D, db)
    parts = [(sum_W / n + config.lam_W * D).reshape(-1)]
    if db is not None:
        parts.append(sum_b / n + config.lam_b * db)
    return torch.cat(parts)


def _point(config, where):
    """A classifier far from the optimum (the random start) or near it (the solved one,
    moved by 1e-2 in a random direction), and a bias if one is learned."""
    problem = build_problem(config)
    W, b = problem.W0.clone(), None if problem.b0 is None else problem.b0.clone()
    if where == "near":
        result = solve(UFMConfig(**{**vars(config), "tol": 1e-10}))
        generator = torch.Generator().manual_seed(7)
        W = result.W + 1e-2 * torch.randn(W.shape, generator=generator, dtype=W.dtype)
        b = None if result.b is None else result.b + 1e-2 * torch.randn(b.shape, generator=generator,
                                                                        dtype=b.dtype)
    return W, b


def _config(loss, bias, **fields):
    return UFMConfig(K=5, d=6, num_lams=5, classifier="learned", loss=loss, bias=bias,
                     lam_b=1e-2 if bias else 0.0, mixed_precision=False, **fields)


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("where", ["far", "near"])
@pytest.mark.parametrize("bias", [False, True])
def test_hessian_vector_product_is_the_derivative_of_the_reduced_gradient(loss, where, bias):
    config = _config(loss, bias)
    method = _reduced(config)
    W, b = _point(config, where)
    generator = torch.Generator().manual_seed(3)
    D = torch.randn(W.shape, generator=generator, dtype=W.dtype)
    db = torch.randn(b.shape, generator=generator, dtype=b.dtype) if bias else None
    plus = _gradient(method, W + EPS * D, None if b is None else b + EPS * db)
    minus = _gradient(method, W - EPS * D, None if b is None else b - EPS * db)
    differences = (plus - minus) / (2 * EPS)
    _gradient(method, W, b)  # the features at (W, b)
    product = _product(method, D, db)
    assert float((product - differences).norm() / differences.norm()) < 1e-6


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_hessian_vector_product_is_symmetric(loss):
    config = _config(loss, True, pairs="random", num_pairs=12)
    method = _reduced(config)
    W, b = _point(config, "far")
    _gradient(method, W, b)
    generator = torch.Generator().manual_seed(5)
    D1, D2 = (torch.randn(W.shape, generator=generator, dtype=W.dtype) for _ in range(2))
    b1, b2 = (torch.randn(b.shape, generator=generator, dtype=b.dtype) for _ in range(2))
    v1, v2 = torch.cat([D1.reshape(-1), b1]), torch.cat([D2.reshape(-1), b2])
    first, second = float(v1 @ _product(method, D2, b2)), float(v2 @ _product(method, D1, b1))
    assert abs(first - second) <= 1e-10 * max(abs(first), 1.0)


def _autograd_gradient_norm(config, result) -> float:
    """The driver's scale-free gradient norm of the objective in (H, W) by autograd, float64:
    sqrt(mean_s |n dL/dh_s|^2 + |dL/dW|^2)."""
    problem = build_problem(config)
    H = result.H.clone().requires_grad_(True)
    W = result.W.clone().requires_grad_(True)
    n = problem.n
    values = problem.loss.mixture_value(H @ W.T, problem.classes, problem.weights)
    objective = (values.sum() + 0.5 * config.lam_H * (H * H).sum()) / n + 0.5 * config.lam_W * (W * W).sum()
    grad_H, grad_W = torch.autograd.grad(objective, (H, W))
    feature_rms = ((n * grad_H).pow(2).sum(-1).mean()).sqrt()
    return float((feature_rms**2 + grad_W.pow(2).sum()).sqrt())


@pytest.mark.parametrize("K, d, loss, pairs", [
    (4, 5, "ce", {}),
    (5, 6, "mse", {}),
    (6, 6, "ce", {"pairs": "random", "num_pairs": 14}),
])
def test_newton_cg_reaches_the_optimum_of_lbfgs(K, d, loss, pairs):
    fields = dict(K=K, d=d, num_lams=5, classifier="learned", loss=loss, tol=1e-11,
                  mixed_precision=False, **pairs)
    lbfgs = solve(UFMConfig(**fields))
    config = UFMConfig(**fields, method="newton_cg")
    newton_cg = solve(config)
    assert newton_cg.summary["stop_reason"] == "converged"
    assert newton_cg.summary["grad_norm"] <= 1e-9
    assert abs(newton_cg.summary["loss"] - lbfgs.summary["loss"]) <= 1e-8
    # F is invariant under rotations of feature space: compare W W^T
    assert float((newton_cg.W @ newton_cg.W.T - lbfgs.W @ lbfgs.W.T).abs().max()) <= 1e-8
    assert _autograd_gradient_norm(config, newton_cg) <= 1e-9


def test_the_diagonal_preconditioner_reaches_the_same_optimum(monkeypatch):
    from ufm.solver.newton_cg import NewtonCG

    fields = dict(K=5, d=6, num_lams=5, classifier="learned", tol=1e-11, mixed_precision=False,
                  pairs="random", num_pairs=12, bias=True, lam_b=1e-2)
    plain = solve(UFMConfig(**fields, method="newton_cg"))
    monkeypatch.setattr(NewtonCG, "preconditioner", "diagonal")
    config = UFMConfig(**fields, method="newton_cg")
    scaled = solve(config)
    assert scaled.summary["stop_reason"] == "converged" and scaled.summary["grad_norm"] <= 1e-9
    assert abs(scaled.summary["loss"] - plain.summary["loss"]) <= 1e-8
    assert float((scaled.W @ scaled.W.T - plain.W @ plain.W.T).abs().max()) <= 1e-8
    assert float((scaled.b - plain.b).abs().max()) <= 1e-8


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_bias_block_in_the_logit_frame_of_a_fixed_etf(loss):
    """A fixed simplex ETF with a learned bias: the features live in logit coordinates
    (a frame whose V is not orthonormal); only the bias block is learned."""
    config = UFMConfig(K=5, d=6, num_lams=5, classifier="fixed_etf", loss=loss, bias=True,
                       lam_b=1e-2, mixed_precision=False)
    method = _reduced(config)
    W = method.state.W
    generator = torch.Generator().manual_seed(11)
    b, db = (torch.randn(5, generator=generator, dtype=W.dtype) for _ in range(2))
    differences = (_gradient(method, W, b + EPS * db) - _gradient(method, W, b - EPS * db)) / (2 * EPS)
    _gradient(method, W, b)
    assert type(method.feature_solver.frame).__name__ == "LogitFrame"
    _, sum_b, _ = method.feature_solver.reduced_hessian_vector(torch.zeros_like(W), db)
    product = sum_b / method.state.problem.n + config.lam_b * db
    assert float((product - differences).norm() / differences.norm()) < 1e-6


@pytest.mark.parametrize("lam, float32_kept", [(5e-3, True), (1e-3, False), (1e-4, False)])
def test_float32_products_too_far_from_float64_give_way_to_float64(lam, float32_kept,
                                                                    monkeypatch):
    # at small lam_H the per-sample systems' condition reaches 1e3 to 2e4 and float32
    # Hessian products lose every digit to the reduced Hessian's cancellation: the check at
    # the first trust-region step turns them to float64 for the rest of the run, which
    # reaches the L-BFGS optimum (before, this solve stalled at lam = 1e-4 and crept at
    # 1e-3); at the default lam_H they stay float32
    from ufm.solver.newton_cg import NewtonCG

    dtypes = []
    real = NewtonCG.product_dtype

    def spy(self):
        dtype = real(self)
        dtypes.append(dtype)
        return dtype

    monkeypatch.setattr(NewtonCG, "product_dtype", spy)
    config = UFMConfig(K=6, d=8, classifier="learned", tol=1e-10, lam_H=lam, lam_W=lam,
                       method="newton_gram")
    gram = solve(config)
    assert gram.summary["stop_reason"] == "converged" and gram.summary["grad_norm"] <= 1e-10
    assert dtypes[0] == torch.float32
    if float32_kept:
        assert set(dtypes) == {torch.float32}
    else:
        assert set(dtypes[dtypes.index(torch.float64):]) == {torch.float64}
    monkeypatch.setattr(NewtonCG, "product_dtype", real)
    lbfgs = solve(replace(config, method="newton", mixed_precision=False))
    assert abs(gram.summary["loss"] - lbfgs.summary["loss"]) <= 1e-9
    # each W within its gradient norm over lam_W of the optimum, up to a rotation
    assert float((gram.W @ gram.W.T - lbfgs.W @ lbfgs.W.T).abs().max()) <= 4 * 1e-10 / lam
    assert _autograd_gradient_norm(config, gram) <= 1e-9


def _sparse_pairs(**fields):
    """K = d = 8 on 24 random class pairs, a learned classifier, float64 unless the fields
    say otherwise: the small problem of the tests of the Newton-CG path and its records."""
    return UFMConfig(**{"K": 8, "d": 8, "classifier": "learned", "pairs": "random",
                        "num_pairs": 24, "mixed_precision": False, **fields})


def _steihaug_near_optimum(config, near_tol):
    """A ``"newton_gram"`` method object at W solved to gradient ``near_tol`` (its features to
    1e-13), and the Steihaug path of its Newton step in an unbounded trust region."""
    from ufm.solver.newton_cg import GramNewtonCG

    near = solve(replace(config, tol=near_tol))
    method = GramNewtonCG(RunState(build_problem(config)))
    method.state.W = near.W
    current = method._evaluate(near.W, None, 1e-13)
    grad = current.theta_grad
    path = method.steihaug(grad, math.inf, method._metric())
    return method, grad, path


def test_the_newton_step_stops_at_a_tenth_of_the_tolerance_not_at_the_forcing_term(monkeypatch):
    # near the optimum the forcing term sqrt(|grad|) asks for more digits than the tolerance
    # needs: CG stops once the true residual of the Newton system, measured here with exact
    # products, is a tenth of the tolerance, in fewer steps than the forcing term takes, and
    # asks its products for a tenth of that share of |grad| (not of the forcing term)
    from ufm.solver import newton_cg

    config = _sparse_pairs(tol=1e-8, method="newton_gram")
    method, grad, path = _steihaug_near_optimum(config, 3e-7)
    grad_norm = float(grad.norm())
    enough = newton_cg._TOLERANCE_FRACTION * config.tol
    assert math.sqrt(grad_norm) < 0.5 * enough / grad_norm  # the forcing term asks for more
    # a tenth of the tolerance's share of |grad| within the bounds (the forcing term's
    # tenth would be below both)
    asked = min(newton_cg._ADAPTIVE_RTOL, 0.1 * enough / grad_norm)
    assert 0.1 * math.sqrt(grad_norm) < asked
    assert method._product_rtol == pytest.approx(asked, rel=1e-12)
    step = path.point(math.inf).step
    method._product_rtol = 1e-12
    project = method._step_projector()
    residual = float(project(method.hessian_vector(project(step)) + grad).norm())
    assert residual <= 1.1 * enough
    monkeypatch.setattr(newton_cg, "_TOLERANCE_FRACTION", 0.0)
    _, _, forcing_path = _steihaug_near_optimum(config, 3e-7)
    assert len(path.segments) < len(forcing_path.segments)
    assert (path.end, forcing_path.end) == ("tolerance", "forcing")


def test_a_path_point_knows_the_gradient_its_linear_model_predicts_there():
    # |P(g + H p)| at the end of the path and where half its length cuts it, against a
    # Hessian product made again at each point (float64 products to 1e-12 throughout)
    config = _sparse_pairs(tol=1e-8, method="newton_gram")
    method, grad, _ = _steihaug_near_optimum(config, 3e-7)
    method.adaptive_products = False
    path = method.steihaug(grad, math.inf, method._metric())
    project = method._step_projector()
    end = path.point(math.inf)
    cut = path.point(0.5 * end.length)
    for point in (end, cut):
        again = project(method.hessian_vector(project(point.step))) + project(grad)
        assert point.model_gradient == pytest.approx(float(again.norm()), rel=1e-8)


def test_the_forcing_term_is_how_far_the_last_steps_model_missed():
    # newton_gram's Eisenstat-Walker forcing term, recomputed from the history alone: the
    # power rule at the first trust-region step, then |g_k - model_{k-1}| / g_{k-1} with the
    # safeguard eta_{k-1}^golden where that is above 0.1, at most 0.5 (g: the gradient in
    # the classifier, not the history's grad_norm, which adds the features')
    history = solve(_sparse_pairs(tol=1e-10, method="newton_gram")).history
    steps = [index for index, row in enumerate(history) if row.get("step_kind") == "trust_region"]
    assert len(steps) >= 3

    def g(row):
        return math.hypot(row["grad_W_norm"], row["grad_b_norm"] or 0.0)

    first = g(history[steps[0] - 1])
    assert history[steps[0]]["step_forcing"] == pytest.approx(min(0.5, math.sqrt(first)), rel=1e-9)
    golden = (1 + math.sqrt(5)) / 2
    for index in steps[1:]:
        start, before = history[index - 1], history[index - 2]
        eta = abs(g(start) - start["step_model_gradient"]) / g(before)
        if start["step_forcing"] ** golden > 0.1:
            eta = max(eta, start["step_forcing"] ** golden)
        assert history[index]["step_forcing"] == pytest.approx(min(0.5, eta), rel=1e-9)


@pytest.mark.parametrize("last, grad_norm, expected", [
    (None, 0.04, 0.2),  # no step yet: the power rule, sqrt(0.04)
    ((1.0, 0.9, 0.05), 0.95, 0.05),  # the miss |0.95 - 0.9| / 1; safeguard 0.05^1.618 < 0.1
    ((1.0, 0.9, 0.5), 0.95, 0.5 ** ((1 + 5 ** 0.5) / 2)),  # the safeguard, 0.326, above it
    ((1.0, 0.1, 0.05), 0.9, 0.5),  # a miss of 0.8, capped at forcing_max
    ((1.0, 0.3, 0.05), 0.1, 0.2),  # the model predicted too much: |0.1 - 0.3| / 1
    ((1.0, math.nan, 0.05), 0.04, 0.2),  # no model gradient known: the power rule
    ((0.0, 0.0, 0.05), 0.04, 0.2),  # no gradient to divide by: the power rule
])
def test_the_eisenstat_walker_rule_on_given_steps(last, grad_norm, expected):
    # their choice 1 with the safeguard eta_{k-1}^((1 + sqrt 5) / 2) where that is above 0.1
    from ufm.solver.newton_cg import FORCING_RULES, AcceptedStep, GramNewtonCG

    method = GramNewtonCG(RunState(build_problem(_sparse_pairs(method="newton_gram"))))
    method.last_accepted = None if last is None else AcceptedStep(*last)
    assert FORCING_RULES["eisenstat_walker"](method, grad_norm) == pytest.approx(expected, rel=1e-12)


def test_the_path_stops_at_the_forcing_term_of_the_rule():
    # the forcing term the path records is the one its conjugate gradients stopped at: a loose
    # Eisenstat-Walker term (a last model that missed by 0.4 of the gradient) stops them in
    # fewer directions than the power rule, both at the forcing term, each within it in the
    # metric's norm
    from ufm.solver.newton_cg import AcceptedStep

    config = _sparse_pairs(tol=1e-12, method="newton_gram")
    method, grad, power = _steihaug_near_optimum(config, 1e-4)
    g_norm = float(grad.norm())
    method.last_accepted = AcceptedStep(10 * g_norm, 5 * g_norm, 0.01)  # |1 - 5| / 10 = 0.4
    metric = method._metric()
    loose = method.steihaug(grad, math.inf, metric)
    assert loose.forcing == pytest.approx(0.4, rel=1e-12)
    assert power.forcing == pytest.approx(math.sqrt(g_norm), rel=1e-12)
    assert (loose.end, power.end) == ("forcing", "forcing")
    assert len(loose.segments) < len(power.segments)
    project = method._step_projector()
    g = project(grad)

    def metric_norm(v):
        return math.sqrt(float(v @ project(metric(project(v)))))

    for path in (loose, power):
        r = g + path.segments[-1][2] + path.ends[-1] * path.segments[-1][5]  # P(g + H p)
        assert metric_norm(r) <= path.forcing * metric_norm(g) * (1 + 1e-9)


def test_the_path_says_it_ended_at_the_boundary_or_at_negative_curvature():
    config = _sparse_pairs(tol=1e-8, method="newton_gram")
    method, grad, unbounded = _steihaug_near_optimum(config, 3e-7)
    length = unbounded.point(math.inf).length
    held = method.steihaug(grad, 0.5 * length, method._metric())
    assert held.end == "boundary" and not held.unbounded
    held_length = held.point(0.5 * length).length
    assert held_length == pytest.approx(0.5 * length, rel=1e-9)
    # a Hessian with negative curvature along every direction
    method.hessian_vector = lambda v, solver=None: -v
    falling = method.steihaug(grad, 1.0, method._metric())
    assert falling.end == "negative_curvature" and falling.unbounded and len(falling.segments) == 1


def test_the_path_says_it_ran_out_of_directions(monkeypatch):
    from ufm.solver import newton_cg

    config = _sparse_pairs(tol=1e-8, method="newton_gram")
    monkeypatch.setattr(newton_cg, "_MAX_CG", 1)
    _, _, cut_short = _steihaug_near_optimum(config, 3e-7)
    assert cut_short.end == "max_cg" and len(cut_short.segments) == 1


def _counting_solve(monkeypatch, config):
    """The solve of ``config`` and the reduced Hessian products and feature solves it made,
    counted by wrapping the methods that make them (not from the method's own ``work``)."""
    from ufm.solver.newton import ReducedNewton
    from ufm.solver.newton_cg import NewtonCG

    counts = {"products": 0, "solves": 0}
    product, evaluate = NewtonCG.hessian_vector, ReducedNewton._evaluate

    def counted_product(self, *args, **options):
        counts["products"] += 1
        return product(self, *args, **options)

    def counted_evaluate(self, *args, **options):
        counts["solves"] += 1
        return evaluate(self, *args, **options)

    monkeypatch.setattr(NewtonCG, "hessian_vector", counted_product)
    monkeypatch.setattr(ReducedNewton, "_evaluate", counted_evaluate)
    return solve(config), counts


@pytest.mark.parametrize("method", ["newton_gram", "newton_cg"])
def test_every_step_records_its_work_and_how_its_path_ended(monkeypatch, method):
    # the history row after each step says what kind of step it was and what it cost; the
    # costs add up to the products and solves counted around the methods (less the first
    # measurement, before any step), and a trust-region step's record agrees with the
    # geometry of its path
    config = _sparse_pairs(tol=1e-9, method=method)
    result, counts = _counting_solve(monkeypatch, config)
    assert result.summary["stop_reason"] == "converged"
    first, *stepped = result.history
    assert not any(key.startswith("step_") for key in first)
    assert all(row["step_kind"] in {"lbfgs", "trust_region"} for row in stepped)
    assert sum(row["step_products"] for row in stepped) == counts["products"]
    assert sum(row["step_solves"] for row in stepped) == counts["solves"] - 1
    steps = [row for row in stepped if row["step_kind"] == "trust_region"]
    assert steps and (method == "newton_gram") == (stepped[0]["step_kind"] == "lbfgs")
    ends = {"forcing", "tolerance", "boundary", "negative_curvature", "max_cg"}
    for row in steps:
        assert row["step_path_end"] in ends and row["step_trials"] >= 1
        assert row["step_cg"] >= 1 and row["step_products"] >= row["step_cg"]
        assert row["step_ratio"] is None or row["step_ratio"] > 1e-4
        assert 0 <= row["step_forcing"] <= 0.5 and 0 <= row["step_model_gradient"] < math.inf
        assert 0 < row["step_length"] <= row["step_radius"] * (1 + 1e-9)
        if row["step_path_end"] == "boundary":
            assert row["step_length"] == pytest.approx(row["step_radius"], rel=1e-9)
        if method == "newton_cg":  # float64 products: no float32 check; a solve per point
            assert row["step_products"] == row["step_cg"]
            assert row["step_solves"] == row["step_trials"]


def test_the_passage_to_float64_is_a_step_of_its_own_kind():
    # newton_gram's L-BFGS phase runs its features in float32; the step that only carries
    # them over to float64 before the trust-region steps says so and makes no product
    config = _sparse_pairs(tol=1e-9, method="newton_gram", mixed_precision=True)
    history = solve(config).history
    passages = [index for index, row in enumerate(history) if row.get("step_kind") == "to_float64"]
    assert len(passages) == 1
    row, before = history[passages[0]], history[passages[0] - 1]
    assert (before["feature_dtype"], row["feature_dtype"]) == ("float32", "float64")
    assert row["step_products"] == 0 and row["step_solves"] == 1
    assert all(later["step_kind"] == "trust_region" for later in history[passages[0] + 1:])


def test_a_step_held_by_a_small_trust_region_says_so(monkeypatch):
    from ufm.solver.newton_cg import NewtonCG

    monkeypatch.setattr(NewtonCG, "_initial_radius", lambda self, theta, grad, metric: 1e-6)
    config = _sparse_pairs(tol=1e-9, method="newton_cg", max_iters=3)
    first = solve(config).history[1]
    assert first["step_path_end"] == "boundary" and first["step_radius"] == 1e-6
    assert first["step_length"] == pytest.approx(1e-6, rel=1e-9)
    # far too large a first radius: every rejected point quarters it (its point lies on the
    # boundary), and the step says at which radius and after how many points it was accepted
    monkeypatch.setattr(NewtonCG, "_initial_radius", lambda self, theta, grad, metric: 1e3)
    paths, steihaug = [], NewtonCG.steihaug

    def kept_steihaug(self, *args):
        paths.append(steihaug(self, *args))
        return paths[-1]

    monkeypatch.setattr(NewtonCG, "steihaug", kept_steihaug)
    first = solve(config).history[1]
    assert first["step_trials"] >= 2
    assert first["step_radius"] == pytest.approx(1e3 / 4 ** (first["step_trials"] - 1), rel=1e-12)
    # the model gradient recorded is that of the accepted point, not of the first one tried
    accepted = paths[0].point(first["step_radius"]).model_gradient
    assert first["step_model_gradient"] == pytest.approx(accepted, rel=1e-12)
    assert accepted != pytest.approx(paths[0].point(1e3).model_gradient, rel=1e-3)


def test_a_solve_that_stops_its_last_step_at_the_tolerance_ends_at_the_same_optimum(monkeypatch):
    from ufm.solver import newton_cg

    config = _sparse_pairs(tol=1e-8, method="newton_cg")
    early = solve(config)
    monkeypatch.setattr(newton_cg, "_TOLERANCE_FRACTION", 0.0)
    forcing = solve(config)
    assert early.summary["stop_reason"] == forcing.summary["stop_reason"] == "converged"
    assert early.summary["grad_norm"] <= 1e-8 and _autograd_gradient_norm(config, early) <= 1e-8
    assert abs(early.summary["loss"] - forcing.summary["loss"]) <= 1e-12
    assert float((early.W @ early.W.T - forcing.W @ forcing.W.T).abs().max()) <= 2 * 1e-8 / config.lam_W

def test_a_rejected_trust_region_point_has_the_next_float32_products_checked_again(monkeypatch):
    # the float32 products are compared with float64 ones at the first trust-region step and
    # again at the step after a rejected point (the rejection may come from float32 error);
    # one rejection is forced here by an objective reported infinite at the first trial
    import dataclasses

    from ufm.solver.newton_cg import NewtonCG

    def run(reject: bool) -> tuple[list[bool], object]:
        checks = []
        real_check, real_evaluate = NewtonCG._check_float32_products, NewtonCG._evaluate
        rejected = []

        def check(self, samples, rounded, direction):
            exact = real_check(self, samples, rounded, direction)
            checks.append(exact is not None)
            return exact

        def evaluate(self, W, b, tol, **options):
            new = real_evaluate(self, W, b, tol, **options)
            if reject and self.radius is not None and not rejected:
                rejected.append(True)
                return dataclasses.replace(new, objective=float("inf"))
            return new

        monkeypatch.setattr(NewtonCG, "_check_float32_products", check)
        monkeypatch.setattr(NewtonCG, "_evaluate", evaluate)
        result = solve(UFMConfig(K=6, d=8, classifier="learned", tol=1e-10, method="newton_gram"))
        monkeypatch.setattr(NewtonCG, "_check_float32_products", real_check)
        monkeypatch.setattr(NewtonCG, "_evaluate", real_evaluate)
        return checks, result

    plain, plain_result = run(reject=False)
    again, again_result = run(reject=True)
    assert plain[0] and not any(plain[1:])  # checked once, at the first step
    assert again[:2] == [True, True] and not any(again[2:])  # and again after the rejection
    for result in (plain_result, again_result):
        assert result.summary["stop_reason"] == "converged" and result.summary["grad_norm"] <= 1e-10
    assert abs(again_result.summary["loss"] - plain_result.summary["loss"]) <= 1e-12


def _centred_classifier(K, d, sigma, seed=3):
    """A (K, d) classifier whose centred part has the singular values ``sigma`` (K - 1 of
    them, with random orthonormal singular vectors; the left ones orthogonal to the common
    direction) and a random mean row; and those left singular vectors (K, K - 1)."""
    generator = torch.Generator().manual_seed(seed)
    centred = torch.eye(K, dtype=torch.float64) - 1.0 / K
    directions = torch.randn(K, K - 1, generator=generator, dtype=torch.float64)
    U, _ = torch.linalg.qr(centred @ directions)
    V, _ = torch.linalg.qr(torch.randn(d, K - 1, generator=generator, dtype=torch.float64))
    mean = torch.randn(1, d, generator=generator, dtype=torch.float64)
    return U @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ V.T + mean, U


def test_a_first_trial_point_drops_the_collapsing_directions_of_W_and_only_those():
    # K = d = 8; centred singular values 1, 0.8, 0.6, then 3e-3, 2.5e-3, 2e-3 (Gram
    # eigenvalues below collapse_fraction = 1e-4 of the largest) and 1e-20 (rounding level).
    # The curvature off the row space, C = 2 grad_G F = lam_W I - outer / (lam_H n), is set
    # by the sums given: on the span of the 3e-3 and 2.5e-3 directions [[1, 2], [2, 1]],
    # positive along each but with eigenvalues 3 and -1, so only their sum may go; -1 along
    # the 2e-3 one (W should grow there); 1 along the rounding-level one, which costs
    # nothing. The drop removes W's component on the sum direction, exactly
    from types import SimpleNamespace

    from ufm.solver.gram_preconditioner import GramSums
    from ufm.solver.newton_cg import GramNewtonCG

    config = _sparse_pairs(method="newton_gram")
    method = GramNewtonCG(RunState(build_problem(config)))
    sigma = [1.0, 0.8, 0.6, 3e-3, 2.5e-3, 2e-3, 1e-20]
    W, U = _centred_classifier(config.K, config.d, sigma)
    first, second, down, rounding = U[:, 3], U[:, 4], U[:, 5], U[:, 6]
    C = (torch.outer(first, first) + torch.outer(second, second)
         + 2 * (torch.outer(first, second) + torch.outer(second, first))
         - torch.outer(down, down) + torch.outer(rounding, rounding))
    n, lam_H, lam_W = method.state.problem.n, config.lam_H, config.lam_W
    outer = lam_H * n * (lam_W * torch.eye(config.K, dtype=torch.float64) - C)
    metric = SimpleNamespace(gram_sums=GramSums(None, outer, torch.ones(config.K)))
    theta = W.reshape(-1)
    point, dropped, grown = method._trial_point(theta, metric, 1)
    assert (dropped, grown) == (1, 0)
    both = (first + second) / math.sqrt(2.0)
    expected = -torch.outer(both, both @ (W - W.mean(0)))
    assert float((point.reshape(W.shape) - W - expected).abs().max()) <= 1e-13
    # later tries, no metric sums (another preconditioner) and collapse_fraction 0 evaluate
    # the path's point as it is
    assert method._trial_point(theta, metric, 2) == (theta, 0, 0)
    assert method._trial_point(theta, lambda v: v, 1) == (theta, 0, 0)
    method.collapse_fraction = 0.0
    assert method._trial_point(theta, metric, 1) == (theta, 0, 0)


def test_a_first_trial_point_grows_W_where_it_is_zero_and_F_curves_down():
    # K = d = 8; centred singular values 3, 2.4, 1.8, 1.5, then exact zeros along three
    # class directions (and the common one). C is -1 along the first zero direction, 2 along
    # the second, -1e-6 along the third (above -grow_threshold lam_W: left alone): W grows
    # by eps u v^T along the first only, with eps = 3 sqrt(collapse_fraction) (3 the largest
    # singular value) and v off the row space of W
    from types import SimpleNamespace

    from ufm.solver.gram_preconditioner import GramSums
    from ufm.solver.newton_cg import GramNewtonCG

    config = _sparse_pairs(method="newton_gram")
    method = GramNewtonCG(RunState(build_problem(config)))
    sigma = [3.0, 2.4, 1.8, 1.5, 0.0, 0.0, 0.0]
    W, U = _centred_classifier(config.K, config.d, sigma)
    down, up, flat = U[:, 4], U[:, 5], U[:, 6]
    C = (-torch.outer(down, down) + 2 * torch.outer(up, up)
         - 1e-6 * config.lam_W * torch.outer(flat, flat))
    n, lam_H, lam_W = method.state.problem.n, config.lam_H, config.lam_W
    outer = lam_H * n * (lam_W * torch.eye(config.K, dtype=torch.float64) - C)
    metric = SimpleNamespace(gram_sums=GramSums(None, outer, torch.ones(config.K)))
    point, dropped, grown = method._trial_point(W.reshape(-1), metric, 1)
    assert (dropped, grown) == (0, 1)
    change = point.reshape(W.shape) - W
    u, s, vh = torch.linalg.svd(change)
    assert abs(float(s[0]) - 3.0 * math.sqrt(method.collapse_fraction)) <= 1e-14
    assert float(s[1]) <= 1e-14
    assert abs(abs(float(u[:, 0] @ down)) - 1.0) <= 1e-12
    assert float(((W - W.mean(0)) @ vh[0]).norm()) <= 1e-12  # off the centred W's rows


def test_growth_at_d_K_minus_1_takes_a_row_direction_off_the_centred_W():
    # d = K - 1 = 7 with centred rank 5 and a mean row outside the centred W's row space: W
    # itself has rank 6, one free row direction, but the centred W (all a shift-invariant
    # loss sees) has two; C is negative along both zero class directions, so both grow, each
    # along a row direction orthogonal to the centred W's rows
    from types import SimpleNamespace

    from ufm.solver.gram_preconditioner import GramSums
    from ufm.solver.newton_cg import GramNewtonCG

    config = _sparse_pairs(method="newton_gram", d=7)
    method = GramNewtonCG(RunState(build_problem(config)))
    generator = torch.Generator().manual_seed(4)
    centred = torch.eye(8, dtype=torch.float64) - 1.0 / 8
    U, _ = torch.linalg.qr(centred @ torch.randn(8, 7, generator=generator, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(7, 7, generator=generator, dtype=torch.float64))
    sigma = torch.tensor([2.0, 1.5, 1.2, 1.0, 0.8], dtype=torch.float64)
    W_c = U[:, :5] @ torch.diag(sigma) @ V[:, :5].T
    W = W_c + torch.ones(8, 1, dtype=torch.float64) * (0.3 * V[:, 5])  # mean row off W_c's rows
    first, second = U[:, 5], U[:, 6]
    C = -torch.outer(first, first) - torch.outer(second, second)
    n, lam_H, lam_W = method.state.problem.n, config.lam_H, config.lam_W
    outer = lam_H * n * (lam_W * torch.eye(8, dtype=torch.float64) - C)
    metric = SimpleNamespace(gram_sums=GramSums(None, outer, torch.ones(8)))
    point, dropped, grown = method._trial_point(W.reshape(-1), metric, 1)
    assert (dropped, grown) == (0, 2)
    change = point.reshape(W.shape) - W
    assert float((W_c @ change.T).abs().max()) <= 1e-12  # rows off the centred W's
    assert float(change.sum(0).abs().max()) <= 1e-12  # the mean row unchanged
    epsilon = 2.0 * math.sqrt(method.collapse_fraction)  # 2 the largest singular value
    assert abs(float(torch.linalg.svdvals(change)[1]) - epsilon) <= 1e-12


@pytest.mark.parametrize("K, d", [(6, 9), (8, 8), (9, 5)])
def test_the_step_projector_projects_onto_row_space_directions_off_the_rotations(K, d):
    # an orthogonal projection (idempotent, symmetric) that keeps S W for symmetric S (rows in
    # W's row space, orthogonal to every rotation W Omega), removes W Omega and u v^T with v
    # off W's rows, and without row_space keeps u v^T
    from ufm.solver.newton_cg import GramNewtonCG

    config = UFMConfig(K=K, d=d, num_lams=3, classifier="learned", method="newton_gram")
    method = GramNewtonCG(RunState(build_problem(config)))
    generator = torch.Generator().manual_seed(K * d)
    rank = min(K, d) - 2
    W = (torch.randn(K, rank, generator=generator, dtype=torch.float64)
         @ torch.randn(rank, d, generator=generator, dtype=torch.float64))
    method.state.W = W
    project = method._step_projector()
    a, b = (torch.randn(K * d, generator=generator, dtype=torch.float64) for _ in range(2))
    assert float((project(project(a)) - project(a)).abs().max()) <= 1e-12 * float(a.abs().max())
    assert abs(float(project(a) @ b - a @ project(b))) <= 1e-12 * float(a.norm() * b.norm())
    S = torch.randn(K, K, generator=generator, dtype=torch.float64)
    SW = ((S + S.T) @ W).reshape(-1)
    assert float((project(SW) - SW).abs().max()) <= 1e-11 * float(SW.abs().max())
    omega = torch.randn(d, d, generator=generator, dtype=torch.float64)
    rotation = (W @ (omega - omega.T)).reshape(-1)
    assert float(project(rotation).abs().max()) <= 1e-11 * float(W.abs().max())
    # u v^T with u off W's columns and v off its rows: no rotation (those have u in the
    # columns), so only the row-space projection removes it
    U, _, Vh = torch.linalg.svd(W, full_matrices=True)
    off = torch.outer(U[:, -1], Vh[-1]).reshape(-1)
    assert float(project(off).abs().max()) <= 1e-12
    assert float((method._step_projector(row_space=False)(off) - off).abs().max()) <= 1e-12


def test_newton_gram_grows_its_way_off_a_saddle_of_rank_one(monkeypatch):
    # from a classifier of rank 1 with trust-region steps from the start, newton_gram's
    # first trial points grow W (its steps stay in W's row space: without growth only
    # rounding errors would take it off the saddle) and it converges to the minimum that
    # L-BFGS reaches from the full-rank start
    from ufm.solver.newton_cg import GramNewtonCG

    fields = {"K": 6, "d": 6, "num_lams": 5, "classifier": "learned", "mixed_precision": False,
              "pairs": "random", "num_pairs": 10, "tol": 1e-9}
    minimum = solve(UFMConfig(**fields, method="newton"))
    W0 = build_problem(UFMConfig(**fields)).W0
    u, s, vh = torch.linalg.svd(W0)
    rank_one = s[0] * torch.outer(u[:, 0], vh[0])
    monkeypatch.setattr(GramNewtonCG, "switch_fraction", 1.0)  # trust-region steps at once
    grown = solve(UFMConfig(**fields, method="newton_gram"), W_init=rank_one)
    steps = [row for row in grown.history if row.get("step_kind") == "trust_region"]
    assert sum(row["step_grown"] for row in steps) >= 1
    assert grown.summary["stop_reason"] == "converged"
    assert abs(grown.summary["loss"] - minimum.summary["loss"]) <= 1e-9
    assert grown.summary["optimality_gap_bound"] <= 1e-6


def test_a_solve_that_drops_collapsing_directions_ends_at_the_optimum_of_lbfgs():
    # K = d = 12 on 20 random class pairs: the optimal Gram matrix of the centred W has
    # collapsed directions, which newton_gram's trial points drop. Stationary by the
    # autograd gradient in (H, W), and at the objective and Gram matrix of L-BFGS (which
    # drops nothing): not a saddle that a drop left
    fields = {"K": 12, "d": 12, "pairs": "random", "num_pairs": 20, "num_lams": 5,
              "classifier": "learned", "tol": 1e-11, "mixed_precision": False}
    lbfgs = solve(UFMConfig(**fields, method="newton"))
    config = UFMConfig(**fields, method="newton_gram")
    result = solve(config)
    steps = [row for row in result.history if row.get("step_kind") == "trust_region"]
    assert sum(row["step_dropped"] for row in steps) >= 1
    assert result.summary["stop_reason"] == "converged"
    assert abs(result.summary["loss"] - lbfgs.summary["loss"]) <= 1e-9 * abs(lbfgs.summary["loss"])
    assert float((result.W @ result.W.T - lbfgs.W @ lbfgs.W.T).abs().max()) <= 1e-7
    assert _autograd_gradient_norm(config, result) <= 1e-9
    W_c = result.W - result.W.mean(0)
    sigma = torch.linalg.svdvals(W_c)
    assert int((sigma[:-1] <= 1e-6 * sigma[0]).sum()) >= 1  # collapsed, the common one apart
