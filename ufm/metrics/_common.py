"""What every metric module shares: float64 arithmetic and the check of (features, labels).

All arithmetic of :mod:`ufm.metrics` is float64 whatever the input dtype; :func:`_float64`
casts a tensor and moves it to the CPU first from a device without float64 (Apple MPS).
:func:`_check_features_labels` validates a batch of (N, d) features or (N, K) logits with
their (N,) integer labels, for the collapse moments and for calibration alike. Nothing here
is public: the package re-exports none of it.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_tensor_range

FLOAT = torch.float64


def _float64(values: torch.Tensor) -> torch.Tensor:
    """``values`` in float64, moved to the CPU from a device without float64 (Apple MPS)."""
    if values.device.type == "mps":
        values = values.cpu()
    return values.to(FLOAT)


def _check_features_labels(features: torch.Tensor, labels: torch.Tensor, K: int) -> None:
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got {tuple(features.shape)}")
    if labels.shape != features.shape[:1]:
        raise ValueError(
            f"labels must have shape (N,) = ({features.shape[0]},) to match the features, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise ValueError("labels must be integer class indices, got a floating-point tensor")
    check_tensor_range("labels", labels, 0, K - 1)
    check_tensor_range("features", features.to(FLOAT), -math.inf, math.inf)
