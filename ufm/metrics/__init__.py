r"""Neural-collapse and calibration metrics: pure functions over tensors and streaming accumulators.

Every metric exists twice, in the style of torchmetrics: as a pure function of tensors and as
an accumulator whose ``update`` takes one batch at a time, so that a data set that does not fit
in memory is measured in one pass with :math:`O(d^2 + Kd)` memory (class means, one pooled
within-class scatter matrix) and no per-sample Python loop. Argument validation (``_check_*``)
is kept apart from the arithmetic, and all arithmetic is float64 whatever the input dtype.
:mod:`.moments` holds the class moments (counts, means, within-class scatter) and their merge,
:mod:`.collapse` NC1-NC4, equinorm, equiangularity and bias collapse, :mod:`.calibration`
ECE, NLL and the reliability table; this package re-exports their public names.
"""

from __future__ import annotations

from ._common import FLOAT  # noqa: F401  (public in the single-module layout, kept importable)
from .calibration import (
    CalibrationAccumulator,
    bin_edges,
    bin_indices,
    calibration_metrics,
    expected_calibration_error,
    reliability_table,
)
from .collapse import (
    CollapseAccumulator,
    NearestClassMeanAccumulator,
    bias_collapse,
    bias_collapse_centred,
    collapse_metrics,
    equiangularity,
    equinorm,
    max_equiangularity,
    nc1,
    nc2_classifier,
    nc2_means,
    nc3,
    nc4,
)
from .moments import (
    ClassMoments,
    between_class_covariance,
    class_moments,
    merge_moments,
    within_class_covariance,
)

__all__ = [
    "CalibrationAccumulator",
    "ClassMoments",
    "CollapseAccumulator",
    "NearestClassMeanAccumulator",
    "between_class_covariance",
    "bias_collapse",
    "bias_collapse_centred",
    "bin_edges",
    "bin_indices",
    "calibration_metrics",
    "class_moments",
    "collapse_metrics",
    "equiangularity",
    "equinorm",
    "expected_calibration_error",
    "max_equiangularity",
    "merge_moments",
    "nc1",
    "nc2_classifier",
    "nc2_means",
    "nc3",
    "nc4",
    "reliability_table",
    "within_class_covariance",
]
