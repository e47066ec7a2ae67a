r"""Focal loss under mixup (Lin et al., 2017), in pair form: not convex, Hessian by autograd."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch

from .._checks import check_float
from .base import MixupLoss, gather_last

# The curvature bound is the supremum of a function of one variable, taken on this grid of
# log p_c in [-10^2.5, -10^-12] and raised by this factor for what falls between grid points.
_GRID_POINTS = 20001
_GRID_MARGIN = 1.02


class Focal(MixupLoss):
    r"""Mixup focal loss, pair form only.

    :math:`\sum_k y_k\,\mathrm{FL}(z, c_k)` with :math:`\mathrm{FL}(z, c) = -(1-p_c)^\gamma
    \log p_c`, :math:`p = \operatorname{softmax}(z)` (Lin et al., 2017); for pairs
    :math:`\lambda\,\mathrm{FL}(z, c) + (1-\lambda)\,\mathrm{FL}(z, c')`. For :math:`\gamma > 0`
    this differs from the focal loss against the soft target and is not convex in the logits;
    no convex certificate exists for it.
    """

    name = "focal"
    label = "focal"
    colour = "#CC79A7"
    shift_invariant: ClassVar[bool] = True
    lower_bound: ClassVar[float | None] = 0.0
    preconditioner_model: ClassVar[str] = "softmax"
    target_only: ClassVar[bool] = True
    forms = ("pair",)

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__("pair")
        self.gamma = check_float("gamma", gamma, 0.0, None)

    @property
    def params(self) -> dict[str, Any]:
        return {"gamma": self.gamma}

    @property
    def curvature(self) -> float:
        r"""A bound on the largest Hessian eigenvalue in the logits.

        With :math:`u = \log p_c` and :math:`f(u) = -(1-e^u)^\gamma u`, the Hessian of
        :math:`\mathrm{FL}` is :math:`f''(u)\nabla u\nabla u^\top - f'(u)(\operatorname{diag}(p)
        - pp^\top)`, where :math:`\|\nabla u\|^2 = \|e_c - p\|^2 \le 2(1-p_c)^2` and the softmax
        Hessian has norm at most 1/2; so every eigenvalue is at most
        :math:`\sup_{u<0}\, 2(1-e^u)^2|f''(u)| + |f'(u)|/2` (1/2 at :math:`\gamma = 0`, 1.04 at
        :math:`\gamma = 2`), and a mixture's Hessian, a convex combination, too.
        """
        return _focal_curvature(self.gamma)

    def focal_term(self, log_p: torch.Tensor) -> torch.Tensor:
        r""":math:`-(1-p)^\gamma\log p` of log-probabilities."""
        one_minus_p = -torch.expm1(log_p)
        return -(one_minus_p.clamp_min(0) ** self.gamma) * log_p

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:
        lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
        log_p = torch.log_softmax(z, dim=-1)
        return lam * self.focal_term(gather_last(log_p, c)) + (1 - lam) * self.focal_term(
            gather_last(log_p, c_prime)
        )

    def mixture_value(self, z, classes, weights) -> torch.Tensor:
        log_p = torch.log_softmax(z, dim=-1).gather(-1, classes)
        return (weights * self.focal_term(log_p)).sum(-1)


@functools.lru_cache(maxsize=64)
def _focal_curvature(gamma: float) -> float:
    u = -torch.logspace(-12, 2.5, _GRID_POINTS, dtype=torch.float64)
    with torch.enable_grad():
        u.requires_grad_(True)
        one_minus_p = -torch.expm1(u)
        f = -(one_minus_p.clamp_min(0) ** gamma) * u
        (first,) = torch.autograd.grad(f.sum(), u, create_graph=True)
        (second,) = torch.autograd.grad(first.sum(), u)
    bound = 2 * one_minus_p.detach() ** 2 * second.abs() + 0.5 * first.detach().abs()
    return max(0.5, _GRID_MARGIN * float(bound.max()))
