r"""Gradient-based solver of the mixup UFM: free features, fixed or learned classifier.

Minimises the objective of :mod:`ufm.solver.problem` (THEORY.md section 1) over all samples at
once, on the configured device, with one of two methods:

* ``"newton"`` (default). For fixed :math:`(W, b)` the features separate into strictly
  convex per-sample problems, solved exactly by :class:`ufm.solver.feature_newton.FeatureSolver`. The
  learned variables :math:`\theta = (W, b)` are then optimised by L-BFGS on the reduced
  function :math:`F(\theta) = \min_H L(H, \theta)`, whose gradient is, by the envelope
  theorem, :math:`\nabla_W F = \frac1n\sum_s \nabla\ell_s\, h_s^\top + \lambda_W W`,
  :math:`\nabla_b F = \frac1n\sum_s\nabla\ell_s + \lambda_b b`. (Optimising :math:`(H, W)`
  jointly by L-BFGS crawls: each :math:`h_s` has :math:`1/n` of :math:`W`'s curvature.)
  With a fixed classifier and no bias an iteration is one Newton step on every feature.
* ``"gd"``: gradient descent with heavy-ball momentum on all variables, each feature
  stepped with its own per-sample gradient (i.e. scaled by :math:`n`), step sizes
  ``lr`` times the inverse of curvature bounds.

Gradient norm (scale-free, reported and used for stopping):
:math:`\sqrt{r_H^2 + \|\nabla_W L\|_F^2 + \|\nabla_b L\|^2}` over the learned variables, where
:math:`r_H = (\frac1n\sum_s\|n\,\partial L/\partial h_s\|^2)^{1/2}` is the root-mean-square
per-sample feature gradient, which does not shrink as :math:`n` grows.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._allocator import keep_freed_memory
from ..etf import etf_distance, etf_gain, row_norm
from .feature_newton import FeatureSolver, InnerStats, loss_terms
from ..io import prepare_run_dir, save_torch
from .lbfgs import LBFGSMemory
from ..losses import SquaredError
from .problem import Problem, UFMConfig, build_problem
from .results import UFMResult
from ..theory import has_exact_theory, optimal_coefficients, optimal_features

CHECKPOINT = "checkpoint.pt"
_LBFGS_MEMORY = 20
_MAX_LINE_SEARCH = 30


def solve(
    config: UFMConfig,
    W_init: torch.Tensor | None = None,
    *,
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: float = 60.0,
) -> UFMResult:
    """Solve the mixup UFM described by ``config``; return a :class:`~ufm.solver.results.UFMResult`.

    Parameters
    ----------
    config : the problem and the method (validated on construction).
    W_init : optional (K, d) initial classifier (the fixed one for ``classifier="fixed"``).
    progress : show a progress bar with iteration, loss and gradient norm.
    checkpoint_dir : folder for ``checkpoint.pt``, written every ``checkpoint_every``
        seconds and whenever the run stops (also on Ctrl-C).
    resume : continue from ``checkpoint_dir/checkpoint.pt``.

    ``result.summary`` holds the final loss, the gradient norm and its parts, the ETF
    distance of W, and, for a fixed simplex-ETF classifier with cross-entropy, label
    smoothing or squared error and no bias, the relative distance of the features to
    :func:`ufm.optimal_features` overall and per lam.
    """
    keep_freed_memory()
    problem = build_problem(config, W_init)
    run = _Run(problem, progress, checkpoint_dir, checkpoint_every)
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (the folder of the interrupted run)")
        run.load_checkpoint()
    return run.execute()


class _Run:
    """The state of one solve: variables, history, clock, checkpoints."""

    def __init__(self, problem: Problem, progress: bool, checkpoint_dir, checkpoint_every: float):
        self.problem = problem
        self.config = config = problem.config
        self.progress = progress
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.learn_W = config.classifier == "learned"
        self.learn_b = config.bias
        self.W = problem.W0.clone()
        self.b = None if problem.b0 is None else problem.b0.clone()
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.seconds_before = 0.0
        self.theory = _TheoryReference.build(problem)
        self.features = FeatureSolver(
            problem.c, problem.c_prime, problem.lam, problem.loss, config.lam_H, config.chunk_size
        )
        self.memory = LBFGSMemory(_LBFGS_MEMORY)
        self.gd_state: dict[str, torch.Tensor] | None = None
        self.current: dict[str, Any] | None = None  # F, grad vector, stats at the iterate

    # -- the outer loop ----------------------------------------------------------------------

    def execute(self) -> UFMResult:
        config = self.config
        self.start = time.perf_counter()
        self.last_checkpoint = self.start
        bar = _progress_bar(self.progress, config.max_iters, self.iteration)
        stop_reason = None
        try:
            with _interrupt_as_exception():
                if config.method == "gd":
                    stop_reason = self._run_gd(bar)
                else:
                    stop_reason = self._run_newton(bar)
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        finally:
            if bar is not None:
                bar.close()
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        return self._result(stop_reason)

    def _elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _limit_reason(self, grad_norm: float) -> str | None:
        config = self.config
        if not math.isfinite(grad_norm):
            return "diverged"
        if grad_norm <= config.tol:
            return "converged"
        if self.iteration >= config.max_iters:
            return "max_iters"
        if config.time_limit is not None and self._elapsed() >= config.time_limit:
            return "time_limit"
        return None

    def _maybe_checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        now = time.perf_counter()
        if now - self.last_checkpoint >= self.checkpoint_every:
            self.save_checkpoint()
            self.last_checkpoint = now

    # -- method "newton" ----------------------------------------------------------------------

    def _inner_tol(self, outer_grad: float | None) -> float:
        """Inner tolerance: loose while the classifier is far from optimal, 0.1 tol at the end."""
        tol = self.config.tol
        if not (self.learn_W or self.learn_b):
            return 0.1 * tol
        if outer_grad is None:
            return max(0.1 * tol, 1e-3)
        return max(0.1 * tol, min(1e-3, 1e-2 * outer_grad))

    def _evaluate(self, W, b, inner_tol) -> dict[str, Any]:
        self.features.set_classifier(W, b)
        stats = self.features.solve(inner_tol)
        return self._package(W, b, stats)

    def _package(self, W, b, stats: InnerStats) -> dict[str, Any]:
        config, n = self.config, self.problem.n
        F = stats.objective_sum / n + 0.5 * config.lam_W * float((W * W).sum())
        parts = []
        grad_W = grad_b = None
        if self.learn_W:
            grad_W = stats.grad_W / n + config.lam_W * W
            parts.append(grad_W.reshape(-1))
        if b is not None:
            F += 0.5 * config.lam_b * float((b * b).sum())
            if self.learn_b:
                grad_b = stats.grad_b / n + config.lam_b * b
                parts.append(grad_b)
        theta_grad = torch.cat(parts) if parts else None
        theta_norm = 0.0 if theta_grad is None else float(torch.linalg.vector_norm(theta_grad))
        return _iterate(F, math.sqrt(stats.feature_grad_sq_sum / n), theta_norm**2, stats.finite,
                        grad_W, grad_b, theta_grad=theta_grad, stats=stats)

    def _theta(self) -> torch.Tensor | None:
        parts = []
        if self.learn_W:
            parts.append(self.W.reshape(-1))
        if self.learn_b:
            parts.append(self.b)
        return torch.cat(parts) if parts else None

    def _split(self, theta: torch.Tensor):
        W, b = self.W, self.b
        offset = 0
        if self.learn_W:
            W = theta[: W.numel()].reshape(W.shape)
            offset = W.numel()
        if self.learn_b:
            b = theta[offset:]
        return W, b

    def _run_newton(self, bar) -> str:
        if not (self.learn_W or self.learn_b):
            return self._run_fixed(bar)
        if self.current is None:
            self.current = self._evaluate(self.W, self.b, self._inner_tol(None))
        while True:
            current = self.current
            self._record(current, bar)
            reason = self._limit_reason(current["grad_norm"])
            if reason is not None:
                return reason
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
            self.W, self.b = self._split(new_theta)
            self.current = new
            self.iteration += 1
            self._maybe_checkpoint()

    def _line_search(self, theta, direction, slope, step, current):
        F0 = current["F"]
        accepted_state = self.features.snapshot()
        inner_tol = self._inner_tol(float(torch.linalg.vector_norm(current["theta_grad"])))
        for _ in range(_MAX_LINE_SEARCH):
            trial = theta + step * direction
            W, b = self._split(trial)
            new = self._evaluate(W, b, inner_tol)
            if math.isfinite(new["F"]):
                sufficient = new["F"] <= F0 + 1e-4 * step * slope
                # below rounding level of F, accept a step that reduces the gradient
                at_rounding = abs(step * slope) <= 64 * np.finfo(np.float64).eps * (abs(F0) + 1)
                if sufficient or (at_rounding and new["grad_norm"] < current["grad_norm"]):
                    return trial, new
            step *= 0.5
            self.features.restore(accepted_state)
        return None  # the features are back at the last accepted state

    def _run_fixed(self, bar) -> str:
        """Fixed classifier, no bias: an iteration is one Newton pass over all features.

        The pass measures the features before stepping them, so the record of iteration k
        describes iterate k; the final state is evaluated once more at the end.
        """
        if self.features.X is None:
            self.features.set_classifier(self.W, self.b)
        while True:
            stats = self.features.newton_pass(self._inner_tol(None))
            current = self._package(self.W, self.b, stats)
            reason = self._limit_reason(current["grad_norm"])
            if reason is not None:
                # the pass may have stepped a few samples further: measure the final state
                self.current = self._package(self.W, self.b, self.features.evaluate())
                self._record(self.current, bar)
                return reason
            self.current = current
            self._record(current, bar)
            self.iteration += 1
            self._maybe_checkpoint()

    # -- method "gd" --------------------------------------------------------------------------

    def _run_gd(self, bar) -> str:
        config, problem = self.config, self.problem
        if self.gd_state is None:
            features = (problem.n, problem.d)
            self.gd_state = {
                "H": torch.zeros(features, dtype=problem.dtype, device=problem.device),
                "vH": torch.zeros(features, dtype=problem.dtype, device=problem.device),
                "grad_H": torch.zeros(features, dtype=problem.dtype, device=problem.device),
                "vW": torch.zeros_like(self.W),
                "vb": None if self.b is None else torch.zeros_like(self.b),
            }
        state = self.gd_state
        lr, beta = (config.lr or 1.0), config.momentum
        while True:
            current = self._gd_evaluate(state["H"])
            self.current = current
            self._record(current, bar)
            reason = self._limit_reason(current["grad_norm"])
            if reason is not None:
                return reason
            curvature = 0.5 if not isinstance(problem.loss, SquaredError) else 1.0
            L_H = curvature * float(torch.linalg.matrix_norm(self.W, 2)) ** 2 + config.lam_H
            state["vH"].mul_(beta).add_(current["grad_H"], alpha=-lr / L_H)
            if self.learn_W:
                # (1/n) sum_s h_s h_s^T has largest eigenvalue <= mean |h_s|^2
                mean_sq = float((state["H"] ** 2).sum(1).mean())
                L_W = curvature * mean_sq + config.lam_W
                state["vW"].mul_(beta).add_(current["grad_W"], alpha=-lr / L_W)
            if self.learn_b:
                L_b = curvature + config.lam_b
                state["vb"].mul_(beta).add_(current["grad_b"], alpha=-lr / L_b)
            if not _all_finite(state["vH"], state["vW"], state["vb"]):
                return "diverged"
            state["H"].add_(state["vH"])
            if self.learn_W:
                self.W = self.W + state["vW"]
            if self.learn_b:
                self.b = self.b + state["vb"]
            self.iteration += 1
            self._maybe_checkpoint()

    def _gd_evaluate(self, H) -> dict[str, Any]:
        """Objective and gradients at (H, W, b), chunk by chunk (grad_H into a kept buffer)."""
        config, problem = self.config, self.problem
        n = problem.n
        grad_H = self.gd_state["grad_H"]
        objective = 0.0
        grad_W = torch.zeros_like(self.W)
        grad_b = torch.zeros(problem.K, dtype=problem.dtype, device=problem.device)
        for start in range(0, n, config.chunk_size):
            idx = slice(start, min(start + config.chunk_size, n))
            h = H[idx]
            z = h @ self.W.T
            if self.b is not None:
                z = z + self.b
            value, _, g = loss_terms(problem.loss, z, problem.c[idx], problem.c_prime[idx], problem.lam[idx])
            objective += float(value.sum()) + 0.5 * config.lam_H * float((h * h).sum())
            torch.addmm(h, g, self.W, beta=config.lam_H, out=grad_H[idx])
            grad_W += g.T @ h
            grad_b += g.sum(0)
        F = objective / n + 0.5 * config.lam_W * float((self.W * self.W).sum())
        theta_sq = 0.0
        if self.learn_W:
            grad_W = grad_W / n + config.lam_W * self.W
            theta_sq += float((grad_W * grad_W).sum())
        else:
            grad_W = None
        if self.b is not None:
            F += 0.5 * config.lam_b * float((self.b * self.b).sum())
        if self.learn_b:
            grad_b = grad_b / n + config.lam_b * self.b
            theta_sq += float((grad_b * grad_b).sum())
        else:
            grad_b = None
        feature_rms = float(grad_H.norm() / math.sqrt(n))
        return _iterate(F, feature_rms, theta_sq, True, grad_W, grad_b, grad_H=grad_H, stats=None)

    # -- bookkeeping --------------------------------------------------------------------------

    def _current_H(self) -> torch.Tensor:
        if self.config.method == "gd":
            return self.gd_state["H"]
        return self.features.features()

    def _theory_frame(self):
        """Features and the matching frame for the theory distance (see _TheoryReference)."""
        if self.config.method == "gd":
            return self.gd_state["H"], self.W
        return self.features.X, self.features.A

    def _record(self, current, bar) -> None:
        row = {
            "iteration": self.iteration,
            "loss": current["F"],
            "grad_norm": current["grad_norm"],
            "feature_grad_rms": current["feature_rms"],
            "grad_W_norm": _norm(current["grad_W"]),
            "grad_b_norm": _norm(current["grad_b"]),
            "etf_distance_W": etf_distance(self.W),
            "seconds": self.seconds_before + self._elapsed(),
        }
        if self.theory is not None:
            row["theory_distance"] = self.theory.distance(*self._theory_frame())
        stats = current.get("stats")
        if stats is not None:
            row["inner_newton"] = stats.newton_iterations
        self.history.append(row)
        if bar is not None:
            bar.n = self.iteration
            bar.set_postfix(loss=f"{row['loss']:.6g}", grad=f"{row['grad_norm']:.2e}", refresh=False)
            bar.refresh()

    def _result(self, stop_reason: str) -> UFMResult:
        problem, config = self.problem, self.config
        H = self._current_H()
        seconds = self.seconds_before + self._elapsed()
        last = self.history[-1] if self.history else {}
        summary: dict[str, Any] = {
            "stop_reason": stop_reason,
            "iterations": self.iteration,
            "seconds": seconds,
            "device": str(problem.device),
            "threads": torch.get_num_threads(),
            "n": problem.n,
            "method": config.method,
            "loss": last.get("loss"),
            "grad_norm": last.get("grad_norm"),
            "feature_grad_rms": last.get("feature_grad_rms"),
            "grad_W_norm": last.get("grad_W_norm"),
            "grad_b_norm": last.get("grad_b_norm"),
            "etf_distance_W": etf_distance(self.W),
            "etf_distance_W_centred": etf_distance(self.W, center=True),
            "W_row_norm_mean": float(self.W.norm(dim=1).mean()),
            "bias_norm": None if self.b is None else float(self.b.norm()),
        }
        if self.theory is not None:
            summary["theory_distance"] = self.theory.distance(*self._theory_frame())
            summary["theory_distance_per_lam"] = self.theory.distance_per_lam(*self._theory_frame())
        summary.update(_learned_etf_comparison(problem, H, self.W, self.b))
        return UFMResult(
            config=config,
            H=H,
            W=self.W,
            b=self.b,
            c=problem.c,
            c_prime=problem.c_prime,
            lam=problem.lam,
            history=self.history,
            stop_reason=stop_reason,
            seconds=seconds,
            device=str(problem.device),
            summary=summary,
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        prepare_run_dir(self.checkpoint_dir)
        state = {
            "iteration": self.iteration,
            "W": self.W,
            "b": self.b,
            "history": self.history,
            "seconds": self.seconds_before + self._elapsed(),
            "memory": self.memory.state_dict(),
            "features": self.features.state_dict() if self.features.X is not None else None,
            "current": _strip_stats(self.current),
            # the gradient buffer is recomputed at every iterate: not worth saving
            "gd_state": None if self.gd_state is None else {
                k: v for k, v in self.gd_state.items() if k != "grad_H"
            },
        }
        save_torch(self.checkpoint_dir / CHECKPOINT, state)

    def load_checkpoint(self) -> None:
        path = self.checkpoint_dir / CHECKPOINT
        if not path.is_file():
            raise ValueError(f"no checkpoint to resume from: {str(path)!r} does not exist")
        state = torch.load(path, map_location=self.problem.device, weights_only=False)
        self.iteration = state["iteration"]
        self.W, self.b = state["W"], state["b"]
        self.history = state["history"]
        self.seconds_before = state["seconds"]
        self.memory.load_state_dict(state["memory"])
        if state["features"] is not None:
            self.features.load_state_dict(state["features"])
        self.current = state["current"]
        self.gd_state = state["gd_state"]
        if self.gd_state is not None:
            self.gd_state["grad_H"] = torch.zeros_like(self.gd_state["H"])
        if self.history and self.history[-1]["iteration"] == self.iteration:
            self.history.pop()  # the resumed loop records this iterate again


class _TheoryReference:
    """Exact optimal features for a fixed simplex-ETF classifier, as per-sample coefficients."""

    def __init__(self, problem: Problem, a: torch.Tensor, b: torch.Tensor):
        self.problem = problem
        self.a, self.b = a, b

    @classmethod
    def build(cls, problem: Problem):
        config = problem.config
        if config.classifier != "fixed_etf" or config.bias or not has_exact_theory(problem.loss):
            return None
        W = problem.W0
        K = W.shape[0]
        scale = row_norm(K, etf_gain(W))
        lam = problem.lam.detach().cpu().to(torch.float64)
        unique, inverse = torch.unique(lam, return_inverse=True)
        a_u, b_u = optimal_coefficients(K, unique.numpy(), config.lam_H, scale, problem.loss)
        (a_same,), _ = optimal_coefficients(K, [1.0], config.lam_H, scale, problem.loss, same_class=True)
        same = (problem.c == problem.c_prime).cpu()
        a = torch.where(same, a_same, torch.from_numpy(a_u)[inverse])
        b = torch.where(same, 0.0, torch.from_numpy(b_u)[inverse])
        return cls(problem, a.to(problem.device, W.dtype), b.to(problem.device, W.dtype))

    def _sums(self, features, frame, idx) -> tuple[float, float]:
        """(|F - F*|^2, |F*|^2) over ``idx`` where F* = a frame[c] + b frame[c'].

        ``features``/``frame`` are either H and W, or the coordinates X and A = U Sigma of
        the feature solver (W = A V^T, so distances agree and no H is formed).
        """
        c, cp = self.problem.c[idx], self.problem.c_prime[idx]
        exact = self.a[idx, None] * frame[c] + self.b[idx, None] * frame[cp]
        return float(((features[idx] - exact) ** 2).sum()), float((exact**2).sum())

    def distance(self, features, frame) -> float:
        """|H - H*|_F / |H*|_F over all samples."""
        n = self.problem.n
        chunk = self.problem.config.chunk_size
        num = den = 0.0
        for start in range(0, n, chunk):
            idx = torch.arange(start, min(start + chunk, n), device=features.device)
            a, b = self._sums(features, frame, idx)
            num, den = num + a, den + b
        return math.sqrt(num / den) if den > 0 else math.sqrt(num)

    def distance_per_lam(self, features, frame) -> dict[str, float] | None:
        """Relative distance per distinct lam (grid problems only)."""
        if self.problem.config.alpha is not None:
            return None
        lam = self.problem.lam
        result = {}
        for value in torch.unique(lam).tolist():
            num, den = self._sums(features, frame, torch.nonzero(lam == value).squeeze(1))
            result[f"{value:.6g}"] = math.sqrt(num / den) if den > 0 else math.sqrt(num)
        return result


def _learned_etf_comparison(problem: Problem, H, W, b) -> dict[str, Any]:
    """For a learned W close to an ETF: distance of H to the exact theory for that W."""
    config = problem.config
    if config.classifier != "learned" or b is not None or not has_exact_theory(problem.loss):
        return {}
    distance = etf_distance(W)
    if distance > 1e-3:
        return {"theory_distance_learned_W": None}
    exact = optimal_features(W, problem.c, problem.c_prime, problem.lam, config.lam_H,
                             loss=problem.loss, etf_tol=1e-3)
    value = float((H - exact).norm() / exact.norm())
    return {"theory_distance_learned_W": value, "learned_W_gain": etf_gain(W)}


def _iterate(F, feature_rms, theta_sq, finite, grad_W, grad_b, **extra) -> dict[str, Any]:
    """The measured state of an iterate; non-finite values make F and the norm infinite."""
    grad_norm = math.sqrt(feature_rms**2 + theta_sq)
    finite = finite and math.isfinite(F) and math.isfinite(grad_norm)
    return {
        "F": F if finite else math.inf,
        "grad_W": grad_W,
        "grad_b": grad_b,
        "feature_rms": feature_rms,
        "grad_norm": grad_norm if finite else math.inf,
        **extra,
    }


def _norm(tensor) -> float | None:
    return None if tensor is None else float(torch.linalg.vector_norm(tensor))


def _all_finite(*tensors) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def _strip_stats(current):
    if current is None:
        return None
    return {**current, "stats": None}


def _progress_bar(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="ufm solve", unit="it", dynamic_ncols=True)


@contextmanager
def _interrupt_as_exception():
    """Make SIGTERM behave like Ctrl-C, so both leave a checkpoint."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not in the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
