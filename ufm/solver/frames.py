r"""The coordinate frames of the feature solver: where a sample's coordinates live.

For fixed :math:`(W, b)` every per-sample minimiser lies in the row space of :math:`W`
(stationarity gives :math:`h = -W^\top\nabla\ell/\lambda_H`), so the feature solver
(:mod:`.feature_newton`) works in coordinates :math:`x` with :math:`h = Vx` and logits
:math:`z = Ax + b`, :math:`W = AV^\top`. A frame supplies :math:`A`, :math:`V`, the squared
singular values :math:`\Sigma^2` (:math:`A^\top A = \operatorname{diag}(\Sigma^2)`), and the two
products a Newton step needs, :math:`Av` and :math:`A^\top g`. Two frames exist:

* :class:`RowSpaceFrame`, for any classifier: the thin SVD :math:`W = U\Sigma V^\top` of rank
  :math:`r`, :math:`A = U\Sigma`; the products cost :math:`O(Kr)` per sample.
* :class:`LogitFrame`, for a classifier that is a *tight frame*: a simplex ETF (the theory's
  setting, docs/theory.md section 2) has all its nonzero singular values equal,
  :math:`\Sigma = \sigma I`, and its range is :math:`\mathbf 1^\perp`:
  :math:`WW^\top = \sigma^2 P` with the centring projector :math:`P = I - \mathbf 1\mathbf
  1^\top/K`; rows with :math:`WW^\top = \sigma^2 I` have :math:`P = I`. In the coordinates

  .. math:: x' = Ux \in \operatorname{range}(P) \subset \mathbb R^K, \qquad
            z = \sigma x' + b, \qquad h = W^\top x'/\sigma, \qquad \|x'\| = \|x\|,

  the products become :math:`Ax' = \sigma Px' = \sigma x'` and :math:`A^\top g = \sigma Pg`:
  a subtraction of the mean, :math:`O(K)` per sample (none for a loss whose logit gradients
  sum to zero). Every formula of the feature solver holds unchanged with :math:`A = \sigma P`
  (kept as a K x K matrix only for the gathers of class rows), :math:`V = W^\top/\sigma` and
  :math:`\Sigma^2 = \sigma^2 I`, so the iterates, gradients and objective are those of the
  SVD frame, reached with far fewer operations (K = d = 1000 in
  ``scripts/bench_scaling.py``). For the softmax family its Newton system is inverted exactly
  by Sherman-Morrison (:meth:`LogitFrame.softmax_preconditioner`).

:func:`frame_for` picks the frame; :func:`tight_frame` decides, to the rounding level of the
dtype, whether a classifier is a tight frame.
"""

from __future__ import annotations

import copy
import math

import torch

from ..etf import truncated_svd
from .pcg import Preconditioner

COORDINATES = ("auto", "row_space")
# |W W^T - sigma^2 P|_F <= _TOLERANCE eps sqrt(K d) |sigma^2 P|_F; the rounding of a simplex
# ETF stays below a fifth of it (K, d up to 1000, float32 and float64)
_TOLERANCE = 0.5


def tight_frame(W: torch.Tensor) -> tuple[str, float] | None:
    """``("centred", sigma)`` if W W^T = sigma^2 (I - 11^T/K), ``("full", sigma)`` if it is
    sigma^2 I, to the rounding level of W's dtype; else None."""
    K, d = W.shape
    G = (W @ W.T).to(torch.float64)
    eye = torch.eye(K, dtype=torch.float64, device=W.device)
    bound = _TOLERANCE * torch.finfo(W.dtype).eps * math.sqrt(K * d)
    for kind, P, rank in (("centred", eye - 1.0 / K, K - 1), ("full", eye, K)):
        if rank == 0 or rank > d:
            continue
        s2 = float(torch.trace(G)) / rank
        if s2 > 0 and float((G - s2 * P).norm()) <= bound * s2 * math.sqrt(rank):
            return kind, math.sqrt(s2)
    return None


class _Frame:
    """What every frame holds: ``A`` (K, r), ``V`` (d, r) and the squared singular values
    ``sigma2`` of A."""

    A: torch.Tensor
    V: torch.Tensor
    sigma2: torch.Tensor

    def to(self, dtype: torch.dtype):
        """The same frame in ``dtype``, not factored again: coordinates keep their meaning
        (Newton-CG's float32 Hessian products, :meth:`.feature_newton.FeatureSolver.in_dtype`)."""
        frame = copy.copy(self)
        frame.A, frame.V, frame.sigma2 = self.A.to(dtype), self.V.to(dtype), self.sigma2.to(dtype)
        return frame


