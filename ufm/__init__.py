"""ufm: neural collapse under mixup, made executable.

Exact theory, convex certificate and solver for the mixup unconstrained-features model
(Fisher, Meng & Papyan, "Pushing Boundaries: Mixup's Influence on Neural Collapse",
ICLR 2024, arXiv:2402.06171), and measurements of real networks trained with mixup.
"""

from .etf import etf_distance, simplex_etf
from .losses import LOSSES, MixupLoss, get_loss, mixup_target
from .solver.problem import UFMConfig
from .solver.results import UFMResult, load_result
from .solver import solve
from .nets.feature_comparison import compare_features
from .nets.measure import measure_network
from .nets.measure_settings import MeasureSettings
from .theory import (
    ce_coefficients,
    mixture_coefficients,
    mixture_features,
    mixture_target,
    mse_coefficients,
    optimal_coefficients,
    optimal_features,
    same_class_coefficient,
    theory_table,
)

__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "MeasureSettings",
    "MixupLoss",
    "UFMConfig",
    "UFMResult",
    "load_result",
    "measure_network",
    "solve",
    "ce_coefficients",
    "compare_features",
    "etf_distance",
    "get_loss",
    "mixture_coefficients",
    "mixture_features",
    "mixture_target",
    "mixup_target",
    "mse_coefficients",
    "optimal_coefficients",
    "optimal_features",
    "same_class_coefficient",
    "simplex_etf",
    "theory_table",
]
