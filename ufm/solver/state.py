r"""The state of one UFM solve that the driver, the methods and the checkpoints share.

:class:`RunState` holds what every method works on and every checkpoint saves: the problem
and its configuration, which classifier variables are learned, the current classifier
:math:`(W, b)`, the iteration count, the history rows and the clock. A method
(:mod:`.newton`, :mod:`.gd`) reads the problem from it and writes its new :math:`(W, b)`
back; the driver (:mod:`.run`) counts iterations and records rows; :mod:`.checkpoint` saves
and restores it. The helpers :func:`penalised_objective` and :func:`measured_iterate` turn
the sums over samples that a method computes into the measured :class:`Iterate` the driver
records, so both methods report the objective of docs/theory.md section 1 (Fisher, Meng & Papyan,
ICLR 2024) and the scale-free gradient norm of :mod:`.run` the same way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch

from .feature_totals import InnerStats
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
        # the method's step_record of the step just taken, for the next history row
        self.last_step: dict[str, Any] = {}
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
    """What the driver (:mod:`.run`) asks of a method (:mod:`.newton`, :mod:`.gd`; registered
    by name in :mod:`.methods`).

    The driver calls :meth:`start` once, then for iterate k = 0, 1, ...: :meth:`measure`;
    if a stopping rule holds, records :meth:`final` and stops; else records the
    measurement, calls :meth:`step` (a stop reason if no step can be taken) and
    :meth:`step_record` (added to the next row) and counts the iteration. The measurement
    is an :class:`Iterate` made by :func:`measured_iterate`.
    """

    #: the registered name of the method that runs (for ``"auto"``, the one it chose),
    #: which the summary records as ``method_used``
    name: str

    def start(self) -> None:
        """Prepare the first measurement (after a resume, the restored state is kept)."""

    def measure(self) -> Iterate:
        """The measured current iterate."""

    def final(self, current: Iterate) -> Iterate:
        """The measurement to record when the run stops at this iterate."""

    def step(self, current: Iterate) -> str | None:
        """Move to the next iterate; return a stop reason if that is not possible."""

    def step_record(self) -> dict[str, Any]:
        """What the last :meth:`step` did, as columns of the next history row (empty if it
        has nothing to say); asked once after each step."""

    def features(self) -> torch.Tensor:
        """The current features H (n, d)."""

    def theory_frame(self) -> tuple:
        """Features and frame for :class:`~ufm.solver.reference.TheoryReference`, and where
        a row of those features stands for several samples, the row of each sample (n,)."""

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


# the names under which checkpoint.pt holds the fields of an Iterate that it names otherwise
# (the keys of the dict that stood for the measured iterate before this class)
_CHECKPOINT_NAMES = {"objective": "F", "feature_grad_rms": "feature_rms"}


@dataclass(frozen=True)
class Iterate:
    r"""The measured state of one iterate, as the driver records it (see :func:`measured_iterate`).

    The first five fields are what every method measures; the others are what a method needs
    again at its next step and stay None where the method has no such part.

    Attributes
    ----------
    objective : the objective F of docs/theory.md section 1 (infinite if anything was not finite).
    grad_W, grad_b : the gradients of W and b, None for a variable that is not learned.
    feature_grad_rms : :math:`r_H`, the root-mean-square per-sample feature gradient.
    grad_norm : :math:`\sqrt{r_H^2 + \|\nabla_\theta\|^2}` (infinite if anything was not finite).
    theta_grad : ``"newton"``: the flat gradient of the learned variables, W first, then b.
    grad_H : ``"gd"``: the per-sample feature gradients (n, d), the method's own buffer.
    inner_stats : ``"newton"``: the feature solver's statistics of this measurement.
    feature_dtype : ``"newton"``: the dtype the features were solved in ("float32" in the
        first phase of a mixed-precision run), recorded in the history.
    """

    objective: float
    grad_W: torch.Tensor | None
    grad_b: torch.Tensor | None
    feature_grad_rms: float
    grad_norm: float
    theta_grad: torch.Tensor | None = None
    grad_H: torch.Tensor | None = None
    inner_stats: InnerStats | None = None
    feature_dtype: str | None = None

    def to_checkpoint(self) -> dict[str, Any]:
        """The iterate as ``checkpoint.pt`` holds it: a dict under the keys of earlier versions,
        without the inner statistics (they describe work already done)."""
        return {_CHECKPOINT_NAMES.get(field.name, field.name): getattr(self, field.name)
                for field in fields(self) if field.name != "inner_stats"}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> Iterate:
        """Inverse of :meth:`to_checkpoint`; also reads the dicts of earlier versions, whose
        ``"stats"`` entry was always None."""
        names = {saved_name: name for name, saved_name in _CHECKPOINT_NAMES.items()}
        return cls(**{names.get(key, key): value for key, value in saved.items() if key != "stats"})


def measured_iterate(F, feature_rms, theta_sq, finite, grad_W, grad_b, *,
                     theta_grad=None, grad_H=None, inner_stats=None, feature_dtype=None) -> Iterate:
    r"""The measured state of an iterate, as the driver records it.

    ``grad_norm`` is :math:`\sqrt{r_H^2 + \|\nabla_\theta\|^2}` with ``feature_rms`` =
    :math:`r_H` and ``theta_sq`` = :math:`\|\nabla_\theta\|^2` over the learned classifier
    variables; non-finite values make ``F`` and ``grad_norm`` infinite. The keywords are
    what the method needs again (see :class:`Iterate`).
    """
    grad_norm = math.sqrt(feature_rms**2 + theta_sq)
    finite = finite and math.isfinite(F) and math.isfinite(grad_norm)
    return Iterate(
        objective=F if finite else math.inf,
        grad_W=grad_W,
        grad_b=grad_b,
        feature_grad_rms=feature_rms,
        grad_norm=grad_norm if finite else math.inf,
        theta_grad=theta_grad,
        grad_H=grad_H,
        inner_stats=inner_stats,
        feature_dtype=feature_dtype,
    )
