r"""Mixup losses on logits, batched, and their registry.

A mixed sample carries two classes :math:`c, c'` and a coefficient :math:`\lambda\in[0,1]`;
its soft target is :math:`y = \lambda e_c + (1-\lambda) e_{c'}` (more generally
:math:`\sum_k y_k e_{c_k}` for m classes). A mixup loss can be written in two forms, and
each loss says which one it uses:

* **pair form** :math:`\lambda\,\ell(z, c) + (1-\lambda)\,\ell(z, c')` (Zhang et al., 2018,
  "mixup: Beyond empirical risk minimization");
* **soft-target form** :math:`\ell(z, y)`.

For cross-entropy the two are equal exactly. For the (halved) squared error they differ by
the constant :math:`\tfrac12\lambda(1-\lambda)\|e_c-e_{c'}\|^2`, which does not move any
optimum. For focal loss they differ and only the pair form is offered.

Every loss is evaluated per sample: ``loss(z, c, c_prime, lam)`` with logits ``z`` of shape
(..., K) and ``c``, ``c_prime``, ``lam`` broadcastable to (...) returns shape (...).
``grad`` and ``hvp`` give the gradient and Hessian-vector product with respect to the
logits, per sample. What each loss declares for the solver (Hessian structure, curvature,
convexity, convex program) is described in :mod:`ufm.losses.base`.

Adding a loss: one module with a :class:`MixupLoss` subclass that implements
``mixture_value`` and declares its properties, and one line :func:`register_loss` below. The
configuration's choices, the command line, the figures' names and colours, the solver and the
certificate take it from :data:`LOSSES`.
"""

from __future__ import annotations

import inspect
from typing import Any

from .base import HESSIANS, MixupLoss, SoftmaxTarget, mixture_target, mixup_target
from .focal import Focal
from .logit_adjusted import LogitAdjusted
from .softmax import CrossEntropy, LabelSmoothing, SoftmaxFamily
from .squared_error import SquaredError

__all__ = [
    "HESSIANS",
    "LOSSES",
    "CrossEntropy",
    "Focal",
    "LabelSmoothing",
    "LogitAdjusted",
    "LossNames",
    "MixupLoss",
    "SoftmaxFamily",
    "SoftmaxTarget",
    "SquaredError",
    "get_loss",
    "loss_parameter_defaults",
    "loss_parameters",
    "mixture_target",
    "mixup_target",
    "register_loss",
    "smoothing",
]

LOSSES: dict[str, type[MixupLoss]] = {}
"""The registered losses: name -> :class:`MixupLoss` subclass, in registration order.

The one list of losses that the configuration, the command line, the solver and the figures
read, so a loss added with :func:`register_loss` is a choice everywhere. :func:`get_loss`
makes an instance from a name.

Examples
--------
>>> import ufm
>>> "ce" in ufm.LOSSES, "mse" in ufm.LOSSES, "label_smoothing" in ufm.LOSSES
(True, True, True)
>>> ufm.LOSSES["ce"].name
'ce'
>>> all(issubclass(cls, ufm.MixupLoss) for cls in ufm.LOSSES.values())
True
"""


def register_loss(cls: type[MixupLoss]) -> type[MixupLoss]:
    """Add ``cls`` to :data:`LOSSES` under ``cls.name`` after checking its declarations."""
    if not (isinstance(cls, type) and issubclass(cls, MixupLoss)):
        raise ValueError(f"a loss must be a MixupLoss subclass, got {cls!r}")  # noqa: TRY004
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"loss class {cls.__name__} needs a name that is an identifier, got {cls.name!r}")
    if cls.hessian not in HESSIANS:
        raise ValueError(f"loss {cls.name!r}: hessian must be one of {HESSIANS}, got {cls.hessian!r}")
    if cls.name in LOSSES and LOSSES[cls.name] is not cls:
        raise ValueError(f"a loss named {cls.name!r} is registered already ({LOSSES[cls.name].__name__})")
    LOSSES[cls.name] = cls
    return cls


register_loss(CrossEntropy)
register_loss(SquaredError)
register_loss(LabelSmoothing)
register_loss(Focal)
register_loss(LogitAdjusted)


class LossNames:
    """A live, sorted view of the registered loss names (configuration and CLI choices), so a
    loss registered after import is a valid choice too."""

    def __iter__(self):
        return iter(sorted(LOSSES))

    def __contains__(self, name: object) -> bool:
        return name in LOSSES

    def __len__(self) -> int:
        return len(LOSSES)

    def __getitem__(self, index):
        return sorted(LOSSES)[index]

    def __repr__(self) -> str:
        return repr(tuple(self))


def loss_parameters(name: str) -> list[str]:
    """The parameters :func:`get_loss` accepts for the loss ``name``."""
    return list(loss_parameter_defaults(name))


def loss_parameter_defaults(name: str) -> dict[str, Any]:
    """The parameters of the loss ``name`` with their defaults (``inspect.Parameter.empty``
    where there is none), read from its constructor: ``{"eps": 0.1}`` for label smoothing."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in inspect.signature(LOSSES[name].__init__).parameters.values()
            if p.name != "self" and p.kind in named}


def smoothing(loss: MixupLoss) -> float:
    r"""The uniform mass :math:`\varepsilon` of a softmax-family loss's target (label
    smoothing's ``eps``), 0 for every other loss."""
    target = loss.softmax_target(2)
    return 0.0 if target is None else target.uniform


def get_loss(name: str | MixupLoss, **params: Any) -> MixupLoss:
    r"""Return the loss registered as ``name`` with ``params`` (see :data:`LOSSES`).

    ``name`` may already be a :class:`MixupLoss`, which is returned as is, so functions that
    take a loss accept either. Unknown names and unknown parameters raise ``ValueError``
    listing what is allowed.

    Parameters
    ----------
    name : a key of :data:`LOSSES` ("ce", "mse", "label_smoothing", ...) or a
        :class:`MixupLoss` instance.
    **params : the loss's own parameters (:func:`loss_parameters`), ``eps`` for label
        smoothing, say; none with an instance.

    Returns
    -------
    MixupLoss
        An instance, callable as ``loss(z, c, c_prime, lam)`` on logits ``z`` (..., K) with
        ``c``, ``c_prime``, ``lam`` broadcastable to (...), giving per-sample values (...).

    Examples
    --------
    >>> import torch, ufm
    >>> smoothed = ufm.get_loss("label_smoothing", eps=0.2)
    >>> smoothed.name, smoothed.params
    ('label_smoothing', {'eps': 0.2})
    >>> ufm.get_loss(smoothed) is smoothed
    True

    At zero logits every class has probability 1/K, so cross-entropy is :math:`\log K`
    whatever the target:

    >>> z = torch.zeros(2, 3, dtype=torch.float64)
    >>> values = ufm.get_loss("ce")(z, torch.tensor([0, 1]), torch.tensor([1, 1]),
    ...                             torch.tensor([0.5, 1.0], dtype=torch.float64))
    >>> tuple(values.shape), [round(v, 6) for v in values.tolist()]
    ((2,), [1.098612, 1.098612])
    >>> ufm.get_loss("hinge")
    Traceback (most recent call last):
        ...
    ValueError: unknown loss 'hinge'; known losses: ...
    """
    if isinstance(name, MixupLoss):
        if params:
            raise ValueError("parameters cannot be given together with a MixupLoss instance")
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    try:
        return LOSSES[name](**params)
    except TypeError as error:
        raise ValueError(
            f"bad parameters {params!r} for loss {name!r}; allowed parameters: {loss_parameters(name)}"
        ) from error
