r"""The state of one UFM solve that the driver, the methods and the checkpoints share.

:class:`RunState` holds what every method works on and every checkpoint saves: the problem
and its configuration, which classifier variables are learned, the current classifier
:math:`(W, b)`, the iteration count, the history rows and the clock. A method
(:mod:`.newton`, :mod:`.gd`) reads the problem from it and writes its new :math:`(W, b)`
back; the driver (:mod:`.run`) counts iterations and records rows; :mod:`.checkpoint` saves
and restores it. The helpers :func:`penalised_objective` and :func:`measured_iterate` turn
the sums over samples that a method computes into the measured iterate the driver records,
so both methods report the objective of docs/theory.md section 1 (Fisher, Meng & Papyan,
ICLR 2024) and the scale-free gradient norm of :mod:`.run` the same way.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import torch

from .problem import Problem


class RunState:
    """Variables, history and clock of one solve (the method's own state lives in the method).

    Parameters
    ----------
    problem : the samples and the initial classifier; ``W`` and ``b`` start as copies of
        ``problem.W0`` and ``problem.b0``.
    pin_cpus : whether the chunk threads of the solve keep one CPU each
        (:class:`~ufm.solver.execution.ExecutionSettings`).
    """

    def __init__(self, problem: Problem, pin_cpus: bool = False):
        self.problem = problem
        self.config = problem.config
        self.pin_cpus = pin_cpus
        self.learn_W = self.config.learns_classifier
        self.learn_b = self.config.bias
        self.W = problem.W0.clone()
        self.b = None if problem.b0 is None else problem.b0.clone()
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.seconds_before = 0.0  # seconds spent by the runs this one resumes
        self.start = time.perf_counter()

    @property
    def learns_W_or_b(self) -> bool:
        """Whether any classifier variable is optimised (unlike ``config.learns_classifier``, b counts)."""
        return self.learn_W or self.learn_b

    def start_clock(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since :meth:`start_clock` in this process."""
        return time.perf_counter() - self.start

    def seconds(self) -> float:
        """Seconds spent on the solve so far, including the runs it resumes."""
        return self.seconds_before + self.elapsed()


class Method(Protocol):
    """What the driver (:mod:`.run`) asks of a method (:mod:`.newton`, :mod:`.gd`).

    The driver calls :meth:`start` once, then for iterate k = 0, 1, ...: :meth:`measure`;
    if a stopping rule holds, records :meth:`final` and stops; else records the
    measurement, calls :meth:`step` (a stop reason if no step can be taken) and counts the
    iteration. The measurement is a dict made by :func:`measured_iterate`.
    """

    def start(self) -> None:
        """Prepare the first measurement (after a resume, the restored state is kept)."""

    def measure(self) -> dict[str, Any]:
        """The measured current iterate."""

    def final(self, current: dict[str, Any]) -> dict[str, Any]:
        """The measurement to record when the run stops at this iterate."""

    def step(self, current: dict[str, Any]) -> str | None:
        """Move to the next iterate; return a stop reason if that is not possible."""

    def features(self) -> torch.Tensor:
        """The current features H (n, d)."""

    def theory_frame(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and frame for :class:`~ufm.solver.reference.TheoryReference`."""

    def state_dict(self) -> dict[str, Any]:
        """The method's checkpoint parts (keys among :data:`.checkpoint.METHOD_KEYS`)."""

    def load_state_dict(self, contents: dict[str, Any]) -> None:
        """Restore from a whole checkpoint dict."""


def penalised_objective(state: RunState, W, b, objective_sum, grad_W_sum, grad_b_sum):
    r"""Objective and learned-variable gradients from sums over the samples.

    Given :math:`\sum_s \phi_s` (loss plus feature penalty), :math:`\sum_s g_s h_s^\top`
    and :math:`\sum_s g_s` with :math:`g_s = \nabla\ell_s`, returns

    .. math:: F = \frac1n\sum_s\phi_s + \frac{\lambda_W}{2}\|W\|_F^2
              + \frac{\lambda_b}{2}\|b\|^2, \quad
              \nabla_W = \frac1n\sum_s g_s h_s^\top + \lambda_W W, \quad
              \nabla_b = \frac1n\sum_s g_s + \lambda_b b,

    with a gradient of None for a variable that is not learned.
    """
    config, n = state.config, state.problem.n
    F = objective_sum / n + 0.5 * config.lam_W * float((W * W).sum())
    if b is not None:
        F += 0.5 * config.lam_b * float((b * b).sum())
    grad_W = grad_W_sum / n + config.lam_W * W if state.learn_W else None
    grad_b = grad_b_sum / n + config.lam_b * b if state.learn_b else None
    return F, grad_W, grad_b


def measured_iterate(F, feature_rms, theta_sq, finite, grad_W, grad_b, **extra) -> dict[str, Any]:
    r"""The measured state of an iterate, as the driver records it.

    ``grad_norm`` is :math:`\sqrt{r_H^2 + \|\nabla_\theta\|^2}` with ``feature_rms`` =
    :math:`r_H` and ``theta_sq`` = :math:`\|\nabla_\theta\|^2` over the learned classifier
    variables; non-finite values make ``F`` and ``grad_norm`` infinite. ``extra`` holds what
    the method needs again (a flat gradient, a gradient buffer, inner solver statistics).
    """
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
