r"""Neural-collapse metrics NC1-NC4, equinorm, equiangularity and bias collapse.

Each metric is a pure function of tensors, and the same metrics come out of two streaming
accumulators whose ``update`` takes one batch at a time: :class:`CollapseAccumulator` (NC1,
NC2, NC3, equinorm, equiangularity, bias collapse, from the class moments of
:mod:`ufm.metrics.moments`) and :class:`NearestClassMeanAccumulator` (NC4, a second pass with
the final class means). :func:`collapse_metrics` does both passes on tensors in memory.

Notation (docs/theory.md section 6): :math:`K` classes, features :math:`h_i\in\mathbb R^d` with
labels :math:`y_i`, :math:`n_c` samples of class :math:`c`, :math:`N=\sum_c n_c`, class means
:math:`\mu_c`, global mean :math:`\mu_G = \frac1K\sum_c \mu_c` (the mean of the class means,
which equals the mean of all features for balanced classes), centred class means
:math:`M\in\mathbb R^{K\times d}` with rows :math:`\mu_c-\mu_G`, classifier
:math:`W\in\mathbb R^{K\times d}` with rows :math:`w_c` and optional bias :math:`b`. The
within- and between-class covariances :math:`\Sigma_W`, :math:`\Sigma_B` are those of
:mod:`ufm.metrics.moments`.

References
----------
[1] V. Papyan, X. Y. Han, D. L. Donoho. Prevalence of neural collapse during the terminal
    phase of deep learning training. PNAS 117(40), 2020. (NC1-NC4, equinorm, equiangularity.)
[2] Z. Zhu, T. Ding, J. Zhou, X. Li, C. You, J. Sulam, Q. Qu. A geometric analysis of neural
    collapse with unconstrained features. NeurIPS 2021. (NC1 divided by K.)
"""

from __future__ import annotations

import torch

from .._checks import check_int
from ..etf import etf_distance
from ._common import FLOAT, _check_features_labels, _float64
from .moments import (
    ClassMoments,
    _centred_means,
    _class_moments,
    _empty_moments,
    _require_all_classes,
    between_class_covariance,
    merge_moments,
    within_class_covariance,
)


