r"""The Gram-entry metric: a preconditioner of the learned classifier's reduced Hessian.

With the features eliminated, a learned classifier's objective
:math:`F(W, b) = \min_H L(H, W, b)` (docs/theory.md section 1; the unconstrained features
model of Fisher, Meng & Papyan, ICLR 2024) depends on W only through :math:`G = WW^\top`:
each sample's optimal logits solve :math:`\min_z \ell_s(z) + \frac{\lambda_H}2 z^\top G^+ z`.
On sparse class pairs its Hessian in W is badly conditioned (condition 1433 at K = d = 50
on 476 random pairs, ``scripts/gram_curvature.py``), and the soft directions change the
Gram entries of class pairs that no sample contains: only the softmax tails of far classes
hold those entries. This module builds, from one pass over the samples, an approximate
inverse of that Hessian whose pieces are the curvature of F per Gram entry and the
curvature off the row space of W. At the optimum of that K = d = 50 problem the study's
version of it (every singular direction in the Gram block) brings the condition number to 1.6.

**The three blocks.** Write :math:`W_c = \Pi W` (:math:`\Pi` the centring
:math:`I - \mathbf 1\mathbf 1^\top/K` for a loss blind to a common logit shift, else
:math:`\Pi = I`) with thin SVD :math:`W_c = U\Sigma V^\top`, and split a direction R (K, d)
of W into

1. *the Gram block*, :math:`\Pi R P` with P the projector onto the kept right singular
   vectors (below): the change :math:`\delta G = RW^\top + WR^\top` it makes is weighted
   entry by entry, :math:`F \approx \sum_{jk}\bar M_{jk}\delta G_{jk}^2/2` with
   :math:`M_{jk} = \frac1{\lambda_H n}\sum_s w_s S_{s,j}\,g_{s,k}^2`,
   :math:`\bar M = M + M^\top`, :math:`g_s` the sample's logit gradient,
   :math:`S_{s,j} = a_{s,j}/(\lambda_H + G_{jj}a_{s,j})` and :math:`a_{s,j}` the diagonal
   of its logit Hessian (:meth:`~.feature_newton.FeatureSolver.gram_curvature`; the second
   derivative of the per-sample optimum in G is
   :math:`\frac1{\lambda_H}u^\top\nabla^2\ell\,(\lambda_H + G\nabla^2\ell)^{-1}u`,
   :math:`u = \delta G\,g_s`, with the coupling between classes dropped). Its inverse maps R
   to :math:`\Gamma = \Pi\,\mathrm{sym}(RW_c^+)\,\Pi`, :math:`\delta G = \Pi(\Gamma/\bar M)\Pi`
   entrywise and the step :math:`\frac12\delta G\,W_c^{+\top}`;
2. *the common offset* :math:`(I - \Pi)RP`: a constant added to every row moves every
   logit alike, which a shift-invariant loss ignores, so its curvature is
   :math:`\lambda_W` exactly;
3. *off the kept row space*, :math:`R(I - P)`: there :math:`\delta G` vanishes to first
   order and the curvature is the second-order term
   :math:`2\nabla_G F = \lambda_W I - \frac1{\lambda_H n}\sum_s w_s g_sg_s^\top`
   acting from the left. Far from the optimum it is indefinite (W should grow along its
   negative directions); the metric takes its absolute value, floored at
   :data:`FLOOR` :math:`\lambda_W`, so that it stays positive definite.

**Which singular directions are kept.** Along :math:`u\,v_k^\top` the Gram block's
curvature is about :math:`\sigma_k^2 m_k`, with :math:`m_k = \frac2K u_k^\top\bar M\mathbf 1`
the entry curvature seen by the left singular vector :math:`u_k`, and the third block's is
:math:`c_k = u_k^\top|2\nabla_G F|u_k`. A direction belongs to the Gram block while
:math:`\sigma_k^2 m_k \ge c_k`, otherwise to the third: where the optimal Gram matrix is
rank-deficient (three singular values of the centred W fall to 1e-10 at K = d = 100 on
random pairs), a Gram block holding them would scale its steps by :math:`1/\sigma_k^2`,
and Newton-CG measured with it needed its cap of 500 conjugate-gradient steps per
iteration there; with the rule, 16.

**The bias**, if learned, gets the diagonal
:math:`\lambda_H\frac1n\sum_s w_s S_{s,j} + \lambda_b` (the reduced curvature
:math:`\nabla^2\ell(I + G\nabla^2\ell/\lambda_H)^{-1}` with the same diagonal model).

**Where it falls short.** ``scripts/metric_spectrum.py`` measures the extreme eigenvalues
of the metric times the reduced Hessian at the optimum on random pairs: the largest grows with
the number of collapsed directions of the optimal Gram matrix (K = d = 200: a rank deficiency
in the fifties and a largest eigenvalue near 10), and its eigenvectors change G between the
collapsed directions and the others, where the metric's curvature falls short of the true
one (likely because the diagonal model of G seen by each entry has no zero to show the
collapse). The bottom of the spectrum lies in the Gram block on the range of G.

The operator is symmetric positive semidefinite, definite off the rotations
:math:`W\Omega` (:math:`\Omega` skew) along which F is flat; :mod:`.newton_cg` uses it as
the preconditioner of its conjugate gradients and the metric of its trust region.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# the third block's curvature is floored at this fraction of lam_W
FLOOR = 1e-2


@dataclass(frozen=True)
class GramSums:
    r"""The sums of one pass over the samples (:meth:`FeatureSolver.gram_curvature`), not
    divided by n: ``entry`` :math:`\lambda_H n M` (K, K), ``outer``
    :math:`\sum_s w_s g_sg_s^\top` (K, K) and ``bias`` :math:`\sum_s w_s S_{s,\cdot}` (K,);
    ``entry`` and ``outer`` are None where only the bias is learned."""

    entry: torch.Tensor | None
    outer: torch.Tensor | None
    bias: torch.Tensor


class GramMetric:
    """The classifier block of the metric of the module docstring at ``W`` (K, d); the bias
    block is :func:`bias_metric`.

    Parameters
    ----------
    W : torch.Tensor
        The current classifier (K, d).
    sums : GramSums
        The per-sample sums at the features solved for ``W`` (and the bias).
    n : int
        The number of samples the sums run over.
    lam_H, lam_W : float
        The penalties of the problem.
    centred : bool
        Whether the loss is blind to a common logit shift (then :math:`\\Pi` centres).
    """

    def __init__(self, W: torch.Tensor, sums: GramSums, n: int, lam_H: float, lam_W: float,
                 centred: bool):
        K = W.shape[0]
        self.centred, self.lam_W = centred, lam_W
        Wc = W - W.mean(0, keepdim=True) if centred else W
        self.entry = (sums.entry + sums.entry.T) / (lam_H * n)
        values, vectors = torch.linalg.eigh(off_row_curvature(sums.outer, n, lam_H, lam_W))
        values = values.abs().clamp_min(FLOOR * lam_W)
        absolute = (vectors * values) @ vectors.T
        self.off_inverse = (vectors / values) @ vectors.T
        U, sigma, Vh = torch.linalg.svd(Wc, full_matrices=False)
        entry_seen = (2.0 / K) * ((U * U) * self.entry.sum(1, keepdim=True)).sum(0)
        off_seen = (U * (absolute @ U)).sum(0)
        keep = (sigma * sigma * entry_seen >= off_seen) & (sigma > 1e-8 * sigma[0])
        V_kept = Vh[keep].T  # (d, r)
        self.pinv = V_kept @ (U[:, keep] / sigma[keep]).T  # (d, K)
        self.row = V_kept @ V_kept.T

    def _centre(self, X: torch.Tensor) -> torch.Tensor:
        if not self.centred:
            return X
        X = X - X.mean(0, keepdim=True)
        return X - X.mean(1, keepdim=True)

    def apply_W(self, R: torch.Tensor) -> torch.Tensor:
        """The classifier block of the metric applied to the direction ``R`` (K, d): the
        approximate inverse Hessian times it."""
        off = R - R @ self.row
        on = R - off
        offset = on.mean(0, keepdim=True) if self.centred else torch.zeros_like(on[:1])
        gamma = (on - offset) @ self.pinv
        gamma = self._centre(0.5 * (gamma + gamma.T))
        delta_G = self._centre(gamma / self.entry)
        return 0.5 * delta_G @ self.pinv.T + offset.expand_as(R) / self.lam_W + self.off_inverse @ off


def off_row_curvature(outer: torch.Tensor, n: int, lam_H: float, lam_W: float) -> torch.Tensor:
    r"""The curvature of F off the row space of W (the third block), the symmetric (K, K)
    :math:`2\nabla_G F = \lambda_W I - \frac1{\lambda_H n}\sum_s w_s g_sg_s^\top`: adding
    :math:`\sigma uv^\top` to W (v off its row space, |u| = |v| = 1) changes F by
    :math:`\frac{\sigma^2}2u^\top(2\nabla_G F)u` to second order (each feature gains
    :math:`-\sigma(u^\top g_s)/\lambda_H` along v). Negative directions are where W should
    grow; positive ones where its Gram matrix may collapse. ``outer`` is the sum
    :math:`\sum_s w_s g_sg_s^\top` (``GramSums.outer``, or
    :func:`~.optimality.gradient_outer_sum`).

    Examples
    --------
    >>> import torch
    >>> C = off_row_curvature(torch.eye(2, dtype=torch.float64), n=4, lam_H=0.5, lam_W=1.0)
    >>> C.diagonal().tolist()
    [0.5, 0.5]
    """
    eye = torch.eye(outer.shape[0], dtype=outer.dtype, device=outer.device)
    curvature = lam_W * eye - outer / (lam_H * n)
    return 0.5 * (curvature + curvature.T)


def bias_metric(sums: GramSums, n: int, lam_H: float, lam_b: float) -> torch.Tensor:
    r"""The bias block of the metric, the inverse of its diagonal curvature
    :math:`\lambda_H\frac1n\sum_s w_s S_{s,j} + \lambda_b` (K,): all of the metric that a
    fixed classifier with a learned bias needs, without the factorisations of W."""
    return 1.0 / (lam_H * sums.bias / n + lam_b).clamp_min(1e-12)


def rotation_complement(W: torch.Tensor) -> torch.Tensor:
    r"""An orthonormal basis (Kd, m) of the flat directions of W orthogonal to every
    rotation :math:`W\Omega` (:math:`\Omega` skew), along which F is constant: the space on
    which a reduced Hessian and this metric are compared (``scripts/gram_curvature.py``,
    the tests)."""
    d = W.shape[1]
    rotations = []
    for i in range(d):
        for j in range(i + 1, d):
            omega = torch.zeros(d, d, dtype=W.dtype, device=W.device)
            omega[i, j], omega[j, i] = 1.0, -1.0
            rotations.append((W @ omega).reshape(-1))
    U, s, _ = torch.linalg.svd(torch.stack(rotations, 1), full_matrices=True)
    return U[:, int((s > 1e-10 * s[0]).sum()):]
