r"""A certificate that a learned classifier is the global minimum, not just stationary.

With the features eliminated, the objective of a learned classifier (docs/theory.md section
1; the unconstrained features model of Fisher, Meng & Papyan, ICLR 2024) is

.. math::

    F(W, b) = \frac1n\sum_s w_s\,\phi_s(WW^\top, b) + \frac{\lambda_W}2\operatorname{tr}(WW^\top)
    + \frac{\lambda_b}2\|b\|^2,\qquad
    \phi_s(G, b) = \min_h\ \ell_s(W h + b) + \frac{\lambda_H}2\|h\|^2,

which depends on W only through the Gram matrix :math:`G = WW^\top`. For a loss convex in the
logits, Fenchel duality writes each term as
:math:`\phi_s(G, b) = \sup_g\,\bigl(-\ell_s^*(g) + g^\top b - \frac1{2\lambda_H}g^\top Gg\bigr)`,
a supremum of functions affine in :math:`(G, b)`: F is jointly convex in :math:`(G, b)` over
:math:`G \succeq 0`, and its gradient in G is that of the maximising :math:`g_s` (the logit
gradient of sample s at its optimal features), :math:`\nabla_G F = C/2` with

.. math::

    C = \lambda_W I - \frac1{\lambda_H n}\sum_s w_s g_sg_s^\top,

the curvature of F off the row space of W (:func:`~.gram_preconditioner.off_row_curvature`;
:math:`\nabla_W F = CW`). Convexity bounds the minimum from below: for any
:math:`(G^*, b^*)`,
:math:`F^* \ge F + \frac12\langle C, G^* - G\rangle + \langle\nabla_b F, b^* - b\rangle`.
A minimiser has :math:`\frac{\lambda_W}2\operatorname{tr}G^* \le F - \ell_{\min}` (every
other term is at least its floor, :math:`\ell_{\min}` the loss's declared ``lower_bound``),
so :math:`\langle C, G^*\rangle \ge \frac{2(F - \ell_{\min})}{\lambda_W}\min(0, \mu_{\min}(C))`,
and with :math:`\lambda_b > 0` also :math:`\|b^*\| \le \sqrt{2(F - \ell_{\min})/\lambda_b}`.
Hence

.. math::

    F - F^* \le \tfrac12|\langle C, WW^\top\rangle|
    + \frac{F - \ell_{\min}}{\lambda_W}\max(0, -\mu_{\min}(C))
    + \|\nabla_b F\|\,\bigl(\|b\| + \sqrt{2(F - \ell_{\min})/\lambda_b}\bigr).

At a global minimum C is positive semidefinite and :math:`CW = 0`, so the bound vanishes; at
a stationary point that is not the minimum (a saddle where W is zero along a class direction
in which F would grow) C has a negative eigenvalue and the bound stays away from zero. The
minimum is over all Gram matrices: where the best one has rank above d (possible for
d < K), C keeps a negative eigenvalue at the best W of rank d too, and the bound holds but
is not tight. The features are those of the solve, so C and F carry their error: the bound
is at the precision of the feature solves, and means nothing for features that were not
solved for W (``gd``, or a solve interrupted in the middle of an evaluation).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..etf import rank_cutoff
from .gram_preconditioner import off_row_curvature


def gradient_outer_sum(problem, H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None,
                       chunk_rows: int = 8192) -> torch.Tensor:
    r""":math:`\sum_s w_s g_sg_s^\top` (K, K) in float64, :math:`g_s` the loss's gradient in
    the logits :math:`W h_s + b` of each sample of ``problem`` (its classes, weights and
    sample weights), formed chunk by chunk from the features ``H`` (n, d).

    Examples
    --------
    >>> import torch
    >>> from ufm.solver.problem import UFMConfig, build_problem
    >>> problem = build_problem(UFMConfig(K=3, d=4, classifier="learned", num_lams=3))
    >>> H = torch.zeros(problem.n, 4, dtype=torch.float64)
    >>> S = gradient_outer_sum(problem, H, problem.W0, None)
    >>> S.shape, bool(torch.allclose(S, S.T))
    (torch.Size([3, 3]), True)
    """
    K = W.shape[0]
    W64 = W.to(torch.float64)
    b64 = None if b is None else b.to(torch.float64)
    total = torch.zeros(K, K, dtype=torch.float64, device=W.device)
    weight = problem.sample_weight
    for start in range(0, problem.n, chunk_rows):
        rows = slice(start, start + chunk_rows)
        z = H[rows].to(torch.float64) @ W64.T
        if b64 is not None:
            z = z + b64
        _, _, g = problem.loss.mixture_terms(z, problem.classes[rows],
                                             problem.weights[rows].to(torch.float64))
        g_w = g if weight is None else g * weight[rows].to(torch.float64)[:, None]
        total += g_w.T @ g
    return 0.5 * (total + total.T)


def learned_optimality(problem, H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None,
                       objective: float, grad_b_norm: float | None) -> dict[str, Any]:
    r"""The certificate of the module docstring at the solved point: ``off_row_curvature_min``
    (the smallest eigenvalue of C, over lam_W: at least about 0 at a global minimum, negative
    at a saddle), ``rank_W`` (the numerical rank of W, :func:`~ufm.etf.rank_cutoff`) and
    ``optimality_gap_bound`` (the bound on :math:`F - F^*`; None where it does not apply: a
    loss not convex in the logits or without a declared ``lower_bound``, or a learned bias
    without ``lam_b`` > 0, whose optimum is then unbounded in the bound's terms).

    Examples
    --------
    >>> import ufm
    >>> result = ufm.solve(ufm.UFMConfig(K=4, d=4, classifier="learned", num_lams=5, tol=1e-10))
    >>> result.summary["optimality_gap_bound"] < 1e-8
    True
    """
    loss, config, n = problem.loss, problem.config, problem.n
    C = off_row_curvature(gradient_outer_sum(problem, H, W, b), n, config.lam_H, config.lam_W)
    eigenvalues = torch.linalg.eigvalsh(C)
    smallest = float(eigenvalues[0])
    sigma = torch.linalg.svdvals(W)
    rank = int((sigma > rank_cutoff(W, float(sigma[0]))).sum()) if sigma.numel() else 0
    report: dict[str, Any] = {
        "off_row_curvature_min": smallest / config.lam_W,
        "rank_W": rank,
        "optimality_gap_bound": None,
    }
    floor = loss.lower_bound
    if not loss.convex or floor is None or not math.isfinite(objective):
        return report
    excess = max(objective - floor, 0.0)
    # <C, WW^T> = <grad_W F, W> may have either sign away from a stationary point
    W64 = W.to(torch.float64)
    bound = 0.5 * abs(float((W64 * (C @ W64)).sum())) + excess / config.lam_W * max(0.0, -smallest)
    if grad_b_norm is not None and b is not None:
        if config.lam_b <= 0:
            return report
        radius = float(b.norm()) + math.sqrt(2.0 * excess / config.lam_b)
        bound += grad_b_norm * radius
    report["optimality_gap_bound"] = bound
    return report