def _check_classifier(weight: torch.Tensor, bias: torch.Tensor | None, K: int, d: int) -> None:
    if tuple(weight.shape) != (K, d):
        raise ValueError(
            f"classifier weight must have shape (K, d) = ({K}, {d}), got {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (K,):
        raise ValueError(f"classifier bias must have shape (K,) = ({K},), got {tuple(bias.shape)}")


def _check_vectors(name: str, vectors: torch.Tensor) -> None:
    if vectors.ndim != 2 or vectors.shape[0] < 2:
        raise ValueError(f"{name} must have shape (K, d) with K >= 2, got {tuple(vectors.shape)}")


# --------------------------------------------------------------------------------------------
# Neural-collapse metrics as pure functions
# --------------------------------------------------------------------------------------------


def nc1(sigma_W: torch.Tensor, sigma_B: torch.Tensor, K: int) -> float:
    r"""NC1, within-class variability collapse: :math:`\operatorname{tr}(\Sigma_W\Sigma_B^+)/K`.

    Papyan, Han & Donoho (2020), Fig. 6, divided by :math:`K` as in Zhu et al. (2021).
    ``sigma_W`` and ``sigma_B`` are (d, d); see :func:`within_class_covariance` and
    :func:`between_class_covariance`. Zero exactly when every feature equals its class mean.

    **Pseudo-inverse rank rule.** :math:`\Sigma_B` is symmetric positive semi-definite of rank
    at most :math:`K-1`. With its eigenpairs :math:`(\sigma_j, v_j)` (``torch.linalg.eigh``),
    :math:`\Sigma_B^+ = \sum_{j:\ \sigma_j > r\,\sigma_{\max}} \sigma_j^{-1} v_jv_j^\top` with
    relative cutoff :math:`r = d\,\varepsilon_{64}`, :math:`\varepsilon_{64} = 2^{-52}`: the
    default rule of ``numpy.linalg.pinv`` and ``torch.linalg.pinv`` for a (d, d) matrix.
    Eigenvalues at or below the cutoff count as zero.
    """
    K = check_int("K", K, minimum=2)
    if sigma_W.shape != sigma_B.shape or sigma_W.ndim != 2 or sigma_W.shape[0] != sigma_W.shape[1]:
        raise ValueError(
            "sigma_W and sigma_B must both be (d, d) matrices, got shapes "
            f"{tuple(sigma_W.shape)} and {tuple(sigma_B.shape)}"
        )
    eigenvalues, vectors = torch.linalg.eigh(sigma_B.to(FLOAT))
    cutoff = sigma_B.shape[0] * torch.finfo(FLOAT).eps * eigenvalues.max().clamp_min(0.0)
    keep = eigenvalues > cutoff
    if not bool(keep.any()):
        raise ValueError("all class means coincide (Sigma_B = 0), so NC1 is undefined")
    kept = vectors[:, keep]
    projected = (kept.T @ sigma_W.to(FLOAT) @ kept).diagonal()
    return float((projected / eigenvalues[keep]).sum()) / K


def nc2_classifier(weight: torch.Tensor) -> float:
    r"""NC2 of the classifier: ETF distance of :math:`G = WW^\top`, :math:`W` *not* centred.

    :math:`\|G/\|G\|_F - (I-\mathbf 1\mathbf 1^\top/K)/\sqrt{K-1}\|_F` (Papyan et al. 2020,
    NC2; :func:`ufm.etf.etf_distance` with ``center=False``). Zero exactly for a simplex ETF,
    which includes :math:`\sum_c w_c = 0`.
    """
    _check_vectors("weight", weight)
    return etf_distance(weight, center=False)


def nc2_means(means: torch.Tensor) -> float:
    r"""NC2 of the features: ETF distance of :math:`G = MM^\top`, :math:`M` the centred class means.

    ``means`` (K, d) are the raw class means; they are centred at their mean :math:`\mu_G`
    (Papyan et al. 2020, NC2; :func:`ufm.etf.etf_distance` with ``center=True``).
    """
    _check_vectors("means", means)
    return etf_distance(means, center=True)


def _row_norms(vectors: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(vectors.to(FLOAT), dim=1)


def equinorm(vectors: torch.Tensor) -> float:
    r"""Equinorm: coefficient of variation :math:`\operatorname{std}_c\|v_c\|/\operatorname{mean}_c\|v_c\|`.

    Papyan et al. (2020), Fig. 2; the standard deviation is the population one (divide by
    :math:`K`). Pass :math:`W` for the classifier, the centred means :math:`M` for the features.
    """
    _check_vectors("vectors", vectors)
    norms = _row_norms(vectors)
    return float(norms.std(correction=0) / norms.mean())


def _off_diagonal_cosines(vectors: torch.Tensor) -> torch.Tensor:
    unit = vectors.to(FLOAT) / _row_norms(vectors).unsqueeze(1)
    cosines = unit @ unit.T
    K = cosines.shape[0]
    upper = torch.triu_indices(K, K, offset=1, device=cosines.device)
    return cosines[upper[0], upper[1]]


def equiangularity(vectors: torch.Tensor) -> float:
    r"""Equiangularity: :math:`\operatorname{std}_{c<c'}\cos(v_c, v_{c'})` (Papyan et al. 2020, Fig. 3).

    Population standard deviation over the :math:`K(K-1)/2` distinct pairs. Zero for any
    equiangular set, simplex or not; see :func:`max_equiangularity` for the simplex angle.
    """
    _check_vectors("vectors", vectors)
    return float(_off_diagonal_cosines(vectors).std(correction=0))


def max_equiangularity(vectors: torch.Tensor) -> float:
    r"""Maximal-angle equiangularity: :math:`\operatorname{mean}_{c\ne c'}|\cos(v_c,v_{c'}) + 1/(K-1)|`.

    Papyan et al. (2020), Fig. 4. Zero exactly when every pair meets at the simplex angle.
    """
    _check_vectors("vectors", vectors)
    K = vectors.shape[0]
    return float((_off_diagonal_cosines(vectors) + 1.0 / (K - 1)).abs().mean())


def nc3(weight: torch.Tensor, means: torch.Tensor) -> float:
    r"""NC3, self-duality: :math:`\|W^\top/\|W\|_F - M^\top/\|M\|_F\|_F^2` (Papyan et al. 2020, Fig. 5).

    ``weight`` (K, d); ``means`` (K, d) raw class means, centred here. Lies in [0, 4]; zero
    exactly when the classifier rows are a positive multiple of the centred class means.
    """
    _check_vectors("weight", weight)
    if weight.shape != means.shape:
        raise ValueError(
            f"weight and means must have one shape (K, d), got {tuple(weight.shape)} and "
            f"{tuple(means.shape)}"
        )
    W = weight.to(FLOAT)
    M = _centred_means(means.to(FLOAT))
    return float(
        torch.linalg.matrix_norm(W / torch.linalg.matrix_norm(W) - M / torch.linalg.matrix_norm(M))
        ** 2
    )


def _nearest_mean(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    # argmin_c |h - mu_c|^2 = argmin_c (|mu_c|^2 - 2 <h, mu_c>); |h|^2 is common to all c.
    means = means.to(FLOAT)
    return ((means * means).sum(1) - 2.0 * features.to(FLOAT) @ means.T).argmin(dim=1)


def nc4(features: torch.Tensor, logits: torch.Tensor, means: torch.Tensor) -> float:
    r"""NC4: fraction of samples whose prediction differs from the nearest class mean.

    :math:`\frac1N\#\{i: \arg\max_c z_{ic} \ne \arg\min_c\|h_i-\mu_c\|\}` with logits
    :math:`z_i = Wh_i + b` (Papyan et al. 2020, Fig. 7). ``features`` (N, d), ``logits``
    (N, K), ``means`` (K, d). Ties go to the lowest class index on both sides.
    """
    if logits.ndim != 2 or features.ndim != 2 or logits.shape[0] != features.shape[0]:
        raise ValueError(
            "features (N, d) and logits (N, K) must share N, got shapes "
            f"{tuple(features.shape)} and {tuple(logits.shape)}"
        )
    if means.shape != (logits.shape[1], features.shape[1]):
        raise ValueError(
            f"means must have shape (K, d) = ({logits.shape[1]}, {features.shape[1]}), got "
            f"{tuple(means.shape)}"
        )
    accumulator = NearestClassMeanAccumulator(means)
    accumulator.update(features, logits)
    return accumulator.compute()


def bias_collapse(
    weight: torch.Tensor, bias: torch.Tensor | None, global_mean: torch.Tensor
) -> float:
    r"""Bias collapse :math:`\|W\mu_G + b\|_2` (:math:`b = 0` when the classifier has no bias).

    At the collapsed optimum the bias cancels the logit of the global mean, :math:`b=-W\mu_G`
    (Papyan et al. 2020, discussion of the optimal classifier). Some peer code reports this
    number as "NC4"; it is not NC4 (see :func:`nc4`).
    """
    shift = weight.to(FLOAT) @ global_mean.to(FLOAT)
    if bias is not None:
        shift = shift + bias.to(FLOAT)
    return float(torch.linalg.vector_norm(shift))


def bias_collapse_centred(
    weight: torch.Tensor, bias: torch.Tensor | None, global_mean: torch.Tensor
) -> float:
    r"""Bias collapse modulo the all-ones vector, :math:`\|(I - \mathbf 1\mathbf 1^\top/K)
    (W\mu_G + b)\|_2`: softmax ignores a shift of every logit by the same amount, so only
    this part of :func:`bias_collapse` changes a prediction."""
    shift = weight.to(FLOAT) @ global_mean.to(FLOAT)
    if bias is not None:
        shift = shift + bias.to(FLOAT)
    return float(torch.linalg.vector_norm(shift - shift.mean()))


# --------------------------------------------------------------------------------------------
# Streaming accumulators for the neural-collapse metrics
# --------------------------------------------------------------------------------------------


class CollapseAccumulator:
    r"""Streams (features, labels) batches and gives NC1, NC2, NC3, equinorm, equiangularity
    and bias collapse.

    Memory :math:`O(d^2 + Kd)`: one :class:`ClassMoments`, merged batch by batch with
    :func:`merge_moments`; state lives on the device of the first batch. NC4 needs the final
    class means and so a second pass: :class:`NearestClassMeanAccumulator`.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.dim = check_int("dim", dim, minimum=1)
        self.moments: ClassMoments | None = None

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"features must have shape (N, {self.dim}), got {tuple(features.shape)}"
            )
        _check_features_labels(features, labels, self.num_classes)
        batch = _class_moments(features, labels, self.num_classes)
        if self.moments is None:
            self.moments = _empty_moments(self.num_classes, self.dim, batch.counts.device)
        self.moments = merge_moments(self.moments, batch)

    def _complete_moments(self) -> ClassMoments:
        if self.moments is None:
            raise ValueError("no batch has been added: call update() before compute()")
        _require_all_classes(self.moments)
        return self.moments

    @property
    def class_means(self) -> torch.Tensor:
        """Class means (K, d), float64; every class must have been seen."""
        return self._complete_moments().means

    def compute(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> dict[str, float]:
        """Metrics for the classifier ``weight`` (K, d) and optional ``bias`` (K,).

        Keys: ``nc1``, ``nc2_W``, ``nc2_M``, ``nc3``, ``equinorm_W``, ``equinorm_M``,
        ``equiangularity_W``, ``equiangularity_M``, ``max_equiangularity_W``,
        ``max_equiangularity_M``, ``bias_collapse``, ``bias_collapse_centred``, ``n``.
        """
        moments = self._complete_moments()
        _check_classifier(weight, bias, self.num_classes, self.dim)
        means = moments.means
        M = _centred_means(means)
        W = weight.detach().to(device=means.device, dtype=FLOAT)
        b = None if bias is None else bias.detach().to(device=means.device, dtype=FLOAT)
        return {
            "nc1": nc1(
                within_class_covariance(moments), between_class_covariance(means), self.num_classes
            ),
            "nc2_W": nc2_classifier(W),
            "nc2_M": nc2_means(means),
            "nc3": nc3(W, means),
            "equinorm_W": equinorm(W),
            "equinorm_M": equinorm(M),
            "equiangularity_W": equiangularity(W),
            "equiangularity_M": equiangularity(M),
            "max_equiangularity_W": max_equiangularity(W),
            "max_equiangularity_M": max_equiangularity(M),
            "bias_collapse": bias_collapse(W, b, means.mean(dim=0)),
            "bias_collapse_centred": bias_collapse_centred(W, b, means.mean(dim=0)),
            "n": int(moments.total),
        }


class NearestClassMeanAccumulator:
    """Streams (features, logits) batches and gives NC4 for fixed class ``means`` (K, d)."""

    def __init__(self, means: torch.Tensor) -> None:
        _check_vectors("means", means)
        self.means = means.detach().to(FLOAT)
        self.mismatches = 0
        self.count = 0

    def update(self, features: torch.Tensor, logits: torch.Tensor) -> None:
        K, d = self.means.shape
        if features.ndim != 2 or features.shape[1] != d or logits.shape != (features.shape[0], K):
            raise ValueError(
                f"features must be (N, {d}) and logits (N, {K}), got {tuple(features.shape)} "
                f"and {tuple(logits.shape)}"
            )
        features = _float64(features)
        nearest = _nearest_mean(features, self.means.to(features.device))
        self.mismatches += int((nearest != logits.argmax(dim=1).to(features.device)).sum())
        self.count += features.shape[0]

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("no batch has been added: call update() before compute()")
        return self.mismatches / self.count


def collapse_metrics(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> dict[str, float]:
    r"""Every neural-collapse metric of features (N, d) with labels (N,) under the classifier
    ``weight`` (K, d), ``bias`` (K,) or None: the keys of :meth:`CollapseAccumulator.compute`
    plus ``nc4`` (logits :math:`Wh+b` computed here in float64)."""
    K, d = weight.shape
    accumulator = CollapseAccumulator(K, d)
    accumulator.update(features, labels)
    result = accumulator.compute(weight, bias)
    logits = features.to(FLOAT) @ weight.to(FLOAT).T
    if bias is not None:
        logits = logits + bias.to(FLOAT)
    result["nc4"] = nc4(features, logits, accumulator.class_means)
    return result
