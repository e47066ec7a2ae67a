r"""Newton directions of the feature solvers: the preconditioned step, certified or refined by PCG.

Each sample's Newton system :math:`\nabla^2\phi\, d = \nabla\phi` is solved to the forcing
target :math:`|\nabla^2\phi\, d - \nabla\phi| \le \eta|\nabla\phi|`. The preconditioners of
:mod:`.pair_preconditioner` and :mod:`.mixture_preconditioner` are the Hessian with the probabilities of
the classes outside the sample's mixture replaced by their mean :math:`\bar p`:
:math:`\nabla^2\phi - M_0 = A^\top \operatorname{diag}(\delta) A` with
:math:`\delta_o = p_o - \bar p` outside the mixture and 0 inside. The residual of the
preconditioned step :math:`d_0 = M_0^{-1}\nabla\phi` is therefore
:math:`A^\top(\delta\odot Ad_0)`, bounded by

.. math:: |\nabla^2\phi\, d_0 - \nabla\phi| \le \sigma_{\max}(A)\, |\delta \odot A d_0| ,

which costs no Hessian product: :math:`Ad_0` are the logits of the step, needed by the line
search anyway. A sample whose bound meets its target takes :math:`d_0` as it is; the others
go on by conjugate gradients (the first Hessian product reusing :math:`Ad_0`). Near a
learned optimum, where the classifier is close to a simplex ETF and :math:`\delta` is
small, this saves every Hessian product of the pass (measured by ``scripts/bench_scaling.py``).

Samples of one chunk need very different numbers of CG steps (at K = d = 1000 with a random
classifier, a fifth of a chunk's rows were still active, on average, over its CG steps),
and each step's Hessian product costs the same per row whether the row is active or not.
Given ``restrict``, CG therefore goes on with only the active rows whenever at most half of
the rows it works on are still active (the preconditioner's factors are indexed for them,
:meth:`Preconditioner.restricted`, which costs a copy where forming them again cost passes
over the rows' K probabilities, and the Hessian product is built again; each row's are its
own, so its iterates do not change, up to rounding).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

MAX_CG = 60
# CG goes on with the active rows alone once at most this share of its rows is active
COMPACT_SHARE = 0.5


class Preconditioner(NamedTuple):
    """M_0^{-1} per sample, whether M_0 is the Hessian exactly, the probability deviation
    delta (m, K) with Hessian - M_0 = A^T diag(delta) A (None where no such form is known),
    and ``restrict(rows)``: M_0^{-1} of the samples ``rows`` alone, from the factors already
    formed (None: not offered)."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    exact: bool
    deviation: torch.Tensor | None = None
    restrict: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] | None = None

    @classmethod
    def from_factors(cls, inverse: Callable[..., Callable[[torch.Tensor], torch.Tensor]],
                     factors: tuple, exact: bool,
                     deviation: torch.Tensor | None = None) -> Preconditioner:
        """The preconditioner ``inverse(*factors)``, ``factors`` its per-sample tensors (one
        row per sample), which :meth:`restricted` indexes: what every constructor of a
        preconditioner writes, once.

        Examples
        --------
        >>> import torch
        >>> M = Preconditioner.from_factors(lambda d: (lambda v: v / d),
        ...                                 (torch.tensor([[2.0], [4.0]]),), False)
        >>> M.apply(torch.ones(2, 1)).tolist()
        [[0.5], [0.25]]
        >>> M.restricted(torch.tensor([1])).apply(torch.ones(1, 1)).tolist()
        [[0.25]]
        """
        def restrict(rows):
            return inverse(*(t[rows] for t in factors))

        return cls(inverse(*factors), exact, deviation, restrict)

    def restricted(self, rows: torch.Tensor) -> Preconditioner:
        """The same M_0^{-1} for the samples ``rows`` alone, without forming anything again:
        indexing the factors costs a copy of the rows', where forming them again costs passes
        over the rows' K probabilities (CG's compaction, :func:`newton_direction`).

        Examples
        --------
        >>> import torch
        >>> halves = torch.tensor([[2.0, 2.0], [4.0, 4.0]])
        >>> def restrict(rows):
        ...     return lambda v: v / halves[rows]
        >>> M = Preconditioner(lambda v: v / halves, False, None, restrict)
        >>> M.restricted(torch.tensor([1])).apply(torch.ones(1, 2)).tolist()
        [[0.25, 0.25]]

        The result restricts further in its own rows (here row 0 of [1, 0] is row 1):

        >>> M.restricted(torch.tensor([1, 0])).restricted(torch.tensor([0])).apply(
        ...     torch.ones(1, 2)).tolist()
        [[0.25, 0.25]]
        """
        if self.restrict is None:
            raise ValueError("this preconditioner was built without a restriction to rows")
        deviation = None if self.deviation is None else self.deviation[rows]
        restrict = self.restrict

        def restrict_further(subset):  # rows of the restricted one are rows[subset] here
            return restrict(rows[subset])

        return Preconditioner(restrict(rows), self.exact, deviation, restrict_further)


