r"""The preconditioner of the feature solver for m-class mixtures: a diagonal plus rank-(m+1) matrix.

:class:`~ufm.solver.feature_newton.FeatureSolver` uses it for samples that mix m > 2
distinct classes :math:`c_1,\dots,c_m` with weights :math:`y_k` (Chaudhry et al., 2022;
Fisher, Meng & Papyan, ICLR 2024, arXiv:2402.06171, for m = 2).

For the softmax family the Hessian is
:math:`\nabla^2\phi = A^\top(\operatorname{diag}(p) - pp^\top)A + \lambda_H I` and
:math:`A^\top\operatorname{diag}(p)A = \sum_o p_o a_o a_o^\top`. The preconditioner replaces
the probabilities of the :math:`K - m` classes outside the mixture by their
:math:`p`-weighted mean :math:`\bar p = \sum_o p_o^2/\sum_o p_o` (0 when there are none) and
uses :math:`A^\top A = \Sigma^2`:

.. math:: M_0 = \underbrace{\bar p\,\Sigma^2 + \lambda_H I}_{D}
          + \sum_{k=1}^m (p_{c_k} - \bar p)\,a_{c_k}a_{c_k}^\top - (A^\top p)(A^\top p)^\top
          = D + U\Omega U^\top ,

with :math:`U = [a_{c_1},\dots,a_{c_m}, A^\top p]` (r x (m+1)) and
:math:`\Omega = \operatorname{diag}(p_{c_1}-\bar p,\dots,p_{c_m}-\bar p,-1)`. By the Woodbury
identity in its push-through form (no inverse of :math:`\Omega`, whose entries may vanish),

.. math:: M_0^{-1} = D^{-1} - D^{-1}U\,(I_{m+1} + \Omega\,U^\top D^{-1}U)^{-1}\,\Omega\,U^\top D^{-1},

one LU factorisation of an (m+1) x (m+1) matrix per sample (``torch.linalg.lu_factor`` on
the (chunk, m+1, m+1) batch). :math:`M_0 = A^\top(\operatorname{diag}(\tilde p) - pp^\top)A
+ \lambda_H I`, with :math:`\tilde p` equal to :math:`p` on the mixture classes and to
:math:`\bar p` elsewhere, is positive definite: by Cauchy-Schwarz
:math:`(p^\top x)^2 \le \sum_i (p_i^2/\tilde p_i) \sum_i \tilde p_i x_i^2` and
:math:`\sum_i p_i^2/\tilde p_i = \sum_k p_{c_k} + \sum_o p_o = 1` for this choice of
:math:`\bar p`. It is the exact Hessian when all :math:`p_o` outside the mixture are equal:
for a simplex-ETF classifier, whose optimum gives the other classes equal logits, and always
for :math:`m \ge K-1`; then each Newton step is one preconditioner application and no
further CG iteration. For m = 2 this is the diagonal plus rank-3 preconditioner of
:mod:`.pair_preconditioner`, which keeps its own path (3x3 adjugates, no batched LU).
The squared error has the diagonal Hessian :math:`\Sigma^2 + \lambda_H I`.
"""

from __future__ import annotations

import torch

from .pcg import Preconditioner


