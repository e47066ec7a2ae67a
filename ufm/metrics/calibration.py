r"""Calibration: expected calibration error, negative log-likelihood, reliability table.

The pure functions :func:`expected_calibration_error` and :func:`reliability_table` take
confidences and correctness; their streaming twin :class:`CalibrationAccumulator` takes
(logits, labels) batches and adds accuracy and NLL, with :math:`O(B)` memory for :math:`B`
equal-width confidence bins (:func:`bin_edges`, :func:`bin_indices`);
:func:`calibration_metrics` runs it on tensors in memory. All arithmetic is float64.

References
----------
[1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger. On calibration of modern neural networks.
    ICML 2017. (Expected calibration error, reliability diagrams.)
[2] M. P. Naeini, G. F. Cooper, M. Hauskrecht. Obtaining well calibrated probabilities using
    Bayesian binning. AAAI 2015. (ECE.)
"""

from __future__ import annotations

import torch

from .._checks import check_int, check_tensor_range
from ._common import FLOAT, _check_features_labels, _float64


def _check_calibration_inputs(confidences: torch.Tensor, correct: torch.Tensor) -> None:
    if confidences.ndim != 1 or correct.shape != confidences.shape:
        raise ValueError(
            "confidences and correct must be 1-D tensors of one length, got shapes "
            f"{tuple(confidences.shape)} and {tuple(correct.shape)}"
        )
    check_tensor_range("confidences", confidences.to(FLOAT), 0.0, 1.0)
    check_tensor_range("correct", correct.to(FLOAT), 0.0, 1.0)


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with K >= 2, got {tuple(logits.shape)}")
    _check_features_labels(logits, labels, logits.shape[1])


def bin_edges(n_bins: int = 15) -> torch.Tensor:
    """Edges of ``n_bins`` equal-width confidence bins on [0, 1], float64, shape (n_bins+1,)."""
    n_bins = check_int("n_bins", n_bins, minimum=1)
    return torch.linspace(0.0, 1.0, n_bins + 1, dtype=FLOAT)


