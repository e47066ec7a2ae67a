r"""Class moments: the sufficient statistics of NC1-NC3, merged batch by batch.

A :class:`ClassMoments` holds per-class counts :math:`n_c`, class means :math:`\mu_c` and the
pooled within-class scatter matrix; :func:`class_moments` computes it for one batch and
:func:`merge_moments` combines two disjoint sets of samples without the catastrophic
cancellation of raw second moments (Chan, Golub & LeVeque 1979), so that
:class:`ufm.metrics.CollapseAccumulator` streams a data set in :math:`O(d^2 + Kd)` memory. The
covariances :math:`\Sigma_W` and :math:`\Sigma_B` of NC1 are read off the moments here.

With :math:`N=\sum_c n_c` and :math:`M\in\mathbb R^{K\times d}` the class means centred at
their mean :math:`\mu_G = \frac1K\sum_c\mu_c`,

.. math:: \Sigma_W = \frac1N\sum_i (h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top,
          \qquad \Sigma_B = \frac1K M^\top M .

References
----------
[1] T. F. Chan, G. H. Golub, R. J. LeVeque. Updating formulae and a pairwise algorithm for
    computing sample variances. Stanford CS report STAN-CS-79-773, 1979.
[2] V. Papyan, X. Y. Han, D. L. Donoho. Prevalence of neural collapse during the terminal
    phase of deep learning training. PNAS 117(40), 2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_int
from ._common import FLOAT, _check_features_labels, _float64


@dataclass(frozen=True)
class ClassMoments:
    r"""Per-class counts and means and the pooled within-class scatter matrix, float64.

    ``counts`` (K,), ``means`` (K, d) (zero rows for classes not seen yet) and ``scatter``
    (d, d) :math:`=\sum_i (h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top`.
    """

    counts: torch.Tensor
    means: torch.Tensor
    scatter: torch.Tensor

    @property
    def total(self) -> float:
        return float(self.counts.sum())


def _empty_moments(K: int, d: int, device=None) -> ClassMoments:
    return ClassMoments(
        torch.zeros(K, dtype=FLOAT, device=device),
        torch.zeros(K, d, dtype=FLOAT, device=device),
        torch.zeros(d, d, dtype=FLOAT, device=device),
    )


def _class_moments(features: torch.Tensor, labels: torch.Tensor, K: int) -> ClassMoments:
    h = _float64(features)
    labels = labels.to(h.device).long()
    counts = torch.bincount(labels, minlength=K).to(FLOAT)
    sums = torch.zeros(K, h.shape[1], dtype=FLOAT, device=h.device).index_add_(0, labels, h)
    means = sums / counts.clamp_min(1.0).unsqueeze(1)
    centred = h - means[labels]
    return ClassMoments(counts, means, centred.T @ centred)


def class_moments(features: torch.Tensor, labels: torch.Tensor, K: int) -> ClassMoments:
    """Class moments of one batch: features (N, d), labels (N,) in [0, K-1]."""
    K = check_int("K", K, minimum=2)
    _check_features_labels(features, labels, K)
    return _class_moments(features, labels, K)


def merge_moments(first: ClassMoments, second: ClassMoments) -> ClassMoments:
    r"""Moments of the union of two disjoint sets of samples (Chan, Golub & LeVeque 1979).

    Per class, with :math:`\delta_c = \mu_c^{(2)} - \mu_c^{(1)}`, the scatter gains
    :math:`\frac{n^{(1)}_c n^{(2)}_c}{n^{(1)}_c+n^{(2)}_c}\delta_c\delta_c^\top`; summed over
    classes that is one (d, K)(K, d) product. Unlike :math:`\sum_i h_ih_i^\top - \sum_c n_c
    \mu_c\mu_c^\top` this does not cancel catastrophically when the features have collapsed.
    """
    n = first.counts + second.counts
    share = second.counts / n.clamp_min(1.0)
    delta = second.means - first.means
    means = first.means + delta * share.unsqueeze(1)
    weight = first.counts * share
    scatter = first.scatter + second.scatter + (delta * weight.unsqueeze(1)).T @ delta
    return ClassMoments(n, means, scatter)


def _require_all_classes(moments: ClassMoments) -> None:
    missing = torch.nonzero(moments.counts == 0).flatten().tolist()
    if missing:
        raise ValueError(
            f"neural-collapse metrics need samples of every class; none seen for class(es) "
            f"{missing} (allowed: every class in [0, {moments.counts.numel() - 1}] present)"
        )


def within_class_covariance(moments: ClassMoments) -> torch.Tensor:
    r""":math:`\Sigma_W = \frac1N\sum_i (h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top`, (d, d) (Papyan 2020)."""
    return moments.scatter / moments.total


def _centred_means(means: torch.Tensor) -> torch.Tensor:
    return means - means.mean(dim=0, keepdim=True)


def between_class_covariance(means: torch.Tensor) -> torch.Tensor:
    r""":math:`\Sigma_B = \frac1K M^\top M` with :math:`M` the centred class means (d, d)."""
    M = _centred_means(means.to(FLOAT))
    return M.T @ M / M.shape[0]