class RowSpaceFrame(_Frame):
    """The thin-SVD frame of any classifier: ``A = U Sigma`` (K, r), ``V`` (d, r)."""

    key = None  # what a checkpoint records of the frame (None: the SVD frame)

    def __init__(self, W: torch.Tensor):
        U, S, V = truncated_svd(W)
        self.A, self.V, self.sigma2 = U * S, V, S * S

    def to_logits(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`Av` per sample (rows of ``v``): coordinates to logits, without the bias."""
        return v @ self.A.T

    def from_logits(self, g: torch.Tensor, shift_invariant: bool) -> torch.Tensor:
        r""":math:`A^\top g` per sample: logit gradients to coordinates."""
        return g @ self.A

    def softmax_preconditioner(self, p: torch.Tensor, lam_H: float) -> Preconditioner | None:
        """None: the SVD frame has no exact inverse of the softmax Newton system."""
        return None

    def theory_frame(self):
        """The frame the theory reference measures coordinates in (:mod:`.reference`)."""
        return self.A


class LogitFrame(_Frame):
    r"""Logit coordinates of a tight frame: :math:`A = \sigma P`, :math:`V = W^\top/\sigma`."""

    def __init__(self, W: torch.Tensor, kind: str, sigma: float):
        K = W.shape[0]
        P = torch.eye(K, dtype=W.dtype, device=W.device)
        if kind == "centred":
            P = P - 1.0 / K
        self.key = (kind, sigma)
        self.kind, self.sigma = kind, sigma
        self.A, self.V = sigma * P, W.T / sigma
        self.sigma2 = torch.full((K,), sigma * sigma, dtype=W.dtype, device=W.device)

    def to_logits(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\sigma Pv = \sigma v`: every coordinate vector lies in range(P) already."""
        return self.sigma * v

    def from_logits(self, g: torch.Tensor, shift_invariant: bool) -> torch.Tensor:
        r""":math:`\sigma Pg`; for a loss whose logit gradients sum to zero (the softmax family,
        focal) :math:`\mathbf 1^\top g = 0`, so P is the identity on g."""
        if self.kind == "centred" and not shift_invariant:
            g = g - g.mean(-1, keepdim=True)
        return self.sigma * g

    def softmax_preconditioner(self, p: torch.Tensor, lam_H: float) -> Preconditioner:
        r"""The exact inverse Hessian for the softmax family, whatever the probabilities.

        In these coordinates the Hessian is :math:`\sigma^2(\operatorname{diag}(p) - pp^\top)
        + \lambda_H I` on range(P) (the softmax Hessian maps :math:`\mathbf 1` to 0), a
        diagonal :math:`D = \sigma^2 p + \lambda_H` less a rank-one term, so Sherman-Morrison
        inverts it in O(K) per sample:
        :math:`M^{-1}v = D^{-1}v + \frac{\sigma^2 (D^{-1}p)^\top v}{1 - \sigma^2 p^\top D^{-1}p}
        D^{-1}p`, with the denominator formed as :math:`\lambda_H\,\mathbf 1^\top D^{-1}p`
        (no cancellation). It maps range(P) to itself.
        """
        s2 = self.sigma**2
        u = 1.0 / (s2 * p + lam_H)
        up = u * p
        coefficient = s2 / (lam_H * up.sum(-1, keepdim=True))

        def inverse(u, up, coefficient):
            return lambda v: u * v + (coefficient * (up * v).sum(-1, keepdim=True)) * up

        return Preconditioner.from_factors(inverse, (u, up, coefficient), True)

    def theory_frame(self):
        """The centred frame's distances take one broadcast and two scattered entries
        (:class:`CentredFrame`); a full frame is measured as the SVD frame is."""
        return CentredFrame(self.sigma, self.A.shape[0]) if self.kind == "centred" else self.A


def frame_for(W: torch.Tensor, logit_coordinates: bool):
    """The logit frame of ``W`` when asked for and ``W`` is a tight frame, else its SVD frame."""
    frame = tight_frame(W) if logit_coordinates else None
    return RowSpaceFrame(W) if frame is None else LogitFrame(W, *frame)


class CentredFrame:
    r"""The frame :math:`\sigma P` of logit coordinates, for the distances to the theory.

    The exact feature :math:`a w_c + b w_{c'}` has the coordinates
    :math:`\sigma(a e_c + b e_{c'} - (a + b)\mathbf 1/K)`, so its distance to x takes one
    broadcast and two scattered entries instead of two gathered rows
    (:class:`~.reference.TheoryReference`).
    """

    def __init__(self, sigma: float, K: int):
        self.sigma, self.K = sigma, K

    def pair_squares(self, x, c, c_prime, a, b) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row of x: |x - x*|^2 and |x*|^2, x* = sigma(a e_c + b e_c' - (a+b)1/K)."""
        sigma, K = self.sigma, self.K
        diff = x + (sigma * (a + b) / K)[:, None]
        rows = torch.arange(x.shape[0], device=x.device)
        diff[rows, c] -= sigma * a
        diff[rows, c_prime] -= sigma * b  # b = 0 for same-class samples
        total = a + b
        norm2 = torch.where(c == c_prime, total * total, a * a + b * b) - total * total / K
        return torch.linalg.vecdot(diff, diff), sigma * sigma * norm2
