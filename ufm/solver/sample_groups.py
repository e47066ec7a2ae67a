r"""Samples that are one problem: mixup samples with the same soft target.

Given the classifier, the features of a sample minimise
:math:`w_s\big(\ell(Wh + b;\,y_s) + \tfrac{\lambda_H}2\|h\|^2\big)`, whose minimiser does not
depend on the sample weight :math:`w_s`; for a loss that depends on a sample only through its
soft target :math:`y_s = \sum_k y_{s,k}e_{c_{s,k}}` (``MixupLoss.target_only``), samples with
one target have one per-sample problem, and so one optimal feature vector where the loss is
convex in the logits (the problem is then strictly convex in h); a loss that is not (focal)
may have several, but the solver, which starts every sample of a group at the same point,
took them all to the same one before grouping too. Summing the objective, its gradients and its
Hessian products over the samples is then the same as summing them over the distinct targets,
each weighted by the total weight of its samples. The Newton methods (:mod:`.newton`) solve
each distinct target once and hand every sample its group's features.

Why: a grid of mixing weights that includes 0 and 1 stores every pure class once in each pair
of classes it meets, and a pair (c, c', lam) again as (c', c, 1 - lam) where both orders are
drawn. The medium problem (all 10,000 ordered pairs of K = 100 classes, 21 lam values) has
210,000 samples and 94,150 distinct targets; K = d = 1000 on 9524 random pairs has 200,004
samples and 181,044 targets.

The targets are compared after rounding each weight to a multiple of
:data:`WEIGHT_ULPS` units of its dtype's machine epsilon (:func:`weight_quantum`; 2^-48 in
float64): a grid's lam and the 1 - lam of its mirror sample often differ in the last bit
(``0.35000000000000003`` against ``1 - 0.65 = 0.35``), and a sample whose features are
those of a target one rounding error away is off from its own by a rounding error too. A
group's features are those of its first sample, its target as stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# weights are compared rounded to this many units of their dtype's machine epsilon (a few
# units in the last place of a weight near 1/2)
WEIGHT_ULPS = 16


def weight_quantum(dtype: torch.dtype) -> float:
    """The step weights of ``dtype`` are rounded to before they are compared: 2^-48 for
    float64, 2^-19 for float32.

    >>> import torch
    >>> weight_quantum(torch.float64) == 2.0**-48, weight_quantum(torch.float32) == 2.0**-19
    (True, True)
    """
    return WEIGHT_ULPS * torch.finfo(dtype).eps


@dataclass(frozen=True)
class SampleGroups:
    """Which samples share a soft target: ``representatives`` (u,) the first sample of each
    group, in the order the samples are stored; ``inverse`` (n,) each sample's group;
    ``counts`` (u,) the samples in each group.

    Examples
    --------
    Pure class 1 appears as (0, 1, lam = 0) and (1, 2, lam = 1), and (0, 1, 0.25) again as
    (1, 0, 0.75):

    >>> import torch
    >>> from ufm import get_loss
    >>> classes = torch.tensor([[0, 1], [1, 2], [0, 1], [1, 0]])
    >>> weights = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.25, 0.75], [0.75, 0.25]])
    >>> groups = group_samples(classes, weights, get_loss("ce"))
    >>> groups.representatives.tolist(), groups.inverse.tolist(), groups.counts.tolist()
    ([0, 2], [0, 0, 1, 1], [2, 2])
    >>> groups.group_weights(None).tolist()
    [2.0, 2.0]
    """

    representatives: torch.Tensor
    inverse: torch.Tensor
    counts: torch.Tensor

    @property
    def n(self) -> int:
        """The number of samples."""
        return int(self.inverse.numel())

    def group_weights(self, sample_weight: torch.Tensor | None,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """(u,): the total weight of each group's samples (its count where ``sample_weight``
        is None), in ``dtype``."""
        if sample_weight is None:
            return self.counts.to(dtype)
        total = torch.zeros(self.counts.numel(), dtype=torch.float64, device=self.counts.device)
        return total.index_add_(0, self.inverse, sample_weight.to(torch.float64)).to(dtype)

    def picked(self, samples: slice | torch.Tensor, sample_weight: torch.Tensor | None,
               factor: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The groups that hold the samples ``samples`` (a slice of them as stored, or their
        positions), in order: (rows, how many of those samples each holds, their total
        weight: their number where ``sample_weight`` is None), both float64. With ``factor``
        (one float64 per sample picked) a sample counts ``factor`` times (a quadrature
        weight, :mod:`.lam_quadrature`) in both.

        >>> groups = SampleGroups(torch.tensor([0, 1]), torch.tensor([0, 1, 0, 1, 0]),
        ...                       torch.tensor([3, 2]))
        >>> rows, counts, weight = groups.picked(slice(0, None, 2), torch.arange(1.0, 6.0))
        >>> rows.tolist(), counts.tolist(), weight.tolist()
        ([0], [3.0], [9.0])
        >>> rows, counts, weight = groups.picked(torch.tensor([0, 1]), None,
        ...                                      torch.tensor([0.5, 2.0], dtype=torch.float64))
        >>> rows.tolist(), counts.tolist(), weight.tolist()
        ([0, 1], [0.5, 2.0], [0.5, 2.0])
        """
        rows, position = torch.unique(self.inverse[samples], return_inverse=True)
        if factor is None:
            counts = torch.bincount(position, minlength=rows.numel()).to(torch.float64)
        else:
            counts = torch.zeros(rows.numel(), dtype=torch.float64,
                                 device=rows.device).index_add_(0, position, factor)
        if sample_weight is None:
            return rows, counts, counts
        each = sample_weight[samples].to(torch.float64)
        weight = torch.zeros_like(counts).index_add_(
            0, position, each if factor is None else each * factor)
        return rows, counts, weight


