r"""Feature solves in logit coordinates for a fixed classifier that is a tight frame.

The feature solver (:mod:`.feature_newton`) works in the coordinates :math:`x` of the row
space of :math:`W = U\Sigma V^\top` and pays two or three products with :math:`A = U\Sigma`
per Newton step, :math:`O(Kr)` per sample. A simplex-ETF classifier (the theory's setting,
docs/theory.md section 2) has all its nonzero singular values equal, :math:`\Sigma = \sigma I`,
and its range is :math:`\mathbf 1^\perp`: :math:`WW^\top = \sigma^2 P` with the centring
projector :math:`P = I - \mathbf 1\mathbf 1^\top/K`. Rows with :math:`WW^\top = \sigma^2 I`
(an orthonormal frame, scaled) have :math:`P = I`. For such a *tight frame* the coordinates

.. math:: x' = Ux \in \operatorname{range}(P) \subset \mathbb R^K, \qquad
          z = \sigma x' + b, \qquad h = W^\top x'/\sigma, \qquad \|x'\| = \|x\|,

turn the products with :math:`A` into :math:`Ax' = \sigma Px'` and :math:`A^\top g = \sigma
Pg`: a subtraction of the mean, :math:`O(K)` per sample. Every formula of the feature solver
holds unchanged with :math:`A = \sigma P` (kept as a K x K matrix only for the gathers of
class rows), :math:`V = W^\top/\sigma` and :math:`\Sigma^2 = \sigma^2 I`, so the iterates, the
gradients and the objective are those of the SVD frame, reached with far fewer operations
(the large problem of ``scripts/bench_scaling.py``: K = d = 1000). :func:`tight_frame` decides
from :math:`WW^\top`, to the rounding
level of the dtype; a classifier that is not one keeps the SVD frame.
"""

from __future__ import annotations

import math

import torch

from .feature_newton import FeatureSolver
from .mixture_newton import MixtureFeatureSolver
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


class TightFrame:
    """Mixin for a feature solver: logit coordinates when the classifier is a tight frame.

    Placed before :class:`~.feature_newton.FeatureSolver` (or its mixture form) in the bases;
    with any other classifier it defers to the SVD frame of the base class.
    """

    _frame: tuple[str, float] | None = None

    def set_classifier(self, W: torch.Tensor, b: torch.Tensor | None, H: torch.Tensor | None = None):
        frame = tight_frame(W)
        if frame is None:
            self._frame = None
            return super().set_classifier(W, b, H)
        kind, sigma = frame
        K = W.shape[0]
        V = W.T / sigma  # (d, K), h = x' V^T
        X = self._warm_start(V, H)
        P = torch.eye(K, dtype=W.dtype, device=W.device)
        if kind == "centred":
            P = P - 1.0 / K
        self.W, self.b = W, b
        self.A, self.V = sigma * P, V
        self.sigma2 = torch.full((K,), sigma * sigma, dtype=W.dtype, device=W.device)
        self.X = X
        self._frame = frame

    def state_dict(self) -> dict:
        return {**super().state_dict(), "frame": self._frame}

    def load_state_dict(self, state: dict) -> None:
        """Restore; coordinates saved in the SVD frame (no ``"frame"``: a checkpoint of an
        older version) are carried over to the logit frame through the features."""
        if state.get("frame") is None and tight_frame(state["W"]) is not None:
            FeatureSolver.set_classifier(self, state["W"], state["b"])
            self.X = state["X"]
            H = self.features()
            self.X = None
            self.set_classifier(state["W"], state["b"], H)
            return
        super().load_state_dict(state)

    def snapshot(self) -> tuple:
        return (super().snapshot(), self._frame)

    def restore(self, snapshot: tuple) -> None:
        base, self._frame = snapshot
        super().restore(base)

    def _preconditioner(self, p, idx, loss_frame=None):
        r"""The exact inverse Hessian for the softmax family, whatever the probabilities.

        In these coordinates the Hessian is :math:`\sigma^2(\operatorname{diag}(p) - pp^\top)
        + \lambda_H I` on range(P) (the softmax Hessian maps :math:`\mathbf 1` to 0), a
        diagonal :math:`D = \sigma^2 p + \lambda_H` less a rank-one term, so Sherman-Morrison
        inverts it in O(K) per sample:
        :math:`M^{-1}v = D^{-1}v + \frac{\sigma^2 (D^{-1}p)^\top v}{1 - \sigma^2 p^\top D^{-1}p}
        D^{-1}p`, with the denominator formed as :math:`\lambda_H\,\mathbf 1^\top D^{-1}p`
        (no cancellation). It maps range(P) to itself. Other losses keep the base class's.
        """
        if self._frame is None or not self._softmax:
            return super()._preconditioner(p, idx, loss_frame)
        s2 = self._frame[1] ** 2
        u = 1.0 / (s2 * p + self.lam_H)
        up = u * p
        coefficient = s2 / (self.lam_H * up.sum(-1, keepdim=True))

        def apply(v):
            return u * v + (coefficient * (up * v).sum(-1, keepdim=True)) * up

        return Preconditioner(apply, True)

    @property
    def _shift_invariant(self) -> bool:
        """Whether the loss depends on the logits through the softmax only (its logit
        gradients sum to zero)."""
        return self.loss.shift_invariant

    def _uses_loss_frame(self) -> bool:
        return self._frame is None and super()._uses_loss_frame()

    def _to_logits(self, v):
        r""":math:`\sigma Pv = \sigma v`: every coordinate vector lies in range(P) already."""
        return super()._to_logits(v) if self._frame is None else self._frame[1] * v

    def _from_logits(self, g):
        r""":math:`\sigma Pg`; for the softmax family (and focal, a function of the softmax)
        :math:`\mathbf 1^\top g = 0`, so P is the identity on g."""
        if self._frame is None:
            return super()._from_logits(g)
        kind, sigma = self._frame
        if kind == "centred" and not self._shift_invariant:
            g = g - g.mean(-1, keepdim=True)
        return sigma * g


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


class TightFrameFeatureSolver(TightFrame, FeatureSolver):
    """:class:`~.feature_newton.FeatureSolver` of pairs, in logit coordinates for a tight frame."""

    def theory_frame(self):
        if self._frame is None or self._frame[0] != "centred":
            return super().theory_frame()
        return self.X, CentredFrame(self._frame[1], self.W.shape[0])


class TightFrameMixtureSolver(TightFrame, MixtureFeatureSolver):
    """:class:`~.mixture_newton.MixtureFeatureSolver`, in logit coordinates for a tight frame."""
