r"""Mixup losses on logits, batched.

A mixed sample carries two classes :math:`c, c'` and a coefficient :math:`\lambda\in[0,1]`;
its soft target is :math:`y = \lambda e_c + (1-\lambda) e_{c'}`. A mixup loss can be written
in two forms, and this module says which one each loss uses:

* **pair form** :math:`\lambda\,\ell(z, c) + (1-\lambda)\,\ell(z, c')` (Zhang et al., 2018,
  "mixup: Beyond empirical risk minimization");
* **soft-target form** :math:`\ell(z, y)`.

For cross-entropy the two are equal exactly. For the (halved) squared error they differ by
the constant :math:`\tfrac12\lambda(1-\lambda)\|e_c-e_{c'}\|^2`, which does not move any
optimum. For focal loss they differ and only the pair form is offered.

Every loss is evaluated per sample: ``loss(z, c, c_prime, lam)`` with logits ``z`` of shape
(..., K) and ``c``, ``c_prime``, ``lam`` broadcastable to (...) returns shape (...).
``grad`` and ``hvp`` give the gradient and Hessian-vector product with respect to the
logits, per sample (analytic where the Hessian has structure, autograd otherwise).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from ._checks import check_float

__all__ = [
    "MixupLoss",
    "CrossEntropy",
    "SquaredError",
    "LabelSmoothing",
    "Focal",
    "LOSSES",
    "get_loss",
    "smoothing",
    "mixup_target",
]


def mixup_target(
    c: torch.Tensor, c_prime: torch.Tensor, lam: torch.Tensor, K: int, dtype=None
) -> torch.Tensor:
    r"""Soft target :math:`y = \lambda e_c + (1-\lambda) e_{c'}`, shape (..., K)."""
    c, c_prime, lam = torch.broadcast_tensors(
        torch.as_tensor(c), torch.as_tensor(c_prime), torch.as_tensor(lam)
    )
    dtype = dtype or (lam.dtype if lam.is_floating_point() else torch.get_default_dtype())
    lam = lam.to(dtype)
    y = torch.zeros(*lam.shape, K, dtype=dtype, device=lam.device)
    y.scatter_add_(-1, c.long().unsqueeze(-1), lam.unsqueeze(-1))
    y.scatter_add_(-1, c_prime.long().unsqueeze(-1), (1 - lam).unsqueeze(-1))
    return y


def _gather(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    index = index.long().expand(z.shape[:-1]).unsqueeze(-1)
    return torch.gather(z, -1, index).squeeze(-1)


class MixupLoss:
    """Base class: a mixup loss on logits, evaluated per sample.

    Subclasses set ``name``, ``form`` ("soft" or "pair"), ``convex`` (convex in the logits)
    and implement :meth:`__call__`. ``grad``/``hvp`` default to autograd.
    """

    name: ClassVar[str] = ""
    convex: ClassVar[bool] = True
    forms: ClassVar[tuple[str, ...]] = ("soft", "pair")  # the forms a subclass offers

    def __init__(self, form: str = "soft") -> None:
        if form not in self.forms:
            allowed = " or ".join(map(repr, self.forms))
            raise ValueError(f"form for {self.name!r} must be {allowed}, got {form!r}")
        self.form = form

    @property
    def params(self) -> dict[str, Any]:
        """Parameters that, with ``name``, reconstruct the loss via :func:`get_loss`."""
        return {"form": self.form}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"get_loss({self.name!r}, {args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MixupLoss) and (self.name, self.params) == (
            other.name,
            other.params,
        )

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items()))))

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mean(self, z, c, c_prime, lam) -> torch.Tensor:
        """Average loss over all samples."""
        return self(z, c, c_prime, lam).mean()

    def grad(self, z, c, c_prime, lam) -> torch.Tensor:
        """Per-sample gradient with respect to the logits, shape of ``z``."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(z, c, c_prime, lam).sum(), z)
        return g

    def hvp(self, z, c, c_prime, lam, v) -> torch.Tensor:
        """Per-sample Hessian (in the logits) applied to ``v``, shape of ``z``."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(z, c, c_prime, lam).sum(), z, create_graph=True)
            (hv,) = torch.autograd.grad((g * v).sum(), z)
        return hv


class _SoftmaxFamily(MixupLoss):
    """Losses equal to cross-entropy against some soft target t(c, c', lam).

    Their gradient is softmax(z) - t and their Hessian diag(p) - p p^T.
    """

    def soft_target(self, c, c_prime, lam, K: int, dtype=None) -> torch.Tensor:
        return mixup_target(c, c_prime, lam, K, dtype)

    def grad(self, z, c, c_prime, lam) -> torch.Tensor:
        return torch.softmax(z, dim=-1) - self.soft_target(c, c_prime, lam, z.shape[-1], z.dtype)

    def hvp(self, z, c, c_prime, lam, v) -> torch.Tensor:
        p = torch.softmax(z, dim=-1)
        return p * v - p * (p * v).sum(-1, keepdim=True)


class CrossEntropy(_SoftmaxFamily):
    r"""Mixup cross-entropy.

    Soft form: :math:`\operatorname{lse}(z) - \langle y, z\rangle`. Pair form:
    :math:`\lambda(\operatorname{lse}(z) - z_c) + (1-\lambda)(\operatorname{lse}(z) - z_{c'})`.
    The two are equal for every input (the loss is linear in the target).
    """

    name = "ce"

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:
        lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
        lse = torch.logsumexp(z, dim=-1)
        if self.form == "pair":
            return lam * (lse - _gather(z, c)) + (1 - lam) * (lse - _gather(z, c_prime))
        y = mixup_target(c, c_prime, lam, z.shape[-1], z.dtype)
        return lse - (y * z).sum(-1)


class LabelSmoothing(_SoftmaxFamily):
    r"""Mixup cross-entropy with label smoothing :math:`\varepsilon`.

    Cross-entropy against :math:`(1-\varepsilon)\,y + \varepsilon\,\mathbf 1/K`. Linear in the
    target, so the soft and pair forms coincide; it is convex in the logits.
    """

    name = "label_smoothing"

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__("soft")
        self.eps = check_float("eps", eps, 0.0, 1.0, high_open=True)

    @property
    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def soft_target(self, c, c_prime, lam, K: int, dtype=None) -> torch.Tensor:
        y = mixup_target(c, c_prime, lam, K, dtype)
        return (1 - self.eps) * y + self.eps / K

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:
        lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
        t = self.soft_target(c, c_prime, lam, z.shape[-1], z.dtype)
        return torch.logsumexp(z, dim=-1) - (t * z).sum(-1)


class SquaredError(MixupLoss):
    r"""Mixup squared error, halved: :math:`\tfrac12\|z - y\|^2` (soft form).

    Pair form: :math:`\tfrac12[\lambda\|z-e_c\|^2 + (1-\lambda)\|z-e_{c'}\|^2]`, which equals the
    soft form plus :math:`\tfrac12\lambda(1-\lambda)\|e_c - e_{c'}\|^2`. The factor 1/2 makes
    the ridge-regularised optimum :math:`h = (W^\top W + \lambda_H I)^{-1} W^\top y` exactly.
    """

    name = "mse"

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:
        lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
        if self.form == "pair":
            sq = (z * z).sum(-1)
            dist_c = sq - 2 * _gather(z, c) + 1
            dist_cp = sq - 2 * _gather(z, c_prime) + 1
            return 0.5 * (lam * dist_c + (1 - lam) * dist_cp)
        y = mixup_target(c, c_prime, lam, z.shape[-1], z.dtype)
        return 0.5 * ((z - y) ** 2).sum(-1)

    def grad(self, z, c, c_prime, lam) -> torch.Tensor:
        return z - mixup_target(c, c_prime, lam, z.shape[-1], z.dtype)

    def hvp(self, z, c, c_prime, lam, v) -> torch.Tensor:
        return v.clone()


class Focal(MixupLoss):
    r"""Mixup focal loss, pair form only.

    :math:`\lambda\,\mathrm{FL}(z, c) + (1-\lambda)\,\mathrm{FL}(z, c')` with
    :math:`\mathrm{FL}(z, c) = -(1-p_c)^\gamma \log p_c`, :math:`p = \operatorname{softmax}(z)`
    (Lin et al., 2017). For :math:`\gamma > 0` this differs from the focal loss against the
    soft target and is not convex in the logits; no convex certificate exists for it.
    """

    name = "focal"
    convex = False

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__("pair")
        self.gamma = check_float("gamma", gamma, 0.0, None)

    @property
    def params(self) -> dict[str, Any]:
        return {"gamma": self.gamma}

    def _focal(self, log_p: torch.Tensor) -> torch.Tensor:
        one_minus_p = -torch.expm1(log_p)
        return -(one_minus_p.clamp_min(0) ** self.gamma) * log_p

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:
        lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
        log_p = torch.log_softmax(z, dim=-1)
        return lam * self._focal(_gather(log_p, c)) + (1 - lam) * self._focal(
            _gather(log_p, c_prime)
        )


LOSSES: dict[str, type[MixupLoss]] = {
    cls.name: cls for cls in (CrossEntropy, SquaredError, LabelSmoothing, Focal)
}


def smoothing(loss: MixupLoss) -> float:
    """The label-smoothing :math:`\varepsilon` of ``loss``: its ``eps``, 0 for every other loss."""
    return loss.eps if isinstance(loss, LabelSmoothing) else 0.0


def get_loss(name: str | MixupLoss, **params: Any) -> MixupLoss:
    """Return the loss registered as ``name`` with ``params`` (see :data:`LOSSES`).

    ``name`` may already be a :class:`MixupLoss`, which is returned as is. Unknown names
    and unknown parameters raise ``ValueError`` listing what is allowed.
    """
    if isinstance(name, MixupLoss):
        if params:
            raise ValueError("parameters cannot be given together with a MixupLoss instance")
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    cls = LOSSES[name]
    try:
        return cls(**params)
    except TypeError as error:
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ValueError(
            f"bad parameters {params!r} for loss {name!r}; allowed parameters: {allowed}"
        ) from error
