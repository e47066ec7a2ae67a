r"""Method ``"newton"``: exact per-sample Newton on the features, L-BFGS on the classifier.

For fixed :math:`(W, b)` the UFM objective (docs/theory.md section 1, Fisher, Meng & Papyan,
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
Pairs and m-class mixtures share the one feature solver (samples as classes and weights (n, m)).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from .anchor_start import start_at_anchors
from .feature_newton import FeatureSolver, InnerStats
from .lbfgs import LBFGSMemory
from .sample_groups import group_samples
from .state import Iterate, RunState, measured_iterate, penalised_objective

_LBFGS_MEMORY = 20
_MAX_LINE_SEARCH = 30
# inner feature solves stop at this fraction of the outer gradient norm (see _inner_tol)
_INNER_FRACTION = 0.1
# the float32 phase of a mixed-precision run ends at this fraction of the first gradient norm
_FLOAT32_UNTIL = 1e-3
# a float32 line search that fails this many times passes to float64 (F is at its rounding)
_FLOAT32_LINE_SEARCH = 4


def newton_method(state: RunState) -> NewtonMethod:
    """The Newton variant for ``state``: reduced L-BFGS if W or b is learned, else fixed."""
    return ReducedNewton(state) if state.learns_W_or_b else FixedClassifierNewton(state)


class NewtonMethod:
    """What both variants share: the feature solver, the L-BFGS memory, the measured iterate.

    The features live in the coordinates of the feature solver; :meth:`features` forms
    H only when asked. The checkpoint parts are ``memory``, ``features`` and ``current``
    (the measured iterate, which a resumed reduced run records again without re-solving).
    """

    # both variants are method "newton" (:mod:`.newton_cg` names its own)
    name = "newton"

    def __init__(self, state: RunState):
        self.state = state
        self.dtype = self._first_dtype()  # the feature solver's
        problem = state.problem
        # samples with one soft target, solved once each (None: every sample on its own)
        self.groups = group_samples(problem.classes, problem.weights, problem.loss)
        self.feature_solver = self._feature_solver(self.dtype)
        self.memory = LBFGSMemory(_LBFGS_MEMORY)
        self.current: Iterate | None = None
        # the work of this process's run, in units that do not depend on the machine's load:
        # feature solves (each a gradient of the reduced function), their passes over the
        # samples and the rows those visited (a row: a sample, or a group of samples with one
        # soft target), and (Newton-CG) reduced Hessian products, the rows they visited
        # (fewer on a subsample) and their per-sample CG steps
        self.work = {"evaluations": 0, "feature_passes": 0, "sample_visits": 0,
                     "hessian_products": 0, "hessian_visits": 0, "hessian_cg": 0,
                     "preconditioner_passes": 0}
        # what the step in progress has done (step_record); the work counts at its start
        self._step_record: dict[str, Any] = {}
        self._work_at_step = dict(self.work)

    def step_record(self) -> dict[str, Any]:
        """The last step's history columns (:meth:`~.state.Method.step_record`):
        ``step_kind`` (``"lbfgs"``; ``"trust_region"``: :class:`~.newton_cg.NewtonCG`, whose
        record says more; ``"to_float64"``, a step that only took a mixed-precision run to
        the problem's dtype, which the row's ``feature_dtype`` shows after any step),
        ``step_solves`` (feature solves) and ``step_products`` (reduced Hessian products)
        made during it. A fixed classifier's pass has nothing to add: {}.

        Why: a run's history then shows where its time went and why a step gained little
        (held by the trust radius, stopped at negative curvature, or converged with a model
        that missed), which the gradient norms alone cannot tell."""
        record, self._step_record = self._step_record, {}
        if record:
            record["step_solves"] = self.work["evaluations"] - self._work_at_step["evaluations"]
            record["step_products"] = (self.work["hessian_products"]
                                       - self._work_at_step["hessian_products"])
        self._work_at_step = dict(self.work)
        return record

    def _first_dtype(self) -> torch.dtype:
        return self.state.problem.dtype

    def _feature_solver(self, dtype: torch.dtype, coordinates=None) -> FeatureSolver:
        """The feature solver of the problem's samples, one per group of samples with one
        soft target (:mod:`.sample_groups`) weighted by the group's total weight, its mixing
        weights in ``dtype``; ``coordinates`` (X, V) the features it starts from (see
        :class:`FeatureSolver`)."""
        problem, config, state = self.state.problem, self.state.config, self.state
        groups = self.groups
        weight = problem.sample_weight
        classes, weights = problem.classes, problem.weights
        if groups is not None:
            classes, weights = classes[groups.representatives], weights[groups.representatives]
            weight = groups.group_weights(weight)
        options = {
            "sample_weight": None if weight is None else weight.to(dtype),
            "sample_count": None if groups is None else groups.counts.to(torch.float64),
            # the sums g_s h_s^T serve only the gradient of a learned W
            "grad_W_needed": state.learn_W,
            "pin_cpus": state.pin_cpus,
            "coordinates": coordinates,
        }
        # a fixed classifier that is a tight frame is solved in logit coordinates
        logit_frame = config.coordinates == "auto" and not state.learn_W
        return FeatureSolver(classes, weights.to(dtype), problem.loss,
                             config.lam_H, config.chunk_rows, config.parallel,
                             logit_coordinates=logit_frame, **options)

    def _package(self, W, b, stats: InnerStats) -> Iterate:
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
                                theta_grad=theta_grad, inner_stats=stats,
                                feature_dtype=str(self.dtype).removeprefix("torch."))

    def final(self, current: Iterate) -> Iterate:
        return current

    def _start_features(self) -> None:
        """Features at the anchor mixtures of the initial classifier, unless resumed. A loss
        that is not convex in the logits (focal) starts at zero: from the anchors its Newton
        steps met negative curvature and fell back to slow gradient steps."""
        if self.feature_solver.X is None:
            self._set_classifier(self.state.W, self.state.b)
            if self.state.problem.loss.convex:
                start_at_anchors(self.feature_solver)

    def _set_classifier(self, W, b) -> None:
        """Give the feature solver (W, b) in its own dtype."""
        dtype = self.dtype
        self.feature_solver.set_classifier(W.to(dtype), None if b is None else b.to(dtype))

    def features(self) -> torch.Tensor:
        """H (n, d) in the problem's dtype (a mixed-precision run may stop in its float32
        phase), each sample with its group's features."""
        return self.feature_solver.features(self._sample_rows).to(self.state.problem.dtype)

    def theory_frame(self) -> tuple:
        """The coordinates X and their frame (see the theory reference), in the problem's
        dtype, and the row of X of each sample (None: one row each)."""
        X, frame = self.feature_solver.theory_frame()
        dtype = self.state.problem.dtype
        return X.to(dtype), frame.to(dtype) if torch.is_tensor(frame) else frame, self._sample_rows

    @property
    def _sample_rows(self) -> torch.Tensor | None:
        """The feature solver's row of each sample (its group's), None where it has one each."""
        return None if self.groups is None else self.groups.inverse

    @property
    def _in_float32_phase(self) -> bool:
        """Whether the features are solved in float32 for a float64 problem."""
        return self.dtype != self.state.problem.dtype

    def state_dict(self) -> dict[str, Any]:
        solver = self.feature_solver
        return {
            "memory": self.memory.state_dict(),
            "features": solver.state_dict() if solver.X is not None else None,
            "current": self.current,
        }

    def load_state_dict(self, contents: dict[str, Any]) -> None:
        self.memory.load_state_dict(contents["memory"])
        features = contents["features"]
        if features is not None:
            if self.groups is not None and features["X"].shape[0] == self.groups.n:
                # saved before samples were grouped: one row per sample, keep the groups' first
                features = {**features, "X": features["X"][self.groups.representatives]}
            self.feature_solver.load_state_dict(features)
        self.current = contents["current"]