def mixture_preconditioner(frame, loss, lam_H: float, p, classes, weights,
                           loss_frame=None) -> Preconditioner:
    r"""M_0^{-1}, whether M_0 is the exact Hessian everywhere, and its deviation (:mod:`.pcg`).

    For samples of ``classes`` with ``weights`` (c, m) in the coordinates of ``frame``
    (:mod:`.frames`), with probabilities ``p``. With ``loss_frame``
    (:math:`A^\top\nabla\ell` per sample) and the softmax family,
    :math:`A^\top p = A^\top\nabla\ell + \sum_k t_k a_{c_k}` (+ the uniform part of label
    smoothing) replaces the product p A.

    Below float64 the probabilities' sums and the small matrix
    :math:`I + \Omega U^\top D^{-1}U` are formed, factored and solved in float64, from D and
    U rounded to the solve's dtype, and the products with U run in that dtype: the small
    matrix cancels terms of order :math:`|a|^2/\lambda_H`, and formed in float32 its LU
    factorisation found it singular at lam_H = 1e-4 (K = 6, 3-class mixtures, the float32
    phase of a learned classifier).
    """
    solve_dtype, high = p.dtype, torch.float64
    if solve_dtype != high:
        frame, p, weights = frame.to(high), p.to(high), weights.to(high)
        loss_frame = None if loss_frame is None else loss_frame.to(high)
    softmax = loss.hessian == "softmax"
    sigma2, m = frame.sigma2, classes.shape[1]
    p_mix = p.gather(1, classes)  # (c, m)
    # sums over the other classes, taken directly (differences of totals would cancel)
    p_other = p.scatter(1, classes, 0.0)
    mass = p_other.sum(-1)
    mass_sq = (p_other * p_other).sum(-1)
    tiny = torch.finfo(p.dtype).tiny
    p_bar = torch.where(mass > tiny, mass_sq / mass.clamp_min(tiny), torch.zeros_like(mass))
    n_other = max(p.shape[1] - m, 1)
    # p_bar >= the plain mean of the other p_o, with equality iff they are all equal
    spread = p_bar - mass / n_other
    exact = softmax and bool((spread <= 64 * torch.finfo(p.dtype).eps * p_bar).all())
    D = p_bar[:, None] * sigma2 + lam_H  # (c, r)
    rows = frame.A[classes]  # (c, m, r)
    if loss_frame is None or not softmax:
        frame_p = frame.from_logits(p, loss.shift_invariant)
    else:
        declared = loss.softmax_target(p.shape[1])
        target = declared.scale * weights
        frame_p = loss_frame + torch.bmm(target[:, None, :], rows).squeeze(1)
        if declared.uniform:
            frame_p = frame_p + (declared.uniform / p.shape[1]) * frame.A.sum(0)
    columns = torch.cat([rows, frame_p[:, None, :]], dim=1)  # (c, m+1, r)
    omega = torch.cat([p_mix - p_bar[:, None], -torch.ones_like(p_bar)[:, None]], dim=1)
    D, columns = D.to(solve_dtype), columns.to(solve_dtype)
    scaled, LU, pivots = _woodbury_system(D, columns, omega)

    deviation = None
    if softmax and not exact:
        deviation = (p_other - p_bar[:, None]).scatter_(1, classes, 0.0).to(solve_dtype)
    return Preconditioner.from_factors(_woodbury_inverse, (D, columns, omega, scaled, LU, pivots),
                                       exact, deviation)


def _woodbury_system(D, columns, omega):
    """(U D^-1, the LU factors and pivots of S = I + Omega U^T D^-1 U): D and U in the dtype
    the products with them run in, S formed and factored in Omega's (float64 below float64,
    :func:`mixture_preconditioner`)."""
    scaled = columns / D[:, None, :]
    high = omega.dtype
    S = omega[:, :, None] * (columns.to(high) @ scaled.to(high).transpose(1, 2))  # (c, m+1, m+1)
    S.diagonal(dim1=1, dim2=2).add_(1.0)
    LU, pivots = torch.linalg.lu_factor(S)
    return scaled, LU, pivots


def _woodbury_inverse(D, columns, omega, scaled, LU, pivots):
    """v -> M_0^{-1} v per sample by the push-through Woodbury form (module docstring), the
    small (m+1) solve in Omega's dtype."""
    high = omega.dtype

    def apply(v):
        y = v / D
        t = omega * (columns @ y[:, :, None]).squeeze(-1).to(high)
        s = torch.linalg.lu_solve(LU, pivots, t[:, :, None]).to(y.dtype)  # (c, m+1, 1)
        return y - (s.transpose(1, 2) @ scaled).squeeze(1)

    return apply
