r"""The exact theory of the mixup UFM with a simplex-ETF classifier.

Fisher, Meng & Papyan, "Pushing Boundaries: Mixup's Influence on Neural Collapse", ICLR 2024,
arXiv:2402.06171. One module each:

* :mod:`.optimum`: the exact optimal features and their coefficients (``optimal_features``).
* :mod:`.mixtures`: the exact optimum for mixtures of m classes (``mixture_features``).
* :mod:`.minority`: the exact optimum of the learned classifier under step class imbalance,
  reduced to three eigenvalues (``imbalance_theory``, ``minority_collapse_threshold``).
* :mod:`.reduced_equations`: the root-finder for the reduced cross-entropy equations
  (pairs, and all m-class mixtures at once).
* :mod:`.table`: the optimum over a lam grid as a table, and the ``ufm theory`` job.
* :mod:`.asymptotics`: the small-lam_H forms (Lambert W, log-odds, channels), with errors.
* :mod:`.derivation`: the SymPy derivation, each identity checked (imports SymPy); it
  re-exports :mod:`.mixture_derivation`, the steps for m-class mixtures.
* :mod:`.certificate`: the same problems as CVXPY programs and the Fenchel duality gap, for
  pairs and for any soft target (imports CVXPY).

The last three are not imported here, so ``import ufm.theory`` stays light.
"""

from ..etf import gain, row_norm
from .asymptotics import Asymptotic, channel_asymptotic, margin_asymptotic, same_class_asymptotic
from .minority import (
    ImbalanceTheory,
    MinorityThreshold,
    imbalance_theory,
    minority_collapse_threshold,
)
from .mixtures import WEIGHT_SUM_TOL, mixture_coefficients, mixture_features, mixture_target
from .optimum import (
    EXACT_THEORY_LOSSES,
    ce_coefficients,
    has_exact_theory,
    mse_coefficients,
    optimal_coefficients,
    optimal_features,
    same_class_coefficient,
)
from .reduced_equations import solve_exp_linear, solve_reduced
from .table import TheoryConfig, TheoryRow, theory_table

__all__ = [
    "EXACT_THEORY_LOSSES",
    "Asymptotic",
    "ImbalanceTheory",
    "MinorityThreshold",
    "TheoryConfig",
    "TheoryRow",
    "WEIGHT_SUM_TOL",
    "ce_coefficients",
    "channel_asymptotic",
    "gain",
    "has_exact_theory",
    "imbalance_theory",
    "margin_asymptotic",
    "minority_collapse_threshold",
    "mixture_coefficients",
    "mixture_features",
    "mixture_target",
    "mse_coefficients",
    "optimal_coefficients",
    "optimal_features",
    "row_norm",
    "same_class_asymptotic",
    "same_class_coefficient",
    "solve_exp_linear",
    "solve_reduced",
    "theory_table",
]