def certified_step(preconditioner: Preconditioner, to_logits, sigma2, grad: torch.Tensor,
                   target: torch.Tensor):
    r"""(:math:`d_0 = M_0^{-1}\nabla\phi` per row, its logits or None, the rows whose
    residual bound :math:`\sigma_{\max}|\delta\odot Ad_0|` meets ``target``, or None where
    the preconditioner has no deviation form): the preconditioned step and where it needs no
    conjugate gradients (module docstring); no Hessian product.

    Examples
    --------
    >>> import torch
    >>> M = Preconditioner(lambda v: v / 2, False, torch.tensor([[0.0, 1e-3]]))
    >>> step, logits, certified = certified_step(M, lambda v: v, torch.ones(2),
    ...                                          torch.ones(1, 2), torch.tensor([1e-2]))
    >>> step.tolist(), bool(certified)
    ([[0.5, 0.5]], True)
    """
    zr = preconditioner.apply(grad)
    if preconditioner.deviation is None:
        return zr, None, None
    z_zr = to_logits(zr)
    bound = sigma2.max().sqrt() * torch.linalg.vector_norm(preconditioner.deviation * z_zr, dim=-1)
    return zr, z_zr, bound <= target


def newton_direction(preconditioner: Preconditioner, hessian_vector, to_logits, sigma2,
                     grad: torch.Tensor, target: torch.Tensor, restrict=None):
    r"""(direction, its logits or None, CG iterations) with :math:`|Hd - g| \le` ``target``.

    ``hessian_vector(v, Av)`` is the Hessian product given v and its logits Av;
    ``to_logits`` maps coordinates to logits (A v); ``sigma2`` holds the squared singular
    values of A. The logits of the direction come back when the direction is the
    preconditioned step of every sample (so the caller need not form them again).
    ``restrict(rows)`` (optional) gives the (preconditioner, hessian_vector) of the rows
    ``rows`` of ``grad`` alone, for CG to drop the rows it has finished.
    """
    precondition = preconditioner.apply
    if preconditioner.exact:
        return precondition(grad), None, 0
    zr, z_zr, certified = certified_step(preconditioner, to_logits, sigma2, grad, target)
    step = torch.zeros_like(grad)
    active = torch.ones(grad.shape[0], dtype=torch.bool, device=grad.device)
    if certified is not None:
        if bool(certified.all()):
            return zr, z_zr, 0
        step = torch.where(certified[:, None], zr, step)
        active = ~certified
    rows = None  # the rows of grad that CG works on (None: all of them)
    work = step  # the step of those rows (step itself while CG works on all)
    residual, direction = grad, zr  # both replaced, never written in place
    rz = (residual * zr).sum(-1)
    iterations, remaining = 0, int(active.sum())
    for iterations in range(1, MAX_CG + 1):
        if restrict is not None and remaining <= COMPACT_SHARE * active.numel():
            keep = torch.nonzero(active).squeeze(1)
            if rows is None:
                step = work  # every row's step so far, the finished rows' final
            else:
                step[rows] = work
            rows = keep if rows is None else rows[keep]
            work, residual, direction = work[keep], residual[keep], direction[keep]
            rz, target, active, zr = rz[keep], target[keep], active[keep], zr[keep]
            z_zr = None if z_zr is None else z_zr[keep]
            preconditioner, hessian_vector = restrict(rows)
            precondition = preconditioner.apply
        Hd = hessian_vector(direction, z_zr if iterations == 1 else None)
        curvature = (direction * Hd).sum(-1)
        negative = curvature <= 0  # only for non-convex losses such as focal
        if iterations == 1 and bool(negative.any()):
            work = torch.where(negative[:, None], zr, work)
        active = active & ~negative
        alpha = torch.where(active, rz / torch.where(active, curvature, 1.0), 0.0)
        work = torch.addcmul(work, alpha[:, None], direction)  # fused: one pass each
        residual = torch.addcmul(residual, alpha[:, None], Hd, value=-1.0)
        active = active & (residual.norm(dim=-1) > target)
        remaining = int(active.sum())  # one host sync per iteration, for both tests
        if remaining == 0:
            break
        zr = precondition(residual)
        rz_new = (residual * zr).sum(-1)
        beta = torch.where(active, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
        direction = torch.addcmul(zr, beta[:, None], direction)
        rz = rz_new
    if rows is None:
        return work, None, iterations
    step[rows] = work
    return step, None, iterations
