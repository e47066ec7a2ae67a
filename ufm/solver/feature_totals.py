"""What a pass of the feature solver sums over samples: :class:`Totals` per chunk, combined in
chunk order, and the :class:`InnerStats` it reports (:mod:`.feature_newton`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class InnerStats:
    """Totals over all samples at the solved features (sums, not means)."""

    objective_sum: float  # sum_s ell_s + lam_H/2 |h_s|^2
    grad_W: torch.Tensor  # sum_s g_s h_s^T, (K, d)
    grad_b: torch.Tensor  # sum_s g_s, (K,)
    feature_grad_sq_sum: float  # sum_s |grad phi_s|^2
    feature_grad_max: float
    newton_iterations: int
    cg_iterations: int
    finite: bool
    # every step of the pass predicted a decrease below the rounding level of the objective
    at_rounding: bool = False
    # passes over the samples that needed one (a pass that only finds every sample done counts
    # too: it evaluates them all), and the samples visited by them, summed
    passes: int = 0
    sample_visits: int = 0


class Totals:
    """Running sums over samples of the objective, classifier gradients and feature gradients."""

    def __init__(self, K: int, r: int, dtype: torch.dtype, device, lam_H: float, grad_W_needed: bool):
        self.lam_H = lam_H
        self.objective = torch.zeros((), dtype=torch.float64, device=device)
        # (K, r) sums only where the classifier gradient is wanted: a K x r zero fill per chunk
        # would cost a fixed classifier with K = r = 1000 more than its Newton steps
        self.grad_W_x = torch.zeros(K, r, dtype=dtype, device=device) if grad_W_needed else None
        self.grad_b = torch.zeros(K, dtype=dtype, device=device)
        self.grad_sq = torch.zeros((), dtype=torch.float64, device=device)
        self.grad_max = torch.zeros((), dtype=torch.float64, device=device)
        self.finite = True
        self.at_rounding = True

    def add(self, value, g_z, x, grad, weight=None, count=None):
        """Add samples: loss values, logit gradients, coordinates, feature gradients.

        ``weight`` (optional, per sample) weighs the objective and the classifier gradients
        (class imbalance; a group's total weight); the feature gradients are per-sample and
        stay unweighted, but a sample that stands for ``count`` samples (optional, float64)
        adds its squared norm that many times.
        """
        if value.numel() == 0:
            return
        values = value + 0.5 * self.lam_H * torch.linalg.vecdot(x, x)
        self.finite = self.finite and bool(torch.isfinite(values).all())
        if weight is not None:
            values = values * weight
            g_z = g_z * weight[:, None]
        self.objective += values.sum().to(torch.float64)
        if self.grad_W_x is not None:
            self.grad_W_x += g_z.T @ x
        self.grad_b += g_z.sum(0)
        norms = grad.norm(dim=-1).to(torch.float64)
        squares = norms * norms
        self.grad_sq += (squares if count is None else squares * count).sum()
        self.grad_max = torch.maximum(self.grad_max, norms.max())

    @staticmethod
    def combine(total: Totals, parts: list[Totals]) -> Totals:
        """``total`` (empty) plus the totals of ``parts`` (per chunk), summed in their order."""
        for part in parts:
            total.objective += part.objective
            if total.grad_W_x is not None:
                total.grad_W_x += part.grad_W_x
            total.grad_b += part.grad_b
            total.grad_sq += part.grad_sq
            total.grad_max = torch.maximum(total.grad_max, part.grad_max)
            total.finite = total.finite and part.finite
            total.at_rounding = total.at_rounding and part.at_rounding
        return total

    def _grad_W(self, V: torch.Tensor) -> torch.Tensor:
        if self.grad_W_x is None:
            return torch.zeros(self.grad_b.shape[0], V.shape[0], dtype=V.dtype, device=V.device)
        return self.grad_W_x @ V.T

    def stats(self, newton: int, cg: int, V: torch.Tensor, passes: int = 0,
              sample_visits: int = 0) -> InnerStats:
        """The totals as :class:`InnerStats`; ``V`` (d, r) maps the classifier gradient's
        coordinates back to features (grad_W = grad_W_x V^T)."""
        return InnerStats(
            objective_sum=self.objective.item(),
            grad_W=self._grad_W(V),
            grad_b=self.grad_b,
            feature_grad_sq_sum=self.grad_sq.item(),
            feature_grad_max=self.grad_max.item(),
            newton_iterations=newton,
            cg_iterations=cg,
            finite=self.finite,
            at_rounding=self.at_rounding,
            passes=passes,
            sample_visits=sample_visits,
        )
