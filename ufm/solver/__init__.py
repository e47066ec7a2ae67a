"""The UFM solver: free features and a fixed or learned classifier under the mixup loss.

configuration and problem (:mod:`.problem`) -> :func:`solve` (:mod:`.run`) -> a
:class:`UFMResult` (:mod:`.results`) and its files. The per-sample Newton feature solver is
:mod:`.feature_newton`, the classifier's L-BFGS memory :mod:`.lbfgs`.
"""

from .problem import Problem, UFMConfig, build_problem
from .results import UFMResult, load_result
from .run import CHECKPOINT, solve

__all__ = ["CHECKPOINT", "Problem", "UFMConfig", "UFMResult", "build_problem", "load_result", "solve"]
