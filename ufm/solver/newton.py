r"""Method ``"newton"``: exact per-sample Newton on the features, L-BFGS on the classifier.

For fixed :math:`(W, b)` the UFM objective (THEORY.md section 1, Fisher, Meng & Papyan,
ICLR 2024) separates into strictly convex per-sample problems, solved exactly by
:class:`~ufm.solver.feature_newton.FeatureSolver`. The learned variables
:math:`\theta = (W, b)` are then optimised by L-BFGS (:class:`~ufm.solver.lbfgs.LBFGSMemory`)
with a backtracking Armijo line search on the reduced function
:math:`F(\theta) = \min_H L(H, \theta)`, whose gradient is, by the envelope theorem,
:math:`\nabla_W F = \frac1n\sum_s \nabla\ell_s\, h_s^\top + \lambda_W W`,
:math:`\nabla_b F = \frac1n\sum_s\nabla\ell_s + \lambda_b b` (:class:`ReducedNewton`).
Optimising :math:`(H, W)` jointly by L-BFGS crawls: each :math:`h_s` has :math:`1/n` of
:math:`W`'s curvature. With a fixed classifier and no bias an iteration is one Newton step
on every feature (:class:`FixedClassifierNewton`). :func:`newton_method` picks the variant.
Samples of m > 2 classes use :class:`~ufm.solver.mixture_newton.MixtureFeatureSolver`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .feature_newton import FeatureSolver, InnerStats
from .lbfgs import LBFGSMemory
from .mixture_newton import MixtureFeatureSolver
from .state import RunState, measured_iterate, penalised_objective
from .tight_frame import TightFrameFeatureSolver, TightFrameMixtureSolver

_LBFGS_MEMORY = 20
_MAX_LINE_SEARCH = 30


def newton_method(state: RunState) -> NewtonMethod:
    """The Newton variant for ``state``: reduced L-BFGS if W or b is learned, else fixed."""
    return ReducedNewton(state) if state.learns_W_or_b else FixedClassifierNewton(state)


class NewtonMethod:
    """What both variants share: the feature solver, the L-BFGS memory, the measured iterate.

    The features live in the coordinates of the feature solver; :meth:`features` forms
    H only when asked. The checkpoint parts are ``memory``, ``features`` and ``current``
    (the measured iterate, which a resumed reduced run records again without re-solving).
    """

    def __init__(self, state: RunState):
        problem, config = state.problem, state.config
        self.state = state
        # a fixed classifier that is a tight frame is solved in logit coordinates
        logit_frame = config.coordinates == "auto" and not state.learn_W
        if problem.classes is None:
            pairs = TightFrameFeatureSolver if logit_frame else FeatureSolver
            self.feature_solver = pairs(
                problem.c, problem.c_prime, problem.lam, problem.loss, config.lam_H, config.chunk_rows,
                config.parallel,
            )
        else:
            mixtures = TightFrameMixtureSolver if logit_frame else MixtureFeatureSolver
            self.feature_solver = mixtures(
                problem.classes, problem.weights, problem.loss, config.lam_H, config.chunk_rows,
                config.parallel,
            )
        self.feature_solver.sample_weight = problem.sample_weight
        self.memory = LBFGSMemory(_LBFGS_MEMORY)
        self.current: dict[str, Any] | None = None

    def _package(self, W, b, stats: InnerStats) -> dict[str, Any]:
        """The measured iterate at (W, b) from the feature solver's totals.

        ``theta_grad`` is the flat gradient of the learned variables (W first, then b),
        None when nothing is learned; ``stats`` the inner solver statistics.
        """
        F, grad_W, grad_b = penalised_objective(
            self.state, W, b, stats.objective_sum, stats.grad_W, stats.grad_b
        )
        parts = [grad.reshape(-1) for grad in (grad_W, grad_b) if grad is not None]
        theta_grad = torch.cat(parts) if parts else None
        theta_norm = 0.0 if theta_grad is None else float(torch.linalg.vector_norm(theta_grad))
        feature_rms = math.sqrt(stats.feature_grad_sq_sum / self.state.problem.n)
        return measured_iterate(F, feature_rms, theta_norm**2, stats.finite, grad_W, grad_b,
                                theta_grad=theta_grad, stats=stats)

    def final(self, current: dict[str, Any]) -> dict[str, Any]:
        return current

    def features(self) -> torch.Tensor:
        return self.feature_solver.features()

    def theory_frame(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The coordinates X and their frame (see the theory reference)."""
        return self.feature_solver.theory_frame()

    def state_dict(self) -> dict[str, Any]:
        solver = self.feature_solver
        return {
            "memory": self.memory.state_dict(),
            "features": solver.state_dict() if solver.X is not None else None,
            "current": self.current,
        }

    def load_state_dict(self, contents: dict[str, Any]) -> None:
        self.memory.load_state_dict(contents["memory"])
        if contents["features"] is not None:
            self.feature_solver.load_state_dict(contents["features"])
        self.current = contents["current"]


