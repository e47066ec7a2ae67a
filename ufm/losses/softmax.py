r"""The softmax family: cross-entropy of (possibly shifted) logits against a soft target.

A loss of the family declares its :class:`~.base.SoftmaxTarget`: the target
:math:`t = \text{scale}\cdot y + \text{uniform}\cdot\mathbf 1/K` and a logit shift :math:`s`.
Its value is :math:`\operatorname{lse}(z+s) - \langle t, z+s\rangle`, its gradient
:math:`p - t` and its Hessian :math:`\operatorname{diag}(p) - pp^\top`,
:math:`p = \operatorname{softmax}(z+s)`; one exponential gives all three, and the target
enters through gathers at the mixed classes, never as an (n, K) array (:func:`fused_terms`).
Cross-entropy (Zhang et al., 2018) and label smoothing (Szegedy et al., 2016) are here;
logit adjustment (Menon et al., ICLR 2021) is :mod:`.logit_adjusted`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .._checks import check_float
from .base import MixupLoss, SoftmaxTarget, gather_last, mixture_target, mixup_target


def exp_parts(z: torch.Tensor):
    """One exponential of the logits (m, K): the shifted exponentials ``p`` (not normalised),
    their sums ``total`` and the log-sum-exp ``lse``, so that softmax(z) = p / total."""
    top = z.amax(dim=-1, keepdim=True)
    p = torch.sub(z, top).exp_()
    total = p.sum(-1)
    return p, total, top.squeeze(1) + torch.log(total)


def _fused(target: SoftmaxTarget, z, target_dot, subtract_target, need_grad: bool):
    """What both sample layouts share: the shift, one exponential, the uniform part of the
    target, the value and the gradient p - t. ``target_dot(z)`` gives the weighted logits of
    the mixed classes, ``subtract_target(grad)`` takes their target weights off in place."""
    if target.shift is not None:
        z = z + target.shift
    uniform = target.uniform / z.shape[1]
    p, total, lse = exp_parts(z)
    dot = target_dot(z)
    if uniform:
        dot = dot + uniform * z.sum(-1)
    value = lse - dot
    if not need_grad:
        return value, None, None
    p /= total[:, None]
    grad = p.clone()
    subtract_target(grad)
    if uniform:
        grad -= uniform
    return value, p, grad


def fused_terms(target: SoftmaxTarget, z, classes, class_weights, need_grad: bool = True):
    r"""Per-sample values, probabilities and logit gradients of a softmax-family loss.

    ``classes`` and ``class_weights`` are sequences of (n,) tensors, one per mixed class (the
    pair path passes (c, c') and (lam, 1 - lam) without stacking them); the target weight of
    class :math:`c_k` is scale times its weight, plus uniform/K on every class.
    """
    weights = [target.scale * w for w in class_weights]

    def target_dot(z):
        dot = weights[0] * z.gather(1, classes[0][:, None]).squeeze(1)
        for k in range(1, len(weights)):
            dot = dot + weights[k] * z.gather(1, classes[k][:, None]).squeeze(1)
        return dot

    def subtract_target(grad):
        for c, w in zip(classes, weights):
            grad.scatter_add_(1, c[:, None], -w[:, None])

    return _fused(target, z, target_dot, subtract_target, need_grad)


def fused_mixture_terms(target: SoftmaxTarget, z, classes, weights, need_grad: bool = True):
    """:func:`fused_terms` for classes and weights (n, m): one gather and one scatter."""
    scaled = target.scale * weights
    return _fused(target, z, lambda z: (scaled * z.gather(1, classes)).sum(-1),
                  lambda grad: grad.scatter_add_(1, classes, -scaled), need_grad)


class SoftmaxFamily(MixupLoss):
    """Base of the losses equal to cross-entropy of shifted logits against a soft target.

    A subclass declares :meth:`softmax_target`; values, gradients, Hessian products and the
    convex program follow from it.
    """

    hessian: ClassVar[str] = "softmax"
    convex: ClassVar[bool] = True
    lower_bound: ClassVar[float | None] = 0.0
    shift_invariant: ClassVar[bool] = True
    target_only: ClassVar[bool] = True

    @property
    def curvature(self) -> float:
        """The softmax Hessian diag(p) - pp^T has eigenvalues in [0, 1/2]."""
        return 0.5

    def softmax_target(self, K: int, dtype=None, device=None) -> SoftmaxTarget:
        return SoftmaxTarget()

    def _own(self, y: torch.Tensor) -> torch.Tensor:
        target = self.softmax_target(y.shape[-1], y.dtype, y.device)
        return y if not target.uniform else target.scale * y + target.uniform / y.shape[-1]

    def _shifted(self, z: torch.Tensor) -> torch.Tensor:
        shift = self.softmax_target(z.shape[-1], z.dtype, z.device).shift
        return z if shift is None else z + shift

    def soft_target(self, c, c_prime, lam, K: int, dtype=None) -> torch.Tensor:
        """The target t (..., K) of pairs."""
        return self._own(mixup_target(c, c_prime, lam, K, dtype))

    def mixture_value(self, z, classes, weights) -> torch.Tensor:
        target = self._own(mixture_target(classes, weights, z.shape[-1]))
        z = self._shifted(z)
        return torch.logsumexp(z, dim=-1) - (target * z).sum(-1)

    def grad(self, z, c, c_prime, lam) -> torch.Tensor:
        return torch.softmax(self._shifted(z), dim=-1) - self.soft_target(
            c, c_prime, lam, z.shape[-1], z.dtype)

    def hvp(self, z, c, c_prime, lam, v) -> torch.Tensor:
        p = torch.softmax(self._shifted(z), dim=-1)
        return p * v - p * (p * v).sum(-1, keepdim=True)

    def mixture_hvp(self, z, classes, weights, v) -> torch.Tensor:
        return self.hvp(z, None, None, None, v)

    def pair_terms(self, z, c, c_prime, lam, need_grad: bool = True):
        target = self.softmax_target(z.shape[1], z.dtype, z.device)
        return fused_terms(target, z, (c, c_prime), (lam, 1 - lam), need_grad)

    def mixture_terms(self, z, classes, weights, need_grad: bool = True):
        target = self.softmax_target(z.shape[1], z.dtype, z.device)
        return fused_mixture_terms(target, z, classes, weights, need_grad)

    # -- the convex program: cross-entropy of z + s against t --------------------------------

    def certificate_target(self, y: torch.Tensor) -> torch.Tensor:
        return self._own(y)

    def cvxpy_value(self, z, target):
        import cvxpy as cp

        shift = self.softmax_target(target.shape[0], torch.float64).shift
        if shift is not None:
            z = z + shift.cpu().numpy()
        return cp.log_sum_exp(z) - target @ z

    def fenchel(self, z, target):
        r"""The conjugate of :math:`\ell(z) = \operatorname{lse}(z+s) - t^\top(z+s)` is
        :math:`\ell^*(\mu) = \sum_i(\mu+t)_i\log(\mu+t)_i - \mu^\top s` on :math:`\mu + t\in\Delta`."""
        shifted = self._shifted(z)
        log_p = torch.log_softmax(shifted, dim=-1)
        p = log_p.exp()
        mu = p - target
        value = torch.logsumexp(shifted, -1) - (target * shifted).sum(-1)
        conjugate = (p * log_p).sum(-1)
        if shifted is not z:
            conjugate = conjugate - (mu * (shifted - z)).sum(-1)
        return value, mu, conjugate


class CrossEntropy(SoftmaxFamily):
    r"""Mixup cross-entropy.

    Soft form: :math:`\operatorname{lse}(z) - \langle y, z\rangle`. Pair form:
    :math:`\lambda(\operatorname{lse}(z) - z_c) + (1-\lambda)(\operatorname{lse}(z) - z_{c'})`.
    The two are equal for every input (the loss is linear in the target).
    """

    name = "ce"
    label = "cross-entropy"
    colour = "#0072B2"
    forms = ("soft", "pair")

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:
        lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
        lse = torch.logsumexp(z, dim=-1)
        if self.form == "pair":
            return lam * (lse - gather_last(z, c)) + (1 - lam) * (lse - gather_last(z, c_prime))
        y = mixup_target(c, c_prime, lam, z.shape[-1], z.dtype)
        return lse - (y * z).sum(-1)


class LabelSmoothing(SoftmaxFamily):
    r"""Mixup cross-entropy with label smoothing :math:`\varepsilon`.

    Cross-entropy against :math:`(1-\varepsilon)\,y + \varepsilon\,\mathbf 1/K`. Linear in the
    target, so the soft and pair forms coincide; it is convex in the logits.
    """

    name = "label_smoothing"
    label = "label smoothing"
    colour = "#009E73"

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__("soft")
        self.eps = check_float("eps", eps, 0.0, 1.0, high_open=True)

    @property
    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def softmax_target(self, K: int, dtype=None, device=None) -> SoftmaxTarget:
        return SoftmaxTarget(scale=1 - self.eps, uniform=self.eps)

    def soft_target(self, c, c_prime, lam, K: int, dtype=None) -> torch.Tensor:
        y = mixup_target(c, c_prime, lam, K, dtype)
        return (1 - self.eps) * y + self.eps / K

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:
        lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
        t = self.soft_target(c, c_prime, lam, z.shape[-1], z.dtype)
        return torch.logsumexp(z, dim=-1) - (t * z).sum(-1)
