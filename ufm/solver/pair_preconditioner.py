r"""The preconditioner of the pair feature solver: the Hessian with the other classes' probabilities
replaced by their mean, a diagonal plus rank-3 matrix inverted by the Woodbury identity.

See :mod:`.feature_newton` for the formula and :mod:`.pcg` for how its deviation from the
Hessian certifies the preconditioned step.
"""

from __future__ import annotations

import torch

from .pcg import Preconditioner


def _inverse_3x3(S):
    """Inverse of a batch of 3x3 matrices given as nested lists of (m,) tensors (adjugate)."""
    (a, b, c), (d, e, f), (g, h, i) = S
    A_, B_, C_ = e * i - f * h, -(d * i - f * g), d * h - e * g
    det = a * A_ + b * B_ + c * C_
    return [
        [A_ / det, -(b * i - c * h) / det, (b * f - c * e) / det],
        [B_ / det, (a * i - c * g) / det, -(a * f - c * d) / det],
        [C_ / det, -(a * h - b * g) / det, (a * e - b * d) / det],
    ]


def diagonal_preconditioner(loss, sigma2, lam_H) -> Preconditioner:
    r"""The inverse of :math:`\kappa\Sigma^2 + \lambda_H I`: exact for a loss whose logit Hessian
    is the identity (:math:`\kappa = 1`), and for a general loss that declares no softmax
    structure, a model of its Hessian by its curvature bound :math:`\kappa`."""
    exact = loss.hessian == "identity"
    diagonal = sigma2 + lam_H if exact else loss.curvature * sigma2 + lam_H
    # the same for every row: no per-sample factor
    return Preconditioner.from_factors(lambda: (lambda v: v / diagonal), (), exact)


def pair_preconditioner(frame, loss, lam_H: float, p, c, c_prime, same, lam,
                        loss_frame=None) -> Preconditioner:
    r"""M_0^{-1}, whether M_0 is the exact Hessian everywhere, and its deviation (:mod:`.pcg`).

    For pair samples (classes ``c``, ``c_prime``, weight ``lam`` of c, ``same`` where they
    are one class) in the coordinates of ``frame`` (:mod:`.frames`), with probabilities ``p``.
    M_0 is exact for the softmax family when the classes other than c, c' have equal
    probabilities (a simplex-ETF classifier, or K = 2); a general loss whose declared model
    is the softmax (focal) takes this M_0 as an approximation. ``loss_frame`` (optional) is
    :math:`A^\top\nabla\ell` per sample: for the softmax family
    :math:`A^\top p = A^\top\nabla\ell + A^\top t` with the target t, whose frame needs only
    the rows a_c, a_c' gathered here anyway, which saves the product p A (a quarter of a
    fixed classifier's matrix products).
    """
    softmax = loss.hessian == "softmax"
    sigma2 = frame.sigma2
    p_c = p.gather(1, c[:, None]).squeeze(1)
    p_cp = torch.where(same, torch.zeros_like(p_c), p.gather(1, c_prime[:, None]).squeeze(1))
    # sums over the other classes, taken directly (differences of totals would cancel)
    p_other = p.scatter(1, c[:, None], 0.0).scatter_(1, c_prime[:, None], 0.0)
    mass = p_other.sum(-1)
    mass_sq = torch.linalg.vecdot(p_other, p_other)
    tiny = torch.finfo(p.dtype).tiny
    p_bar = torch.where(mass > tiny, mass_sq / mass.clamp_min(tiny), torch.zeros_like(mass))
    n_other = (p.shape[1] - 2 + same.to(p.dtype)).clamp_min(1)
    # p_bar >= the plain mean of the other p_o, with equality iff they are all equal
    spread = p_bar - mass / n_other
    exact = softmax and bool((spread <= 64 * torch.finfo(p.dtype).eps * p_bar).all())
    D = torch.addcmul(sigma2.new_tensor(lam_H), p_bar[:, None], sigma2)  # (m, r)
    a_c, a_cp = frame.A[c], frame.A[c_prime]
    if loss_frame is None or not softmax:
        frame_p = frame.from_logits(p, loss.shift_invariant)
    else:
        declared = loss.softmax_target(p.shape[1])
        frame_p = torch.addcmul(loss_frame, (declared.scale * lam)[:, None], a_c)
        frame_p.addcmul_((declared.scale * (1 - lam))[:, None], a_cp)
        if declared.uniform:
            frame_p += (declared.uniform / p.shape[1]) * frame.A.sum(0)
    # U = (a_c, a_c', A^T p) per sample, each (m, r), stacked as (m, 3, r)
    columns = torch.stack((a_c, a_cp, frame_p), 1)
    weights = torch.stack((p_c - p_bar, torch.where(same, 0.0, p_cp - p_bar), -torch.ones_like(p_c)), 1)
    scaled = columns / D[:, None, :]
    # S = I + diag(w) G with G = U^T D^{-1} U symmetric, a 3x3 matrix per sample inverted by
    # its adjugate; the weights are folded into it: coefficients = S^{-1} diag(w) (U^T y)
    G = torch.bmm(columns, scaled.transpose(1, 2))
    S = [[(1.0 if i == j else 0.0) + weights[:, i] * G[:, i, j] for j in range(3)] for i in range(3)]
    S_inv = torch.stack([torch.stack(row, -1) for row in _inverse_3x3(S)], -2)
    combine = S_inv * weights[:, None, :]

    deviation = None
    if softmax and not exact:
        deviation = (p_other - p_bar[:, None]).scatter_(1, c[:, None], 0.0)
        deviation.scatter_(1, c_prime[:, None], 0.0)
    return Preconditioner.from_factors(_pair_inverse, (D, columns, combine, scaled), exact,
                                       deviation)


def _pair_inverse(D, columns, combine, scaled):
    """v -> M_0^{-1} v per sample from the Woodbury factors of :func:`pair_preconditioner`."""

    def apply(v):
        # batched products over the three columns: one pass over (m, 3, r) each way
        y = v / D
        coefficients = torch.bmm(combine, torch.bmm(columns, y[:, :, None]))  # (m, 3, 1)
        return torch.baddbmm(y[:, None, :], coefficients.transpose(1, 2), scaled,
                             alpha=-1.0).squeeze(1)

    return apply