class ReducedNewton(NewtonMethod):
    r"""L-BFGS on the learned :math:`\theta = (W, b)`, every evaluation solving all features.

    The inner tolerance is loose while the classifier is far from optimal and reaches
    ``0.1 tol`` at the end; a line search that cannot decrease F stops the run as
    ``"stalled"`` with the features back at the last accepted iterate.
    """

    def start(self) -> None:
        if self.current is None:
            self.current = self._evaluate(self.state.W, self.state.b, self._inner_tol(None))

    def measure(self) -> dict[str, Any]:
        return self.current

    def step(self, current: dict[str, Any]) -> str | None:
        theta = self._theta()
        grad = current["theta_grad"]
        direction = self.memory.direction(grad)
        slope = float(torch.dot(grad, direction))
        if slope >= 0:  # not a descent direction: restart from steepest descent
            self.memory = LBFGSMemory(_LBFGS_MEMORY)
            direction, slope = -grad, -float(torch.dot(grad, grad))
        step = 1.0 if len(self.memory) else min(1.0, 1.0 / max(float(grad.norm()), 1e-300))
        accepted = self._line_search(theta, direction, slope, step, current)
        if accepted is None:
            return "stalled"
        new_theta, new = accepted
        self.memory.update(new_theta - theta, new["theta_grad"] - grad)
        self.state.W, self.state.b = self._split(new_theta)
        self.current = new
        return None

    def _inner_tol(self, outer_grad: float | None) -> float:
        """Inner tolerance: loose while the classifier is far from optimal, 0.1 tol at the end."""
        tol = self.state.config.tol
        if outer_grad is None:
            return max(0.1 * tol, 1e-3)
        return max(0.1 * tol, min(1e-3, 1e-1 * outer_grad))

    def _evaluate(self, W, b, inner_tol: float) -> dict[str, Any]:
        """Solve every feature for the classifier (W, b); the measured iterate there."""
        self.feature_solver.set_classifier(W, b)
        stats = self.feature_solver.solve(inner_tol)
        return self._package(W, b, stats)

    def _theta(self) -> torch.Tensor:
        """The learned variables as one flat vector (W first, then b)."""
        state = self.state
        parts = []
        if state.learn_W:
            parts.append(state.W.reshape(-1))
        if state.learn_b:
            parts.append(state.b)
        return torch.cat(parts)

    def _split(self, theta: torch.Tensor):
        """(W, b) from a flat vector of the learned variables (the others as they are)."""
        state = self.state
        W, b = state.W, state.b
        offset = 0
        if state.learn_W:
            W = theta[: W.numel()].reshape(W.shape)
            offset = W.numel()
        if state.learn_b:
            b = theta[offset:]
        return W, b

    def _line_search(self, theta, direction, slope: float, step: float, current):
        r"""Backtrack from ``step`` until F decreases enough; (theta, measured) or None.

        Armijo condition :math:`F(\theta + t p) \le F(\theta) + 10^{-4} t\,\nabla F^\top p`;
        once the predicted decrease is below rounding level of F, a step that reduces the
        gradient norm is accepted instead.
        """
        F0 = current["F"]
        accepted_state = self.feature_solver.snapshot()
        inner_tol = self._inner_tol(float(torch.linalg.vector_norm(current["theta_grad"])))
        for _ in range(_MAX_LINE_SEARCH):
            trial = theta + step * direction
            W, b = self._split(trial)
            new = self._evaluate(W, b, inner_tol)
            if math.isfinite(new["F"]):
                sufficient = new["F"] <= F0 + 1e-4 * step * slope
                at_rounding = abs(step * slope) <= 64 * np.finfo(np.float64).eps * (abs(F0) + 1)
                if sufficient or (at_rounding and new["grad_norm"] < current["grad_norm"]):
                    return trial, new
            step *= 0.5
            self.feature_solver.restore(accepted_state)
        return None  # the features are back at the last accepted state


class FixedClassifierNewton(NewtonMethod):
    """Fixed classifier, no bias: an iteration is one Newton pass over all features.

    The pass measures the features before stepping them, so the record of iteration k
    describes iterate k; when the run stops the pass may have stepped a few samples
    further, so the final state is measured once more.
    """

    def start(self) -> None:
        if self.feature_solver.X is None:
            self.feature_solver.set_classifier(self.state.W, self.state.b)
        self.feature_solver.grad_W_needed = self.state.learn_W
        self.best_grad_norm = math.inf

    def measure(self) -> dict[str, Any]:
        stats = self.feature_solver.newton_pass(0.1 * self.state.config.tol)
        self.current = self._package(self.state.W, self.state.b, stats)
        return self.current

    def final(self, current: dict[str, Any]) -> dict[str, Any]:
        self.current = self._package(self.state.W, self.state.b, self.feature_solver.evaluate())
        return self.current

    def step(self, current: dict[str, Any]) -> str | None:
        """None: the Newton pass of measure() has stepped every feature already.

        ``"rounding"`` when that pass was at the rounding level of the dtype (every predicted
        decrease below it) and the gradient norm did not halve from its best so far: no
        further pass can lower it (float32 reaches about 1e-7, float64 about 1e-15).
        """
        grad_norm = current["grad_norm"]
        if current["stats"].at_rounding and grad_norm > 0.5 * self.best_grad_norm:
            return "rounding"
        self.best_grad_norm = min(self.best_grad_norm, grad_norm)
        return None
