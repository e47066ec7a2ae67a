r"""Gradient-based solver of the mixup UFM: free features, fixed or learned classifier.

Minimises the objective of :mod:`ufm.solver.problem` (docs/theory.md section 1, Fisher, Meng &
Papyan, ICLR 2024) over all samples at once, on the configured device, with one of the
methods registered in :mod:`.methods`:

* ``"auto"`` (default): ``"newton_gram"`` for a learned classifier of up to 1000 classes,
  else ``"newton"`` (:func:`.newton_cg.auto_method`).
* ``"newton"`` (:mod:`.newton`): exact per-sample Newton on the features for fixed
  :math:`(W, b)`, and L-BFGS on the learned :math:`\theta = (W, b)` with the features
  eliminated, :math:`F(\theta) = \min_H L(H, \theta)`. With a fixed classifier and no bias
  an iteration is one Newton step on every feature.
* ``"newton_cg"``, ``"newton_gram"`` (:mod:`.newton_cg`): the same features, truncated Newton
  on :math:`\theta` (``"newton_gram"`` preconditioned by the curvature of every Gram entry).
* ``"gd"`` (:mod:`.gd`): gradient descent with heavy-ball momentum on all variables, each
  feature stepped with its own per-sample gradient (i.e. scaled by :math:`n`), step sizes
  ``lr`` times the inverse of curvature bounds.

This module is the driver all methods share: :func:`solve`, the iteration loop, one
history row per iterate, the stopping rules (``converged`` at gradient norm <= ``tol``,
``max_iters``, ``time_limit``, ``diverged`` at a non-finite gradient norm, ``rounding``
when a fixed-classifier run can no longer lower its gradient norm in its dtype, ``stalled`` and
``diverged`` from the method, ``interrupted`` by Ctrl-C or SIGTERM), the progress bar and
the summary. Gradient norm (scale-free, reported and used for stopping):
:math:`\sqrt{r_H^2 + \|\nabla_W L\|_F^2 + \|\nabla_b L\|^2}` over the learned variables, where
:math:`r_H = (\frac1n\sum_s\|n\,\partial L/\partial h_s\|^2)^{1/2}` is the root-mean-square
per-sample feature gradient, which does not shrink as :math:`n` grows.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch

from .._interrupts import sigterm_as_interrupt
from ..etf import etf_distance
from ..imbalance import classifier_imbalance
from .checkpoint import CHECKPOINT, Checkpoints
from .execution import ExecutionSettings, process_left_as_found
from .methods import NEWTON_FEATURES, method_factory
from .optimality import learned_optimality
from .problem import Problem, UFMConfig, build_problem, etf_impossible_message
from .random_starts import STARTS_RTOL, lowest_start, start_classifier, start_count
from .reference import TheoryReference, learned_etf_comparison
from .results import UFMResult
from .state import Iterate, Method, RunState

__all__ = ["CHECKPOINT", "solve"]


def solve(
    config: UFMConfig,
    W_init: torch.Tensor | None = None,
    b_init: torch.Tensor | None = None,
    *,
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: float = 60.0,
    execution: ExecutionSettings | None = None,
) -> UFMResult:
    """Solve the mixup UFM described by ``config``; return a :class:`~ufm.solver.results.UFMResult`.

    Parameters
    ----------
    config : the problem and the method (validated on construction).
    W_init : optional (K, d) initial classifier (the fixed one for ``classifier="fixed"``).
    b_init : optional (K,) bias: the initial one when ``config.bias`` is set, otherwise a
        fixed bias that stays as given (with a fixed classifier, the exact optimum for a
        network's own W and b).
    progress : show a progress bar with iteration, loss and gradient norm.
    checkpoint_dir : folder for ``checkpoint.pt``, written every ``checkpoint_every``
        seconds and whenever the run stops (also on Ctrl-C).
    resume : continue from ``checkpoint_dir/checkpoint.pt``.
    checkpoint_every : seconds between checkpoints (with ``checkpoint_dir``).
    execution : how the solve may use the process
        (:class:`~ufm.solver.execution.ExecutionSettings`; default: glibc's allocator left
        alone and no thread pinned; the CLI turns both on). Whatever it says, torch's thread
        count and the caller's CPU affinity are as before when ``solve`` returns or raises.

    Returns
    -------
    UFMResult
        The features ``H`` (n, d), the classifier ``W`` (K, d), the bias ``b`` (K,) or None,
        the samples (``c``, ``c_prime``, ``lam``, each (n,), or ``classes`` and ``weights``,
        (n, m), for m-class mixtures), ``history``, ``stop_reason`` and ``summary``. For
        pairs n is the number of class pairs times the lams (or draws) times
        ``samples_per_pair``.

    Notes
    -----
    ``result.summary`` holds the final loss, the gradient norm and its parts, the ETF
    distance of W, ``method`` as configured and ``method_used``, the method that ran
    (the one ``"auto"`` chose: ``"newton_gram"`` or ``"newton"``), and, for a fixed
    simplex-ETF classifier with cross-entropy, label smoothing or squared error and no
    bias, the relative distance of the features to
    :func:`ufm.optimal_features` overall and per lam. For ``mixup_points`` = m > 2 it
    also holds ``mixup_points``, and the distance is to :func:`ufm.mixture_features`, with
    ``theory_distance_per_lam`` None and ``theory_distance_worst_weights`` the largest
    relative distance over the groups of samples that share a weight vector.
    ``etf_possible`` is False when d < K - 1 with a classifier that is not a fixed ETF: no
    classifier in d dimensions is then a simplex ETF, and a warning says so at the start.
    ``common_logit_shift`` is the mean over samples of :math:`u^\top h`, with :math:`u` the
    mean row of W: the shift that W's common row offset gives every logit of a sample
    alike, and ``common_logit_shift_sd`` its standard deviation over the samples (0 for a
    shift that is the same for every sample, which is what a bias would give);
    ``bias_mean`` and ``bias_spread`` are the mean and the range (max - min) of the bias
    (None without one).

    With ``config.starts`` > 1 where d is below the rank a minimum can need
    (:mod:`.random_starts`) the solve starts from that many random classifiers, writes no
    checkpoint (``W_init`` and ``resume`` are refused), and returns the start with the
    lowest final objective; its summary adds ``starts``, ``best_start``,
    ``starts_reached`` (the starts within ``starts_rtol`` relative of the lowest
    objective), ``start_objective_spread`` (highest minus lowest, relative) and each start's
    objective, ETF distance of W and stop reason; ``seconds`` counts all starts. Where one
    start is made although more were asked for, the summary says ``starts`` = 1.

    Examples
    --------
    Three classes, all 9 ordered class pairs at lam = 0, 1/2 and 1, a fixed simplex-ETF
    classifier: the solver's features agree with the exact optimum.

    >>> import ufm
    >>> result = ufm.solve(ufm.UFMConfig(K=3, d=3, num_lams=3, device="cpu"))
    >>> result.stop_reason, tuple(result.H.shape), tuple(result.W.shape)
    ('converged', (27, 3), (3, 3))
    >>> sorted(set(result.lam.tolist()))
    [0.0, 0.5, 1.0]
    >>> bool(result.summary["theory_distance"] < 1e-8)
    True
    """
    execution = ExecutionSettings() if execution is None else execution
    starts = start_count(config)
    if starts > 1 and (W_init is not None or resume):
        raise ValueError(
            f"a solve from {starts} random starts draws its own initial classifiers and keeps "
            "no checkpoint: give neither W_init nor resume (or set starts = 1)")
    with process_left_as_found(execution):
        no_etf = etf_impossible_message(config)
        if no_etf is not None:
            warnings.warn(no_etf, stacklevel=2)
        if starts > 1:
            return _solve_from_starts(config, starts, b_init, progress, execution.pin_cpus)
        problem = build_problem(config, W_init, b_init)
        run = _Run(problem, progress, Checkpoints(checkpoint_dir, checkpoint_every), execution.pin_cpus)
        if resume:
            run.checkpoints.resume(run.state, run.method)
        result = run.execute()
        if config.starts > 1:  # asked for several, made one: say so (random_starts)
            result.summary["starts"] = 1
        return result


def _solve_from_starts(config: UFMConfig, starts: int, b_init, progress: bool,
                       pin_cpus: bool) -> UFMResult:
    """Solve from ``starts`` random initial classifiers (:mod:`.random_starts`), without
    checkpoints; return the start with the lowest final objective, its summary extended by
    what every start reached. An interrupted start ends the solve (its result is returned);
    ``seconds`` are those of all starts together."""
    best: UFMResult | None = None
    record: dict[str, list] = {"start_objectives": [], "start_etf_distances": [],
                               "start_stop_reasons": []}  # fmt: skip
    seconds = 0.0
    for start in range(starts):
        W0 = None if start == 0 else start_classifier(config, start)
        run = _Run(build_problem(config, W0, b_init), progress, Checkpoints(None, 60.0), pin_cpus)
        result = run.execute()
        seconds += result.seconds
        if result.stop_reason == "interrupted":
            return result
        record["start_objectives"].append(result.summary["loss"])
        record["start_etf_distances"].append(result.summary["etf_distance_W"])
        record["start_stop_reasons"].append(result.stop_reason)
        if lowest_start(record["start_objectives"])["best_start"] == start:
            best = result  # only the lowest so far is kept: two results in memory at most
    chosen = lowest_start(record["start_objectives"])
    assert best is not None  # start 0 is the lowest of one
    best.seconds = seconds
    best.summary.update(seconds=seconds, starts=starts, **chosen, **record,
                        starts_rtol=STARTS_RTOL)
    return best


def _method(state: RunState) -> Method:
    """The method object of ``config.method``, made by its factory in :data:`.methods.METHODS`."""
    return method_factory(state.config.method)(state)


class _Run:
    """One solve: the run state, the method, the theory reference, checkpoints, progress."""

    def __init__(self, problem: Problem, progress: bool, checkpoints: Checkpoints,
                 pin_cpus: bool = False):
        self.problem = problem
        self.config = problem.config
        self.progress = progress
        self.checkpoints = checkpoints
        self.state = RunState(problem, pin_cpus)
        self.theory = TheoryReference.build(problem, pin_cpus)
        self.method = _method(self.state)

    def execute(self) -> UFMResult:
        """Iterate until a stopping rule holds; save the checkpoint; return the result."""
        state = self.state
        state.start_clock()
        self.checkpoints.timer_from(state.start)
        bar = _Progress(self.config.tol) if self.progress else None
        stop_reason = None
        try:
            with sigterm_as_interrupt():
                stop_reason = self._loop(bar)
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        finally:
            if bar is not None:
                bar.close()
        if self.checkpoints.enabled:
            self.checkpoints.save(state, self.method)
        return self._result(stop_reason)

    def _loop(self, bar) -> str:
        """Measure, record and step until a stopping rule or the method stops the run."""
        state, method = self.state, self.method
        method.start()
        while True:
            current = method.measure()
            reason = self._limit_reason(current.grad_norm)
            if reason is not None:
                current = method.final(current)
            self._record(current, bar)
            if reason is not None:
                return reason
            reason = method.step(current)
            if reason is not None:
                return reason
            state.last_step = method.step_record()
            state.iteration += 1
            self.checkpoints.maybe_save(state, method)

    def _limit_reason(self, grad_norm: float) -> str | None:
        """The stopping rule that holds at the current iterate, if any."""
        config = self.config
        if not math.isfinite(grad_norm):
            return "diverged"
        if grad_norm <= config.tol:
            return "converged"
        if self.state.iteration >= config.max_iters:
            return "max_iters"
        if config.time_limit is not None and self.state.elapsed() >= config.time_limit:
            return "time_limit"
        return None

    def _record(self, current: Iterate, bar) -> None:
        """Append the history row of the current iterate and update the progress bar."""
        state = self.state
        row = {
            "iteration": state.iteration,
            "loss": current.objective,
            "grad_norm": current.grad_norm,
            "feature_grad_rms": current.feature_grad_rms,
            "grad_W_norm": _norm(current.grad_W),
            "grad_b_norm": _norm(current.grad_b),
            "etf_distance_W": etf_distance(state.W),
            "seconds": state.seconds(),
        }
        if self.theory is not None:
            row["theory_distance"] = self.theory.distance(*self.method.theory_frame())
        if current.inner_stats is not None:
            row["inner_newton"] = current.inner_stats.newton_iterations
        if current.feature_dtype is not None:  # the phase of a mixed-precision run
            row["feature_dtype"] = current.feature_dtype
        row.update(state.last_step)  # how the step that led here went
        state.last_step = {}
        state.history.append(row)
        if bar is not None:
            bar.update(state.iteration, row["loss"], row["grad_norm"])

    def _result(self, stop_reason: str) -> UFMResult:
        """The result: final variables, history and summary (see :func:`solve`)."""
        problem, config, state = self.problem, self.config, self.state
        H = self.method.features()
        seconds = state.seconds()
        last = state.history[-1] if state.history else {}
        summary: dict[str, Any] = {
            "stop_reason": stop_reason,
            "iterations": state.iteration,
            "seconds": seconds,
            "device": str(problem.device),
            "threads": torch.get_num_threads(),
            "n": problem.n,
            "method": config.method,
            "method_used": self.method.name,
            "loss": last.get("loss"),
            "grad_norm": last.get("grad_norm"),
            "feature_grad_rms": last.get("feature_grad_rms"),
            "grad_W_norm": last.get("grad_W_norm"),
            "grad_b_norm": last.get("grad_b_norm"),
            "etf_distance_W": etf_distance(state.W),
            "etf_distance_W_centred": etf_distance(state.W, center=True),
            "W_row_norm_mean": float(state.W.norm(dim=1).mean()),
            "bias_norm": None if state.b is None else float(state.b.norm()),
            **common_logit_shift(H, state.W, state.b),
            "etf_possible": etf_impossible_message(config) is None,
            **classifier_imbalance(state.W, config.minority_classes),
        }
        if self.theory is not None:
            frame = self.method.theory_frame()
            summary["theory_distance"] = self.theory.distance(*frame)
            summary["theory_distance_per_lam"] = self.theory.distance_per_lam(*frame)
            if not problem.mixes_pairs:
                summary["theory_distance_worst_weights"] = self.theory.worst_weights_distance(*frame)
        summary.update(learned_etf_comparison(problem, H, state.W, state.b))
        if (state.learn_W and summary["loss"] is not None and config.method in NEWTON_FEATURES
                and stop_reason not in ("interrupted", "diverged")):
            # features solved for the final W: the certificate applies (ufm.solver.optimality)
            summary.update(learned_optimality(problem, H, state.W, state.b, summary["loss"],
                                              summary["grad_b_norm"] if state.learn_b else None))
            _warn_if_saddle(summary, config)
        pairs = problem.mixes_pairs
        if not problem.mixes_pairs:
            summary["mixup_points"] = config.mixup_points
        return UFMResult(
            config=config,
            H=H,
            W=state.W,
            b=state.b,
            # the result files keep (c, c', lam) for pairs and (classes, weights) for mixtures
            c=problem.c if pairs else None,
            c_prime=problem.c_prime if pairs else None,
            lam=problem.lam if pairs else None,
            history=state.history,
            stop_reason=stop_reason,
            seconds=seconds,
            device=str(problem.device),
            summary=summary,
            classes=None if pairs else problem.classes,
            weights=None if pairs else problem.weights,
        )


def _warn_if_saddle(summary: dict[str, Any], config: UFMConfig) -> None:
    """Warn when a learned W is stationary but not the minimum: W has fewer than d
    dimensions, so it could grow along a class direction where the objective curves down
    (``off_row_curvature_min`` below -1e-3), which no step confined to its row space takes."""
    if summary["rank_W"] < config.d and summary["off_row_curvature_min"] < -1e-3:
        warnings.warn(
            f"the learned classifier is not the global minimum: W has rank {summary['rank_W']} "
            f"< d = {config.d} and the objective curves down off its row space "
            f"(off_row_curvature_min = {summary['off_row_curvature_min']:.3g}); method "
            f"'newton_gram' grows W there, or start from another classifier", stacklevel=4)


def common_logit_shift(H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> dict[str, Any]:
    """What the classifier adds to every logit of a sample alike (see :func:`solve`, Notes):
    ``common_logit_shift`` and ``common_logit_shift_sd``, the mean and standard deviation
    over the samples of u . h with u the mean row of W, and the bias's ``bias_mean`` and
    ``bias_spread`` (None without a bias)."""
    shift = H.detach().to(torch.float64) @ W.detach().to(torch.float64).mean(0)
    bias = None if b is None else b.detach().to(torch.float64)
    return {
        "common_logit_shift": float(shift.mean()),
        "common_logit_shift_sd": float(shift.std()) if shift.numel() > 1 else 0.0,
        "bias_mean": None if bias is None else float(bias.mean()),
        "bias_spread": None if bias is None else float(bias.max() - bias.min()),
    }


def _norm(tensor) -> float | None:
    return None if tensor is None else float(torch.linalg.vector_norm(tensor))


class _Progress:
    """A progress bar over the decades of the gradient norm, from the first iterate to ``tol``.

    Its estimate of the time left extrapolates the decades gained so far; a bar over
    ``max_iters`` would extrapolate to the iteration limit, hours away for a run that
    converges in a minute.
    """

    def __init__(self, tol: float):
        self.tol = tol
        self.bar = None
        self.first = None

    def update(self, iteration: int, loss: float, grad_norm: float) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.first = max(grad_norm, self.tol) if math.isfinite(grad_norm) else self.tol
            total = round(max(math.log10(self.first / self.tol), 0.0), 2)
            self.bar = tqdm(total=total, desc="ufm solve", unit="decade", dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} decades [{elapsed}<{remaining}{postfix}]")
        gained = math.log10(self.first / grad_norm) if 0 < grad_norm < math.inf else 0.0
        self.bar.n = max(self.bar.n, round(min(max(gained, 0.0), self.bar.total), 2))
        self.bar.set_postfix(it=iteration, loss=f"{loss:.6g}", grad=f"{grad_norm:.2e}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