def bin_indices(confidences: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    r"""Bin of each confidence: bin :math:`k` is :math:`[e_k, e_{k+1})` for :math:`k < B-1` and
    the last bin is closed, :math:`[e_{B-1}, 1]`, so confidence 0 falls in the first bin and
    confidence 1 in the last. :math:`e` = :func:`bin_edges`."""
    edges = bin_edges(n_bins).to(confidences.device)
    index = torch.bucketize(confidences.to(FLOAT), edges, right=True) - 1
    return index.clamp(0, n_bins - 1)


def _binned_sums(confidences: torch.Tensor, correct: torch.Tensor, n_bins: int) -> torch.Tensor:
    """(3, n_bins) float64: per bin the sample count, confidence sum and number correct."""
    index = bin_indices(confidences, n_bins)
    values = torch.stack(
        [torch.ones_like(confidences, dtype=FLOAT), confidences.to(FLOAT), correct.to(FLOAT)]
    )
    return torch.zeros(3, n_bins, dtype=FLOAT, device=confidences.device).index_add_(
        1, index, values
    )


def _ece_from_sums(sums: torch.Tensor) -> float:
    # sum_b (n_b/n)|acc_b - conf_b| = (1/n) sum_b |correct_b - confidence-sum_b|: no per-bin division.
    return float((sums[2] - sums[1]).abs().sum() / sums[0].sum())


def _table_from_sums(sums: torch.Tensor) -> list[dict[str, float | int | None]]:
    edges = bin_edges(sums.shape[1]).tolist()
    rows = []
    for k, (count, confidence_sum, correct_sum) in enumerate(sums.T.tolist()):
        accuracy = correct_sum / count if count else None
        confidence = confidence_sum / count if count else None
        rows.append(
            {
                "bin": k,
                "lower": edges[k],
                "upper": edges[k + 1],
                "count": int(count),
                "accuracy": accuracy,
                "confidence": confidence,
                "gap": None if count == 0 else accuracy - confidence,
            }
        )
    return rows


def expected_calibration_error(
    confidences: torch.Tensor, correct: torch.Tensor, n_bins: int = 15
) -> float:
    r"""Expected calibration error with ``n_bins`` equal-width bins (Naeini et al. 2015; Guo et al. 2017).

    .. math:: \mathrm{ECE} = \sum_{k} \frac{|B_k|}{N}\,\bigl|\operatorname{acc}(B_k) -
              \operatorname{conf}(B_k)\bigr|

    over the bins of :func:`bin_indices` (confidences 0 and 1 in the edge bins); each bin's
    accuracy and mean confidence come from the same samples (nothing is sorted). 15 bins is
    the torchmetrics default. ``confidences`` (N,) in [0, 1]; ``correct`` (N,) booleans or 0/1.

    torchmetrics 1.x gives a confidence of exactly 1 an extra bin of its own; the two agree
    whenever the last bin holds no confidence below 1 together with one equal to 1.
    """
    n_bins = check_int("n_bins", n_bins, minimum=1)
    _check_calibration_inputs(confidences, correct)
    if confidences.numel() == 0:
        raise ValueError("ECE needs at least one sample, got none")
    return _ece_from_sums(_binned_sums(confidences, correct, n_bins))


def reliability_table(
    confidences: torch.Tensor, correct: torch.Tensor, n_bins: int = 15
) -> list[dict[str, float | int | None]]:
    """Reliability-diagram rows (Guo et al. 2017): per bin ``bin``, ``lower``, ``upper``,
    ``count``, ``accuracy``, ``confidence`` (mean) and ``gap`` = accuracy - confidence (None
    for empty bins)."""
    n_bins = check_int("n_bins", n_bins, minimum=1)
    _check_calibration_inputs(confidences, correct)
    return _table_from_sums(_binned_sums(confidences, correct, n_bins))


class CalibrationAccumulator:
    r"""Streams (logits, labels) batches: accuracy, NLL, ECE and the reliability table.

    Per batch the softmax is taken in float64; the top probability is the confidence and
    its class the prediction. NLL is :math:`\frac1N\sum_i(\operatorname{lse}(z_i)-z_{i,y_i})`.
    Memory :math:`O(B)` for :math:`B` = ``n_bins``.
    """

    def __init__(self, n_bins: int = 15) -> None:
        self.n_bins = check_int("n_bins", n_bins, minimum=1)
        self.sums: torch.Tensor | None = None
        self.nll_sum = 0.0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        _check_logits_labels(logits, labels)
        log_p = torch.log_softmax(_float64(logits), dim=1)
        labels = labels.to(log_p.device)
        top_log_p, prediction = log_p.max(dim=1)
        correct = prediction == labels
        sums = _binned_sums(top_log_p.exp(), correct, self.n_bins)
        self.sums = sums if self.sums is None else self.sums + sums
        self.nll_sum -= float(log_p.gather(1, labels.long().unsqueeze(1)).sum())

    def compute(self) -> dict[str, object]:
        """``accuracy``, ``nll``, ``ece``, ``n``, ``n_bins`` and ``reliability`` (the table)."""
        if self.sums is None or float(self.sums[0].sum()) == 0:
            raise ValueError("no sample has been added: call update() before compute()")
        n = float(self.sums[0].sum())
        return {
            "accuracy": float(self.sums[2].sum()) / n,
            "nll": self.nll_sum / n,
            "ece": _ece_from_sums(self.sums),
            "n": int(n),
            "n_bins": self.n_bins,
            "reliability": _table_from_sums(self.sums),
        }


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Accuracy, NLL, ECE and reliability table of logits (N, K) against labels (N,); see
    :class:`CalibrationAccumulator`."""
    accumulator = CalibrationAccumulator(n_bins)
    accumulator.update(logits, labels)
    return accumulator.compute()
