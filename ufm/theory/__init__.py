r"""The exact theory of the mixup UFM with a simplex-ETF classifier.

Fisher, Meng & Papyan, "Pushing Boundaries: Mixup's Influence on Neural Collapse", ICLR 2024,
arXiv:2402.06171. One module each:

* :mod:`.optimum`: the exact optimal features and their coefficients (``optimal_features``).
* :mod:`.reduced_equations`: the root-finder for the reduced cross-entropy equations.
* :mod:`.table`: the optimum over a lam grid as a table, and the ``ufm theory`` job.
* :mod:`.asymptotics`: the small-lam_H forms (Lambert W, log-odds, channels), with errors.
* :mod:`.derivation`: the SymPy derivation, each identity checked (imports SymPy).
* :mod:`.certificate`: the same problems as CVXPY programs and the Fenchel duality gap
  (imports CVXPY).

The last two are not imported here, so ``import ufm.theory`` stays light.
"""

from ..etf import gain, row_norm
from .asymptotics import Asymptotic, channel_asymptotic, margin_asymptotic, same_class_asymptotic
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
    "TheoryConfig",
    "TheoryRow",
    "ce_coefficients",
    "channel_asymptotic",
    "gain",
    "has_exact_theory",
    "margin_asymptotic",
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
