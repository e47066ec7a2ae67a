r"""Per-sample loss values, probabilities and logit gradients of m-class mixtures.

A sample mixes the distinct classes :math:`c_1,\dots,c_m` with weights :math:`y_k \ge 0`,
:math:`\sum_k y_k = 1` (Chaudhry et al., 2022; :math:`m = 2` is the mixup of Fisher, Meng &
Papyan, ICLR 2024, arXiv:2402.06171, whose pair path is :mod:`.fused_loss`). The target is
:math:`y = \sum_k y_k e_{c_k}`; the classes enter through gathers and scatters of (n, m)
index arrays, never as an (n, K) target, except for the squared error. Per loss:

* cross-entropy and label smoothing :math:`\varepsilon`:
  :math:`t = (1-\varepsilon)y + \varepsilon\mathbf 1/K`,
  :math:`\ell = \operatorname{lse}(z) - \langle t, z\rangle`, :math:`\nabla\ell = p - t`,
  :math:`\nabla^2\ell = \operatorname{diag}(p) - pp^\top` with :math:`p = \operatorname{softmax}(z)`;
* squared error: soft form :math:`\tfrac12\|z-y\|^2`, pair form
  :math:`\sum_k y_k\tfrac12\|z - e_{c_k}\|^2 = \tfrac12\|z-y\|^2 + \tfrac12(1-\|y\|^2)`;
  gradient :math:`z - y`, Hessian :math:`I`;
* focal (pair form, as :class:`ufm.losses.Focal`):
  :math:`\ell = \sum_k y_k\,\mathrm{FL}(z, c_k)`,
  :math:`\mathrm{FL}(z, c) = -(1-p_c)^\gamma\log p_c`; gradient and Hessian-vector product by
  automatic differentiation. Not convex in the logits for :math:`\gamma > 0`.
"""

from __future__ import annotations

import torch

from ..losses import Focal, MixupLoss, SquaredError, _SoftmaxFamily, smoothing
from .fused_loss import exp_parts


def mixture_loss_terms(loss: MixupLoss, z, classes, weights, need_grad: bool = True):
    r"""Per-sample values (n,), probabilities (softmax family, else None), logit gradients (n, K).

    Parameters
    ----------
    loss : a registry loss (cross-entropy, label smoothing, squared error or focal).
    z : (n, K) logits.
    classes : (n, m) int64 distinct classes per sample.
    weights : (n, m) weights on the simplex, in the dtype of ``z``.
    need_grad : when False only the values are computed (the other two are None).
    """
    if isinstance(loss, _SoftmaxFamily):
        return _softmax_terms(loss, z, classes, weights, need_grad)
    if isinstance(loss, SquaredError):
        y = torch.zeros_like(z).scatter_add_(1, classes, weights)
        diff = z - y
        value = 0.5 * (diff * diff).sum(-1)
        if loss.form == "pair":
            value = value + 0.5 * (1.0 - (y * y).sum(-1))
        return value, None, (diff if need_grad else None)
    if isinstance(loss, Focal):
        if not need_grad:
            return focal_mixture(loss, z, classes, weights), None, None
        with torch.enable_grad():
            z_ = z.detach().requires_grad_(True)
            value = focal_mixture(loss, z_, classes, weights)
            (grad,) = torch.autograd.grad(value.sum(), z_)
        return value.detach(), None, grad
    raise ValueError(f"loss {loss.name!r} has no m-class form")


def _softmax_terms(loss, z, classes, weights, need_grad):
    """Cross-entropy against t = (1-eps) y + eps/K: one exponential for value, p and gradient."""
    eps = smoothing(loss)
    target = (1 - eps) * weights
    uniform = eps / z.shape[1]
    p, total, lse = exp_parts(z)
    target_dot = (target * z.gather(1, classes)).sum(-1)
    if uniform:
        target_dot = target_dot + uniform * z.sum(-1)
    value = lse - target_dot
    if not need_grad:
        return value, None, None
    p /= total[:, None]
    grad = p.clone()
    grad.scatter_add_(1, classes, -target)
    if uniform:
        grad -= uniform
    return value, p, grad


def focal_mixture(loss: Focal, z, classes, weights):
    r""":math:`\sum_k y_k\,\mathrm{FL}(z, c_k)` per sample, with the focal term of ``loss``."""
    log_p = torch.log_softmax(z, dim=-1).gather(1, classes)
    return (weights * loss._focal(log_p)).sum(-1)


def mixture_loss_hvp(loss: MixupLoss, z, classes, weights, v):
    r"""Per-sample Hessian in the logits applied to ``v`` (n, K).

    :math:`p\odot v - p\,\langle p, v\rangle` for the softmax family, :math:`v` for the squared
    error, double back-propagation for focal.
    """
    if isinstance(loss, _SoftmaxFamily):
        p = torch.softmax(z, dim=-1)
        return p * v - p * (p * v).sum(-1, keepdim=True)
    if isinstance(loss, SquaredError):
        return v.clone()
    if isinstance(loss, Focal):
        with torch.enable_grad():
            z_ = z.detach().requires_grad_(True)
            value = focal_mixture(loss, z_, classes, weights)
            (grad,) = torch.autograd.grad(value.sum(), z_, create_graph=True)
            (hv,) = torch.autograd.grad((grad * v).sum(), z_)
        return hv
    raise ValueError(f"loss {loss.name!r} has no m-class form")
