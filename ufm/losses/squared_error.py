r"""The halved squared error of mixup: a Hessian equal to the identity."""

from __future__ import annotations

from typing import ClassVar

import torch

from .base import MixupLoss, gather_last, mixture_target, mixup_target


class SquaredError(MixupLoss):
    r"""Mixup squared error, halved: :math:`\tfrac12\|z - y\|^2` (soft form).

    Pair form: :math:`\tfrac12[\lambda\|z-e_c\|^2 + (1-\lambda)\|z-e_{c'}\|^2]`, which equals the
    soft form plus :math:`\tfrac12\lambda(1-\lambda)\|e_c - e_{c'}\|^2`; for m classes
    :math:`\sum_k y_k\tfrac12\|z - e_{c_k}\|^2 = \tfrac12\|z-y\|^2 + \tfrac12(1-\|y\|^2)`. The
    factor 1/2 makes the ridge-regularised optimum
    :math:`h = (W^\top W + \lambda_H I)^{-1} W^\top y` exactly.
    """

    name = "mse"
    label = "squared error"
    colour = "#E69F00"
    hessian: ClassVar[str] = "identity"
    convex: ClassVar[bool] = True
    lower_bound: ClassVar[float | None] = 0.0
    target_only: ClassVar[bool] = True
    forms = ("soft", "pair")

    @property
    def curvature(self) -> float:
        return 1.0

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:
        lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
        if self.form == "pair":
            sq = (z * z).sum(-1)
            dist_c = sq - 2 * gather_last(z, c) + 1
            dist_cp = sq - 2 * gather_last(z, c_prime) + 1
            return 0.5 * (lam * dist_c + (1 - lam) * dist_cp)
        y = mixup_target(c, c_prime, lam, z.shape[-1], z.dtype)
        return 0.5 * ((z - y) ** 2).sum(-1)

    def mixture_value(self, z, classes, weights) -> torch.Tensor:
        return self.mixture_terms(z, classes, weights, need_grad=False)[0]

    def grad(self, z, c, c_prime, lam) -> torch.Tensor:
        return z - mixup_target(c, c_prime, lam, z.shape[-1], z.dtype)

    def hvp(self, z, c, c_prime, lam, v) -> torch.Tensor:
        return v.clone()

    def mixture_hvp(self, z, classes, weights, v) -> torch.Tensor:
        return v.clone()

    def mixture_terms(self, z, classes, weights, need_grad: bool = True):
        y = mixture_target(classes, weights, z.shape[-1])
        diff = z - y
        value = 0.5 * (diff * diff).sum(-1)
        if self.form == "pair":
            value = value + 0.5 * (1.0 - (y * y).sum(-1))
        return value, None, (diff if need_grad else None)

    # -- the convex program: a quadratic ------------------------------------------------------

    def certificate_constant(self, y: torch.Tensor) -> torch.Tensor:
        if self.form == "pair":
            return 0.5 * (1 - (y * y).sum(-1))
        return super().certificate_constant(y)

    def cvxpy_value(self, z, target):
        import cvxpy as cp

        return 0.5 * cp.sum_squares(z - target)

    def fenchel(self, z, target):
        r""":math:`\ell^*(\mu) = \tfrac12\|\mu\|^2 + \mu^\top t`."""
        mu = z - target
        value = 0.5 * (mu * mu).sum(-1)
        return value, mu, 0.5 * (mu * mu).sum(-1) + (mu * target).sum(-1)
