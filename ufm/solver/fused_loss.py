r"""Per-sample mixup loss values, probabilities and logit gradients in one pass.

For the softmax family (cross-entropy and label smoothing :math:`\varepsilon`) the mixup
target is :math:`y = (1-\varepsilon)(\lambda e_c + (1-\lambda) e_{c'}) + \varepsilon\mathbf 1/K`,
the loss :math:`\operatorname{lse}(z) - \langle y, z\rangle` and its gradient :math:`p - y`;
one exponential gives all three. Both the Newton feature solver (:mod:`.feature_newton`) and
momentum gradient descent (:mod:`.gd`) evaluate the loss through :func:`loss_terms`.
"""

from __future__ import annotations

import torch

from ..losses import MixupLoss, _SoftmaxFamily, smoothing


def exp_parts(z: torch.Tensor):
    """One exponential of the logits (m, K): the shifted exponentials ``p`` (not normalised),
    their sums ``total`` and the log-sum-exp ``lse``, so that softmax(z) = p / total."""
    top = z.amax(dim=-1, keepdim=True)
    p = torch.sub(z, top).exp_()
    total = p.sum(-1)
    return p, total, top.squeeze(1) + torch.log(total)


def loss_terms(loss: MixupLoss, z, c, c_prime, lam, need_grad: bool = True):
    """Per-sample loss values, probabilities (softmax family, else None) and logit gradients.

    For the softmax family one exponential gives log-sum-exp, the probabilities and the
    gradient, and the target enters through gathers at c and c' (it is never formed as an
    (m, K) array). Other losses use their own value and gradient.
    """
    if not isinstance(loss, _SoftmaxFamily):
        value = loss(z, c, c_prime, lam)
        return value, None, (loss.grad(z, c, c_prime, lam) if need_grad else None)
    eps = smoothing(loss)
    w_c, w_cp, uniform = (1 - eps) * lam, (1 - eps) * (1 - lam), eps / z.shape[1]
    p, total, lse = exp_parts(z)
    target_dot = w_c * z.gather(1, c[:, None]).squeeze(1) + w_cp * z.gather(1, c_prime[:, None]).squeeze(1)
    if uniform:
        target_dot = target_dot + uniform * z.sum(-1)
    value = lse - target_dot
    if not need_grad:
        return value, None, None
    p /= total[:, None]
    grad = p.clone()
    grad.scatter_add_(1, c[:, None], -w_c[:, None])
    grad.scatter_add_(1, c_prime[:, None], -w_cp[:, None])
    if uniform:
        grad -= uniform
    return value, p, grad
