r"""What a mixup loss declares, so that the solver, the certificate and the figures need not
know which loss it is.

A mixed sample of :math:`m` classes :math:`c_1..c_m` with weights :math:`y_k\ge 0`,
:math:`\sum_k y_k = 1` has the soft target :math:`y = \sum_k y_k e_{c_k}`; mixup pairs are
:math:`m = 2` with classes :math:`(c, c')` and weights :math:`(\lambda, 1-\lambda)`. A loss is a
function of the logits :math:`z` and the sample. It declares:

* ``hessian``: the structure of its Hessian in the logits, which the Newton feature solver
  and its preconditioners exploit: ``"softmax"`` (:math:`\operatorname{diag}(p) - pp^\top` with
  :math:`p` the softmax of the possibly shifted logits: cross-entropy against a target that is
  an affine image of :math:`y`, see :class:`SoftmaxTarget`), ``"identity"`` (:math:`I`: halved
  squared error) or ``"general"`` (products by automatic differentiation, or the loss's own
  :meth:`MixupLoss.hvp`);
* ``preconditioner_model``: for a ``"general"`` Hessian, the structure the Newton
  preconditioner assumes for it: ``"softmax"`` (focal loss, a function of the softmax) or
  ``"identity"`` scaled by the curvature bound (the default);
* ``curvature``: an upper bound on the largest eigenvalue of that Hessian, which sets the
  step sizes of gradient descent;
* ``convex``: whether it is convex in the logits; a convex loss may also give its convex
  program (:meth:`MixupLoss.cvxpy_value`, :meth:`MixupLoss.fenchel`), and then the convex
  certificate (:mod:`ufm.theory.certificate`) checks the solver on it;
* ``lower_bound``: a floor of its value over all logits and samples, if known (0 for every
  registered loss), which the learned classifier's optimality certificate needs
  (:mod:`ufm.solver.optimality`);
* ``shift_invariant``: whether adding a constant to every logit leaves it unchanged (its
  gradient sums to 0), which lets logit coordinates skip a projection;
* ``mixture_form``: whether it is defined for any number of mixed classes;
* ``target_only``: whether it depends on a sample only through its soft target :math:`y`
  (not on the order of its classes, nor on how a class's weight is split between two
  columns naming it), so that samples with one target share their optimal features, which
  the Newton solver then solves once (:mod:`ufm.solver.sample_groups`); every registered
  loss does, and a new loss says so (the default is False: each sample solved on its own);
* ``label`` and ``colour``: how figures name and draw it.

The one function a new loss must write is :meth:`MixupLoss.mixture_value` (per-sample values
for any number of mixed classes, differentiable by torch); every other method has a default
built on it. The loss then needs one line in the registry (:mod:`ufm.losses`). Fast paths
(the fused value, probabilities and gradient of the softmax family) override the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

HESSIANS = ("softmax", "identity", "general")


def mixup_target(
    c: torch.Tensor, c_prime: torch.Tensor, lam: torch.Tensor, K: int, dtype=None
) -> torch.Tensor:
    r"""Soft target :math:`y = \lambda e_c + (1-\lambda) e_{c'}`, shape (..., K).

    The target of a mixup pair, as the soft-target form of a loss sees it; same-class pairs
    (c = c') get :math:`e_c`.

    Parameters
    ----------
    c, c_prime : classes in [0, K-1], tensors (or numbers) broadcastable together with ``lam``.
    lam : weight of class ``c``, in [0, 1].
    K : number of classes.
    dtype : of the result; None takes ``lam``'s floating dtype, or torch's default dtype for
        an integer ``lam``.

    Returns
    -------
    torch.Tensor
        (..., K) on ``lam``'s device, (...) the broadcast shape of ``c``, ``c_prime`` and
        ``lam``.

    Examples
    --------
    >>> import torch, ufm
    >>> c, c_prime = torch.tensor([0, 2]), torch.tensor([1, 2])
    >>> y = ufm.mixup_target(c, c_prime, torch.tensor([0.25, 0.5]), K=3)
    >>> tuple(y.shape)
    (2, 3)
    >>> y.tolist()
    [[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]
    """
    c, c_prime, lam = torch.broadcast_tensors(
        torch.as_tensor(c), torch.as_tensor(c_prime), torch.as_tensor(lam)
    )
    dtype = dtype or (lam.dtype if lam.is_floating_point() else torch.get_default_dtype())
    lam = lam.to(dtype)
    y = torch.zeros(*lam.shape, K, dtype=dtype, device=lam.device)
    y.scatter_add_(-1, c.long().unsqueeze(-1), lam.unsqueeze(-1))
    y.scatter_add_(-1, c_prime.long().unsqueeze(-1), (1 - lam).unsqueeze(-1))
    return y


def mixture_target(classes: torch.Tensor, weights: torch.Tensor, K: int) -> torch.Tensor:
    r"""Soft target :math:`\sum_k y_k e_{c_k}` (n, K) of classes and weights (n, m)."""
    y = torch.zeros(*weights.shape[:-1], K, dtype=weights.dtype, device=weights.device)
    return y.scatter_add_(-1, classes.long(), weights)


def pair_as_mixture(c, c_prime, lam, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes and weights (..., 2) of pairs: (c, c') with (lam, 1 - lam)."""
    c, c_prime, lam = torch.broadcast_tensors(
        torch.as_tensor(c), torch.as_tensor(c_prime), torch.as_tensor(lam, dtype=dtype)
    )
    return torch.stack([c, c_prime], -1).long(), torch.stack([lam, 1 - lam], -1)


def gather_last(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``z[..., index]`` per row, index broadcast to the leading shape of ``z``."""
    index = index.long().expand(z.shape[:-1]).unsqueeze(-1)
    return torch.gather(z, -1, index).squeeze(-1)


@dataclass(frozen=True)
class SoftmaxTarget:
    r"""A loss of the softmax family: cross-entropy of the shifted logits :math:`z + s`
    against the target :math:`t = \text{scale}\cdot y + \text{uniform}\cdot\mathbf 1/K`.

    :math:`\ell = \operatorname{lse}(z+s) - \langle t, z+s\rangle`, gradient :math:`p - t` and
    Hessian :math:`\operatorname{diag}(p) - pp^\top` with :math:`p = \operatorname{softmax}(z+s)`.
    ``shift`` is None for no shift, else a (K,) tensor.
    """

    scale: float = 1.0
    uniform: float = 0.0
    shift: torch.Tensor | None = None


class MixupLoss:
    """A mixup loss on logits, evaluated per sample; see the module docstring for what it declares.

    Subclasses set ``name`` (the registry key), ``label``, the declarations, and implement
    :meth:`mixture_value`; ``loss(z, c, c_prime, lam)`` evaluates pairs.

    Parameters
    ----------
    form : which of the loss's ``forms`` it takes, "soft" (the soft target) or "pair"
        (the weighted sum of the two one-class losses), where the subclass offers both.

    Examples
    --------
    The built-in losses come from the registry (:func:`ufm.get_loss`):

    >>> import torch, ufm
    >>> ce = ufm.get_loss("ce")
    >>> isinstance(ce, ufm.MixupLoss), ce.hessian, ce.convex
    (True, 'softmax', True)

    A new loss writes only :meth:`mixture_value`; the pair evaluation, the gradient and the
    Hessian-vector products follow from it. Here the halved squared error, which equals
    the built-in "mse":

    >>> class HalfSquare(ufm.MixupLoss):
    ...     name = "half_square"
    ...     hessian = "identity"
    ...     def mixture_value(self, z, classes, weights):
    ...         y = torch.zeros_like(z).scatter_add(-1, classes, weights)
    ...         return 0.5 * ((z - y) ** 2).sum(-1)
    >>> z = torch.zeros(2, 3, dtype=torch.float64)
    >>> c, c_prime = torch.tensor([0, 1]), torch.tensor([1, 1])
    >>> lam = torch.tensor([0.5, 1.0], dtype=torch.float64)
    >>> HalfSquare()(z, c, c_prime, lam).tolist()
    [0.25, 0.5]
    >>> bool(torch.equal(HalfSquare()(z, c, c_prime, lam), ufm.get_loss("mse")(z, c, c_prime, lam)))
    True
    >>> tuple(HalfSquare().grad(z, c, c_prime, lam).shape)
    (2, 3)
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    colour: ClassVar[str | None] = None
    hessian: ClassVar[str] = "general"
    convex: ClassVar[bool] = False
    lower_bound: ClassVar[float | None] = None
    shift_invariant: ClassVar[bool] = False
    mixture_form: ClassVar[bool] = True
    target_only: ClassVar[bool] = False
    preconditioner_model: ClassVar[str] = "identity"
    forms: ClassVar[tuple[str, ...]] = ("soft",)  # the forms a subclass offers

    def __init__(self, form: str = "soft") -> None:
        if form not in self.forms:
            allowed = " or ".join(map(repr, self.forms))
            raise ValueError(f"form for {self.name!r} must be {allowed}, got {form!r}")
        self.form = form

    # -- identity -------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        """Parameters that, with ``name``, reconstruct the loss via :func:`ufm.losses.get_loss`."""
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
        return hash((self.name, tuple(sorted((k, repr(v)) for k, v in self.params.items()))))

    # -- declarations -----------------------------------------------------------------------

    @property
    def curvature(self) -> float:
        """An upper bound on the largest eigenvalue of the Hessian in the logits."""
        raise NotImplementedError(f"loss {self.name!r} does not declare its curvature")

    @property
    def hessian_model(self) -> str:
        """The Hessian structure the Newton preconditioner assumes: the exact one, or for a
        general Hessian the declared ``preconditioner_model``."""
        return self.preconditioner_model if self.hessian == "general" else self.hessian

    def softmax_target(self, K: int, dtype=None, device=None) -> SoftmaxTarget | None:
        """The target map of a softmax-family loss (``hessian == "softmax"``), else None."""
        return None

    def for_classes(self, class_sizes: torch.Tensor) -> MixupLoss:
        """This loss for a training set with ``class_sizes`` (K,) samples per class.

        A loss that depends on the class frequencies (logit adjustment) returns a copy bound to
        them; the others return themselves. Called by :func:`ufm.solver.build_problem`.
        """
        return self

    # -- values and derivatives --------------------------------------------------------------

    def mixture_value(self, z: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Per-sample values (...) for logits (..., K), classes and weights (..., m)."""
        raise ValueError(f"loss {self.name!r} has no m-class form")

    def __call__(self, z, c, c_prime, lam) -> torch.Tensor:
        """Per-sample values of pairs (c, c', lam), broadcast to the leading shape of ``z``."""
        classes, weights = pair_as_mixture(c, c_prime, lam, z.dtype)
        return self.mixture_value(z, classes.to(z.device), weights.to(z.device))

    def mean(self, z, c, c_prime, lam) -> torch.Tensor:
        """Average loss over all samples."""
        return self(z, c, c_prime, lam).mean()

    def grad(self, z, c, c_prime, lam) -> torch.Tensor:
        """Per-sample gradient with respect to the logits, shape of ``z``."""
        return _autograd_grad(lambda x: self(x, c, c_prime, lam), z)

    def hvp(self, z, c, c_prime, lam, v) -> torch.Tensor:
        """Per-sample Hessian (in the logits) applied to ``v``, shape of ``z``."""
        return _autograd_hvp(lambda x: self(x, c, c_prime, lam), z, v)

    def mixture_hvp(self, z, classes, weights, v) -> torch.Tensor:
        """As :meth:`hvp`, for classes and weights (n, m)."""
        return _autograd_hvp(lambda x: self.mixture_value(x, classes, weights), z, v)

    def pair_terms(self, z, c, c_prime, lam, need_grad: bool = True):
        """Per-sample values (n,), probabilities (softmax family, else None) and logit
        gradients (n, K, or None unless ``need_grad``) of pairs: what a solver needs per pass."""
        value = self(z, c, c_prime, lam)
        return value, None, (self.grad(z, c, c_prime, lam) if need_grad else None)

    def mixture_terms(self, z, classes, weights, need_grad: bool = True):
        """As :meth:`pair_terms`, for classes and weights (n, m)."""
        if not need_grad:
            return self.mixture_value(z, classes, weights), None, None
        with torch.enable_grad():
            x = z.detach().requires_grad_(True)
            value = self.mixture_value(x, classes, weights)
            (grad,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), None, grad

    # -- the convex program (convex losses that have one) ---------------------------------

    def certificate_target(self, y: torch.Tensor) -> torch.Tensor:
        """The target the convex program takes for soft targets ``y`` (n, K)."""
        return y

    def certificate_constant(self, y: torch.Tensor) -> torch.Tensor:
        """A per-sample constant (n,) the loss adds to the program's value."""
        return torch.zeros(y.shape[:-1], dtype=y.dtype)

    def cvxpy_value(self, z, target):
        """The loss as a CVXPY expression of logits ``z`` (an affine expression) and a target."""
        raise ValueError(self._no_certificate())

    def fenchel(self, z: torch.Tensor, target: torch.Tensor):
        r"""(value, :math:`\mu = \nabla\ell`, :math:`\ell^*(\mu)`) per row, for the duality gap."""
        raise ValueError(self._no_certificate())

    def _no_certificate(self) -> str:
        why = "is not convex in the logits" if not self.convex else "declares no convex program"
        return f"loss {self.name!r} {why}, so it has no convex certificate"


def _autograd_grad(function, z: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(function(x).sum(), x)
    return g


def _autograd_hvp(function, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(function(x).sum(), x, create_graph=True)
        (hv,) = torch.autograd.grad((g * v).sum(), x)
    return hv
