"""ufm: neural collapse under mixup, made executable.

Exact theory, convex certificate and solver for the mixup unconstrained-features model
(Fisher, Meng & Papyan, "Pushing Boundaries: Mixup's Influence on Neural Collapse",
ICLR 2024, arXiv:2402.06171), and measurements of real networks trained with mixup.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

# public name -> the module that defines it. They load on first use (PEP 562), not with the
# package: ``import ufm.cli`` then costs no torch import, so that the ``ufm`` command reaches
# its own Ctrl-C handling (ufm.cli.main) before the seconds that torch takes to load.
_SOURCES = {
    "LOSSES": ".losses",
    "MeasureSettings": ".nets.measure_settings",
    "MixupLoss": ".losses",
    "UFMConfig": ".solver.problem",
    "UFMResult": ".solver.results",
    "load_result": ".solver.results",
    "measure_network": ".nets.measure",
    "solve": ".solver",
    "ce_coefficients": ".theory",
    "compare_features": ".nets.feature_comparison",
    "etf_distance": ".etf",
    "get_loss": ".losses",
    "imbalance_theory": ".theory",
    "minority_collapse_threshold": ".theory",
    "mixture_coefficients": ".theory",
    "mixture_features": ".theory",
    "mixture_target": ".theory",
    "mixup_target": ".losses",
    "mse_coefficients": ".theory",
    "optimal_coefficients": ".theory",
    "optimal_features": ".theory",
    "same_class_coefficient": ".theory",
    "simplex_etf": ".etf",
    "theory_table": ".theory",
}

__version__ = "0.1.0"

__all__ = list(_SOURCES)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use; a subpackage (``ufm.theory``),
    imported on first use as the package's eager imports once made them attributes."""
    if name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name], __name__), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