class ReducedNewton(NewtonMethod):
    r"""L-BFGS on the learned :math:`\theta = (W, b)`, every evaluation solving all features.

    The inner tolerance is loose while the classifier is far from optimal and reaches
    ``0.1 tol`` at the end; a line search that cannot decrease F stops the run as
    ``"stalled"`` with the features back at the last accepted iterate.

    Mixed precision (``config.mixed_precision`` with a float64 problem): the features are
    solved in float32, about 1.8 times faster, while the gradient norm is above
    ``max(tol, 1e-3 |grad_0|)``; then the float32 features are carried over as the warm
    start of float64 solves and L-BFGS goes on with the same memory. The classifier, the
    L-BFGS vectors and every recorded number stay float64 throughout. A float32 line search
    that cannot decrease F, a stop by ``max_iters`` or ``time_limit`` and the first
    gradient being small already all pass to float64 at once, so the final measurement,
    features and stopping test are always float64.
    """

    _paused: tuple | None = None  # the float32 state at a stop by a limit

    def _first_dtype(self) -> torch.dtype:
        dtype = self.state.problem.dtype
        return torch.float32 if self.state.config.mixed_precision and dtype == torch.float64 else dtype

    def start(self) -> None:
        if self.current is None:
            fresh = self.feature_solver.X is None
            self._start_features()  # sets the classifier of a fresh run
            self.current = self._evaluate(self.state.W, self.state.b, self._inner_tol(None),
                                          set_classifier=not fresh)
        self._leave_float32_below()
        self._step_record, self._work_at_step = {}, dict(self.work)  # steps count from here

    def measure(self) -> Iterate:
        return self.current

    def final(self, current: Iterate) -> Iterate:
        """The float64 measurement; a float32 phase stays in the checkpoint, so a resumed
        run goes on exactly as if it had not stopped."""
        if self._in_float32_phase:
            paused = (self.feature_solver, self.current)  # left intact by the carry-over
            self._to_full_precision()
            self._paused = paused
        return self.current

    def step(self, current: Iterate) -> str | None:
        theta = self._theta()
        grad = current.theta_grad
        direction = self.memory.direction(grad)
        slope = float(torch.dot(grad, direction))
        if slope >= 0:  # not a descent direction: restart from steepest descent
            self.memory = LBFGSMemory(_LBFGS_MEMORY)
            direction, slope = -grad, -float(torch.dot(grad, grad))
        step = 1.0 if len(self.memory) else min(1.0, 1.0 / max(float(grad.norm()), 1e-300))
        accepted = self._line_search(theta, direction, slope, step, current)
        if accepted is None:
            if self._in_float32_phase:  # float32 can go no further
                self._to_full_precision()
                return None
            return "stalled"
        new_theta, new = accepted
        self._step_record = {"step_kind": "lbfgs"}
        self.memory.update(new_theta - theta, new.theta_grad - grad)
        self.state.W, self.state.b = self._split(new_theta)
        self.current = new
        self._leave_float32_below()
        return None

    def _leave_float32_below(self) -> None:
        """Go on in float64 once the gradient norm is at the end of the float32 phase."""
        if self.current.grad_norm <= max(self.state.config.tol, _FLOAT32_UNTIL * self._first_grad_norm()):
            self._to_full_precision()

    def _first_grad_norm(self) -> float:
        """The gradient norm of the run's first measured iterate (the current one before any)."""
        history = self.state.history
        return history[0]["grad_norm"] if history else self.current.grad_norm

    def _to_full_precision(self) -> None:
        """Carry the features over to a solver in the problem's dtype; measure there again."""
        if not self._in_float32_phase:
            return
        self._step_record.setdefault("step_kind", "to_float64")
        dtype = self.state.problem.dtype
        low = self.feature_solver
        # the coordinates and their frame, which the next set_classifier carries over
        self.feature_solver = self._feature_solver(dtype, coordinates=(low.X.to(dtype), low.V.to(dtype)))
        self.dtype = dtype
        theta_grad = self.current.theta_grad
        self.current = self._evaluate(self.state.W, self.state.b,
                                      self._inner_tol(float(torch.linalg.vector_norm(theta_grad))))

    def state_dict(self) -> dict[str, Any]:
        contents = super().state_dict()
        if self._paused is not None:  # stopped in the float32 phase: save that state
            solver, current = self._paused
            contents.update(features=solver.state_dict(), current=current)
        return contents

    def load_state_dict(self, contents: dict[str, Any]) -> None:
        """Restore, in the phase (float32 or float64) of the saved features."""
        features = contents["features"]
        if features is not None and features["X"].dtype != self.dtype:
            self.dtype = features["X"].dtype
            self.feature_solver = self._feature_solver(self.dtype)
        super().load_state_dict(contents)

    def _inner_tol(self, outer_grad: float | None) -> float:
        """Inner tolerance: loose while the classifier is far from optimal, 0.1 tol at the end."""
        tol = self.state.config.tol
        if outer_grad is None:
            return max(0.1 * tol, 1e-3)
        return max(0.1 * tol, min(1e-3, _INNER_FRACTION * outer_grad))

    def _evaluate(self, W, b, inner_tol: float, set_classifier: bool = True) -> Iterate:
        """Solve every feature for the classifier (W, b); the measured iterate there.

        ``set_classifier=False`` when the feature solver holds (W, b) already: a second
        factorisation would carry every feature through an r x r product for nothing.
        """
        if set_classifier:
            self._set_classifier(W, b)
        stats = self.feature_solver.solve(inner_tol)
        self.work["evaluations"] += 1
        self.work["feature_passes"] += stats.passes
        self.work["sample_visits"] += stats.sample_visits
        if self._in_float32_phase:
            stats = replace(stats, grad_W=stats.grad_W.to(W.dtype), grad_b=stats.grad_b.to(W.dtype))
        return self._package(W, b, stats)

    def _theta(self) -> torch.Tensor:
        """The learned variables as one flat vector (W first, then b)."""
        return self._join(self.state.W, self.state.b)

    def _join(self, W, b) -> torch.Tensor:
        """One flat vector of the learned parts of (W, b), as :meth:`_theta` lays them out
        (the inverse of :meth:`_split`); a part that is not learned is left out (may be None)."""
        state = self.state
        parts = []
        if state.learn_W:
            parts.append(W.reshape(-1))
        if state.learn_b:
            parts.append(b)
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
        F0 = current.objective
        accepted_state = self.feature_solver.snapshot()
        inner_tol = self._inner_tol(float(torch.linalg.vector_norm(current.theta_grad)))
        for _ in range(_FLOAT32_LINE_SEARCH if self._in_float32_phase else _MAX_LINE_SEARCH):
            trial = theta + step * direction
            W, b = self._split(trial)
            new = self._evaluate(W, b, inner_tol)
            if math.isfinite(new.objective):
                sufficient = new.objective <= F0 + 1e-4 * step * slope
                at_rounding = abs(step * slope) <= 64 * np.finfo(np.float64).eps * (abs(F0) + 1)
                if sufficient or (at_rounding and new.grad_norm < current.grad_norm):
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
        self._start_features()
        self.best_grad_norm = math.inf

    def measure(self) -> Iterate:
        stats = self.feature_solver.newton_pass(0.1 * self.state.config.tol)
        self.current = self._package(self.state.W, self.state.b, stats)
        return self.current

    def final(self, current: Iterate) -> Iterate:
        self.current = self._package(self.state.W, self.state.b, self.feature_solver.evaluate())
        return self.current

    def step(self, current: Iterate) -> str | None:
        """None: the Newton pass of measure() has stepped every feature already.

        ``"rounding"`` when that pass was at the rounding level of the dtype (every predicted
        decrease below it) and the gradient norm did not halve from its best so far: no
        further pass can lower it (float32 reaches about 1e-7, float64 about 1e-15).
        """
        grad_norm = current.grad_norm
        if current.inner_stats.at_rounding and grad_norm > 0.5 * self.best_grad_norm:
            return "rounding"
        self.best_grad_norm = min(self.best_grad_norm, grad_norm)
        return None
