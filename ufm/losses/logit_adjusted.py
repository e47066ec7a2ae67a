r"""Logit-adjusted cross-entropy (Menon et al., "Long-tail learning via logit adjustment",
ICLR 2021), under mixup.

The logits are shifted by :math:`\tau\log\pi` before the cross-entropy, :math:`\pi` the class
priors: :math:`\ell(z; y) = \operatorname{lse}(z + \tau\log\pi) - \langle y, z + \tau\log\pi
\rangle`. A member of the softmax family with a logit shift, so the Newton feature solver, its
preconditioners, gradient descent and the convex certificate take it as they are.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._checks import check_float
from .base import SoftmaxTarget
from .softmax import SoftmaxFamily


class LogitAdjusted(SoftmaxFamily):
    r"""Mixup cross-entropy of the logits shifted by :math:`\tau\log\pi_c`.

    ``priors``: the class priors :math:`\pi` (K positive numbers, divided by their sum), or
    None for the class frequencies of the training set: a solve binds them from its class
    sizes (:meth:`for_classes`); unbound, None means uniform priors, a constant shift, which
    is plain cross-entropy. ``tau`` >= 0 scales the adjustment (Menon et al. use 1).
    """

    name = "logit_adjusted"
    label = "logit-adjusted CE"

    def __init__(self, tau: float = 1.0, priors=None) -> None:
        super().__init__("soft")
        self.tau = check_float("tau", tau, 0.0, None)
        self.priors = None if priors is None else _checked_priors(priors)
        # the shift tau log(priors) per (dtype, device): every chunk of a solve asks for it
        self._shifts: dict[tuple, torch.Tensor] = {}

    @property
    def params(self) -> dict[str, Any]:
        return {"tau": self.tau, "priors": None if self.priors is None else list(self.priors)}

    def for_classes(self, class_sizes: torch.Tensor) -> LogitAdjusted:
        sizes = [float(size) for size in class_sizes]
        if self.priors is None:
            return LogitAdjusted(self.tau, sizes)
        if len(self.priors) != len(sizes):
            raise ValueError(
                f"priors of loss 'logit_adjusted' must have K = {len(sizes)} entries, "
                f"got {len(self.priors)}")
        return self

    def softmax_target(self, K: int, dtype=None, device=None) -> SoftmaxTarget:
        if self.priors is None or self.tau == 0:
            return SoftmaxTarget()
        if len(self.priors) != K:
            raise ValueError(f"priors of loss 'logit_adjusted' must have K = {K} entries, "
                             f"got {len(self.priors)}")
        key = (dtype or torch.get_default_dtype(), torch.device(device or "cpu"))
        if key not in self._shifts:
            self._shifts[key] = torch.tensor([self.tau * math.log(p) for p in self.priors],
                                             dtype=key[0], device=key[1])
        return SoftmaxTarget(shift=self._shifts[key])


def _checked_priors(priors) -> tuple[float, ...]:
    values = [float(p) for p in torch.as_tensor(priors, dtype=torch.float64).reshape(-1)]
    if not values or not all(math.isfinite(p) and p > 0 for p in values):
        raise ValueError(f"priors of loss 'logit_adjusted' must be positive and finite, got {values}")
    total = math.fsum(values)
    return tuple(p / total for p in values)
