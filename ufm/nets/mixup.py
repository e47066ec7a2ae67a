r"""Mixup of training batches: partners, coefficients, and the mixed forward pass.

Input mixup (Zhang et al., "mixup: Beyond empirical risk minimization", ICLR 2018) feeds the
network :math:`\tilde x = \lambda x_i + (1-\lambda) x_j` and trains it against
:math:`\lambda e_{y_i} + (1-\lambda) e_{y_j}` through the pair form of a loss from
:mod:`ufm.losses`. Manifold mixup (Verma et al., ICML 2019) mixes the output of a hidden block
instead. The *inputs* (or hidden states) are mixed: mixing only the targets of a clean batch
is a different method (docs/theory.md section 7).

Partners come from a random permutation of the batch (from a permutation within each class
with ``same_class``); :math:`\lambda\sim\mathrm{Beta}(\alpha,\alpha)`, one per batch or one
per sample. :math:`\alpha = 0` is plain training (ERM): every sample is its own partner with
:math:`\lambda = 1`. All randomness comes from one ``numpy.random.Generator``, so a run does
not depend on the device.

**Mixtures of m > 2 points** (Chaudhry et al., "When does mixup promote local linearity in
learned representations?", 2022): sample :math:`i` of the batch is mixed with the samples
:math:`\pi_1(i), \dots, \pi_{m-1}(i)` of :math:`m - 1` further random permutations,
:math:`\tilde x_i = \sum_{k=0}^{m-1} y_{ik}\, x_{\pi_k(i)}` (:math:`\pi_0` the identity), with
weights :math:`y_i \sim \mathrm{Dirichlet}(\alpha\mathbf 1_m)` (one draw per batch or per
sample), and trained with :math:`\sum_k y_{ik}\,\ell(z_i, c_{\pi_k(i)})`
(:func:`mixture_loss`), the pair form for m = 2 (Zhang et al. 2018). The draws of one batch
are, in this order, the m - 1 permutations and then the weights. For m = 2 nothing of this
is used: :meth:`Mixup.plan` then draws exactly what it always drew (one permutation, then
Beta) and returns a :class:`MixupPlan`, so a pair run is unchanged to the bit.

**Class pairing** (``pairing = "class"``, pairs only): the first partner of a pair is still
the batch sample, drawn with the imbalanced class frequencies, but its partner is drawn by
choosing a class uniformly among the K classes and then a uniformly random training sample of
that class, from the whole training set (:class:`ClassPool`), not only from the batch. The
minority classes then receive far more label mass than their share of the samples
(:func:`ufm.imbalance.label_mass_ratio`), the networks' form of the UFM solver's class
pairing (:class:`ufm.solver.UFMConfig`) and a remedy proposed against minority collapse
(Fang et al., PNAS 2021). The partners are extra rows: the plan's ``extra`` names them, and
the network runs the batch followed by them (:func:`mixed_forward`). With sample pairing
nothing of this is drawn or run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_choice, check_float, check_int
from ..imbalance import PAIRINGS
from ..losses import MixupLoss
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


class ClassPool:
    """The training samples grouped by class, from which class pairing draws partners.

    Parameters
    ----------
    labels : (N,) class of every training sample (numpy or torch), in [0, K - 1].
    num_classes : K; every class needs at least one training sample, since the partner's
        class is drawn uniformly among all K (ValueError naming the empty classes).
    """

    def __init__(self, labels, num_classes: int) -> None:
        K = check_int("num_classes", num_classes, minimum=1)
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= K)):
            raise ValueError(f"labels must be a 1-D array of classes in [0, {K - 1}]")
        counts = np.bincount(labels.astype(np.int64), minlength=K)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ValueError(
                f"pairing = 'class' draws the partner's class uniformly among the K = {K} "
                f"classes, but class(es) {', '.join(map(str, empty))} have no training sample; "
                "use pairing = 'sample'"
            )
        self.num_classes = K
        self.counts = counts
        self.order = np.argsort(labels, kind="stable")  # the rows of class 0, then 1, ...
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` training rows (int64): for each a class uniform in [0, K), then a sample
        of it uniform among its training samples (two draws from ``rng``, in that order)."""
        classes = rng.integers(self.num_classes, size=size)
        within = rng.integers(0, self.counts[classes])
        return self.order[self.starts[classes] + within].astype(np.int64)


