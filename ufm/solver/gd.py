r"""Method ``"gd"``: gradient descent with heavy-ball momentum on all variables at once.

Every variable of the UFM objective (docs/theory.md section 1, Fisher, Meng & Papyan, ICLR 2024)
moves by its velocity, :math:`v \leftarrow \beta v - (\mathrm{lr}/L)\,\nabla`,
:math:`x \leftarrow x + v`, with momentum :math:`\beta` = ``momentum`` and :math:`L` a bound
on the curvature of that block. Each feature is stepped with its own per-sample gradient
:math:`n\,\partial L/\partial h_s = W^\top\nabla\ell_s + \lambda_H h_s` (i.e. scaled by
:math:`n`), with :math:`L_H = \kappa\|W\|_2^2 + \lambda_H`; the classifier with
:math:`L_W = \kappa\,\frac1n\sum_s\|h_s\|^2 + \lambda_W` and :math:`L_b = \kappa + \lambda_b`,
where :math:`\kappa` is the loss's declared bound on its curvature in the logits (1 for the
squared error, 1/2 for the softmax family, about 1.04 for focal loss at :math:`\gamma = 2`), and
``lr`` defaults to 1. Under class imbalance (sample weights
:math:`w_s`) a feature steps with the gradient of its own :math:`\phi_s`, the gradient above
divided by :math:`w_s`, so every sample keeps its step size. Samples of m > 2 classes take their
loss terms from the loss's ``mixture_terms``. A non-finite velocity stops the run
as ``"diverged"`` before it is applied, so the last finite state is kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .state import Iterate, RunState, measured_iterate, penalised_objective


class HeavyBall:
    """Heavy-ball momentum on (H, W, b); the buffers are the checkpoint part ``gd_state``.

    ``buffers`` holds the features ``H``, the velocities ``vH``, ``vW``, ``vb`` and the
    gradient buffer ``grad_H``, which is recomputed at every iterate and not saved.
    """

    name = "gd"

    def __init__(self, state: RunState):
        self.state = state
        self.buffers: dict[str, torch.Tensor] | None = None
        self.current: Iterate | None = None

    def start(self) -> None:
        if self.buffers is not None:
            return
        state, problem = self.state, self.state.problem
        shape = (problem.n, problem.d)
        self.buffers = {
            "H": torch.zeros(shape, dtype=problem.dtype, device=problem.device),
            "vH": torch.zeros(shape, dtype=problem.dtype, device=problem.device),
            "grad_H": torch.zeros(shape, dtype=problem.dtype, device=problem.device),
            "vW": torch.zeros_like(state.W),
            "vb": None if state.b is None else torch.zeros_like(state.b),
        }

    def measure(self) -> Iterate:
        self.current = self._evaluate(self.buffers["H"])
        return self.current

    def final(self, current: Iterate) -> Iterate:
        return current

    def step_record(self) -> dict:
        """Nothing to add: every step is the same heavy-ball update."""
        return {}

    def step(self, current: Iterate) -> str | None:
        state, config, buffers = self.state, self.state.config, self.buffers
        lr, beta = (config.lr or 1.0), config.momentum
        curvature = state.problem.loss.curvature
        L_H = curvature * float(torch.linalg.matrix_norm(state.W, 2)) ** 2 + config.lam_H
        buffers["vH"].mul_(beta).add_(current.grad_H, alpha=-lr / L_H)
        if state.learn_W:
            # (1/n) sum_s h_s h_s^T has largest eigenvalue <= mean |h_s|^2
            mean_sq = float((buffers["H"] ** 2).sum(1).mean())
            L_W = curvature * mean_sq + config.lam_W
            buffers["vW"].mul_(beta).add_(current.grad_W, alpha=-lr / L_W)
        if state.learn_b:
            L_b = curvature + config.lam_b
            buffers["vb"].mul_(beta).add_(current.grad_b, alpha=-lr / L_b)
        if not _all_finite(buffers["vH"], buffers["vW"], buffers["vb"]):
            return "diverged"
        buffers["H"].add_(buffers["vH"])
        if state.learn_W:
            state.W = state.W + buffers["vW"]
        if state.learn_b:
            state.b = state.b + buffers["vb"]
        return None

    def _evaluate(self, H) -> Iterate:
        """Objective and gradients at (H, W, b), chunk by chunk (grad_H into its buffer)."""
        state, config, problem = self.state, self.state.config, self.state.problem
        W, b, n = state.W, state.b, problem.n
        grad_H = self.buffers["grad_H"]
        objective = 0.0
        grad_W = torch.zeros_like(W)
        grad_b = torch.zeros(problem.K, dtype=problem.dtype, device=problem.device)
        for start in range(0, n, config.chunk_rows):
            idx = slice(start, min(start + config.chunk_rows, n))
            h = H[idx]
            z = h @ W.T
            if b is not None:
                z = z + b
            if problem.mixes_pairs:
                value, _, g = problem.loss.pair_terms(z, problem.c[idx], problem.c_prime[idx], problem.lam[idx])
            else:
                value, _, g = problem.loss.mixture_terms(z, problem.classes[idx], problem.weights[idx])
            penalty = 0.5 * config.lam_H * (h * h).sum(-1)
            # the per-sample gradient of phi_s (unweighted, as the Newton method reports it)
            torch.addmm(h, g, W, beta=config.lam_H, out=grad_H[idx])
            if problem.sample_weight is None:
                objective += float(value.sum() + penalty.sum())
            else:  # class imbalance: each sample's loss and penalty weighed alike
                weight = problem.sample_weight[idx]
                objective += float(((value + penalty) * weight).sum())
                g = g * weight[:, None]
            grad_W += g.T @ h
            grad_b += g.sum(0)
        F, grad_W, grad_b = penalised_objective(state, W, b, objective, grad_W, grad_b)
        theta_sq = 0.0
        if grad_W is not None:
            theta_sq += float((grad_W * grad_W).sum())
        if grad_b is not None:
            theta_sq += float((grad_b * grad_b).sum())
        feature_rms = float(grad_H.norm() / math.sqrt(n))
        return measured_iterate(F, feature_rms, theta_sq, True, grad_W, grad_b, grad_H=grad_H)

    def features(self) -> torch.Tensor:
        return self.buffers["H"]

    def theory_frame(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The features H and the classifier W (see the theory reference)."""
        return self.buffers["H"], self.state.W

    def state_dict(self) -> dict[str, Any]:
        buffers = self.buffers
        return {
            "current": self.current,
            # the gradient buffer is recomputed at every iterate: not worth saving
            "gd_state": None if buffers is None else {k: v for k, v in buffers.items() if k != "grad_H"},
        }

    def load_state_dict(self, contents: dict[str, Any]) -> None:
        self.current = contents["current"]
        self.buffers = contents["gd_state"]
        if self.buffers is not None:
            self.buffers["grad_H"] = torch.zeros_like(self.buffers["H"])


def _all_finite(*tensors) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)
