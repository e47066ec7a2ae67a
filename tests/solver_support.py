"""Helpers the solver tests share."""

from __future__ import annotations

import torch

from ufm.losses import SoftmaxFamily
from ufm.solver.newton_cg import newton_gram_method
from ufm.solver.problem import build_problem
from ufm.solver.state import RunState


def autograd_stationarity(config, result) -> float:
    """sqrt(mean_s |n dL/dh_s|^2 + |dL/dW|^2 + |dL/db|^2) of the objective in (H, W, b) by
    autograd in float64, sample weights included (they weigh loss and feature penalty)."""
    problem = build_problem(config)
    H = result.H.clone().requires_grad_(True)
    W = result.W.clone().requires_grad_(True)
    leaves = [H, W]
    logits = H @ W.T
    if result.b is not None:
        b = result.b.clone().requires_grad_(True)
        leaves.append(b)
        logits = logits + b
    values = problem.loss.mixture_value(logits, problem.classes, problem.weights)
    squares = (H * H).sum(-1)
    if problem.sample_weight is not None:  # it weighs each sample's loss and feature penalty
        values, squares = values * problem.sample_weight, squares * problem.sample_weight
    n = problem.n
    objective = (values.sum() + 0.5 * config.lam_H * squares.sum()) / n
    if config.classifier == "learned":
        objective = objective + 0.5 * config.lam_W * (W * W).sum()
    if result.b is not None:
        objective = objective + 0.5 * config.lam_b * (leaves[2] * leaves[2]).sum()
    grads = torch.autograd.grad(objective, leaves)
    learned_W = config.classifier == "learned"  # a fixed W has no stationarity to meet
    total = ((n * grads[0]).pow(2).sum(-1).mean()) + (grads[1].pow(2).sum() if learned_W else 0.0)
    if len(grads) == 3:
        total = total + grads[2].pow(2).sum()
    return float(total.sqrt())


def newton_gram_at_start(config, monkeypatch, grouped: bool = True):
    """newton_gram at its first classifier, features solved; with ``grouped`` False every
    sample is solved on its own (the loss declares it is not ``target_only``)."""
    with monkeypatch.context() as patch:
        if not grouped:
            patch.setattr(SoftmaxFamily, "target_only", False)
        method = newton_gram_method(RunState(build_problem(config)))
    method._start_features()
    method.current = method._evaluate(method.state.W, method.state.b, 1e-13)
    return method


def random_direction(config, seed: int = 3) -> torch.Tensor:
    """A random flat direction of the learned variables of ``config`` (W, then b)."""
    size = config.K * config.d + (config.K if config.bias else 0)
    return torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