def picked_rows(groups: SampleGroups | None, samples: slice | torch.Tensor, n: int,
                sample_weight: torch.Tensor | None, factor: torch.Tensor | None = None,
                device: torch.device | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, counts, weight) of the samples ``samples`` (a slice of the ``n`` samples as
    stored, or their positions) for a feature solver with one row per group of ``groups``
    (:meth:`SampleGroups.picked`), or with one row per sample where ``groups`` is None: then
    the rows (on ``device``) are the samples themselves, each counting once (``factor``
    times, with ``factor``) and weighing its sample weight times that.

    >>> rows, counts, weight = picked_rows(None, slice(1, None, 2), 5, torch.arange(1.0, 6.0))
    >>> rows.tolist(), counts.tolist(), weight.tolist()
    ([1, 3], [1.0, 1.0], [2.0, 4.0])
    """
    if groups is not None:
        return groups.picked(samples, sample_weight, factor)
    rows = torch.arange(n, device=device)[samples]
    counts = (torch.ones(rows.numel(), dtype=torch.float64, device=rows.device)
              if factor is None else factor)
    if sample_weight is None:
        return rows, counts, counts
    return rows, counts, counts * sample_weight[rows].to(torch.float64)


def target_keys(classes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(n, 2m) integer keys, equal for two samples exactly when their soft targets agree after
    rounding every weight to :func:`weight_quantum` of its dtype: the classes in increasing
    order, each class once with its total weight, classes of weight 0 left out (as class -1)."""
    quantum = weight_quantum(weights.dtype)
    order = torch.argsort(classes, dim=1, stable=True)
    c = classes.gather(1, order)
    w = weights.to(torch.float64).gather(1, order)
    for k in range(1, c.shape[1]):  # a class named twice: its weight on its last column
        repeat = c[:, k] == c[:, k - 1]
        w[:, k] = torch.where(repeat, w[:, k] + w[:, k - 1], w[:, k])
        w[:, k - 1] = torch.where(repeat, torch.zeros_like(w[:, k - 1]), w[:, k - 1])
    quanta = torch.round(w / quantum).to(torch.int64)
    c = torch.where(quanta == 0, torch.full_like(c, -1), c)
    order = torch.argsort(c, dim=1, stable=True)
    return torch.cat([c.gather(1, order), quanta.gather(1, order)], dim=1)


# two primes below 2^31 and bases for the polynomial hashes of the keys
_HASH_PRIMES = (2_147_483_647, 2_147_483_629)
_HASH_BASES = (1_000_003, 999_983)


def _first_samples(inverse: torch.Tensor, groups: int) -> torch.Tensor:
    """(groups,): the first sample of each group, ``inverse`` (n,) numbering each sample's."""
    n = inverse.numel()
    first = torch.full((groups,), n, dtype=torch.int64, device=inverse.device)
    return first.scatter_reduce_(0, inverse, torch.arange(n, device=inverse.device), reduce="amin")


def _row_hashes(keys: torch.Tensor) -> torch.Tensor:
    """(n,) int64: two polynomial hashes of each row of ``keys`` modulo primes below 2^31,
    side by side in one number (every product stays below 2^62)."""
    combined = torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device)
    for prime, base in zip(_HASH_PRIMES, _HASH_BASES):
        h = torch.zeros_like(combined)
        for column in keys.T:
            h = (h * base + torch.remainder(column, prime)) % prime
        combined = combined * (1 << 31) + h
    return combined


def group_samples(classes: torch.Tensor, weights: torch.Tensor, loss) -> SampleGroups | None:
    """The groups of samples (``classes``, ``weights``: (n, m)) with one soft target, or None
    where no two samples share one or the loss does not declare ``target_only`` (then every
    sample is solved on its own)."""
    if not loss.target_only or classes.shape[0] < 2:
        return None
    keys = target_keys(classes, weights)
    n = classes.shape[0]
    # unique rows by a 62-bit hash of each (a sort of n numbers; torch.unique over rows was
    # 0.3 s on the medium problem), checked row by row; over rows if two keys share a hash
    _, inverse, counts = torch.unique(_row_hashes(keys), return_inverse=True, return_counts=True)
    first = _first_samples(inverse, counts.numel())
    if not torch.equal(keys[first[inverse]], keys):
        _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
        first = _first_samples(inverse, counts.numel())
    if counts.numel() == n:
        return None
    # number the groups by their first sample, so they keep the samples' stored order
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return SampleGroups(representatives=first[order], inverse=rank[inverse], counts=counts[order])
