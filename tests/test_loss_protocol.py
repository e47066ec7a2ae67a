"""A loss is one class and one registry line: the solver, gradient descent, the preconditioners
and the convex certificate take it from what it declares (ufm.losses.base), never from its class.

Two losses show it: a squared hinge defined here, in the test module (a general Hessian, its own
m-class value and nothing else), and logit-adjusted cross-entropy, the package's one-file loss
(Menon et al., ICLR 2021). Each is checked against computations that do not use the solver:
autograd gradients of the whole objective in float64, L-BFGS on the features, the convex
certificate, and the exact equivalence of logit adjustment with a shifted bias.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from ufm.losses import LOSSES, LossNames, MixupLoss, get_loss, mixture_target, register_loss
from ufm.solver import UFMConfig, build_problem, solve
from ufm.theory.certificate import certify, duality_gap


class SquaredHinge(MixupLoss):
    r"""Squared hinge on the signed soft target: :math:`\frac12\sum_j \max(0, 1 - s_j z_j)^2`
    with :math:`s = 2y - 1`. Convex, Hessian diagonal with entries :math:`s_j^2 \le 1` where the
    hinge is active: a ``"general"`` Hessian the solver reaches only through autograd."""

    name = "squared_hinge_for_tests"
    label = "squared hinge"
    hessian: ClassVar[str] = "general"
    convex: ClassVar[bool] = True
    curvature = 1.0

    def mixture_value(self, z, classes, weights):
        signed = 2 * mixture_target(classes, weights, z.shape[-1]) - 1
        return 0.5 * torch.relu(1 - signed * z).pow(2).sum(-1)


@pytest.fixture
def hinge_registered(monkeypatch):
    """The test loss in the registry for one test (removed afterwards)."""
    monkeypatch.setitem(LOSSES, SquaredHinge.name, SquaredHinge)
    return SquaredHinge.name


def _objective(problem, H, W, b=None, loss_value=None):
    """The UFM objective of docs/theory.md section 1, written out independently of the solver."""
    z = H @ W.T if b is None else H @ W.T + b
    values = loss_value(z) if loss_value else problem.loss(z, problem.c, problem.c_prime, problem.lam)
    per_sample = values + 0.5 * problem.config.lam_H * (H * H).sum(-1)
    if problem.sample_weight is not None:
        per_sample = per_sample * problem.sample_weight
    total = per_sample.mean() + 0.5 * problem.config.lam_W * (W * W).sum()
    if b is not None:
        total = total + 0.5 * problem.config.lam_b * (b * b).sum()
    return total


def _feature_gradient(problem, H, W, b=None, loss_value=None):
    """n times the autograd gradient of the objective in H: the per-sample stationarity residual."""
    H = H.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_objective(problem, H, W, b, loss_value), H)
    return problem.n * grad


def _lbfgs_features(problem, W, b=None, loss_value=None):
    """The features minimising the objective for fixed W: torch's L-BFGS from zero, then
    Newton steps on the dense autograd Hessian in H (the objective is separable in the
    samples and lam_H-strongly convex in each), until the stationarity residual is at
    rounding level. L-BFGS alone stopped at a residual of 2.8e-9, which leaves the features
    up to 2.8e-9 / lam_H = 6e-7 from their optimum."""
    H = torch.zeros(problem.n, problem.d, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([H], lr=1, max_iter=5000, tolerance_grad=1e-13,
                                  tolerance_change=0, history_size=50, line_search_fn="strong_wolfe")

    def objective(features):
        return problem.n * _objective(problem, features, W, b, loss_value)

    def closure():
        optimiser.zero_grad()
        value = objective(H)
        value.backward()
        return value

    optimiser.step(closure)
    H = H.detach()
    for _ in range(5):
        if float(_feature_gradient(problem, H, W, b, loss_value).norm(dim=-1).max()) <= 1e-13:
            break
        shape, flat = H.shape, H.reshape(-1)

        def flat_objective(x, shape=shape):
            return objective(x.reshape(shape))

        hessian = torch.autograd.functional.hessian(flat_objective, flat)
        gradient = torch.autograd.functional.jacobian(flat_objective, flat)
        H = (flat - torch.linalg.solve(hessian, gradient)).reshape(shape)
    return H


# -- a loss defined in the test module --------------------------------------------------------


@pytest.mark.parametrize("method", ["newton", "gd"])
def test_a_loss_defined_here_is_solved_by_newton_and_gd(hinge_registered, method):
    config = UFMConfig(K=4, d=5, num_lams=5, loss=hinge_registered, method=method, tol=1e-10,
                       max_iters=20000 if method == "gd" else 200)
    result = solve(config, progress=False)
    problem = build_problem(config)
    W = result.W.to(torch.float64)
    reference = _lbfgs_features(problem, W)
    assert float((result.H - reference).abs().max()) < (1e-8 if method == "newton" else 1e-6)
    residual = _feature_gradient(problem, result.H, W).norm(dim=-1).max()
    assert float(residual) < (1e-9 if method == "newton" else 1e-7)


def test_a_loss_defined_here_learns_a_stationary_classifier(hinge_registered):
    config = UFMConfig(K=4, d=5, num_lams=5, loss=hinge_registered, classifier="learned",
                       lam_W=1e-2, tol=1e-10, max_iters=500)
    result = solve(config, progress=False)
    assert result.stop_reason == "converged"
    problem = build_problem(config)
    H = result.H.detach().clone().requires_grad_(True)
    W = result.W.detach().clone().requires_grad_(True)
    grad_H, grad_W = torch.autograd.grad(_objective(problem, H, W), (H, W))
    assert float((problem.n * grad_H).norm(dim=-1).max()) < 1e-8
    assert float(grad_W.norm()) < 1e-9


def test_the_registry_makes_a_new_loss_a_choice_everywhere(hinge_registered):
    assert hinge_registered in LossNames() and hinge_registered in list(UFMConfig.CHOICES["loss"])
    from ufm.cli import build_parser

    args = build_parser().parse_args(["solve", "--out", "x", "--loss", hinge_registered])
    assert args.loss == hinge_registered
    from ufm.plots.style import _loss_styles

    names, colours = _loss_styles()
    assert names[hinge_registered] == "squared hinge"
    assert len(set(colours.values())) == len(colours)  # a colour of its own
    with pytest.raises(ValueError, match="declares no convex program"):
        certify(torch.eye(4, 5, dtype=torch.float64), [0], [1], [0.5], 0.1, loss=SquaredHinge())


def test_register_loss_refuses_what_the_solver_could_not_use():
    class NoName(MixupLoss):
        pass

    class OddHessian(MixupLoss):
        name = "odd_hessian"
        hessian = "tridiagonal"

    with pytest.raises(ValueError, match="needs a name"):
        register_loss(NoName)
    with pytest.raises(ValueError, match="hessian must be one of"):
        register_loss(OddHessian)
    with pytest.raises(ValueError, match="is registered already"):
        register_loss(type("Again", (SquaredHinge,), {"name": "ce"}))
    with pytest.raises(ValueError, match="MixupLoss subclass"):
        register_loss(dict)


def test_a_loss_without_an_m_class_form_is_refused_for_mixtures(monkeypatch):
    cls = type("PairsOnly", (SquaredHinge,), {"name": "pairs_only", "mixture_form": False})
    monkeypatch.setitem(LOSSES, cls.name, cls)
    with pytest.raises(ValueError, match="loss 'pairs_only' has no m-class form.*'ce'"):
        UFMConfig(K=5, d=6, mixup_points=3, loss="pairs_only")


# -- declared curvature --------------------------------------------------------------------


@pytest.mark.parametrize("name,params", [("ce", {}), ("mse", {}), ("label_smoothing", {"eps": 0.3}),
                                         ("focal", {"gamma": 2.0}), ("focal", {"gamma": 0.5}),
                                         ("logit_adjusted", {"priors": [0.7, 0.2, 0.1]})])
def test_the_declared_curvature_bounds_the_logit_hessian(name, params):
    """Largest Hessian eigenvalue over random logits of every scale stays below the bound and
    comes within 20% of it (the bound is not vacuous)."""
    loss = get_loss(name, **params)
    generator = torch.Generator().manual_seed(0)
    K, n = 3, 400
    z = torch.randn(n, K, generator=generator, dtype=torch.float64)
    z = z * torch.logspace(-1, 1.3, n, dtype=torch.float64)[:, None]
    c = torch.randint(K, (n,), generator=generator)
    c_prime = torch.randint(K, (n,), generator=generator)
    lam = torch.rand(n, generator=generator, dtype=torch.float64)
    lam[: n // 2] = 1.0  # one-hot targets, where focal loss bends most
    columns = [loss.hvp(z, c, c_prime, lam, torch.eye(K, dtype=torch.float64)[j].expand(n, K))
               for j in range(K)]
    largest = torch.linalg.eigvalsh(torch.stack(columns, -1)).amax()
    assert float(largest) <= loss.curvature
    assert float(largest) >= 0.8 * loss.curvature


# -- logit-adjusted cross-entropy: one file, one registry line ----------------------------


def test_logit_adjusted_is_cross_entropy_of_shifted_logits():
    priors = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    loss = get_loss("logit_adjusted", tau=1.5, priors=priors.tolist())
    generator = torch.Generator().manual_seed(1)
    z = 3 * torch.randn(50, 4, generator=generator, dtype=torch.float64)
    c, c_prime = torch.randint(4, (50,), generator=generator), torch.randint(4, (50,), generator=generator)
    lam = torch.rand(50, generator=generator, dtype=torch.float64)
    y = mixture_target(torch.stack([c, c_prime], 1), torch.stack([lam, 1 - lam], 1), 4)
    expected = F.cross_entropy(z + 1.5 * priors.log(), y, reduction="none")
    assert torch.allclose(loss(z, c, c_prime, lam), expected, rtol=1e-14, atol=1e-14)
    value, _, grad = loss.pair_terms(z, c, c_prime, lam)
    assert torch.allclose(value, expected, rtol=1e-14, atol=1e-14)
    assert torch.allclose(grad, torch.softmax(z + 1.5 * priors.log(), -1) - y, atol=1e-15)
    with pytest.raises(ValueError, match="priors of loss 'logit_adjusted' must be positive"):
        get_loss("logit_adjusted", priors=[0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="must have K = 5 entries, got 4"):
        UFMConfig(K=5, d=6, loss="logit_adjusted", loss_params={"priors": priors.tolist()})


def _imbalanced_logit_adjusted(**overrides):
    settings = {"K": 4, "d": 5, "num_lams": 5, "loss": "logit_adjusted", "loss_params": {"tau": 1.0},
                "imbalance_ratio": 8.0, "minority_classes": 2, "tol": 1e-11}
    return UFMConfig(**{**settings, **overrides})


def test_logit_adjusted_takes_the_class_frequencies_and_is_stationary_and_certified():
    config = _imbalanced_logit_adjusted()
    problem = build_problem(config)
    sizes = torch.tensor([1.0, 1.0, 1 / 8, 1 / 8], dtype=torch.float64)
    assert problem.loss.priors == pytest.approx((sizes / sizes.sum()).tolist(), rel=1e-15)
    result = solve(config, progress=False)
    W = result.W.to(torch.float64)
    shift = sizes.div(sizes.sum()).log()

    def shifted_cross_entropy(z):
        y = mixture_target(torch.stack([problem.c, problem.c_prime], 1),
                           torch.stack([problem.lam, 1 - problem.lam], 1), 4)
        return F.cross_entropy(z + shift, y, reduction="none")

    residual = _feature_gradient(problem, result.H, W, loss_value=shifted_cross_entropy)
    assert float(residual.norm(dim=-1).max()) < 1e-10
    _, _, gap = duality_gap(W, result.H, problem.c, problem.c_prime, problem.lam, config.lam_H,
                            problem.loss)
    assert float(abs(gap).max()) < 1e-12
    # the convex program, solved by SCS, for a few samples
    rows = torch.arange(0, problem.n, 7)
    certificate = certify(W, problem.c[rows], problem.c_prime[rows], problem.lam[rows],
                          config.lam_H, problem.loss, tol=1e-9)
    error = (torch.as_tensor(certificate.h) - result.H[rows]).norm(dim=-1)
    assert float(error.max()) < 1e-5
    gd = solve(_imbalanced_logit_adjusted(method="gd", max_iters=20000, tol=1e-9), progress=False)
    assert float((gd.H - result.H).abs().max()) < 1e-7


def test_logit_adjustment_is_a_shifted_bias_when_the_bias_is_learned():
    r"""With a learned, unpenalised bias, :math:`\operatorname{lse}(z + s) - y^\top(z+s)` is
    cross-entropy with the bias :math:`b + s`: the logit-adjusted optimum has the
    cross-entropy optimum's classifier Gram matrix and logits, and its bias less the shift, up to a constant
    (a constant on every logit changes neither loss, so it is not determined)."""
    common = {"classifier": "learned", "bias": True, "lam_W": 1e-2, "tol": 1e-10, "max_iters": 500}
    adjusted = solve(_imbalanced_logit_adjusted(**common), progress=False)
    plain = solve(_imbalanced_logit_adjusted(**common, loss="ce", loss_params={}), progress=False)
    assert adjusted.stop_reason == plain.stop_reason == "converged"
    sizes = torch.tensor([1.0, 1.0, 1 / 8, 1 / 8], dtype=torch.float64)
    shift = sizes.div(sizes.sum()).log()
    # the optimum is unique up to a rotation of feature space (W -> WQ, H -> HQ): compare
    # what a rotation leaves alone, the Gram matrix and the logits without bias
    assert float((adjusted.W @ adjusted.W.T - plain.W @ plain.W.T).abs().max()) < 1e-7
    assert float((adjusted.H @ adjusted.W.T - plain.H @ plain.W.T).abs().max()) < 1e-7
    # a constant added to every logit changes neither loss: compare the centred biases
    centred_shift = shift - shift.mean()
    expected_bias = plain.b - plain.b.mean() - centred_shift
    assert float((adjusted.b - adjusted.b.mean() - expected_bias).abs().max()) < 1e-7
    assert float(centred_shift.abs().max()) > 1.0  # the test can tell them apart
