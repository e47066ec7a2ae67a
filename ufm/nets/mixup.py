r"""Mixup of training batches: partners, coefficients, and the mixed forward pass.

Input mixup (Zhang et al., "mixup: Beyond empirical risk minimization", ICLR 2018) feeds the
network :math:`\tilde x = \lambda x_i + (1-\lambda) x_j` and trains it against
:math:`\lambda e_{y_i} + (1-\lambda) e_{y_j}` through the pair form of a loss from
:mod:`ufm.losses`. Manifold mixup (Verma et al., ICML 2019) mixes the output of a hidden block
instead. The *inputs* (or hidden states) are mixed: mixing only the targets of a clean batch
is a different method (THEORY.md section 7).

Partners come from a random permutation of the batch (from a permutation within each class
with ``same_class``); :math:`\lambda\sim\mathrm{Beta}(\alpha,\alpha)`, one per batch or one
per sample. :math:`\alpha = 0` is plain training (ERM): every sample is its own partner with
:math:`\lambda = 1`. All randomness comes from one ``numpy.random.Generator``, so a run does
not depend on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_float, check_int
from .models import MixupNet


def same_class_permutation(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random partner for every sample among the samples of its own class.

    Sorting ``labels + u`` with ``u`` uniform in [0, 1) twice gives two orders that group the
    classes identically but order each group at random; position ``k`` of one order is
    paired with position ``k`` of the other.
    """
    labels = np.asarray(labels, dtype=np.float64)
    order = np.argsort(labels + rng.random(labels.shape), kind="stable")
    shuffled = np.argsort(labels + rng.random(labels.shape), kind="stable")
    partner = np.empty(len(labels), dtype=np.int64)
    partner[order] = shuffled
    return partner


@dataclass(frozen=True)
class MixupPlan:
    """Partners (B,) and coefficients lam (B,) for one batch."""

    partner: torch.Tensor
    lam: torch.Tensor


class Mixup:
    """Draws a :class:`MixupPlan` per batch.

    Parameters
    ----------
    alpha : Beta(alpha, alpha) parameter, >= 0; 0 means no mixing.
    per_sample : one lam per sample instead of one per batch.
    same_class : partners from the sample's own class only.
    layer : 0 for input mixup, k >= 1 for manifold mixup after hidden block k.
    """

    def __init__(
        self, alpha: float, per_sample: bool = False, same_class: bool = False, layer: int = 0
    ) -> None:
        self.alpha = check_float("alpha", alpha, 0.0, None)
        self.per_sample = bool(per_sample)
        self.same_class = bool(same_class)
        self.layer = check_int("layer", layer, minimum=0)

    @property
    def mixes(self) -> bool:
        return self.alpha > 0

    def plan(self, labels: torch.Tensor, rng: np.random.Generator) -> MixupPlan:
        B = len(labels)
        if not self.mixes:
            return MixupPlan(torch.arange(B), torch.ones(B, dtype=torch.float64))
        if self.same_class:
            partner = same_class_permutation(labels.cpu().numpy(), rng)
        else:
            partner = rng.permutation(B)
        lam = rng.beta(self.alpha, self.alpha, size=B if self.per_sample else 1)
        lam = torch.as_tensor(lam, dtype=torch.float64).expand(B)
        return MixupPlan(torch.as_tensor(partner), lam)


def mix(h: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """:math:`\\lambda_k h_k + (1-\\lambda_k) h_{\\pi(k)}` for every row k of ``h`` (B, ...)."""
    lam = lam.to(device=h.device, dtype=h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
    return lam * h + (1 - lam) * h[partner.to(h.device)]


def mixed_forward(
    model: MixupNet, x: torch.Tensor, plan: MixupPlan, layer: int = 0
) -> torch.Tensor:
    """Logits of the mixed batch: blocks before ``layer`` on the clean inputs, then mixing,
    then the remaining blocks and the classifier."""
    hidden = model.run_blocks(x, 0, layer)
    return model.classifier(model.run_blocks(mix(hidden, plan.partner, plan.lam), layer))