@dataclass(frozen=True)
class MixupPlan:
    """Partners (B,) and coefficients lam (B,) for one batch.

    ``extra`` (class pairing): the training-set rows of partners from outside the batch.
    The rows a plan mixes are then the batch followed by these, and ``partner`` indexes
    them; without ``extra`` it indexes the batch.
    """

    partner: torch.Tensor
    lam: torch.Tensor
    extra: torch.Tensor | None = None


@dataclass(frozen=True)
class MixturePlan:
    r"""Members (m, B) and weights (B, m) for one batch mixed from m > 2 points.

    Row k of ``members`` is the permutation :math:`\pi_k` (row 0 the identity): sample i is
    :math:`\sum_k` ``weights[i, k]`` :math:`x_{\pi_k(i)}`. ``weights`` are float64, each row
    on the simplex.
    """

    members: torch.Tensor
    weights: torch.Tensor

    @property
    def points(self) -> int:
        return self.members.shape[0]


class Mixup:
    """Draws a :class:`MixupPlan` per batch, or a :class:`MixturePlan` for ``points > 2``.

    Parameters
    ----------
    alpha : Beta(alpha, alpha) parameter (Dirichlet(alpha 1_m) for ``points`` = m > 2),
        >= 0; 0 means no mixing, whatever ``points``.
    per_sample : one lam (one weight vector) per sample instead of one per batch.
    same_class : partners from the sample's own class only.
    layer : 0 for input mixup, k >= 1 for manifold mixup after hidden block k.
    points : m, the number of samples in one mixture, >= 2.
    pairing : "sample" (the partner from the batch) or "class" (pairs only, not with
        ``same_class``: the partner's class uniform, the partner from ``pool``).
    pool : the training set by class (:class:`ClassPool`); needed by class pairing with
        ``alpha`` > 0.
    """

    def __init__(
        self,
        alpha: float,
        per_sample: bool = False,
        same_class: bool = False,
        layer: int = 0,
        points: int = 2,
        pairing: str = "sample",
        pool: ClassPool | None = None,
    ) -> None:
        self.alpha = check_float("alpha", alpha, 0.0, None)
        self.per_sample = bool(per_sample)
        self.same_class = bool(same_class)
        self.layer = check_int("layer", layer, minimum=0)
        self.points = check_int("points", points, minimum=2)
        self.pairing = check_pairing(pairing, self.points, self.same_class)
        if self.pairing == "class" and self.mixes and pool is None:
            raise ValueError("pairing = 'class' draws partners from the training set: give pool")
        self.pool = pool

    @property
    def mixes(self) -> bool:
        return self.alpha > 0

    def plan(self, labels: torch.Tensor, rng: np.random.Generator) -> MixupPlan | MixturePlan:
        B = len(labels)
        if not self.mixes:
            return MixupPlan(torch.arange(B), torch.ones(B, dtype=torch.float64))
        if self.points > 2:
            return self._mixture_plan(labels, rng)
        extra = None
        if self.pairing == "class":
            extra = torch.as_tensor(self.pool.draw(B, rng))
            partner = np.arange(B, 2 * B)
        elif self.same_class:
            partner = same_class_permutation(labels.cpu().numpy(), rng)
        else:
            partner = rng.permutation(B)
        lam = rng.beta(self.alpha, self.alpha, size=B if self.per_sample else 1)
        lam = torch.as_tensor(lam, dtype=torch.float64).expand(B)
        return MixupPlan(torch.as_tensor(partner), lam, extra)

    def _mixture_plan(self, labels: torch.Tensor, rng: np.random.Generator) -> MixturePlan:
        """m - 1 permutations (within classes with ``same_class``), then Dirichlet weights."""
        B, m = len(labels), self.points
        members = [np.arange(B)]
        for _ in range(m - 1):
            if self.same_class:
                members.append(same_class_permutation(labels.cpu().numpy(), rng))
            else:
                members.append(rng.permutation(B))
        weights = rng.dirichlet(np.full(m, self.alpha), size=B if self.per_sample else 1)
        weights = torch.as_tensor(weights, dtype=torch.float64).expand(B, m)
        return MixturePlan(torch.as_tensor(np.stack(members)), weights)


def mix(h: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """:math:`\\lambda_k h_k + (1-\\lambda_k) h_{\\pi(k)}` for every row k < B of ``h``, B =
    ``len(partner)``: ``h`` is the batch (B, ...), or with class pairing the batch followed
    by the partners' rows (:attr:`MixupPlan.extra`)."""
    lam = lam.to(device=h.device, dtype=h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
    return lam * h[: partner.shape[0]] + (1 - lam) * h[partner.to(h.device)]


def check_pairing(pairing: str, points: int, same_class: bool) -> str:
    """``pairing`` checked against the mixup it is used with: class pairing draws the partner
    of a pair (``points`` = 2) from a uniform class, so it refuses m > 2 points and
    ``same_class`` (which draws it from the sample's own class)."""
    pairing = check_choice("pairing", pairing, PAIRINGS)
    if pairing == "class" and points > 2:
        raise ValueError(
            f"pairing = 'class' draws the partner of a pair; with mixup_points = {points} > 2 "
            "use pairing = 'sample'"
        )
    if pairing == "class" and same_class:
        raise ValueError(
            "pairing = 'class' draws the partner's class uniformly and same_class draws it from "
            "the sample's own class: choose one"
        )
    return pairing


def mix_points(h: torch.Tensor, members: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_k y_{ik} h_{\pi_k(i)}` for every row i of ``h`` (B, ...), with
    ``members`` (m, B) the permutations :math:`\pi_k` and ``weights`` (B, m) the :math:`y_i`."""
    weights = weights.to(device=h.device, dtype=h.dtype)
    members = members.to(h.device)
    shape = (-1, *([1] * (h.ndim - 1)))
    mixed = weights[:, 0].reshape(shape) * h[members[0]]
    for k in range(1, members.shape[0]):
        mixed = mixed + weights[:, k].reshape(shape) * h[members[k]]
    return mixed


def mixed_forward(
    model: MixupNet, x: torch.Tensor, plan: MixupPlan | MixturePlan, layer: int = 0
) -> torch.Tensor:
    """Logits of the mixed batch: blocks before ``layer`` on the clean inputs, then mixing
    (:func:`mix` for a pair plan, :func:`mix_points` for a mixture plan), then the remaining
    blocks and the classifier. With class pairing ``x`` is the batch followed by the
    partners' rows (:attr:`MixupPlan.extra`), and the blocks before ``layer`` see them all
    (for manifold mixup, their batch statistics are over both)."""
    hidden = model.run_blocks(x, 0, layer)
    if isinstance(plan, MixturePlan):
        mixed = mix_points(hidden, plan.members, plan.weights)
        return model.classifier(model.run_blocks(mixed, layer))
    return model.classifier(model.run_blocks(mix(hidden, plan.partner, plan.lam), layer))


def mixture_loss(
    loss: MixupLoss, logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    r"""Per-sample m-class mixup loss :math:`\sum_k y_k\,\ell(z, c_k)`, shape (B,).

    :math:`\ell(z, c)` is the loss with the one-hot target of class :math:`c`, the loss's
    ``loss(z, c, c, 1)``, so every loss of :mod:`ufm.losses` has this form: the pair form of
    Zhang et al. (2018) extended to m points (Chaudhry et al. 2022). For cross-entropy and
    label smoothing it equals the loss against the soft target
    :math:`y = \sum_k y_k e_{c_k}` (:func:`ufm.mixture_target`) exactly (both are linear in
    the target); for the halved squared error it is the soft form plus
    :math:`\tfrac12(1 - \|y\|^2)` (as :math:`\|e_c\| = 1`), a constant for given weights that
    moves no optimum; for focal loss it is :math:`\sum_k y_k \mathrm{FL}(z, c_k)`, not the
    focal loss of the soft target.

    Parameters
    ----------
    loss : a loss of :mod:`ufm.losses`.
    logits : (B, K).
    classes : (m, B) class of each member (``labels[plan.members]``).
    weights : (B, m) weights on the simplex, cast to the dtype of ``logits``.
    """
    weights = weights.to(device=logits.device, dtype=logits.dtype)
    one = torch.ones((), dtype=logits.dtype, device=logits.device)
    total = weights[:, 0] * loss(logits, classes[0], classes[0], one)
    for k in range(1, classes.shape[0]):
        total = total + weights[:, k] * loss(logits, classes[k], classes[k], one)
    return total
